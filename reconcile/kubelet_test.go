package reconcile

import (
	"context"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/renew"
)

// fakeProc makes a /proc with one process per command line.
func fakeProc(t *testing.T, cmdlines ...[]string) string {
	t.Helper()
	proc := t.TempDir()
	for i, args := range cmdlines {
		d := filepath.Join(proc, strconv.Itoa(100+i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "comm"), []byte(filepath.Base(args[0])+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "cmdline"), []byte(strings.Join(args, "\x00")+"\x00"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return proc
}

func TestKubeletHealthzURL(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content string
		url           string
		err           bool
	}{
		{"kubeadm's defaults", "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n", "http://127.0.0.1:10248/healthz", false},
		{"own port and address", "kind: KubeletConfiguration\nhealthzBindAddress: 127.0.0.2\nhealthzPort: 11248\n", "http://127.0.0.2:11248/healthz", false},
		{"all addresses", "kind: KubeletConfiguration\nhealthzBindAddress: 0.0.0.0\n", "http://127.0.0.1:10248/healthz", false},
		{"turned off", "kind: KubeletConfiguration\nhealthzPort: 0\n", "", false},
		{"a key twice, as the kubelet reads it: the last wins", "kind: KubeletConfiguration\nhealthzPort: 1\nfeatureGates:\n  A: true\nhealthzPort: 11248\nfeatureGates:\n  B: true\n", "http://127.0.0.1:11248/healthz", false},
		{"not a kubelet configuration", "kind: Pod\n", "", true},
		{"garbage", "{{{", "", true},
	} {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		url, from, err := kubeletHealthz(fakeProc(t), p)
		if url != tc.url || (err != nil) != tc.err || from != p {
			t.Errorf("%s: %q from %q, %v", tc.name, url, from, err)
		}
	}
}

// The gate never switches off because the configuration is not where
// kubeadm puts it: the running kubelet's --config says where it is (as
// Kubespray runs it), and with none the kubelet's own default holds.
func TestKubeletHealthzElsewhere(t *testing.T) {
	dir := t.TempDir()
	kubespray := filepath.Join(dir, "kubelet-config.yaml")
	if err := os.WriteFile(kubespray, []byte("kind: KubeletConfiguration\nhealthzPort: 11248\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	absent := filepath.Join(dir, "absent", "config.yaml")
	for _, tc := range []struct {
		name     string
		proc     [][]string
		url      string
		fromPart string
	}{
		{"kubespray's --config=", [][]string{{"/usr/bin/kubelet", "--config=" + kubespray, "--v=2"}}, "http://127.0.0.1:11248/healthz", kubespray},
		{"--config given apart", [][]string{{"/usr/local/bin/kubelet", "--config", kubespray}}, "http://127.0.0.1:11248/healthz", kubespray},
		{"a kubelet without --config", [][]string{{"/usr/bin/kubelet", "--kubeconfig=/etc/kubernetes/kubelet.conf"}}, DefaultKubeletHealthz, "defaults"},
		{"no kubelet runs", nil, DefaultKubeletHealthz, "defaults"},
		{"not a kubelet", [][]string{{"/usr/bin/kubelet-exporter", "--config=" + kubespray}}, DefaultKubeletHealthz, "defaults"},
	} {
		url, from, err := kubeletHealthz(fakeProc(t, tc.proc...), absent)
		if err != nil || url != tc.url || !strings.Contains(from, tc.fromPart) {
			t.Errorf("%s: %q from %q, %v; want %q from %q", tc.name, url, from, err, tc.url, tc.fromPart)
		}
	}
}

// With healthz turned off, a running kubelet is the only sign of life;
// with none, the gate is shut.
func TestKubeletGateHealthzOff(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte("kind: KubeletConfiguration\nhealthzPort: 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := kubeletGate(context.Background(), fakeProc(t), p); err == nil || !strings.Contains(err.Error(), "no kubelet runs") {
		t.Errorf("no kubelet, healthz off: %v", err)
	}
	if err := kubeletGate(context.Background(), fakeProc(t, []string{"/usr/bin/kubelet", "--config=" + p}), p); err != nil {
		t.Errorf("a kubelet runs, healthz off: %v", err)
	}
}

func TestKubeletAlive(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer ok.Close()
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "[-]syncloop failed", 500) }))
	defer sick.Close()
	if err := KubeletAlive(context.Background(), ok.URL+"/healthz"); err != nil {
		t.Error(err)
	}
	if err := KubeletAlive(context.Background(), sick.URL+"/healthz"); err == nil {
		t.Error("a failing healthz passed")
	}
	gone := httptest.NewServer(http.NotFoundHandler())
	url := gone.URL
	gone.Close()
	if err := KubeletAlive(context.Background(), url+"/healthz"); err == nil {
		t.Error("a stopped kubelet passed")
	}
}

func TestKubeletClientUsable(t *testing.T) {
	now := time.Date(2027, 6, 1, 0, 0, 0, 0, time.UTC)
	rotated := func(nb, na time.Time) renew.Status {
		return renew.Status{Item: &renew.Item{Name: "kubelet.conf", Kind: renew.KindKubeconfig, RotatedBy: "kubelet",
			CertPath: "/var/lib/kubelet/pki/kubelet-client-current.pem", Cert: &x509.Certificate{NotBefore: nb, NotAfter: na}}}
	}
	missing := rotated(now, now)
	missing.Cert, missing.Missing = nil, true
	embedded := rotated(now.Add(-400*24*time.Hour), now.Add(-time.Hour))
	embedded.RotatedBy = ""
	for _, tc := range []struct {
		name string
		st   renew.Status
		want string // part of the error; "" when usable
	}{
		{"valid", rotated(now.Add(-time.Hour), now.Add(time.Hour)), ""},
		{"expired", rotated(now.Add(-400*24*time.Hour), now.Add(-time.Minute)), "expired"},
		{"not yet valid", rotated(now.Add(time.Hour), now.Add(400*24*time.Hour)), "not valid before"},
		{"missing", missing, "missing"},
		{"embedded: pkirenewd renews it itself", embedded, ""},
	} {
		err := KubeletClientUsable([]renew.Status{tc.st}, now)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
