package cplane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Poller polls under a rig's Context.
type Poller struct {
	// Ctx is the rig's Context: when it ends, so does every poll, and its
	// cause goes into the error.
	Ctx context.Context
	// Gone, if set, says why polling is pointless now (a child process the
	// rig depends on has exited); it is asked before every try.
	Gone func() error
}

// Poll calls f at once and then every interval until it returns nil, the
// timeout passes or the Context ends; the error names what was awaited,
// why it stopped and what f last said.
func (p Poller) Poll(timeout, interval time.Duration, what string, f func(ctx context.Context) error) error {
	var last, gone error
	err := wait.PollUntilContextTimeout(p.Ctx, interval, timeout, true, func(ctx context.Context) (bool, error) {
		if p.Gone != nil {
			if gone = p.Gone(); gone != nil {
				return false, gone
			}
		}
		last = f(ctx)
		return last == nil, nil
	})
	switch {
	case err == nil:
		return nil
	case gone != nil:
		return fmt.Errorf("%s: %w", what, gone)
	}
	cause := context.Cause(p.Ctx)
	if cause == nil {
		cause = fmt.Errorf("not within %v", timeout)
	}
	if last == nil {
		last = errors.New("not tried")
	}
	return fmt.Errorf("%s: %w (last: %v)", what, cause, last)
}
