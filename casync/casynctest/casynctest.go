// Package casynctest makes what the tests of a worker's CA sync need: CA
// certificates re-issued with the same key (or forged with another), the
// cluster-info kubeconfig kubeadm publishes, and a fake apiserver on
// 127.0.0.1 that serves it and records the Node annotations it is sent.
package casynctest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// PEM encodes a certificate as kubeadm writes ca.crt.
func PEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// NewCA makes a kubeadm-like CA ("kubernetes") valid from an hour ago
// until notAfter.
func NewCA(t testing.TB, notAfter time.Time) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"},
		NotBefore: notAfter.Add(-10 * 365 * 24 * time.Hour), NotAfter: notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true, IsCA: true,
		SubjectKeyId: []byte{1, 2, 3, 4},
	}
	return Sign(t, tmpl, tmpl, key.Public(), key), key
}

// Reissue re-issues ca with its own key: the same subject (byte for
// byte), SubjectKeyId, usages and constraints, a new serial and notAfter.
// It is what a control plane's same-key CA renewal publishes.
func Reissue(t testing.TB, ca *x509.Certificate, key crypto.Signer, notAfter time.Time) *x509.Certificate {
	t.Helper()
	tmpl := Template(ca, notAfter)
	return Sign(t, tmpl, tmpl, key.Public(), key)
}

// Forge is ca's twin under another key: what an attacker who can write
// cluster-info, but holds no CA key, could publish.
func Forge(t testing.TB, ca *x509.Certificate, notAfter time.Time) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := Template(ca, notAfter)
	return Sign(t, tmpl, tmpl, key.Public(), key)
}

// Template is ca's identity with a new random serial and notAfter
// (NotBefore is kept from ca).
func Template(ca *x509.Certificate, notAfter time.Time) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return &x509.Certificate{
		SerialNumber: serial, RawSubject: ca.RawSubject,
		NotBefore: ca.NotBefore, NotAfter: notAfter,
		KeyUsage: ca.KeyUsage, ExtKeyUsage: ca.ExtKeyUsage,
		BasicConstraintsValid: ca.BasicConstraintsValid, IsCA: ca.IsCA,
		MaxPathLen: ca.MaxPathLen, MaxPathLenZero: ca.MaxPathLenZero,
		SubjectKeyId: ca.SubjectKeyId,
	}
}

// Sign issues tmpl for pub, signed by key as parent.
func Sign(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ClusterInfo is the kubeconfig kubeadm puts in cluster-info: one cluster
// named "", no context, no user.
func ClusterInfo(server string, ca *x509.Certificate) []byte {
	return []byte(fmt.Sprintf(`apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: %s
    server: %s
  name: ""
contexts: null
current-context: ""
kind: Config
preferences: {}
users: null
`, base64.StdEncoding.EncodeToString(PEM(ca)), server))
}

// ClientCert is a leaf for name signed by the CA (ca, key), as PEM
// certificate and key: a node's kubelet client certificate
// (system:node:NAME, O=system:nodes).
func ClientCert(t testing.TB, ca *x509.Certificate, key crypto.Signer, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn, Organization: []string{"system:nodes"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	c := Sign(t, tmpl, ca, k.Public(), key)
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return PEM(c), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// APIServer is a fake apiserver on 127.0.0.1 serving cluster-info and
// taking Node patches, its serving certificate signed by a CA key.
type APIServer struct {
	*httptest.Server
	mu sync.Mutex
	// ClusterInfo is served as cluster-info's kubeconfig.
	clusterInfo []byte
	// Patches are the Node merge patches received, by node name, with
	// the client certificate's common name.
	Patches []Patch
}

// Patch is one Node merge patch received.
type Patch struct {
	Node, User  string
	Annotations map[string]string
}

// StartAPIServer serves on 127.0.0.1 with a certificate for 127.0.0.1
// signed by (ca, key), valid until servingNotAfter.
func StartAPIServer(t testing.TB, ca *x509.Certificate, key crypto.Signer, servingNotAfter time.Time) *APIServer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: ca.NotBefore, NotAfter: servingNotAfter, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leaf := Sign(t, tmpl, ca, k.Public(), key)
	a := &APIServer{}
	a.Server = httptest.NewUnstartedServer(a)
	// The client certificate is taken at its word: the fake tells who
	// patched, it does not authenticate.
	a.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: k}}, ClientAuth: tls.RequestClientCert}
	a.StartTLS()
	t.Cleanup(a.Close)
	return a
}

// Publish sets what cluster-info holds (nil: no cluster-info, 404).
func (a *APIServer) Publish(kubeconfig []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.clusterInfo = kubeconfig
}

// Received returns the patches received so far.
func (a *APIServer) Received() []Patch {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Patch(nil), a.Patches...)
}

func (a *APIServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1/namespaces/kube-public/configmaps/cluster-info":
		if a.clusterInfo == nil {
			http.Error(w, `{"kind":"Status","reason":"NotFound"}`, http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"kind": "ConfigMap", "data": map[string]string{"kubeconfig": string(a.clusterInfo)}})
	case r.Method == http.MethodPatch && strings.HasPrefix(r.URL.Path, "/api/v1/nodes/"):
		p := Patch{Node: strings.TrimPrefix(r.URL.Path, "/api/v1/nodes/")}
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			p.User = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		if p.User != "system:node:"+p.Node || r.Header.Get("Content-Type") != "application/merge-patch+json" {
			http.Error(w, `{"kind":"Status","reason":"Forbidden"}`, http.StatusForbidden)
			return
		}
		var body struct {
			Metadata struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		data, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(data, &body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p.Annotations = body.Metadata.Annotations
		a.Patches = append(a.Patches, p)
		_, _ = w.Write([]byte(`{"kind":"Node"}`))
	default:
		http.Error(w, "not served by the fake", http.StatusNotFound)
	}
}

// Worker lays out a worker's holders of the CA in dir, as kubeadm join
// leaves them: pki/ca.crt and kubelet.conf (the CA embedded, server, and
// the credentials of system:node:NODE embedded), and returns their paths.
func Worker(t testing.TB, dir, server string, ca *x509.Certificate, key crypto.Signer, node string) (caPath, kubeconfigPath string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "pki"), 0o755); err != nil {
		t.Fatal(err)
	}
	caPath, kubeconfigPath = filepath.Join(dir, "pki", "ca.crt"), filepath.Join(dir, "kubelet.conf")
	cert, k := ClientCert(t, ca, key, "system:node:"+node)
	b64 := base64.StdEncoding.EncodeToString
	kc := fmt.Sprintf(`apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: %[1]s
    server: %[2]s
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: system:node:%[3]s
  name: system:node:%[3]s@kubernetes
current-context: system:node:%[3]s@kubernetes
kind: Config
preferences: {}
users:
- name: system:node:%[3]s
  user:
    client-certificate-data: %[4]s
    client-key-data: %[5]s
`, b64(PEM(ca)), server, node, b64(cert), b64(k))
	if err := os.WriteFile(caPath, PEM(ca), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kubeconfigPath, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return caPath, kubeconfigPath
}
