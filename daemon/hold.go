package daemon

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/pkirenewd/pkirenewd/reconcile"
)

// hold is a renewal held because someone else changes the node (kubeadm
// upgrading it, the kubelet replacing a pod). It is not a failure: it is
// said at Info when it starts or its reason changes (not at every look:
// the age in its words changes every time), counted in its own
// metric, and looked at again every upgradeLook with no backoff, so the
// renewal follows within seconds of the cause going away.
func (l *loop) hold(h held, now time.Time) {
	reason, why, until := h.Held()
	if reason != l.heldReason {
		l.Log.WithFields(logrus.Fields{"ACTION": "hold", "REASON": reason, "UNTIL": fmtTime(until)}).
			Infof("held: %s; pkirenewd writes and restarts nothing until it has settled, and looks again every %s", why, upgradeLook)
	}
	l.heldWhy, l.heldReason, l.heldUntil = why, reason, until
	l.retryAt = now.Add(upgradeLook)
	if m, ok := l.Metrics.(owedMetrics); ok {
		m.Held(reason)
	}
}

// unhold ends a hold: the renewal went ahead (or failed for its own
// reasons).
func (l *loop) unhold() {
	if l.heldWhy == "" {
		return
	}
	l.Log.WithField("ACTION", "hold").Info("no longer held: going ahead")
	l.heldWhy, l.heldReason, l.heldUntil = "", "", time.Time{}
	if m, ok := l.Metrics.(owedMetrics); ok {
		m.Held("")
	}
}

// reportLook says what a look found that the loop will not act on: stale
// components that restarts are off for, and components that cannot be
// seen. Each is a Warning in the journal when it changes and a metric
// always: "cannot tell" is never "fine".
func (l *loop) reportLook(look reconcile.Look) {
	var stale, unseen, said []string
	for _, s := range look.Stale {
		stale = append(stale, s.Component)
		said = append(said, "stale "+s.Component)
	}
	for _, u := range look.Unseen {
		unseen = append(unseen, u.Component)
		said = append(said, fmt.Sprintf("unseen %s: %v", u.Component, u.Err))
	}
	sort.Strings(said)
	if m, ok := l.Metrics.(owedMetrics); ok {
		m.Owed(append(append([]string(nil), l.pending...), stale...), l.engine.TransactionPending())
		m.Unseen(unseen)
	}
	key := strings.Join(said, "\n")
	if key == l.lookSaid {
		return
	}
	l.lookSaid = key
	for _, s := range look.Stale {
		l.Log.WithFields(logrus.Fields{"COMPONENT": s.Component, "PATH": s.File, "ACTION": "stale"}).
			Warnf("%s runs on credentials older than its files and restartComponents is false: pkirenewd will not restart it; restart it by hand (crictl stopp + rmp of its pod) before the old credentials expire", s.Component)
	}
	for _, u := range look.Unseen {
		l.Log.WithFields(logrus.Fields{"COMPONENT": u.Component, "ACTION": "unseen"}).WithError(u.Err).
			Warnf("cannot tell whether %s runs on old credentials: start the container runtime or fix criEndpoint, or restart %s by hand after a renewal", u.Component, u.Component)
	}
}
