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
func restartedSince(ctx context.Context, cp *ControlPlane, before map[string]Pod, components []string) error {
	for _, c := range components {
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
// and no record of owed restarts, the daemon (restartPolicy needed, the
// default) sees within seconds that the controller-manager and the
// scheduler run on kubeconfigs older than the files, restarts each once
// under the cluster lease; etcd and the apiserver took up their renewed
// certificates by themselves and are not touched; check is clean again.
// Then the in-memory certificates, with a short assumed life: check names
// the apiserver's loopback certificate, and a renew restarts it.
func TestManualKubeadmRenewalIsNoticed(t *testing.T) {
	cp := StartControlPlane(t, Options{})
	before := pods(t, cp)
	d := startDaemon(t, cp, "--restart-policy", "needed", "--kubelet-restart-command", cp.KubeletRestartCommand(), "--kubelet-config", cp.kubeletConfigPath())
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
	outside := 0
	for _, e := range d.Events() {
		if e.Str("ACTION") == "outside-renewal" {
			outside++
		}
	}
	if outside == 0 {
		t.Error("the daemon did not log that certificates were renewed outside pkirenewd")
	} else {
		t.Logf("the daemon logged %d certificates renewed outside pkirenewd", outside)
	}
	restarted := []string{"kube-controller-manager", "kube-scheduler"}
	err = cp.Poll(4*time.Minute, time.Second, "kcm and scheduler restarted and check clean", func(ctx context.Context) error {
		if err := restartedSince(ctx, cp, before, restarted); err != nil {
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
	t.Logf("kcm and scheduler restarted and check clean %v after the renewal", time.Since(renewedAt).Round(time.Millisecond))
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
	want := map[string]int{"etcd": 0, "kube-apiserver": 0, "kube-controller-manager": 1, "kube-scheduler": 1}
	for _, c := range Components {
		if stops[c] != want[c] {
			t.Errorf("%s stopped %d times, want %d", c, stops[c], want[c])
		}
	}
	if !leased {
		t.Error("the restarts were not made under the cluster lease")
	}
	if renewed {
		t.Error("the daemon renewed a certificate, though kubeadm had just renewed them all")
	}
	servesFiles(t, cp.Context())
	createConfigMap(t, cp, "e2e-after-manual-renewal")
	inMemoryCertificates(t, cp, d.stateDir)
}

// inMemoryCertificates assumes every in-memory certificate lives 30
// minutes and renewBefore is 29: a component that has run for more than a
// minute is due. Once the three that keep one (kube-apiserver's loopback
// certificate, the self-signed serving certificates of kcm and the
// scheduler) have all run that long, check names them and fails, and
// `renew --restart` restarts each, which makes them young again (the roll
// takes seconds, not a minute).
func inMemoryCertificates(t *testing.T, cp *ControlPlane, state string) {
	t.Helper()
	// Inherited by the pkirenewd commands below; restored after the test.
	t.Setenv("PKIRENEWD_TEST_MEMORY_CERT_LIFE", "30m")
	before := pods(t, cp)
	memory := []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"}
	for _, c := range memory {
		if age := time.Since(before[c].CreatedAt); age < 70*time.Second {
			time.Sleep(70*time.Second - age)
		}
	}
	cmd := exec.Command(pkirenewdBin, "check", "--config", "/dev/null", "--pki-dir", PKIDir, "--kubeconfig-dir", KubernetesDir,
		"--manifests-dir", ManifestsDir, "--cri-endpoint", cp.Rig.Endpoint(), "--node-name", cp.Opts.NodeName,
		"--state-dir", state, "--renew-before", "29m")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "STALE kube-apiserver: running") || !strings.Contains(string(out), "loopback certificate ends in") ||
		!strings.Contains(string(out), "STALE kube-scheduler: running") || !strings.Contains(string(out), "self-signed serving certificate ends in") {
		t.Fatalf("check with a 30 min in-memory life: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "STALE") {
			t.Logf("check: %s", l)
		}
	}
	r := startPkirenewd(t, cp, "pkirenewd-renew-memory.log", "renew", "--restart", "--restart-policy", "needed", "--renew-before", "29m",
		"--kubelet-config", cp.kubeletConfigPath())
	awaitExit(t, r, 5*time.Minute)
	if err := restartedSince(cp.Context(), cp, before, memory); err != nil {
		t.Errorf("not restarted for its in-memory certificate: %v", err)
	}
	if err := cp.WaitHealthy(time.Minute); err != nil {
		t.Error(err)
	}
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
		if err := restartedSince(ctx, cp, before, Components); err != nil {
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
