package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"
)

// LockWaitBound is how long LockWait waits for another pkirenewd process
// by default. It is longer than the longest a process holds the lock with
// the default configuration: a `pkirenewd restart` or `renew --restart`
// waits up to coordinationTimeout (10 min) for the lease and again for
// healthy etcd peers before etcd's restart (10 min), gives each of the
// four components restartTimeout (4 x 6 min), and after a failed one
// restarts it once more on the restored files (6 min): 50 min. A wait
// beyond an hour is a process that hangs, not one that works.
const LockWaitBound = time.Hour

// LockPoll is how often LockWait tries the lock by default.
const LockPoll = time.Second

// LockOptions bound and report a wait for the lock.
type LockOptions struct {
	// Clock times the wait (default: the real clock).
	Clock clock.Clock
	// Bound is how long to wait before giving up (default LockWaitBound).
	Bound time.Duration
	// Poll is how often the lock is tried (default LockPoll).
	Poll time.Duration
	// Waiting, when set, is called at every try that finds the lock held,
	// with the holder's pid ("" when it has not written it) and the lock
	// file: the daemon says whom it waits for and feeds its watchdog.
	Waiting func(pid, lock string)
}

// LockTimeoutError is a wait for the lock that was given up.
type LockTimeoutError struct {
	// PID is the holder's, as it wrote it in the lock file.
	PID, Path string
	Waited    time.Duration
}

func (e *LockTimeoutError) Error() string {
	return fmt.Sprintf("gave up after %s waiting for the pkirenewd process %s that holds %s", e.Waited, e.holder(), e.Path)
}

func (e *LockTimeoutError) holder() string {
	if e.PID == "" {
		return "(pid unknown)"
	}
	return e.PID
}

// LockWait is Lock with a wait that is bounded and observable: it tries
// the lock every o.Poll on o.Clock, calls o.Waiting while another process
// holds it, and gives up after o.Bound with a *LockTimeoutError naming the
// holder and the lock file, or when ctx is done.
func LockWait(ctx context.Context, stateDir string, log logrus.FieldLogger, o LockOptions) (unlock func(), err error) {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Bound == 0 {
		o.Bound = LockWaitBound
	}
	if o.Poll == 0 {
		o.Poll = LockPoll
	}
	f, p, err := openLock(stateDir)
	if err != nil {
		return nil, err
	}
	start := o.Clock.Now()
	said := ""
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if err != syscall.EWOULDBLOCK && err != syscall.EINTR {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		pid := lockHolder(p)
		if pid != said && log != nil {
			log.WithField("PATH", p).Warnf("waiting for the pkirenewd process %s that holds %s (at most %s)", pid, p, o.Bound)
		}
		said = pid
		if waited := o.Clock.Since(start); waited >= o.Bound {
			f.Close()
			return nil, &LockTimeoutError{PID: pid, Path: p, Waited: waited}
		}
		if o.Waiting != nil {
			o.Waiting(pid, p)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for the pkirenewd process %s that holds %s: %w", pid, p, ctx.Err())
		case <-o.Clock.After(o.Poll):
		}
	}
	return held(f), nil
}

// openLock opens the lock file in stateDir, making both when absent.
func openLock(stateDir string) (*os.File, string, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, "", fmt.Errorf("state dir: %w", err)
	}
	p := filepath.Join(stateDir, "lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, "", fmt.Errorf("lock: %w", err)
	}
	return f, p, nil
}

// lockHolder is the pid the holder of the lock file p wrote in it.
func lockHolder(p string) string {
	data, _ := os.ReadFile(p)
	return strings.TrimSpace(string(data))
}

// held writes this process's pid into the lock file it now holds, for
// those who wait, and returns the unlock.
func held(f *os.File) (unlock func()) {
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { _ = f.Close() }
}

// Lock takes the exclusive lock that serializes pkirenewd processes on a
// node (the daemon and a manual `pkirenewd renew`). While another process
// holds it, waiting is announced once with the holder's pid.
//
// The wait has no bound; LockWait bounds it and reports it.
func Lock(stateDir string, log logrus.FieldLogger) (unlock func(), err error) {
	f, p, err := openLock(stateDir)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		log.Warnf("waiting for the pkirenewd process %s that holds %s", lockHolder(p), p)
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
	}
	return held(f), nil
}
