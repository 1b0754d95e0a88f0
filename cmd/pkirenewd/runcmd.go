package main

import (
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/pkirenewd/pkirenewd/config"
	"github.com/pkirenewd/pkirenewd/daemon"
	"github.com/pkirenewd/pkirenewd/reconcile"
	"github.com/pkirenewd/pkirenewd/systemd"
)

func newRunCmd(o *options) *cobra.Command {
	var logFormat string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon (what the systemd unit starts)",
		Long: `Keep the node's certificates renewed: sleep until the earliest renewal is
due (re-checking at least hourly), renew what is due as one transaction,
restart the static pods that use the renewed files, and take inventory
again whenever the pki, kubeconfig or manifests directories change.

Under systemd (Type=notify) it reports READY, STATUS and WATCHDOG and logs
to the journal with fields (CERT, PATH, NOT_AFTER, COMPONENT, ACTION ...).
SIGHUP reloads the configuration; SIGTERM finishes the work in hand.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := systemd.SetupLogging(o.log, logFormat, o.stderr); err != nil {
				return &exitError{code: 2, err: err}
			}
			o.warnDeprecated()
			return runDaemon(cmd, o)
		},
	}
	cmd.Flags().StringVar(&logFormat, "log-format", "auto", "auto (the journal under systemd, else text), text or json")
	return cmd
}

// nodeEngine builds the daemon's engine from a configuration.
func (o *options) nodeEngine(cfg config.Config, metrics *daemon.PromMetrics) (daemon.Engine, error) {
	checkWriteSet(o.log, cfg, metrics)
	logIdentity(cfg, o.log)
	saved := o.cfg
	o.cfg = cfg
	defer func() { o.cfg = saved }()
	r, err := o.renewer(true)
	if err != nil {
		return nil, err
	}
	e := o.node(cfg, r, cfg.RestartComponents, o.heartbeat)
	e.LastResortBefore = cfg.LastResortBefore
	if metrics != nil {
		e.Restarts = metrics
	}
	return e, nil
}

// The daemon's recovery at start waits for another pkirenewd process with
// a bound and says whom it waits for.
var _ daemon.WaitingRecoverer = (*reconcile.NodeEngine)(nil)

func runDaemon(cmd *cobra.Command, o *options) error {
	ctx := cmd.Context()
	log := o.log
	// The one clock of the daemon: the loop, its metrics, its watch,
	// its heartbeat and the engine read and wait on it.
	clk := o.clock
	var metrics *daemon.PromMetrics
	var listener *daemon.MetricsListener
	optionalChanged := make(chan struct{}, 1)
	if o.cfg.MetricsAddress != "" {
		// Metrics are optional: an address another process holds is a
		// warning and a retry every minute, never an exit (under
		// systemd that would be a restart loop that never renews).
		metrics = daemon.NewPromMetrics()
		metrics.Clock = clk
		listener = &daemon.MetricsListener{Metrics: metrics, Addr: o.cfg.MetricsAddress, Clock: clk, Log: log, Changed: optionalChanged}
		listener.Start(ctx)
	}
	if wd := systemd.WatchdogInterval(); wd > 0 {
		// A roll can wait minutes for the lease, healthy etcd peers or
		// a component in CrashLoopBackOff: those waits are progress,
		// not a hung loop, so they keep the watchdog fed.
		n := systemd.Notifier{Log: log}
		var mu sync.Mutex
		var last time.Time
		o.heartbeat = func() {
			mu.Lock()
			defer mu.Unlock()
			if clk.Since(last) >= wd {
				last = clk.Now()
				n.Notify("WATCHDOG=1")
			}
		}
	}
	engine, err := o.nodeEngine(o.cfg, metrics)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	opts := daemon.Options{
		Engine: engine, Clock: clk, Notify: systemd.Notifier{Log: log}, Log: log,
		WatchdogInterval: systemd.WatchdogInterval(),
		OptionalChanged:  optionalChanged,
	}
	if metrics != nil {
		opts.Metrics = metrics
		opts.Optional = append(opts.Optional, listener)
	}
	if w, err := daemon.Watch(o.cfg.PKIDir, filepath.Join(o.cfg.PKIDir, "etcd"), o.cfg.KubeconfigDir, o.cfg.ManifestsDir); err != nil {
		log.WithError(err).Warn("cannot watch the directories: relying on the hourly re-check")
	} else {
		defer w.Close()
		w.SetClock(clk)
		opts.Events, opts.WatchErrors = w.Events, w.Errors
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				select {
				case reload <- struct{}{}:
				default:
				}
			}
		}
	}()
	opts.Reload = reload
	opts.Reconfigure = func() (daemon.Engine, error) {
		cfg, err := o.loadConfig(cmd)
		if err != nil {
			return nil, err
		}
		e, err := o.nodeEngine(cfg, metrics)
		if err != nil {
			return nil, err
		}
		o.cfg = cfg
		return e, nil
	}
	if err := daemon.Run(ctx, opts); err != nil {
		return &exitError{code: 1, err: err}
	}
	return nil
}
