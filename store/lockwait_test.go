package store_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/store"
	logtest "github.com/sirupsen/logrus/hooks/test"
	testclock "k8s.io/utils/clock/testing"
)

// lockWaiter runs LockWait in the background on a fake clock, as the
// daemon does while another process (here: the test, through a second
// open file description, which flock sets against the first) holds the
// lock.
type lockWaiter struct {
	t       *testing.T
	clk     *testclock.FakeClock
	mu      sync.Mutex
	waiting []string // "pid lock" per call
	done    chan error
	unlock  func()
}

func startLockWait(t *testing.T, ctx context.Context, state string, bound time.Duration) *lockWaiter {
	t.Helper()
	w := &lockWaiter{t: t, clk: testclock.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), done: make(chan error, 1)}
	log, _ := logtest.NewNullLogger()
	go func() {
		unlock, err := store.LockWait(ctx, state, log, store.LockOptions{
			Clock: w.clk, Bound: bound, Poll: time.Minute,
			Waiting: func(pid, lock string) {
				w.mu.Lock()
				defer w.mu.Unlock()
				w.waiting = append(w.waiting, pid+" "+lock)
			},
		})
		w.unlock = unlock
		w.done <- err
	}()
	return w
}

// sleeping waits until LockWait sleeps between two tries.
func (w *lockWaiter) sleeping() {
	w.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !w.clk.HasWaiters() {
		if time.Now().After(deadline) {
			w.t.Fatal("LockWait does not sleep between tries")
		}
		time.Sleep(time.Millisecond)
	}
}

// poll lets one poll interval pass once LockWait sleeps.
func (w *lockWaiter) poll() {
	w.t.Helper()
	w.sleeping()
	w.clk.Step(time.Minute)
}

func (w *lockWaiter) calls() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.waiting...)
}

func (w *lockWaiter) result() error {
	w.t.Helper()
	select {
	case err := <-w.done:
		return err
	case <-time.After(5 * time.Second):
		w.t.Fatal("LockWait did not return")
		return nil
	}
}

func (w *lockWaiter) returned() bool {
	select {
	case err := <-w.done:
		w.done <- err
		return true
	default:
		return false
	}
}

// While another process holds the lock, the waiter is told the holder's
// pid and the lock file at every try; at the bound it gives up with an
// error naming both.
func TestLockWaitGivesUpNamingTheHolder(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	hold, err := store.Lock(state, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hold()
	w := startLockWait(t, context.Background(), state, 30*time.Minute)
	for i := 0; i < 29; i++ {
		w.poll()
	}
	w.sleeping()
	if w.returned() {
		t.Fatal("gave up before the bound")
	}
	w.poll() // 30 min
	err = w.result()
	var lte *store.LockTimeoutError
	if !errors.As(err, &lte) {
		t.Fatalf("err %v, want a *LockTimeoutError", err)
	}
	pid, lock := strconv.Itoa(os.Getpid()), filepath.Join(state, "lock")
	if lte.PID != pid || lte.Path != lock || lte.Waited != 30*time.Minute {
		t.Errorf("%+v, want pid %s, %s, 30m", lte, pid, lock)
	}
	if msg := err.Error(); !strings.Contains(msg, " "+pid+" ") || !strings.Contains(msg, lock) {
		t.Errorf("message %q names neither the holder nor the lock", msg)
	}
	calls := w.calls()
	if len(calls) != 30 {
		t.Errorf("%d waiting calls in 30 tries", len(calls))
	}
	for _, c := range calls {
		if c != pid+" "+lock {
			t.Fatalf("waiting(%q), want %q", c, pid+" "+lock)
		}
	}
}

// When the holder lets go, the waiter takes the lock at its next try and
// holds it against others.
func TestLockWaitTakesTheLockWhenFreed(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	hold, err := store.Lock(state, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := startLockWait(t, context.Background(), state, time.Hour)
	w.poll()
	w.poll()
	w.sleeping()
	if w.returned() {
		t.Fatal("took a held lock")
	}
	hold()
	w.poll()
	if err := w.result(); err != nil {
		t.Fatal(err)
	}
	defer w.unlock()
	f, err := os.Open(filepath.Join(state, "lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("flock on the lock LockWait took: %v, want EWOULDBLOCK", err)
	}
	if n := len(w.calls()); n < 2 {
		t.Errorf("%d waiting calls while held", n)
	}
}

// A free lock is taken at once, without a waiting call; a cancelled
// context ends a wait.
func TestLockWaitFreeAndCancelled(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	w := startLockWait(t, context.Background(), state, time.Hour)
	if err := w.result(); err != nil {
		t.Fatal(err)
	}
	if len(w.calls()) != 0 {
		t.Errorf("waiting called for a free lock: %v", w.calls())
	}
	ctx, cancel := context.WithCancel(context.Background())
	w2 := startLockWait(t, ctx, state, time.Hour)
	w2.poll()
	cancel()
	if err := w2.result(); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	w.unlock()
}
