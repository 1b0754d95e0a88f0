// Package daemon is `pkirenewd run`: the loop that keeps a node's
// certificates alive for years without a human. It sleeps until the
// earliest renewal is due (re-checking at least hourly), renews what is due
// as one transaction, restarts what uses the renewed files, re-takes
// inventory when the files change under it, backs off on failure, and
// reports to systemd and Prometheus.
//
// The decisions (when to wake, how long to back off) are pure functions;
// the engine, the notifier, the file watcher and the clock are interfaces.
package daemon

import (
	"bytes"
	"crypto/x509"
	"sort"
	"time"

	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/renew"
)

// MaxSleep is the longest the loop sleeps without re-checking, so clock
// jumps, suspend and drift cannot make it miss a deadline.
const MaxSleep = time.Hour

// Plan is what the loop should do next.
type Plan struct {
	// Due are the items to renew now.
	Due []string
	// Wake is when to look again when nothing is due.
	Wake time.Time
	// Next is the item whose renewal is next (empty when none).
	Next   string
	NextAt time.Time
}

// NextWake decides, from the items' schedule at now, what is due and when
// to wake up next. Only items pkirenewd may renew count; the wake time is
// never further away than maxSleep.
func NextWake(now time.Time, statuses []renew.Status, maxSleep time.Duration) Plan {
	p := Plan{Wake: now.Add(maxSleep)}
	for _, s := range statuses {
		if !s.Scheduled() {
			continue
		}
		if s.State != pki.StateOK {
			p.Due = append(p.Due, s.Name)
			continue
		}
		if p.Next == "" || s.RenewAt.Before(p.NextAt) {
			p.Next, p.NextAt = s.Name, s.RenewAt
		}
	}
	if len(p.Due) > 0 {
		// kubeadm issues the PKI a second or two before the kubeconfigs:
		// renew what falls due within a tenth of its own renewal window
		// together with what is due, so one issuance means one
		// transaction and one rolling restart, not two.
		p.Next, p.NextAt = "", time.Time{}
		for _, s := range statuses {
			if !s.Scheduled() || s.State != pki.StateOK {
				continue
			}
			if batch := s.Cert.NotAfter.Sub(s.RenewAt) / 10; !s.RenewAt.After(now.Add(batch)) {
				p.Due = append(p.Due, s.Name)
			} else if p.Next == "" || s.RenewAt.Before(p.NextAt) {
				p.Next, p.NextAt = s.Name, s.RenewAt
			}
		}
		p.Wake = now
		return p
	}
	if p.Next != "" && p.NextAt.Before(p.Wake) {
		p.Wake = p.NextAt
	}
	return p
}

// Backoff is the wait before retrying after the given number of
// consecutive failures: exponential from base, capped at max, and never
// longer than half the time left before the soonest expiry, so a
// certificate about to lapse is retried more often (but not more often
// than base: never a tight loop).
func Backoff(failures int, base, max time.Duration, untilExpiry time.Duration) time.Duration {
	d := base
	for i := 1; i < failures && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	if half := untilExpiry / 2; half < d {
		d = half
	}
	if d < base {
		d = base
	}
	return d
}

// SoonestExpiry is the earliest NotAfter among the renewable items.
func SoonestExpiry(statuses []renew.Status) (time.Time, bool) {
	var t time.Time
	for _, s := range statuses {
		if s.Renewable() && s.Cert != nil && (t.IsZero() || s.Cert.NotAfter.Before(t)) {
			t = s.Cert.NotAfter
		}
	}
	return t, !t.IsZero()
}

// RenewedElsewhere names the items whose certificate changed between two
// inventories without pkirenewd having renewed them (ours lists what it
// renewed in between).
func RenewedElsewhere(before, after []renew.Status, ours map[string]bool) []string {
	old := map[string]*x509.Certificate{}
	for _, s := range before {
		if s.Item != nil && s.Cert != nil {
			old[s.Name] = s.Cert
		}
	}
	var out []string
	for _, s := range after {
		if s.Item == nil || s.Cert == nil || ours[s.Name] {
			continue
		}
		if o, ok := old[s.Name]; ok && !sameCert(o, s.Cert) {
			out = append(out, s.Name)
		}
	}
	sort.Strings(out)
	return out
}

func sameCert(a, b *x509.Certificate) bool {
	if len(a.Raw) > 0 || len(b.Raw) > 0 {
		return bytes.Equal(a.Raw, b.Raw)
	}
	return a.NotBefore.Equal(b.NotBefore) && a.NotAfter.Equal(b.NotAfter)
}
