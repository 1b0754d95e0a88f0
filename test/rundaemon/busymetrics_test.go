package rundaemon_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

// Another process listens on the metrics address: `pkirenewd run` says so
// in the journal (a warning naming the address and the error) and in
// STATUS=, reports READY, renews what is due and keeps running; under
// systemd an exit here was a restart loop that never renewed.
func TestBusyMetricsAddressDoesNotStopTheDaemon(t *testing.T) {
	dir := t.TempDir()
	// Issued 300 days ago: due with the default renewBefore.
	l, err := renewtest.MakePKI(filepath.Join(dir, "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256", NotBefore: time.Now().Add(-300 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	blocker, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close()
	addr := blocker.Addr().String()
	notify := listenNotify(t, dir)
	var out syncBuf
	cmd := exec.Command(pkirenewdBin, "run", "--config", "/dev/null", "--pki-dir", l.PKIDir, "--kubeconfig-dir", l.KubeconfigDir,
		"--manifests-dir", filepath.Join(dir, "kubernetes"), "--state-dir", filepath.Join(dir, "state"), "--restart-components=false",
		"--metrics-address", addr, "--validity", "365d", "--log-format", "json")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.path)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill() }()
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); {
			select {
			case err := <-exited:
				t.Fatalf("the daemon exited (%v) while waiting for %s:\n%s", err, what, out.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s:\n%s", what, out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitUntil("READY=1", func() bool { return notify.has("READY=1") > 0 })
	waitUntil("the renewal", func() bool { return strings.Count(out.String(), "certificate renewed") >= 12 })
	waitUntil("a STATUS= naming the metrics problem", func() bool {
		return hasStatus(notify, "metrics not served on "+addr)
	})
	var warning string
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, `"level":"warning"`) && strings.Contains(line, "cannot serve metrics on "+addr) {
			warning = line
		}
	}
	if !strings.Contains(warning, "address already in use") {
		t.Errorf("no warning naming the address and the error:\n%s", out.String())
	}
	// Still running a while later.
	select {
	case err := <-exited:
		t.Fatalf("the daemon exited: %v\n%s", err, out.String())
	case <-time.After(time.Second):
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit 10 s after SIGTERM")
	}
}

// hasStatus reports whether a STATUS= sent contains s.
func hasStatus(n *notifySocket, s string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, st := range n.states {
		if strings.HasPrefix(st, "STATUS=") && strings.Contains(st, s) {
			return true
		}
	}
	return false
}
