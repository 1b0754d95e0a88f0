package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"fmt"
	"io"
	"strings"
)

// GenerateKey makes a new private key. alg is a kubeadm encryptionAlgorithm
// value; empty means the same type and size as old.
func GenerateKey(rand io.Reader, alg string, old crypto.PublicKey) (crypto.Signer, error) {
	if alg == "" {
		alg = KeyAlgorithm(old)
	}
	switch alg {
	case "RSA-2048":
		return rsa.GenerateKey(rand, 2048)
	case "RSA-3072":
		return rsa.GenerateKey(rand, 3072)
	case "RSA-4096":
		return rsa.GenerateKey(rand, 4096)
	case "ECDSA-P256":
		return ecdsa.GenerateKey(elliptic.P256(), rand)
	case "ECDSA-P384":
		return ecdsa.GenerateKey(elliptic.P384(), rand)
	case "ECDSA-P521":
		return ecdsa.GenerateKey(elliptic.P521(), rand)
	case "ED25519":
		_, k, err := ed25519.GenerateKey(rand)
		return k, err
	}
	if strings.HasPrefix(alg, "RSA-") {
		var bits int
		if _, err := fmt.Sscanf(alg, "RSA-%d", &bits); err == nil && bits >= 2048 && bits <= 8192 {
			return rsa.GenerateKey(rand, bits)
		}
	}
	return nil, fmt.Errorf("unsupported key algorithm %q", alg)
}
