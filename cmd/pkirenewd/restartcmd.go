package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/pkirenewd/pkirenewd/config"
	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/reconcile"
	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/systemd"
)

// crictlConfig is where crictl keeps its runtime endpoint.
const crictlConfig = "/etc/crictl.yaml"

// connector returns how to reach the container runtime of cfg. It is
// called before anything is written, so an unreachable runtime stops a
// renewal that would need it.
func connector(cfg config.Config, log logrus.FieldLogger) func(ctx context.Context) (*cri.Restarter, func(), error) {
	return func(ctx context.Context) (*cri.Restarter, func(), error) {
		ep, err := cri.ResolveEndpoint(cfg.CRIEndpoint, crictlConfig)
		if err != nil {
			return nil, nil, err
		}
		client, err := cri.Dial(ctx, ep)
		if err != nil {
			return nil, nil, err
		}
		r := &cri.Restarter{Runtime: client, Prober: cri.HTTPProber{}, Log: log, Timeout: cfg.RestartTimeout, RunningFor: cfg.RestartRunningFor, Node: cfg.NodeName}
		return r, func() { _ = client.Close() }, nil
	}
}

// kubeletRestarter restarts the kubelet: the configured command, else
// kubelet.service through systemd's D-Bus API when systemd runs, else nil.
func kubeletRestarter(cfg config.Config) func(ctx context.Context) error {
	if cmd := cfg.KubeletRestartCommand; cmd != "" {
		return func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, "/bin/sh", "-c", cmd).CombinedOutput()
			if err != nil {
				return fmt.Errorf("kubeletRestartCommand %q: %w: %s", cmd, err, strings.TrimSpace(string(out)))
			}
			return nil
		}
	}
	if systemd.Running() {
		return func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			return systemd.RestartUnit(ctx, "kubelet.service")
		}
	}
	return nil
}

// kubeletAlive is the check that the kubelet answers, from its
// configuration file; nil when there is none (nothing to ask).
func kubeletAlive(cfg config.Config) func(ctx context.Context) error {
	if cfg.KubeletConfig == "" {
		return nil
	}
	return func(ctx context.Context) error {
		url, ok, err := reconcile.KubeletHealthzURL(cfg.KubeletConfig)
		if err != nil || !ok {
			return err
		}
		return reconcile.KubeletAlive(ctx, url)
	}
}

func (o *options) restarter(ctx context.Context) (*cri.Restarter, func(), error) {
	return connector(o.cfg, o.log)(ctx)
}

// selectManifests decides the restart of the named components (kubeadm's
// four when none is named); a name with no manifest at all is an error
// listing what there is.
func selectManifests(loaded cri.Manifests, names []string) (cri.Decision, error) {
	if len(names) == 0 {
		names = loaded.Kubeadm()
	}
	d := loaded.Select(names)
	if len(d.Missing) == 0 {
		return d, nil
	}
	var have, unusable []string
	for _, m := range loaded.Usable {
		have = append(have, m.Component)
	}
	for _, p := range loaded.Problems {
		unusable = append(unusable, p.Path)
	}
	msg := fmt.Sprintf("no static pod manifest for %q (have: %s", d.Missing[0], strings.Join(have, ", "))
	if len(unusable) > 0 {
		msg += "; unusable: " + strings.Join(unusable, ", ")
	}
	return d, errors.New(msg + ")")
}

func printRoll(o *options, results []cri.Result) {
	for _, r := range results {
		if r.Err != nil {
			fmt.Fprintf(o.stdout, "FAILED    %-24s %v\n", r.Component, r.Err)
			continue
		}
		serial := ""
		if r.Serial != "" {
			serial = ", serving serial " + r.Serial
		}
		fmt.Fprintf(o.stdout, "restarted %-24s healthy %.1fs after stop (sandbox %.13s -> %.13s%s)\n", r.Component, r.Took.Seconds(), r.OldSandbox, r.NewSandbox, serial)
	}
}

func newRestartCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "restart [COMPONENT...]",
		Short: "Health-checked rolling restart of the static control-plane pods",
		Long: `Restart static control-plane pods through the CRI, like 'crictl stopp' and
'crictl rmp', one at a time in the order etcd, kube-apiserver,
kube-controller-manager, kube-scheduler (all of those with a manifest when
none is named), then other named static pods (kube-vip ...) by name. Each
must be recreated by the kubelet and answer its manifest's probe (and serve
the certificate on disk, where visible) within restartTimeout before the
next is touched; the first failure stops the roll. A pod without an HTTP
probe must run restartRunningFor without a restart instead. A named
component whose manifest cannot be used is not touched and fails the
command, after the others.

Exit status: 0 all healthy, 1 failed.`,
		ValidArgs: []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"},
		RunE: func(cmd *cobra.Command, names []string) error {
			ctx := cmd.Context()
			manifests, err := cri.LoadManifests(o.cfg.ManifestsDir)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			d, err := selectManifests(manifests, names)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			cri.WarnProblems(o.log, d.Warnings)
			r, done, err := o.restarter(ctx)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			defer done()
			if alive := kubeletAlive(o.cfg); alive != nil {
				if err := alive(ctx); err != nil {
					return &exitError{code: 1, err: fmt.Errorf("nothing was stopped: %w", err)}
				}
			}
			unlock, err := renew.Lock(o.cfg.StateDir, o.log)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			defer unlock()
			if coord := coordination(o.cfg, o.log, nil); coord != nil {
				gate, release, err := coord(ctx, false)
				if err != nil {
					return &exitError{code: 1, err: err}
				}
				defer release()
				r.Gate = gate
			}
			results, err := r.Roll(ctx, d.Restart, nil)
			printRoll(o, results)
			if err := errors.Join(err, cri.BlockedError(d.Blocked)); err != nil {
				return &exitError{code: 1, err: err}
			}
			return nil
		},
	}
}

// restartAfterRenewal rolls the components that use the renewed files,
// under the cluster lease; on failure the previous files come back from
// the backup and the failed component is restarted on them. What is owed
// is recorded first, so a roll cut short is finished by the daemon.
func restartAfterRenewal(ctx context.Context, o *options, r *cri.Restarter, rn *renew.Renewer, manifests cri.Manifests, plan *renew.Plan, res *renew.Result) error {
	affected := manifests.MustRestart(plan.Paths())
	kubelet := reconcile.RenewsKubeletConf(plan)
	if len(affected) == 0 {
		cri.WarnProblems(o.log, manifests.Problems)
		fmt.Fprintln(o.stdout, "No static pod uses the renewed files.")
		if err := reconcile.KubeletAfterRenewal(ctx, plan, kubeletRestarter(o.cfg), o.log, nil); err != nil {
			return err
		}
		if kubelet && kubeletRestarter(o.cfg) != nil {
			fmt.Fprintln(o.stdout, "restarted kubelet                  for its renewed kubelet.conf")
		}
		return nil
	}
	owed := &renew.PendingRestart{Components: affected, Kubelet: kubelet, BackupDir: res.BackupDir, Recovering: reconcile.Expired(plan), Since: o.now()}
	prev, err := renew.LoadPending(o.cfg.StateDir)
	if err != nil {
		return err
	}
	owed = prev.Merge(owed, cri.Order)
	if err := renew.SavePending(o.cfg.StateDir, owed); err != nil {
		return fmt.Errorf("recording the restarts owed: %w", err)
	}
	e := &reconcile.NodeEngine{
		Renewer: rn, StateDir: o.cfg.StateDir, ManifestsDir: o.cfg.ManifestsDir, Log: o.log,
		RestartKubelet: kubeletRestarter(o.cfg), Coordinate: coordination(o.cfg, o.log, nil), Now: o.now,
	}
	fmt.Fprintf(o.stdout, "Restarting %s ...\n", strings.Join(owed.Components, ", "))
	start := time.Now()
	results, err := e.RollOwed(ctx, r, manifests, owed)
	printRoll(o, results)
	if err != nil {
		var rerr *cri.RollError
		switch {
		case errors.As(err, &rerr) && rerr.Retried != nil:
			fmt.Fprintf(o.stdout, "The previous files were restored from %s and %s restarted on them.\n", res.BackupDir, rerr.Component)
		default:
			fmt.Fprintf(o.stdout, "The restarts still owed are recorded in %s; `pkirenewd run` (or renew --restart) finishes them.\n", o.cfg.StateDir)
		}
		return err
	}
	fmt.Fprintf(o.stdout, "All %d restarted components are healthy (%.1fs).\n", len(results), time.Since(start).Seconds())
	if owed.Kubelet && kubeletRestarter(o.cfg) != nil {
		fmt.Fprintln(o.stdout, "restarted kubelet                  for its renewed kubelet.conf")
	}
	return nil
}
