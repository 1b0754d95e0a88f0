package daemon

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"
)

// Optional is a part the daemon runs without (the metrics listener):
// renewals never wait for it, but while it cannot do its job Problem says
// so ("" when it can), and the STATUS= line carries that.
type Optional interface {
	Problem() string
}

// MetricsListener serves the metrics on Addr. An address that cannot be
// bound (another process listens there) is a warning, not an exit: the
// bind is tried again every RetryEvery until it succeeds.
type MetricsListener struct {
	Metrics *PromMetrics
	Addr    string
	// Clock times the retries: the daemon's own (Options.Clock).
	Clock clock.Clock
	Log   logrus.FieldLogger
	// RetryEvery is the delay between binds (default 1 min).
	RetryEvery time.Duration
	// WarnEvery bounds the warnings while the address stays busy: the
	// first failure is said at once, then at most this often (default
	// 1 h), so the journal is not flooded by a retry a minute.
	WarnEvery time.Duration
	// Changed, when set, is signalled (without blocking) whenever
	// Problem changes; Options.OptionalChanged then sends STATUS= again.
	Changed chan<- struct{}

	// warnedAt is when a failure was last said (Start's goroutine only).
	warnedAt time.Time

	mu      sync.Mutex
	problem string
	served  net.Addr
}

var _ Optional = (*MetricsListener)(nil)

// Start binds at once; when that fails it warns and keeps retrying in the
// background until ctx is done.
func (l *MetricsListener) Start(ctx context.Context) {
	if l.RetryEvery == 0 {
		l.RetryEvery = time.Minute
	}
	if l.WarnEvery == 0 {
		l.WarnEvery = time.Hour
	}
	if l.bind(ctx) {
		return
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-l.Clock.After(l.RetryEvery):
			}
			if ctx.Err() != nil || l.bind(ctx) {
				return
			}
		}
	}()
}

// bind tries once, and says so when it fails, unless it did within
// WarnEvery.
func (l *MetricsListener) bind(ctx context.Context) bool {
	addr, err := l.Metrics.Serve(ctx, l.Addr)
	if err == nil {
		l.set("", addr)
		l.Log.WithField("ADDRESS", addr.String()).Info("serving metrics")
		return true
	}
	l.set(fmt.Sprintf("metrics not served on %s (%v)", l.Addr, err), nil)
	if now := l.Clock.Now(); l.warnedAt.IsZero() || now.Sub(l.warnedAt) >= l.WarnEvery {
		l.warnedAt = now
		l.Log.WithField("ADDRESS", l.Addr).WithError(err).
			Warnf("cannot serve metrics on %s: retrying every %s; renewals go on without them", l.Addr, l.RetryEvery)
	}
	return false
}

func (l *MetricsListener) set(problem string, served net.Addr) {
	l.mu.Lock()
	changed := problem != l.problem
	l.problem, l.served = problem, served
	l.mu.Unlock()
	if changed && l.Changed != nil {
		select {
		case l.Changed <- struct{}{}:
		default:
		}
	}
}

// Problem implements Optional.
func (l *MetricsListener) Problem() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.problem
}

// Served is the address the metrics are served on; nil until bound.
func (l *MetricsListener) Served() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.served
}
