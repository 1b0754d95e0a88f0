//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pods returns each component's ready pod.
func pods(t *testing.T, cp *ControlPlane) map[string]Pod {
	t.Helper()
	out := map[string]Pod{}
	for _, c := range Components {
		p, err := cp.ReadyPod(cp.Context(), c)
		if err != nil {
			t.Fatal(err)
		}
		out[c] = p
	}
	return out
}

// restartedSince fails while a component still runs in its sandbox from
// before.
func restartedSince(ctx context.Context, cp *ControlPlane, before map[string]Pod) error {
	for _, c := range Components {
		p, err := cp.ReadyPod(ctx, c)
		if err != nil {
			return err
		}
		if p.SandboxID == before[c].SandboxID {
			return fmt.Errorf("%s still in its sandbox from before", c)
		}
	}
	return nil
}

// checkNode runs `pkirenewd check` against the node, the runtime included.
func checkNode(cp *ControlPlane, extra ...string) (int, string) {
	args := append([]string{"check", "--config", "/dev/null", "--pki-dir", PKIDir, "--kubeconfig-dir", KubernetesDir,
		"--manifests-dir", ManifestsDir, "--cri-endpoint", cp.Rig.Endpoint(), "--node-name", cp.Opts.NodeName}, extra...)
	out, err := exec.Command(pkirenewdBin, args...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	return 0, string(out)
}

// TestManualKubeadmRenewalIsNoticed is the operator's habit on a live
// node: `kubeadm certs renew all` and nothing restarted. With nothing due
// and no record of owed restarts, the daemon sees within seconds that the
// four components run on credentials older than the files, restarts each
// once under the cluster lease, and check is clean again.
func TestManualKubeadmRenewalIsNoticed(t *testing.T) {
	cp := StartControlPlane(t, Options{})
	before := pods(t, cp)
	d := startDaemon(t, cp, "--kubelet-restart-command", cp.KubeletRestartCommand(), "--kubelet-config", cp.kubeletConfigPath())
	if _, err := waitEvent(cp, d, time.Minute, "the daemon's first inventory", func(e logEvent) bool { return e.Str("msg") == "scheduled" }); err != nil {
		t.Fatal(err)
	}
	renewedAt := time.Now()
	cp.kubeadm(nil, "certs", "renew", "all", "--config", cp.KubeadmConfig)
	t.Logf("kubeadm certs renew all done in %v", time.Since(renewedAt).Round(time.Millisecond))

	noticed, err := waitEvent(cp, d, time.Minute, "the daemon noticing stale components", func(e logEvent) bool {
		return strings.Contains(e.Str("msg"), "runs on old credentials")
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("noticed %v after the renewal: %s (PATH=%s)", noticed.At.Sub(renewedAt).Round(time.Millisecond), noticed.Str("msg"), noticed.Str("PATH"))
	err = cp.Poll(4*time.Minute, time.Second, "every component restarted and check clean", func(ctx context.Context) error {
		if err := restartedSince(ctx, cp, before); err != nil {
			return err
		}
		if code, out := checkNode(cp, "--state-dir", d.stateDir); code != 0 {
			return fmt.Errorf("check exits %d:\n%s", code, out)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\n(daemon log: %s)", err, filepath.Join(cp.LogDir, "pkirenewd.log"))
	}
	t.Logf("all four restarted and check clean %v after the renewal", time.Since(renewedAt).Round(time.Millisecond))
	if err := d.stop(t); err != nil {
		t.Error(err)
	}
	stops := map[string]int{}
	leased, renewed := false, false
	for _, e := range d.Events() {
		switch {
		case e.Str("msg") == "stopping static pod":
			stops[e.Str("COMPONENT")]++
		case e.Str("msg") == "holding the restart lease":
			leased = true
		case e.Str("msg") == "certificate renewed":
			renewed = true
		}
	}
	for _, c := range Components {
		if stops[c] != 1 {
			t.Errorf("%s stopped %d times, want once", c, stops[c])
		}
	}
	if !leased {
		t.Error("the restarts were not made under the cluster lease")
	}
	if renewed {
		t.Error("the daemon renewed a certificate, though kubeadm had just renewed them all")
	}
	createConfigMap(t, cp, "e2e-after-manual-renewal")
}

// TestKubeletDownNothingIsStopped: a renewal falls due while the kubelet
// is stopped. No pod is stopped (only a live kubelet recreates it); the
// certificates are close enough to expiry for the last resort, so the
// files are renewed and the restarts recorded as owed, at crit. Once the
// kubelet is back the daemon does the owed restarts and check is clean.
func TestKubeletDownNothingIsStopped(t *testing.T) {
	const validity, renewBefore = 3 * time.Minute, 2 * time.Minute
	cp := StartControlPlane(t, Options{Validity: validity})
	before := pods(t, cp)
	cp.StopKubelet()
	stopped := time.Now()
	d := startDaemon(t, cp, "--renew-before", renewBefore.String(), "--validity", validity.String(),
		"--kubelet-restart-command", cp.KubeletRestartCommand(), "--kubelet-config", cp.kubeletConfigPath())

	// Wait (the kubelet is down, so not with cp.Poll) for the last resort.
	var lastResort logEvent
	deadline := time.Now().Add(4 * time.Minute)
	for lastResort.At.IsZero() {
		for _, e := range d.Events() {
			if e.Str("ACTION") == "last-resort" {
				lastResort = e
			}
		}
		if time.Now().After(deadline) || d.exited() {
			t.Fatalf("no last-resort renewal with the kubelet down (daemon log: %s)", filepath.Join(cp.LogDir, "pkirenewd.log"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("%v after the kubelet stopped: %s (priority %v, error %s)", lastResort.At.Sub(stopped).Round(time.Millisecond),
		lastResort.Str("msg"), lastResort.Fields["PRIORITY"], lastResort.Str("error"))
	time.Sleep(2 * time.Second)
	for _, e := range d.Events() {
		if e.Str("msg") == "stopping static pod" {
			t.Fatalf("%s was stopped while the kubelet was down", e.Str("COMPONENT"))
		}
	}
	for c, p := range before {
		now, err := cp.ReadyPod(cp.Context(), c)
		if err != nil || now.SandboxID != p.SandboxID {
			t.Fatalf("%s: sandbox changed while the kubelet was down (%v)", c, err)
		}
	}
	if code, out := checkNode(cp, "--state-dir", d.stateDir); code != 1 || !strings.Contains(out, "STALE") {
		t.Errorf("check with the restarts owed: exit %d, want 1 naming the stale components\n%s", code, out)
	}

	cp.startKubelet()
	back := time.Now()
	// The certificates live 3 minutes, so check may say "due" again at
	// any moment: what must be gone is every stale component.
	err := cp.Poll(5*time.Minute, time.Second, "the owed restarts done and nothing stale", func(ctx context.Context) error {
		if err := restartedSince(ctx, cp, before); err != nil {
			return err
		}
		if code, out := checkNode(cp, "--state-dir", d.stateDir); code == 2 || strings.Contains(out, "STALE") {
			return fmt.Errorf("check exits %d:\n%s", code, out)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\n(daemon log: %s)", err, filepath.Join(cp.LogDir, "pkirenewd.log"))
	}
	t.Logf("the kubelet back: the owed restarts done and nothing stale %v later", time.Since(back).Round(time.Millisecond))
	if err := d.stop(t); err != nil {
		t.Error(err)
	}
	createConfigMap(t, cp, "e2e-after-kubelet-down")
}
