package renew

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/pkirenewd/pkirenewd/internal/fsread"
	"github.com/pkirenewd/pkirenewd/kubeconfig"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/store"
)

// Kind tells what an inventory item is.
type Kind string

// Item kinds.
const (
	KindCA         Kind = "ca"
	KindCert       Kind = "certificate"
	KindKubeconfig Kind = "kubeconfig"
)

// Item is one certificate kubeadm manages: a CA, a leaf certificate/key
// pair in the pki directory, or the client certificate a kubeconfig embeds.
type Item struct {
	Name   string
	Kind   Kind
	CAName string // signing CA; empty for CAs

	// CertPath holds the certificate: the .crt, or the kubeconfig file.
	CertPath string
	// KeyPath is the private key file; empty for kubeconfigs.
	KeyPath string

	Cert *x509.Certificate

	// Missing: a file kubeadm always creates is not there.
	Missing bool
	// External: the signing CA's key is absent (external CA mode), so the
	// item is reported and never written.
	External bool
	// RotatedBy names who renews it instead of us ("kubelet").
	RotatedBy string
	// Unmanaged says why pkirenewd only reports an item that nobody it
	// knows of renews (an operator's kubelet serving certificate).
	Unmanaged string
	// Note explains who looks after it, for check.
	Note string
	// Err makes the item broken: it is reported and never renewed.
	Err error
	// Warnings are oddities worth a log line that do not stop renewal.
	Warnings []string
	// Issue says why pkirenewd's own identity must be issued anew rather
	// than renewed (none yet, another CA, another node): it is due now.
	Issue string
	// ClusterCA is a kubeconfig's certificate-authority-data, parsed (nil:
	// none, or not PEM), and ClusterName the clusters entry that holds it:
	// a holder of the CA certificate, exported and kept current with it.
	ClusterCA   []*x509.Certificate
	ClusterName string
	// UserName is a kubeconfig's users entry of the current context, and
	// KubeconfigPath the kubeconfig file itself (CertPath is the rotated
	// certificate file when the user points at one).
	UserName       string
	KubeconfigPath string

	key pki.ParsedKey
	kc  *kubeconfig.Config
	// identity is the subject pkirenewd's own identity is issued with.
	identity Identity
	// bundleCA is the throwaway CA a self-signed kubelet serving
	// certificate carries in its file (nil: the leaf signed itself).
	bundleCA *x509.Certificate
}

// SelfSigned reports whether the item is a self-signed pair pkirenewd
// renews as one (the kubelet's serving certificate), not from a CA.
func (it *Item) SelfSigned() bool {
	return it.Name == KubeletServingName && it.RotatedBy == "" && it.Unmanaged == ""
}

// Renewable reports whether pkirenewd may write a new certificate for it.
func (it *Item) Renewable() bool {
	return it.Kind != KindCA && !it.Missing && !it.External && it.RotatedBy == "" && it.Unmanaged == "" && it.Err == nil && (it.Cert != nil || it.Issue != "")
}

// Inventory is the state of a node's PKI at one instant.
type Inventory struct {
	CAs   []*Item
	Certs []*Item // leaves and kubeconfigs, sorted by name like kubeadm
	// Holders are the files that carry a CA certificate (see Holder).
	Holders []*Holder
}

// CA returns the CA item of that name, or nil.
func (inv *Inventory) CA(name string) *Item {
	for _, c := range inv.CAs {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Find returns the item (certificate or CA) of that name, or nil.
func (inv *Inventory) Find(name string) *Item {
	for _, c := range inv.Certs {
		if c.Name == name {
			return c
		}
	}
	return inv.CA(name)
}

// Dirs are the places kubeadm writes to.
type Dirs struct {
	PKIDir        string
	KubeconfigDir string
	// KubeletServing is the kubelet's serving certificate (zero: not
	// looked at).
	KubeletServing KubeletServing
	// AdminCopies are copies of admin.conf outside kubeconfigDir: holders
	// of the cluster CA too.
	AdminCopies []string
	// Identity is pkirenewd's own API identity, kept in KubeconfigDir as
	// IdentityName (zero: none).
	Identity Identity
}

type caSpec struct {
	name, base string
	required   bool
}

type leafSpec struct {
	name, base, ca string
	required       bool
}

type confSpec struct {
	name     string
	required bool
}

// The kubeadm file set (kubeadm v1.37). Etcd leaves exist only with stacked
// etcd and apiserver-etcd-client only with an etcd kubeadm knows about, so
// they are listed when present; the rest kubeadm always creates.
var (
	caSpecs = []caSpec{
		{"ca", "ca", true},
		{"etcd-ca", "etcd/ca", false},
		{"front-proxy-ca", "front-proxy-ca", true},
	}
	leafSpecs = []leafSpec{
		{"apiserver", "apiserver", "ca", true},
		{"apiserver-etcd-client", "apiserver-etcd-client", "etcd-ca", false},
		{"apiserver-kubelet-client", "apiserver-kubelet-client", "ca", true},
		{"etcd-healthcheck-client", "etcd/healthcheck-client", "etcd-ca", false},
		{"etcd-peer", "etcd/peer", "etcd-ca", false},
		{"etcd-server", "etcd/server", "etcd-ca", false},
		{"front-proxy-client", "front-proxy-client", "front-proxy-ca", true},
	}
	confSpecs = []confSpec{
		{"admin.conf", true},
		{"controller-manager.conf", true},
		{"kubelet.conf", false},
		{"scheduler.conf", true},
		{"super-admin.conf", false},
	}
)

// Names lists every item name pkirenewd knows, for help and validation.
func Names() []string {
	n := CANames()
	for _, s := range leafSpecs {
		n = append(n, s.name)
	}
	n = append(n, KubeletServingName, IdentityName)
	for _, s := range confSpecs {
		n = append(n, s.name)
	}
	sort.Strings(n)
	return n
}

// TakeInventory reads every certificate, key and kubeconfig of the node.
// Problems with single items are recorded on the item (Err) so that one
// corrupt file is reported with its name instead of hiding the others; the
// returned error is for the directories themselves.
func TakeInventory(d Dirs) (*Inventory, error) {
	roots, err := store.NewRoots(d.PKIDir, d.KubeconfigDir)
	if err != nil {
		return nil, err
	}
	inv := &Inventory{}
	for _, s := range caSpecs {
		if it := loadCA(roots, d.PKIDir, s); it != nil {
			inv.CAs = append(inv.CAs, it)
		}
	}
	for _, s := range leafSpecs {
		if it := loadLeaf(roots, d.PKIDir, s, inv); it != nil {
			inv.Certs = append(inv.Certs, it)
		}
	}
	for _, s := range confSpecs {
		if it := loadKubeconfig(roots, d.KubeconfigDir, s, inv); it != nil {
			inv.Certs = append(inv.Certs, it)
		}
	}
	if it := loadKubeletServing(d.KubeletServing); it != nil {
		inv.Certs = append(inv.Certs, it)
	}
	loadHolders(roots, d, inv)
	if d.Identity.User != "" {
		inv.Certs = append(inv.Certs, loadIdentity(roots, d, inv))
	}
	sort.Slice(inv.Certs, func(i, j int) bool { return inv.Certs[i].Name < inv.Certs[j].Name })
	return inv, nil
}

func loadCA(roots store.Roots, pki string, s caSpec) *Item {
	it := &Item{Name: s.name, Kind: KindCA, CertPath: filepath.Join(pki, s.base+".crt"), KeyPath: filepath.Join(pki, s.base+".key")}
	ok, err := fsread.Exists(it.CertPath)
	switch {
	case err != nil:
		it.Err = err
		return it
	case !ok && s.required:
		it.Missing = true
		return it
	case !ok:
		return nil // the etcd CA is absent with external etcd
	}
	if it.Cert, it.Err = readCert(roots, it.CertPath); it.Err != nil {
		return it
	}
	if !it.Cert.IsCA {
		it.Err = fmt.Errorf("%s: not a CA certificate", it.CertPath)
		return it
	}
	ok, err = fsread.Exists(it.KeyPath)
	switch {
	case err != nil:
		it.Err = err
	case !ok:
		it.External = true
	default:
		it.key, it.Err = readKey(roots, it.KeyPath, it.Cert, it.CertPath)
	}
	return it
}

func readCert(roots store.Roots, p string) (*x509.Certificate, error) {
	data, err := roots.ReadFile(p)
	if err != nil {
		return nil, err
	}
	c, err := pki.ParseCertPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return c, nil
}

func readKey(roots store.Roots, p string, cert *x509.Certificate, certPath string) (pki.ParsedKey, error) {
	data, err := roots.ReadFile(p)
	if err != nil {
		return pki.ParsedKey{}, err
	}
	k, err := pki.ParseKeyPEM(data)
	if err != nil {
		return pki.ParsedKey{}, fmt.Errorf("%s: %w", p, err)
	}
	if !pki.KeyMatches(cert, k.Signer) {
		return pki.ParsedKey{}, fmt.Errorf("%s does not match the certificate %s", p, certPath)
	}
	return k, nil
}

// checkIssuer ties a leaf to its CA: it must have been signed by the CA on
// disk, or a renewal would silently re-parent it.
func checkIssuer(it *Item, inv *Inventory) {
	ca := inv.CA(it.CAName)
	switch {
	case ca == nil || ca.Missing:
		it.Err = fmt.Errorf("%s: its CA %s is missing", it.CertPath, it.CAName)
	case ca.Err != nil:
		it.Err = fmt.Errorf("%s: its CA %s is broken: %w", it.CertPath, it.CAName, ca.Err)
	default:
		if err := it.Cert.CheckSignatureFrom(ca.Cert); err != nil {
			it.Err = fmt.Errorf("%s is not signed by CA %s (%s): %w", it.CertPath, it.CAName, ca.CertPath, err)
			return
		}
		it.External = ca.External
	}
}

func loadLeaf(roots store.Roots, pki string, s leafSpec, inv *Inventory) *Item {
	it := &Item{Name: s.name, Kind: KindCert, CAName: s.ca, CertPath: filepath.Join(pki, s.base+".crt"), KeyPath: filepath.Join(pki, s.base+".key")}
	ok, err := fsread.Exists(it.CertPath)
	switch {
	case err != nil:
		it.Err = err
		return it
	case !ok && s.required:
		it.Missing = true
		return it
	case !ok:
		return nil
	}
	if it.Cert, it.Err = readCert(roots, it.CertPath); it.Err != nil {
		return it
	}
	if it.key, it.Err = readKey(roots, it.KeyPath, it.Cert, it.CertPath); it.Err != nil {
		if errors.Is(it.Err, os.ErrNotExist) {
			it.Err = fmt.Errorf("%s: private key missing for %s", it.KeyPath, it.CertPath)
		}
		return it
	}
	checkIssuer(it, inv)
	return it
}

func loadKubeconfig(roots store.Roots, dir string, s confSpec, inv *Inventory) *Item {
	it := &Item{Name: s.name, Kind: KindKubeconfig, CAName: "ca", CertPath: filepath.Join(dir, s.name)}
	ok, err := fsread.Exists(it.CertPath)
	switch {
	case err != nil:
		it.Err = err
		return it
	case !ok && s.required:
		it.Missing = true
		return it
	case !ok:
		return nil
	}
	data, err := roots.ReadFile(it.CertPath)
	if err != nil {
		it.Err = err
		return it
	}
	kc, err := kubeconfig.Parse(data)
	if err != nil {
		it.Err = fmt.Errorf("%s: %w", it.CertPath, err)
		return it
	}
	it.kc = kc
	it.ClusterName, it.UserName, it.KubeconfigPath = kc.ClusterName, kc.UserName, it.CertPath
	if len(kc.CAData) > 0 {
		it.ClusterCA, _ = pki.ParseCertsPEM(kc.CAData)
	}
	if kc.CertData == nil {
		return loadRotated(it, kc, dir)
	}
	if it.Cert, err = pki.ParseCertPEM(kc.CertData); err != nil {
		it.Err = fmt.Errorf("%s: user %q client-certificate-data: %w", it.CertPath, kc.UserName, err)
		return it
	}
	if it.key, err = pki.ParseKeyPEM(kc.KeyData); err != nil {
		it.Err = fmt.Errorf("%s: user %q client-key-data: %w", it.CertPath, kc.UserName, err)
		return it
	}
	if !pki.KeyMatches(it.Cert, it.key.Signer) {
		it.Err = fmt.Errorf("%s: user %q client-key-data does not match client-certificate-data", it.CertPath, kc.UserName)
		return it
	}
	checkIssuer(it, inv)
	if ca := inv.CA("ca"); it.Err == nil && ca != nil && ca.Cert != nil && len(kc.CAData) > 0 {
		if caCert, err := pki.ParseCertPEM(kc.CAData); err != nil || !bytes.Equal(caCert.Raw, ca.Cert.Raw) {
			it.Warnings = append(it.Warnings, fmt.Sprintf("%s: certificate-authority-data differs from %s (left as it is)", it.CertPath, ca.CertPath))
		}
	}
	return it
}

// loadRotated reports a kubeconfig whose user points at a certificate file
// (kubelet.conf → kubelet-client-current.pem): the kubelet rotates it, so
// we only show its expiry. The file lives outside the managed directories
// and is only read.
func loadRotated(it *Item, kc *kubeconfig.Config, dir string) *Item {
	it.RotatedBy = "kubelet"
	p := kc.CertFile
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	// kubelet-client-current.pem is a symlink the kubelet repoints on
	// every rotation, so it is followed; readRegular still refuses a FIFO
	// or an oversized file at its end.
	data, err := fsread.Regular(p, true)
	if err != nil {
		it.Err = fmt.Errorf("%s: client-certificate %w", it.CertPath, err)
		return it
	}
	if it.Cert, err = pki.ParseCertPEM(data); err != nil {
		it.Err = fmt.Errorf("%s: %w", p, err)
	}
	it.CertPath = p
	return it
}
