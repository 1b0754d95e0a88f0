//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/test/cplane"
)

// upgradePair is the default version of test/tools/versions and the full
// set one minor older: what `kubeadm upgrade apply` takes a node from and
// to.
func upgradePair() (from, to cplane.Row, err error) {
	rows, err := cplane.Versions()
	if err != nil {
		return from, to, err
	}
	for _, r := range rows {
		if r.Set == "default" {
			to = r
		}
	}
	for _, r := range rows {
		if r.Full() && minor(r.Version)+1 == minor(to.Version) {
			return r, to, nil
		}
	}
	return from, to, fmt.Errorf("%s: no full set one minor older than %s to upgrade from", cplane.VersionsFile, to.Version)
}

func minor(v string) int {
	var major, m, patch int
	fmt.Sscanf(v, "v%d.%d.%d", &major, &m, &patch)
	return m
}

// TestKubeadmUpgradeApplyUnderTheDaemon: a node of the previous minor, with
// `pkirenewd run` active, is upgraded by the real `kubeadm upgrade apply`
// to the default version. kubeadm renews the certificates of every
// component it upgrades and swaps every manifest (etcd's too), staging
// them in /etc/kubernetes/tmp. pkirenewd must stop or restart nothing
// meanwhile, take kubeadm's certificates as its inventory (logged as an
// outside renewal), renew nothing kubeadm renewed, and afterwards
// nothing is stale and `check` exits 0 — before and after the operator
// upgrades the kubelet. Then a renewal round on the upgraded node works as
// usual.
func TestKubeadmUpgradeApplyUnderTheDaemon(t *testing.T) {
	from, to, err := upgradePair()
	if err != nil {
		t.Fatal(err)
	}
	cp := StartControlPlane(t, Options{KubernetesVersion: from.Version})
	ctx := cp.Context()
	wantVersion(t, logVersions(t, cp, "before the upgrade"), from.Version)
	toBin, err := cplane.Build(to.Version, "all")
	if err != nil {
		t.Fatal(err)
	}
	toKubeadm := cp.prepareUpgrade(to.Version, toBin)

	oldSerials := leafSerials(t)
	before := pods(t, cp)
	d := startDaemon(t, cp, "--restart-policy", "needed", "--kubelet-restart-command", cp.KubeletRestartCommand())
	if _, err := waitEvent(cp, d, time.Minute, "the daemon's first inventory", func(e logEvent) bool { return e.Str("msg") == "scheduled" }); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	out, err := upgradeApply(cp, toKubeadm, to.Version, nil)
	end := time.Now()
	if err != nil {
		t.Fatalf("kubeadm upgrade apply: %v", err)
	}
	t.Logf("timeline: kubeadm upgrade apply %s -> %s ran %v", from.Version, to.Version, end.Sub(start).Round(time.Millisecond))
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.Contains(line, "[upgrade/staticpods] Moving new manifest") || strings.Contains(line, "SUCCESS") ||
			strings.Contains(line, "Renewing") || strings.Contains(line, "etcd") && strings.Contains(line, "upgrade") {
			t.Logf("timeline:   kubeadm: %s", strings.TrimSpace(line))
		}
	}
	if _, err := os.Stat(filepath.Join(KubernetesDir, "tmp")); err == nil {
		if des, _ := os.ReadDir(filepath.Join(KubernetesDir, "tmp")); len(des) > 0 {
			t.Logf("kubeadm left %d entries in %s/tmp", len(des), KubernetesDir)
		}
	}

	// The node settles: check exits 0 once kubeadm's pods run.
	err = cp.Poll(3*time.Minute, 2*time.Second, "check clean after the upgrade", func(ctx context.Context) error {
		if code, out := checkNode(cp, "--state-dir", d.stateDir); code != 0 {
			return fmt.Errorf("check exits %d:\n%s", code, out)
		}
		return nil
	})
	settled := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	upgraded := pods(t, cp)
	for _, c := range Components {
		p := upgraded[c]
		if p.SandboxID == before[c].SandboxID && p.ContainerID == before[c].ContainerID {
			t.Errorf("%s still runs the container from before the upgrade", c)
		}
		t.Logf("timeline: %+8v kubelet started %s's container from kubeadm's new manifest", p.ContainerCreated.Sub(start).Round(100*time.Millisecond), c)
	}
	after := logVersions(t, cp, "after the upgrade")
	delete(after, "kubelet") // the operator's step, below
	wantVersion(t, after, to.Version)

	// kubeadm renewed what it upgraded; pkirenewd took it as it found it.
	now := leafSerials(t)
	var renewedByKubeadm []string
	for k, v := range now {
		if v != oldSerials[k] {
			renewedByKubeadm = append(renewedByKubeadm, k)
		}
	}
	if len(renewedByKubeadm) == 0 {
		t.Error("kubeadm upgrade apply renewed no certificate")
	}
	t.Logf("renewed by kubeadm: %s", strings.Join(renewedByKubeadm, " "))

	// The operator upgrades the kubelet; pkirenewd still has nothing to do.
	cp.UpgradeKubelet(filepath.Join(toBin, "kubelet"))
	if err := cp.WaitHealthy(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	err = cp.Poll(2*time.Minute, 2*time.Second, "the kubelet's Node reporting the new version", func(ctx context.Context) error {
		vs, err := componentVersions(ctx, cp)
		if err != nil {
			return err
		}
		if !strings.Contains(vs["kubelet"], to.Version) {
			return fmt.Errorf("kubelet %s", vs["kubelet"])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantVersion(t, logVersions(t, cp, "after the kubelet upgrade"), to.Version)
	for _, c := range Components {
		if p, err := cp.ReadyPod(ctx, c); err == nil && p.ContainerID != upgraded[c].ContainerID {
			t.Logf("the new kubelet started %s again (its own doing: a kubelet of another minor)", c)
		}
	}
	if code, out := checkNode(cp, "--state-dir", d.stateDir); code != 0 {
		t.Errorf("check after the kubelet upgrade exits %d:\n%s", code, out)
	}
	// A little longer under the daemon: a wrong judgement of kubeadm's
	// files would show as a restart within its next looks.
	time.Sleep(20 * time.Second)
	if err := d.stop(t); err != nil {
		t.Error(err)
	}

	outside := map[string]bool{}
	var upgradeSeen, upgradeEnded bool
	for _, e := range d.Events() {
		at := e.At.Sub(start).Round(100 * time.Millisecond)
		switch {
		case e.Str("ACTION") == "outside-upgrade":
			upgradeSeen = upgradeSeen || strings.Contains(e.Str("msg"), "kubeadm upgrade in progress")
			upgradeEnded = upgradeEnded || strings.Contains(e.Str("msg"), "has finished")
			t.Logf("timeline: %+8v pkirenewd: %s", at, e.Str("msg"))
		case e.Str("ACTION") == "outside-renewal":
			outside[e.Str("CERT")] = true
			t.Logf("timeline: %+8v pkirenewd: %s renewed outside pkirenewd", at, e.Str("CERT"))
		case e.Str("msg") == "stopping static pod" || e.Str("ACTION") == "restart":
			t.Errorf("timeline: %+8v pkirenewd restarted %s (%s): kubeadm owns the node during its upgrade and left nothing stale", at, e.Str("COMPONENT"), e.Str("msg"))
		case e.Str("msg") == "renewing" || e.Str("msg") == "certificate renewed":
			t.Errorf("timeline: %+8v pkirenewd renewed %s, which kubeadm had just renewed or was not due", at, e.Str("CERT"))
		case e.Str("level") == "warning" || e.Str("level") == "error" || strings.Contains(e.Str("msg"), "settle"):
			t.Logf("timeline: %+8v pkirenewd %s: %s %s", at, e.Str("level"), e.Str("msg"), e.Str("error"))
		}
	}
	if !upgradeSeen || !upgradeEnded {
		t.Errorf("pkirenewd did not say that kubeadm was upgrading the node (%v) and had finished (%v)", upgradeSeen, upgradeEnded)
	}
	for _, k := range renewedByKubeadm {
		// pkirenewd's names: etcd/server.crt is etcd-server.
		if name := strings.ReplaceAll(k, "/", "-"); !outside[name] {
			t.Errorf("pkirenewd did not log %s as renewed outside it (logged: %v)", name, outside)
		}
	}
	t.Logf("timeline: upgrade start 0s, end %v, check clean %v", end.Sub(start).Round(time.Millisecond), settled.Sub(start).Round(time.Millisecond))
	// A renewal round on the upgraded node, as usual.
	roundStart := time.Now()
	r := startPkirenewd(t, cp, "pkirenewd-renew.log", "renew", "--force", "--restart", "--restart-policy", "needed",
		"--kubelet-restart-command", cp.KubeletRestartCommand(), "--restart-timeout", "3m")
	awaitExit(t, r, 5*time.Minute)
	t.Logf("renewal round on the upgraded node: %v", time.Since(roundStart).Round(time.Millisecond))
	for k, v := range leafSerials(t) {
		if v == now[k] {
			t.Errorf("%s was not renewed by the round after the upgrade", k)
		}
	}
	if code, out := checkNode(cp); code != 0 {
		t.Errorf("check after the renewal round exits %d:\n%s", code, out)
	}
	if err := cp.Healthy(ctx); err != nil {
		t.Error(err)
	}
	createConfigMap(t, cp, "e2e-after-upgrade")
}

// upgradeApply runs the real `kubeadm upgrade apply` to version on the
// node; onStaging, when set, is called once kubeadm's staging directory
// (its upgrade of the static pods) appears, while kubeadm goes on.
func upgradeApply(cp *ControlPlane, toKubeadm *cplane.Kubeadm, version string, onStaging func()) (string, error) {
	// kubeadm runs `kubelet --version`: the node's kubelet, still the old one.
	path := []string{"PATH=" + cp.Bin + ":" + os.Getenv("PATH")}
	args := []string{"upgrade", "apply", version, "--yes",
		// The rig's node has no pod network, so kube-proxy and CoreDNS
		// are not run; the kubelet runs its own config (a rig file), and
		// the operator upgrades and restarts it afterwards.
		"--skip-phases", "kubelet-config,addon,post-upgrade"}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
		// A cgroup v1 host: kubeadm v1.35+ refuses it unless told, as its
		// own message says (the rig's kubelet sets failCgroupV1: false).
		args = append(args, "--ignore-preflight-errors", "SystemVerification")
	}
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := toKubeadm.Run(path, args...)
		done <- result{out, err}
	}()
	for {
		select {
		case r := <-done:
			return r.out, r.err
		case <-time.After(100 * time.Millisecond):
		}
		if m, _ := filepath.Glob(filepath.Join(KubernetesDir, "tmp", "kubeadm-upgraded-manifests*")); onStaging != nil && len(m) > 0 {
			onStaging()
			onStaging = nil
		}
	}
}
