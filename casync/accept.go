// Package casync brings a worker node along when the cluster CA
// certificate is renewed with the same key: it fetches the certificate the
// control plane published in kube-public/cluster-info, accepts it only if
// it is the CA already trusted here (the same public key, subject and
// SubjectKeyId) with a later end, writes it into ca.crt and the kubelet's
// kubeconfig as one store transaction, restarts the kubelet, and reports
// the CA it now holds on its own Node. A worker holds these files and no
// control-plane process can write them, while every holder must have the
// new certificate before the old one ends (Go and OpenSSL reject an
// expired root).
//
// The decisions (Accept, Decide, VerifyTime, ReportedCA) are pure; the
// fetch, the write and the kubelet are behind Syncer's fields.
package casync

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"github.com/pkirenewd/pkirenewd/pki"
	"time"
)

// AnnotationCA is the annotation a worker sets on its own Node after a
// sync: the hex SHA-256 of the DER of the cluster CA certificate it now
// holds. A control plane compares it with its own ca.crt to tell which
// workers still carry the old certificate.
const AnnotationCA = "pkirenewd.io/ca-sha256"

// Fingerprint is the value of AnnotationCA for cert.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// ReportedCA is the CA fingerprint a Node's annotations report, "" when
// none (the node has never synced: a worker without ca sync, or an older
// pkirenewd).
func ReportedCA(annotations map[string]string) string {
	return annotations[AnnotationCA]
}

// Accept says whether published may replace local, the CA certificate
// this node trusts: only a re-issue of the same CA, pinned by the key
// already trusted. Equal certificates are accepted (nothing to change).
// Each refusal names what differs.
func Accept(local, published *x509.Certificate) error {
	if bytes.Equal(local.Raw, published.Raw) {
		return nil
	}
	if pki.Supersedes(local, published) {
		// A later issue; of the same second too, ordered as the control
		// plane's nodes order it.
		return nil
	}
	if err := pki.VerifyCARenewal(local, published); err != nil {
		if !bytes.Equal(local.RawSubjectPublicKeyInfo, published.RawSubjectPublicKeyInfo) {
			return fmt.Errorf("the published CA certificate has another public key (%s) than the local one (%s): not the CA this node trusts", spkiHash(published), spkiHash(local))
		}
		return fmt.Errorf("the published CA certificate, as a renewal of the local one: %w", err)
	}
	return fmt.Errorf("the published CA certificate ends with the local one (%s) and sorts before it: not a later issue", stamp(published.NotAfter))
}

func spkiHash(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// VerifyTime is the time at which the apiserver's chain is verified
// against the local CA certificate: now, or, once that certificate has
// expired, one second before its end. The trust is in the CA's key, which
// a same-key renewal keeps: an expired certificate of it still says which
// key signs the apiserver's, and refusing it would leave a worker that
// missed the renewal no way back but by hand. The chain is still fully
// verified (signatures, names, usages), at that instant. A serving
// certificate issued after that instant does not verify then: such a
// worker needs its ca.crt copied by hand.
func VerifyTime(local *x509.Certificate, now time.Time) time.Time {
	if now.Before(local.NotAfter) {
		return now
	}
	return local.NotAfter.Add(-time.Second)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
