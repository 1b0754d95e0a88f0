package containerdrig_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pkirenewd/pkirenewd/test/containerdrig"
)

func get(url string) error {
	c := &http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return os.ErrInvalid
	}
	return nil
}

func waitOK(t *testing.T, url string) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 30*time.Second {
		if get(url) == nil {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never answered", url)
	return 0
}

func TestRigRunsAndRecreatesStaticPods(t *testing.T) {
	r := containerdrig.Start(t)
	port := containerdrig.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/livez", port)
	pod := containerdrig.StaticPod{Component: "kube-scheduler", Node: "node1", Image: containerdrig.HealthImage,
		Command: []string{"healthserver", fmt.Sprintf("--addr=127.0.0.1:%d", port)}}
	k := r.StartKubelet([]containerdrig.StaticPod{pod}, 500*time.Millisecond, nil)
	waitOK(t, url)

	ctx := context.Background()
	id := k.Sandboxes("kube-scheduler")[0]
	start := time.Now()
	if _, err := r.RT.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.RT.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatal(err)
	}
	waitOK(t, url)
	t.Logf("stop -> healthy again: %v", time.Since(start))
	if got := k.Sandboxes("kube-scheduler"); len(got) != 2 || got[1] == id {
		t.Fatalf("sandboxes %v", got)
	}
	resp, err := r.RT.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil || len(resp.Items) != 1 || resp.Items[0].Labels["component"] != "kube-scheduler" || resp.Items[0].Annotations["kubernetes.io/config.source"] != "file" {
		t.Fatalf("sandboxes %v %v", resp, err)
	}
}

// After a rig is gone nothing of it remains: no containerd, no mounts, no
// cgroups, no directory.
func TestRigLeavesNothing(t *testing.T) {
	var dir, cgroup string
	t.Run("rig", func(t *testing.T) {
		r := containerdrig.Start(t)
		dir, cgroup = r.Dir, r.CgroupParent()
		port := containerdrig.FreePort(t)
		r.StartKubelet([]containerdrig.StaticPod{{Component: "etcd", Node: "node1", Image: containerdrig.HealthImage,
			Command: []string{"healthserver", fmt.Sprintf("--addr=127.0.0.1:%d", port)}}}, 0, nil)
		waitOK(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
	})
	mounts, _ := os.ReadFile("/proc/self/mounts")
	if strings.Contains(string(mounts), dir) {
		t.Errorf("mounts left under %s", dir)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s left: %v", dir, err)
	}
	if cg, _ := filepath.Glob("/sys/fs/cgroup/*" + cgroup); len(cg) > 0 {
		t.Errorf("cgroups left: %v", cg)
	}
	if out, _ := exec.Command("pgrep", "-f", "containerd --config "+dir).Output(); len(out) > 0 {
		t.Errorf("containerd still running: %s", out)
	}
}
