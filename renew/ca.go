package renew

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"github.com/pkirenewd/pkirenewd/kubeconfig"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/store"
	"github.com/sirupsen/logrus"
)

// CANames are the CAs pkirenewd can renew, by the names `renew` takes.
func CANames() []string {
	var n []string
	for _, s := range caSpecs {
		n = append(n, s.name)
	}
	return n
}

// autoCA reports whether the daemon renews ca by itself: automatic CA
// renewal is on and the CA's key is on this node.
func (r *Renewer) autoCA(ca *Item) bool {
	return !r.opts.CAManual && r.opts.CARenewBefore > 0 && !ca.External && ca.Err == nil && !ca.Missing
}

// assessCA schedules a CA: renewed caRenewBefore ahead of its end (2/3
// of a short life, like a leaf, or a renewed short-lived CA would be due
// at once again), or, when pkirenewd does not renew it, warned about
// caWarnBefore ahead. A CA with holders still on another issue of it is
// due whatever its own schedule: they must be brought along before the
// old certificate ends.
func (r *Renewer) assessCA(inv *Inventory, ca *Item, now time.Time) Status {
	s := Status{Item: ca}
	if ca.Cert == nil {
		return s
	}
	if r.autoCA(ca) {
		p := pki.Policy{RenewBefore: r.opts.CARenewBefore, NodeName: r.opts.Policy.NodeName}
		s.RenewAt = p.RenewAt(ca.Name, ca.Cert.NotBefore, ca.Cert.NotAfter)
	} else {
		s.RenewAt, s.WarnOnly = ca.Cert.NotAfter.Add(-r.opts.CAWarnBefore), true
	}
	s.State = pki.DecideCert(now, ca.Cert.NotBefore, s.RenewAt, ca.Cert.NotAfter)
	managed := 0
	s.OldHolders = inv.StaleHolders(ca)
	s.Adopt = inv.Newer(ca)
	for _, h := range s.OldHolders {
		// An admin copy is brought along after a renewal but never makes
		// one: one that cannot be written would renew the CA's holders
		// round after round. A newer issue in the cluster is adopted,
		// not an old holder.
		if h.Kind != HolderAdminCopy && (s.Adopt == nil || !h.Cert.Equal(s.Adopt)) {
			managed++
		}
	}
	switch {
	case s.Adopt != nil:
		// Another node renewed it: take its issue, so that the nodes never
		// diverge, whatever this node's own schedule says.
		s.State = pki.StateDue
	case managed > 0 && s.State == pki.StateOK:
		s.State = pki.StateDue
		s.HoldersOld = managed
	}
	return s
}

// caDue reports whether the daemon renews a CA now: due by its own
// schedule with automatic renewal on, or with holders on another issue
// of it (a transaction cut short, a node that adopted a published
// renewal, a human who copied ca.crt), which need no key.
func (r *Renewer) caDue(s Status) bool {
	return (r.autoCA(s.Item) && s.State != pki.StateOK) || s.HoldersOld > 0 || s.Adopt != nil
}

// planCAsOf plans the chosen CAs. In a daemon's round (not named) a CA
// that cannot be planned is held with the reason, never in the way of the
// other CAs or the leaves; named, it fails the plan like any named item.
func (r *Renewer) planCAsOf(inv *Inventory, cas []Status, named, force bool, now time.Time) ([]Planned, []Status, error) {
	if len(cas) == 0 {
		return nil, nil, nil
	}
	if named {
		p, err := r.planCAs(inv, cas, force, now)
		return p, nil, err
	}
	var ok, held []Status
	for _, s := range cas {
		if err := caRenewable(s); err != nil && (s.HoldersOld == 0 || s.Cert == nil || s.Err != nil) {
			s.Unwritable = err.Error()
			held = append(held, s)
			continue
		}
		ok = append(ok, s)
	}
	if p, err := r.planCAs(inv, ok, force, now); err == nil {
		return p, held, nil
	}
	// One of them cannot be planned: each alone, so that it holds only
	// itself. One that shares a file with another planned now waits for
	// the next round, when that file is written.
	var out []Planned
	taken := map[string]bool{}
	for _, s := range ok {
		p, err := r.planCAs(inv, []Status{s}, force, now)
		if err == nil && touches(p, taken) {
			err = fmt.Errorf("%s shares a file with another CA renewed now: next round", s.Name)
		}
		if err != nil {
			s.Unwritable = err.Error()
			held = append(held, s)
			continue
		}
		out = append(out, p...)
	}
	return out, held, nil
}

// touches reports whether the plans change a path of taken, and adds
// their paths to it.
func touches(p []Planned, taken map[string]bool) bool {
	hit := false
	for _, it := range p {
		for _, c := range it.Changes {
			hit = hit || taken[c.Path]
		}
	}
	if !hit {
		for _, it := range p {
			for _, c := range it.Changes {
				taken[c.Path] = true
			}
		}
	}
	return hit
}

// caRenewable says why a CA cannot be renewed here, nil when it can.
func caRenewable(s Status) error {
	if s.External && s.Err == nil {
		return fmt.Errorf("%s: its key %s is not on this node (external CA): renew it where the key is", s.Name, s.KeyPath)
	}
	return renewable(s)
}

// planCAs issues the renewal of each chosen CA with its own key (or, for
// a CA due only for its holders, takes the certificate on disk) and
// brings every holder in the managed directories along. A file that
// holds two CAs gets both in one change.
func (r *Renewer) planCAs(inv *Inventory, chosen []Status, force bool, now time.Time) ([]Planned, error) {
	roots, err := store.NewRoots(r.opts.PKIDir, r.opts.KubeconfigDir)
	if err != nil {
		return nil, err
	}
	content := map[string][]byte{}
	owner := map[string]int{}
	var order []string
	planned := make([]Planned, 0, len(chosen))
	for i, s := range chosen {
		issued, err := r.issueCA(s, force, now)
		if err != nil {
			return nil, fmt.Errorf("%s (%s): %w", s.Name, s.CertPath, err)
		}
		planned = append(planned, Planned{Status: s, Issued: issued, adminCopies: holdersOf(inv, s.Name, HolderAdminCopy), Publish: holdersOf(inv, s.Name, HolderCluster)})
		if !bytes.Equal(issued.Cert.Raw, s.Cert.Raw) {
			content[s.CertPath], owner[s.CertPath] = issued.CertPEM, i
			order = append(order, s.CertPath)
		}
		for _, h := range inv.Holders {
			if h.CA != s.Name || !h.file() || bytes.Equal(h.Cert.Raw, issued.Cert.Raw) {
				continue
			}
			cur, ok := content[h.Path]
			if !ok {
				if cur, err = readHolder(roots, h); err != nil {
					return nil, fmt.Errorf("%s: holder %s: %w", s.Name, h, err)
				}
				owner[h.Path] = i
				order = append(order, h.Path)
			}
			if content[h.Path], err = replaceHolder(h, cur, issued); err != nil {
				return nil, fmt.Errorf("%s: holder %s: %w", s.Name, h, err)
			}
		}
	}
	for _, p := range order {
		i := owner[p]
		planned[i].Changes = append(planned[i].Changes, store.Change{Path: p, Data: content[p]})
	}
	return planned, nil
}

// issueCA is the CA certificate a plan installs: a new issue with the
// same key, unless the CA is due only for its holders (then the one on
// disk, for them; --force re-issues it all the same). A CA that is not
// due at all is planned only when an operator names it: re-issued.
func (r *Renewer) issueCA(s Status, force bool, now time.Time) (*pki.Issued, error) {
	if s.Adopt != nil && !force {
		return &pki.Issued{Cert: s.Adopt, CertPEM: pki.EncodeCertPEM(s.Adopt.Raw)}, nil
	}
	if !force && s.HoldersOld > 0 {
		return &pki.Issued{Cert: s.Cert, CertPEM: pki.EncodeCertPEM(s.Cert.Raw)}, nil
	}
	if s.key.Signer == nil {
		return nil, fmt.Errorf("no key for CA %s", s.Name)
	}
	issued, err := pki.RenewCA(pki.CARenewal{Old: s.Cert, Key: s.key.Signer, Now: now, Validity: r.opts.CAValidity, Rand: r.opts.Rand})
	if err != nil {
		return nil, err
	}
	issued.KeyPEM = nil
	return issued, nil
}

// replaceHolder is the holder's file with its issue of the CA replaced by
// the new one: in a kubeconfig, the certificate-authority-data of the
// clusters entries that carried it (a bundle keeps its other
// certificates); in a certificate file, the certificate in place.
func replaceHolder(h *Holder, file []byte, issued *pki.Issued) ([]byte, error) {
	if h.Kind == HolderCopy {
		out, _, err := replaceInBundle(file, issued.Cert)
		return out, err
	}
	clusters, err := kubeconfig.ClusterCAs(file)
	if err != nil {
		return nil, err
	}
	for _, c := range clusters {
		if c.Name != h.Cluster || len(c.Data) == 0 {
			continue
		}
		data, changed, err := replaceInBundle(c.Data, issued.Cert)
		if err != nil || !changed {
			return file, err
		}
		old := c.Data
		out, names, err := kubeconfig.WithClusterCA(file, data, func(cur []byte) bool { return bytes.Equal(cur, old) })
		if err != nil {
			return nil, err
		}
		if !slices.Contains(names, h.Cluster) {
			return nil, fmt.Errorf("cluster %q was not rewritten", h.Cluster)
		}
		return out, nil
	}
	return file, nil
}

func holdersOf(inv *Inventory, ca, kind string) []*Holder {
	var out []*Holder
	for _, h := range inv.Holders {
		if h.CA == ca && h.Kind == kind {
			out = append(out, h)
		}
	}
	return out
}

// updateCAAdminCopies brings the admin copies that hold a renewed CA
// along, after the transaction, as their credentials are (see
// updateAdminCopies): a copy that cannot be written is logged with what
// to do, and check keeps showing it as an old holder.
func (r *Renewer) updateCAAdminCopies(p *Plan) {
	for _, it := range p.Items {
		for _, h := range it.adminCopies {
			if bytes.Equal(h.Cert.Raw, it.Issued.Cert.Raw) {
				continue
			}
			l := r.opts.Log.WithFields(logrus.Fields{"CERT": it.Name, "PATH": h.Path})
			if err := writeAdminCopyCA(h, it.Issued); err != nil {
				l.WithError(err).Warn("could not bring the copy of admin.conf to the renewed CA: put the renewed CA certificate in its certificate-authority-data")
				continue
			}
			l.WithField("ACTION", "renewed").Info("copy of admin.conf given the renewed CA certificate")
		}
	}
}

func writeAdminCopyCA(h *Holder, issued *pki.Issued) error {
	data, err := kubeconfig.ReadNoFollow(h.Path)
	if err != nil {
		return err
	}
	out, err := replaceHolder(h, data, issued)
	if err != nil || bytes.Equal(out, data) {
		return err
	}
	meta, err := store.StatMeta(h.Path)
	if err != nil {
		return err
	}
	return store.WriteAtomic(h.Path, out, meta)
}

// withRenewedCAs is inv with the CAs of planned replaced by their new
// issue, to issue leaves under: the key is the same, the end later.
func (inv *Inventory) withRenewedCAs(planned []Planned) *Inventory {
	if len(planned) == 0 {
		return inv
	}
	out := *inv
	out.CAs = make([]*Item, len(inv.CAs))
	for i, ca := range inv.CAs {
		out.CAs[i] = ca
		for _, p := range planned {
			if p.Name == ca.Name && p.Issued != nil {
				c := *ca
				c.Cert = p.Issued.Cert
				out.CAs[i] = &c
			}
		}
	}
	return &out
}

// withCAsOf gives each kubeconfig change of the leaves (a kubeconfig
// renewed in the same round, or the API identity's new file) the renewed
// CAs it carries an issue of: the leaves' transactions come after the
// CAs', and write whole files, which would otherwise carry the old CA.
func (inv *Inventory) withCAsOf(leaves []Planned, cas []Planned) error {
	for i := range leaves {
		if leaves[i].Kind != KindKubeconfig {
			continue
		}
		for j := range leaves[i].Changes {
			c := &leaves[i].Changes[j]
			for _, ca := range cas {
				for _, h := range kubeconfigHolders(inv, c.Path, HolderKubeconfig, c.Data) {
					if h.CA != ca.Name {
						continue
					}
					data, err := replaceHolder(h, c.Data, ca.Issued)
					if err != nil {
						return fmt.Errorf("%s: %s with the renewed %s: %w", leaves[i].Name, c.Path, ca.Name, err)
					}
					c.Data = data
				}
			}
		}
	}
	return nil
}
