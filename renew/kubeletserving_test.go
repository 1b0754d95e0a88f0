package renew_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	certutil "k8s.io/client-go/util/cert"

	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

// kubeletPair writes the pair the real kubelet v1.37 writes at its first
// start (client-go's certutil.GenerateSelfSignedCertKey, as InitializeTLS
// calls it): kubelet.crt holds the leaf and its throwaway CA.
func kubeletPair(t *testing.T, dir string) renew.KubeletServing {
	t.Helper()
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey("node-1", []net.IP{net.ParseIP("10.0.0.7")}, []string{"node-1.example"})
	if err != nil {
		t.Fatal(err)
	}
	ks := renew.KubeletServing{Source: renew.ServingSelfSigned, Renew: true,
		CertPath: filepath.Join(dir, "kubelet.crt"), KeyPath: filepath.Join(dir, "kubelet.key")}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// certutil.WriteCert and keyutil.WriteKey's modes.
	if err := os.WriteFile(ks.CertPath, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ks.KeyPath, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return ks
}

func (f *fixture) withKubelet(ks renew.KubeletServing) func(*renew.Options) {
	return func(o *renew.Options) { o.KubeletServing = ks }
}

func serving(t *testing.T, statuses []renew.Status) renew.Status {
	t.Helper()
	for _, s := range statuses {
		if s.Name == renew.KubeletServingName {
			return s
		}
	}
	t.Fatal("no kubelet-serving item in the inventory")
	return renew.Status{}
}

func readCerts(t *testing.T, p string) []*x509.Certificate {
	t.Helper()
	certs, err := renewtest.ReadCerts(p)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

func TestKubeletServingRenewedLikeTheKubeletMadeIt(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{})
	ks := kubeletPair(t, filepath.Join(f.root, "kubelet", "pki"))
	old := readCerts(t, ks.CertPath)
	if len(old) != 2 || !old[1].IsCA {
		t.Fatalf("the kubelet's file holds %d certificates, want the leaf and its CA", len(old))
	}
	r := f.renewer(f.withKubelet(ks))
	_, statuses, err := r.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	s := serving(t, statuses)
	if !s.Renewable() || !s.SelfSigned() || s.State != pki.StateOK {
		t.Fatalf("kubelet-serving: renewable %v self-signed %v state %v err %v unmanaged %q", s.Renewable(), s.SelfSigned(), s.State, s.Err, s.Unmanaged)
	}
	// Due by the same policy as the other leaves: 90 days before expiry.
	f.now = old[0].NotAfter.Add(-89 * day)
	if _, statuses, _ = r.Inventory(); serving(t, statuses).State != pki.StateDue {
		t.Fatalf("89 days before expiry: %v, want due", serving(t, statuses).State)
	}
	plan, err := f.renew(t, r, renew.Selection{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(plan.Items, func(p renew.Planned) bool { return p.Name == renew.KubeletServingName }) {
		t.Fatal("a due kubelet-serving was not in the plan")
	}

	got := readCerts(t, ks.CertPath)
	if len(got) != 2 {
		t.Fatalf("renewed file holds %d certificates, want the leaf and its CA", len(got))
	}
	leaf, ca := got[0], got[1]
	if err := pki.SameIdentity(old[0], leaf); err != nil {
		t.Error(err)
	}
	if !bytes.Equal(ca.RawSubject, old[1].RawSubject) || !ca.IsCA {
		t.Errorf("CA: subject %q IsCA %v, want %q", ca.Subject, ca.IsCA, old[1].Subject)
	}
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		t.Errorf("the leaf is not signed by the CA in its file: %v", err)
	}
	if leaf.SerialNumber.Cmp(old[0].SerialNumber) == 0 || bytes.Equal(leaf.RawSubjectPublicKeyInfo, old[0].RawSubjectPublicKeyInfo) {
		t.Error("same serial or same key as before")
	}
	if life := leaf.NotAfter.Sub(f.now); life < 364*day || life > 366*day {
		t.Errorf("renewed for %v, want one year", life)
	}
	if k, ok := leaf.PublicKey.(*rsa.PublicKey); !ok || k.N.BitLen() != 2048 {
		t.Errorf("new key %T, want RSA-2048 like the old one", leaf.PublicKey)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: f.now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSName: "node-1"}); err != nil {
		t.Errorf("a client trusting the file's CA rejects the renewed certificate for node-1: %v", err)
	}
	keyPEM, _ := os.ReadFile(ks.KeyPath)
	if !strings.Contains(string(keyPEM), "RSA PRIVATE KEY") {
		t.Error("the key is no longer PKCS#1 as the kubelet writes it")
	}
	for p, want := range map[string]os.FileMode{ks.CertPath: 0o644, ks.KeyPath: 0o600} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %04o", p, st.Mode().Perm(), err, want)
		}
	}
	// Written through the store: the previous pair is in the backup.
	if _, err := os.Stat(filepath.Join(f.stateDir, "backups")); err != nil {
		t.Error(err)
	}
	if _, statuses, _ = r.Inventory(); serving(t, statuses).State != pki.StateOK || serving(t, statuses).Err != nil {
		t.Errorf("after the renewal: %v %v", serving(t, statuses).State, serving(t, statuses).Err)
	}
}

func TestKubeletServingKeptOwnerAndNoSymlinkFollowed(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{})
	dir := filepath.Join(f.root, "kubelet", "pki")
	ks := kubeletPair(t, dir)
	if err := os.Chown(ks.KeyPath, 0, 4242); err != nil && !os.IsPermission(err) {
		t.Fatal(err)
	}
	r := f.renewer(f.withKubelet(ks))
	if _, err := f.renew(t, r, renew.Selection{Names: []string{renew.KubeletServingName}}); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		st, _ := os.Stat(ks.KeyPath)
		if gid := st.Sys().(*syscall.Stat_t).Gid; gid != 4242 {
			t.Errorf("key group %d after the renewal, want 4242 kept", gid)
		}
	}

	// A kubelet.crt that is a symlink out of its directory is refused,
	// naming the file.
	outside := filepath.Join(f.root, "elsewhere.crt")
	data, _ := os.ReadFile(ks.CertPath)
	if err := os.WriteFile(outside, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(ks.CertPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, ks.CertPath); err != nil {
		t.Fatal(err)
	}
	_, statuses, err := r.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	if s := serving(t, statuses); s.Err == nil || !strings.Contains(s.Err.Error(), "kubelet.crt") {
		t.Errorf("a symlinked kubelet.crt: %v", s.Err)
	}
}

// caSigned writes a kubelet.crt that a real CA signed (the CA not in the
// file): it must be reported, never replaced by a self-signed one.
func caSigned(t *testing.T, ks renew.KubeletServing) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "corp-ca"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageCertSign}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "node-1"}, DNSNames: []string{"node-1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := renewtest.EncodeKey(key)
	if err := os.WriteFile(ks.CertPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ks.KeyPath, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestKubeletServingWhoRenewsIt(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{})
	dir := filepath.Join(f.root, "kubelet", "pki")
	pair := kubeletPair(t, dir)
	for _, tc := range []struct {
		name      string
		ks        renew.KubeletServing
		prepare   func(*testing.T, renew.KubeletServing)
		listed    bool
		renewable bool
		rotatedBy string
		unmanaged string
		missing   bool
	}{
		{name: "self-signed renewed", ks: pair, listed: true, renewable: true},
		{name: "self-signed monitored", ks: func() renew.KubeletServing { k := pair; k.Renew = false; return k }(), listed: true, unmanaged: "kubeletServingCert: monitor"},
		{name: "no kubelet.crt yet", ks: renew.KubeletServing{Source: renew.ServingSelfSigned, Renew: true, CertPath: filepath.Join(f.root, "none", "kubelet.crt"), KeyPath: filepath.Join(f.root, "none", "kubelet.key")}},
		{name: "operator's files", ks: renew.KubeletServing{Source: renew.ServingOperator, CertPath: pair.CertPath, KeyPath: pair.KeyPath}, listed: true, unmanaged: "tlsCertFile"},
		{name: "operator's file missing", ks: renew.KubeletServing{Source: renew.ServingOperator, CertPath: filepath.Join(f.root, "none.crt")}, listed: true, unmanaged: "tlsCertFile", missing: true},
		{name: "serverTLSBootstrap", ks: renew.KubeletServing{Source: renew.ServingBootstrap, CertPath: pair.CertPath, KeyPath: pair.CertPath}, listed: true, rotatedBy: "kubelet"},
		{name: "not configured", ks: renew.KubeletServing{}},
	} {
		r := f.renewer(f.withKubelet(tc.ks))
		_, statuses, err := r.Inventory()
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(statuses, func(s renew.Status) bool { return s.Name == renew.KubeletServingName })
		if (i >= 0) != tc.listed {
			t.Errorf("%s: listed %v, want %v", tc.name, i >= 0, tc.listed)
			continue
		}
		if i < 0 {
			continue
		}
		s := statuses[i]
		if s.Renewable() != tc.renewable || s.RotatedBy != tc.rotatedBy || s.Missing != tc.missing ||
			(tc.unmanaged == "") != (s.Unmanaged == "") || !strings.Contains(s.Unmanaged, tc.unmanaged) {
			t.Errorf("%s: renewable %v rotatedBy %q unmanaged %q missing %v err %v", tc.name, s.Renewable(), s.RotatedBy, s.Unmanaged, s.Missing, s.Err)
		}
		if !tc.renewable {
			if _, err := r.Plan(mustInventory(t, r), renew.Selection{Names: []string{renew.KubeletServingName}}); err == nil && !tc.missing {
				t.Errorf("%s: renewing it by name was not refused", tc.name)
			}
		}
	}

	// A certificate signed by a real CA is not the kubelet's own pair.
	other := kubeletPair(t, filepath.Join(f.root, "other"))
	caSigned(t, other)
	_, statuses, err := f.renewer(f.withKubelet(other)).Inventory()
	if err != nil {
		t.Fatal(err)
	}
	if s := serving(t, statuses); s.Renewable() || !strings.Contains(s.Unmanaged, "corp-ca") {
		t.Errorf("a CA-signed kubelet.crt: renewable %v unmanaged %q err %v", s.Renewable(), s.Unmanaged, s.Err)
	}
}

func mustInventory(t *testing.T, r *renew.Renewer) *renew.Inventory {
	t.Helper()
	inv, _, err := r.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// A single self-signed certificate (what openssl req -x509 makes, or an
// older kubelet's) is renewed as one, self-signed again.
func TestKubeletServingSingleSelfSigned(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{})
	dir := filepath.Join(f.root, "kubelet", "pki")
	ks := kubeletPair(t, dir)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "node-1@1700000000"}, DNSNames: []string{"node-1"},
		IPAddresses: []net.IP{net.ParseIP("10.0.0.7")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * day),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := renewtest.EncodeKey(key)
	_ = os.WriteFile(ks.CertPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	_ = os.WriteFile(ks.KeyPath, keyPEM, 0o600)
	old := readCerts(t, ks.CertPath)[0]
	if _, err := f.renew(t, f.renewer(f.withKubelet(ks)), renew.Selection{Names: []string{renew.KubeletServingName}}); err != nil {
		t.Fatal(err)
	}
	got := readCerts(t, ks.CertPath)
	if len(got) != 1 {
		t.Fatalf("%d certificates, want one", len(got))
	}
	if err := pki.SameIdentity(old, got[0]); err != nil {
		t.Error(err)
	}
	if err := got[0].CheckSignature(got[0].SignatureAlgorithm, got[0].RawTBSCertificate, got[0].Signature); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if _, ok := got[0].PublicKey.(*ecdsa.PublicKey); !ok || got[0].SerialNumber.Cmp(old.SerialNumber) == 0 {
		t.Errorf("key %T serial %v", got[0].PublicKey, got[0].SerialNumber)
	}
}
