// Package renewtest makes kubeadm-shaped PKIs for tests, benchmarks and the
// demo: the same files, subjects, SANs, usages, modes and kubeconfig layout
// as `kubeadm init phase certs all` and `kubeconfig all`, but with any
// algorithm and any validity, including already expired.
//
// Tests that must prove compatibility use a PKI made by the real kubeadm
// (see test/kubeadm); this generator is for fast unit tests and the demo.
package renewtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Options shape the generated PKI.
type Options struct {
	// Algorithm: RSA-2048 (default), RSA-3072, RSA-4096, ECDSA-P256, ECDSA-P384.
	Algorithm string
	// NodeName is the control-plane node's name (default node1).
	NodeName string
	// AdvertiseAddress (default 192.0.2.10).
	AdvertiseAddress string
	// NotBefore of the leaves (default now); Validity of the leaves
	// (default 365 days). CAs are valid ten years from NotBefore unless
	// CAValidity is set.
	NotBefore  time.Time
	Validity   time.Duration
	CAValidity time.Duration
	// CANotBefore of the CAs (default NotBefore): leaves issued later
	// than their CAs, or under a clock that was ahead.
	CANotBefore time.Time
	// ExternalEtcd leaves out the etcd CA and leaves.
	ExternalEtcd bool
	// NoSuperAdmin leaves out super-admin.conf (clusters made before 1.29).
	NoSuperAdmin bool
	// KubeletRotated makes kubelet.conf point at
	// <KubeletPKIDir>/kubelet-client-current.pem instead of embedding.
	KubeletPKIDir string
}

// Layout returns the paths that MakePKI writes.
type Layout struct {
	PKIDir, KubeconfigDir string
}

// Signer is a CA ready to sign.
type Signer struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// MakePKI writes a kubeadm-shaped PKI into root/pki and root (kubeconfigs).
func MakePKI(root string, o Options) (Layout, error) {
	if o.Algorithm == "" {
		o.Algorithm = "RSA-2048"
	}
	if o.NodeName == "" {
		o.NodeName = "node1"
	}
	if o.AdvertiseAddress == "" {
		o.AdvertiseAddress = "192.0.2.10"
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now()
	}
	if o.CANotBefore.IsZero() {
		o.CANotBefore = o.NotBefore
	}
	if o.Validity == 0 {
		o.Validity = 365 * 24 * time.Hour
	}
	if o.CAValidity == 0 {
		o.CAValidity = 10 * 365 * 24 * time.Hour
	}
	l := Layout{PKIDir: filepath.Join(root, "pki"), KubeconfigDir: root}
	for _, d := range []string{l.PKIDir, filepath.Join(l.PKIDir, "etcd")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return l, err
		}
	}
	g := &gen{o: o}
	ca, err := g.ca(filepath.Join(l.PKIDir, "ca"), "kubernetes")
	if err != nil {
		return l, err
	}
	fp, err := g.ca(filepath.Join(l.PKIDir, "front-proxy-ca"), "front-proxy-ca")
	if err != nil {
		return l, err
	}
	adv := net.ParseIP(o.AdvertiseAddress)
	leaves := []leafDef{
		{"apiserver", ca, x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			DNSNames:    []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost", o.NodeName},
			IPAddresses: []net.IP{net.ParseIP("10.96.0.1"), adv, net.ParseIP("127.0.0.1")}}},
		{"apiserver-kubelet-client", ca, x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"kubeadm:cluster-admins"}}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}},
		{"front-proxy-client", fp, x509.Certificate{Subject: pkix.Name{CommonName: "front-proxy-client"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}},
	}
	if !o.ExternalEtcd {
		etcd, err := g.ca(filepath.Join(l.PKIDir, "etcd", "ca"), "etcd-ca")
		if err != nil {
			return l, err
		}
		both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		etcdSANs := x509.Certificate{DNSNames: []string{"localhost", o.NodeName}, IPAddresses: []net.IP{adv, net.ParseIP("127.0.0.1"), net.ParseIP("::1")}}
		server, peer := etcdSANs, etcdSANs
		server.Subject, server.ExtKeyUsage = pkix.Name{CommonName: o.NodeName}, both
		peer.Subject, peer.ExtKeyUsage = pkix.Name{CommonName: o.NodeName}, both
		leaves = append(leaves,
			leafDef{"apiserver-etcd-client", etcd, x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver-etcd-client"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}},
			leafDef{"etcd/server", etcd, server},
			leafDef{"etcd/peer", etcd, peer},
			leafDef{"etcd/healthcheck-client", etcd, x509.Certificate{Subject: pkix.Name{CommonName: "kube-etcd-healthcheck-client"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}},
		)
	}
	for _, lf := range leaves {
		certPEM, keyPEM, err := g.leaf(lf.ca, lf.tmpl)
		if err != nil {
			return l, err
		}
		if err := writeFile(filepath.Join(l.PKIDir, lf.base+".key"), keyPEM, 0o600); err != nil {
			return l, err
		}
		if err := writeFile(filepath.Join(l.PKIDir, lf.base+".crt"), certPEM, 0o644); err != nil {
			return l, err
		}
	}
	// sa.key / sa.pub: a key pair with no certificate, never touched.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return l, err
	}
	saPub, _ := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err := writeFile(filepath.Join(l.PKIDir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}), 0o600); err != nil {
		return l, err
	}
	if err := writeFile(filepath.Join(l.PKIDir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}), 0o600); err != nil {
		return l, err
	}

	server := "https://" + net.JoinHostPort(o.AdvertiseAddress, "6443")
	confs := []struct {
		file, user, cn string
		orgs           []string
	}{
		{"admin.conf", "kubernetes-admin", "kubernetes-admin", []string{"kubeadm:cluster-admins"}},
		{"super-admin.conf", "kubernetes-super-admin", "kubernetes-super-admin", []string{"system:masters"}},
		{"controller-manager.conf", "system:kube-controller-manager", "system:kube-controller-manager", nil},
		{"scheduler.conf", "system:kube-scheduler", "system:kube-scheduler", nil},
		{"kubelet.conf", "system:node:" + o.NodeName, "system:node:" + o.NodeName, []string{"system:nodes"}},
	}
	for _, c := range confs {
		if c.file == "super-admin.conf" && o.NoSuperAdmin {
			continue
		}
		var userBlock string
		if c.file == "kubelet.conf" && o.KubeletPKIDir != "" {
			certPEM, keyPEM, err := g.leaf(ca, x509.Certificate{Subject: pkix.Name{CommonName: c.cn, Organization: c.orgs}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			if err != nil {
				return l, err
			}
			if err := os.MkdirAll(o.KubeletPKIDir, 0o755); err != nil {
				return l, err
			}
			cur := filepath.Join(o.KubeletPKIDir, "kubelet-client-current.pem")
			if err := writeFile(cur, append(certPEM, keyPEM...), 0o600); err != nil {
				return l, err
			}
			userBlock = fmt.Sprintf("    client-certificate: %s\n    client-key: %s\n", cur, cur)
		} else {
			certPEM, keyPEM, err := g.leaf(ca, x509.Certificate{Subject: pkix.Name{CommonName: c.cn, Organization: c.orgs}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			if err != nil {
				return l, err
			}
			userBlock = fmt.Sprintf("    client-certificate-data: %s\n    client-key-data: %s\n",
				base64.StdEncoding.EncodeToString(certPEM), base64.StdEncoding.EncodeToString(keyPEM))
		}
		// The layout of clientcmd.Write, which kubeadm uses.
		text := fmt.Sprintf(`apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: %s
    server: %s
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: %s
  name: %s@kubernetes
current-context: %s@kubernetes
kind: Config
preferences: {}
users:
- name: %s
  user:
%s`, base64.StdEncoding.EncodeToString(encodeCert(ca.Cert.Raw)), server, c.user, c.user, c.user, c.user, userBlock)
		if err := writeFile(filepath.Join(l.KubeconfigDir, c.file), []byte(text), 0o600); err != nil {
			return l, err
		}
	}
	return l, nil
}

type gen struct{ o Options }

type leafDef struct {
	base string
	ca   *Signer
	tmpl x509.Certificate
}

// NewKey makes a key of a kubeadm encryptionAlgorithm.
func NewKey(alg string) (crypto.Signer, error) {
	switch alg {
	case "RSA-2048", "":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "RSA-3072":
		return rsa.GenerateKey(rand.Reader, 3072)
	case "RSA-4096":
		return rsa.GenerateKey(rand.Reader, 4096)
	case "ECDSA-P256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ECDSA-P384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	}
	return nil, fmt.Errorf("unknown algorithm %q", alg)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	return n.Add(n, big.NewInt(1))
}

func (g *gen) ca(base, cn string) (*Signer, error) {
	key, err := NewKey(g.o.Algorithm)
	if err != nil {
		return nil, err
	}
	nb := g.o.CANotBefore.Add(-5 * time.Minute).UTC()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
		NotBefore: nb, NotAfter: nb.Add(g.o.CAValidity),
		KeyUsage:              x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return nil, err
	}
	if err := writeFile(base+".key", keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeFile(base+".crt", encodeCert(der), 0o644); err != nil {
		return nil, err
	}
	return &Signer{Cert: cert, Key: key}, nil
}

// Leaf signs a kubeadm-style leaf certificate with ca for tmpl's identity
// and returns the certificate and a new key as PEM.
func (g *gen) leaf(ca *Signer, tmpl x509.Certificate) (certPEM, keyPEM []byte, err error) {
	key, err := NewKey(g.o.Algorithm)
	if err != nil {
		return nil, nil, err
	}
	nb := g.o.NotBefore.Add(-5 * time.Minute).UTC()
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = nb
	tmpl.NotAfter = g.o.NotBefore.Add(g.o.Validity).UTC()
	tmpl.KeyUsage = x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = EncodeKey(key)
	return encodeCert(der), keyPEM, err
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// EncodeKey writes a key the way kubeadm does (PKCS#1 / SEC1).
func EncodeKey(k crypto.Signer) ([]byte, error) {
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), nil
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), err
	}
	return nil, fmt.Errorf("unsupported key %T", k)
}

func writeFile(p string, data []byte, mode os.FileMode) error {
	if err := os.WriteFile(p, data, mode); err != nil {
		return err
	}
	return os.Chmod(p, mode)
}

// ReadKey reads a PEM private key as kubeadm writes it (PKCS#1, SEC1 or
// PKCS#8).
func ReadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: not a signing key", path)
	}
	return s, nil
}

// ReadCerts reads every certificate of a PEM file, in order (a leaf, then
// what else the file holds, as the kubelet's kubelet.crt does).
func ReadCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for b, rest := pem.Decode(data); b != nil; b, rest = pem.Decode(rest) {
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no certificate", path)
	}
	return out, nil
}
