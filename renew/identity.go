package renew

import (
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/pkirenewd/pkirenewd/internal/fsread"
	"github.com/pkirenewd/pkirenewd/kubeconfig"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/store"
	"github.com/sirupsen/logrus"
)

// IdentityName is the kubeconfig of pkirenewd's own API identity. It lives
// in the kubeconfig directory beside kubeadm's, 0600 like them: it is a
// client credential of the same cluster CA, so it is renewed in the same
// transaction as they are (one backup, one crash-safe commit), the unit's
// write set already covers it, and an operator finds every credential of
// the node in one place. kubeadm neither lists nor removes it.
const IdentityName = "pkirenewd.conf"

// Identity is the client identity pkirenewd issues itself: the user (CN)
// and the group (O) its certificate carries. Zero: none (the node talks
// to the API with admin.conf).
type Identity struct {
	User, Group string
}

// Subject is the identity as check and the logs show it.
func (id Identity) Subject() string {
	return fmt.Sprintf("CN=%s, O=%s", id.User, id.Group)
}

// Fresh reports whether the item has no file yet: its issuance creates one
// (a store.Create of its own, not part of a transaction).
func (it *Item) Fresh() bool { return it.Issue != "" && it.Cert == nil }

// loadIdentity reads the node's own identity. Unlike kubeadm's files it is
// pkirenewd's alone, so what would make another item broken makes this
// one due for a new issuance: no file yet, a certificate of another CA
// (kubeadm reset and init, a CA rotated with a new key) or of another
// node name. A file that cannot be parsed stays broken: it is not ours to
// guess about.
func loadIdentity(roots store.Roots, d Dirs, inv *Inventory) *Item {
	p := filepath.Join(d.KubeconfigDir, IdentityName)
	it := &Item{Name: IdentityName, Kind: KindKubeconfig, CAName: "ca", CertPath: p}
	ok, err := fsread.Exists(p)
	switch {
	case err != nil:
		it.Err = err
	case !ok:
		it.Issue = "not issued yet"
	default:
		it = loadKubeconfig(roots, d.KubeconfigDir, confSpec{name: IdentityName}, inv)
		it.Issue = reissue(it, d.Identity, inv)
	}
	it.identity = d.Identity
	if ca := inv.CA(it.CAName); it.Issue != "" && ca != nil {
		it.External = ca.External
	}
	return it
}

// reissue says why an identity that parses must be issued anew ("" when
// it is renewed as usual).
func reissue(it *Item, want Identity, inv *Inventory) string {
	if it.Cert == nil || it.RotatedBy != "" {
		return ""
	}
	if s := it.Cert.Subject; s.CommonName != want.User || !slices.Equal(s.Organization, []string{want.Group}) {
		return fmt.Sprintf("issued for %q, this node's identity is %s", s.String(), want.Subject())
	}
	if ca := inv.CA(it.CAName); ca != nil && ca.Cert != nil && ca.Err == nil && it.Cert.CheckSignatureFrom(ca.Cert) != nil {
		it.Err = nil
		return fmt.Sprintf("signed by another CA than %s", ca.CertPath)
	}
	return ""
}

// issueIdentity issues the identity from the template of its subject,
// never from the file it replaces, and writes a kubeconfig of its own
// around it: admin.conf's cluster (its name and server, kubeadm's
// controlPlaneEndpoint) and the CA on disk.
func (r *Renewer) issueIdentity(inv *Inventory, s Status, ca *Item, now time.Time) (*Planned, error) {
	admin := inv.Find("admin.conf")
	if admin == nil || admin.kc == nil {
		return nil, fmt.Errorf("no usable admin.conf in %s to take the API server from", filepath.Dir(s.CertPath))
	}
	tmpl, err := pki.ClientTemplate(s.identity.User, s.identity.Group)
	if err != nil {
		return nil, err
	}
	alg := r.opts.Algorithm
	if alg == "" {
		alg = "RSA-2048" // kubeadm's default encryptionAlgorithm
	}
	issued, err := pki.Issue(pki.IssueRequest{Old: tmpl, CA: ca.Cert, CAKey: ca.key.Signer, Now: now, Validity: r.opts.Validity, Algorithm: alg, Rand: r.opts.Rand})
	if err != nil {
		return nil, err
	}
	if err := r.verify(s.Name, tmpl, issued, ca, now); err != nil {
		return nil, err
	}
	data, err := kubeconfig.New(kubeconfig.Embedded{
		Cluster: admin.kc.ClusterName, Server: admin.kc.Server, User: s.identity.User,
		CAPEM: pki.EncodeCertPEM(ca.Cert.Raw), CertPEM: issued.CertPEM, KeyPEM: issued.KeyPEM,
	})
	if err != nil {
		return nil, err
	}
	return &Planned{Status: s, Issued: issued, Changes: []store.Change{{Path: s.CertPath, Data: data}}}, nil
}

// create writes a new identity's file. It has no old version, so there is
// nothing to back up or to go back to: the Result names the file only.
func (r *Renewer) create(st store.Transactions, p *Plan) (*store.Result, error) {
	res := &store.Result{}
	for _, it := range p.Items {
		for _, c := range it.Changes {
			if err := st.Create(c.Path, c.Data); err != nil {
				return nil, err
			}
			res.Paths = append(res.Paths, c.Path)
		}
		r.opts.Log.WithFields(logrus.Fields{
			"CERT": it.Name, "PATH": it.CertPath, "ACTION": "issued", "SUBJECT": it.identity.Subject(),
			"NOT_AFTER": it.Issued.Cert.NotAfter.UTC().Format(time.RFC3339), "SERIAL": CertSerial(it.Issued.Cert),
		}).Info("pkirenewd's own API identity issued")
	}
	return res, nil
}
