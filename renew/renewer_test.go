package renew_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/pkirenewd/pkirenewd/kubeadmconfig"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

const day = 24 * time.Hour

type fixture struct {
	root     string
	layout   renewtest.Layout
	stateDir string
	log      *logtest.Hook
	now      time.Time
}

func newFixture(t testing.TB, o renewtest.Options) *fixture {
	t.Helper()
	if o.Algorithm == "" {
		o.Algorithm = "ECDSA-P256" // fast; RSA is covered where it matters
	}
	root := t.TempDir()
	l, err := renewtest.MakePKI(filepath.Join(root, "kubernetes"), o)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{root: root, layout: l, stateDir: filepath.Join(root, "state"), now: time.Now().Add(time.Hour)}
}

func (f *fixture) renewer(mod func(*renew.Options)) *renew.Renewer {
	logger, hook := logtest.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	f.log = hook
	o := renew.Options{
		Dirs:         renew.Dirs{PKIDir: f.layout.PKIDir, KubeconfigDir: f.layout.KubeconfigDir},
		StateDir:     f.stateDir,
		Policy:       pki.Policy{RenewBefore: 90 * day, NodeName: "node1"},
		CAWarnBefore: 180 * day,
		Validity:     365 * day,
		Now:          func() time.Time { return f.now },
		Log:          logger,
	}
	if mod != nil {
		mod(&o)
	}
	return renew.New(o)
}

func (f *fixture) inventory(t testing.TB) *renew.Inventory {
	t.Helper()
	inv, err := renew.TakeInventory(renew.Dirs{PKIDir: f.layout.PKIDir, KubeconfigDir: f.layout.KubeconfigDir})
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func (f *fixture) renew(t testing.TB, r *renew.Renewer, sel renew.Selection) (*renew.Plan, error) {
	t.Helper()
	inv, _, err := r.Inventory()
	if err != nil {
		return nil, err
	}
	plan, err := r.Plan(inv, sel)
	if err != nil {
		return nil, err
	}
	_, err = r.Apply(plan)
	return plan, err
}

// requireConsistent proves the PKI is usable: every item parses, every
// certificate matches its key and is signed by its CA.
func requireConsistent(t testing.TB, inv *renew.Inventory) {
	t.Helper()
	for _, it := range append(append([]*renew.Item{}, inv.CAs...), inv.Certs...) {
		if it.Err != nil || it.Missing {
			t.Fatalf("%s: broken=%v missing=%v", it.Name, it.Err, it.Missing)
		}
	}
}

// requireLeafStates: every leaf and kubeconfig is in state want, every CA ok.
func requireLeafStates(t testing.TB, statuses []renew.Status, want pki.State) {
	t.Helper()
	for _, s := range statuses {
		w := want
		if s.Kind == renew.KindCA {
			w = pki.StateOK
		}
		if s.State != w {
			t.Errorf("%s: %v, want %v", s.Name, s.State, w)
		}
	}
}

func certsByName(inv *renew.Inventory) map[string]*x509.Certificate {
	m := map[string]*x509.Certificate{}
	for _, it := range inv.Certs {
		m[it.Name] = it.Cert
	}
	for _, it := range inv.CAs {
		m[it.Name] = it.Cert
	}
	return m
}

func TestRenewAllKeepsIdentity(t *testing.T) {
	t.Parallel()
	for _, alg := range []string{"RSA-2048", "ECDSA-P256", "ECDSA-P384"} {
		t.Run(alg, func(t *testing.T) {
			f := newFixture(t, renewtest.Options{Algorithm: alg})
			before := f.inventory(t)
			requireConsistent(t, before)
			old := certsByName(before)
			treeBefore, _ := renewtest.HashTree(f.layout.KubeconfigDir)
			confBefore := map[string][]byte{}
			for _, n := range []string{"admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf"} {
				confBefore[n], _ = os.ReadFile(filepath.Join(f.layout.KubeconfigDir, n))
			}

			plan, err := f.renew(t, f.renewer(nil), renew.Selection{Force: true})
			if err != nil {
				t.Fatal(err)
			}
			if got := len(plan.Items); got != 12 {
				t.Fatalf("renewed %d items, want 12 (7 leaves + 5 kubeconfigs)", got)
			}
			after := f.inventory(t)
			requireConsistent(t, after)
			for name, nc := range certsByName(after) {
				oc := old[name]
				if strings.HasSuffix(name, "ca") {
					if !bytes.Equal(oc.Raw, nc.Raw) {
						t.Errorf("CA %s changed", name)
					}
					continue
				}
				if err := pki.SameIdentity(oc, nc); err != nil {
					t.Errorf("%s: %v", name, err)
				}
				if oc.SerialNumber.Cmp(nc.SerialNumber) == 0 {
					t.Errorf("%s: serial not changed", name)
				}
				if pubEqual(oc.PublicKey, nc.PublicKey) {
					t.Errorf("%s: key not changed", name)
				}
				if !nc.NotAfter.After(oc.NotAfter) {
					t.Errorf("%s: NotAfter %v not after %v", name, nc.NotAfter, oc.NotAfter)
				}
				if want := f.now.Add(-5 * time.Minute).UTC().Truncate(time.Second); !nc.NotBefore.Equal(want) {
					t.Errorf("%s: NotBefore %v, want %v (backdated 5m)", name, nc.NotBefore, want)
				}
				if want := f.now.Add(365 * day).UTC().Truncate(time.Second); !nc.NotAfter.Equal(want) {
					t.Errorf("%s: NotAfter %v, want %v", name, nc.NotAfter, want)
				}
				if len(nc.SubjectKeyId) == 0 || len(nc.AuthorityKeyId) == 0 {
					t.Errorf("%s: SKID/AKID missing", name)
				}
				if got, want := keyAlg(nc), alg; got != want {
					t.Errorf("%s: key %s, want %s (same as before)", name, got, want)
				}
			}
			// Modes kept; sa.key/sa.pub and CA files untouched.
			treeAfter, _ := renewtest.HashTree(f.layout.KubeconfigDir)
			for p, v := range treeBefore {
				w := treeAfter[p]
				if strings.Split(v, ":")[1] != strings.Split(w, ":")[1] {
					t.Errorf("%s: mode changed %s -> %s", p, v, w)
				}
				if (strings.HasPrefix(p, "pki/sa.") || strings.HasSuffix(p, "ca.crt") || strings.HasSuffix(p, "ca.key")) && v != w {
					t.Errorf("%s changed", p)
				}
			}
			// Kubeconfigs: only the two credential lines differ.
			creds := regexp.MustCompile(`(?m)^(\s*client-(certificate|key)-data:) .*$`)
			for n, b := range confBefore {
				a, _ := os.ReadFile(filepath.Join(f.layout.KubeconfigDir, n))
				if bytes.Equal(a, b) {
					t.Errorf("%s unchanged", n)
				}
				if x, y := creds.ReplaceAll(b, []byte("$1 X")), creds.ReplaceAll(a, []byte("$1 X")); !bytes.Equal(x, y) {
					t.Errorf("%s: more than the credentials changed:\n%s\n---\n%s", n, x, y)
				}
			}
		})
	}
}

func pubEqual(a, b crypto.PublicKey) bool {
	type eq interface{ Equal(x crypto.PublicKey) bool }
	return a.(eq).Equal(b)
}

func keyAlg(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		return "RSA-" + strconv.Itoa(k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA-P" + strings.TrimPrefix(k.Curve.Params().Name, "P-")
	}
	return "?"
}

func TestAlgorithmAndValidityFromKubeadmConfig(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{Algorithm: "RSA-2048", NotBefore: time.Now().Add(-300 * day)})
	cfg := filepath.Join(f.root, "kubeadm.yaml")
	if err := os.WriteFile(cfg, []byte(`apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
encryptionAlgorithm: ECDSA-P256
certificateValidityPeriod: 2160h0m0s
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cs, src, err := kubeadmconfig.LoadClusterSettings(cfg, f.stateDir, true)
	if err != nil || src != cfg {
		t.Fatalf("LoadClusterSettings: %v %q", err, src)
	}
	if cs.EncryptionAlgorithm != "ECDSA-P256" || cs.CertificateValidityPeriod != 90*day {
		t.Fatalf("settings %+v", cs)
	}
	// The cached copy is used when the file is not given any more.
	cached, src, err := kubeadmconfig.LoadClusterSettings("", f.stateDir, false)
	if err != nil || cached != cs || !strings.HasPrefix(src, f.stateDir) {
		t.Fatalf("cached settings %+v from %q: %v", cached, src, err)
	}
	r := f.renewer(func(o *renew.Options) {
		o.Algorithm = cs.EncryptionAlgorithm
		o.Validity = cs.CertificateValidityPeriod
	})
	if _, err := f.renew(t, r, renew.Selection{Force: true}); err != nil {
		t.Fatal(err)
	}
	after := f.inventory(t)
	requireConsistent(t, after)
	for _, it := range after.Certs {
		if got := keyAlg(it.Cert); got != "ECDSA-P256" {
			t.Errorf("%s: key %s, want ECDSA-P256", it.Name, got)
		}
		if got := it.Cert.NotAfter.Sub(it.Cert.NotBefore); got != 90*day+5*time.Minute {
			t.Errorf("%s: lifetime %v", it.Name, got)
		}
	}
	// The ConfigMap form works too.
	cm := []byte("apiVersion: v1\nkind: ConfigMap\ndata:\n  ClusterConfiguration: |\n    kind: ClusterConfiguration\n    encryptionAlgorithm: RSA-3072\n")
	if s, err := kubeadmconfig.Parse(cm); err != nil || s.EncryptionAlgorithm != "RSA-3072" {
		t.Fatalf("ConfigMap: %+v %v", s, err)
	}
	for _, bad := range []string{"kind: ClusterConfiguration\nencryptionAlgorithm: DSA-1024\n", "kind: ClusterConfiguration\ncertificateValidityPeriod: forever\n", "kind: InitConfiguration\n", "{{"} {
		if _, err := kubeadmconfig.Parse([]byte(bad)); err == nil {
			t.Errorf("kubeadmconfig.Parse(%q) accepted", bad)
		}
	}
}

func TestRenewOnlyWhatIsDue(t *testing.T) {
	t.Parallel()
	// Issued 300 days ago with a year's validity: 65 days left < 90.
	f := newFixture(t, renewtest.Options{NotBefore: time.Now().Add(-300 * day)})
	r := f.renewer(nil)
	_, statuses, err := r.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	requireLeafStates(t, statuses, pki.StateDue)
	plan, err := f.renew(t, r, renew.Selection{})
	if err != nil || len(plan.Items) != 12 {
		t.Fatalf("renewed %v items: %v", plan, err)
	}
	// Now nothing is due: a second run writes nothing.
	tree, _ := renewtest.HashTree(f.root)
	plan, err = f.renew(t, f.renewer(nil), renew.Selection{})
	if err != nil || len(plan.Items) != 0 {
		t.Fatalf("second run planned %d items: %v", len(plan.Items), err)
	}
	if after, _ := renewtest.HashTree(f.root); renewtest.DiffTrees(tree, after) != "" {
		t.Fatalf("a run with nothing due changed files:\n%s", renewtest.DiffTrees(tree, after))
	}
}

func TestRenewNamed(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{})
	before, _ := renewtest.HashTree(f.layout.KubeconfigDir)
	plan, err := f.renew(t, f.renewer(nil), renew.Selection{Names: []string{"apiserver", "scheduler.conf"}})
	if err != nil || len(plan.Items) != 2 {
		t.Fatalf("plan %v: %v", plan, err)
	}
	after, _ := renewtest.HashTree(f.layout.KubeconfigDir)
	diff := renewtest.DiffTrees(before, after)
	for _, want := range []string{"pki/apiserver.crt", "pki/apiserver.key", "scheduler.conf"} {
		if !strings.Contains(diff, want+":") {
			t.Errorf("%s not changed", want)
		}
	}
	if n := strings.Count(diff, "\n") + 1; n != 3 {
		t.Errorf("changed %d files, want 3:\n%s", n, diff)
	}
	for _, tc := range []struct{ name, want string }{
		{"nope", "unknown certificate"},
		{"ca", ""},
		{"apiserver-etcd-client", ""},
	} {
		_, err := f.renewer(nil).Plan(f.inventory(t), renew.Selection{Names: []string{tc.name}})
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestExternalCA(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{})
	if err := os.Remove(filepath.Join(f.layout.PKIDir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	r := f.renewer(nil)
	inv, statuses, err := r.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range statuses {
		wantExt := s.Name == "ca" || s.CAName == "ca"
		if s.External != wantExt {
			t.Errorf("%s: external=%v, want %v", s.Name, s.External, wantExt)
		}
	}
	plan, err := r.Plan(inv, renew.Selection{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range plan.Items {
		if p.CAName == "ca" {
			t.Errorf("%s planned though its CA key is absent", p.Name)
		}
	}
	if len(plan.Items) != 5 { // front-proxy-client + 4 etcd leaves
		t.Errorf("planned %d items, want 5", len(plan.Items))
	}
	if _, err := r.Plan(inv, renew.Selection{Names: []string{"admin.conf"}}); err == nil || !strings.Contains(err.Error(), "external CA") {
		t.Errorf("named external item: %v", err)
	}
}

func TestExternalEtcdAndNoSuperAdmin(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{ExternalEtcd: true, NoSuperAdmin: true})
	inv := f.inventory(t)
	requireConsistent(t, inv)
	if len(inv.CAs) != 2 || len(inv.Certs) != 7 {
		t.Fatalf("%d CAs and %d certs, want 2 and 7", len(inv.CAs), len(inv.Certs))
	}
	if _, err := f.renew(t, f.renewer(nil), renew.Selection{Force: true}); err != nil {
		t.Fatal(err)
	}
	requireConsistent(t, f.inventory(t))
}

func TestKubeletRotatedCertIsReportedNotRenewed(t *testing.T) {
	t.Parallel()
	f2 := newFixture(t, renewtest.Options{KubeletPKIDir: filepath.Join(t.TempDir(), "kubelet-pki")})
	inv := f2.inventory(t)
	kc := inv.Find("kubelet.conf")
	if kc == nil || kc.RotatedBy != "kubelet" || kc.Cert == nil || kc.Err != nil {
		t.Fatalf("kubelet.conf: %+v", kc)
	}
	if !strings.HasSuffix(kc.CertPath, "kubelet-client-current.pem") {
		t.Errorf("kubelet.conf reported from %s", kc.CertPath)
	}
	if kc.KubeconfigPath != filepath.Join(f2.layout.KubeconfigDir, "kubelet.conf") || kc.UserName == "" || len(kc.ClusterCA) != 1 {
		t.Errorf("kubelet.conf's kubeconfig %q, user %q, %d cluster CAs", kc.KubeconfigPath, kc.UserName, len(kc.ClusterCA))
	}
	plan, err := f2.renew(t, f2.renewer(nil), renew.Selection{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range plan.Items {
		if p.Name == "kubelet.conf" {
			t.Error("kubelet.conf renewed though the kubelet rotates it")
		}
	}
	if _, err := f2.renewer(nil).Plan(f2.inventory(t), renew.Selection{Names: []string{"kubelet.conf"}}); err == nil {
		t.Error("named kubelet.conf accepted")
	}
}

func TestValidityCappedAtCA(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{CAValidity: 100 * day, Validity: 30 * day})
	r := f.renewer(nil)
	if _, err := f.renew(t, r, renew.Selection{Names: []string{"apiserver"}}); err != nil {
		t.Fatal(err)
	}
	inv := f.inventory(t)
	if got, want := inv.Find("apiserver").Cert.NotAfter, inv.CA("ca").Cert.NotAfter; !got.Equal(want) {
		t.Errorf("NotAfter %v, want the CA's %v", got, want)
	}
	warned := false
	for _, e := range f.log.AllEntries() {
		warned = warned || (e.Level == logrus.WarnLevel && strings.Contains(e.Message, "capped"))
	}
	if !warned {
		t.Error("no warning about the capped validity")
	}
	// The CA's own state: within caWarnBefore, so due (reported, never renewed).
	_, statuses, _ := r.Inventory()
	for _, s := range statuses {
		if s.Name == "ca" && s.State != pki.StateDue {
			t.Errorf("CA state %v, want due (warn)", s.State)
		}
	}
}

// Once capped at its CA's expiry, a certificate falls due again at two
// thirds of its shortened life; renewing it then could not end it later,
// so it is held (reported, not renewed) until the CA is renewed.
func TestCappedCertificateIsHeldNotRenewedAgain(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{CAValidity: 100 * day, Validity: 30 * day})
	r := f.renewer(nil)
	if _, err := f.renew(t, r, renew.Selection{Names: []string{"apiserver"}}); err != nil {
		t.Fatal(err)
	}
	f.now = f.now.Add(80 * day) // past 2/3 of the capped ~100 day life
	r = f.renewer(nil)
	inv, statuses, err := r.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range statuses {
		if s.Name == "apiserver" && (s.State != pki.StateOK || !strings.Contains(s.Held, "CA expires")) {
			t.Fatalf("apiserver: state %v held %q, want held", s.State, s.Held)
		}
	}
	plan, err := r.Plan(inv, renew.Selection{})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range plan.Items {
		if it.Name == "apiserver" {
			t.Error("the capped apiserver certificate was planned again")
		}
	}
}

func TestExpiredCAIsRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{NotBefore: time.Now().Add(-20 * day), CAValidity: 10 * day, Validity: 5 * day})
	tree, _ := renewtest.HashTree(f.root)
	_, err := f.renew(t, f.renewer(nil), renew.Selection{Force: true})
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("renewal with an expired CA: %v", err)
	}
	after, _ := renewtest.HashTree(f.root)
	if d := renewtest.DiffTrees(tree, after); d != "" {
		t.Fatalf("files changed:\n%s", d)
	}
}

func TestExpiredLeavesAreRenewed(t *testing.T) {
	t.Parallel()
	// Day 366: every leaf expired a day ago.
	f := newFixture(t, renewtest.Options{NotBefore: time.Now().Add(-366 * day)})
	r := f.renewer(nil)
	_, statuses, _ := r.Inventory()
	for _, s := range statuses {
		if s.Kind != renew.KindCA && s.State != pki.StateExpired {
			t.Errorf("%s: %v, want expired", s.Name, s.State)
		}
	}
	if _, err := f.renew(t, r, renew.Selection{}); err != nil {
		t.Fatal(err)
	}
	_, statuses, _ = f.renewer(nil).Inventory()
	for _, s := range statuses {
		if s.State != pki.StateOK {
			t.Errorf("after renewal %s: %v", s.Name, s.State)
		}
	}
}

// A certificate issued while the clock was ahead is unusable now (every
// TLS peer rejects it): flagged, renewed at once, and its replacement
// starts now, although it ends earlier than the bad one.
func TestNotYetValidIsRenewedAtOnce(t *testing.T) {
	t.Parallel()
	real := time.Now()
	f := newFixture(t, renewtest.Options{NotBefore: real.Add(3 * day), CANotBefore: real.Add(-30 * day)})
	f.now = real
	r := f.renewer(nil)
	_, statuses, err := r.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	requireLeafStates(t, statuses, pki.StateNotYetValid)
	if _, err := f.renew(t, r, renew.Selection{}); err != nil {
		t.Fatal(err)
	}
	_, statuses, _ = f.renewer(nil).Inventory()
	for _, s := range statuses {
		if s.State != pki.StateOK {
			t.Errorf("after renewal %s: %v", s.Name, s.State)
		}
		if s.Kind != renew.KindCA && (s.Cert.NotBefore.After(real) || s.Cert.NotBefore.Before(real.Add(-10*time.Minute))) {
			t.Errorf("%s: NotBefore %v, want just before %v", s.Name, s.Cert.NotBefore, real)
		}
	}
	requireConsistent(t, f.inventory(t))
}

func TestCADataMismatchIsAWarning(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{})
	other, err := renewtest.MakePKI(t.TempDir(), renewtest.Options{Algorithm: "ECDSA-P256"})
	if err != nil {
		t.Fatal(err)
	}
	otherCA, _ := os.ReadFile(filepath.Join(other.PKIDir, "ca.crt"))
	p := filepath.Join(f.layout.KubeconfigDir, "admin.conf")
	data, _ := os.ReadFile(p)
	re := regexp.MustCompile(`certificate-authority-data: \S+`)
	data = re.ReplaceAll(data, []byte("certificate-authority-data: "+base64.StdEncoding.EncodeToString(otherCA)))
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	it := f.inventory(t).Find("admin.conf")
	if it.Err != nil || len(it.Warnings) != 1 || !strings.Contains(it.Warnings[0], "certificate-authority-data differs") {
		t.Fatalf("err %v warnings %v", it.Err, it.Warnings)
	}
	if _, err := f.renew(t, f.renewer(nil), renew.Selection{Names: []string{"admin.conf"}}); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(p)
	if !bytes.Equal(re.Find(after), re.Find(data)) {
		t.Error("certificate-authority-data was re-pointed")
	}
}

// The kubelet rotates its own client certificate at 70-90 % of its life;
// one still in place past 90 % means rotation is stuck: due (never
// renewed by pkirenewd), expired when it has run out.
func TestKubeletRotationStuck(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		age   time.Duration
		state pki.State
	}{
		{100 * day, pki.StateOK},
		{320 * day, pki.StateOK}, // 88 %: the kubelet may still rotate it
		{335 * day, pki.StateDue},
		{370 * day, pki.StateExpired},
	} {
		f := newFixture(t, renewtest.Options{KubeletPKIDir: filepath.Join(t.TempDir(), "kubelet-pki"), NotBefore: time.Now().Add(-tc.age)})
		_, statuses, err := f.renewer(nil).Inventory()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range statuses {
			if s.Name != "kubelet.conf" {
				continue
			}
			if s.State != tc.state || s.RotationStuck() != (tc.state != pki.StateOK) {
				t.Errorf("issued %v ago: state %v stuck %v, want %v", tc.age, s.State, s.RotationStuck(), tc.state)
			}
		}
	}
}
