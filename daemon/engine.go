package daemon

import (
	"context"
	"errors"
	"fmt"

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
	Log            logrus.FieldLogger
	Restarts       RestartRecorder
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

var _ Engine = (*NodeEngine)(nil)

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

// Renew implements Engine. Everything that can be checked (the
// manifests, the runtime) is checked before a byte is written.
func (e *NodeEngine) Renew(ctx context.Context, names []string) ([]string, error) {
	var (
		manifests []*cri.Manifest
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
	written := plan.Paths()
	if rst == nil {
		return written, KubeletAfterRenewal(ctx, plan, e.RestartKubelet, e.Log, e.Restarts)
	}
	affected := cri.Affected(manifests, plan.Paths())
	var sel []*cri.Manifest
	for _, c := range affected {
		for _, m := range manifests {
			if m.Component == c {
				sel = append(sel, m)
			}
		}
	}
	results, err := rst.Roll(ctx, sel, func() error {
		_, err := e.Renewer.Restore(res.BackupDir)
		return err
	})
	if e.Restarts != nil {
		for _, r := range results {
			e.Restarts.Restart(r.Component, r.Err)
		}
	}
	if err != nil {
		var rerr *cri.RollError
		if errors.As(err, &rerr) && rerr.Retried != nil {
			return written, fmt.Errorf("%w (previous files restored from %s)", err, res.BackupDir)
		}
		return written, err
	}
	return written, KubeletAfterRenewal(ctx, plan, e.RestartKubelet, e.Log, e.Restarts)
}
