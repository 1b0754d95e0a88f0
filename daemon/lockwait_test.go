package daemon_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	testclock "k8s.io/utils/clock/testing"

	"github.com/pkirenewd/pkirenewd/daemon"
	"github.com/pkirenewd/pkirenewd/daemon/daemontest"
	"github.com/pkirenewd/pkirenewd/store"
)

const heldLock = "/var/lib/pkirenewd/lock"

// locked wraps the harness's engine in one whose recovery waits as
// onRecover says.
func locked(onRecover func(ctx context.Context, n int, waiting func(pid, lock string)) error) func(*daemon.Options) {
	return func(o *daemon.Options) {
		o.Engine = &daemontest.LockedEngine{Engine: o.Engine.(*daemontest.Engine), OnRecover: onRecover}
	}
}

// An operator's `pkirenewd restart` holds the lock while the unit starts:
// READY=1 goes before the wait (the start does not time out on it), the
// status names the holder and the lock, and the watchdog is fed; the
// first check comes after the wait.
func TestReadyBeforeWaitingForTheLock(t *testing.T) {
	var during []string
	inventories := -1
	var base *daemontest.Engine
	h := start(t, map[string]*daemontest.Item{"a": item(100*time.Hour, 200*time.Hour)}, func(o *daemon.Options) {
		o.WatchdogInterval = 15 * time.Second
		base = o.Engine.(*daemontest.Engine)
		n := o.Notify.(*daemontest.Notifier)
		locked(func(_ context.Context, k int, waiting func(pid, lock string)) error {
			if k == 1 {
				for i := 0; i < 3; i++ {
					waiting("4242", heldLock)
				}
				// The loop's own goroutine: no race with its Notify calls.
				during = append(during, n.States...)
				inventories = base.InventoryCount()
			}
			return nil
		})(o)
	})
	want := []string{"READY=1", "STATUS=waiting for pid 4242 (pkirenewd renew/restart holds " + heldLock + ")", "WATCHDOG=1"}
	if strings.Join(during, "|") != strings.Join(want, "|") {
		t.Errorf("while waiting: %q\nwant %q", during, want)
	}
	if inventories != 0 {
		t.Errorf("%d inventories before the wait ended", inventories)
	}
	if s := h.notify.Last("STATUS="); !strings.HasPrefix(s, "STATUS=1/1 certs ok; next: a in") {
		t.Errorf("status after the wait %q", s)
	}
}

// The wait is given up: the daemon does not exit; it says so (Error, and
// STATUS=), renews what falls due, and tries the recovery again at its
// next check.
func TestGivesUpWaitingForTheLockAndRunsOn(t *testing.T) {
	log, hook := logtest.NewNullLogger()
	gaveUp := &store.LockTimeoutError{PID: "4242", Path: heldLock, Waited: time.Hour}
	var le *daemontest.LockedEngine
	h := start(t, map[string]*daemontest.Item{"a": item(30*time.Minute, 100*time.Hour)}, func(o *daemon.Options) {
		o.Log = log
		locked(func(_ context.Context, k int, waiting func(pid, lock string)) error {
			if k == 1 {
				waiting("4242", heldLock)
				return gaveUp
			}
			return nil
		})(o)
		le = o.Engine.(*daemontest.LockedEngine)
	})
	eng := h.engine
	if n := le.Recoveries(); n != 1 {
		t.Fatalf("%d recoveries at start, want 1 (no second wait before the first check)", n)
	}
	select {
	case err := <-h.done:
		h.done <- err
		t.Fatalf("the daemon stopped: %v", err)
	default:
	}
	var errLine *logrus.Entry
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.ErrorLevel && errors.Is(e.Data[logrus.ErrorKey].(error), gaveUp) {
			errLine = e
		}
	}
	if errLine == nil || !strings.Contains(errLine.Message, "tries again at its next check") {
		t.Fatalf("no Error line for the wait given up: %v", hook.AllEntries())
	}
	if msg := gaveUp.Error(); !strings.Contains(msg, "4242") || !strings.Contains(msg, heldLock) {
		t.Errorf("the error %q names neither the holder nor the lock", msg)
	}
	if h.notify.Count("READY=1") < 1 || eng.InventoryCount() != 1 {
		t.Fatalf("no start after the wait: %v, %d inventories", h.notify.States, eng.InventoryCount())
	}
	if s := h.notify.Last("STATUS="); !strings.Contains(s, "; recovery postponed: pid 4242 held "+heldLock+" for 1h0m0s") {
		t.Errorf("status %q", s)
	}
	h.step(30 * time.Minute) // a is due: renewed meanwhile
	if eng.RenewalCount() != 1 {
		t.Fatalf("renewals %v", eng.Renewals)
	}
	if n := le.Recoveries(); n != 2 {
		t.Errorf("%d recoveries, want 2 (tried again at the next check)", n)
	}
	if s := h.notify.Last("STATUS="); strings.Contains(s, "postponed") {
		t.Errorf("status %q after a check that recovered", s)
	}
}

// SIGTERM while waiting for the lock stops the daemon cleanly; another
// recovery failure still ends it with an error (the unit's Restart=).
func TestStopWhileWaitingForTheLock(t *testing.T) {
	for _, tc := range []struct {
		name    string
		recover func(ctx context.Context) error
		wantErr bool
	}{
		{"stopped", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }, false},
		{"recovery fails", func(context.Context) error { return errors.New("journal.json: unexpected end of JSON input") }, true},
	} {
		clk := testclock.NewFakeClock(t0)
		n := &daemontest.Notifier{}
		log := logrus.New()
		log.SetOutput(io.Discard)
		eng := &daemontest.LockedEngine{
			Engine: &daemontest.Engine{Now: clk.Now, Items: map[string]*daemontest.Item{"a": item(time.Hour, 2*time.Hour)}},
			OnRecover: func(ctx context.Context, _ int, waiting func(pid, lock string)) error {
				waiting("4242", heldLock)
				return tc.recover(ctx)
			},
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- daemon.Run(ctx, daemon.Options{Engine: eng, Clock: clk, Notify: n, Log: log}) }()
		waitFor(t, "the wait", func() bool { return n.Count("STATUS=waiting for pid 4242") == 1 })
		cancel()
		select {
		case err := <-done:
			if (err != nil) != tc.wantErr {
				t.Errorf("%s: Run returned %v", tc.name, err)
			}
			if !tc.wantErr && n.Count("STOPPING=1") != 1 {
				t.Errorf("%s: states %v", tc.name, n.States)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Run did not return", tc.name)
		}
	}
}
