package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2016, 12, 6, 0, 0, 0, 0, time.UTC)

// kubeadmLikeCA makes a CA the way kubeadm does (CN kubernetes, DNSNames
// [CN], 10 years, KeyUsage digital signature, key encipherment, cert sign).
func kubeadmLikeCA(t *testing.T, key crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "kubernetes"}, DNSNames: []string{"kubernetes"},
		NotBefore: t0.Add(-Backdate), NotAfter: t0.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func leafUnder(t *testing.T, ca *x509.Certificate, caKey crypto.Signer) *x509.Certificate {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "kube-apiserver"},
		// Outliving the CA certificate, so that only the root's end
		// decides whether it verifies.
		NotBefore: t0, NotAfter: ca.NotAfter.Add(365 * 24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: []string{"kubernetes"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, k.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func verifyAt(leaf, root *x509.Certificate, at time.Time) error {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

func TestRenewCAKeepsTheCAAndItsLeaves(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name     string
		key      crypto.Signer
		validity time.Duration
		want     time.Duration
	}{
		{"rsa, old lifetime", rsaKey, 0, 10*365*24*time.Hour + Backdate},
		{"ecdsa, configured validity", ecKey, 5 * 365 * 24 * time.Hour, 5 * 365 * 24 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := kubeadmLikeCA(t, tc.key)
			leaf := leafUnder(t, old, tc.key)
			now := old.NotAfter.Add(-365 * 24 * time.Hour)
			got, err := RenewCA(CARenewal{Old: old, Key: tc.key, Now: now, Validity: tc.validity})
			if err != nil {
				t.Fatal(err)
			}
			c := got.Cert
			if !bytes.Equal(c.RawSubject, old.RawSubject) || !bytes.Equal(c.SubjectKeyId, old.SubjectKeyId) || !bytes.Equal(c.RawSubjectPublicKeyInfo, old.RawSubjectPublicKeyInfo) {
				t.Fatal("subject, SKI or key changed")
			}
			if c.SerialNumber.Cmp(old.SerialNumber) == 0 {
				t.Error("serial kept: two certificates would carry one serial")
			}
			if d := c.NotAfter.Sub(now); d != tc.want {
				t.Errorf("lifetime from now = %v, want %v", d, tc.want)
			}
			if !slicesEqual(c.DNSNames, old.DNSNames) || c.KeyUsage != old.KeyUsage {
				t.Errorf("names or usages changed: %v %v", c.DNSNames, c.KeyUsage)
			}
			afterOld := old.NotAfter.Add(time.Hour)
			if err := verifyAt(leaf, old, afterOld); err == nil {
				t.Fatal("leaf verified against the expired old CA: the check below proves nothing")
			}
			if err := verifyAt(leaf, c, afterOld); err != nil {
				t.Errorf("leaf of the old CA does not verify against the renewed one: %v", err)
			}
		})
	}
}

func slicesEqual(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

func TestRenewCARefusesAKeyOfAnotherCA(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	old := kubeadmLikeCA(t, k1)
	if _, err := RenewCA(CARenewal{Old: old, Key: k2, Now: t0}); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("err = %v, want a key mismatch", err)
	}
}

func TestVerifyCARenewal(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	old := kubeadmLikeCA(t, k1)
	renewed, err := RenewCA(CARenewal{Old: old, Key: k1, Now: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	other := kubeadmLikeCA(t, k2)
	earlier, err := RenewCA(CARenewal{Old: old, Key: k1, Now: t0.Add(time.Hour), Validity: time.Hour})
	if err == nil {
		t.Fatalf("a renewal ending before the old CA was accepted: %v", earlier.Cert.NotAfter)
	}
	for _, tc := range []struct {
		name    string
		renewed *x509.Certificate
		want    string
	}{
		{"same key, later", renewed.Cert, ""},
		{"another key", other, "another public key"},
		{"the old one itself", old, "not after"},
		{"a leaf (another key)", leafUnder(t, old, k1), "another public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyCARenewal(old, tc.renewed)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// Two nodes renew one CA in the same second: both issues end alike, and
// each node must still pick the same one.
func TestSupersedesOrdersIssuesOfTheSameSecond(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	old := kubeadmLikeCA(t, k)
	now := old.NotAfter.Add(-365 * 24 * time.Hour)
	a, err := RenewCA(CARenewal{Old: old, Key: k, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	b, err := RenewCA(CARenewal{Old: old, Key: k, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Cert.NotAfter.Equal(b.Cert.NotAfter) {
		t.Fatal("the two issues should end in the same second")
	}
	if Supersedes(a.Cert, b.Cert) == Supersedes(b.Cert, a.Cert) {
		t.Error("two issues of the same second are not ordered one way")
	}
	if !Supersedes(old, a.Cert) || Supersedes(a.Cert, old) || Supersedes(a.Cert, a.Cert) {
		t.Error("a renewal must supersede the old issue, never the reverse or itself")
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if Supersedes(old, kubeadmLikeCA(t, other)) {
		t.Error("another key's CA superseded the CA")
	}
}
