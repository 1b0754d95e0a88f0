// Package renew is pkirenewd's renewal engine: it takes inventory of a kubeadm
// node's PKI and kubeconfigs, decides when each item is due, issues
// replacements that keep the whole identity of the old certificate, and
// writes them through a transactional store that never leaves a mixed or
// half-written PKI behind.
package renew

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
	pemCertificate = "CERTIFICATE"
	pemRSAKey      = "RSA PRIVATE KEY"
	pemECKey       = "EC PRIVATE KEY"
	pemPKCS8Key    = "PRIVATE KEY"
)

// parseCertPEM returns the first certificate of a PEM bundle. kubeadm leaf
// files hold one certificate; anything that is not PEM or not a certificate
// is an error rather than an empty result.
func parseCertPEM(data []byte) (*x509.Certificate, error) {
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
		if block.Type != pemCertificate {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		return cert, nil
	}
}

// parsedKey is a private key together with the PEM type it was stored as, so
// a renewal can keep the file's encoding.
type parsedKey struct {
	Signer  crypto.Signer
	PEMType string
}

func parseKeyPEM(data []byte) (parsedKey, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			if len(bytes.TrimSpace(data)) == 0 {
				return parsedKey{}, errors.New("empty file, expected a PEM private key")
			}
			return parsedKey{}, errors.New("no PEM private key found (truncated or not PEM)")
		}
		var (
			k   any
			err error
		)
		switch block.Type {
		case pemRSAKey:
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case pemECKey:
			k, err = x509.ParseECPrivateKey(block.Bytes)
		case pemPKCS8Key:
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return parsedKey{}, errors.New("encrypted private keys are not supported")
		default:
			continue
		}
		if err != nil {
			return parsedKey{}, fmt.Errorf("parse %s: %w", block.Type, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return parsedKey{}, fmt.Errorf("unsupported private key type %T", k)
		}
		return parsedKey{Signer: s, PEMType: block.Type}, nil
	}
}

func encodeCertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der})
}

// encodeKeyPEM writes RSA keys as PKCS#1 and EC keys as SEC1 like kubeadm,
// unless the old file used PKCS#8, which is then kept.
func encodeKeyPEM(k crypto.Signer, pemType string) ([]byte, error) {
	if pemType == pemPKCS8Key {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: pemPKCS8Key, Bytes: der}), nil
	}
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return pem.EncodeToMemory(&pem.Block{Type: pemRSAKey, Bytes: x509.MarshalPKCS1PrivateKey(k)}), nil
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: pemECKey, Bytes: der}), nil
	default:
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: pemPKCS8Key, Bytes: der}), nil
	}
}

// keyMatches reports whether the private key belongs to the certificate.
func keyMatches(cert *x509.Certificate, key crypto.Signer) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	return ok && pub.Equal(cert.PublicKey)
}

// keyAlgorithm names a key the way kubeadm's encryptionAlgorithm does.
func keyAlgorithm(pub crypto.PublicKey) string {
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
