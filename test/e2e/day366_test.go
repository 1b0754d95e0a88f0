//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/renew"
)

// rollFinished fails until the daemon has restarted the kubelet and owes
// no restart.
func rollFinished(d *daemon) error {
	if !kubeletRestartLogged(d.Events()) {
		return errors.New("pkirenewd has not restarted the kubelet yet")
	}
	if _, err := os.Stat(filepath.Join(d.stateDir, "pending-restart.json")); err == nil {
		return errors.New("restarts still owed")
	}
	return nil
}

// maxNotAfter is the latest expiry of the renewable items.
func maxNotAfter(t *testing.T) time.Time {
	t.Helper()
	inv, err := renew.TakeInventory(renew.Dirs{PKIDir: PKIDir, KubeconfigDir: KubernetesDir})
	if err != nil {
		t.Fatal(err)
	}
	var latest time.Time
	for _, it := range inv.Certs {
		if it.Cert != nil && it.CAName != "" && it.Cert.NotAfter.After(latest) {
			latest = it.Cert.NotAfter
		}
	}
	return latest
}

// Day 366: every leaf certificate of the control plane has expired — the
// apiserver cannot reach etcd, no client gets through — and pkirenewd
// alone brings it back: it renews, finds the API unable to answer, says
// loudly that it is recovering without the lease, restarts etcd and the
// apiserver, takes the lease once the API answers, and finishes the roll.
func TestDay366ExpiredControlPlaneIsHealed(t *testing.T) {
	cp := expiredControlPlane(t)
	ctx := cp.Context()
	old := leafSerials(t)

	start := time.Now()
	d := startDaemon(t, cp, "--validity", "24h", "--restart-timeout", "6m",
		"--kubelet-restart-command", cp.KubeletRestartCommand())
	var healedAt time.Time
	err := cp.Poll(12*time.Minute, time.Second, "the expired control plane healed", func(ctx context.Context) error {
		if d.exited() {
			return fmt.Errorf("pkirenewd exited: %v", d.Cmd.ProcessState)
		}
		if err := cp.Healthy(ctx); err != nil {
			return err
		}
		if healedAt.IsZero() {
			healedAt = time.Now()
		}
		return rollFinished(d)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.stop(t); err != nil {
		t.Error(err)
	}
	evs := d.Events()
	// Two paths are right, and which one a run takes depends on timing:
	// etcd and the apiserver read their renewed certificates for new
	// connections, so the API may answer again before pkirenewd asks for
	// the lease (taken as usual), or not (restarts begin without it, and the
	// lease is taken once the API answers). Either way the expiry is said at
	// crit and the lease is held and released.
	var loud, alone, leased, released bool
	var order []string
	for _, e := range evs {
		crit := e.Str("level") == "error" && fmt.Sprint(e.Fields["PRIORITY"]) == "2"
		switch msg := e.Str("msg"); {
		case crit && strings.HasPrefix(msg, "RECOVERING AN EXPIRED CONTROL PLANE: certificates had expired"):
			loud = true
		case crit && strings.HasPrefix(msg, "RECOVERING AN EXPIRED CONTROL PLANE: the API does not answer"):
			alone = true
		case msg == "holding the restart lease", msg == "the API answers again: holding the restart lease for the rest of the recovery":
			leased = true
		case msg == "restart lease released":
			released = true
		case msg == "component healthy":
			order = append(order, e.Str("COMPONENT"))
		}
	}
	if !loud {
		t.Error("no critical-priority message that an expired control plane is being recovered")
	}
	if !leased || !released {
		t.Errorf("the lease was not held for the roll (taken %v, released %v)", leased, released)
	}
	if alone {
		t.Log("the API did not answer at first: restarts began without the lease, which was taken once the API answered")
	} else {
		t.Log("the renewed files brought the API back before the restarts: the lease was taken as usual")
	}
	if want := "etcd,kube-apiserver,kube-controller-manager,kube-scheduler"; strings.Join(order, ",") != want {
		t.Errorf("restarted %v, want %s", order, want)
	}
	for k, v := range leafSerials(t) {
		if v == old[k] {
			t.Errorf("%s not renewed", k)
		}
	}
	createConfigMap(t, cp, "e2e-day-366")
	checkKubeletRestarted(t, cp, evs, old["kubelet.conf"])
	if h, err := restartLeaseHolder(ctx, cp); err != nil || h != "" {
		t.Errorf("restart lease after the recovery: holder %q (%v)", h, err)
	}
	t.Logf("day 366: pkirenewd healed the expired control plane in %v (daemon start to all healthy with the renewed admin.conf); roll finished %v after start",
		healedAt.Sub(start).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// expiredControlPlane brings a control plane up whose every leaf expires
// two minutes later, waits that out and reboots the node, so that every
// component starts again on expired certificates and the apiserver cannot
// reach etcd: day 366 as people find it.
func expiredControlPlane(t *testing.T) *ControlPlane {
	t.Helper()
	// Long enough for the bring-up, short enough to wait out.
	const validity = 2 * time.Minute
	cp := StartControlPlane(t, Options{Validity: validity})
	ctx := cp.Context()
	expiry := maxNotAfter(t)
	t.Logf("every leaf certificate expires by %s (%v from now)", expiry.UTC().Format(time.RFC3339), time.Until(expiry).Round(time.Second))
	select {
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	case <-time.After(time.Until(expiry) + 5*time.Second):
	}
	// The cluster is down: admin.conf's expired credentials get nowhere.
	if err := cp.apiserverReady(ctx); err == nil {
		t.Fatal("/readyz answers ok with expired certificates: the scenario did not set in")
	} else {
		t.Logf("expired: /readyz: %v", err)
	}
	// The apiserver still talks to etcd over the connection it opened
	// before the expiry. The node reboots (as the day-366 nodes people
	// find usually have): every component starts again on expired
	// certificates, and the apiserver cannot reach etcd any more.
	cp.StopKubelet()
	if err := cp.Rig.RemoveAllPods(ctx); err != nil {
		t.Fatal(err)
	}
	cp.startKubelet()
	err := cp.Poll(2*time.Minute, time.Second, "the static pods back after the reboot", func(ctx context.Context) error {
		for _, c := range Components {
			if _, err := cp.ReadyPod(ctx, c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after the reboot: /readyz: %v", cp.apiserverReady(ctx))
	return cp
}

// Day 366, and the scheduler cannot come back (its port is taken right
// after pkirenewd stops it). Going back to the previous files cannot help
// — they are expired — so pkirenewd says so at crit, keeps the renewed
// files, the other components run on them, check names the scheduler as
// owed; once the port is free the daemon finishes it.
func TestDay366FailingComponentGoesForward(t *testing.T) {
	cp := expiredControlPlane(t)
	ctx := cp.Context()
	old := leafSerials(t)
	d := startDaemon(t, cp, "--validity", "24h", "--restart-timeout", "40s",
		"--kubelet-restart-command", cp.KubeletRestartCommand(), "--kubelet-config", cp.kubeletConfigPath())
	if _, err := waitEvent(cp, d, 6*time.Minute, "pkirenewd stopping kube-scheduler", func(e logEvent) bool {
		return e.Str("msg") == "stopping static pod" && e.Str("COMPONENT") == "kube-scheduler"
	}); err != nil {
		t.Fatal(err)
	}
	l, err := holdPort(ctx, "127.0.0.1:10259", 20*time.Second)
	if err != nil {
		t.Fatalf("could not take the scheduler's port: %v", err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			l.Close()
		}
	}
	defer release()
	refused, err := waitEvent(cp, d, 3*time.Minute, "pkirenewd refusing to roll back", func(e logEvent) bool {
		return e.Str("ACTION") == "no-rollback"
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pkirenewd: %s (priority %v; %s)", refused.Str("msg"), refused.Fields["PRIORITY"], refused.Str("error"))
	if fmt.Sprint(refused.Fields["PRIORITY"]) != "2" {
		t.Errorf("the refusal to roll back is not at crit: %v", refused.Fields)
	}
	for k, v := range leafSerials(t) {
		if v == old[k] {
			t.Errorf("%s: the expired file is back", k)
		}
	}
	for _, c := range Components[:3] {
		if _, err := cp.ReadyPod(ctx, c); err != nil {
			t.Errorf("%s: %v", c, err)
		}
	}
	if code, out := checkNode(cp, "--state-dir", d.stateDir); code == 0 || !strings.Contains(out, "kube-scheduler") {
		t.Errorf("check with the scheduler owed: exit %d\n%s", code, out)
	} else {
		t.Logf("check names the owed scheduler (exit %d)", code)
	}
	release()
	err = cp.Poll(5*time.Minute, time.Second, "the scheduler back and check clean", func(ctx context.Context) error {
		if err := cp.Healthy(ctx); err != nil {
			return err
		}
		if code, out := checkNode(cp, "--state-dir", d.stateDir); code != 0 {
			return fmt.Errorf("check exits %d:\n%s", code, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	createConfigMap(t, cp, "e2e-day-366-forward")
}
