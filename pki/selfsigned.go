package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"time"
)

// The kubelet's self-signed serving pair: how to tell one from a
// certificate a real CA issued, and how to renew it the way the kubelet
// makes it.

// SelfSignedIssuer finds the issuer of a kubelet-generated bundle: the
// second certificate, a CA that signed the leaf and itself (nil for a
// single self-signed leaf). why says what else the file is.
func SelfSignedIssuer(certs []*x509.Certificate) (issuer *x509.Certificate, why string) {
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

// ParseCertsPEM returns every certificate of a PEM bundle, at least one.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != PEMCertificate {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		_, err := ParseCertPEM(data) // the same words as for one certificate
		return nil, err
	}
	return out, nil
}

// IssueSelfSigned renews a kubelet-generated pair the way the kubelet made
// it: a new throwaway CA (same subject as the old one) signs a leaf that
// carries the old leaf's whole identity; the file holds the leaf, then the
// CA, and the CA's key is discarded. A single self-signed leaf is
// renewed as one. Both get a new key of the old one's type and size and
// validity (the kubelet's own, which its caller knows).
func IssueSelfSigned(old *x509.Certificate, oldKey ParsedKey, oldCA *x509.Certificate, now time.Time, validity time.Duration, rnd io.Reader) (*Issued, *x509.Certificate, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	notBefore, notAfter := now.Add(-Backdate).UTC(), now.Add(validity).UTC()
	key, err := GenerateKey(rnd, "", old.PublicKey)
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
	keyPEM, err := EncodeKeyPEM(key, oldKey.PEMType)
	if err != nil {
		return nil, nil, err
	}
	certPEM := EncodeCertPEM(der)
	issuer := cert
	if caDER != nil {
		certPEM = append(certPEM, EncodeCertPEM(caDER)...)
		if issuer, err = x509.ParseCertificate(caDER); err != nil {
			return nil, nil, err
		}
	}
	return &Issued{Cert: cert, CertPEM: certPEM, KeyPEM: keyPEM}, issuer, nil
}

// leafTemplate carries old's identity (subject byte for byte, SANs, usages)
// onto a new key and validity.
func leafTemplate(old *x509.Certificate, pub crypto.PublicKey, notBefore, notAfter time.Time, rnd io.Reader) (*x509.Certificate, error) {
	serial, err := newSerial(rnd)
	if err != nil {
		return nil, err
	}
	skid, err := SubjectKeyID(pub)
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
	key, err := GenerateKey(rnd, "", old.PublicKey)
	if err != nil {
		return nil, nil, nil, err
	}
	serial, err := newSerial(rnd)
	if err != nil {
		return nil, nil, nil, err
	}
	skid, err := SubjectKeyID(key.Public())
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
