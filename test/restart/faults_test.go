package restart_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/renew/renewtest"
	"github.com/pkirenewd/pkirenewd/test/containerdrig"
)

// The fault matrix of a renewal and its roll: pkirenewd (a build with the
// failpoints tag) is SIGKILLed at each step of the orchestration —
// recovered, committed but the owed restarts not yet recorded (where a
// record alone would lose them), recorded, a pod stopped but not removed,
// removed but not yet back, healthy but not yet crossed off, the roll done
// but not looked at again — and in the middle of the transaction itself.
// The invariant after each: check is clean, or exits non-zero naming what
// is owed; and after the daemon's next cycles every component runs on the
// files on disk (check clean), with no record, journal or staged file left.
func TestFaultMatrix(t *testing.T) {
	crashy := buildFailpoints(t)
	rig := containerdrig.Start(t)
	// Fresh certificates: check has nothing to say but what a fault left.
	n := newNodeWith(t, rig, nil, renewtest.Options{Algorithm: "ECDSA-P256"}, nil)
	steps := []string{
		"converge:recovered",
		"journal-committed",
		"converge:committed",
		"converge:owed-recorded",
		"stopped:etcd",
		"removed:kube-apiserver",
		"healthy:kube-controller-manager",
		"stopped:kube-scheduler",
		"converge:rolled",
	}
	for _, step := range steps {
		start := time.Now()
		cmd := exec.Command(crashy, n.args("renew", "--force", "--restart")...)
		cmd.Env = append(os.Environ(), "PKIRENEWD_FAILPOINT_NAME="+step)
		out, err := cmd.CombinedOutput()
		if !killed(err) {
			t.Fatalf("%s: not killed there (%v):\n%s", step, err, out)
		}
		report, code := n.pkirenewd(t, "check")
		owes := strings.Contains(report, "STALE") || strings.Contains(report, "interrupted renewal") || strings.Contains(report, "Restarts owed")
		if code != 0 && !owes {
			t.Errorf("%s: check exits %d without naming what is owed:\n%s", step, code, report)
		}
		if code == 0 && owes {
			t.Errorf("%s: check exits 0 but reports something owed:\n%s", step, report)
		}
		killedAt := time.Since(start)
		took := converge(t, n)
		t.Logf("killed at %-32s (%.1fs in) check then: exit %d; the daemon converged in %.1fs", step, killedAt.Seconds(), code, took.Seconds())
		// Independently of check: every component that was running when
		// the files were renewed runs in a sandbox made after that.
		if step != "converge:recovered" {
			for _, c := range order {
				times := n.kubelet.CreationTimes(c)
				if len(times) == 0 || !times[len(times)-1].After(start) {
					t.Errorf("%s: %s was not restarted after the renewal", step, c)
				}
			}
		}
		for _, f := range []string{"pending-restart.json", "journal.json"} {
			if _, err := os.Stat(filepath.Join(n.state, f)); err == nil {
				t.Errorf("%s: %s left after convergence", step, f)
			}
		}
		staged, _ := filepath.Glob(filepath.Join(n.pki, ".pkirenewd-*"))
		if len(staged) > 0 {
			t.Errorf("%s: staged files left: %v", step, staged)
		}
	}
}

// converge runs the daemon until check is clean and returns how long that
// took; the daemon is stopped again.
func converge(t *testing.T, n *node) time.Duration {
	t.Helper()
	start := time.Now()
	cmd, out := n.startDaemon(t)
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	deadline := time.Now().Add(90 * time.Second)
	for {
		report, code := n.pkirenewd(t, "check")
		if code == 0 {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("not converged in 90 s: check exits %d\n%s\ndaemon:\n%s", code, report, out.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func killed(err error) bool {
	ee, ok := err.(*exec.ExitError)
	if !ok {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

func buildFailpoints(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pkirenewd-failpoints")
	if out, err := exec.Command("go", "build", "-tags", "failpoints", "-o", bin, "github.com/pkirenewd/pkirenewd/cmd/pkirenewd").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}
