package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"
)

// Guard says whether restarting the local etcd keeps quorum: every other
// member must be healthy. The error names the member that is not.
type Guard interface {
	OthersHealthy(ctx context.Context) error
}

// Critical is the journal priority (crit) of the recovery message; the
// systemd journal hook honours a PRIORITY field.
const Critical = 2

// Coordinator hands out the right to restart this node's components.
type Coordinator struct {
	// NewLease builds the lease client from the node's admin credentials
	// as they are on disk now (a renewal may just have replaced them).
	NewLease func() (*Lease, error)
	// LeaseName is for messages ("kube-system/pkirenewd").
	LeaseName string
	// Access, when set, makes sure pkirenewd's own identity may take the
	// lease before it tries (nil: admin.conf, which may do anything).
	Access *Access
	// Guard protects etcd's quorum; nil: no guard.
	Guard Guard
	// Wait bounds how long Acquire waits for the lease, and a gate for
	// healthy etcd peers, before giving up (the caller retries later).
	// Default 5m.
	Wait time.Duration
	// Retry is the pause between attempts, jittered to 1-2x so nodes
	// that fall due together spread out. Default 5s.
	Retry time.Duration
	// Call bounds one API or etcd call. Default 10s.
	Call      time.Duration
	Clock     clock.WithTicker
	Log       logrus.FieldLogger
	Heartbeat func()
	// Jitter returns a number in [0,1); default math/rand.
	Jitter func() float64

	// seen carries what was observed of a foreign holder from one
	// attempt to the next (see Takeable).
	seen Observation
}

func (c *Coordinator) defaults() {
	if c.Wait == 0 {
		c.Wait = 5 * time.Minute
	}
	if c.Retry == 0 {
		c.Retry = 5 * time.Second
	}
	if c.Call == 0 {
		c.Call = 10 * time.Second
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.Jitter == nil {
		c.Jitter = rand.Float64
	}
	if c.Log == nil {
		l := logrus.New()
		l.SetOutput(discard{})
		c.Log = l
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// pause sleeps one jittered retry period; false once past deadline or ctx
// is done.
func (c *Coordinator) pause(ctx context.Context, deadline time.Time) bool {
	if ctx.Err() != nil || !c.Clock.Now().Before(deadline) {
		return false
	}
	if c.Heartbeat != nil {
		c.Heartbeat()
	}
	d := c.Retry + time.Duration(c.Jitter()*float64(c.Retry))
	t := c.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

// tryAcquire is one attempt at the lease, as an identity that may take it.
func (c *Coordinator) tryAcquire(ctx context.Context, lease *Lease) (bool, Holder, error) {
	if c.Access != nil {
		if err := c.Access.Ensure(ctx); err != nil {
			return false, Holder{}, err
		}
	}
	ok, h, err := lease.TryAcquire(ctx)
	var fe *ForbiddenError
	if errors.As(err, &fe) && c.Access != nil {
		c.Access.Refused(fe)
	}
	return ok, h, err
}

// recoveryCall bounds the lease call of a node recovering from expired
// certificates: its API, still on expired credentials or unable to reach
// etcd, tends to hang rather than refuse, and every second of waiting is a
// second more of a cluster that is down.
const recoveryCall = time.Second

// Acquire waits until this node may restart its components and returns
// the hold. recovering says the renewal replaced expired certificates:
// then an API that does not answer is the expiry's doing, and the node
// goes ahead alone rather than wait for a lease it cannot get.
func (c *Coordinator) Acquire(ctx context.Context, recovering bool) (*Hold, error) {
	c.defaults()
	if recovering {
		// Said whatever the API does next: an operator reading the journal
		// must learn that this control plane had expired even when the
		// renewed files alone brought the API back (etcd and the apiserver
		// reload their certificates) and the lease is taken as usual.
		c.Log.WithFields(logrus.Fields{"ACTION": "recover", "PRIORITY": Critical}).
			Error("RECOVERING AN EXPIRED CONTROL PLANE: certificates had expired and were renewed; restarting this node's components")
	}
	if c.NewLease == nil {
		// No lease configured: the etcd guard alone.
		return c.hold(nil, recovering), nil
	}
	deadline := c.Clock.Now().Add(c.Wait)
	call := c.Call
	if recovering && call > recoveryCall {
		call = recoveryCall
	}
	var last Holder
	for {
		lease, err := c.NewLease()
		if err == nil {
			lease.Seen = &c.seen
			cctx, cancel := context.WithTimeout(ctx, call)
			var ok bool
			var h Holder
			ok, h, err = c.tryAcquire(cctx, lease)
			cancel()
			var fe *ForbiddenError
			if errors.As(err, &fe) && !recovering {
				// RBAC does not mend itself while we wait: said now,
				// with what to apply; the restarts stay owed.
				return nil, fmt.Errorf("restart lease %s: %w", c.LeaseName, err)
			}
			if err == nil && ok {
				c.Log.WithFields(logrus.Fields{"ACTION": "lease", "LEASE": c.LeaseName}).Info("holding the restart lease")
				return c.hold(lease, recovering), nil
			}
			if err == nil {
				if h.Identity != last.Identity {
					c.Log.WithFields(logrus.Fields{"ACTION": "lease-wait", "LEASE": c.LeaseName, "HOLDER": h.Identity, "EXPIRES": fmtTime(h.Expires)}).
						Infof("node %s is restarting its components: waiting for the lease", h.Identity)
				}
				last = h
			}
		}
		if err != nil {
			if recovering {
				c.Log.WithFields(logrus.Fields{"ACTION": "recover", "LEASE": c.LeaseName, "PRIORITY": Critical}).WithError(err).
					Error("RECOVERING AN EXPIRED CONTROL PLANE: the API does not answer; restarting this node's components without the lease (the cluster is down anyway)")
				return c.hold(nil, true), nil
			}
			c.Log.WithFields(logrus.Fields{"ACTION": "lease-wait", "LEASE": c.LeaseName}).WithError(err).Warn("cannot take the restart lease through the API; retrying")
		}
		if !c.pause(ctx, deadline) {
			if err != nil {
				return nil, fmt.Errorf("restart lease %s: the API did not answer for %s: %w", c.LeaseName, c.Wait, err)
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("restart lease %s still held by %s after %s (expires %s)", c.LeaseName, last.Identity, c.Wait, fmtTime(last.Expires))
		}
	}
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// Hold is the right to restart, with the lease (kept renewed in the
// background) or, recovering an expired control plane, without it.
type Hold struct {
	c          *Coordinator
	recovering bool

	mu        sync.Mutex
	lease     *Lease // nil: no lease (recovering)
	renewedAt time.Time
	lost      error
	stop      chan struct{}
	done      chan struct{}
	// triedAt is when the lease was last asked for without an answer
	// (recovering): it is not asked for again within recoveryCall.
	triedAt time.Time
}

func (c *Coordinator) hold(l *Lease, recovering bool) *Hold {
	h := &Hold{c: c, recovering: recovering}
	if l == nil && recovering {
		h.triedAt = c.Clock.Now()
	}
	if l != nil {
		h.start(l)
	}
	return h
}

func (h *Hold) start(l *Lease) {
	h.lease, h.renewedAt, h.lost = l, h.c.Clock.Now(), nil
	h.stop, h.done = make(chan struct{}), make(chan struct{})
	go h.renewLoop(l, h.stop, h.done)
}

// Leased reports whether the hold has the lease.
func (h *Hold) Leased() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lease != nil
}

func (h *Hold) renewLoop(l *Lease, stop, done chan struct{}) {
	defer close(done)
	t := h.c.Clock.NewTicker(l.Duration / 3)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C():
		}
		ctx, cancel := context.WithTimeout(context.Background(), h.c.Call)
		err := l.Renew(ctx)
		cancel()
		h.mu.Lock()
		switch {
		case err == nil:
			h.renewedAt = h.c.Clock.Now()
		case errors.Is(err, ErrLost):
			h.lost = err
		default:
			// Our own apiserver may be the one restarting: keep going,
			// the gate checks the lease has not run out.
			h.c.Log.WithFields(logrus.Fields{"LEASE": h.c.LeaseName}).WithError(err).Debug("renewing the lease failed; retrying")
		}
		h.mu.Unlock()
	}
}

// Gate is asked before each component's restart (cri.Restarter.Gate).
func (h *Hold) Gate(ctx context.Context, component string) error {
	c := h.c
	h.mu.Lock()
	leased, tried := h.lease != nil, h.triedAt
	h.mu.Unlock()
	// An API that did not answer a moment ago is not asked again at once:
	// that second is a second more of a cluster that is down.
	if !leased && h.recovering && c.NewLease != nil && c.Clock.Since(tried) >= recoveryCall {
		h.tryUpgrade(ctx)
	}
	if err := h.check(ctx); err != nil {
		return err
	}
	if component != "etcd" || c.Guard == nil {
		return nil
	}
	deadline := c.Clock.Now().Add(c.Wait)
	var last string
	for {
		cctx, cancel := context.WithTimeout(ctx, c.Call)
		err := c.Guard.OthersHealthy(cctx)
		cancel()
		if err == nil {
			return nil
		}
		if h.recovering && !h.Leased() {
			c.Log.WithFields(logrus.Fields{"COMPONENT": "etcd", "ACTION": "recover", "PRIORITY": Critical}).WithError(err).
				Error("RECOVERING AN EXPIRED CONTROL PLANE: not waiting for the other etcd members (their certificates have expired too); restarting the local member")
			return nil
		}
		if err.Error() != last {
			c.Log.WithFields(logrus.Fields{"COMPONENT": "etcd", "ACTION": "quorum-wait"}).WithError(err).Warn("not restarting etcd while another member is unhealthy: waiting")
			last = err.Error()
		}
		if !c.pause(ctx, deadline) {
			return fmt.Errorf("etcd quorum guard: %w (waited %s)", err, c.Wait)
		}
		if err := h.check(ctx); err != nil {
			return err
		}
	}
}

// tryUpgrade takes the lease once the API answers again after a
// recovery, so the rest of the roll is coordinated again.
func (h *Hold) tryUpgrade(ctx context.Context) {
	c := h.c
	lease, err := c.NewLease()
	if err != nil {
		return
	}
	lease.Seen = &c.seen
	// Asked before every component of a recovery: an API that hangs must
	// not hold each restart back by the usual call bound.
	cctx, cancel := context.WithTimeout(ctx, min(c.Call, recoveryCall))
	ok, holder, err := c.tryAcquire(cctx, lease)
	cancel()
	switch {
	case err != nil:
		h.mu.Lock()
		h.triedAt = c.Clock.Now()
		h.mu.Unlock()
		c.Log.WithError(err).Debug("the API does not answer yet")
	case ok:
		h.mu.Lock()
		h.start(lease)
		h.mu.Unlock()
		c.Log.WithFields(logrus.Fields{"ACTION": "lease", "LEASE": c.LeaseName}).Warn("the API answers again: holding the restart lease for the rest of the recovery")
	default:
		c.Log.WithFields(logrus.Fields{"LEASE": c.LeaseName, "HOLDER": holder.Identity}).Warn("the API answers again but another node holds the lease; going on with the recovery")
	}
}

// check fails once the lease is gone: lost to another node, or not
// renewed for its whole duration (it may have been taken since).
func (h *Hold) check(ctx context.Context) error {
	h.mu.Lock()
	l, lost, renewedAt := h.lease, h.lost, h.renewedAt
	h.mu.Unlock()
	if l == nil {
		return nil
	}
	if lost == nil && h.c.Clock.Since(renewedAt) < l.Duration*2/3 {
		return nil
	}
	if lost == nil {
		// Try once now: the background renewal may merely be waiting.
		cctx, cancel := context.WithTimeout(ctx, h.c.Call)
		err := l.Renew(cctx)
		cancel()
		if err == nil {
			h.mu.Lock()
			h.renewedAt = h.c.Clock.Now()
			h.mu.Unlock()
			return nil
		}
		if !errors.Is(err, ErrLost) && h.c.Clock.Since(renewedAt) < l.Duration {
			return nil
		}
		lost = err
	}
	return fmt.Errorf("restart lease %s: %w", h.c.LeaseName, lost)
}

// Release stops renewing and gives the lease back. The apiserver may
// just have been restarted, so it is retried for a while; a lease not
// released runs out by itself.
func (h *Hold) Release(ctx context.Context) {
	h.mu.Lock()
	l, stop, done := h.lease, h.stop, h.done
	h.lease = nil
	h.mu.Unlock()
	if l == nil {
		return
	}
	close(stop)
	<-done
	c := h.c
	deadline := c.Clock.Now().Add(c.Wait / 5)
	for {
		cctx, cancel := context.WithTimeout(ctx, c.Call)
		err := l.Release(cctx)
		cancel()
		if err == nil {
			c.Log.WithFields(logrus.Fields{"ACTION": "lease-released", "LEASE": c.LeaseName}).Info("restart lease released")
			return
		}
		if !c.pause(ctx, deadline) {
			c.Log.WithFields(logrus.Fields{"LEASE": c.LeaseName}).WithError(err).Warn("could not release the restart lease; it runs out by itself")
			return
		}
	}
}
