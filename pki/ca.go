package pki

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"time"
)

// CARenewal is what re-issuing a CA certificate with its own key needs.
type CARenewal struct {
	Old *x509.Certificate
	Key crypto.Signer
	Now time.Time
	// Validity of the new certificate; zero keeps the old one's lifetime.
	Validity time.Duration
	Rand     io.Reader
}

// RenewCA re-issues a CA certificate with the same key, the same subject
// (byte for byte), the same SubjectKeyId and a later NotAfter. Every
// certificate signed under the old one verifies against the new one, so no
// leaf is re-issued and no dual trust is needed; kubeadm's discovery hash
// (of the public key) stays valid. Only the holders of the old certificate
// must get the new one before the old NotAfter, when Go and OpenSSL stop
// accepting it as a root.
func RenewCA(req CARenewal) (*Issued, error) {
	old := req.Old
	if !KeyMatches(old, req.Key) {
		return nil, errors.New("the CA key does not match the CA certificate: nothing renewed")
	}
	rnd := req.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	validity := req.Validity
	if validity <= 0 {
		validity = old.NotAfter.Sub(old.NotBefore)
	}
	serial, err := newSerial(rnd)
	if err != nil {
		return nil, err
	}
	tmpl := caTemplate(old)
	tmpl.SerialNumber = serial
	tmpl.NotBefore = req.Now.Add(-Backdate).UTC()
	tmpl.NotAfter = req.Now.Add(validity).UTC()
	der, err := x509.CreateCertificate(rnd, tmpl, tmpl, req.Key.Public(), req.Key)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if err := VerifyCARenewal(old, cert); err != nil {
		return nil, err
	}
	return &Issued{Cert: cert, CertPEM: EncodeCertPEM(der)}, nil
}

// caTemplate copies what makes the CA the same CA to anyone who checks a
// chain: the subject as encoded, the key identifiers, the constraints and
// usages, and the names a kubeadm CA carries.
func caTemplate(old *x509.Certificate) *x509.Certificate {
	return &x509.Certificate{
		RawSubject:            old.RawSubject,
		Subject:               old.Subject,
		SubjectKeyId:          old.SubjectKeyId,
		AuthorityKeyId:        old.AuthorityKeyId,
		KeyUsage:              old.KeyUsage,
		ExtKeyUsage:           old.ExtKeyUsage,
		UnknownExtKeyUsage:    old.UnknownExtKeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            old.MaxPathLen,
		MaxPathLenZero:        old.MaxPathLenZero,
		DNSNames:              old.DNSNames,
		IPAddresses:           old.IPAddresses,
		URIs:                  old.URIs,
		EmailAddresses:        old.EmailAddresses,
		PermittedDNSDomains:   old.PermittedDNSDomains,
		ExcludedDNSDomains:    old.ExcludedDNSDomains,
		SignatureAlgorithm:    old.SignatureAlgorithm,
	}
}

// VerifyCARenewal checks that renewed can stand in for old wherever old is
// trusted: a self-signed CA with the same public key, subject and
// SubjectKeyId that ends later. Anything else would re-parent every leaf.
func VerifyCARenewal(old, renewed *x509.Certificate) error {
	switch {
	case !bytes.Equal(old.RawSubjectPublicKeyInfo, renewed.RawSubjectPublicKeyInfo):
		// The check that pins trust: another key could be anyone's,
		// whatever its subject says.
		return errors.New("renewed CA certificate has another public key")
	case !bytes.Equal(old.RawSubject, renewed.RawSubject):
		return fmt.Errorf("renewed CA certificate has another subject (%s, was %s)", renewed.Subject, old.Subject)
	case len(old.SubjectKeyId) > 0 && len(renewed.SubjectKeyId) > 0 && !bytes.Equal(old.SubjectKeyId, renewed.SubjectKeyId):
		return fmt.Errorf("renewed CA certificate has another SubjectKeyId (%X, was %X)", renewed.SubjectKeyId, old.SubjectKeyId)
	case !renewed.IsCA || !renewed.BasicConstraintsValid:
		return errors.New("renewed CA certificate is not a CA (basic constraints)")
	case !renewed.NotAfter.After(old.NotAfter):
		return fmt.Errorf("renewed CA certificate ends %s, not after the old one (%s)", renewed.NotAfter.UTC().Format(time.RFC3339), old.NotAfter.UTC().Format(time.RFC3339))
	}
	if err := renewed.CheckSignatureFrom(renewed); err != nil {
		return fmt.Errorf("renewed CA certificate is not self-signed: %w", err)
	}
	return nil
}

// Supersedes reports whether cand is a later issue of the CA whose issue
// cur is: a renewal of it (VerifyCARenewal) that ends later, or, for two
// issues that end in the same second (two nodes renewing at once),
// the one whose bytes sort higher. Every node orders any two issues the
// same way, so nodes that adopt the latest issue they see end with one.
func Supersedes(cur, cand *x509.Certificate) bool {
	if cand.Equal(cur) {
		return false
	}
	if !cand.NotAfter.Equal(cur.NotAfter) {
		return VerifyCARenewal(cur, cand) == nil
	}
	if bytes.Compare(cand.Raw, cur.Raw) <= 0 {
		return false
	}
	earlier := *cur
	earlier.NotAfter = cur.NotAfter.Add(-time.Second)
	return VerifyCARenewal(&earlier, cand) == nil
}
