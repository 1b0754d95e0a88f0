package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/pkirenewd/pkirenewd/cluster"
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

// node builds the orchestrator for cfg: renewing only, or renewing and
// restarting (the runtime, the kubelet, the lease and the etcd guard).
func (o *options) node(cfg config.Config, r *renew.Renewer, restarts bool, heartbeat func()) *reconcile.NodeEngine {
	e := &reconcile.NodeEngine{Renewer: r, StateDir: cfg.StateDir, ManifestsDir: cfg.ManifestsDir, Log: o.log, Clock: o.clock,
		KubeletServing: o.kubeletServingCheck()}
	observing(e, cfg)
	// One per engine: the lease, the Events and the CA board share its
	// bootstrap.
	access := apiAccess(cfg, o.log)
	e.PublishCA = publishCA(cfg, access)
	// With restarts off the components are still looked at: what is
	// stale is reported, never restarted.
	e.ConnectToLook = connector(cfg, o.log)
	if restarts {
		e.Connect = connector(cfg, o.log)
		e.KubeletAlive = kubeletAlive(cfg)
		e.RestartKubelet = kubeletRestarter(cfg)
		e.Coordinate = coordination(cfg, o.log, heartbeat, access)
		e.Heartbeat = heartbeat
		if sink := eventSink(cfg, o.log, access); sink != nil {
			e.Events = sink
		}
	}
	return e
}

// flushEvents gives a one-shot command's Events a moment to reach the API
// before the process exits.
func flushEvents(e *reconcile.NodeEngine) {
	if s, ok := e.Events.(*cluster.EventSink); ok {
		s.Flush(5 * time.Second)
	}
}

// kubeletAlive is the check that the kubelet answers before any static
// pod is stopped. It never switches off: the kubelet's configuration is
// the configured file, else the running kubelet's --config, else the
// kubelet's defaults.
func kubeletAlive(cfg config.Config) func(ctx context.Context) error {
	return func(ctx context.Context) error { return reconcile.KubeletGate(ctx, cfg.KubeletConfig) }
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
			manifests, err := cri.LoadManifests(o.cfg.ManifestsDir)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			if _, err := selectManifests(manifests, names); err != nil {
				return &exitError{code: 1, err: err}
			}
			if len(names) == 0 {
				names = manifests.Kubeadm()
			}
			r, err := o.renewer(false)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			e := o.node(o.cfg, r, true, nil)
			results, err := e.Restart(cmd.Context(), names)
			flushEvents(e)
			printRoll(o, results)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			return nil
		},
	}
}

// assumeMemoryLifeEnv shortens the assumed life of every in-memory
// certificate (kube-apiserver's loopback certificate, the self-signed
// serving certificates of kube-controller-manager and kube-scheduler), so
// that a test sees their planned restart without waiting a year.
const assumeMemoryLifeEnv = "PKIRENEWD_TEST_MEMORY_CERT_LIFE"

// observing sets what the engine's observation of running components
// needs from cfg: the restart policy and the in-memory certificate margin.
func observing(e *reconcile.NodeEngine, cfg config.Config) {
	e.RestartPolicy = cfg.RestartPolicy
	e.MemoryMargin = cfg.RenewBefore
	if v := os.Getenv(assumeMemoryLifeEnv); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			e.AssumeMemoryLife = d
		}
	}
}
