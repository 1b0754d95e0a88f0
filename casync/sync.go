package casync

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"

	"github.com/pkirenewd/pkirenewd/internal/fsread"
	"github.com/pkirenewd/pkirenewd/kubeconfig"
	"github.com/pkirenewd/pkirenewd/store"
)

// restartOwed, in the state dir, records that the files were written and
// the kubelet not yet restarted on them: a sync that stopped in between
// (a crash, a kubelet that did not come back) leaves the files current,
// and the next run must still restart it.
const restartOwed = "ca-sync-kubelet-restart-owed"

// DefaultHealthTimeout bounds the wait for the restarted kubelet's health.
const DefaultHealthTimeout = 2 * time.Minute

// Syncer brings one worker's CA holders to the published certificate.
type Syncer struct {
	// CACertPath is ca.crt; KubeconfigPath the kubelet's kubeconfig,
	// whose server is asked and whose credentials report.
	CACertPath, KubeconfigPath string
	// StateDir holds the lock, the journal and the backups.
	StateDir string
	// DryRun decides and says, and writes nothing (no file, no restart,
	// no annotation).
	DryRun bool

	// Fetch returns cluster-info's kubeconfig from server, the server
	// verified against local (FetchClusterInfo).
	Fetch func(ctx context.Context, server string, local *x509.Certificate) ([]byte, error)
	// Store commits the changes; nil: a store.Store over the two files'
	// directories.
	Store store.Transactions
	// RestartKubelet restarts the kubelet (nil: it cannot be, which
	// fails a sync that wrote files, after the write).
	RestartKubelet func(ctx context.Context) error
	// KubeletHealthy asks the kubelet's healthz once.
	KubeletHealthy func(ctx context.Context) error
	// Report sets the node's AnnotationCA (ReportNode); nil: not reported.
	Report func(ctx context.Context, fingerprint string) (node string, err error)

	Clock         clock.WithTicker
	Log           logrus.FieldLogger
	HealthTimeout time.Duration
}

// Result is what a sync did.
type Result struct {
	Plan *Plan
	// BackupDir holds the previous files (empty: nothing written).
	BackupDir string
	// Restarted: the kubelet was restarted and answered healthy.
	Restarted bool
	// Node is the Node the CA was reported on ("" when not).
	Node string
}

// Sync fetches the published CA certificate and, if Accept passes,
// writes it, restarts the kubelet and reports. A refusal writes nothing.
func (s *Syncer) Sync(ctx context.Context) (*Result, error) {
	if s.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		s.Log = l
	}
	st, err := s.store()
	if err != nil {
		return nil, err
	}
	if !s.DryRun {
		unlock, err := store.LockWait(ctx, s.StateDir, s.Log, store.LockOptions{Clock: s.clock()})
		if err != nil {
			return nil, err
		}
		defer unlock()
		// An interrupted sync is finished or undone before files are read.
		if what, _, err := st.Recover(); err != nil {
			return nil, fmt.Errorf("recover an interrupted transaction: %w", err)
		} else if what != store.RecoveryNone {
			s.Log.WithField("recovery", what).Warn("an interrupted transaction was recovered")
		}
	}
	plan, err := s.decide(ctx)
	if err != nil {
		return nil, err
	}
	res := &Result{Plan: plan}
	if s.DryRun {
		return res, nil
	}
	if !plan.Current() {
		if err := s.owe(); err != nil {
			return res, err
		}
		r, err := st.Commit(plan.Changes)
		if err != nil {
			_ = os.Remove(s.owedPath())
			return res, err
		}
		res.BackupDir = r.BackupDir
		s.Log.WithFields(logrus.Fields{"backup": r.BackupDir, "clusters": plan.Clusters}).Info("CA certificate written")
	}
	if res.Restarted, err = s.restartIfOwed(ctx); err != nil {
		return res, err
	}
	if s.Report != nil {
		if res.Node, err = s.Report(ctx, Fingerprint(plan.Published)); err != nil {
			return res, fmt.Errorf("the CA certificate is current but could not be reported: %w", err)
		}
	}
	return res, nil
}

// decide reads the holders, fetches the published certificate from the
// kubeconfig's server and plans.
func (s *Syncer) decide(ctx context.Context) (*Plan, error) {
	f := Files{CACertPath: s.CACertPath, KubeconfigPath: s.KubeconfigPath}
	var err error
	if f.CACert, err = fsread.Regular(s.CACertPath, true); err != nil {
		return nil, err
	}
	if f.Kubeconfig, err = fsread.Regular(s.KubeconfigPath, true); err != nil {
		return nil, err
	}
	kc, err := kubeconfig.Parse(f.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.KubeconfigPath, err)
	}
	if kc.Server == "" {
		return nil, fmt.Errorf("%s: cluster %q has no server", s.KubeconfigPath, kc.ClusterName)
	}
	local, err := LocalCA(f.CACert)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.CACertPath, err)
	}
	info, err := s.Fetch(ctx, kc.Server, local)
	if err != nil {
		return nil, err
	}
	published, err := PublishedCA(info)
	if err != nil {
		return nil, err
	}
	plan, err := Decide(f, published)
	if err != nil {
		return nil, fmt.Errorf("refused, nothing written: %w", err)
	}
	return plan, nil
}

func (s *Syncer) store() (store.Transactions, error) {
	if s.Store != nil {
		return s.Store, nil
	}
	roots, err := store.NewRoots(filepath.Dir(s.CACertPath), filepath.Dir(s.KubeconfigPath))
	if err != nil {
		return nil, err
	}
	return &store.Store{StateDir: s.StateDir, Roots: roots, Now: s.clock().Now}, nil
}

func (s *Syncer) owedPath() string { return filepath.Join(s.StateDir, restartOwed) }

// owe records the restart before the files are written.
func (s *Syncer) owe() error {
	if err := os.WriteFile(s.owedPath(), []byte("kubelet\n"), 0o600); err != nil {
		return fmt.Errorf("record the kubelet's restart: %w", err)
	}
	return nil
}

// restartIfOwed restarts the kubelet when the files were written (now or
// by a sync that stopped before the restart) and waits for its health.
func (s *Syncer) restartIfOwed(ctx context.Context) (bool, error) {
	if _, err := os.Stat(s.owedPath()); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if s.RestartKubelet == nil {
		return false, errors.New("the CA certificate was written but the kubelet cannot be restarted here (no systemd, no kubeletRestartCommand): restart it by hand")
	}
	s.Log.WithField("COMPONENT", "kubelet").Info("restarting the kubelet for the new CA certificate")
	if err := s.RestartKubelet(ctx); err != nil {
		return false, fmt.Errorf("the CA certificate was written but restarting the kubelet failed: %w", err)
	}
	if err := s.waitHealthy(ctx); err != nil {
		return false, fmt.Errorf("the CA certificate was written and the kubelet restarted, but %w", err)
	}
	if err := os.Remove(s.owedPath()); err != nil {
		return true, err
	}
	return true, nil
}

// waitHealthy asks the kubelet's healthz every second until it answers
// or HealthTimeout has passed.
func (s *Syncer) waitHealthy(ctx context.Context) error {
	if s.KubeletHealthy == nil {
		return nil
	}
	bound := s.HealthTimeout
	if bound == 0 {
		bound = DefaultHealthTimeout
	}
	clk := s.clock()
	deadline := clk.Now().Add(bound)
	for {
		err := s.KubeletHealthy(ctx)
		if err == nil {
			return nil
		}
		if !clk.Now().Before(deadline) {
			return fmt.Errorf("it is not healthy after %s: %w", bound, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-clk.After(time.Second):
		}
	}
}

func (s *Syncer) clock() clock.WithTicker {
	if s.Clock == nil {
		return clock.RealClock{}
	}
	return s.Clock
}
