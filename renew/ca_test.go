package renew_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/kubeconfig"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

// caFixture is a PKI whose CAs end in 100 days (inside a year's
// caRenewBefore) while the leaves have most of a year left.
func caFixture(t *testing.T) *fixture {
	t.Helper()
	now := time.Now()
	f := newFixture(t, renewtest.Options{CANotBefore: now.Add(-10*365*day + 100*day)})
	f.now = now.Add(time.Hour)
	return f
}

func autoCA(o *renew.Options) { o.CARenewBefore = 365 * day }

func readCert(t *testing.T, p string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.ParseCertPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func clusterCA(t *testing.T, p string) []byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kubeconfig.ClusterCAs(data)
	if err != nil || len(cl) == 0 {
		t.Fatalf("%s: %v", p, err)
	}
	return cl[0].Data
}

func TestCARenewalBringsEveryHolderAlong(t *testing.T) {
	t.Parallel()
	f := caFixture(t)
	pkiDir, kcDir := f.layout.PKIDir, f.layout.KubeconfigDir
	oldCA := readCert(t, filepath.Join(pkiDir, "ca.crt"))
	oldFP := readCert(t, filepath.Join(pkiDir, "front-proxy-ca.crt"))
	leaf := readCert(t, filepath.Join(pkiDir, "apiserver.crt"))
	// A bundle an installer keeps, and a kubeconfig of another cluster.
	bundle := append(pki.EncodeCertPEM(oldCA.Raw), pki.EncodeCertPEM(oldFP.Raw)...)
	must(t, os.WriteFile(filepath.Join(pkiDir, "ca-bundle.pem"), bundle, 0o644))
	foreign := []byte("apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster:\n    server: https://192.0.2.99:6443\n    certificate-authority-data: " +
		b64(pki.EncodeCertPEM(leaf.Raw)) + "\ncontexts: []\nusers: []\n")
	must(t, os.WriteFile(filepath.Join(kcDir, "other.conf"), foreign, 0o600))
	schedBefore, _ := os.ReadFile(filepath.Join(kcDir, "scheduler.conf"))
	leavesBefore, _ := renewtest.HashTree(pkiDir)

	plan, err := f.renew(t, f.renewer(autoCA), renew.Selection{})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range plan.Items {
		if it.Kind != renew.KindCA {
			t.Errorf("%s renewed in the CA round: the leaves come next, knowing the CA's new end", it.Name)
		}
	}
	for _, name := range []string{"ca.crt", "front-proxy-ca.crt", "etcd/ca.crt"} {
		old := map[string]*x509.Certificate{"ca.crt": oldCA, "front-proxy-ca.crt": oldFP}[name]
		c := readCert(t, filepath.Join(pkiDir, name))
		if old != nil && (!bytes.Equal(c.RawSubject, old.RawSubject) || !bytes.Equal(c.SubjectKeyId, old.SubjectKeyId) || !c.NotAfter.After(old.NotAfter)) {
			t.Errorf("%s: not a same-key renewal", name)
		}
		if c.NotAfter.Before(f.now.Add(9 * 365 * day)) {
			t.Errorf("%s ends %v: the CA's own ten years from now were wanted", name, c.NotAfter)
		}
	}
	newCA := readCert(t, filepath.Join(pkiDir, "ca.crt"))
	newPEM := pki.EncodeCertPEM(newCA.Raw)
	for _, conf := range []string{"admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf", "super-admin.conf"} {
		if got := clusterCA(t, filepath.Join(kcDir, conf)); !bytes.Equal(got, newPEM) {
			t.Errorf("%s still carries the old CA", conf)
		}
	}
	schedAfter, _ := os.ReadFile(filepath.Join(kcDir, "scheduler.conf"))
	if want := bytes.Replace(schedBefore, []byte(b64(pki.EncodeCertPEM(oldCA.Raw))), []byte(b64(newPEM)), 1); !bytes.Equal(schedAfter, want) {
		t.Error("scheduler.conf: more than its certificate-authority-data changed")
	}
	certs, err := pki.ParseCertsPEM(mustRead(t, filepath.Join(pkiDir, "ca-bundle.pem")))
	if err != nil || len(certs) != 2 || !bytes.Equal(certs[0].Raw, newCA.Raw) || !bytes.Equal(certs[1].Raw, readCert(t, filepath.Join(pkiDir, "front-proxy-ca.crt")).Raw) {
		t.Errorf("ca-bundle.pem does not carry both renewed CAs in order: %v", err)
	}
	if got := mustRead(t, filepath.Join(kcDir, "other.conf")); !bytes.Equal(got, foreign) {
		t.Error("a kubeconfig of another cluster was changed")
	}
	after, _ := renewtest.HashTree(pkiDir)
	for path := range leavesBefore {
		if !strings.Contains(path, "ca") && leavesBefore[path] != after[path] {
			t.Errorf("leaf file %s changed: no leaf is re-issued for a same-key CA renewal", path)
		}
	}
	// The old leaves chain to the renewed CA once the old one has ended.
	pool := x509.NewCertPool()
	pool.AddCert(newCA)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: oldCA.NotAfter.Add(day)}); err != nil {
		t.Errorf("apiserver.crt under the renewed CA: %v", err)
	}
	// Nothing is due any more: a second round writes nothing.
	tree, _ := renewtest.HashTree(f.root)
	if plan, err := f.renew(t, f.renewer(autoCA), renew.Selection{}); err != nil || len(plan.Items) != 0 {
		t.Fatalf("second round planned %d items: %v", len(plan.Items), err)
	}
	if again, _ := renewtest.HashTree(f.root); renewtest.DiffTrees(tree, again) != "" {
		t.Errorf("second round changed files:\n%s", renewtest.DiffTrees(tree, again))
	}
}

func TestCARenewalManualOnlyWhenNamed(t *testing.T) {
	t.Parallel()
	f := caFixture(t)
	manual := func(o *renew.Options) { autoCA(o); o.CAManual = true }
	tree, _ := renewtest.HashTree(f.root)
	if plan, err := f.renew(t, f.renewer(manual), renew.Selection{}); err != nil || len(plan.Items) != 0 {
		t.Fatalf("manual: the daemon's round planned %d items: %v", len(plan.Items), err)
	}
	if after, _ := renewtest.HashTree(f.root); renewtest.DiffTrees(tree, after) != "" {
		t.Fatal("manual: files changed")
	}
	_, statuses, _ := f.renewer(manual).Inventory()
	for _, s := range statuses {
		if s.Kind == renew.KindCA && s.State != pki.StateDue {
			t.Errorf("%s: %v, want due (warned: 100 days < caWarnBefore)", s.Name, s.State)
		}
	}
	old := readCert(t, filepath.Join(f.layout.PKIDir, "front-proxy-ca.crt"))
	plan, err := f.renew(t, f.renewer(manual), renew.Selection{Names: []string{"front-proxy-ca"}})
	if err != nil || len(plan.Items) != 1 {
		t.Fatalf("renew front-proxy-ca: %v", err)
	}
	if c := readCert(t, filepath.Join(f.layout.PKIDir, "front-proxy-ca.crt")); !c.NotAfter.After(old.NotAfter) {
		t.Error("named CA not renewed")
	}
	if c := readCert(t, filepath.Join(f.layout.PKIDir, "ca.crt")); c.NotAfter.After(f.now.Add(365 * day)) {
		t.Error("a CA that was not named was renewed")
	}
}

func TestCAHoldersBroughtAlongWithoutRenewal(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{})
	kcDir := f.layout.KubeconfigDir
	ca := readCert(t, filepath.Join(f.layout.PKIDir, "ca.crt"))
	key, err := renewtest.ReadKey(filepath.Join(f.layout.PKIDir, "ca.key"))
	must(t, err)
	// Another node renewed the CA and this node adopted its certificate:
	// ca.crt is the renewed one, the kubeconfigs carry the old one.
	renewed, err := pki.RenewCA(pki.CARenewal{Old: ca, Key: key, Now: f.now})
	must(t, err)
	must(t, os.WriteFile(filepath.Join(f.layout.PKIDir, "ca.crt"), renewed.CertPEM, 0o644))
	_, statuses, _ := f.renewer(autoCA).Inventory()
	for _, s := range statuses {
		if s.Name == "ca" && (s.State != pki.StateDue || s.HoldersOld != 5) {
			t.Fatalf("ca: %v with %d old holders, want due with 5", s.State, s.HoldersOld)
		}
	}
	plan, err := f.renew(t, f.renewer(autoCA), renew.Selection{})
	if err != nil || len(plan.Items) != 1 {
		t.Fatalf("plan: %v", err)
	}
	if got := readCert(t, filepath.Join(f.layout.PKIDir, "ca.crt")); !bytes.Equal(got.Raw, renewed.Cert.Raw) {
		t.Error("ca.crt re-issued: its holders only were owed")
	}
	if got := clusterCA(t, filepath.Join(kcDir, "admin.conf")); !bytes.Equal(got, renewed.CertPEM) {
		t.Error("admin.conf not brought to ca.crt")
	}
}

func TestCARenewalRefusesAKeyThatIsNotTheCAs(t *testing.T) {
	t.Parallel()
	f := caFixture(t)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pemKey, err := renewtest.EncodeKey(other)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(f.layout.PKIDir, "front-proxy-ca.key"), pemKey, 0o600))
	tree, _ := renewtest.HashTree(f.root)
	if _, err := f.renew(t, f.renewer(autoCA), renew.Selection{Names: []string{"front-proxy-ca"}}); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("named: err = %v, want the key mismatch named", err)
	}
	if after, _ := renewtest.HashTree(f.root); renewtest.DiffTrees(tree, after) != "" {
		t.Fatal("files changed on the strength of a bad key")
	}
	// The daemon's round reports it broken, with the reason, and renews
	// the other CAs.
	plan, err := f.renew(t, f.renewer(autoCA), renew.Selection{HoldUnwritable: true})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, it := range plan.Items {
		names = append(names, it.Name)
	}
	if strings.Join(names, ",") != "ca,etcd-ca" {
		t.Errorf("renewed %v, want ca and etcd-ca", names)
	}
	_, statuses, _ := f.renewer(autoCA).Inventory()
	for _, s := range statuses {
		if s.Name == "front-proxy-ca" && (s.Err == nil || !strings.Contains(s.Err.Error(), "does not match")) {
			t.Errorf("front-proxy-ca: err %v, want the mismatch named", s.Err)
		}
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	must(t, err)
	return b
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// The day a CA has ended, with its leaves: the daemon's round (the due
// names) renews the CAs and, under them, every leaf, in one plan.
func TestDayTheCAsEndedEverythingIsRenewedInOneRound(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{CANotBefore: time.Now().Add(-10*365*day - day), NotBefore: time.Now().Add(-400 * day), Validity: 365 * day})
	r := f.renewer(autoCA)
	_, statuses, err := r.Inventory()
	must(t, err)
	var due []string
	for _, s := range statuses {
		if s.Scheduled() && s.State != pki.StateOK {
			due = append(due, s.Name)
		}
	}
	if len(due) < 15 {
		t.Fatalf("due %v: want the 3 CAs and every leaf", due)
	}
	inv, _, err := r.Inventory()
	must(t, err)
	plan, err := r.Plan(inv, renew.Selection{Names: due, HoldUnwritable: true})
	must(t, err)
	// As the engine writes it: the CAs with their holders, then the rest.
	for _, tx := range plan.Transactions() {
		_, err := r.Apply(tx)
		must(t, err)
	}
	caPEM := pki.EncodeCertPEM(readCert(t, filepath.Join(f.layout.PKIDir, "ca.crt")).Raw)
	if got := clusterCA(t, filepath.Join(f.layout.KubeconfigDir, "admin.conf")); !bytes.Equal(got, caPEM) {
		t.Error("admin.conf, renewed after the CA, went back to the old CA")
	}
	if len(plan.Items) != len(due) || len(plan.Held) != 0 {
		t.Fatalf("renewed %d of %d due items, held %v", len(plan.Items), len(due), plan.Held)
	}
	inv = f.inventory(t)
	requireConsistent(t, inv)
	_, statuses, _ = f.renewer(autoCA).Inventory()
	for _, s := range statuses {
		if s.State != pki.StateOK {
			t.Errorf("%s: %v after the round", s.Name, s.State)
		}
	}
}

// HA: another node renewed the CA and published it. This node adopts that
// issue (never one of its own), whatever its own schedule says; and a
// node whose issue is newer than the published one owes its publication.
func TestCAAdoptsTheIssueAnotherNodePublished(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{})
	ca := readCert(t, filepath.Join(f.layout.PKIDir, "ca.crt"))
	key, err := renewtest.ReadKey(filepath.Join(f.layout.PKIDir, "ca.key"))
	must(t, err)
	theirs, err := pki.RenewCA(pki.CARenewal{Old: ca, Key: key, Now: f.now})
	must(t, err)
	published := []renew.Published{{CA: "ca", Where: "kube-system/pkirenewd", Cert: theirs.Cert}}
	withPub := func(p []renew.Published) func(*renew.Options) {
		return func(o *renew.Options) { autoCA(o); o.Published = func() []renew.Published { return p } }
	}
	plan, err := f.renew(t, f.renewer(withPub(published)), renew.Selection{})
	if err != nil || len(plan.Items) != 1 || plan.Items[0].Name != "ca" {
		t.Fatalf("plan %v: %v", plan, err)
	}
	if got := readCert(t, filepath.Join(f.layout.PKIDir, "ca.crt")); !got.Equal(theirs.Cert) {
		t.Fatal("ca.crt is not the published issue")
	}
	if got := clusterCA(t, filepath.Join(f.layout.KubeconfigDir, "admin.conf")); !bytes.Equal(got, theirs.CertPEM) {
		t.Error("admin.conf does not carry the adopted CA")
	}
	if plan, err := f.renew(t, f.renewer(withPub(published)), renew.Selection{}); err != nil || len(plan.Items) != 0 {
		t.Fatalf("adopted, then due again: %v %v", plan.Items, err)
	}
	// A published issue older than this node's is not adopted: this
	// node's is published (the caller does it after the transaction).
	older := []renew.Published{{CA: "ca", Where: "kube-public/cluster-info", Cert: ca}}
	plan, err = f.renew(t, f.renewer(withPub(older)), renew.Selection{})
	if err != nil || len(plan.Items) != 1 || len(plan.Items[0].Publish) != 1 {
		t.Fatalf("older published: plan %v: %v", plan, err)
	}
	if got := readCert(t, filepath.Join(f.layout.PKIDir, "ca.crt")); !got.Equal(theirs.Cert) {
		t.Fatal("went back to the older published issue")
	}
	// Another CA's certificate published under the name is ignored.
	other := []renew.Published{{CA: "ca", Where: "kube-public/cluster-info", Cert: readCert(t, filepath.Join(f.layout.PKIDir, "front-proxy-ca.crt"))}}
	if plan, err := f.renew(t, f.renewer(withPub(other)), renew.Selection{}); err != nil || len(plan.Items) != 0 {
		t.Fatalf("a foreign published certificate planned %v: %v", plan.Items, err)
	}
}
