package restart_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
	"github.com/pkirenewd/pkirenewd/test/containerdrig"
)

// probeless is a static pod the way kube-vip and keepalived are written:
// hostNetwork, no probes, hostPath volumes only. The healthserver stands
// in for the daemon (it reads --kubeconfig once at start, as kube-vip
// reads admin.conf).
func probeless(name string, command []string, hostPaths map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: kube-system\nspec:\n  containers:\n  - command:\n", name)
	for _, c := range command {
		fmt.Fprintf(&b, "    - %s\n", c)
	}
	fmt.Fprintf(&b, "    image: %s\n    name: %s\n    securityContext:\n      capabilities:\n        add: [NET_ADMIN, NET_RAW]\n", containerdrig.HealthImage, name)
	b.WriteString("  hostNetwork: true\n  volumes:\n")
	for vol, p := range hostPaths {
		fmt.Fprintf(&b, "  - hostPath:\n      path: %s\n    name: %s\n", p, vol)
	}
	return b.String()
}

// A kubeadm HA node as its guide lays it out: kubeadm's four, a kube-vip
// pod that mounts admin.conf (no probe), a keepalived pod that uses no
// renewed file, and a manifest cut short. `renew --force --restart`
// renews, restarts what uses the renewed files (kube-vip judged by running
// without a restart), leaves keepalived's sandbox alone, and exits 0 with a
// warning naming the broken file.
func TestForeignStaticPodsOnRealContainerd(t *testing.T) {
	rig := containerdrig.Start(t)
	vipPort, kaPort := containerdrig.FreePort(t), containerdrig.FreePort(t)
	extra := map[string]func(*node) string{
		"kube-vip.yaml": func(n *node) string {
			return probeless("kube-vip", []string{"healthserver", fmt.Sprintf("--addr=127.0.0.1:%d", vipPort), "--kubeconfig=" + n.kube + "/admin.conf"},
				map[string]string{"kubeconfig": n.kube + "/admin.conf"})
		},
		"keepalived.yaml": func(n *node) string {
			conf := filepath.Join(n.root, "keepalived")
			if err := os.MkdirAll(conf, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(conf, "keepalived.conf"), []byte("vrrp_instance VI_1 {}\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			return probeless("keepalived", []string{"healthserver", fmt.Sprintf("--addr=127.0.0.1:%d", kaPort)},
				map[string]string{"config": conf + "/keepalived.conf"})
		},
		"half-written.yaml": func(*node) string {
			return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: half\nspec:\n  containers:\n  - image: \"registry.example/half:1\n    command: [half, --config=/etc/kubernetes/admin.co"
		},
	}
	n := newNodeWith(t, rig, nil, renewtest.Options{Algorithm: "ECDSA-P256", NotBefore: time.Now().Add(-300 * 24 * time.Hour)}, extra)
	client, err := cri.Dial(context.Background(), rig.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ka, err := cri.FindStaticPodOn(context.Background(), client, "keepalived", "node1")
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	out, code := n.pkirenewd(t, "renew", "--force", "--restart", "--restart-running-for", "2s", "--kubelet-restart-command", "true")
	took := time.Since(start)
	if code != 0 {
		t.Fatalf("renew --force --restart: exit %d\n%s", code, out)
	}
	t.Logf("renew --force --restart of 4 components and kube-vip took %v\n%s", took.Round(time.Millisecond), out)
	half := filepath.Join(n.manifests, "half-written.yaml")
	vip := filepath.Join(n.manifests, "kube-vip.yaml")
	for _, want := range []string{
		"level=warning", "ignoring static pod manifest " + half,
		"no HTTP probe in " + vip + ": healthy = running for 2s without a restart",
		"restarted kube-vip",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, c := range append(append([]string{}, order...), "kube-vip") {
		if got := len(n.kubelet.Sandboxes(c)); got != 2 {
			t.Errorf("%s: %d sandboxes, want 2 (restarted once)", c, got)
		}
	}
	// kube-vip came after kubeadm's four, and was healthy no sooner than
	// 2 s after its new container ran.
	times := n.kubelet.CreationTimes("kube-vip")
	if sched := n.kubelet.CreationTimes("kube-scheduler"); len(times) == 2 && len(sched) == 2 && !times[1].After(sched[1]) {
		t.Errorf("kube-vip recreated before the scheduler")
	}
	if len(times) == 2 && took < times[1].Sub(start)+2*time.Second {
		t.Errorf("renew returned %v after start, kube-vip's new pod ran at %v: not 2 s of running", took, times[1].Sub(start))
	}
	// keepalived uses no renewed file: the same sandbox, never stopped.
	if got := n.kubelet.Sandboxes("keepalived"); len(got) != 1 {
		t.Errorf("keepalived sandboxes %v", got)
	}
	if now, err := cri.FindStaticPodOn(context.Background(), client, "keepalived", "node1"); err != nil || now.ID != ka.ID {
		t.Errorf("keepalived's sandbox %s -> %s (%v)", ka.ID, now.ID, err)
	}
	if out, code := n.pkirenewd(t, "check"); code != 0 {
		t.Errorf("check after the roll: exit %d\n%s", code, out)
	}
}
