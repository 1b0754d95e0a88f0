package pki

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // RFC 5280 method 1 key identifier, not a security use
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"slices"
	"time"
)

// Backdate matches kubeadm: NotBefore lies 5 minutes in the past so that a
// node whose clock is slightly behind still accepts the new certificate.
const Backdate = 5 * time.Minute

// IssueRequest is what a renewal of one certificate needs.
type IssueRequest struct {
	Old      *x509.Certificate
	OldKey   ParsedKey
	CA       *x509.Certificate
	CAKey    crypto.Signer
	Now      time.Time
	Validity time.Duration
	// Algorithm is kubeadm's encryptionAlgorithm; empty keeps the old
	// key's type and size.
	Algorithm string
	Rand      io.Reader
}

// Issued is a renewed certificate and its new key, PEM-encoded.
type Issued struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte
	// Capped is set when the CA's own expiry shortened the validity.
	Capped bool
}

// Issue makes a replacement for req.Old: a new key, and a certificate that
// carries the whole identity of the old one (the subject byte for byte,
// every SAN kind, key usages and extended key usages) signed by the CA.
func Issue(req IssueRequest) (*Issued, error) {
	rnd := req.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	if !req.Now.Before(req.CA.NotAfter) {
		return nil, fmt.Errorf("CA %q expired on %s: renew the CA first (pkirenewd renew ca, etcd-ca or front-proxy-ca)", req.CA.Subject.CommonName, req.CA.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := GenerateKey(rnd, req.Algorithm, req.Old.PublicKey)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial(rnd)
	if err != nil {
		return nil, err
	}
	skid, err := SubjectKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	notAfter := req.Now.Add(req.Validity).UTC()
	capped := false
	if notAfter.After(req.CA.NotAfter) {
		notAfter, capped = req.CA.NotAfter.UTC(), true
	}
	old := req.Old
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		RawSubject:            old.RawSubject,
		Subject:               old.Subject,
		NotBefore:             req.Now.Add(-Backdate).UTC(),
		NotAfter:              notAfter,
		KeyUsage:              old.KeyUsage,
		ExtKeyUsage:           old.ExtKeyUsage,
		UnknownExtKeyUsage:    old.UnknownExtKeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  false,
		DNSNames:              old.DNSNames,
		IPAddresses:           old.IPAddresses,
		URIs:                  old.URIs,
		EmailAddresses:        old.EmailAddresses,
		SubjectKeyId:          skid,
		AuthorityKeyId:        req.CA.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rnd, tmpl, req.CA, key.Public(), req.CAKey)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pemType := req.OldKey.PEMType
	keyPEM, err := EncodeKeyPEM(key, pemType)
	if err != nil {
		return nil, err
	}
	return &Issued{Cert: cert, CertPEM: EncodeCertPEM(der), KeyPEM: keyPEM, Capped: capped}, nil
}

// SubjectKeyID is the SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2
// method 1), what Go and OpenSSL use for CAs.
func SubjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var spki struct {
		Algorithm        asn1.RawValue
		SubjectPublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, err
	}
	h := sha1.Sum(spki.SubjectPublicKey.Bytes) //nolint:gosec // see import
	return h[:], nil
}

// Verify checks a renewal before anything is written: the new certificate
// chains to the CA for its usages, the key is its key, the identity is the
// old one, and it does not expire before the old one.
func Verify(old, renewed *x509.Certificate, key crypto.Signer, ca *x509.Certificate, now time.Time) error {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	usages := renewed.ExtKeyUsage
	if len(usages) == 0 {
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
	}
	if _, err := renewed.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: usages}); err != nil {
		return fmt.Errorf("new certificate does not verify against its CA: %w", err)
	}
	if !KeyMatches(renewed, key) {
		return errors.New("new key does not match the new certificate")
	}
	if err := SameIdentity(old, renewed); err != nil {
		return err
	}
	// Equal is allowed: a forced renewal (a key rotation) in the same
	// second the old certificate was issued lands on the same NotAfter.
	// A certificate not valid yet (issued under a clock that was ahead)
	// ends later than any honest renewal; it is unusable now, so a
	// shorter but valid replacement is the fix, not a loss.
	if renewed.NotAfter.Before(old.NotAfter) && !now.Before(old.NotBefore) {
		return fmt.Errorf("new certificate would expire %s, before the current one (%s): refusing to shorten it (validity too short, or the CA expires %s)",
			renewed.NotAfter.UTC().Format(time.RFC3339), old.NotAfter.UTC().Format(time.RFC3339), ca.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// SameIdentity compares what a client or server sees of a certificate's
// identity.
func SameIdentity(a, b *x509.Certificate) error {
	switch {
	case !bytes.Equal(a.RawSubject, b.RawSubject):
		return fmt.Errorf("subject changed: %q -> %q", a.Subject, b.Subject)
	case !slices.Equal(a.DNSNames, b.DNSNames):
		return fmt.Errorf("DNS SANs changed: %v -> %v", a.DNSNames, b.DNSNames)
	case !slices.EqualFunc(a.IPAddresses, b.IPAddresses, net.IP.Equal):
		return fmt.Errorf("IP SANs changed: %v -> %v", a.IPAddresses, b.IPAddresses)
	case !slices.EqualFunc(a.URIs, b.URIs, func(x, y *url.URL) bool { return x.String() == y.String() }):
		return fmt.Errorf("URI SANs changed: %v -> %v", a.URIs, b.URIs)
	case !slices.Equal(a.EmailAddresses, b.EmailAddresses):
		return fmt.Errorf("email SANs changed: %v -> %v", a.EmailAddresses, b.EmailAddresses)
	case a.KeyUsage != b.KeyUsage:
		return fmt.Errorf("key usage changed: %v -> %v", a.KeyUsage, b.KeyUsage)
	case !slices.Equal(a.ExtKeyUsage, b.ExtKeyUsage):
		return fmt.Errorf("extended key usage changed: %v -> %v", a.ExtKeyUsage, b.ExtKeyUsage)
	case !slices.EqualFunc(a.UnknownExtKeyUsage, b.UnknownExtKeyUsage, asn1.ObjectIdentifier.Equal):
		return fmt.Errorf("extended key usage changed: %v -> %v", a.UnknownExtKeyUsage, b.UnknownExtKeyUsage)
	}
	return nil
}

// newSerial is a random positive 127-bit serial, never zero.
func newSerial(rnd io.Reader) (*big.Int, error) {
	s, err := rand.Int(rnd, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	return s.Add(s, big.NewInt(1)), nil
}

// ClientTemplate stands for the certificate a client identity that has
// none yet would have had: Issue gives it a key, a serial and a validity
// and keeps the rest, so a first issuance and every renewal after it go
// through one path and one Verify. The subject is CN=cn, O=org (one O: the
// group an RBAC binding names); the usages are kubeadm's for a client
// certificate.
func ClientTemplate(cn, org string) (*x509.Certificate, error) {
	subject := pkix.Name{CommonName: cn}
	if org != "" {
		subject.Organization = []string{org}
	}
	raw, err := asn1.Marshal(subject.ToRDNSequence())
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		RawSubject:  raw,
		Subject:     subject,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, nil
}
