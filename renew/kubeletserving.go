package renew

import (
	"errors"
	"fmt"
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
	certs, err := pki.ParseCertsPEM(data)
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
	issuer, why := pki.SelfSignedIssuer(certs)
	if why != "" {
		it.Unmanaged = fmt.Sprintf("%s: pkirenewd only reports it", why)
		return
	}
	it.bundleCA = issuer
}

// planSelfSigned issues and verifies the renewal of a self-signed pair.
func (r *Renewer) planSelfSigned(s Status, now time.Time) (*Planned, error) {
	issued, issuer, err := pki.IssueSelfSigned(s.Cert, s.key, s.bundleCA, now, KubeletServingValidity, r.opts.Rand)
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
