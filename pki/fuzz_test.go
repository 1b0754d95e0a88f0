package pki

import (
	"crypto"
	"os"
	"path/filepath"
	"testing"
)

// Seeds: a real certificate, key and kubeconfig made by the generator in
// renewtest would be an import cycle, so the seeds are built here from
// the package's own encoders.
func seedPEMs(f *testing.F) {
	f.Helper()
	key, err := GenerateKey(nil, "ECDSA-P256", nil)
	if err == nil {
		if k, err := EncodeKeyPEM(key, PEMECKey); err == nil {
			f.Add(k)
			f.Add(k[:len(k)/2])
		}
	}
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\n\n-----END RSA PRIVATE KEY-----\n"))
	f.Add([]byte{})
	f.Add([]byte("not pem"))
	if data, err := os.ReadFile(filepath.Join("testdata", "fuzz-seed.crt")); err == nil {
		f.Add(data)
	}
}

func FuzzParseCertPEM(f *testing.F) {
	seedPEMs(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCertPEM(data)
		if err == nil && c == nil {
			t.Fatal("nil certificate without an error")
		}
	})
}

func FuzzParseKeyPEM(f *testing.F) {
	seedPEMs(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParseKeyPEM(data)
		if err != nil {
			return
		}
		if k.Signer == nil {
			t.Fatal("nil key without an error")
		}
		// Whatever parses must encode back and parse to the same key.
		out, err := EncodeKeyPEM(k.Signer, k.PEMType)
		if err != nil {
			return
		}
		k2, err := ParseKeyPEM(out)
		if err != nil {
			t.Fatalf("re-encoded key does not parse: %v", err)
		}
		if !keyMatchesPub(k.Signer.Public(), k2.Signer) {
			t.Fatal("re-encoded key differs")
		}
	})
}

func keyMatchesPub(pub crypto.PublicKey, k crypto.Signer) bool {
	e, ok := k.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(pub)
}
