package pki

import (
	"hash/fnv"
	"time"
)

// Policy decides when a certificate is renewed. It is plain data so the
// decision can be table-tested and reused by the daemon's scheduler.
type Policy struct {
	// RenewBefore is how long before NotAfter a long-lived certificate is
	// renewed.
	RenewBefore time.Duration
	// NodeName seeds the jitter so HA nodes whose certificates were issued
	// in the same minute do not all renew in the same minute.
	NodeName string
	// MaxJitter bounds the per-node spread; zero means DefaultMaxJitter.
	MaxJitter time.Duration
}

// DefaultMaxJitter spreads HA nodes over up to six hours: enough to
// serialize restarts without eating noticeably into the renewal window.
const DefaultMaxJitter = 6 * time.Hour

// RenewAt returns when a certificate valid from notBefore to notAfter is due.
//
// Long-lived certificates are renewed RenewBefore ahead of expiry. A
// certificate whose lifetime is shorter than three times RenewBefore would
// otherwise be renewed almost as soon as it is issued, so, like cert-manager,
// it is renewed at two thirds of its lifetime instead. The result is moved
// earlier (never later) by a deterministic per-node jitter of at most a
// tenth of the renewal window. The jitter depends on the node only, so the
// certificates kubeadm issued together stay due together and are renewed in
// one transaction with one rolling restart.
func (p Policy) RenewAt(name string, notBefore, notAfter time.Time) time.Time {
	if notAfter.Sub(notBefore) <= 0 {
		return notBefore
	}
	window := p.Window(notBefore, notAfter)
	at := notAfter.Add(-window)
	maxJitter := p.MaxJitter
	if maxJitter == 0 {
		maxJitter = DefaultMaxJitter
	}
	if j := min(window/10, maxJitter); j > 0 && p.NodeName != "" {
		at = at.Add(-time.Duration(jitterFraction(p.NodeName) * float64(j)))
	}
	return at
}

// Window is how long before its expiry a certificate is renewed:
// RenewBefore, or a third of the lifetime of a short-lived certificate.
func (p Policy) Window(notBefore, notAfter time.Time) time.Duration {
	lifetime := notAfter.Sub(notBefore)
	if lifetime < 3*p.RenewBefore {
		return lifetime / 3
	}
	return p.RenewBefore
}

// RotationDeadline is when a certificate that its owner rotates itself
// (the kubelet's client certificate) must have been replaced: the kubelet
// rotates at a jittered 70-90 % of the lifetime (client-go's certificate
// manager), so one still in place past 90 % means rotation is stuck (CSR
// approval broken, a clock problem), and the node will drop out at expiry.
func RotationDeadline(notBefore, notAfter time.Time) time.Time {
	return notBefore.Add(notAfter.Sub(notBefore) * 9 / 10)
}

// Held says why a due certificate is not renewed: its replacement, which
// cannot outlive the CA, would end less than a third of the renewal window
// later than it does now. Without this a certificate capped at its CA's
// expiry would be renewed at two thirds of an ever shorter lifetime (CA-125
// d, -42 d, -14 d ... a restart loop in the last minutes), each time with
// a full rolling restart, for nothing. Unusable certificates are never held:
// any valid replacement beats an expired or not-yet-valid one.
func (p Policy) Held(state State, now, notBefore, notAfter, caNotAfter time.Time, validity time.Duration) string {
	if state != StateDue || caNotAfter.IsZero() {
		return ""
	}
	end := now.Add(validity)
	if caNotAfter.Before(end) {
		end = caNotAfter
	}
	if gain := end.Sub(notAfter); gain < p.Window(notBefore, notAfter)/3 {
		return "its CA expires " + caNotAfter.UTC().Format(time.RFC3339) + ": a renewal could not end meaningfully later; renew the CA"
	}
	return ""
}

// jitterFraction maps a node name to [0, 1) stably across restarts and
// versions, so a node's schedule does not move when the daemon restarts.
func jitterFraction(node string) float64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(node))
	return float64(h.Sum64()>>11) / float64(1<<53)
}

// State is a certificate's standing at one instant.
type State int

// States, ordered by urgency.
const (
	StateOK State = iota
	StateDue
	StateExpired
	// StateNotYetValid: NotBefore lies in the future (issued under a clock
	// that was ahead). Every TLS peer rejects such a certificate now, so
	// it is as unusable as an expired one and renewed at once.
	StateNotYetValid
)

func (s State) String() string {
	switch s {
	case StateDue:
		return "due"
	case StateExpired:
		return "expired"
	case StateNotYetValid:
		return "notyetvalid"
	default:
		return "ok"
	}
}

// Unusable reports whether a certificate in this state fails every TLS
// peer now: expired, or not valid yet.
func (s State) Unusable() bool { return s == StateExpired || s == StateNotYetValid }

// DecideCert is Decide for a certificate with its NotBefore: one that is
// not valid yet is flagged whatever its expiry.
func DecideCert(now, notBefore, renewAt, notAfter time.Time) State {
	if now.Before(notBefore) {
		return StateNotYetValid
	}
	return Decide(now, renewAt, notAfter)
}

// Decide places a certificate at now: expired certificates are renewed at
// once (day-366 recovery), due ones at their renewal time.
func Decide(now, renewAt, notAfter time.Time) State {
	switch {
	case !now.Before(notAfter):
		return StateExpired
	case !now.Before(renewAt):
		return StateDue
	default:
		return StateOK
	}
}
