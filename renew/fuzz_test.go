package renew

import (
	"bytes"
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
	key, err := generateKey(nil, "ECDSA-P256", nil)
	if err == nil {
		if k, err := encodeKeyPEM(key, pemECKey); err == nil {
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
		c, err := parseCertPEM(data)
		if err == nil && c == nil {
			t.Fatal("nil certificate without an error")
		}
	})
}

func FuzzParseKeyPEM(f *testing.F) {
	seedPEMs(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := parseKeyPEM(data)
		if err != nil {
			return
		}
		if k.Signer == nil {
			t.Fatal("nil key without an error")
		}
		// Whatever parses must encode back and parse to the same key.
		out, err := encodeKeyPEM(k.Signer, k.PEMType)
		if err != nil {
			return
		}
		k2, err := parseKeyPEM(out)
		if err != nil {
			t.Fatalf("re-encoded key does not parse: %v", err)
		}
		if !keyMatchesPub(k.Signer.Public(), k2.Signer) {
			t.Fatal("re-encoded key differs")
		}
	})
}

const seedKubeconfig = `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: QUJD
    server: https://192.0.2.10:6443
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: kubernetes-admin
  name: kubernetes-admin@kubernetes
current-context: kubernetes-admin@kubernetes
kind: Config
users:
- name: kubernetes-admin
  user:
    client-certificate-data: QUJD
    client-key-data: "REVG"
`

func FuzzKubeconfig(f *testing.F) {
	f.Add([]byte(seedKubeconfig))
	f.Add([]byte("kind: Config\ncurrent-context: x\n"))
	f.Add([]byte("{{"))
	f.Add([]byte("users: [{name: a, user: {client-certificate: /x}}]\ncontexts: [{name: c, context: {user: a}}]\ncurrent-context: c\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		kc, err := parseKubeconfig(data)
		if err != nil || kc.certNode == nil {
			return
		}
		// Replacing the credentials changes exactly them, or fails.
		out, err := kc.withCredentials([]byte("NEW CERT"), []byte("NEW KEY"))
		if err != nil {
			return
		}
		again, err := parseKubeconfig(out)
		if err != nil {
			t.Fatalf("rewritten kubeconfig does not parse: %v", err)
		}
		if !bytes.Equal(again.CertData, []byte("NEW CERT")) || !bytes.Equal(again.KeyData, []byte("NEW KEY")) {
			t.Fatal("rewritten kubeconfig lost the new credentials")
		}
	})
}

func FuzzParseKubeadmConfig(f *testing.F) {
	f.Add([]byte("kind: ClusterConfiguration\nencryptionAlgorithm: ECDSA-P256\ncertificateValidityPeriod: 8760h\n"))
	f.Add([]byte("kind: ConfigMap\ndata:\n  ClusterConfiguration: |\n    kind: ClusterConfiguration\n"))
	f.Add([]byte("---\n---\nkind: InitConfiguration\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseKubeadmConfig(data)
		if err == nil && s.CertificateValidityPeriod < 0 {
			t.Fatal("negative validity accepted")
		}
	})
}

func keyMatchesPub(pub crypto.PublicKey, k crypto.Signer) bool {
	e, ok := k.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(pub)
}
