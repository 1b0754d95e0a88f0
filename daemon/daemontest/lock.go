package daemontest

import (
	"context"
	"sync"

	"github.com/pkirenewd/pkirenewd/daemon"
)

// LockedEngine is an Engine whose recovery waits for the lock another
// pkirenewd process holds, as the test scripts it.
type LockedEngine struct {
	*Engine
	// OnRecover is the wait and the recovery of the n-th call (from 1);
	// nil: recovered at once.
	OnRecover func(ctx context.Context, n int, waiting func(pid, lock string)) error

	mu         sync.Mutex
	recoveries int
}

var _ daemon.WaitingRecoverer = (*LockedEngine)(nil)

// RecoverWaiting implements daemon.WaitingRecoverer.
func (e *LockedEngine) RecoverWaiting(ctx context.Context, waiting func(pid, lock string)) error {
	e.mu.Lock()
	e.recoveries++
	n := e.recoveries
	e.mu.Unlock()
	if e.OnRecover == nil {
		return nil
	}
	return e.OnRecover(ctx, n, waiting)
}

// Recoveries is how many times RecoverWaiting was called.
func (e *LockedEngine) Recoveries() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.recoveries
}
