package renew

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pkirenewd/pkirenewd/kubeconfig"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/store"
)

// Holder kinds.
const (
	// HolderKubeconfig: a clusters entry's certificate-authority-data in
	// a kubeconfig of kubeconfigDir.
	HolderKubeconfig = "kubeconfig"
	// HolderCopy: a certificate file in the pki directory that carries
	// the CA certificate (a copy, or a bundle with it).
	HolderCopy = "copy"
	// HolderAdminCopy: a configured copy of admin.conf, outside the
	// managed directories: updated after the transaction, like its
	// credentials.
	HolderAdminCopy = "admin-copy"
	// HolderCluster: a copy the cluster carries for the other nodes
	// (kube-public/cluster-info for workers and kubeadm join, the restart
	// Lease for the other control-plane nodes): published after the
	// transaction, and adopted when it is a newer issue of the CA.
	HolderCluster = "cluster"
)

// Published is a CA certificate the cluster carries (see HolderCluster).
type Published struct {
	CA    string // the CA item's name
	Where string // namespace/name of the object, and the key
	Cert  *x509.Certificate
}

// file reports whether the holder is a file of the managed directories,
// replaced in the CA's transaction.
func (h *Holder) file() bool { return h.Kind == HolderKubeconfig || h.Kind == HolderCopy }

// addPublished makes a holder of each published certificate that is an
// issue of one of inv's CAs; others (another cluster's) are ignored.
func (inv *Inventory) addPublished(pub []Published) {
	for _, p := range pub {
		if ca := inv.CA(p.CA); ca != nil && ca.Cert != nil && p.Cert != nil && SameCA(ca.Cert, p.Cert) {
			inv.Holders = append(inv.Holders, &Holder{CA: p.CA, Kind: HolderCluster, Path: p.Where, Cert: p.Cert})
		}
	}
}

// Newer is the latest issue of ca that a holder in the cluster carries and
// that can stand in for the one on disk (another node renewed it): nil
// when there is none.
func (inv *Inventory) Newer(ca *Item) *x509.Certificate {
	var best *x509.Certificate
	for _, h := range inv.Holders {
		if h.CA != ca.Name || h.Kind != HolderCluster || ca.Cert == nil || !pki.Supersedes(ca.Cert, h.Cert) {
			continue
		}
		if best == nil || pki.Supersedes(best, h.Cert) {
			best = h.Cert
		}
	}
	return best
}

// Holder is a file that carries a CA certificate somebody trusts: when the
// CA is renewed each must get the new certificate before the old one ends.
type Holder struct {
	CA   string // the CA item's name
	Kind string
	Path string
	// Cluster is the clusters entry, for kubeconfigs.
	Cluster string
	// Cert is the CA certificate it carries now.
	Cert *x509.Certificate
	// data is the whole PEM (a bundle may carry other certificates).
	data []byte
}

// Current reports whether the holder carries the CA certificate on disk.
func (h *Holder) Current(ca *Item) bool {
	return ca.Cert != nil && bytes.Equal(h.Cert.Raw, ca.Cert.Raw)
}

// SameCA reports whether c is ca's certificate or another issue of it with
// the same key and subject: what a same-key renewal replaces.
func SameCA(ca, c *x509.Certificate) bool {
	return bytes.Equal(ca.RawSubjectPublicKeyInfo, c.RawSubjectPublicKeyInfo) && bytes.Equal(ca.RawSubject, c.RawSubject)
}

// StaleHolders are the holders of ca that carry another issue of it.
func (inv *Inventory) StaleHolders(ca *Item) []*Holder {
	var out []*Holder
	for _, h := range inv.Holders {
		if h.CA == ca.Name && !h.Current(ca) {
			out = append(out, h)
		}
	}
	return out
}

// loadHolders finds every holder of the inventory's CAs: the kubeconfigs
// of kubeconfigDir (every *.conf, not only kubeadm's: a node carries
// others), the certificate files of the pki directory and its
// subdirectories that are not a CA's own file, and the admin copies.
// Unreadable or foreign files are not holders; a broken kubeadm file is
// already reported by its item.
func loadHolders(roots store.Roots, d Dirs, inv *Inventory) {
	own := map[string]bool{}
	for _, ca := range inv.CAs {
		own[ca.CertPath] = true
	}
	confs, _ := filepath.Glob(filepath.Join(d.KubeconfigDir, "*.conf"))
	for _, p := range confs {
		if data, err := roots.ReadFile(p); err == nil {
			inv.Holders = append(inv.Holders, kubeconfigHolders(inv, p, HolderKubeconfig, data)...)
		}
	}
	for _, p := range d.AdminCopies {
		if data, err := kubeconfig.ReadNoFollow(p); err == nil {
			inv.Holders = append(inv.Holders, kubeconfigHolders(inv, p, HolderAdminCopy, data)...)
		}
	}
	for _, p := range certFiles(d.PKIDir) {
		if own[p] {
			continue
		}
		if data, err := roots.ReadFile(p); err == nil {
			inv.Holders = append(inv.Holders, pemHolders(inv, p, HolderCopy, "", data)...)
		}
	}
	sort.SliceStable(inv.Holders, func(i, j int) bool { return inv.Holders[i].Path < inv.Holders[j].Path })
}

// certFiles lists the *.crt and *.pem files of dir and of its direct
// subdirectories (etcd/), where kubeadm and installers keep certificates.
func certFiles(dir string) []string {
	var out []string
	for _, pat := range []string{"*.crt", "*.pem", "*/*.crt", "*/*.pem"} {
		m, _ := filepath.Glob(filepath.Join(dir, pat))
		out = append(out, m...)
	}
	sort.Strings(out)
	return out
}

func kubeconfigHolders(inv *Inventory, path, kind string, data []byte) []*Holder {
	clusters, err := kubeconfig.ClusterCAs(data)
	if err != nil {
		return nil
	}
	var out []*Holder
	for _, c := range clusters {
		out = append(out, pemHolders(inv, path, kind, c.Name, c.Data)...)
	}
	return out
}

// pemHolders makes a holder for each CA of inv that data carries.
func pemHolders(inv *Inventory, path, kind, cluster string, data []byte) []*Holder {
	if len(data) == 0 || !bytes.Contains(data, []byte("CERTIFICATE")) {
		return nil
	}
	certs, err := pki.ParseCertsPEM(data)
	if err != nil {
		return nil
	}
	var out []*Holder
	for _, c := range certs {
		for _, ca := range inv.CAs {
			if ca.Cert != nil && SameCA(ca.Cert, c) {
				out = append(out, &Holder{CA: ca.Name, Kind: kind, Path: path, Cluster: cluster, Cert: c, data: data})
			}
		}
	}
	return out
}

// replaceInBundle returns data (one PEM certificate or a bundle) with
// every issue of ca other than renewed replaced by renewed, and whether
// anything changed. Other certificates and their order are kept.
func replaceInBundle(data []byte, renewed *x509.Certificate) ([]byte, bool, error) {
	certs, err := pki.ParseCertsPEM(data)
	if err != nil {
		return nil, false, err
	}
	var b bytes.Buffer
	changed := false
	for _, c := range certs {
		if SameCA(renewed, c) && !bytes.Equal(c.Raw, renewed.Raw) {
			c, changed = renewed, true
		}
		b.Write(pki.EncodeCertPEM(c.Raw))
	}
	if !changed {
		return data, false, nil
	}
	return b.Bytes(), true, nil
}

// holderName names a holder for logs and check: the file, and the
// cluster entry of a kubeconfig.
func (h *Holder) String() string {
	if h.Cluster != "" {
		return h.Path + " (cluster " + strings.TrimSpace(h.Cluster) + ")"
	}
	return h.Path
}

// readHolder is the holder's file as it is now, for the transaction.
func readHolder(roots store.Roots, h *Holder) ([]byte, error) {
	if h.Kind == HolderAdminCopy {
		return kubeconfig.ReadNoFollow(h.Path)
	}
	if roots == nil {
		return os.ReadFile(h.Path)
	}
	return roots.ReadFile(h.Path)
}
