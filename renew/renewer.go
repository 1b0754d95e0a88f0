// Package renew is pkirenewd's renewal engine: it takes inventory of a
// kubeadm node's PKI and kubeconfigs (and the kubelet's serving pair),
// plans which items are renewed together, has pki issue their
// replacements, and commits them as one transaction of the store; it
// records the restarts a renewal still owes. The rules it applies live
// elsewhere, each with its own reason to change: certificates and policy
// in pki, kubeconfig forms in kubeconfig, crash safety in store.
package renew

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pkirenewd/pkirenewd/kubeconfig"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/store"
	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"
)

// Options configure a Renewer.
type Options struct {
	Dirs
	StateDir     string
	Policy       pki.Policy
	CAWarnBefore time.Duration
	// CARenewBefore: a CA is renewed with its own key this long before it
	// ends (zero, or CAManual: only when named).
	CARenewBefore time.Duration
	CAManual      bool
	// CAValidity is a renewed CA's lifetime; zero keeps its own.
	CAValidity time.Duration
	// Validity of issued certificates (already resolved against the
	// kubeadm configuration by the caller).
	Validity time.Duration
	// Algorithm is kubeadm's encryptionAlgorithm; empty keeps each key's
	// type and size.
	Algorithm string
	Now       func() time.Time
	// Rand is the entropy source (default crypto/rand); keys are made
	// concurrently, so it must be safe for concurrent use.
	Rand io.Reader
	Log  logrus.FieldLogger
	// Step is the store's test hook (see Store.Step).
	Step func(string)
	// AdminCopies are copies of admin.conf (or kubeconfigs merged from
	// it) whose users entries with admin.conf's old credentials are
	// updated along with it; AdminCopyGlob finds copies that are only
	// reported. Empty: none.
	AdminCopies   []string
	AdminCopyGlob string
	// Sleep waits while a concurrent writer finishes (default: the real clock).
	Sleep func(time.Duration)
	// Published reads the CA certificates the cluster carries for the
	// other nodes (nil: none looked at). Optional: on an error it returns
	// nothing, and the files alone decide.
	Published func() []Published
}

// Renewer takes inventory, plans renewals and applies them.
type Renewer struct {
	opts Options
}

// New returns a Renewer; zero Now, Log and Rand get real defaults.
func New(o Options) *Renewer {
	if o.Now == nil {
		o.Now = clock.RealClock{}.Now
	}
	if o.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		o.Log = l
	}
	return &Renewer{opts: o}
}

// store is the transaction store over the directories the renewer manages.
// The renewer sees only store.Transactions: what it may ask of the store is
// written down there, not found by reading the store.
func (r *Renewer) store() (store.Transactions, error) {
	dirs := []string{r.opts.PKIDir, r.opts.KubeconfigDir}
	if d := r.opts.KubeletServing.dir(); d != "" {
		dirs = append(dirs, d)
	}
	roots, err := store.NewRoots(dirs...)
	if err != nil {
		return nil, err
	}
	return &store.Store{StateDir: r.opts.StateDir, Roots: roots, Now: r.opts.Now, Step: r.opts.Step}, nil
}

// Status is an item's schedule at one instant.
type Status struct {
	*Item
	// RenewAt is when a leaf is renewed, or when a CA starts to warn.
	RenewAt time.Time
	State   pki.State
	// Held, when set, says why a due certificate is not renewed (its CA
	// expires too soon for a renewal to help): the CA must be renewed.
	Held string
	// Unwritable, when set, says why a due item's files cannot be
	// replaced now (a read-only or immutable directory, an immutable
	// file, a file mounted over) and what fixes it. The item stays due;
	// a renewal of what is due holds it and renews the rest.
	Unwritable string
	// HoldersOld, for a CA that is due only for them, counts the holders
	// that carry another issue of it: they are brought along.
	HoldersOld int
	// OldHolders, for a CA, are every holder on another issue of it,
	// admin copies included.
	OldHolders []*Holder
	// Adopt, for a CA, is a newer issue of it that another node renewed
	// and published: installed instead of a renewal of this node's own.
	Adopt *x509.Certificate
	// WarnOnly: a CA pkirenewd does not renew by itself (caRenewal
	// manual, or no key here); RenewAt is when it starts to warn.
	WarnOnly bool
}

// Targets lists the files a renewal of it replaces: a certificate and its
// key together (never one without the other), or the kubeconfig.
func (it *Item) Targets() []string {
	out := []string{it.CertPath}
	if it.KeyPath != "" && it.KeyPath != it.CertPath {
		out = append(out, it.KeyPath)
	}
	return out
}

// UnwritableReason checks that a renewal could replace every target of
// it now (see Replaceable for root) and says why not, with the fix; ""
// when it could.
func UnwritableReason(root string, it *Item) string {
	if it.Fresh() {
		// Nothing to replace: a new file, written apart (Transactions),
		// whose failure keeps nothing else from being written.
		return ""
	}
	err := store.Replaceable(root, it.Targets()...)
	if err == nil {
		return ""
	}
	var re *store.ReplaceError
	if errors.As(err, &re) {
		if fix := re.Fix(); fix != "" {
			return fmt.Sprintf("%v; to fix: %s", err, fix)
		}
	}
	return err.Error()
}

// RotationStuck reports whether a certificate its owner rotates (the
// kubelet's client certificate) is past the point where it must have been
// rotated.
func (s Status) RotationStuck() bool { return s.RotatedBy != "" && s.State != pki.StateOK }

// Scheduled reports whether the daemon renews the item when it is due: a
// renewable leaf or kubeconfig, or a CA it renews by itself or whose
// holders it brings along.
func (s Status) Scheduled() bool {
	if s.Kind == KindCA {
		return s.Err == nil && !s.Missing && s.Cert != nil && (!s.WarnOnly || s.HoldersOld > 0)
	}
	return s.Renewable()
}

// Inventory takes inventory and schedules every item at the current time.
func (r *Renewer) Inventory() (*Inventory, []Status, error) {
	inv, err := TakeInventory(r.opts.Dirs)
	if err != nil {
		return nil, nil, err
	}
	if r.opts.Published != nil {
		inv.addPublished(r.opts.Published())
	}
	return inv, r.Assess(inv, r.opts.Now()), nil
}

// Assess schedules every item of inv at now: CAs first, then the rest.
func (r *Renewer) Assess(inv *Inventory, now time.Time) []Status {
	var out []Status
	for _, ca := range inv.CAs {
		out = append(out, r.assessCA(inv, ca, now))
	}
	for _, it := range inv.Certs {
		s := Status{Item: it}
		if it.Issue != "" {
			// Nothing to wait for: without it the node cannot take the
			// lease with its own credentials.
			s.State, s.RenewAt = pki.StateDue, now
			s.Note = fmt.Sprintf("pkirenewd's own API identity (%s): %s; issued at the next renewal", it.identity.Subject(), it.Issue)
		} else if it.Cert != nil && it.RotatedBy != "" {
			// Not ours to renew: due means its owner failed to rotate it.
			s.RenewAt = pki.RotationDeadline(it.Cert.NotBefore, it.Cert.NotAfter)
			s.State = pki.DecideCert(now, it.Cert.NotBefore, s.RenewAt, it.Cert.NotAfter)
		} else if it.Cert != nil {
			s.RenewAt = r.opts.Policy.RenewAt(it.Name, it.Cert.NotBefore, it.Cert.NotAfter)
			s.State = pki.DecideCert(now, it.Cert.NotBefore, s.RenewAt, it.Cert.NotAfter)
			if ca := inv.CA(it.CAName); ca != nil && ca.Cert != nil && it.Renewable() {
				if s.Held = r.opts.Policy.Held(s.State, now, it.Cert.NotBefore, it.Cert.NotAfter, ca.Cert.NotAfter, r.opts.Validity); s.Held != "" {
					// Not due: nothing a renewal could fix. Looked at
					// again at its expiry (and hourly by the daemon).
					s.State, s.RenewAt = pki.StateOK, it.Cert.NotAfter
				}
			}
		}
		if s.State != pki.StateOK && it.Renewable() {
			// Looked at only when due: a few system calls per file.
			s.Unwritable = UnwritableReason("", it)
		}
		out = append(out, s)
	}
	return out
}

// Selection says which items to renew: the named ones (all renewable when
// Force is set and none are named), else the ones that are due.
type Selection struct {
	Names []string
	Force bool
	// HoldUnwritable: an item whose files cannot be replaced now
	// (Status.Unwritable) is left out of the plan and listed in its Held,
	// so that it does not stop the others. Without it such an item is
	// planned and the transaction refuses it (an operator's explicit
	// selection: all of it, or nothing).
	HoldUnwritable bool
}

// Planned is one renewal ready to be written.
type Planned struct {
	Status
	Issued  *pki.Issued
	Changes []store.Change
	// adminCopies hold a renewed CA outside the managed directories:
	// brought along after the transaction.
	adminCopies []*Holder
	// Publish, for a CA, are its copies in the cluster (HolderCluster):
	// the caller publishes Issued there after the transaction.
	Publish []*Holder
}

// Plan is the set of renewals to write.
type Plan struct {
	// Part names the transaction of a plan split by Transactions (one of
	// the Part constants); empty before the split.
	Part  string
	Items []Planned
	// Held are selected items left out because their files cannot be
	// replaced now (Selection.HoldUnwritable), each with its Unwritable
	// reason.
	Held []Status
}

// The parts of a plan written apart (Plan.Part), as errors name them.
const (
	PartIdentity       = "pkirenewd's API identity (a new file of its own)"
	PartCA             = "the CAs and their holders (a transaction of their own)"
	PartKubeadm        = "the kubeadm set (a transaction of its own)"
	PartKubeletServing = "the kubelet's serving pair (a transaction of its own)"
)

// PartOf is the part of a plan an item is written in.
func PartOf(it Planned) string {
	switch {
	case it.Fresh():
		return PartIdentity
	case it.Kind == KindCA:
		return PartCA
	case it.Name == KubeletServingName:
		return PartKubeletServing
	}
	return PartKubeadm
}

// Transactions splits the plan into the parts written apart, in order:
// the CAs with their holders (what comes after is written knowing the CA
// is), pkirenewd's own identity when it has no file yet (before the
// rest: the lease needs it, and a new file has nothing to back up; after
// the CAs, whose renewed issue it carries, so that no crash leaves it on
// an issue ca.crt does not have), the kubeadm set
// (pki dir and kubeconfigs, an existing identity among them: one
// transaction), then the kubelet's self-signed serving pair, which has
// another consumer and another directory. The failure of one never keeps
// another from being written. Empty parts are left out.
func (p *Plan) Transactions() []*Plan {
	parts := []*Plan{{Part: PartCA}, {Part: PartIdentity}, {Part: PartKubeadm}, {Part: PartKubeletServing}}
	for _, it := range p.Items {
		for _, t := range parts {
			if t.Part == PartOf(it) {
				t.Items = append(t.Items, it)
			}
		}
	}
	var out []*Plan
	for _, t := range parts {
		if len(t.Items) > 0 {
			out = append(out, t)
		}
	}
	return out
}

// split parts the plan into new files and replaced ones.
func (p *Plan) split() (fresh, replaced *Plan) {
	fresh, replaced = &Plan{Part: PartIdentity}, &Plan{Part: p.Part, Held: p.Held}
	for _, it := range p.Items {
		if it.Fresh() {
			fresh.Items = append(fresh.Items, it)
		} else {
			replaced.Items = append(replaced.Items, it)
		}
	}
	return fresh, replaced
}

// Paths lists every file the plan changes.
func (p *Plan) Paths() []string {
	var out []string
	for _, it := range p.Items {
		for _, c := range it.Changes {
			out = append(out, c.Path)
		}
	}
	return out
}

// Plan picks the items to renew, issues their replacements in memory and
// verifies each one. Any problem with a selected item fails the whole plan
// with errors that name the files: nothing is written on the strength of a
// bad input. A file that cannot be replaced now is no bad input: with
// sel.HoldUnwritable its item is held (Plan.Held) and the rest planned.
func (r *Renewer) Plan(inv *Inventory, sel Selection) (*Plan, error) {
	now := r.opts.Now()
	statuses := r.Assess(inv, now)
	byName := map[string]Status{}
	for _, s := range statuses {
		byName[s.Name] = s
	}
	var chosen, cas []Status
	var errs []error
	named := len(sel.Names) > 0 && !(len(sel.Names) == 1 && sel.Names[0] == "all")
	if named {
		for _, n := range sel.Names {
			s, ok := byName[n]
			switch {
			case !ok && slices.Contains(Names(), n):
				errs = append(errs, fmt.Errorf("%s: not present on this node", n))
			case !ok:
				errs = append(errs, fmt.Errorf("%s: unknown certificate (known: %s)", n, strings.Join(Names(), ", ")))
			case s.Kind == KindCA:
				// The daemon's due names: a CA that cannot be renewed is
				// held by planCAsOf, never in the way of the rest.
				if err := caRenewable(s); err != nil && !sel.HoldUnwritable {
					errs = append(errs, err)
					continue
				}
				cas = append(cas, s)
			default:
				if err := renewable(s); err != nil {
					errs = append(errs, err)
					continue
				}
				chosen = append(chosen, s)
			}
		}
		// The node's own API identity, when it has none yet, comes with
		// any named renewal: without it the roll that follows could not
		// take the lease.
		if s, ok := byName[IdentityName]; ok && s.Issue != "" && !slices.Contains(sel.Names, IdentityName) && renewable(s) == nil {
			chosen = append(chosen, s)
		}
	} else {
		forceAll := sel.Force || len(sel.Names) == 1
		for _, s := range statuses {
			if s.Kind == KindCA {
				if r.caDue(s) {
					cas = append(cas, s)
				}
				continue
			}
			if s.Missing || s.RotatedBy != "" || s.Unmanaged != "" {
				continue
			}
			if !forceAll && s.State == pki.StateOK {
				continue
			}
			if s.External {
				r.opts.Log.WithField("CERT", s.Name).Warn("signed by an external CA (no CA key on disk): not renewed")
				continue
			}
			if err := renewable(s); err != nil {
				errs = append(errs, err)
				continue
			}
			chosen = append(chosen, s)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var held []Status
	if sel.HoldUnwritable {
		writable := chosen[:0:0]
		for _, s := range chosen {
			// Looked at again now, named items that are not due too.
			if s.Unwritable = UnwritableReason("", s.Item); s.Unwritable != "" {
				held = append(held, s)
				continue
			}
			writable = append(writable, s)
		}
		chosen = writable
	}
	caPlanned, caHeld, err := r.planCAsOf(inv, cas, named && !sel.HoldUnwritable, sel.Force, now)
	if err != nil {
		return nil, err
	}
	held = append(held, caHeld...)
	// Leaves are issued under the renewed CAs (the same key and subject:
	// only their end differs), so that on the day a CA has ended its
	// leaves can be renewed in the same round.
	planned, errs := r.issueAll(inv.withRenewedCAs(caPlanned), chosen, now)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := inv.withCAsOf(planned, caPlanned); err != nil {
		return nil, err
	}
	return &Plan{Items: append(caPlanned, planned...), Held: held}, nil
}

// issueAll issues every chosen item, one goroutine per item bounded by the
// cores: key generation dominates a renewal (an RSA-2048 key takes ~80 ms
// here, 12 of them most of a second) and each is independent. The result
// keeps the order of chosen.
func (r *Renewer) issueAll(inv *Inventory, chosen []Status, now time.Time) ([]Planned, []error) {
	planned := make([]*Planned, len(chosen))
	errs := make([]error, len(chosen))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, s := range chosen {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			p, err := r.issue(inv, s, now)
			if err != nil {
				errs[i] = fmt.Errorf("%s (%s): %w", s.Name, s.CertPath, err)
				return
			}
			planned[i] = p
		}()
	}
	wg.Wait()
	var out []Planned
	var failed []error
	for i := range chosen {
		if errs[i] != nil {
			failed = append(failed, errs[i])
			continue
		}
		out = append(out, *planned[i])
	}
	return out, failed
}

func renewable(s Status) error {
	switch {
	case s.Err != nil:
		return s.Err
	case s.Missing:
		return fmt.Errorf("%s: %s is missing", s.Name, s.CertPath)
	case s.External:
		return fmt.Errorf("%s: signed by CA %s whose key is not on this node (external CA): renew it with that CA", s.Name, s.CAName)
	case s.RotatedBy != "":
		return fmt.Errorf("%s: rotated by the %s (%s), not by pkirenewd", s.Name, s.RotatedBy, s.CertPath)
	case s.Unmanaged != "":
		return fmt.Errorf("%s (%s): %s", s.Name, s.CertPath, s.Unmanaged)
	}
	return nil
}

func (r *Renewer) issue(inv *Inventory, s Status, now time.Time) (*Planned, error) {
	if s.SelfSigned() {
		return r.planSelfSigned(s, now)
	}
	ca := inv.CA(s.CAName)
	if ca == nil || ca.Cert == nil || ca.key.Signer == nil {
		return nil, fmt.Errorf("CA %s is not usable", s.CAName)
	}
	if s.Issue != "" {
		return r.issueIdentity(inv, s, ca, now)
	}
	issued, err := pki.Issue(pki.IssueRequest{
		Old: s.Cert, OldKey: s.key, CA: ca.Cert, CAKey: ca.key.Signer,
		Now: now, Validity: r.opts.Validity, Algorithm: r.opts.Algorithm, Rand: r.opts.Rand,
	})
	if err != nil {
		return nil, err
	}
	if err := r.verify(s.Name, s.Cert, issued, ca, now); err != nil {
		return nil, err
	}
	p := &Planned{Status: s, Issued: issued}
	switch s.Kind {
	case KindCert:
		// Key first, like kubeadm, though the transaction makes the
		// order invisible to readers.
		p.Changes = []store.Change{{Path: s.KeyPath, Data: issued.KeyPEM}, {Path: s.CertPath, Data: issued.CertPEM}}
	case KindKubeconfig:
		data, err := s.kc.WithCredentials(issued.CertPEM, issued.KeyPEM)
		if err != nil {
			return nil, err
		}
		p.Changes = []store.Change{{Path: s.CertPath, Data: data}}
	}
	return p, nil
}

// verify checks an issued certificate against what it replaces (see
// pki.Verify) and says when the CA's expiry shortened it.
func (r *Renewer) verify(name string, old *x509.Certificate, issued *pki.Issued, ca *Item, now time.Time) error {
	newKey, err := pki.ParseKeyPEM(issued.KeyPEM)
	if err != nil {
		return err
	}
	if err := pki.Verify(old, issued.Cert, newKey.Signer, ca.Cert, now); err != nil {
		return err
	}
	if issued.Capped {
		r.opts.Log.WithFields(logrus.Fields{"CERT": name, "NOT_AFTER": issued.Cert.NotAfter.Format(time.RFC3339), "CA": ca.Name}).
			Warn("validity capped at the CA's expiry: renew the CA soon")
	}
	return nil
}

// Apply writes a part of a plan (see Transactions): the kubeadm set or
// the kubelet's pair as one transaction, a new identity as a new file.
func (r *Renewer) Apply(p *Plan) (*store.Result, error) {
	st, err := r.store()
	if err != nil {
		return nil, err
	}
	// A new identity first (it has no old file for the transaction to
	// back up); the rest as one transaction.
	fresh, p := p.split()
	var res *store.Result
	if len(fresh.Items) > 0 {
		if res, err = r.create(st, fresh); err != nil || len(p.Items) == 0 {
			return res, err
		}
	}
	var changes []store.Change
	for _, it := range p.Items {
		changes = append(changes, it.Changes...)
	}
	res, err = st.Commit(changes)
	if err != nil {
		return nil, err
	}
	for _, it := range p.Items {
		l := r.opts.Log.WithFields(logrus.Fields{
			"CERT": it.Name, "PATH": it.CertPath, "ACTION": "renewed",
			"NOT_AFTER": it.Issued.Cert.NotAfter.UTC().Format(time.RFC3339),
			"SERIAL":    it.Issued.Cert.SerialNumber.Text(16),
		})
		switch {
		case it.Kind != KindCA:
			l.Info("certificate renewed")
		case it.Adopt != nil && it.Issued.Cert == it.Adopt:
			l.WithField("ACTION", "adopted").Warnf("CA adopted: another node renewed it with the same key and published it; %d files carry it now", len(it.Changes))
		case it.HoldersOld > 0 && it.Issued.Cert == it.Cert:
			l.WithField("ACTION", "holders").Infof("CA holders brought to the CA certificate on disk (%d files)", len(it.Changes))
		default:
			l.Warnf("CA renewed with its own key, subject and key identifier; %d files carry it now; every component that holds the old one is restarted before %s", len(it.Changes), it.Cert.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	if err := r.settle(p); err != nil {
		return res, err
	}
	r.updateAdminCopies(p)
	r.updateCAAdminCopies(p)
	return res, nil
}

// Restorable says whether going back to the files a renewal replaced can
// help: only when every certificate among them is still good for longer
// than its renewal window (not due, not expired, already valid). On day
// 366 the previous files are expired, and restoring them would only put
// the components that came back on the new ones onto dead credentials: the
// way out is forward.
func (r *Renewer) Restorable(backupDir string) error {
	files, err := store.BackedUp(backupDir)
	if err != nil {
		return err
	}
	now := r.opts.Now()
	for path, data := range files {
		c := certOf(data)
		if c == nil {
			continue // a key
		}
		at := r.opts.Policy.RenewAt("", c.NotBefore, c.NotAfter)
		if st := pki.DecideCert(now, c.NotBefore, at, c.NotAfter); st != pki.StateOK {
			return fmt.Errorf("the previous %s is %s (expires %s)", path, st, c.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// certOf parses a certificate file or a kubeconfig's embedded client
// certificate; nil for anything else.
func certOf(data []byte) *x509.Certificate {
	if c, err := pki.ParseCertPEM(data); err == nil {
		return c
	}
	kc, err := kubeconfig.Parse(data)
	if err != nil || kc.CertData == nil {
		return nil
	}
	c, _ := pki.ParseCertPEM(kc.CertData)
	return c
}

// Restore puts back the files of a finished renewal from its backup, as a
// transaction of its own.
func (r *Renewer) Restore(backupDir string) (*store.Result, error) {
	st, err := r.store()
	if err != nil {
		return nil, err
	}
	res, err := st.Restore(backupDir)
	if err != nil {
		return nil, err
	}
	r.opts.Log.WithFields(logrus.Fields{"ACTION": "restore", "BACKUP": backupDir}).Warn("previous files restored")
	return res, nil
}

// Recover completes or undoes a transaction a crash interrupted, then
// removes the staged files any interrupted run left behind.
func (r *Renewer) Recover() error {
	st, err := r.store()
	if err != nil {
		return err
	}
	what, id, err := st.Recover()
	if err != nil {
		return err
	}
	if what != store.RecoveryNone {
		r.opts.Log.WithFields(logrus.Fields{"ACTION": "recover", "TRANSACTION": id}).Warnf("interrupted renewal found: %s", what)
	}
	removed, err := st.RemoveStrays()
	for _, p := range removed {
		r.opts.Log.WithFields(logrus.Fields{"ACTION": "recover", "PATH": p}).Warn("removed a staged file an interrupted run left behind")
	}
	return err
}

// CertSerial is a short printable serial for logs and output.
func CertSerial(c *x509.Certificate) string { return c.SerialNumber.Text(16) }
