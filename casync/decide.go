package casync

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"github.com/pkirenewd/pkirenewd/kubeconfig"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/store"
)

// Files are the worker's holders of the CA certificate, as read.
type Files struct {
	CACertPath string
	CACert     []byte
	// KubeconfigPath is the kubelet's kubeconfig (kubelet.conf).
	KubeconfigPath string
	Kubeconfig     []byte
}

// Plan is what a sync writes: nothing when the node is current.
type Plan struct {
	Local, Published *x509.Certificate
	// Changes are the files to write, as one transaction.
	Changes []store.Change
	// Clusters are the kubeconfig's clusters entries given the new CA.
	Clusters []string
}

// Current says the node already holds the published certificate.
func (p *Plan) Current() bool { return len(p.Changes) == 0 }

// LocalCA parses ca.crt: one certificate, the CA this node trusts.
func LocalCA(data []byte) (*x509.Certificate, error) {
	certs, err := pki.ParseCertsPEM(data)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("holds %d certificates, not one CA certificate: a bundle is left to its owner", len(certs))
	}
	return certs[0], nil
}

// PublishedCA reads the CA certificate out of the kubeconfig kubeadm
// publishes in cluster-info: one cluster, one certificate.
func PublishedCA(clusterInfo []byte) (*x509.Certificate, error) {
	clusters, err := kubeconfig.ClusterCAs(clusterInfo)
	if err != nil {
		return nil, fmt.Errorf("cluster-info: %w", err)
	}
	if len(clusters) != 1 || len(clusters[0].Data) == 0 {
		return nil, fmt.Errorf("cluster-info: %d clusters, want one that embeds its CA", len(clusters))
	}
	certs, err := pki.ParseCertsPEM(clusters[0].Data)
	if err != nil {
		return nil, fmt.Errorf("cluster-info: certificate-authority-data: %w", err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("cluster-info: certificate-authority-data holds %d certificates, want one", len(certs))
	}
	return certs[0], nil
}

// Decide plans the sync of f to the published certificate. Nothing is
// planned unless Accept passes for ca.crt; a kubeconfig cluster gets the
// new certificate when its CA is exactly one certificate that Accept
// passes too (the local one, or another older issue of the same CA), and
// every other cluster is left alone.
func Decide(f Files, published *x509.Certificate) (*Plan, error) {
	local, err := LocalCA(f.CACert)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.CACertPath, err)
	}
	if err := Accept(local, published); err != nil {
		return nil, err
	}
	p := &Plan{Local: local, Published: published}
	newPEM := pem.EncodeToMemory(&pem.Block{Type: pki.PEMCertificate, Bytes: published.Raw})
	if !bytes.Equal(local.Raw, published.Raw) {
		p.Changes = append(p.Changes, store.Change{Path: f.CACertPath, Data: newPEM})
	}
	older := func(data []byte) bool {
		certs, err := pki.ParseCertsPEM(data)
		return err == nil && len(certs) == 1 && !bytes.Equal(certs[0].Raw, published.Raw) && Accept(certs[0], published) == nil
	}
	kc, names, err := kubeconfig.WithClusterCA(f.Kubeconfig, newPEM, older)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.KubeconfigPath, err)
	}
	if len(names) > 0 {
		p.Changes = append(p.Changes, store.Change{Path: f.KubeconfigPath, Data: kc})
		p.Clusters = names
	}
	return p, nil
}
