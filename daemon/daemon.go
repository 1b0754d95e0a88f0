package daemon

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"

	"github.com/pkirenewd/pkirenewd/internal/fsread"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/reconcile"
	"github.com/pkirenewd/pkirenewd/renew"
)

// Engine is what the loop drives: the renewal engine and the rolling
// restart behind one interface that says everything the loop calls.
type Engine interface {
	// Recover completes or undoes a transaction a crash interrupted.
	Recover() error
	// Inventory schedules every item at the current time.
	Inventory() ([]renew.Status, error)
	// Renew renews the named items as one transaction and restarts the
	// components that use them. It returns the files it wrote, so the
	// loop can tell its own writes from anyone else's. A renewal held
	// because someone else changes the node returns an error with a
	// Held() (reason, why string, until time.Time) method: not a failure.
	Renew(ctx context.Context, names []string) (written []string, err error)
	// Look looks at the running components: the restarts owed (the loop
	// calls Renew with no names to do them), what is stale but will not
	// be restarted (restarts off), and what cannot be seen.
	Look() reconcile.Look
	// TransactionPending reports an interrupted renewal left in the
	// state dir (by anyone): the loop completes or undoes it first.
	TransactionPending() bool
	// LookAgainAt is when a reload that may be under way can be judged
	// (zero: no such reason).
	LookAgainAt() time.Time
	// Upgrading says whether kubeadm upgrades the node now, and why.
	Upgrading() (string, bool)
}

// held is what a held renewal's error says of itself (see Engine.Renew).
type held interface {
	Held() (reason, why string, until time.Time)
}

// Notifier tells the service manager how the daemon is doing (sd_notify).
type Notifier interface {
	Notify(states ...string)
}

// Metrics records what the loop sees; nil is allowed.
type Metrics interface {
	Observe(statuses []renew.Status, next time.Time)
	Renewal(err error, at time.Time)
}

// owedMetrics are the metrics of what is owed, unseen and held, when the
// Metrics have them.
type owedMetrics interface {
	Owed(components []string, transaction bool)
	Unseen(components []string)
	Held(reason string)
}

// Options configure Run.
type Options struct {
	Engine Engine
	Clock  clock.WithTicker
	Notify Notifier
	// Metrics may be nil.
	Metrics Metrics
	Log     logrus.FieldLogger

	// Events are paths that changed in the watched directories.
	Events <-chan string
	// WatchErrors report a broken watch; the loop then relies on the
	// hourly re-check.
	WatchErrors <-chan error
	// Reload asks for the configuration to be read again (SIGHUP);
	// Reconfigure builds the engine from it.
	Reload      <-chan struct{}
	Reconfigure func() (Engine, error)

	// Optional are the parts the daemon runs without (the metrics
	// listener): what is wrong with them is added to STATUS=.
	// OptionalChanged says one's Problem changed: STATUS= is sent again.
	Optional        []Optional
	OptionalChanged <-chan struct{}

	// WatchdogInterval is how often WATCHDOG=1 is sent (half of
	// WatchdogSec); zero: never.
	WatchdogInterval time.Duration
	// MaxSleep bounds every sleep (default MaxSleep).
	MaxSleep time.Duration
	// Debounce gathers a burst of file events into one re-check (default 2s).
	Debounce time.Duration
	// BackoffBase and BackoffMax bound the retry delay after failures
	// (default 30s and 1h).
	BackoffBase, BackoffMax time.Duration
}

func (o *Options) defaults() {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.MaxSleep == 0 {
		o.MaxSleep = MaxSleep
	}
	if o.Debounce == 0 {
		o.Debounce = 2 * time.Second
	}
	if o.BackoffBase == 0 {
		o.BackoffBase = 30 * time.Second
	}
	if o.BackoffMax == 0 {
		o.BackoffMax = time.Hour
	}
}

type loop struct {
	Options
	engine   Engine
	plan     Plan
	statuses []renew.Status
	failures int
	retryAt  time.Time
	// pending are restarts owed by an earlier renewal.
	pending []string
	// own maps files we wrote to the hash of what we wrote, so their
	// events do not trigger a re-check.
	own map[string][32]byte
	// renewing are the items the last renewal was asked for: a new
	// certificate there is ours, anywhere else someone else's.
	renewing map[string]bool
	// upgrading: kubeadm was upgrading the node at the last look.
	upgrading bool
	lockWait
	// heldWhy is why the last renewal was held ("" when it was not) and
	// heldUntil when that hold ends at the latest.
	heldWhy, heldReason string
	heldUntil           time.Time
	// lookSaid is what the last look reported of components that will
	// not be restarted or cannot be seen, said again only when it changes.
	lookSaid string
}

// upgradeLook is how often the daemon looks while kubeadm upgrades the
// node: its end is seen by the staging directory going away, which no
// watched file announces.
const upgradeLook = 10 * time.Second

// Run is the daemon's main loop; it returns when ctx is done (nil) or when
// the first inventory fails (an error: the unit's Restart= takes over).
func Run(ctx context.Context, o Options) error {
	o.defaults()
	l := &loop{Options: o, engine: o.Engine, own: map[string][32]byte{}, lockWait: lockWait{ctx: ctx}}
	if err := l.recoverAtStart(); err != nil {
		return err
	}
	if err := l.check(true); err != nil {
		return err
	}
	l.Notify.Notify("READY=1", "STATUS="+l.status())

	var watchdog <-chan time.Time
	if o.WatchdogInterval > 0 {
		t := o.Clock.NewTicker(o.WatchdogInterval)
		defer t.Stop()
		watchdog = t.C()
		l.Notify.Notify("WATCHDOG=1")
	}
	var debounce clock.Timer
	var debounceC <-chan time.Time
	events, watchErrors := o.Events, o.WatchErrors
	for {
		now := o.Clock.Now()
		if l.work() && !now.Before(l.retryAt) {
			l.renew(ctx)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		wake := l.plan.Wake
		if l.work() {
			wake = l.retryAt
		}
		timer := o.Clock.NewTimer(wake.Sub(now))
		select {
		case <-ctx.Done():
		case <-timer.C():
			_ = l.check(false)
		case p, ok := <-events:
			if !ok {
				events = nil
				l.Log.Warn("file watch closed: falling back to the hourly re-check")
				break
			}
			if l.ours(p) {
				break
			}
			l.Log.WithField("PATH", p).Debug("file changed")
			if debounce == nil {
				debounce = o.Clock.NewTimer(o.Debounce)
				debounceC = debounce.C()
			}
		case <-debounceC:
			debounce, debounceC = nil, nil
			l.Log.WithField("ACTION", "rescan").Info("files changed: taking inventory again")
			_ = l.check(false)
		case err, ok := <-watchErrors:
			if !ok {
				watchErrors = nil
				break
			}
			l.Log.WithError(err).Warn("file watch error: relying on the hourly re-check")
		case <-o.Reload:
			l.reload()
		case <-o.OptionalChanged:
			l.Notify.Notify("STATUS=" + l.status())
		case <-watchdog:
			l.Notify.Notify("WATCHDOG=1")
		}
		timer.Stop()
		if ctx.Err() != nil {
			break
		}
	}
	l.Notify.Notify("STOPPING=1")
	l.Log.Info("stopping")
	return nil
}

// check takes inventory and plans; the first one logs a line per item. A
// transaction left by anyone (a killed `pkirenewd renew`, a finish that
// failed) is completed or undone first, every cycle, not only at start.
func (l *loop) check(first bool) error {
	l.recoverPending(first, l.engine.TransactionPending())
	statuses, err := l.engine.Inventory()
	if err != nil {
		l.Log.WithError(err).Error("inventory failed")
		if first {
			return err
		}
		return err
	}
	now := l.Clock.Now()
	for _, name := range RenewedElsewhere(l.statuses, statuses, l.renewing) {
		l.Log.WithFields(logrus.Fields{"CERT": name, "ACTION": "outside-renewal"}).
			Infof("%s was renewed outside pkirenewd (kubeadm certs renew, kubeadm upgrade or by hand): taking it as it is, and checking the components against it", name)
	}
	l.renewing = nil
	l.statuses = statuses
	l.plan = NextWake(now, statuses, l.MaxSleep)
	l.pending = nil
	if len(l.plan.Due) == 0 {
		// With a renewal due the renewal observes the running components
		// itself; looking now would only delay it (on day 366, seconds of
		// dials to an apiserver that cannot answer).
		look := l.engine.Look()
		l.pending = look.Owed
		l.reportLook(look)
	}
	// A component still has time to reload a changed certificate:
	// whether it did is seen only after that.
	if at := l.engine.LookAgainAt(); !at.IsZero() && at.Before(l.plan.Wake) {
		l.plan.Wake = at
	}
	l.watchUpgrade(now)
	for _, s := range statuses {
		logItem(l.Log, s, first)
	}
	if l.Metrics != nil {
		l.Metrics.Observe(statuses, l.plan.NextAt)
	}
	if !first {
		l.Notify.Notify("STATUS=" + l.status())
	}
	l.Log.WithFields(logrus.Fields{"NEXT": l.plan.Next, "RENEW_AT": fmtTime(l.plan.NextAt), "DUE": strings.Join(l.plan.Due, ",")}).Debug("scheduled")
	return nil
}

// watchUpgrade says in the journal when kubeadm starts and stops
// upgrading the node (the engine writes and restarts nothing meanwhile)
// and looks again every upgradeLook until it has finished, so the node is
// judged as kubeadm left it at once, not at the next renewal.
func (l *loop) watchUpgrade(now time.Time) {
	why, on := l.engine.Upgrading()
	log := l.Log.WithField("ACTION", "outside-upgrade")
	switch {
	case on && !l.upgrading:
		log.Infof("%s: pkirenewd writes and restarts nothing until it has finished", why)
	case !on && l.upgrading:
		log.Info("kubeadm's upgrade has finished: the node is judged as it now is")
	}
	l.upgrading = on
	if on && now.Add(upgradeLook).Before(l.plan.Wake) {
		l.plan.Wake = now.Add(upgradeLook)
	}
}

func logItem(log logrus.FieldLogger, s renew.Status, verbose bool) {
	f := logrus.Fields{"CERT": s.Name, "PATH": s.CertPath}
	if s.Cert != nil {
		f["NOT_AFTER"] = fmtTime(s.Cert.NotAfter)
		f["RENEW_AT"] = fmtTime(s.RenewAt)
	}
	e := log.WithFields(f)
	for _, w := range s.Warnings {
		e.Warn(w)
	}
	switch {
	case s.Err != nil:
		e.WithError(s.Err).Errorf("%s: broken, will not renew it", s.Name)
	case s.Missing:
		e.Errorf("%s: missing", s.Name)
	case s.Issue != "":
		e.Warnf("%s: %s, issuing it now", s.Name, s.Issue)
	case s.Kind == renew.KindCA && s.State != pki.StateOK && s.WarnOnly:
		e.Warnf("%s: CA expires %s and is renewed by hand here (caRenewal: manual, or its key is elsewhere): run `pkirenewd renew %s`", s.Name, fmtTime(s.Cert.NotAfter), s.Name)
	case s.Kind == renew.KindCA && s.HoldersOld > 0:
		e.Warnf("%s: %d files carry another issue of the CA: bringing them along", s.Name, s.HoldersOld)
	case s.Kind == renew.KindCA && s.State != pki.StateOK:
		e.Warnf("%s: CA expires %s: renewing it with its own key", s.Name, fmtTime(s.Cert.NotAfter))
	case s.External:
		if verbose {
			e.Infof("%s: signed by an external CA, reported only", s.Name)
		}
	case s.RotationStuck():
		e.WithField("PRIORITY", 2).Errorf("%s: the %s has not rotated %s though it is past 90%% of its life (expires %s): rotation is stuck (CSR approval? the clock?)", s.Name, s.RotatedBy, s.CertPath, fmtTime(s.Cert.NotAfter))
	case s.RotatedBy != "":
		if verbose {
			e.Infof("%s: rotated by the %s, reported only", s.Name, s.RotatedBy)
		}
	case s.Unmanaged != "" && s.State != pki.StateOK:
		e.Warnf("%s: %s, expires %s: %s", s.Name, s.State, fmtTime(s.Cert.NotAfter), s.Unmanaged)
	case s.Unmanaged != "":
		if verbose {
			e.Infof("%s: %s", s.Name, s.Unmanaged)
		}
	case s.Held != "":
		e.Errorf("%s: due but not renewed: %s", s.Name, s.Held)
	case s.State == pki.StateExpired:
		e.Errorf("%s: expired, renewing now", s.Name)
	case s.State == pki.StateNotYetValid:
		e.Errorf("%s: not valid before %s (issued under a clock that was ahead): unusable now, renewing now", s.Name, fmtTime(s.Cert.NotBefore))
	case verbose && s.Kind == renew.KindCA:
		e.Infof("%s: CA, expires %s, renewal at %s", s.Name, fmtTime(s.Cert.NotAfter), fmtTime(s.RenewAt))
	case verbose:
		e.Infof("%s: %s, expires %s, renewal at %s", s.Name, s.State, fmtTime(s.Cert.NotAfter), fmtTime(s.RenewAt))
	}
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// work reports whether there is something to renew or restarts owed.
func (l *loop) work() bool { return len(l.plan.Due) > 0 || len(l.pending) > 0 }

func (l *loop) renew(ctx context.Context) {
	due := l.plan.Due
	log := l.Log.WithFields(logrus.Fields{"ACTION": "renew", "CERT": strings.Join(due, ",")})
	if len(due) > 0 {
		if l.heldReason != "" {
			// Every look of a hold would say it again.
			log.Debug("renewing")
		} else {
			log.Info("renewing")
		}
		l.Notify.Notify("STATUS=renewing " + strings.Join(due, ", "))
	} else {
		log = l.Log.WithFields(logrus.Fields{"ACTION": "restart", "COMPONENT": strings.Join(l.pending, ",")})
		log.Info("restarts owed (components on older credentials than the files, or a roll cut short): doing them")
		l.Notify.Notify("STATUS=restarting " + strings.Join(l.pending, ", "))
	}
	l.renewing = map[string]bool{}
	for _, n := range due {
		l.renewing[n] = true
	}
	written, err := l.engine.Renew(ctx, due)
	now := l.Clock.Now()
	for _, p := range written {
		if data, rerr := fsread.Regular(p, true); rerr == nil {
			l.own[p] = sha256.Sum256(data)
		}
	}
	var h held
	if errors.As(err, &h) {
		l.hold(h, now)
		_ = l.check(false)
		return
	}
	l.unhold()
	if l.Metrics != nil {
		l.Metrics.Renewal(err, now)
	}
	if err != nil {
		l.failures++
		until := l.MaxSleep
		if t, ok := SoonestExpiry(l.statuses); ok {
			until = t.Sub(now)
		}
		wait := Backoff(l.failures, l.BackoffBase, l.BackoffMax, until)
		l.retryAt = now.Add(wait)
		log.WithError(err).WithFields(logrus.Fields{"ATTEMPT": l.failures, "RETRY_IN": wait.String()}).Error("renewal failed")
	} else {
		l.failures, l.retryAt = 0, time.Time{}
	}
	_ = l.check(false)
}

// ours reports whether an event is for a file we wrote (with the content
// we wrote) or for one of our temp files.
func (l *loop) ours(p string) bool {
	base := filepath.Base(p)
	if strings.HasPrefix(base, ".") {
		return true
	}
	want, ok := l.own[p]
	if !ok {
		return false
	}
	data, err := fsread.Regular(p, true)
	return err == nil && sha256.Sum256(data) == want
}

func (l *loop) reload() {
	l.Notify.Notify("RELOADING=1")
	e, err := l.Reconfigure()
	if err != nil {
		l.Log.WithError(err).Error("reload failed: keeping the previous configuration")
	} else {
		l.engine = e
		// A new configuration deserves a fresh attempt, not the rest of
		// the old one's backoff.
		l.failures, l.retryAt = 0, time.Time{}
		l.Log.WithField("ACTION", "reload").Info("configuration reloaded")
		_ = l.check(false)
	}
	l.Notify.Notify("READY=1", "STATUS="+l.status())
}

// status is the one-line summary systemd shows.
func (l *loop) status() string {
	ok, total, broken := 0, 0, 0
	for _, s := range l.statuses {
		if s.Kind == renew.KindCA {
			continue
		}
		total++
		switch {
		case s.Err != nil || s.Missing:
			broken++
		case s.State == pki.StateOK:
			ok++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d/%d certs ok", ok, total)
	if broken > 0 {
		fmt.Fprintf(&b, ", %d broken", broken)
	}
	switch {
	case l.heldWhy != "":
		fmt.Fprintf(&b, "; held: %s (at most until %s)", l.heldWhy, l.heldUntil.UTC().Format(time.RFC3339))
	case len(l.plan.Due) > 0 && !l.retryAt.IsZero():
		fmt.Fprintf(&b, "; renewal failed %d times, retry at %s", l.failures, l.retryAt.UTC().Format(time.RFC3339))
	case len(l.plan.Due) > 0:
		fmt.Fprintf(&b, "; due: %s", strings.Join(l.plan.Due, ", "))
	case l.plan.Next != "":
		fmt.Fprintf(&b, "; next: %s in %s", l.plan.Next, humanDuration(l.plan.NextAt.Sub(l.Clock.Now())))
	}
	b.WriteString(l.recoveryStatus())
	for _, o := range l.Optional {
		if p := o.Problem(); p != "" {
			b.WriteString("; " + p)
		}
	}
	return b.String()
}

func humanDuration(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	case d >= time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	case d >= time.Minute:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	default:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	}
}
