package restart_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pkirenewd/pkirenewd/test/containerdrig"
)

// pkirenewd is SIGKILLed in the middle of a rolling restart — the
// controller-manager's sandbox stopped, its health not yet checked. The
// restarts still owed are on disk; the daemon, started again, finishes
// them without renewing anything, and every component runs.
func TestKilledMidRollIsFinished(t *testing.T) {
	rig := containerdrig.Start(t)
	n := newNode(t, rig, nil)
	before := map[string]int{}
	for _, c := range order {
		before[c] = len(n.kubelet.Sandboxes(c))
	}
	cmSandbox := n.kubelet.Sandboxes("kube-controller-manager")[before["kube-controller-manager"]-1]

	cmd := exec.Command(pkirenewdBin, "renew", "--force", "--restart", "--config", "/dev/null", "--pki-dir", n.pki, "--kubeconfig-dir", n.kube,
		"--manifests-dir", n.manifests, "--state-dir", n.state, "--cri-endpoint", rig.Endpoint(), "--restart-timeout", "30s",
		"--validity", "365d", "--lease=", "--etcd-quorum-guard=false", "--restart-policy", "all", "--kubelet-config", n.kubeletConfig)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	var mu sync.Mutex
	var out bytes.Buffer
	stopping := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.Contains(sc.Text(), `msg="stopping static pod"`) && strings.Contains(sc.Text(), "COMPONENT=kube-controller-manager") {
				once.Do(func() { close(stopping) })
			}
		}
	}()
	select {
	case <-stopping:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("never reached the controller-manager:\n%s", out.String())
	}
	// Kill right after the stop, before the new pod can be healthy (the
	// stand-in kubelet takes 0.5 s to react).
	ctx := context.Background()
	for deadline := time.Now().Add(5 * time.Second); ; {
		st, err := rig.RT.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: cmSandbox})
		if err != nil || st.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the controller-manager's sandbox was never stopped")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	if strings.Contains(out.String(), "COMPONENT=kube-controller-manager SANDBOX") && strings.Contains(out.String(), `msg="component healthy" ACTION=restarted COMPONENT=kube-controller-manager`) {
		t.Fatalf("killed too late: the controller-manager was already healthy\n%s", out.String())
	}
	var owed struct {
		Components []string `json:"components"`
	}
	data, err := os.ReadFile(filepath.Join(n.state, "pending-restart.json"))
	if err != nil {
		t.Fatalf("no record of the owed restarts: %v\n%s", err, out.String())
	}
	if err := json.Unmarshal(data, &owed); err != nil {
		t.Fatal(err)
	}
	if want := "kube-controller-manager,kube-scheduler"; strings.Join(owed.Components, ",") != want {
		t.Fatalf("owed %v, want %s", owed.Components, want)
	}
	etcdAfterKill, apiAfterKill := len(n.kubelet.Sandboxes("etcd")), len(n.kubelet.Sandboxes("kube-apiserver"))

	// The daemon finishes the roll at start; nothing is due.
	d := exec.Command(pkirenewdBin, "run", "--config", "/dev/null", "--pki-dir", n.pki, "--kubeconfig-dir", n.kube,
		"--manifests-dir", n.manifests, "--state-dir", n.state, "--cri-endpoint", rig.Endpoint(), "--restart-timeout", "30s",
		"--metrics-address", "", "--lease=", "--etcd-quorum-guard=false", "--restart-policy", "all", "--kubelet-config", n.kubeletConfig)
	var dout bytes.Buffer
	d.Stdout, d.Stderr = &dout, &dout
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.Process.Kill(); _ = d.Wait() }()
	start := time.Now()
	for {
		_, err := os.Stat(filepath.Join(n.state, "pending-restart.json"))
		if err != nil && len(n.kubelet.Sandboxes("kube-scheduler")) > before["kube-scheduler"] {
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("the daemon did not finish the owed restarts:\n%s", dout.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = d.Process.Signal(os.Interrupt)
	_ = d.Wait()
	t.Logf("owed restarts finished %v after the daemon started", time.Since(start).Round(time.Millisecond))
	if strings.Contains(dout.String(), `msg=renewing`) || strings.Contains(dout.String(), "certificate renewed") {
		t.Errorf("the daemon renewed again:\n%s", dout.String())
	}
	if len(n.kubelet.Sandboxes("etcd")) != etcdAfterKill || len(n.kubelet.Sandboxes("kube-apiserver")) != apiAfterKill {
		t.Errorf("etcd or the apiserver was restarted again")
	}
	// Every component runs and is healthy, each in a sandbox made after
	// the renewal.
	for _, c := range order {
		sbs, err := rig.RT.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
			LabelSelector: map[string]string{"component": c},
			State:         &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}})
		if err != nil || len(sbs.Items) != 1 {
			t.Errorf("%s: %v ready sandboxes (%v)", c, len(sbs.GetItems()), err)
		}
		if len(n.kubelet.Sandboxes(c)) <= before[c] {
			t.Errorf("%s was never restarted", c)
		}
	}
	if !strings.Contains(dout.String(), "restarts owed (") {
		t.Errorf("the daemon did not say it was finishing owed restarts:\n%s", dout.String())
	}
}
