//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// snapshotPKI hashes every file under the PKI dir and every kubeconfig
// (path, mode, content).
func snapshotPKI(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	add := func(path string) {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(b)
		out[path] = fmt.Sprintf("%v %s", st.Mode().Perm(), hex.EncodeToString(h[:8]))
	}
	if err := filepath.WalkDir(PKIDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			add(p)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	confs, _ := filepath.Glob(filepath.Join(KubernetesDir, "*.conf"))
	for _, c := range confs {
		add(c)
	}
	return out
}

func diffSnapshots(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if b[k] != v {
			d = append(d, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, k+" (new)")
		}
	}
	sort.Strings(d)
	return d
}

// holdPort binds addr as soon as it is free (within timeout) and accepts
// and closes every connection, so that nothing else can serve there.
func holdPort(ctx context.Context, addr string, timeout time.Duration) (net.Listener, error) {
	deadline := time.Now().Add(timeout)
	for {
		l, err := net.Listen("tcp", addr)
		if err == nil {
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			return l, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) || ctx.Err() != nil {
			return nil, err
		}
		time.Sleep(time.Millisecond)
	}
}

func waitEvent(cp *ControlPlane, d *daemon, timeout time.Duration, what string, match func(logEvent) bool) (logEvent, error) {
	deadline := time.Now().Add(timeout)
	for {
		for _, e := range d.Events() {
			if match(e) {
				return e, nil
			}
		}
		if d.exited() {
			time.Sleep(100 * time.Millisecond) // the last lines
			for _, e := range d.Events() {
				if match(e) {
					return e, nil
				}
			}
			return logEvent{}, fmt.Errorf("%s: pkirenewd exited: %v", what, d.Cmd.ProcessState)
		}
		if time.Now().After(deadline) || cp.ctx.Err() != nil {
			return logEvent{}, fmt.Errorf("%s: not within %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRollbackWhenTheSchedulerFails is scenario 3: `pkirenewd renew
// --force --restart` renews everything and rolls; right after it stops
// kube-scheduler's pod the test takes the scheduler's port
// (127.0.0.1:10259, kubeadm's --bind-address), so the new scheduler cannot
// serve and never becomes healthy. pkirenewd must stop the roll, restore
// the previous files (byte for byte), restart the scheduler on them and
// exit non-zero; once the port is free again the node is healthy and the
// PKI consistent (`pkirenewd check` exits 0).
func TestRollbackWhenTheSchedulerFails(t *testing.T) {
	const restartTimeout = 60 * time.Second // etcd's first restart on a young pod took >30 s once (see README)
	cp := StartControlPlane(t, Options{})
	ctx := cp.Context()
	before := snapshotPKI(t)
	oldSched, err := cp.ReadyPod(ctx, "kube-scheduler")
	if err != nil {
		t.Fatal(err)
	}

	d := startPkirenewd(t, cp, "pkirenewd-renew.log", "renew", "--force", "--restart", "--restart-timeout", restartTimeout.String())
	stopping, err := waitEvent(cp, d, 3*time.Minute, "pkirenewd stopping kube-scheduler", func(e logEvent) bool {
		return e.Str("msg") == "stopping static pod" && e.Str("COMPONENT") == "kube-scheduler"
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := holdPort(ctx, "127.0.0.1:10259", 20*time.Second)
	if err != nil {
		t.Fatalf("could not take 127.0.0.1:10259 after the scheduler was stopped: %v", err)
	}
	held := time.Now()
	released := false
	release := func() {
		if !released {
			released = true
			l.Close()
		}
	}
	defer release()
	t.Logf("holding 127.0.0.1:10259 %v after pkirenewd stopped the scheduler", held.Sub(stopping.At).Round(time.Millisecond))

	// The roll fails; pkirenewd restores and restarts the scheduler once
	// more: free the port then, so that restart can succeed.
	failed, err := waitEvent(cp, d, restartTimeout+time.Minute, "pkirenewd giving up on kube-scheduler", func(e logEvent) bool {
		return e.Str("ACTION") == "restart-failed"
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pkirenewd: %s (COMPONENT=%s, LAST_PROBE=%s, error=%s) %v after the port was taken",
		failed.Str("msg"), failed.Str("COMPONENT"), failed.Str("LAST_PROBE"), failed.Str("error"), failed.At.Sub(held).Round(time.Millisecond))
	if failed.Str("COMPONENT") != "kube-scheduler" {
		t.Errorf("the failed component is %q, want kube-scheduler", failed.Str("COMPONENT"))
	}
	rb, err := waitEvent(cp, d, time.Minute, "pkirenewd restoring", func(e logEvent) bool {
		return e.Str("ACTION") == "rollback"
	})
	if err != nil {
		t.Fatal(err)
	}
	// Restored before the scheduler is restarted on them.
	if diff := diffSnapshots(before, snapshotPKI(t)); len(diff) > 0 {
		t.Errorf("after %q the files differ from before the renewal: %v", rb.Str("msg"), diff)
	} else {
		t.Logf("pkirenewd: %s (COMPONENT=%s); every file under %s and every kubeconfig equals the snapshot from before the renewal (%d files)",
			rb.Str("msg"), rb.Str("COMPONENT"), PKIDir, len(before))
	}
	release()
	t.Logf("released 127.0.0.1:10259")

	select {
	case <-d.Done():
	case <-time.After(restartTimeout + time.Minute):
		t.Fatal("pkirenewd renew did not exit")
	}
	code := d.Cmd.ProcessState.ExitCode()
	t.Logf("pkirenewd renew --force --restart exited %d", code)
	if code == 0 {
		t.Error("pkirenewd renew exited 0 although the scheduler failed")
	}
	evs := d.Events()
	var restarted []string
	for _, e := range evs {
		if e.Str("msg") == "stopping static pod" {
			restarted = append(restarted, e.Str("COMPONENT"))
		}
		if e.Str("level") == "error" || e.Str("level") == "warning" {
			t.Logf("pkirenewd %s: %s %s COMPONENT=%s", e.Str("level"), e.Str("msg"), e.Str("error"), e.Str("COMPONENT"))
		}
	}
	retried := false
	for _, e := range evs {
		if e.Str("msg") == "component healthy" && e.Str("COMPONENT") == "kube-scheduler" && !e.At.Before(rb.At) {
			retried = true
			t.Logf("pkirenewd: after the rollback kube-scheduler healthy again in %s (sandbox %s)", e.Str("TOOK"), e.Str("SANDBOX"))
		}
	}
	if !retried {
		t.Error("pkirenewd did not report the scheduler healthy after restarting it on the restored files")
	}
	want := "etcd,kube-apiserver,kube-controller-manager,kube-scheduler,kube-scheduler"
	if strings.Join(restarted, ",") != want {
		t.Errorf("pkirenewd stopped %v, want %s (the scheduler twice: after the rollback again)", restarted, want)
	}
	if diff := diffSnapshots(before, snapshotPKI(t)); len(diff) > 0 {
		t.Errorf("after pkirenewd exited the files differ from before the renewal: %v", diff)
	}

	// Healthy again, the scheduler in a new sandbox, the PKI consistent.
	start := time.Now()
	if err := cp.WaitHealthy(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("all four healthy %v after the port was released", time.Since(start).Round(time.Millisecond))
	p, err := cp.ReadyPod(ctx, "kube-scheduler")
	if err != nil {
		t.Fatal(err)
	}
	if p.SandboxID == oldSched.SandboxID {
		t.Errorf("kube-scheduler still runs in its sandbox from before (%.13s)", p.SandboxID)
	}
	createConfigMap(t, cp, "e2e-after-rollback")
	out, err := exec.Command(pkirenewdBin, "check", "--config", "/dev/null", "--pki-dir", PKIDir, "--kubeconfig-dir", KubernetesDir,
		"--manifests-dir", ManifestsDir).CombinedOutput()
	if err != nil {
		t.Errorf("pkirenewd check: %v\n%s", err, out)
	} else {
		t.Logf("pkirenewd check: exit 0\n%s", out)
	}
}
