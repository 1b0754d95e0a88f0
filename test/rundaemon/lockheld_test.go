package rundaemon_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/renew/renewtest"
	"github.com/pkirenewd/pkirenewd/store"
)

// An operator's `pkirenewd restart` (here: the test) holds the lock while
// `pkirenewd run` starts: READY=1 comes at once, STATUS= names the holder's
// pid and the lock, and once the lock is let go the daemon renews what is
// due.
func TestStartWhileAnotherProcessHoldsTheLock(t *testing.T) {
	dir := t.TempDir()
	l, err := renewtest.MakePKI(filepath.Join(dir, "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256", NotBefore: time.Now().Add(-300 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	unlock, err := store.Lock(state, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { unlock() }()
	notify := listenNotify(t, dir)
	var out syncBuf
	cmd := exec.Command(pkirenewdBin, "run", "--config", "/dev/null", "--pki-dir", l.PKIDir, "--kubeconfig-dir", l.KubeconfigDir,
		"--manifests-dir", filepath.Join(dir, "kubernetes"), "--state-dir", state, "--restart-components=false",
		"--metrics-address", "", "--validity", "365d")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.path, "WATCHDOG_USEC=2000000")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !cond(); {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s:\n%s", what, out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waiting := "STATUS=waiting for pid " + strconv.Itoa(os.Getpid()) + " (pkirenewd renew/restart holds " + filepath.Join(state, "lock") + ")"
	waitUntil("READY=1 and "+waiting, func() bool { return notify.has("READY=1") > 0 && notify.has(waiting) > 0 })
	// Two watchdog periods (1 s each) while it waits: fed.
	time.Sleep(2500 * time.Millisecond)
	if n := notify.has("WATCHDOG=1"); n < 2 {
		t.Errorf("%d WATCHDOG=1 in 2.5 s of waiting at WatchdogSec=2s", n)
	}
	if strings.Contains(out.String(), "certificate renewed") {
		t.Fatal("renewed while the lock was held")
	}
	unlock()
	unlock = func() {}
	waitUntil("the renewal", func() bool { return strings.Count(out.String(), "certificate renewed") >= 12 })
}
