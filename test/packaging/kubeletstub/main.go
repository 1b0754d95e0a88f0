// Command kubeletstub stands in for the kubelet in the package test's
// container, which has no container runtime to run a real one. It does the
// two things pkirenewd asks of the kubelet when it renews the kubelet's
// self-signed serving certificate: serve <cert-dir>/kubelet.crt on the
// kubelet's port, read again at every handshake (kubelet v1.37 reloads the
// file by itself), and answer healthz. Its command line carries the
// kubelet's --config and --cert-dir, which pkirenewd reads from /proc.
//
// With -make it instead writes a pair in the kubelet's own shape (client-go
// certutil.GenerateSelfSignedCertKey: a leaf for <host>@<time> and the
// throwaway CA <host>-ca@<time> that signed it, one year), issued -age ago,
// so that the test's node has a kubelet.crt that is due.
package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

func main() {
	_ = flag.String("config", "", "the kubelet's configuration (only shown on the command line)")
	certDir := flag.String("cert-dir", "/var/lib/kubelet/pki", "where kubelet.crt and kubelet.key are")
	addr := flag.String("address", "127.0.0.1:10250", "HTTPS listener")
	healthz := flag.String("healthz", "127.0.0.1:10248", "healthz listener")
	mk := flag.String("make", "", "write a kubelet-shaped self-signed pair for this host name into -cert-dir and exit")
	age := flag.Duration("age", 0, "with -make: how long ago the pair was issued")
	flag.Parse()
	crt, key := filepath.Join(*certDir, "kubelet.crt"), filepath.Join(*certDir, "kubelet.key")
	if *mk != "" {
		if err := makePair(*mk, time.Now().Add(-*age), crt, key); err != nil {
			log.Fatal(err)
		}
		return
	}
	go func() {
		ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") })
		log.Fatal(http.ListenAndServe(*healthz, ok))
	}()
	srv := &http.Server{Addr: *addr, ReadHeaderTimeout: 5 * time.Second, TLSConfig: &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(crt, key)
			return &c, err
		},
	}}
	log.Fatal(srv.ListenAndServeTLS("", ""))
}

func makePair(host string, notBefore time.Time, crt, key string) error {
	ca, caKey, err := issue(notBefore, &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: fmt.Sprintf("%s-ca@%d", host, notBefore.Unix())},
		KeyUsage: x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true,
	}, nil, nil)
	if err != nil {
		return err
	}
	leaf, leafKey, err := issue(notBefore, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: fmt.Sprintf("%s@%d", host, notBefore.Unix())},
		KeyUsage: x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{host},
	}, ca, caKey)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(crt), 0o755); err != nil {
		return err
	}
	certPEM := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})...)
	// certutil.WriteCert's and keyutil.WriteKey's modes.
	if err := os.WriteFile(crt, certPEM, 0o644); err != nil {
		return err
	}
	return os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(leafKey)}), 0o600)
}

// issue makes a key and a certificate from tmpl valid for a year from
// notBefore, signed by parent (nil: by itself).
func issue(notBefore time.Time, tmpl, parent *x509.Certificate, parentKey *rsa.PrivateKey) (*x509.Certificate, *rsa.PrivateKey, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	tmpl.NotBefore, tmpl.NotAfter, tmpl.BasicConstraintsValid = notBefore, notBefore.Add(365*24*time.Hour), true
	if parent == nil {
		parent, parentKey = tmpl, k
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, k, err
}
