package renew_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
	"github.com/pkirenewd/pkirenewd/store"
)

// foreignPair is what another writer (kubeadm certs renew) would put in
// place: a fresh key and a certificate for it.
func foreignPair(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: bigOne(), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

func pairMatches(t *testing.T, certPath, keyPath string) bool {
	t.Helper()
	c, _ := os.ReadFile(certPath)
	k, _ := os.ReadFile(keyPath)
	cb, _ := pem.Decode(c)
	kb, _ := pem.Decode(k)
	if cb == nil || kb == nil {
		return false
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return false
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return false
	}
	return key.PublicKey.Equal(cert.PublicKey)
}

// Another writer replaces a target after pkirenewd read it and before the
// commit record: pkirenewd gives way, writes nothing, and the other
// writer's files stand.
func TestGivesWayToAConcurrentWriter(t *testing.T) {
	f := newFixture(t, renewtest.Options{})
	crt, key := filepath.Join(f.layout.PKIDir, "apiserver.crt"), filepath.Join(f.layout.PKIDir, "apiserver.key")
	theirCert, theirKey := foreignPair(t)
	r := f.renewer(func(o *renew.Options) {
		o.Step = func(s string) {
			if s == "staged-synced" {
				_ = os.WriteFile(key, theirKey, 0o600)
				_ = os.WriteFile(crt, theirCert, 0o644)
			}
		}
	})
	_, err := f.renew(t, r, renew.Selection{Force: true})
	if !errors.Is(err, store.ErrChangedUnderneath) || !strings.Contains(err.Error(), "apiserver") {
		t.Fatalf("%v", err)
	}
	if c, _ := os.ReadFile(crt); !bytes.Equal(c, theirCert) || !pairMatches(t, crt, key) {
		t.Fatal("the other writer's pair did not stand")
	}
	if _, err := os.Stat(filepath.Join(f.stateDir, "journal.json")); err == nil {
		t.Error("a transaction was left behind")
	}
	staged, _ := filepath.Glob(filepath.Join(f.layout.PKIDir, ".pkirenewd-*"))
	if len(staged) > 0 {
		t.Errorf("staged files left: %v", staged)
	}
}

// The other writer strikes between pkirenewd's renames (kubeadm writes
// the key, then the certificate, in place): the result would be its
// certificate with pkirenewd's key. pkirenewd sees the mismatch after the
// commit and writes its own pair again, whole.
func TestRepairsAnInterleavedPair(t *testing.T) {
	f := newFixture(t, renewtest.Options{})
	crt, key := filepath.Join(f.layout.PKIDir, "apiserver.crt"), filepath.Join(f.layout.PKIDir, "apiserver.key")
	theirCert, _ := foreignPair(t)
	r := f.renewer(func(o *renew.Options) {
		o.Sleep = func(time.Duration) {}
		o.Step = func(s string) {
			if s == "renamed-synced" {
				_ = os.WriteFile(crt, theirCert, 0o644)
			}
		}
	})
	plan, err := f.renew(t, r, renew.Selection{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if !pairMatches(t, crt, key) {
		t.Fatal("apiserver.crt and apiserver.key do not match after the renewal")
	}
	for _, it := range plan.Items {
		if it.Name == "apiserver" {
			if c, _ := os.ReadFile(crt); !bytes.Equal(c, it.Issued.CertPEM) {
				t.Error("the repaired pair is not pkirenewd's")
			}
		}
	}
	repaired := false
	for _, e := range f.log.AllEntries() {
		if e.Data["ACTION"] == "repair" && e.Data["CERT"] == "apiserver" {
			repaired = true
		}
	}
	if !repaired {
		t.Error("no repair logged")
	}
	requireConsistent(t, f.inventory(t))
}

func bigOne() *big.Int { return big.NewInt(1) }
