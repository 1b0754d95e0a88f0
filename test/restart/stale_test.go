package restart_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/renew/renewtest"
	"github.com/pkirenewd/pkirenewd/test/containerdrig"
)

// The most common real-world failure: certificates renewed by hand
// (`kubeadm certs renew all`, here `pkirenewd renew` without --restart,
// which leaves no record of owed restarts) and nothing restarted. The
// truth is observed, not remembered: check names every component that
// runs on credentials older than its files and exits 1, and the daemon,
// started afterwards with nothing due and no record, restarts exactly
// those and check is clean again.
func TestStaleComponentsAreObservedAndRestarted(t *testing.T) {
	rig := containerdrig.Start(t)
	n := newNodeWith(t, rig, nil, renewtest.Options{Algorithm: "ECDSA-P256"}, nil)
	if out, code := n.pkirenewd(t, "check"); code != 0 || strings.Contains(out, "STALE") {
		t.Fatalf("fresh node: check exit %d\n%s", code, out)
	}
	if out, code := n.pkirenewd(t, "renew", "--force"); code != 0 {
		t.Fatalf("renew by hand: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(n.state + "/pending-restart.json"); err == nil {
		t.Fatal("renew without --restart recorded owed restarts: this test needs none")
	}
	out, code := n.pkirenewd(t, "check")
	if code != 1 {
		t.Fatalf("check after a renewal by hand: exit %d, want 1\n%s", code, out)
	}
	for _, c := range order {
		if !strings.Contains(out, "STALE "+c+":") {
			t.Errorf("check does not name %s as stale:\n%s", c, out)
		}
	}

	before := n.sandboxCounts()
	start := time.Now()
	cmd, dout := n.startDaemon(t)
	n.waitRestarted(t, before, 90*time.Second, dout)
	took := time.Since(start)
	// Converged: check is clean and the daemon renews nothing.
	var last string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		if last, code = n.pkirenewd(t, "check"); code == 0 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if code != 0 {
		t.Fatalf("check after the daemon's restarts: exit %d\n%s\n%s", code, last, dout.String())
	}
	_ = cmd.Process.Signal(os.Interrupt)
	_ = cmd.Wait()
	log := dout.String()
	for _, want := range []string{"runs on old credentials", "component healthy"} {
		if !strings.Contains(log, want) {
			t.Errorf("the daemon's log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "certificate renewed") {
		t.Errorf("the daemon renewed something, though nothing was due:\n%s", log)
	}
	for _, c := range order {
		if got := len(n.kubelet.Sandboxes(c)) - before[c]; got != 1 {
			t.Errorf("%s restarted %d times, want once", c, got)
		}
	}
	t.Logf("stale components restarted %.1fs after the daemon started", took.Seconds())
}
