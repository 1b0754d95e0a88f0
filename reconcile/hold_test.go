package reconcile_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	testclock "k8s.io/utils/clock/testing"

	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/cri/critest"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/reconcile"
	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

// holdNode is a kubeadm node whose every leaf is due (issued 300 days
// ago, valid a year), with the kubelet's self-signed serving pair, as
// due, in a directory of its own.
type holdNode struct {
	layout  renewtest.Layout
	serving renew.KubeletServing
	state   string
	r       *renew.Renewer
	logger  *logrus.Logger
	log     *logtest.Hook
}

func newHoldNode(t *testing.T) *holdNode {
	t.Helper()
	root := t.TempDir()
	issued := time.Now().Add(-300 * 24 * time.Hour)
	l, err := renewtest.MakePKI(filepath.Join(root, "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256", NotBefore: issued})
	if err != nil {
		t.Fatal(err)
	}
	ks := kubeletServingPair(t, filepath.Join(root, "kubelet", "pki"), issued)
	log, hook := logtest.NewNullLogger()
	n := &holdNode{layout: l, serving: ks, state: filepath.Join(root, "state"), logger: log, log: hook}
	n.r = renew.New(renew.Options{Dirs: renew.Dirs{PKIDir: l.PKIDir, KubeconfigDir: l.KubeconfigDir, KubeletServing: ks}, StateDir: n.state,
		Policy: pki.Policy{RenewBefore: 90 * 24 * time.Hour}, Validity: 365 * 24 * time.Hour, Log: log})
	return n
}

// kubeletServingPair writes a self-signed kubelet.crt/.key as the kubelet
// makes them at its first start, issued at notBefore for a year.
func kubeletServingPair(t *testing.T, dir string, notBefore time.Time) renew.KubeletServing {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(notBefore.UnixNano()), Subject: pkix.Name{CommonName: "node1@1700000000"},
		NotBefore: notBefore, NotAfter: notBefore.Add(365 * 24 * time.Hour), DNSNames: []string{"node1"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := renewtest.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	ks := renew.KubeletServing{Source: renew.ServingSelfSigned, Renew: true, CertPath: filepath.Join(dir, "kubelet.crt"), KeyPath: filepath.Join(dir, "kubelet.key")}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ks.CertPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ks.KeyPath, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return ks
}

// serials maps each leaf and kubeconfig to its serial; due lists what is
// due, as the daemon passes it to Renew.
func (n *holdNode) serials(t *testing.T) (serials map[string]string, due []string, statuses []renew.Status) {
	t.Helper()
	_, statuses, err := n.r.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	serials = map[string]string{}
	for _, s := range statuses {
		if s.Kind == renew.KindCA || !s.Renewable() {
			continue
		}
		serials[s.Name] = renew.CertSerial(s.Cert)
		if s.State != pki.StateOK {
			due = append(due, s.Name)
		}
	}
	return serials, due, statuses
}

func status(t *testing.T, statuses []renew.Status, name string) renew.Status {
	t.Helper()
	for _, s := range statuses {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no %s in the inventory", name)
	return renew.Status{}
}

// renewedAllBut requires every serial of before changed in after, but
// held's.
func renewedAllBut(t *testing.T, before, after map[string]string, held string) {
	t.Helper()
	for name, serial := range before {
		if renewed := after[name] != serial; renewed != (name != held) {
			t.Errorf("%s: renewed=%v", name, renewed)
		}
	}
}

// errorLogged reports whether an Error line about cert names path.
func errorLogged(hook *logtest.Hook, cert, path string) bool {
	for _, en := range hook.AllEntries() {
		if en.Level == logrus.ErrorLevel && en.Data["CERT"] == cert && strings.Contains(en.Message, path) {
			return true
		}
	}
	return false
}

// The node: the unit keeps /var/lib/kubelet/pki read-only. The
// daemon's renewal of what is due writes the whole kubeadm set and holds
// the kubelet's serving pair, named with its fix; the renewal is a
// failure all the same (the metric, check). Once the directory is
// writable, the pair is renewed.
func TestKubeletServingPairHeldWhileTheKubeadmSetIsRenewed(t *testing.T) {
	renewtest.NeedRoot(t)
	n := newHoldNode(t)
	dir := filepath.Dir(n.serving.CertPath)
	renewtest.ReadOnlyBind(t, dir)
	before, due, _ := n.serials(t)
	if len(due) != len(before) || !slices.Contains(due, renew.KubeletServingName) {
		t.Fatalf("due %v, want all of %d", due, len(before))
	}
	events := &eventLog{}
	e := &reconcile.NodeEngine{Renewer: n.r, StateDir: n.state, Log: n.logger, Events: events}
	written, err := e.Renew(context.Background(), due)
	if err == nil {
		t.Fatal("no error: a held item must count as a failed renewal")
	}
	for _, want := range []string{n.serving.CertPath, "read-only file system", "ReadWritePaths=" + dir} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q:\n%v", want, err)
		}
	}
	for _, p := range written {
		if strings.HasPrefix(p, dir+"/") {
			t.Errorf("written: %s", p)
		}
	}
	after, _, statuses := n.serials(t)
	renewedAllBut(t, before, after, renew.KubeletServingName)
	if s := status(t, statuses, renew.KubeletServingName); s.State != pki.StateDue || !strings.Contains(s.Unwritable, "read-only file system") {
		t.Errorf("kubelet-serving after the renewal: %v, unwritable %q", s.State, s.Unwritable)
	}
	if !errorLogged(n.log, renew.KubeletServingName, n.serving.CertPath) {
		t.Error("no Error line names the held kubelet.crt")
	}
	if got := events.reasons(); got != "RenewalFailed! CertificatesRenewed" {
		t.Errorf("events %q", got)
	}

	// Writable again: the pair is renewed, in its own transaction.
	renewtest.Run(t, "umount", dir)
	_, due, _ = n.serials(t)
	if !slices.Equal(due, []string{renew.KubeletServingName}) {
		t.Fatalf("due %v, want the kubelet pair alone", due)
	}
	if _, err := e.Renew(context.Background(), due); err != nil {
		t.Fatal(err)
	}
	if again, _, _ := n.serials(t); again[renew.KubeletServingName] == before[renew.KubeletServingName] {
		t.Error("the kubelet pair was not renewed once writable")
	}
}

// One kubeadm item that cannot be written (scheduler.conf immutable): the
// rest of the kubeadm set is renewed, and the restarts are those of what
// was written — the scheduler, whose kubeconfig is unchanged, keeps
// running. The error names the file and its fix.
func TestImmutableKubeconfigHeldTheRestRenewedAndRestarted(t *testing.T) {
	renewtest.NeedRoot(t)
	n := newHoldNode(t)
	conf := filepath.Join(n.layout.KubeconfigDir, "scheduler.conf")
	renewtest.Chattr(t, "i", conf)
	// The manifests and pods after the flag (which changes the file's
	// ctime): the scheduler started after its kubeconfig last changed.
	manifests := fourManifests(t, n.layout.PKIDir, n.layout.KubeconfigDir)
	rt := critest.NewRuntime()
	for _, c := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		rt.AddStaticPod(c)
	}
	log := n.logger
	events := &eventLog{}
	e := &reconcile.NodeEngine{
		Renewer: n.r, StateDir: n.state, ManifestsDir: manifests, Log: log, Events: events,
		Connect: func(context.Context) (*cri.Restarter, func(), error) {
			return &cri.Restarter{Runtime: rt, Prober: &critest.Prober{}, Clock: testclock.NewFakeClock(time.Unix(0, 0)), Timeout: time.Minute, Log: log}, func() {}, nil
		},
	}
	before, due, _ := n.serials(t)
	_, err := e.Renew(context.Background(), due)
	if err == nil || !strings.Contains(err.Error(), conf) || !strings.Contains(err.Error(), "chattr -i "+conf) {
		t.Fatalf("want an error naming %s and its fix: %v", conf, err)
	}
	after, _, statuses := n.serials(t)
	renewedAllBut(t, before, after, "scheduler.conf")
	if s := status(t, statuses, "scheduler.conf"); s.State != pki.StateDue || !strings.Contains(s.Unwritable, "immutable") {
		t.Errorf("scheduler.conf after the renewal: %v, unwritable %q", s.State, s.Unwritable)
	}
	var stopped []string
	for _, c := range rt.Calls {
		if strings.HasPrefix(c, "stop ") {
			stopped = append(stopped, strings.Split(strings.TrimPrefix(c, "stop "), "-sandbox")[0])
		}
	}
	if want := []string{"etcd", "kube-apiserver", "kube-controller-manager"}; !reflect.DeepEqual(stopped, want) {
		t.Errorf("restarted %v, want %v: what was written, not the scheduler", stopped, want)
	}
	if owed, _ := renew.LoadPending(n.state); !owed.Empty() {
		t.Errorf("restarts still owed: %+v", owed)
	}
	if !errorLogged(n.log, "scheduler.conf", conf) {
		t.Error("no Error line names the held scheduler.conf")
	}
	if got, want := events.reasons(), "RenewalFailed! CertificatesRenewed ComponentRestarted ComponentRestarted ComponentRestarted"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
}

// An operator's explicit selection holds nothing, but the kubelet's
// serving pair is still a transaction of its own: refused in its
// read-only directory, it does not keep the kubeadm set from being
// written.
func TestForcedRenewalWritesTheKubeadmSetWhenTheKubeletPairIsRefused(t *testing.T) {
	renewtest.NeedRoot(t)
	n := newHoldNode(t)
	dir := filepath.Dir(n.serving.CertPath)
	renewtest.ReadOnlyBind(t, dir)
	before, _, _ := n.serials(t)
	e := &reconcile.NodeEngine{Renewer: n.r, StateDir: n.state, Log: n.logger}
	out, err := e.Converge(context.Background(), &renew.Selection{Force: true})
	if err == nil || !strings.Contains(err.Error(), "the kubelet's serving pair (a transaction of its own)") || !strings.Contains(err.Error(), "read-only file system: nothing was written") {
		t.Fatalf("want the kubelet pair's transaction refused, named: %v", err)
	}
	if out == nil || out.Plan == nil || len(out.Plan.Held) != 0 || len(out.Results) != 1 {
		t.Fatalf("outcome %+v", out)
	}
	after, _, _ := n.serials(t)
	renewedAllBut(t, before, after, renew.KubeletServingName)
}

// The container runtime cannot be asked, so no static pod may be
// restarted and the kubeadm set waits; the kubelet's serving pair needs
// none of them, and nothing unrelated may stop it: it is renewed, and the
// kubelet serves it, while the error still names what blocks the rest.
func TestKubeletServingPairRenewedWhileTheRuntimeIsDown(t *testing.T) {
	n := newHoldNode(t)
	before, due, _ := n.serials(t)
	served := ""
	manifests := filepath.Join(filepath.Dir(n.layout.PKIDir), "manifests")
	if err := os.MkdirAll(manifests, 0o755); err != nil {
		t.Fatal(err)
	}
	e := &reconcile.NodeEngine{Renewer: n.r, StateDir: n.state, ManifestsDir: manifests, Log: n.logger,
		Connect: func(context.Context) (*cri.Restarter, func(), error) {
			return nil, nil, errors.New("dial unix /run/containerd/containerd.sock: connect: connection refused")
		},
		KubeletServing: &reconcile.KubeletServingCheck{Addr: "127.0.0.1:10250", ReloadWait: time.Second,
			Served: func(context.Context, string) (string, error) {
				// The kubelet reloads its pair by itself (its default).
				var err error
				served, err = cri.SerialOnDisk(n.serving.CertPath)
				return served, err
			}},
	}
	_, err := e.Renew(context.Background(), due)
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("error %v, want the runtime named for the rest", err)
	}
	after, _, _ := n.serials(t)
	for name, serial := range before {
		if renewed := after[name] != serial; renewed != (name == renew.KubeletServingName) {
			t.Errorf("%s: renewed=%v with the runtime down", name, renewed)
		}
	}
	if served != after[renew.KubeletServingName] {
		t.Errorf("the kubelet serves %s, the renewed pair is %s", served, after[renew.KubeletServingName])
	}
}
