//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// crictlPath builds crictl from sigs.k8s.io/cri-tools v1.34.0 (go install
// fails through the module proxy; building from the downloaded module
// works), cached in ~/.cache/pkirenewd/bin.
func crictlPath(t *testing.T) string {
	t.Helper()
	home, _ := os.UserHomeDir()
	bin := filepath.Join(home, ".cache/pkirenewd/bin/cri-tools-v1.34.0/crictl")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	dl := exec.Command("go", "mod", "download", "-json", "sigs.k8s.io/cri-tools@v1.34.0")
	dl.Env = append(os.Environ(), "GONOSUMDB=sigs.k8s.io/cri-tools", "GOFLAGS=-mod=mod")
	dl.Dir = os.TempDir()
	out, err := dl.Output()
	if err != nil {
		t.Fatalf("go mod download sigs.k8s.io/cri-tools@v1.34.0: %v", err)
	}
	var dir string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == `"Dir":` {
			dir = strings.Trim(f[1], `",`)
		}
	}
	if dir == "" {
		t.Fatalf("go mod download: no Dir in %s", out)
	}
	b := exec.Command("go", "build", "-o", bin, "./cmd/crictl")
	b.Dir = dir
	b.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	if out, err := b.CombinedOutput(); err != nil {
		t.Fatalf("build crictl: %v\n%s", err, out)
	}
	return bin
}

// readyzSampler asks /readyz (admin.conf) every 100 ms and adds up the
// time it did not answer ok.
type readyzSampler struct {
	mu      sync.Mutex
	down    time.Duration
	samples int
	failed  int
	stop    chan struct{}
	done    chan struct{}
}

func sampleReadyz(cp *ControlPlane) *readyzSampler {
	s := &readyzSampler{stop: make(chan struct{}), done: make(chan struct{})}
	c := &Client{Kubeconfig: cp.Admin.Kubeconfig, Server: APIServer, Timeout: 500 * time.Millisecond}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		last := time.Now()
		lastOK := true
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(cp.ctx, 500*time.Millisecond)
			b, err := c.Get(ctx, "/readyz")
			cancel()
			ok := err == nil && strings.TrimSpace(string(b)) == "ok"
			now := time.Now()
			s.mu.Lock()
			s.samples++
			if !ok {
				s.failed++
			}
			// The interval since the last sample counts as down when
			// either end of it was.
			if !ok || !lastOK {
				s.down += now.Sub(last)
			}
			s.mu.Unlock()
			last, lastOK = now, ok
		}
	}()
	return s
}

func (s *readyzSampler) Stop() (down time.Duration, samples, failed int) {
	close(s.stop)
	<-s.done
	return s.down, s.samples, s.failed
}

func componentHealthy(ctx context.Context, cp *ControlPlane, c string) error {
	switch c {
	case "etcd":
		return etcdHealthy(ctx)
	case "kube-apiserver":
		return cp.apiserverReady(ctx)
	case "kube-controller-manager":
		return insecureGetOK(ctx, "https://127.0.0.1:10257/healthz")
	case "kube-scheduler":
		return insecureGetOK(ctx, "https://127.0.0.1:10259/healthz")
	}
	return fmt.Errorf("unknown component %s", c)
}

// waitRestarted waits until each component runs in a ready sandbox other
// than the one in before, and the whole control plane is healthy.
func waitRestarted(cp *ControlPlane, before map[string]Pod, components []string, timeout time.Duration) error {
	return cp.Poll(timeout, 100*time.Millisecond, "restarted and healthy", func(ctx context.Context) error {
		for _, c := range components {
			p, err := cp.ReadyPod(ctx, c)
			if err != nil {
				return err
			}
			if p.SandboxID == before[c].SandboxID {
				return fmt.Errorf("%s: still sandbox %.13s", c, p.SandboxID)
			}
			if err := componentHealthy(ctx, cp, c); err != nil {
				return fmt.Errorf("%s: %w", c, err)
			}
		}
		return cp.Healthy(ctx)
	})
}

// restartTimes lists "component TOOK" for each restart pkirenewd logged.
func restartTimes(d *daemon) []string {
	var per []string
	for _, e := range d.Events() {
		if e.Str("msg") == "component healthy" {
			per = append(per, e.Str("COMPONENT")+" "+e.Str("TOOK"))
		}
	}
	return per
}

func readyPods(t *testing.T, cp *ControlPlane) map[string]Pod {
	t.Helper()
	out := map[string]Pod{}
	for _, c := range Components {
		p, err := cp.ReadyPod(cp.ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		out[c] = p
	}
	return out
}

type anchorResult struct {
	method  string
	total   time.Duration
	down    time.Duration
	samples int
	detail  string
}

// TestRestartMethodsSideBySide is scenario 4: the same four static pods
// restarted on the same control plane by (a) kubeadm's documented method
// (move each manifest out of the manifests dir until the kubelet has
// stopped the pod, then back, one component after another), (b)
// Kubespray's (`crictl rmp -f` of all four pods at once) and (c)
// `pkirenewd restart`. For each: the time until all four run in new
// sandboxes and are healthy, and how long /readyz (sampled every 100 ms)
// did not answer ok.
func TestRestartMethodsSideBySide(t *testing.T) {
	crictl := crictlPath(t)
	cp := StartControlPlane(t, Options{})
	var results []anchorResult
	settle := func() {
		t.Helper()
		if err := cp.WaitHealthy(2 * time.Minute); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		if err := cp.WaitHealthy(time.Minute); err != nil {
			t.Fatal(err)
		}
	}

	// (a) kubeadm: manifests out and back, one at a time.
	settle()
	{
		before := readyPods(t, cp)
		aside := filepath.Join(cp.Dir, "manifests-aside")
		if err := os.MkdirAll(aside, 0o700); err != nil {
			t.Fatal(err)
		}
		s := sampleReadyz(cp)
		start := time.Now()
		var per []string
		for _, c := range Components {
			t0 := time.Now()
			in, out := filepath.Join(ManifestsDir, c+".yaml"), filepath.Join(aside, c+".yaml")
			if err := os.Rename(in, out); err != nil {
				t.Fatal(err)
			}
			if err := cp.Poll(3*time.Minute, 100*time.Millisecond, c+" pod stopped by the kubelet", func(ctx context.Context) error {
				sbs, err := cp.Sandboxes(ctx, c)
				if err != nil {
					return err
				}
				for _, p := range sbs {
					if p.Ready {
						return fmt.Errorf("sandbox %.13s still ready", p.SandboxID)
					}
				}
				return nil
			}); err != nil {
				_ = os.Rename(out, in)
				t.Fatal(err)
			}
			gone := time.Since(t0)
			if err := os.Rename(out, in); err != nil {
				t.Fatal(err)
			}
			if err := waitRestarted(cp, before, []string{c}, 3*time.Minute); err != nil {
				t.Fatal(err)
			}
			per = append(per, fmt.Sprintf("%s %.1fs (pod gone after %.1fs)", c, time.Since(t0).Seconds(), gone.Seconds()))
		}
		if err := waitRestarted(cp, before, Components, time.Minute); err != nil {
			t.Fatal(err)
		}
		total := time.Since(start)
		down, n, _ := s.Stop()
		results = append(results, anchorResult{"(a) kubeadm docs: manifests out and back, one by one", total, down, n, strings.Join(per, "; ")})
	}

	// (b) Kubespray: crictl rmp -f of all four pods at once.
	settle()
	{
		before := readyPods(t, cp)
		args := []string{"--runtime-endpoint", cp.Rig.Endpoint(), "--timeout", "30s", "rmp", "-f"}
		for _, c := range Components {
			args = append(args, before[c].SandboxID)
		}
		s := sampleReadyz(cp)
		start := time.Now()
		out, err := exec.Command(crictl, args...).CombinedOutput()
		rmp := time.Since(start)
		if err != nil {
			_, _, _ = s.Stop()
			t.Fatalf("crictl rmp -f: %v\n%s", err, out)
		}
		if err := waitRestarted(cp, before, Components, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
		total := time.Since(start)
		down, n, _ := s.Stop()
		results = append(results, anchorResult{"(b) Kubespray: crictl rmp -f all four at once", total, down, n,
			fmt.Sprintf("crictl took %.1fs", rmp.Seconds())})
	}

	// (c) pkirenewd restart.
	settle()
	{
		before := readyPods(t, cp)
		d := startPkirenewd(t, cp, "pkirenewd-restart.log", "restart", "--restart-timeout", "3m")
		s := sampleReadyz(cp)
		start := time.Now()
		select {
		case <-d.Done():
		case <-time.After(5 * time.Minute):
			t.Fatal("pkirenewd restart did not exit within 5m")
		}
		exited := time.Since(start)
		if code := d.Cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("pkirenewd restart exited %d", code)
		}
		if err := waitRestarted(cp, before, Components, time.Minute); err != nil {
			t.Fatal(err)
		}
		total := time.Since(start)
		down, n, _ := s.Stop()
		per := restartTimes(d)
		results = append(results, anchorResult{"(c) pkirenewd restart", total, down, n,
			fmt.Sprintf("exited after %.1fs; %s", exited.Seconds(), strings.Join(per, ", "))})
	}

	// (d) and (e): a full renewal of all 12 items with pkirenewd, by
	// restart policy: everything that uses a renewed file, or only what
	// cannot reload it.
	for i, policy := range []string{"all", "needed"} {
		settle()
		before := readyPods(t, cp)
		s := sampleReadyz(cp)
		start := time.Now()
		d := startPkirenewd(t, cp, "pkirenewd-renew-"+policy+".log", "renew", "--force", "--restart", "--restart-policy", policy,
			"--restart-timeout", "3m", "--kubelet-restart-command", cp.KubeletRestartCommand())
		awaitExit(t, d, 5*time.Minute)
		restarted := Components
		if policy == "needed" {
			restarted = []string{"kube-controller-manager", "kube-scheduler"}
		}
		if err := waitRestarted(cp, before, restarted, time.Minute); err != nil {
			t.Fatal(err)
		}
		total := time.Since(start)
		down, n, _ := s.Stop()
		per := restartTimes(d)
		if policy == "needed" {
			samePods(t, before, readyPods(t, cp), []string{"etcd", "kube-apiserver"}, nil)
		}
		results = append(results, anchorResult{fmt.Sprintf("(%c) pkirenewd renew --force --restart, restartPolicy %s", 'd'+i, policy), total, down, n,
			strings.Join(per, ", ") + "; then the kubelet"})
	}

	createConfigMap(t, cp, "e2e-after-anchors")
	var b strings.Builder
	fmt.Fprintf(&b, "\n| method | all four healthy again | /readyz not ok (100 ms samples) | detail |\n|---|---|---|---|\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %s | %.1f s | %.1f s (%d samples) | %s |\n", r.method, r.total.Seconds(), r.down.Seconds(), r.samples, r.detail)
	}
	t.Log(b.String())
	if len(results) != 5 {
		t.Error(errors.New("not every method ran"))
	}
}
