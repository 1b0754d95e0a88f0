//go:build e2e

package e2e

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pkirenewd/pkirenewd/test/containerdrig"
)

// TestCheckSaysOnlyWhatItSaw runs the cells of check's matrix that a real
// node reaches after the operator's `kubeadm certs renew all` with no
// restart: kcm and the scheduler run on kubeconfigs older than the files.
// check exits 0 only for what it saw: with restarts on or off it names
// them stale; with the runtime unreachable it names all four unseen; with
// a second Ready sandbox of the scheduler (a leaked one, the kubelet
// stopped so it stays) it names the scheduler unseen and still judges the
// others. Then the kubelet gate, with the kubelet's configuration where
// kubeadm does not put it and the kubelet stopped: a forced renewal with
// restart stops no pod and writes nothing, with and without
// --kubelet-config.
func TestCheckSaysOnlyWhatItSaw(t *testing.T) {
	cp := StartControlPlane(t, Options{})
	before := pods(t, cp)
	cp.kubeadm(nil, "certs", "renew", "all", "--config", cp.KubeadmConfig)
	state := t.TempDir()
	check := func(name string, want int, parts []string, extra ...string) string {
		t.Helper()
		code, out := checkNode(cp, append([]string{"--state-dir", state}, extra...)...)
		if code != want {
			t.Errorf("%s: exit %d, want %d\n%s", name, code, want, out)
		}
		for _, p := range parts {
			if !strings.Contains(out, p) {
				t.Errorf("%s: no %q in\n%s", name, p, out)
			}
		}
		return out
	}
	stale := []string{"STALE kube-controller-manager", "STALE kube-scheduler"}
	check("reachable, restarts on", 1, stale)
	check("reachable, restarts off", 1, stale, "--restart-components=false")
	unseen := []string{"UNSEEN etcd", "UNSEEN kube-apiserver", "UNSEEN kube-controller-manager", "UNSEEN kube-scheduler", "start the container runtime"}
	dead := "unix:///run/pkirenewd-e2e-no-such.sock"
	check("unreachable, restarts on", 1, unseen, "--cri-endpoint", dead)
	check("unreachable, restarts off", 1, unseen, "--cri-endpoint", dead, "--restart-components=false")

	cp.StopKubelet()
	leaked, err := cp.Rig.RunStaticPod(cp.Context(), containerdrig.StaticPod{Component: "kube-scheduler", Node: cp.Opts.NodeName,
		Image: containerdrig.PauseImage, Command: []string{"/pause"}}, 9)
	if err != nil {
		t.Fatal(err)
	}
	out := check("ambiguous, restarts on", 1, []string{"UNSEEN kube-scheduler", "refusing to guess", "STALE kube-controller-manager"})
	if strings.Contains(out, "UNSEEN kube-controller-manager") || strings.Contains(out, "STALE kube-scheduler") {
		t.Errorf("one component's ambiguity spread:\n%s", out)
	}
	check("ambiguous, restarts off", 1, []string{"UNSEEN kube-scheduler", "STALE kube-controller-manager"}, "--restart-components=false")
	_, _ = cp.Rig.RT.StopPodSandbox(cp.Context(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: leaked})
	_, _ = cp.Rig.RT.RemovePodSandbox(cp.Context(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: leaked})

	// The kubelet gate: its configuration is the rig's own file, not
	// /var/lib/kubelet/config.yaml, and it is stopped.
	serials := leafSerials(t)
	for _, extra := range [][]string{nil, {"--kubelet-config", cp.kubeletConfigPath()}} {
		args := append([]string{"renew", "--force", "--restart", "controller-manager.conf", "scheduler.conf", "--config", "/dev/null",
			"--pki-dir", PKIDir, "--kubeconfig-dir", KubernetesDir, "--manifests-dir", ManifestsDir, "--state-dir", t.TempDir(),
			"--cri-endpoint", cp.Rig.Endpoint(), "--node-name", cp.Opts.NodeName, "--admin-kubeconfig-copy", "", "--lease="}, extra...)
		start := time.Now()
		b, err := exec.Command(pkirenewdBin, args...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !strings.Contains(string(b), "nothing was written") || !strings.Contains(string(b), "the kubelet does not answer") {
			t.Errorf("renew --restart with the kubelet stopped (%v): %v\n%s", extra, err, b)
		}
		t.Logf("refused in %v with %v: %s", time.Since(start).Round(time.Millisecond), extra, lastLine(string(b)))
	}
	if after := leafSerials(t); after["controller-manager.conf"] != serials["controller-manager.conf"] || after["scheduler.conf"] != serials["scheduler.conf"] {
		t.Error("written with the kubelet stopped")
	}
	for c, p := range before {
		now, err := cp.ReadyPod(cp.Context(), c)
		if err != nil || now.SandboxID != p.SandboxID {
			t.Errorf("%s: stopped or replaced with the kubelet down (%v)", c, err)
		}
	}
	cp.startKubelet()
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
