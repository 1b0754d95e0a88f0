//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/cri"
)

// awaitExit waits for a one-shot pkirenewd command and fails the test
// unless it exits 0.
func awaitExit(t *testing.T, d *daemon, timeout time.Duration) {
	t.Helper()
	select {
	case <-d.Done():
	case <-time.After(timeout):
		t.Fatalf("pkirenewd did not exit within %v", timeout)
	}
	if code := d.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("pkirenewd exited %d (its log is in the test's log dir)", code)
	}
}

// servesFiles fails unless the certificates served on 6443 (apiserver),
// 2379 and 2380 (etcd server and peer) are the files on disk.
func servesFiles(t *testing.T, ctx context.Context) {
	t.Helper()
	for _, x := range []struct{ addr, file string }{
		{"127.0.0.1:6443", filepath.Join(PKIDir, "apiserver.crt")},
		{"127.0.0.1:2379", filepath.Join(PKIDir, "etcd/server.crt")},
		{AdvertiseAddress + ":2380", filepath.Join(PKIDir, "etcd/peer.crt")},
	} {
		onDisk, err := cri.SerialOnDisk(x.file)
		if err != nil {
			t.Fatal(err)
		}
		served, err := cri.HTTPProber{}.ServedSerial(ctx, x.addr)
		switch {
		case err != nil:
			t.Error(err)
		case served != onDisk:
			t.Errorf("%s serves serial %s, %s holds %s", x.addr, served, x.file, onDisk)
		default:
			t.Logf("%s serves %s's serial %s", x.addr, filepath.Base(x.file), served)
		}
	}
}

// samePods fails unless each named component runs in the same sandbox and
// container as before; restarted fails unless each runs in a new sandbox.
func samePods(t *testing.T, before, after map[string]Pod, same, restarted []string) {
	t.Helper()
	for _, c := range same {
		if after[c].SandboxID != before[c].SandboxID || after[c].ContainerID != before[c].ContainerID {
			t.Errorf("%s was restarted: sandbox %.13s -> %.13s, container %.13s -> %.13s", c,
				before[c].SandboxID, after[c].SandboxID, before[c].ContainerID, after[c].ContainerID)
		}
	}
	for _, c := range restarted {
		if after[c].SandboxID == before[c].SandboxID {
			t.Errorf("%s was not restarted (sandbox %.13s)", c, before[c].SandboxID)
		}
	}
}

// A renewal of all 12 items under the default restart policy, needed:
// etcd and kube-apiserver take up their renewed certificates by
// themselves (same sandboxes and containers, the renewed serials on 6443,
// 2379 and 2380), only kube-controller-manager, kube-scheduler and the
// kubelet are restarted, and /readyz, sampled every 100 ms, is never not
// ok. Then every old certificate expires and new connections are forced:
// etcd restarted by hand (the apiserver reconnects with its renewed etcd
// client certificate), a pod's log through the kubelet (which checks the
// apiserver's renewed kubelet client certificate against the CA), a write.
func TestNeededPolicyRenewalWithoutDowntime(t *testing.T) {
	// The old certificates end 8 minutes after kubeadm issued them; the
	// renewal comes about a minute later and leaves them 7 minutes, more
	// than the 5 in which the apiserver re-reads its kubelet client
	// certificate (with less, that alone would restart it).
	const validity = 8 * time.Minute
	cp := StartControlPlane(t, Options{Validity: validity})
	ctx := cp.Context()
	expiry := maxNotAfter(t)
	before := readyPods(t, cp)
	old := leafSerials(t)

	s := sampleReadyz(cp)
	start := time.Now()
	d := startPkirenewd(t, cp, "pkirenewd-renew.log", "renew", "--force", "--restart", "--restart-policy", "needed",
		"--kubelet-restart-command", cp.KubeletRestartCommand(), "--kubelet-config", cp.kubeletConfigPath(), "--restart-timeout", "3m")
	awaitExit(t, d, 5*time.Minute)
	took := time.Since(start)
	down, samples, failed := s.Stop()

	for k, v := range leafSerials(t) {
		if v == old[k] {
			t.Errorf("%s was not renewed", k)
		}
	}
	samePods(t, before, readyPods(t, cp), []string{"etcd", "kube-apiserver"}, []string{"kube-controller-manager", "kube-scheduler"})
	evs := d.Events()
	if !kubeletRestartLogged(evs) {
		t.Error("the kubelet (embedded kubelet.conf) was not restarted")
	}
	for _, e := range evs {
		if strings.Contains(e.Str("msg"), "no restart needed") || strings.Contains(e.Str("msg"), "will be restarted") {
			t.Logf("pkirenewd: %s", e.Str("msg"))
		}
	}
	servesFiles(t, ctx)
	if failed > 0 {
		t.Errorf("/readyz was not ok in %d of %d samples (%.1f s)", failed, samples, down.Seconds())
	}
	t.Logf("| pkirenewd renew --force --restart, restartPolicy needed | %.1f s | %.1f s (%d samples) | etcd and kube-apiserver reloaded, not restarted |",
		took.Seconds(), down.Seconds(), samples)

	t.Logf("waiting for the old certificates to expire at %s (%v)", expiry.UTC().Format(time.RFC3339), time.Until(expiry).Round(time.Second))
	select {
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	case <-time.After(time.Until(expiry) + 5*time.Second):
	}
	r := startPkirenewd(t, cp, "pkirenewd-restart-etcd.log", "restart", "etcd", "--restart-timeout", "3m")
	awaitExit(t, r, 5*time.Minute)
	if err := cp.WaitHealthy(2 * time.Minute); err != nil {
		t.Fatalf("after etcd's restart with every old certificate expired: %v", err)
	}
	createConfigMap(t, cp, "e2e-needed-after-expiry")
	pod := fmt.Sprintf("/api/v1/namespaces/kube-system/pods/kube-scheduler-%s/log?container=kube-scheduler&tailLines=1", cp.Opts.NodeName)
	if b, err := cp.Admin.Get(ctx, pod); err != nil {
		t.Errorf("a static pod's log through the kubelet (the apiserver's kubelet client certificate): %v", err)
	} else {
		t.Logf("log through the kubelet: %.120s", strings.TrimSpace(string(b)))
	}
	servesFiles(t, ctx)
}

// Day 366 under restartPolicy needed: every leaf has expired and the node
// rebooted. pkirenewd renews; etcd takes up its certificates at the next
// handshake and is not restarted; the apiserver is (its kubelet client
// certificate, re-read only every 5 minutes, has already ended), then the
// controller-manager, the scheduler and the kubelet. Measured: the daemon's
// start to /readyz ok with the renewed admin.conf.
func TestDay366NeededPolicy(t *testing.T) {
	cp := expiredControlPlane(t)
	ctx := cp.Context()
	before := readyPods(t, cp)

	start := time.Now()
	d := startDaemon(t, cp, "--restart-policy", "needed", "--validity", "24h", "--restart-timeout", "6m",
		"--kubelet-restart-command", cp.KubeletRestartCommand())
	var readyAt time.Time
	err := cp.Poll(10*time.Minute, 100*time.Millisecond, "the expired control plane healed", func(ctx context.Context) error {
		if d.exited() {
			return fmt.Errorf("pkirenewd exited: %v", d.Cmd.ProcessState)
		}
		if readyAt.IsZero() {
			if err := cp.apiserverReady(ctx); err != nil {
				return err
			}
			readyAt = time.Now()
		}
		if err := cp.Healthy(ctx); err != nil {
			return err
		}
		return rollFinished(d)
	})
	if err != nil {
		t.Fatal(err)
	}
	healed := time.Since(start)
	if err := d.stop(t); err != nil {
		t.Error(err)
	}
	var order []string
	for _, e := range d.Events() {
		switch e.Str("msg") {
		case "component healthy":
			order = append(order, e.Str("COMPONENT"))
		case "renewal failed":
			t.Errorf("the daemon reported a failed renewal: %v", e.Fields)
		}
	}
	if want := "kube-apiserver,kube-controller-manager,kube-scheduler"; strings.Join(order, ",") != want {
		t.Errorf("restarted %v, want %s", order, want)
	}
	samePods(t, before, readyPods(t, cp), []string{"etcd"}, []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"})
	servesFiles(t, ctx)
	createConfigMap(t, cp, "e2e-day-366-needed")
	t.Logf("day 366, restartPolicy needed: /readyz ok with the renewed admin.conf %v after the daemon started; all healthy and nothing owed after %v",
		readyAt.Sub(start).Round(time.Millisecond), healed.Round(time.Millisecond))
}
