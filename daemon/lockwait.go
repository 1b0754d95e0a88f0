package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pkirenewd/pkirenewd/store"
	"github.com/sirupsen/logrus"
)

// WaitingRecoverer is an engine whose recovery waits for another pkirenewd
// process that holds the lock (an operator's `pkirenewd renew` or
// `restart`) with a bound, calling waiting with the holder's pid and the
// lock file while it waits (see store.LockWait). A wait given up returns a
// *store.LockTimeoutError.
type WaitingRecoverer interface {
	RecoverWaiting(ctx context.Context, waiting func(pid, lock string)) error
}

// lockWait is what the loop knows of its waits for the lock.
type lockWait struct {
	ctx context.Context
	// ready: READY=1 was sent (while waiting, before the first check).
	ready bool
	// waiting is whom the wait in hand is for (pid, lock), said once.
	waiting string
	// lastPing is when a wait last fed the watchdog.
	lastPing time.Time
	// gaveUp is the last wait given up; recovery is owed until it is nil.
	gaveUp *store.LockTimeoutError
}

// recoverAtStart completes or undoes an interrupted transaction before the
// first check. A wait for the lock that is given up does not stop the
// daemon: recovery is tried again at the next check, and every renewal
// recovers first anyway.
func (l *loop) recoverAtStart() error {
	err := l.recover()
	switch {
	case err == nil, l.gaveUp != nil:
		return nil
	case l.lockWait.ctx.Err() != nil:
		// Stopped while waiting: the loop says STOPPING.
		return nil
	}
	return fmt.Errorf("recovering an interrupted renewal: %w", err)
}

// recoverPending recovers before a check when a transaction is pending
// or an earlier wait for the lock was given up; not again in the check
// right after the start's wait was given up.
func (l *loop) recoverPending(first, pending bool) {
	if first && l.gaveUp != nil || !pending && l.gaveUp == nil {
		return
	}
	if err := l.recover(); err != nil && l.gaveUp == nil {
		l.Log.WithError(err).Error("an interrupted renewal could not be completed or undone")
	}
}

// recover runs the engine's recovery, with the bounded and reported wait
// for the lock when the engine has one.
func (l *loop) recover() error {
	w, ok := l.engine.(WaitingRecoverer)
	if !ok {
		return l.engine.Recover()
	}
	err := w.RecoverWaiting(l.lockWait.ctx, l.waitingForLock)
	// The check that follows says the status again.
	l.waiting = ""
	var gaveUp *store.LockTimeoutError
	if !errors.As(err, &gaveUp) {
		l.gaveUp = nil
		return err
	}
	l.gaveUp = gaveUp
	l.Log.WithError(err).WithFields(logrus.Fields{"PATH": gaveUp.Path, "ACTION": "recover"}).
		Error("an interrupted renewal, if any, is not yet completed or undone: the daemon runs on and tries again at its next check")
	return err
}

// waitingForLock is called while the engine waits for the lock: the
// unit's start must not time out on another process's work (READY=1 goes
// first), systemd's status says whom the daemon waits for, and the
// watchdog is fed.
func (l *loop) waitingForLock(pid, lock string) {
	var states []string
	if !l.ready {
		l.ready = true
		states = append(states, "READY=1")
	}
	if who := pid + " " + lock; who != l.waiting {
		l.waiting = who
		if pid == "" {
			pid = "unknown"
		}
		states = append(states, fmt.Sprintf("STATUS=waiting for pid %s (pkirenewd renew/restart holds %s)", pid, lock))
	}
	if now := l.Clock.Now(); l.WatchdogInterval > 0 && now.Sub(l.lastPing) >= l.WatchdogInterval {
		l.lastPing = now
		states = append(states, "WATCHDOG=1")
	}
	if len(states) > 0 {
		l.Notify.Notify(states...)
	}
}

// recoveryStatus is what STATUS= says of a wait for the lock given up.
func (l *loop) recoveryStatus() string {
	if l.gaveUp == nil {
		return ""
	}
	pid := l.gaveUp.PID
	if pid == "" {
		pid = "unknown"
	}
	return fmt.Sprintf("; recovery postponed: pid %s held %s for %s", pid, l.gaveUp.Path, l.gaveUp.Waited)
}
