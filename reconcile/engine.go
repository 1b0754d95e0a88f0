package reconcile

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"

	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/store"
)

// critical is the journal priority (crit) of the lines an operator must
// act on; the systemd journal hook honours a PRIORITY field.
const critical = 2

// EventRecorder tells the cluster what this node did (Kubernetes Events);
// it never blocks and never fails a renewal. nil is allowed.
type EventRecorder interface {
	Event(reason, action, note string, warning bool)
}

// Event reasons (as `kubectl get events -n kube-system` shows them).
const (
	ReasonRenewed    = "CertificatesRenewed"
	ReasonRestarted  = "ComponentRestarted"
	ReasonRolledBack = "RolledBack"
	ReasonFailed     = "RenewalFailed"
	ReasonRecovered  = "ControlPlaneRecovered"
)

// RestartRecorder counts restarts for the metrics; nil is allowed.
type RestartRecorder interface {
	Restart(component string, err error)
}

// NodeEngine is the Engine of a real node: the renewal engine, then the
// health-checked rolling restart of what uses the renewed files.
type NodeEngine struct {
	Renewer      *renew.Renewer
	StateDir     string
	ManifestsDir string
	// Connect reaches the container runtime; nil disables restarts
	// (the renewed files are then picked up at the next restart).
	Connect func(ctx context.Context) (*cri.Restarter, func(), error)
	// ConnectToLook reaches the runtime only to look at what runs, when
	// restarts are off (Connect nil): stale components are then
	// reported, never restarted.
	ConnectToLook func(ctx context.Context) (*cri.Restarter, func(), error)
	// RestartKubelet restarts the kubelet after its embedded kubelet.conf
	// credentials were renewed (it reads them only at start); nil: the
	// need is logged.
	RestartKubelet func(ctx context.Context) error
	// Coordinate, when set, is called before restarting anything: it
	// waits for the cluster lease (recovering: the renewal replaced
	// expired certificates) and returns the gate each component passes
	// and the release.
	Coordinate func(ctx context.Context, recovering bool) (gate func(context.Context, string) error, release func(), err error)
	Log        logrus.FieldLogger
	// Heartbeat is called during long waits (the systemd watchdog).
	Heartbeat func()
	// Clock is the one clock the engine reads and waits on: the record
	// of owed restarts, holds, reloads, the kubelet (default: the real
	// clock; tests move a fake one).
	Clock    clock.WithTicker
	Restarts RestartRecorder
	// KubeletStart tells when the kubelet reading kubelet.conf started
	// (default: /proc).
	KubeletStart func(kubeletConf string) (time.Time, bool, error)
	// KubeletAlive, when set, must pass before any pod is stopped.
	KubeletAlive func(ctx context.Context) error
	// LastResortBefore: when restarts are impossible, a due renewal goes
	// ahead without them once a certificate has less than this left.
	// Zero: never.
	LastResortBefore time.Duration
	// Events, when set, receives what the node did.
	Events EventRecorder
	// PublishCA tells the cluster (the other control-plane nodes, the
	// workers) about a CA this node renewed or adopted, where it carries
	// an older issue of it; nil: not published.
	PublishCA func(ctx context.Context, ca string, cert *x509.Certificate) error
	// RestartPolicy is cri.PolicyNeeded or cri.PolicyAll ("" is all).
	RestartPolicy string
	// MemoryMargin: a component is restarted when less than this is left
	// of a certificate it keeps in memory (default 30 days).
	MemoryMargin time.Duration
	// AssumeMemoryLife, when positive, replaces the life of every
	// in-memory certificate (a test setting).
	AssumeMemoryLife time.Duration
	// ReloadBound, when positive, replaces how long a component is given
	// to take up its renewed certificate (a test setting; by default the
	// reload table's bound and a grace).
	ReloadBound time.Duration
	// KubeletServing, when set, makes the kubelet serve its renewed
	// self-signed serving certificate after each round (see
	// kubeletserving.go).
	KubeletServing *KubeletServingCheck

	// lookAgain is when the last observation can next tell more: a
	// changed certificate whose reload may still be under way.
	lookAgain time.Time
	// seen ages time stamps ahead of the clock (see Sightings).
	seen     *Sightings
	seenOnce sync.Once
}

// LookAgainAt tells the daemon when to observe again, before its usual
// wake, because a component may still be reloading a changed certificate
// (zero: no such reason).
func (e *NodeEngine) LookAgainAt() time.Time { return e.lookAgain }

func (e *NodeEngine) policy() string {
	if e.RestartPolicy == "" {
		return cri.PolicyAll
	}
	return e.RestartPolicy
}

func (e *NodeEngine) memoryMargin() time.Duration {
	if e.MemoryMargin <= 0 {
		return 30 * 24 * time.Hour
	}
	return e.MemoryMargin
}

func (e *NodeEngine) event(reason, action, note string, warning bool) {
	if e.Events != nil {
		e.Events.Event(reason, action, note, warning)
	}
}

// RenewsKubeletConf reports whether a plan replaces kubelet.conf: its
// embedded credentials, or the CA it embeds (a CA renewal), which the
// kubelet also reads only at start.
func RenewsKubeletConf(p *renew.Plan) bool {
	for _, it := range p.Items {
		if it.Name == "kubelet.conf" {
			return true
		}
		for _, c := range it.Changes {
			if it.Kind == renew.KindCA && filepath.Base(c.Path) == "kubelet.conf" {
				return true
			}
		}
	}
	return false
}

// KubeletAfterRenewal restarts the kubelet when its kubeconfig was
// renewed, and records the outcome.
func KubeletAfterRenewal(ctx context.Context, p *renew.Plan, restart func(context.Context) error, log logrus.FieldLogger, rec RestartRecorder) error {
	if !RenewsKubeletConf(p) {
		return nil
	}
	return kubeletRestart(ctx, restart, log, rec)
}

func kubeletRestart(ctx context.Context, restart func(context.Context) error, log logrus.FieldLogger, rec RestartRecorder) error {
	if restart == nil {
		log.WithFields(logrus.Fields{"COMPONENT": "kubelet", "CERT": "kubelet.conf"}).Warn("kubelet.conf renewed: the kubelet reads it only at start; restart the kubelet (set kubeletRestartCommand to let pkirenewd do it)")
		return nil
	}
	log.WithFields(logrus.Fields{"COMPONENT": "kubelet", "ACTION": "restart"}).Info("restarting the kubelet for its renewed kubelet.conf")
	err := restart(ctx)
	if rec != nil {
		rec.Restart("kubelet", err)
	}
	if err != nil {
		return fmt.Errorf("kubelet.conf was renewed but restarting the kubelet failed: %w", err)
	}
	log.WithFields(logrus.Fields{"COMPONENT": "kubelet", "ACTION": "restarted"}).Info("kubelet restarted")
	return nil
}

// Recover implements Engine.
func (e *NodeEngine) Recover() error {
	return e.RecoverWaiting(context.Background(), nil)
}

// RecoverWaiting is Recover telling waiting (when set) whom it waits for
// while another pkirenewd process holds the lock (the daemon's
// WaitingRecoverer).
func (e *NodeEngine) RecoverWaiting(ctx context.Context, waiting func(pid, lock string)) error {
	unlock, err := e.lockWaiting(ctx, waiting)
	if err != nil {
		return err
	}
	defer unlock()
	return e.Renewer.Recover()
}

// lock takes the state dir's lock. Another pkirenewd process (an
// operator's renew or restart) is waited for with store.LockWait's bound,
// and the wait keeps the watchdog fed: it is progress, not a hang.
func (e *NodeEngine) lock(ctx context.Context) (func(), error) {
	return e.lockWaiting(ctx, nil)
}

func (e *NodeEngine) lockWaiting(ctx context.Context, waiting func(pid, lock string)) (func(), error) {
	return store.LockWait(ctx, e.StateDir, e.Log, store.LockOptions{Waiting: func(pid, lock string) {
		if waiting != nil {
			waiting(pid, lock)
		}
		if e.Heartbeat != nil {
			e.Heartbeat()
		}
	}})
}

// Inventory implements Engine.
func (e *NodeEngine) Inventory() ([]renew.Status, error) {
	_, st, err := e.Renewer.Inventory()
	return st, err
}

func (e *NodeEngine) now() time.Time { return e.clock().Now() }

func (e *NodeEngine) clock() clock.WithTicker {
	if e.Clock == nil {
		return clock.RealClock{}
	}
	return e.Clock
}

// Look is what one look at the node's running components found, for the
// daemon.
type Look struct {
	// Owed are the restarts the daemon is to do (restarts on):
	// components in order, then "kubelet".
	Owed []string
	// Stale run on credentials older than the files and nothing here
	// will restart them (restartComponents: false): reported only.
	Stale []StaleComponent
	// Unseen could not be observed: whether they are stale is unknown.
	Unseen []Unseen
}

// Look implements the daemon's Engine: the restarts owed, observed —
// components running on credentials older than the files on disk,
// whoever wrote them (a renewal cut short, a lost record, an operator's
// `kubeadm certs renew`) — and recorded (what a renewal noted before its
// roll). With restarts off the components are observed all the same and
// what is stale is reported, not owed. A component that cannot be seen is
// named, never taken as fine.
func (e *NodeEngine) Look() Look {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	obs := e.Observe(ctx)
	if len(obs.Unseen) > 0 {
		e.Log.WithError(Blind(obs.Unseen)).Warn("going by the record of owed restarts for what cannot be seen")
	}
	if e.Connect == nil {
		return Look{Stale: obs.Stale, Unseen: obs.Unseen}
	}
	p, err := renew.LoadPending(e.StateDir)
	if err != nil {
		e.Log.WithError(err).Error("reading the owed restarts")
	}
	p = p.Merge(owedFor(obs.Stale, e.now()), cri.Order)
	out := Look{Unseen: obs.Unseen}
	if !p.Empty() {
		out.Owed = append(out.Owed, p.Components...)
	}
	if _, _, serving := e.KubeletServesStale(ctx); (!p.Empty() && p.Kubelet) || serving {
		out.Owed = append(out.Owed, Kubelet)
	}
	return out
}

// TransactionPending reports whether an interrupted renewal is recorded
// (the next Renew completes or undoes it first).
func (e *NodeEngine) TransactionPending() bool {
	p, err := store.TransactionPending(e.StateDir)
	return err == nil && p
}

// Observe looks at the running components: which run on credentials
// older than the files on disk, and which cannot be told. It asks the
// runtime through Connect, or ConnectToLook when restarts are off; with
// neither there is nothing to ask and nothing is claimed.
func (e *NodeEngine) Observe(ctx context.Context) Observation {
	if e.Connect == nil && e.ConnectToLook == nil {
		return Observation{}
	}
	return e.observe(ctx, nil)
}

// observe asks the runtime (rst, or a new connection) what runs and
// compares it with the files. One component's error is that component's:
// the others are still observed. What stops the look as a whole (no
// runtime, no inventory) makes every component with a manifest unseen.
func (e *NodeEngine) observe(ctx context.Context, rst *cri.Restarter) Observation {
	ms, err := cri.LoadManifests(e.ManifestsDir)
	if err != nil {
		// No manifests directory: not a control-plane node, nothing runs
		// here that pkirenewd would judge.
		return Observation{}
	}
	var components []string
	for _, m := range ms.Usable {
		components = append(components, m.Component)
	}
	if len(components) == 0 {
		return Observation{}
	}
	if rst == nil {
		connect := e.Connect
		if connect == nil {
			connect = e.ConnectToLook
		}
		r, done, err := connect(ctx)
		if err != nil {
			return Observation{Unseen: blindFor(components, fmt.Errorf("the container runtime cannot be asked: %w", err))}
		}
		defer done()
		rst = r
	}
	inv, _, err := e.Renewer.Inventory()
	if err != nil {
		return Observation{Unseen: blindFor(components, err)}
	}
	files, kubeletConf := CredentialFiles(inv)
	if e.RestartKubelet == nil && e.KubeletStart == nil {
		// How this node runs its kubelet is unknown (no systemd unit,
		// no kubeletRestartCommand): a process named kubelet may not be
		// this node's (a test host, a nested node), so it is not judged.
		kubeletConf = ""
	}
	e.lookAgain = time.Time{}
	obs := Observer{Runtime: rst.Runtime, Node: rst.Node, KubeletStart: e.KubeletStart, Prober: rst.Prober, lookAgain: &e.lookAgain}
	uses, served := UsesUnder(ms, files, kubeletConf, e.policy())
	unseen := map[string]error{}
	stale, err := obs.Stale(ctx, uses)
	err = errors.Join(addUnseen(unseen, err))
	late, lerr := obs.notReloaded(ctx, served, e.now())
	mem, merr := obs.inMemory(ctx, ms, e.memoryMargin(), e.AssumeMemoryLife, e.now())
	if err = errors.Join(err, addUnseen(unseen, lerr), addUnseen(unseen, merr)); err != nil {
		return Observation{Unseen: blindFor(components, err)}
	}
	return Observation{Stale: mergeStale(stale, late, mem), Unseen: unseenList(unseen)}
}

// owedFor turns observed stale components into owed restarts.
func owedFor(stale []StaleComponent, now time.Time) *renew.PendingRestart {
	p := &renew.PendingRestart{Since: now}
	for _, s := range stale {
		if s.Component == Kubelet {
			p.Kubelet = true
			continue
		}
		p.Components = append(p.Components, s.Component)
	}
	p.Components = cri.Order(p.Components)
	if p.Empty() {
		return nil
	}
	return p
}

func (e *NodeEngine) logStale(stale []StaleComponent) {
	for _, s := range stale {
		if s.Reason != "" {
			e.Log.WithFields(logrus.Fields{"COMPONENT": s.Component, "PATH": s.File, "STARTED": fmtTime(s.StartedAt)}).
				Warnf("%s must be restarted: %s", s.Component, s.Reason)
			continue
		}
		e.Log.WithFields(logrus.Fields{"COMPONENT": s.Component, "PATH": s.File, "STARTED": fmtTime(s.StartedAt), "CHANGED": fmtTime(s.Changed)}).
			Warnf("%s runs on old credentials: it started before %s changed", s.Component, s.File)
	}
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// Expired reports whether a plan replaces certificates that had already
// expired or were not valid yet: the control plane may be down (day 366).
func Expired(p *renew.Plan) bool {
	for _, it := range p.Items {
		if it.State.Unusable() {
			return true
		}
	}
	return false
}

// Outcome is what Converge did, for the CLI to print.
type Outcome struct {
	// Plan is what the renewal wrote (nil when it wrote nothing; its
	// Held what it held). Result is the kubeadm set's transaction, else
	// the kubelet serving pair's; Results every transaction written.
	Plan    *renew.Plan
	Result  *store.Result
	Results []*store.Result
	// Owed is what the roll set out to restart (nil: nothing).
	Owed *renew.PendingRestart
	// Rolled are the component restarts, in order.
	Rolled []cri.Result
}

// Renew implements the daemon's Engine: Converge with the due names (none:
// the owed restarts only), returning the files written.
func (e *NodeEngine) Renew(ctx context.Context, names []string) ([]string, error) {
	var sel *renew.Selection
	if len(names) > 0 {
		// What is due: an item that cannot be written is held, the
		// rest renewed.
		sel = &renew.Selection{Names: names, HoldUnwritable: true}
	}
	out, err := e.Converge(ctx, sel)
	if out == nil || out.Plan == nil {
		return nil, err
	}
	// The configured paths, as the file watcher reports them.
	return out.Plan.Paths(), err
}

// Converge brings the node where it should be, the one path the daemon and
// every CLI command that renews take: an interrupted transaction is
// completed or undone; the selected renewals (sel nil: none) are written
// as one transaction; and every restart owed — recorded, observed stale,
// or caused by this renewal — is done under the lease, health-checked,
// and looked at again. Everything a restart needs (the manifests
// directory, the runtime, a live kubelet) is checked before a byte is
// written; a manifest that cannot be used stops only its own component's
// restart. When restarts are impossible a renewal still goes ahead once a
// certificate has less than LastResortBefore left: renewed files with
// restarts owed are never worse than expired ones.
func (e *NodeEngine) Converge(ctx context.Context, sel *renew.Selection) (out *Outcome, err error) {
	defer func() {
		// A hold is not a failure: nothing was tried. Each item held
		// for its files had an Event of its own.
		if err != nil && !errors.Is(err, ErrUnsettled) {
			if rest := withoutHeldItems(err); rest != nil {
				e.event(ReasonFailed, "Renew", rest.Error(), true)
			}
		}
	}()
	var (
		manifests cri.Manifests
		rst       *cri.Restarter
		blocked   error
	)
	if e.Connect != nil {
		var done func()
		manifests, rst, done, blocked = e.prepareRestarts(ctx)
		if blocked == nil {
			defer done()
		} else if sel == nil || !e.lastResort(*sel) {
			return e.servingAlone(ctx, sel, fmt.Errorf("nothing was written: %w", errors.Join(blocked, unusable(manifests))))
		}
	}
	// A hold holds whatever the mode: with restarts off or impossible
	// kubeadm's staging directory still says it is upgrading the node.
	if err := e.held(ctx, rst, manifests, "nothing was written or restarted"); err != nil {
		return nil, err
	}
	unlock, err := e.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// A transaction left behind by anyone (a killed `pkirenewd renew`, a
	// finish that failed) is completed or undone before anything else.
	if err := e.Renewer.Recover(); err != nil {
		return nil, fmt.Errorf("nothing was written: recovering an interrupted renewal: %w", err)
	}
	store.Failpoint("converge:recovered")
	out, err = e.converge(ctx, sel, manifests, rst, blocked)
	return out, errors.Join(err, e.kubeletServes(ctx, out))
}

// servingAlone renews the kubelet's serving pair, when the selection
// holds it, while what blocks the static pods' restarts (the runtime, the
// kubelet's health, the manifests) keeps the kubeadm set waiting: the pair
// needs no static pod restarted (the kubelet reloads it, or is restarted
// through systemd), so nothing unrelated may stop it. blocked is returned
// all the same, for the rest.
func (e *NodeEngine) servingAlone(ctx context.Context, sel *renew.Selection, blocked error) (*Outcome, error) {
	if sel == nil || e.KubeletServing == nil || !e.selectsServing(*sel) {
		return nil, blocked
	}
	if err := e.held(ctx, nil, cri.Manifests{}, "nothing was written or restarted"); err != nil {
		return nil, err
	}
	unlock, err := e.lock(ctx)
	if err != nil {
		return nil, errors.Join(blocked, err)
	}
	defer unlock()
	if err := e.Renewer.Recover(); err != nil {
		return nil, errors.Join(blocked, fmt.Errorf("recovering an interrupted renewal: %w", err))
	}
	one := *sel
	one.Names = []string{renew.KubeletServingName}
	a, err := e.apply(one)
	out := &Outcome{}
	if a != nil {
		out.Plan = a.plan
		e.eventRenewed(a.plan)
	}
	e.Log.WithFields(logrus.Fields{"CERT": renew.KubeletServingName, "ACTION": "serving-alone"}).WithError(blocked).
		Warn("the static pods cannot be restarted now: only the kubelet's serving pair, which needs none of them, is renewed")
	return out, errors.Join(blocked, err, e.kubeletServes(ctx, out))
}

// selectsServing reports whether sel renews the kubelet's serving pair:
// named, or due (or forced) with no names.
func (e *NodeEngine) selectsServing(sel renew.Selection) bool {
	if len(sel.Names) > 0 {
		return slices.Contains(sel.Names, renew.KubeletServingName) || slices.Contains(sel.Names, "all")
	}
	_, statuses, err := e.Renewer.Inventory()
	if err != nil {
		return false
	}
	for _, s := range statuses {
		if s.Name == renew.KubeletServingName && s.Renewable() && (sel.Force || s.State != pki.StateOK) {
			return true
		}
	}
	return false
}

// converge is Converge under the lock, after recovery. What could not be
// written (an item held, a transaction refused) does not stop what was:
// its restarts are done, and the error names what was not written.
func (e *NodeEngine) converge(ctx context.Context, sel *renew.Selection, manifests cri.Manifests, rst *cri.Restarter, blocked error) (_ *Outcome, err error) {
	if blocked != nil {
		return e.renewWithoutRestarts(*sel, blocked)
	}
	out := &Outcome{}
	var owed *renew.PendingRestart
	if rst != nil {
		if owed, err = renew.LoadPending(e.StateDir); err != nil {
			return nil, fmt.Errorf("nothing was written: %w", err)
		}
		// Observation adds restarts; it must never keep a due renewal
		// from being written (an ambiguous pod, an odd manifest): for
		// what cannot be seen the record alone says what is owed, as in
		// Look.
		obs := e.observe(ctx, rst)
		if len(obs.Unseen) > 0 {
			e.Log.WithError(Blind(obs.Unseen)).Warn("going by the record of owed restarts for what cannot be seen")
		}
		e.logStale(obs.Stale)
		owed = owed.Merge(owedFor(obs.Stale, e.now()), cri.Order)
	}
	if sel != nil {
		a, notWritten := e.apply(*sel)
		if a == nil || (len(a.plan.Items) == 0 && notWritten != nil && withoutHeldItems(notWritten) != nil) {
			return nil, notWritten
		}
		defer func() { err = errors.Join(err, notWritten) }()
		out.Plan, out.Result, out.Results = a.plan, a.result(), a.results
		store.Failpoint("converge:committed")
		e.eventRenewed(out.Plan)
		notWritten = errors.Join(notWritten, e.publishCAs(ctx, out.Plan))
		if len(out.Plan.Items) > 0 && rst == nil {
			return out, KubeletAfterRenewal(ctx, out.Plan, e.kubeletRestarter(), e.Log, e.Restarts)
		}
		if set := kubeadmSet(out.Plan); len(set.Items) > 0 {
			rp := e.restartPlan(manifests, set)
			rp.Restart = cri.Order(append(rp.Restart, e.awaitReloads(ctx, rst, rp.Checks)...))
			owed = owed.Merge(e.owedAfter(rp, set, a.kubeadm), cri.Order)
		}
	}
	if owed.Empty() {
		cri.WarnProblems(e.Log, manifests.Problems)
		return out, nil
	}
	out.Owed = owed
	if err := renew.SavePending(e.StateDir, owed); err != nil {
		return out, fmt.Errorf("recording the restarts owed: %w", err)
	}
	store.Failpoint("converge:owed-recorded")
	rst.Step = store.Failpoint
	if out.Rolled, err = e.RollOwed(ctx, rst, manifests, owed); err != nil {
		return out, err
	}
	store.Failpoint("converge:rolled")
	if err := e.stillStale(ctx, rst); err != nil {
		return out, err
	}
	if owed.Recovering {
		e.event(ReasonRecovered, "Recover", "certificates had expired: renewed, and every component restarted on them", false)
	}
	return out, nil
}

// publishCAs publishes every CA of the plan right after its transaction,
// before the roll: the other nodes adopt it and the workers take it up
// while this node restarts. A failure is the round's (counted, retried):
// until it is published, check shows the cluster's copy as an old holder.
func (e *NodeEngine) publishCAs(ctx context.Context, p *renew.Plan) error {
	if e.PublishCA == nil {
		return nil
	}
	var errs []error
	for _, it := range p.Items {
		if it.Kind != renew.KindCA || it.Issued == nil {
			continue
		}
		l := e.Log.WithFields(logrus.Fields{"CERT": it.Name, "SERIAL": renew.CertSerial(it.Issued.Cert)})
		if err := e.PublishCA(ctx, it.Name, it.Issued.Cert); err != nil {
			l.WithError(err).Warn("could not publish the CA certificate for the other nodes: retried at the next round")
			errs = append(errs, fmt.Errorf("publishing CA %s: %w", it.Name, err))
			continue
		}
		l.WithField("ACTION", "published").Info("CA certificate published for the other nodes (where the cluster carried an older issue)")
	}
	return errors.Join(errs...)
}

// Restart is the health-checked rolling restart of the named components
// alone (`pkirenewd restart`): the same preconditions, lock, recovery,
// lease and record as Converge, so a restart cut short is finished by the
// daemon; there is no renewal, so nothing to roll back to.
func (e *NodeEngine) Restart(ctx context.Context, components []string) ([]cri.Result, error) {
	manifests, rst, done, err := e.prepareRestarts(ctx)
	if err != nil {
		return nil, fmt.Errorf("nothing was stopped: %w", errors.Join(err, unusable(manifests)))
	}
	defer done()
	if err := e.held(ctx, rst, manifests, "nothing was stopped"); err != nil {
		return nil, err
	}
	unlock, err := e.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := e.Renewer.Recover(); err != nil {
		return nil, fmt.Errorf("nothing was stopped: recovering an interrupted renewal: %w", err)
	}
	prev, err := renew.LoadPending(e.StateDir)
	if err != nil {
		return nil, err
	}
	owed := &renew.PendingRestart{Components: cri.Order(components), Since: e.now()}
	// Restarts owed before stay owed, with their backup; these are added.
	record := prev.Merge(owed, cri.Order)
	if err := renew.SavePending(e.StateDir, record); err != nil {
		return nil, fmt.Errorf("recording the restarts owed: %w", err)
	}
	results, err := e.RollOwed(ctx, rst, manifests, owed)
	if !prev.Empty() {
		// The roll kept the record of the named ones only; what was
		// owed before still is, less what was just restarted.
		for _, r := range results {
			if r.Err == nil {
				prev = prev.Done(r.Component)
			}
		}
		left, _ := renew.LoadPending(e.StateDir)
		if serr := renew.SavePending(e.StateDir, prev.Merge(left, cri.Order)); serr != nil {
			return results, errors.Join(err, fmt.Errorf("recording the restarts owed: %w", serr))
		}
	}
	return results, err
}

// unusable names the manifests that could not be used, so that an error
// about something else does not hide them.
func unusable(ms cri.Manifests) error {
	var errs []error
	for _, p := range ms.Problems {
		errs = append(errs, p)
	}
	return errors.Join(errs...)
}

func (e *NodeEngine) eventRenewed(p *renew.Plan) {
	if len(p.Items) == 0 {
		return
	}
	var names []string
	for _, it := range p.Items {
		names = append(names, it.Name)
	}
	e.event(ReasonRenewed, "Renew", fmt.Sprintf("renewed %d: %s; new expiry %s", len(names), strings.Join(names, ", "),
		p.Items[0].Issued.Cert.NotAfter.UTC().Format(time.RFC3339)), false)
}

// prepareRestarts checks what a roll needs: the manifests directory, the
// runtime, and a kubelet alive to recreate what is stopped.
func (e *NodeEngine) prepareRestarts(ctx context.Context) (cri.Manifests, *cri.Restarter, func(), error) {
	manifests, err := cri.LoadManifests(e.ManifestsDir)
	if err != nil {
		return manifests, nil, nil, err
	}
	rst, done, err := e.Connect(ctx)
	if err != nil {
		return manifests, nil, nil, err
	}
	if e.KubeletAlive != nil {
		if err := e.KubeletAlive(ctx); err != nil {
			done()
			return manifests, nil, nil, err
		}
	}
	return manifests, rst, done, nil
}

// applied is what apply wrote.
type applied struct {
	// plan holds the items of the transactions that were written, and
	// the items held.
	plan *renew.Plan
	// kubeadm is the kubeadm set's transaction (nil: it wrote nothing),
	// the one a failed restart may go back to; results every one written.
	kubeadm *store.Result
	results []*store.Result
}

func (a *applied) result() *store.Result {
	if a.kubeadm != nil || len(a.results) == 0 {
		return a.kubeadm
	}
	return a.results[0]
}

// apply plans the selected renewals and writes them as transactions of
// their own: the kubeadm set, then the kubelet's serving pair (see
// renew.Plan.Transactions). One that fails does not keep the other from
// being written; an item held for its files (sel.HoldUnwritable) is
// reported and left out. The error names everything not written; nil
// applied: nothing could be planned, nothing was written.
func (e *NodeEngine) apply(sel renew.Selection) (*applied, error) {
	inv, _, err := e.Renewer.Inventory()
	if err != nil {
		return nil, err
	}
	plan, err := e.Renewer.Plan(inv, sel)
	if err != nil {
		return nil, fmt.Errorf("nothing was written:\n%w", err)
	}
	a := &applied{plan: &renew.Plan{Held: plan.Held}}
	var errs []error
	if held := e.reportHeld(plan.Held); held != nil {
		errs = append(errs, held)
	}
	txs := plan.Transactions()
	for _, tx := range txs {
		res, err := e.Renewer.Apply(tx)
		if err != nil && len(txs) > 1 {
			err = fmt.Errorf("%s: %w", tx.Part, err)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		a.plan.Items = append(a.plan.Items, tx.Items...)
		a.results = append(a.results, res)
		if tx.Part == renew.PartCA || tx.Part == renew.PartKubeadm {
			a.kubeadm = res
		}
	}
	return a, errors.Join(errs...)
}

// kubeadmSet is the part of p that the static pods use: the CAs and the
// kubeadm set, not the kubelet's serving pair, whose follow-up is the
// kubelet's (kubeletServes), nor a new identity, which no pod uses.
func kubeadmSet(p *renew.Plan) *renew.Plan {
	set := &renew.Plan{}
	for _, it := range p.Items {
		if part := renew.PartOf(it); part == renew.PartCA || part == renew.PartKubeadm {
			set.Items = append(set.Items, it)
		}
	}
	return set
}

// HeldItemsError names the due items held because their files cannot be
// replaced now: a failure (the metric counts it, check exits non-zero),
// though the rest was renewed.
type HeldItemsError struct {
	Items []renew.Status
}

func (h *HeldItemsError) Error() string {
	var b strings.Builder
	for i, it := range h.Items {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "%s: held, not renewed: %s", it.Name, it.Unwritable)
	}
	return b.String()
}

// reportHeld says, for each item held for its files, which file, why and
// what fixes it: an Error line and a RenewalFailed Event each.
func (e *NodeEngine) reportHeld(held []renew.Status) error {
	if len(held) == 0 {
		return nil
	}
	for _, it := range held {
		e.Log.WithFields(logrus.Fields{"CERT": it.Name, "PATH": it.CertPath, "ACTION": "held"}).
			Errorf("%s: held, not renewed: %s; the other due items are renewed without it, and it is tried again at the next attempt", it.Name, it.Unwritable)
		e.event(ReasonFailed, "Renew", fmt.Sprintf("%s: held, not renewed: %s", it.Name, it.Unwritable), true)
	}
	return &HeldItemsError{Items: held}
}

// withoutHeldItems is err less the HeldItemsError parts (already reported
// item by item); nil when nothing else is left.
func withoutHeldItems(err error) error {
	var h *HeldItemsError
	if errors.As(err, &h) && err == error(h) {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return err
	}
	var rest []error
	for _, x := range j.Unwrap() {
		if r := withoutHeldItems(x); r != nil {
			rest = append(rest, r)
		}
	}
	return errors.Join(rest...)
}

// restartPlan is what the renewal of plan needs restarted under the
// restart policy (all of kubeadm's components when no manifest could be
// read at all), each reason logged.
func (e *NodeEngine) restartPlan(manifests cri.Manifests, plan *renew.Plan) cri.RestartPlan {
	var changes []cri.Change
	for _, it := range plan.Items {
		var old time.Time
		if it.Cert != nil {
			old = it.Cert.NotAfter
		}
		for _, c := range it.Changes {
			changes = append(changes, cri.Change{Path: c.Path, OldNotAfter: old})
		}
	}
	rp := manifests.PlanRestarts(changes, e.policy(), e.now())
	if len(manifests.Usable) == 0 && len(manifests.Problems) == 0 {
		rp = cri.RestartPlan{Restart: cri.Order([]string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"})}
	}
	for _, c := range rp.Restart {
		if why := rp.Reasons[c]; why != "" {
			e.Log.WithFields(logrus.Fields{"COMPONENT": c, "POLICY": e.policy()}).Infof("%s will be restarted: %s", c, why)
		}
	}
	return rp
}

// owedAfter is what a renewal owes: the components of the restart plan,
// the kubelet for an embedded kubelet.conf, and where the previous files
// are.
func (e *NodeEngine) owedAfter(rp cri.RestartPlan, plan *renew.Plan, res *store.Result) *renew.PendingRestart {
	return &renew.PendingRestart{
		Components: rp.Restart, Kubelet: RenewsKubeletConf(plan),
		BackupDir: res.BackupDir, Recovering: Expired(plan), Since: e.now(),
	}
}

// lastResort reports whether a due item of names has less than
// LastResortBefore left (or has expired): then waiting for restarts to be
// possible could carry it to its expiry.
func (e *NodeEngine) lastResort(sel renew.Selection) bool {
	if e.LastResortBefore <= 0 {
		return false
	}
	// From the schedule alone: planning would issue every key just to
	// read an expiry.
	_, statuses, err := e.Renewer.Inventory()
	if err != nil {
		return false
	}
	named := map[string]bool{}
	for _, n := range sel.Names {
		named[n] = true
	}
	for _, s := range statuses {
		selected := named[s.Name] || (len(sel.Names) == 0 && (sel.Force || s.State != pki.StateOK))
		if selected && s.Renewable() && s.Cert != nil && s.Cert.NotAfter.Sub(e.now()) < e.LastResortBefore {
			return true
		}
	}
	return false
}

// renewWithoutRestarts is the last resort: the files are renewed, the
// restarts recorded as owed (the daemon does them once it can), and both
// said at crit.
func (e *NodeEngine) renewWithoutRestarts(sel renew.Selection, why error) (*Outcome, error) {
	e.Log.WithFields(logrus.Fields{"ACTION": "last-resort", "CERT": strings.Join(sel.Names, ","), "PRIORITY": critical}).WithError(why).
		Errorf("LAST RESORT: renewing without restarting anything (restarts are impossible and a certificate has less than %s left); the components keep the credentials they loaded until restarted", e.LastResortBefore)
	a, notWritten := e.apply(sel)
	if a == nil {
		return nil, notWritten
	}
	plan, res := a.plan, a.result()
	if len(plan.Items) == 0 {
		return &Outcome{Plan: plan}, notWritten
	}
	e.eventRenewed(plan)
	manifests, _ := cri.LoadManifests(e.ManifestsDir)
	owed, err := renew.LoadPending(e.StateDir)
	if err != nil {
		owed = nil
	}
	// The reloads cannot be watched now; a component that did not reload
	// is seen stale by a later look at what it serves.
	if set := kubeadmSet(plan); len(set.Items) > 0 {
		owed = owed.Merge(e.owedAfter(e.restartPlan(manifests, set), set, a.kubeadm), cri.Order)
	}
	out := &Outcome{Plan: plan, Result: res, Results: a.results, Owed: owed}
	if err := renew.SavePending(e.StateDir, owed); err != nil {
		return out, errors.Join(fmt.Errorf("recording the restarts owed: %w", err), notWritten)
	}
	var components []string
	if owed != nil {
		components = owed.Components
	}
	return out, errors.Join(fmt.Errorf("renewed without restarting (%w); restarts owed: %s", why, strings.Join(components, ", ")), notWritten)
}

// stillStale looks again after a roll: only a component that is healthy
// and no longer older than its files is done. One that is still stale
// (a kubelet nobody can restart, a restart that did not take) is an error
// naming it, so the loop backs off and says so instead of calling it done.
func (e *NodeEngine) stillStale(ctx context.Context, rst *cri.Restarter) error {
	obs := e.observe(ctx, rst)
	if len(obs.Unseen) > 0 && ctx.Err() != nil {
		// Stopped (SIGTERM) after the roll, before the look: the roll is
		// done, and the next start looks again.
		e.Log.WithError(Blind(obs.Unseen)).Info("stopped before looking at the components again after the roll: the next start does")
		return nil
	}
	stale := obs.Stale
	var errs []error
	if len(obs.Unseen) > 0 {
		errs = append(errs, Blind(obs.Unseen))
	}
	for _, s := range stale {
		hint := ""
		if s.Component == Kubelet && e.RestartKubelet == nil {
			hint = " (set kubeletRestartCommand, or restart the kubelet)"
		}
		if s.Reason != "" {
			errs = append(errs, fmt.Errorf("%s must still be restarted: %s", s.Component, s.Reason))
			continue
		}
		errs = append(errs, fmt.Errorf("%s still runs on credentials older than %s%s", s.Component, s.File, hint))
	}
	return errors.Join(errs...)
}

// RollOwed does the restarts owed (already recorded in the state dir),
// shrinking the record as each component comes back healthy: under the
// cluster lease, each component through the gate, then the kubelet. A
// component owed whose manifest cannot be used stays owed and is an error
// naming the file, after the others were handled. The caller holds the
// state dir lock.
func (e *NodeEngine) RollOwed(ctx context.Context, rst *cri.Restarter, manifests cri.Manifests, owed *renew.PendingRestart) ([]cri.Result, error) {
	d := manifests.Select(owed.Components)
	cri.WarnProblems(e.Log, d.Warnings)
	for _, c := range d.Missing {
		e.Log.WithField("COMPONENT", c).Warn("no static pod manifest any more: not restarting it")
		owed = owed.Done(c)
	}
	sel := d.Restart
	blocked := cri.BlockedError(d.Blocked)
	save := func(p *renew.PendingRestart) {
		owed = p
		if err := renew.SavePending(e.StateDir, p); err != nil {
			e.Log.WithError(err).Error("recording the restarts owed")
		}
	}
	if len(sel) > 0 && e.Coordinate != nil {
		gate, release, err := e.Coordinate(ctx, owed.Recovering)
		if err != nil {
			return nil, fmt.Errorf("restart of %s postponed: %w", strings.Join(owed.Components, ", "), err)
		}
		defer release()
		rst.Gate = gate
	}
	rst.Restarted = func(c string) { save(owed.Done(c)) }
	if e.Heartbeat != nil {
		rst.Heartbeat = e.Heartbeat
	}
	var restore func() error
	if owed.BackupDir != "" {
		restore = func() error {
			// Looked at only when a component failed: forward, not
			// back, when the previous files are no better.
			if err := e.Renewer.Restorable(owed.BackupDir); err != nil {
				e.Log.WithFields(logrus.Fields{"ACTION": "no-rollback", "BACKUP": owed.BackupDir, "PRIORITY": critical}).WithError(err).
					Error("NOT ROLLING BACK: the previous files are no better than the renewed ones; keeping the renewed files, the failed component stays owed")
				return fmt.Errorf("%w (%v)", cri.ErrNoRollback, err)
			}
			_, err := e.Renewer.Restore(owed.BackupDir)
			return err
		}
	}
	results, err := rst.Roll(ctx, sel, restore)
	for _, r := range results {
		if e.Restarts != nil {
			e.Restarts.Restart(r.Component, r.Err)
		}
		if r.Err == nil {
			e.event(ReasonRestarted, "Restart", fmt.Sprintf("%s restarted and healthy in %s", r.Component, r.Took.Round(time.Millisecond)), false)
		}
	}
	if err != nil {
		var rerr *cri.RollError
		if errors.As(err, &rerr) && rerr.Retried != nil {
			// The previous files are back: nothing is owed for them.
			backup := owed.BackupDir
			e.event(ReasonRolledBack, "Rollback", fmt.Sprintf("%s did not come back healthy: previous files restored from %s", rerr.Component, backup), true)
			save(nil)
			return results, fmt.Errorf("%w (previous files restored from %s)", err, backup)
		}
		return results, errors.Join(err, blocked)
	}
	if owed.Kubelet {
		if err := kubeletRestart(ctx, e.kubeletRestarter(), e.Log, e.Restarts); err != nil {
			return results, errors.Join(err, blocked)
		}
		if e.RestartKubelet != nil {
			e.event(ReasonRestarted, "Restart", "kubelet restarted for its renewed kubelet.conf", false)
		}
	}
	if blocked != nil {
		// Still owed: fixing the manifest lets the next round do it.
		left := *owed
		left.Kubelet = false
		save(&left)
		return results, blocked
	}
	save(nil)
	return results, nil
}
