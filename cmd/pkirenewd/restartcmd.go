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
	"github.com/pkirenewd/pkirenewd/daemon"
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
		r := &cri.Restarter{Runtime: client, Prober: cri.HTTPProber{}, Log: log, Timeout: cfg.RestartTimeout}
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

func (o *options) restarter(ctx context.Context) (*cri.Restarter, func(), error) {
	return connector(o.cfg, o.log)(ctx)
}

// selectManifests picks the named components (all when none) in restart
// order; an unknown name is an error listing what there is.
func selectManifests(all []*cri.Manifest, names []string) ([]*cri.Manifest, error) {
	by := map[string]*cri.Manifest{}
	var have []string
	for _, m := range all {
		by[m.Component] = m
		have = append(have, m.Component)
	}
	if len(names) == 0 {
		names = have
	}
	var out []*cri.Manifest
	for _, n := range cri.Order(names) {
		m, ok := by[n]
		if !ok {
			return nil, fmt.Errorf("no static pod manifest for %q (have: %s)", n, strings.Join(have, ", "))
		}
		out = append(out, m)
	}
	return out, nil
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
none is named). Each must be recreated by the kubelet and answer its
manifest's probe (and serve the certificate on disk, where visible) within
restartTimeout before the next is touched; the first failure stops the roll.

Exit status: 0 all healthy, 1 failed.`,
		ValidArgs: []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"},
		RunE: func(cmd *cobra.Command, names []string) error {
			ctx := cmd.Context()
			manifests, err := cri.LoadManifests(o.cfg.ManifestsDir)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			sel, err := selectManifests(manifests, names)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			r, done, err := o.restarter(ctx)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			defer done()
			unlock, err := renew.Lock(o.cfg.StateDir, o.log)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			defer unlock()
			results, err := r.Roll(ctx, sel, nil)
			printRoll(o, results)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			return nil
		},
	}
}

// restartAfterRenewal rolls the components that use the renewed files; on
// failure the previous files come back from the backup and the failed
// component is restarted on them.
func restartAfterRenewal(ctx context.Context, o *options, r *cri.Restarter, rn *renew.Renewer, manifests []*cri.Manifest, plan *renew.Plan, res *renew.Result) error {
	affected := cri.Affected(manifests, plan.Paths())
	kubelet := func() error {
		if err := daemon.KubeletAfterRenewal(ctx, plan, kubeletRestarter(o.cfg), o.log, nil); err != nil {
			return err
		}
		if daemon.RenewsKubeletConf(plan) && kubeletRestarter(o.cfg) != nil {
			fmt.Fprintln(o.stdout, "restarted kubelet                  for its renewed kubelet.conf")
		}
		return nil
	}
	if len(affected) == 0 {
		fmt.Fprintln(o.stdout, "No static pod uses the renewed files.")
		return kubelet()
	}
	sel, err := selectManifests(manifests, affected)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.stdout, "Restarting %s ...\n", strings.Join(affected, ", "))
	start := time.Now()
	results, err := r.Roll(ctx, sel, func() error {
		_, err := rn.Restore(res.BackupDir)
		return err
	})
	printRoll(o, results)
	if err != nil {
		var rerr *cri.RollError
		if errors.As(err, &rerr) && rerr.Retried != nil {
			fmt.Fprintf(o.stdout, "The previous files were restored from %s and %s restarted on them.\n", res.BackupDir, rerr.Component)
		}
		return err
	}
	fmt.Fprintf(o.stdout, "All %d restarted components are healthy (%.1fs).\n", len(affected), time.Since(start).Seconds())
	return kubelet()
}
