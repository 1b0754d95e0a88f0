package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// PEM block types as kubeadm writes them (k8s.io/client-go/util/keyutil).
const (
	PEMCertificate = "CERTIFICATE"
	PEMRSAKey      = "RSA PRIVATE KEY"
	PEMECKey       = "EC PRIVATE KEY"
	PEMPKCS8Key    = "PRIVATE KEY"
)

// ParseCertPEM returns the first certificate of a PEM bundle. kubeadm leaf
// files hold one certificate; anything that is not PEM or not a certificate
// is an error rather than an empty result.
func ParseCertPEM(data []byte) (*x509.Certificate, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			if len(bytes.TrimSpace(data)) == 0 {
				return nil, errors.New("empty file, expected a PEM certificate")
			}
			return nil, errors.New("no PEM certificate found (truncated or not PEM)")
		}
		if block.Type != PEMCertificate {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		return cert, nil
	}
}

// ParsedKey is a private key together with the PEM type it was stored as, so
// a renewal can keep the file's encoding.
type ParsedKey struct {
	Signer  crypto.Signer
	PEMType string
}

func ParseKeyPEM(data []byte) (ParsedKey, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			if len(bytes.TrimSpace(data)) == 0 {
				return ParsedKey{}, errors.New("empty file, expected a PEM private key")
			}
			return ParsedKey{}, errors.New("no PEM private key found (truncated or not PEM)")
		}
		var (
			k   any
			err error
		)
		switch block.Type {
		case PEMRSAKey:
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case PEMECKey:
			k, err = x509.ParseECPrivateKey(block.Bytes)
		case PEMPKCS8Key:
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return ParsedKey{}, errors.New("encrypted private keys are not supported")
		default:
			continue
		}
		if err != nil {
			return ParsedKey{}, fmt.Errorf("parse %s: %w", block.Type, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return ParsedKey{}, fmt.Errorf("unsupported private key type %T", k)
		}
		return ParsedKey{Signer: s, PEMType: block.Type}, nil
	}
}

func EncodeCertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: PEMCertificate, Bytes: der})
}

// EncodeKeyPEM writes RSA keys as PKCS#1 and EC keys as SEC1 like kubeadm,
// unless the old file used PKCS#8, which is then kept.
func EncodeKeyPEM(k crypto.Signer, pemType string) ([]byte, error) {
	if pemType == PEMPKCS8Key {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: PEMPKCS8Key, Bytes: der}), nil
	}
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return pem.EncodeToMemory(&pem.Block{Type: PEMRSAKey, Bytes: x509.MarshalPKCS1PrivateKey(k)}), nil
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: PEMECKey, Bytes: der}), nil
	default:
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: PEMPKCS8Key, Bytes: der}), nil
	}
}

// KeyMatches reports whether the private key belongs to the certificate.
func KeyMatches(cert *x509.Certificate, key crypto.Signer) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	return ok && pub.Equal(cert.PublicKey)
}

// KeyAlgorithm names a key the way kubeadm's encryptionAlgorithm does.
func KeyAlgorithm(pub crypto.PublicKey) string {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", p.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA-P" + p.Curve.Params().Name[len("P-"):]
	case ed25519.PublicKey:
		return "ED25519"
	default:
		return fmt.Sprintf("%T", pub)
	}
}
