package renew_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/kubeconfig"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

var testIdentity = renew.Identity{User: "system:pkirenewd:node1", Group: "system:pkirenewd"}

func withIdentity(o *renew.Options) { o.Dirs.Identity = testIdentity }

func identityStatus(t *testing.T, r *renew.Renewer) renew.Status {
	t.Helper()
	_, statuses, err := r.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range statuses {
		if s.Name == renew.IdentityName {
			return s
		}
	}
	t.Fatalf("no %s in the inventory", renew.IdentityName)
	return renew.Status{}
}

// readIdentity parses the identity's kubeconfig and checks what a client
// of the API needs of it.
func readIdentity(t *testing.T, f *fixture) (*kubeconfig.Config, []byte) {
	t.Helper()
	p := filepath.Join(f.layout.KubeconfigDir, renew.IdentityName)
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %04o, want 0600", p, st.Mode().Perm())
	}
	data, _ := os.ReadFile(p)
	kc, err := kubeconfig.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := os.ReadFile(filepath.Join(f.layout.KubeconfigDir, "admin.conf"))
	akc, _ := kubeconfig.Parse(admin)
	ca, _ := os.ReadFile(filepath.Join(f.layout.PKIDir, "ca.crt"))
	if kc.Server != akc.Server || kc.ClusterName != akc.ClusterName || string(kc.CAData) != string(ca) || kc.UserName != testIdentity.User {
		t.Errorf("identity kubeconfig: server %q cluster %q user %q, want admin.conf's %q %q and the CA", kc.Server, kc.ClusterName, kc.UserName, akc.Server, akc.ClusterName)
	}
	return kc, data
}

// A node that has none issues its identity: due at once, a new 0600 file
// beside admin.conf (its server, the CA on disk) with CN=the node's user,
// O=the group, client auth, signed by the local CA; then it is renewed
// with the rest, in the same transaction, keeping its subject.
func TestIdentityIssuedThenRenewedWithTheRest(t *testing.T) {
	f := newFixture(t, renewtest.Options{})
	r := f.renewer(withIdentity)
	s := identityStatus(t, r)
	if s.Issue != "not issued yet" || s.State != pki.StateDue || !s.Renewable() || !s.Fresh() {
		t.Fatalf("before: %+v", s)
	}
	plan, err := f.renew(t, r, renew.Selection{})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Items) != 1 || plan.Items[0].Name != renew.IdentityName {
		t.Fatalf("planned %d items, want the identity alone", len(plan.Items))
	}
	kc, _ := readIdentity(t, f)
	cert, err := pki.ParseCertPEM(kc.CertData)
	if err != nil {
		t.Fatal(err)
	}
	ca := f.inventory(t).CA("ca").Cert
	if cert.Subject.CommonName != testIdentity.User || !slices.Equal(cert.Subject.Organization, []string{testIdentity.Group}) ||
		!slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || cert.CheckSignatureFrom(ca) != nil {
		t.Fatalf("issued %s, usages %v, signed by the CA: %v", cert.Subject, cert.ExtKeyUsage, cert.CheckSignatureFrom(ca))
	}
	if got := cert.NotAfter.Sub(f.now); got < 364*day || got > 366*day {
		t.Errorf("validity %v, want the configured 365 d", got)
	}
	if s := identityStatus(t, r); s.State != pki.StateOK || s.Issue != "" {
		t.Fatalf("after issuance: %s %q", s.State, s.Issue)
	}

	// 300 days on, everything is due: the identity is renewed in the one
	// transaction of the kubeadm set, backed up with it.
	f.now = f.now.Add(300 * day)
	plan, err = f.renew(t, r, renew.Selection{})
	if err != nil {
		t.Fatal(err)
	}
	txs := plan.Transactions()
	if len(txs) != 1 || txs[0].Part != renew.PartKubeadm || !slices.ContainsFunc(txs[0].Items, func(p renew.Planned) bool { return p.Name == renew.IdentityName }) {
		t.Fatalf("the identity is not renewed in the kubeadm set's transaction: %d parts", len(txs))
	}
	kc2, _ := readIdentity(t, f)
	renewed, _ := pki.ParseCertPEM(kc2.CertData)
	if renewed.SerialNumber.Cmp(cert.SerialNumber) == 0 || string(renewed.RawSubject) != string(cert.RawSubject) || !renewed.NotAfter.After(cert.NotAfter) {
		t.Errorf("renewal: serial %v -> %v, subject %s -> %s", cert.SerialNumber, renewed.SerialNumber, cert.Subject, renewed.Subject)
	}
	backups, _ := filepath.Glob(filepath.Join(f.stateDir, "backups", "*", "*-"+renew.IdentityName))
	if len(backups) != 1 {
		t.Errorf("backups of the identity: %v", backups)
	}
}

// Day 366 on a node that never had one: every leaf expired; one renewal
// issues the identity and renews the rest, before any lease is needed.
func TestIdentityIssuedOnDay366(t *testing.T) {
	f := newFixture(t, renewtest.Options{NotBefore: time.Now().Add(-366 * day)})
	r := f.renewer(withIdentity)
	plan, err := f.renew(t, r, renew.Selection{})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Items) != 13 || len(plan.Transactions()) != 2 || plan.Transactions()[0].Part != renew.PartIdentity {
		t.Fatalf("planned %d items in %d parts", len(plan.Items), len(plan.Transactions()))
	}
	readIdentity(t, f)
	_, statuses, _ := r.Inventory()
	requireLeafStates(t, statuses, pki.StateOK)
}

// An identity of another CA (kubeadm reset and init) or another node name
// is issued anew, not renewed and not left broken; one that does not parse
// stays broken (not pkirenewd's to guess about).
func TestIdentityReissued(t *testing.T) {
	f := newFixture(t, renewtest.Options{})
	other := newFixture(t, renewtest.Options{})
	ro := other.renewer(withIdentity)
	if _, err := other.renew(t, ro, renew.Selection{}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(other.layout.KubeconfigDir, renew.IdentityName))
	p := filepath.Join(f.layout.KubeconfigDir, renew.IdentityName)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	r := f.renewer(withIdentity)
	if s := identityStatus(t, r); s.Err != nil || s.State != pki.StateDue || s.Issue == "" || s.Fresh() {
		t.Fatalf("another CA's identity: err %v state %s issue %q", s.Err, s.State, s.Issue)
	}
	if _, err := f.renew(t, r, renew.Selection{}); err != nil {
		t.Fatal(err)
	}
	if s := identityStatus(t, r); s.State != pki.StateOK || s.Issue != "" {
		t.Fatalf("after reissue: %s %q", s.State, s.Issue)
	}
	renamed := f.renewer(func(o *renew.Options) {
		o.Dirs.Identity = renew.Identity{User: "system:pkirenewd:node7", Group: testIdentity.Group}
	})
	if s := identityStatus(t, renamed); s.Issue == "" {
		t.Errorf("a node renamed keeps the old node's identity")
	}
	if err := os.WriteFile(p, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s := identityStatus(t, r); s.Err == nil || s.Renewable() {
		t.Errorf("a corrupt identity is not broken: %+v", s)
	}
}

// A named renewal (`renew etcd-ca`) on a node that has no identity yet
// issues it too: the roll after it takes the lease with it.
func TestIdentityComesWithANamedRenewal(t *testing.T) {
	f := newFixture(t, renewtest.Options{})
	r := f.renewer(withIdentity)
	inv, _, err := r.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	plan, err := r.Plan(inv, renew.Selection{Names: []string{"front-proxy-client"}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, it := range plan.Items {
		names = append(names, it.Name)
	}
	if len(names) != 2 || !slices.Contains(names, renew.IdentityName) || !slices.Contains(names, "front-proxy-client") {
		t.Fatalf("planned %v, want front-proxy-client and the identity", names)
	}
}
