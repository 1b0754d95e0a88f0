package reconcile

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	certutil "k8s.io/client-go/util/cert"

	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

func TestLocateKubeletServing(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content string
		certDir       string
		want          renew.KubeletServing
		addr          string
	}{
		{"kubeadm's config", "kind: KubeletConfiguration\n", "/var/lib/kubelet/pki",
			renew.KubeletServing{Source: renew.ServingSelfSigned, Renew: true, CertPath: "/var/lib/kubelet/pki/kubelet.crt", KeyPath: "/var/lib/kubelet/pki/kubelet.key"}, "127.0.0.1:10250"},
		{"own cert dir and port", "kind: KubeletConfiguration\naddress: 127.0.0.1\nport: 11250\n", "/srv/kubelet/pki",
			renew.KubeletServing{Source: renew.ServingSelfSigned, Renew: true, CertPath: "/srv/kubelet/pki/kubelet.crt", KeyPath: "/srv/kubelet/pki/kubelet.key"}, "127.0.0.1:11250"},
		{"one address", "kind: KubeletConfiguration\naddress: 10.0.0.7\n", "/p",
			renew.KubeletServing{Source: renew.ServingSelfSigned, Renew: true, CertPath: "/p/kubelet.crt", KeyPath: "/p/kubelet.key"}, "10.0.0.7:10250"},
		{"serverTLSBootstrap", "kind: KubeletConfiguration\nserverTLSBootstrap: true\n", "/p",
			renew.KubeletServing{Source: renew.ServingBootstrap, CertPath: "/p/kubelet-server-current.pem", KeyPath: "/p/kubelet-server-current.pem"}, "127.0.0.1:10250"},
		{"serverTLSBootstrap wins over tlsCertFile", "kind: KubeletConfiguration\nserverTLSBootstrap: true\ntlsCertFile: /etc/x.crt\ntlsPrivateKeyFile: /etc/x.key\n", "/p",
			renew.KubeletServing{Source: renew.ServingBootstrap, CertPath: "/p/kubelet-server-current.pem", KeyPath: "/p/kubelet-server-current.pem"}, "127.0.0.1:10250"},
		{"operator's files", "kind: KubeletConfiguration\ntlsCertFile: /etc/x.crt\ntlsPrivateKeyFile: /etc/x.key\n", "/p",
			renew.KubeletServing{Source: renew.ServingOperator, CertPath: "/etc/x.crt", KeyPath: "/etc/x.key"}, "127.0.0.1:10250"},
		{"operator's relative files", "kind: KubeletConfiguration\ntlsCertFile: x.crt\ntlsPrivateKeyFile: x.key\n", "/p",
			renew.KubeletServing{Source: renew.ServingOperator, CertPath: filepath.Join(dir, "x.crt"), KeyPath: filepath.Join(dir, "x.key")}, "127.0.0.1:10250"},
	} {
		p := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, ok, err := LocateKubeletServing(p, tc.certDir, true)
		if err != nil || !ok || got.Serving != tc.want || got.Addr != tc.addr {
			t.Errorf("%s: %+v %v %v, want %+v %s", tc.name, got, ok, err, tc.want, tc.addr)
		}
	}
	if _, ok, err := LocateKubeletServing(filepath.Join(dir, "absent"), "", true); ok || err != nil {
		t.Errorf("no kubelet configuration: %v %v", ok, err)
	}
	p := filepath.Join(dir, "monitor.yaml")
	_ = os.WriteFile(p, []byte("kind: KubeletConfiguration\n"), 0o600)
	if got, _, _ := LocateKubeletServing(p, "/p", false); got.Serving.Renew {
		t.Error("kubeletServingCert: monitor still renews")
	}
}

func TestCertDirFromArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml"}, DefaultKubeletCertDir},
		{[]string{"kubelet", "--cert-dir=/srv/pki"}, "/srv/pki"},
		{[]string{"kubelet", "--cert-dir", "/srv/pki", "--v=2"}, "/srv/pki"},
		{[]string{"kubelet", "--cert-dir"}, DefaultKubeletCertDir},
	} {
		if got := certDirFromArgs(tc.args); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.args, got, tc.want)
		}
	}
}

func TestDecideServing(t *testing.T) {
	down := errors.New("connection refused")
	for _, tc := range []struct {
		name            string
		renewed         bool
		file, served    string
		err             error
		want            ServingAction
		servedOldSerial bool
	}{
		{name: "serves the file", file: "a", served: "a", want: ServingFine},
		{name: "serves the file just renewed", renewed: true, file: "b", served: "b", want: ServingFine},
		{name: "just renewed: wait for the reload", renewed: true, file: "b", served: "a", want: ServingWaitReload},
		{name: "just renewed and not answering: wait", renewed: true, file: "b", err: down, want: ServingWaitReload},
		{name: "older serial later: restart", file: "b", served: "a", want: ServingRestart},
		{name: "not answering later: not judged", file: "b", err: down, want: ServingFine},
		{name: "no file", served: "a", want: ServingFine},
	} {
		if got := DecideServing(tc.renewed, tc.file, tc.served, tc.err); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// fakeKubelet serves the serial of the pair it loaded: the file's at
// start, then what reload (if it reloads) or restart loads.
type fakeKubelet struct {
	mu       sync.Mutex
	certPath string
	serial   string
	reloads  bool
	restarts int
}

func (k *fakeKubelet) load(t *testing.T) {
	data, err := os.ReadFile(k.certPath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := certutil.ParseCertsPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	k.serial = c[0].SerialNumber.Text(16)
	k.mu.Unlock()
}

func (k *fakeKubelet) check(t *testing.T) *KubeletServingCheck {
	return &KubeletServingCheck{Addr: "127.0.0.1:10250", ReloadWait: 50 * time.Millisecond, RestartWait: 50 * time.Millisecond, Interval: time.Millisecond,
		Served: func(context.Context, string) (string, error) {
			if k.reloads {
				k.load(t)
			}
			k.mu.Lock()
			defer k.mu.Unlock()
			return k.serial, nil
		}}
}

func servingEngine(t *testing.T, k *fakeKubelet) (*NodeEngine, *logtest.Hook) {
	t.Helper()
	root := t.TempDir()
	l, err := renewtest.MakePKI(filepath.Join(root, "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256"})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey("node-1", []net.IP{net.ParseIP("10.0.0.7")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "kubelet", "pki")
	_ = os.MkdirAll(dir, 0o755)
	ks := renew.KubeletServing{Source: renew.ServingSelfSigned, Renew: true, CertPath: filepath.Join(dir, "kubelet.crt"), KeyPath: filepath.Join(dir, "kubelet.key")}
	if err := os.WriteFile(ks.CertPath, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ks.KeyPath, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	k.certPath = ks.CertPath
	k.load(t)
	log, hook := logtest.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	r := renew.New(renew.Options{
		Dirs:     renew.Dirs{PKIDir: l.PKIDir, KubeconfigDir: l.KubeconfigDir, KubeletServing: ks},
		StateDir: filepath.Join(root, "state"), Policy: pki.Policy{RenewBefore: 90 * 24 * time.Hour},
		Validity: 365 * 24 * time.Hour, Log: log,
	})
	return &NodeEngine{Renewer: r, StateDir: filepath.Join(root, "state"), Log: log, KubeletServing: k.check(t)}, hook
}

func logged(hook *logtest.Hook, action string) bool {
	for _, e := range hook.AllEntries() {
		if e.Data["ACTION"] == action && e.Data["COMPONENT"] == Kubelet {
			return true
		}
	}
	return false
}

func TestKubeletServesTheRenewedCertificate(t *testing.T) {
	sel := &renew.Selection{Names: []string{renew.KubeletServingName}}
	ctx := context.Background()

	t.Run("reloads", func(t *testing.T) {
		k := &fakeKubelet{reloads: true}
		e, hook := servingEngine(t, k)
		e.RestartKubelet = func(context.Context) error { k.restarts++; return nil }
		if _, err := e.Converge(ctx, sel); err != nil {
			t.Fatal(err)
		}
		if k.restarts != 0 || !logged(hook, "reloaded") {
			t.Errorf("a kubelet that reloads: %d restarts, reload logged %v", k.restarts, logged(hook, "reloaded"))
		}
	})

	t.Run("restarted when it does not reload", func(t *testing.T) {
		k := &fakeKubelet{}
		e, hook := servingEngine(t, k)
		e.RestartKubelet = func(context.Context) error { k.restarts++; k.load(t); return nil }
		if _, err := e.Converge(ctx, sel); err != nil {
			t.Fatal(err)
		}
		if k.restarts != 1 || !logged(hook, "restarted") {
			t.Errorf("%d restarts, restart logged %v", k.restarts, logged(hook, "restarted"))
		}
		if _, _, stale := e.KubeletServesStale(ctx); stale {
			t.Error("stale after the restart")
		}
	})

	t.Run("a restart that does not help is an error naming the kubelet", func(t *testing.T) {
		k := &fakeKubelet{}
		e, _ := servingEngine(t, k)
		e.RestartKubelet = func(context.Context) error { k.restarts++; return nil }
		_, err := e.Converge(ctx, sel)
		if err == nil || !strings.HasPrefix(err.Error(), "kubelet: restarted, but it serves") {
			t.Fatalf("got %v", err)
		}
		if file, served, stale := e.KubeletServesStale(ctx); !stale || file == served {
			t.Errorf("not reported stale: file %s served %s", file, served)
		}
		if got := e.Look().Owed; len(got) != 0 {
			t.Errorf("owed without a runtime: %v", got)
		}
	})

	t.Run("no way to restart", func(t *testing.T) {
		k := &fakeKubelet{}
		e, _ := servingEngine(t, k)
		_, err := e.Converge(ctx, sel)
		if err == nil || !strings.Contains(err.Error(), "kubelet: serves serial") || !strings.Contains(err.Error(), "kubeletRestartCommand") {
			t.Fatalf("got %v", err)
		}
		// A later round that writes nothing only says it.
		if _, err := e.Converge(ctx, &renew.Selection{}); err != nil {
			t.Errorf("a round that wrote nothing failed: %v", err)
		}
	})
}
