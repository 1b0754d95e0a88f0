package renew

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/pkirenewd/pkirenewd/internal/fsread"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/store"
)

// KubeletServingName is the inventory name of the kubelet's serving
// certificate (the TLS certificate on its port 10250).
const KubeletServingName = "kubelet-serving"

// KubeletServingValidity is the lifetime of a renewed self-signed serving
// certificate: what the kubelet itself gives the pair it generates
// (client-go's certutil.GenerateSelfSignedCertKey, maxAge 365 days).
const KubeletServingValidity = 365 * 24 * time.Hour

// KubeletServingSource says who provides the kubelet's serving certificate.
type KubeletServingSource string

// The three ways a kubelet gets its serving certificate (kubelet v1.37
// InitializeTLS and NewMainKubelet).
const (
	// ServingSelfSigned: no tlsCertFile and serverTLSBootstrap off; the
	// kubelet generated <certDir>/kubelet.crt and .key at its first start
	// and never renews them.
	ServingSelfSigned KubeletServingSource = "self-signed"
	// ServingOperator: tlsCertFile/tlsPrivateKeyFile name files that the
	// operator (or their tooling) provides.
	ServingOperator KubeletServingSource = "tlsCertFile"
	// ServingBootstrap: serverTLSBootstrap; the kubelet requests its
	// certificate from the cluster by CSR and rotates it itself
	// (kubelet-server-current.pem).
	ServingBootstrap KubeletServingSource = "serverTLSBootstrap"
)

// KubeletServing locates the kubelet's serving certificate and says
// whether pkirenewd renews it. The zero value: none (not reported).
type KubeletServing struct {
	Source   KubeletServingSource
	CertPath string
	KeyPath  string
	// Renew: pkirenewd renews a self-signed pair (kubeletServingCert:
	// renew); otherwise it is reported only.
	Renew bool
}

// dir is the directory that holds a renewable pair: a managed root of its
// own for the store. Empty when pkirenewd never writes there.
func (k KubeletServing) dir() string {
	if k.Source != ServingSelfSigned || !k.Renew || k.CertPath == "" {
		return ""
	}
	if st, err := os.Stat(filepath.Dir(k.CertPath)); err != nil || !st.IsDir() {
		return ""
	}
	return filepath.Dir(k.CertPath)
}

// kubeletServingRoles says for each source who looks after the certificate:
// the note check prints, and whether it is the kubelet that rotates it.
func kubeletServingRoles(k KubeletServing) (rotatedBy, unmanaged string) {
	switch {
	case k.Source == ServingBootstrap:
		return "kubelet", ""
	case k.Source == ServingOperator:
		return "", "tlsCertFile is set: the operator provides this certificate; pkirenewd only reports it"
	case !k.Renew:
		return "", "kubeletServingCert: monitor; pkirenewd only reports it"
	}
	return "", ""
}

// loadKubeletServing reads the kubelet's serving certificate. A missing
// self-signed kubelet.crt is no item (not every node has one: the kubelet
// makes it at its first start); a missing file the kubelet is configured
// to serve is.
func loadKubeletServing(k KubeletServing) *Item {
	if k.Source == "" || k.CertPath == "" {
		return nil
	}
	it := &Item{Name: KubeletServingName, Kind: KindCert, CertPath: k.CertPath, KeyPath: k.KeyPath}
	it.RotatedBy, it.Unmanaged = kubeletServingRoles(k)
	if k.Source == ServingBootstrap {
		it.Note = "serverTLSBootstrap: the kubelet renews it by CSR; approving those is the cluster's CSR approver's job; pkirenewd only monitors it"
	}
	ok, err := fsread.Exists(k.CertPath)
	switch {
	case err != nil:
		it.Err = err
		return it
	case !ok && k.Source == ServingSelfSigned:
		return nil
	case !ok:
		it.Missing = true
		return it
	}
	if it.Unmanaged != "" || it.RotatedBy != "" {
		// Only read: kubelet-server-current.pem is a symlink the kubelet
		// repoints, an operator's file may live anywhere.
		data, err := fsread.Regular(k.CertPath, true)
		if err == nil {
			it.Cert, err = pki.ParseCertPEM(data)
		}
		if err != nil {
			it.Err = fmt.Errorf("%s: %w", k.CertPath, err)
		}
		return it
	}
	loadSelfSigned(it)
	return it
}

// loadSelfSigned reads a pair pkirenewd may replace, through its directory
// as a managed root (no symlink out of it), and checks that it has the
// shape the kubelet writes: a leaf and the throwaway CA that signed it, or
// a single self-signed certificate. Anything else (a certificate some real
// CA signed, put in place by hand) is reported, never replaced by a
// self-signed one.
func loadSelfSigned(it *Item) {
	roots, err := store.NewRoots(filepath.Dir(it.CertPath))
	if err != nil {
		it.Err = err
		return
	}
	data, err := roots.ReadFile(it.CertPath)
	if err != nil {
		it.Err = err
		return
	}
	certs, err := parseCertsPEM(data)
	if err != nil {
		it.Err = fmt.Errorf("%s: %w", it.CertPath, err)
		return
	}
	it.Cert = certs[0]
	if it.key, it.Err = readKey(roots, it.KeyPath, it.Cert, it.CertPath); it.Err != nil {
		if errors.Is(it.Err, os.ErrNotExist) {
			it.Err = fmt.Errorf("%s: private key missing for %s", it.KeyPath, it.CertPath)
		}
		return
	}
	issuer, why := selfSignedIssuer(certs)
	if why != "" {
		it.Unmanaged = fmt.Sprintf("%s: pkirenewd only reports it", why)
		return
	}
	it.bundleCA = issuer
}

// selfSignedIssuer finds the issuer of a kubelet-generated bundle: the
// second certificate, a CA that signed the leaf and itself (nil for a
// single self-signed leaf). why says what else the file is.
func selfSignedIssuer(certs []*x509.Certificate) (issuer *x509.Certificate, why string) {
	leaf := certs[0]
	if len(certs) == 1 {
		// CheckSignature, not CheckSignatureFrom: a self-signed leaf is
		// no CA, so it cannot sign "another" certificate.
		if leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature) == nil {
			return nil, ""
		}
		return nil, fmt.Sprintf("issued by %q, whose certificate is not in the file: not a self-signed certificate", leaf.Issuer.String())
	}
	ca := certs[1]
	switch {
	case len(certs) > 2:
		return nil, fmt.Sprintf("holds %d certificates: not the kubelet's self-signed pair", len(certs))
	case !ca.IsCA || ca.CheckSignatureFrom(ca) != nil:
		return nil, fmt.Sprintf("its second certificate %q is not a self-signed CA: not the kubelet's self-signed pair", ca.Subject.String())
	case leaf.CheckSignatureFrom(ca) != nil:
		return nil, fmt.Sprintf("not signed by the CA %q in the same file: not the kubelet's self-signed pair", ca.Subject.String())
	}
	return ca, ""
}

// parseCertsPEM returns every certificate of a PEM bundle, at least one.
func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != pki.PEMCertificate {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		_, err := pki.ParseCertPEM(data) // the same words as for one certificate
		return nil, err
	}
	return out, nil
}

// issueSelfSigned renews a kubelet-generated pair the way the kubelet made
// it: a new throwaway CA (same subject as the old one) signs a leaf that
// carries the old leaf's whole identity; the file holds the leaf, then the
// CA, and the CA's key is discarded. A single self-signed leaf is
// renewed as one. Both get a new key of the old one's type and size and
// KubeletServingValidity.
func issueSelfSigned(old *x509.Certificate, oldKey pki.ParsedKey, oldCA *x509.Certificate, now time.Time, rnd io.Reader) (*pki.Issued, *x509.Certificate, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	notBefore, notAfter := now.Add(-pki.Backdate).UTC(), now.Add(KubeletServingValidity).UTC()
	key, err := pki.GenerateKey(rnd, "", old.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	tmpl, err := leafTemplate(old, key.Public(), notBefore, notAfter, rnd)
	if err != nil {
		return nil, nil, err
	}
	parent, signer := tmpl, crypto.Signer(key)
	var caDER []byte
	if oldCA != nil {
		if parent, signer, caDER, err = throwawayCA(oldCA, notBefore, notAfter, rnd); err != nil {
			return nil, nil, err
		}
	} else {
		tmpl.IsCA = old.IsCA
		tmpl.AuthorityKeyId = tmpl.SubjectKeyId
	}
	der, err := x509.CreateCertificate(rnd, tmpl, parent, key.Public(), signer)
	if err != nil {
		return nil, nil, fmt.Errorf("sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := pki.EncodeKeyPEM(key, oldKey.PEMType)
	if err != nil {
		return nil, nil, err
	}
	certPEM := pki.EncodeCertPEM(der)
	issuer := cert
	if caDER != nil {
		certPEM = append(certPEM, pki.EncodeCertPEM(caDER)...)
		if issuer, err = x509.ParseCertificate(caDER); err != nil {
			return nil, nil, err
		}
	}
	return &pki.Issued{Cert: cert, CertPEM: certPEM, KeyPEM: keyPEM}, issuer, nil
}

// leafTemplate carries old's identity (subject byte for byte, SANs, usages)
// onto a new key and validity.
func leafTemplate(old *x509.Certificate, pub crypto.PublicKey, notBefore, notAfter time.Time, rnd io.Reader) (*x509.Certificate, error) {
	serial, err := newSerial(rnd)
	if err != nil {
		return nil, err
	}
	skid, err := pki.SubjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber: serial, RawSubject: old.RawSubject, Subject: old.Subject,
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: old.KeyUsage, ExtKeyUsage: old.ExtKeyUsage, UnknownExtKeyUsage: old.UnknownExtKeyUsage,
		BasicConstraintsValid: true,
		DNSNames:              old.DNSNames, IPAddresses: old.IPAddresses, URIs: old.URIs, EmailAddresses: old.EmailAddresses,
		SubjectKeyId: skid,
	}, nil
}

// throwawayCA makes a CA like the one the kubelet generates beside its
// serving certificate, with the old one's subject and key type: it signs
// the leaf and nothing else, and its key is never kept.
func throwawayCA(old *x509.Certificate, notBefore, notAfter time.Time, rnd io.Reader) (*x509.Certificate, crypto.Signer, []byte, error) {
	key, err := pki.GenerateKey(rnd, "", old.PublicKey)
	if err != nil {
		return nil, nil, nil, err
	}
	serial, err := newSerial(rnd)
	if err != nil {
		return nil, nil, nil, err
	}
	skid, err := pki.SubjectKeyID(key.Public())
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, RawSubject: old.RawSubject, Subject: old.Subject,
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage:              old.KeyUsage | x509.KeyUsageCertSign,
		BasicConstraintsValid: true, IsCA: true,
		SubjectKeyId: skid,
	}
	der, err := x509.CreateCertificate(rnd, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("sign the CA: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	return ca, key, der, nil
}

// newSerial is a random positive 127-bit serial, never zero.
func newSerial(rnd io.Reader) (*big.Int, error) {
	s, err := rand.Int(rnd, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	return s.Add(s, big.NewInt(1)), nil
}

// planSelfSigned issues and verifies the renewal of a self-signed pair.
func (r *Renewer) planSelfSigned(s Status, now time.Time) (*Planned, error) {
	issued, issuer, err := issueSelfSigned(s.Cert, s.key, s.bundleCA, now, r.opts.Rand)
	if err != nil {
		return nil, err
	}
	newKey, err := pki.ParseKeyPEM(issued.KeyPEM)
	if err != nil {
		return nil, err
	}
	if err := pki.Verify(s.Cert, issued.Cert, newKey.Signer, issuer, now); err != nil {
		return nil, err
	}
	p := &Planned{Status: s, Issued: issued}
	p.Changes = []store.Change{{Path: s.KeyPath, Data: issued.KeyPEM}, {Path: s.CertPath, Data: issued.CertPEM}}
	return p, nil
}
