package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/renew"
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
	// Now stamps the record of owed restarts (default time.Now).
	Now      func() time.Time
	Restarts RestartRecorder
}

// RenewsKubeletConf reports whether a plan replaces kubelet.conf.
func RenewsKubeletConf(p *renew.Plan) bool {
	for _, it := range p.Items {
		if it.Name == "kubelet.conf" {
			return true
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
	unlock, err := renew.Lock(e.StateDir, e.Log)
	if err != nil {
		return err
	}
	defer unlock()
	return e.Renewer.Recover()
}

// Inventory implements Engine.
func (e *NodeEngine) Inventory() ([]renew.Status, error) {
	_, st, err := e.Renewer.Inventory()
	return st, err
}

func (e *NodeEngine) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// Pending implements Engine: restarts a renewal still owes (cut short by
// a crash, a stop, the lease or the etcd guard).
func (e *NodeEngine) Pending() []string {
	if e.Connect == nil {
		return nil
	}
	p, err := renew.LoadPending(e.StateDir)
	if err != nil {
		e.Log.WithError(err).Error("reading the owed restarts")
		return nil
	}
	if p.Empty() {
		return nil
	}
	out := append([]string{}, p.Components...)
	if p.Kubelet {
		out = append(out, "kubelet")
	}
	return out
}

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

// Renew implements Engine. Everything that can be checked (the
// manifests directory, the runtime) is checked before a byte is written; a
// manifest that cannot be used stops nothing but the restart of its own
// component, and only when that is needed. Restarts owed by an earlier run
// are done too, and with no names only they are.
func (e *NodeEngine) Renew(ctx context.Context, names []string) ([]string, error) {
	var (
		manifests cri.Manifests
		rst       *cri.Restarter
	)
	if e.Connect != nil {
		var err error
		if manifests, err = cri.LoadManifests(e.ManifestsDir); err != nil {
			return nil, fmt.Errorf("nothing was written: %w", err)
		}
		var done func()
		if rst, done, err = e.Connect(ctx); err != nil {
			return nil, fmt.Errorf("nothing was written: %w", err)
		}
		defer done()
	}
	unlock, err := renew.Lock(e.StateDir, e.Log)
	if err != nil {
		return nil, err
	}
	defer unlock()
	var owed *renew.PendingRestart
	if rst != nil {
		if owed, err = renew.LoadPending(e.StateDir); err != nil {
			return nil, fmt.Errorf("nothing was written: %w", err)
		}
	}
	var written []string
	if len(names) > 0 {
		inv, _, err := e.Renewer.Inventory()
		if err != nil {
			return nil, err
		}
		plan, err := e.Renewer.Plan(inv, renew.Selection{Names: names})
		if err != nil {
			return nil, fmt.Errorf("nothing was written: %w", err)
		}
		res, err := e.Renewer.Apply(plan)
		if err != nil {
			return nil, err
		}
		// The configured paths, as the file watcher reports them.
		written = plan.Paths()
		if rst == nil {
			return written, KubeletAfterRenewal(ctx, plan, e.RestartKubelet, e.Log, e.Restarts)
		}
		owed = owed.Merge(&renew.PendingRestart{
			Components: manifests.MustRestart(plan.Paths()), Kubelet: RenewsKubeletConf(plan),
			BackupDir: res.BackupDir, Recovering: Expired(plan), Since: e.now(),
		}, cri.Order)
	}
	if owed.Empty() {
		cri.WarnProblems(e.Log, manifests.Problems)
		return written, nil
	}
	if err := renew.SavePending(e.StateDir, owed); err != nil {
		return written, fmt.Errorf("recording the restarts owed: %w", err)
	}
	_, err = e.RollOwed(ctx, rst, manifests, owed)
	return written, err
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
			_, err := e.Renewer.Restore(owed.BackupDir)
			return err
		}
	}
	results, err := rst.Roll(ctx, sel, restore)
	if e.Restarts != nil {
		for _, r := range results {
			e.Restarts.Restart(r.Component, r.Err)
		}
	}
	if err != nil {
		var rerr *cri.RollError
		if errors.As(err, &rerr) && rerr.Retried != nil {
			// The previous files are back: nothing is owed for them.
			backup := owed.BackupDir
			save(nil)
			return results, fmt.Errorf("%w (previous files restored from %s)", err, backup)
		}
		return results, errors.Join(err, blocked)
	}
	if owed.Kubelet {
		if err := kubeletRestart(ctx, e.RestartKubelet, e.Log, e.Restarts); err != nil {
			return results, errors.Join(err, blocked)
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
