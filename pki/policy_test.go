package pki

import (
	"testing"
	"time"
)

func TestRenewAt(t *testing.T) {
	day := 24 * time.Hour
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name        string
		lifetime    time.Duration
		renewBefore time.Duration
		want        time.Time
	}{
		{"kubeadm year, 90d before", 365 * day, 90 * day, t0.Add(275 * day)},
		{"exactly 3x renewBefore uses renewBefore", 270 * day, 90 * day, t0.Add(180 * day)},
		{"short-lived: 2/3 of lifetime", 30 * day, 90 * day, t0.Add(20 * day)},
		{"minutes-long e2e certs", 6 * time.Minute, 3 * time.Minute, t0.Add(4 * time.Minute)},
		{"minutes-long, small renewBefore", 6 * time.Minute, time.Minute, t0.Add(5 * time.Minute)},
		{"ten years", 3650 * day, 90 * day, t0.Add(3560 * day)},
		{"zero lifetime is due at once", 0, 90 * day, t0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Policy{RenewBefore: tc.renewBefore} // no node name: no jitter
			if got := p.RenewAt("apiserver", t0, t0.Add(tc.lifetime)); !got.Equal(tc.want) {
				t.Fatalf("RenewAt = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRenewAtJitter(t *testing.T) {
	day := 24 * time.Hour
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	nb, na := t0, t0.Add(365*day)
	base := Policy{RenewBefore: 90 * day}.RenewAt("apiserver", nb, na)
	seen := map[time.Time]string{}
	for _, node := range []string{"cp-1", "cp-2", "cp-3", "master-a", "master-b"} {
		p := Policy{RenewBefore: 90 * day, NodeName: node}
		got := p.RenewAt("apiserver", nb, na)
		if got.After(base) {
			t.Errorf("%s: jitter moved renewal later: %v after %v", node, got, base)
		}
		if base.Sub(got) > DefaultMaxJitter {
			t.Errorf("%s: jitter %v exceeds the maximum %v", node, base.Sub(got), DefaultMaxJitter)
		}
		if again := p.RenewAt("apiserver", nb, na); !again.Equal(got) {
			t.Errorf("%s: jitter not deterministic: %v then %v", node, got, again)
		}
		if other, ok := seen[got]; ok {
			t.Errorf("%s and %s renew at the same instant %v", node, other, got)
		}
		seen[got] = node
	}
	// Short-lived certificates: jitter is bounded by a tenth of the window.
	short := Policy{RenewBefore: 3 * time.Minute, NodeName: "cp-1"}
	nb2, na2 := t0, t0.Add(6*time.Minute)
	got := short.RenewAt("apiserver", nb2, na2)
	if d := t0.Add(4 * time.Minute).Sub(got); d < 0 || d > 12*time.Second {
		t.Errorf("short-lived jitter %v out of [0, 12s]", d)
	}
	// Items of one node move together, so they renew in one transaction.
	p1 := Policy{RenewBefore: 90 * day, NodeName: "cp-1"}
	if a, b := p1.RenewAt("apiserver", nb, na), p1.RenewAt("admin.conf", nb, na); !a.Equal(b) {
		t.Errorf("items issued together renew apart: %v and %v", a, b)
	}
	// A custom maximum is honoured.
	p := Policy{RenewBefore: 90 * day, NodeName: "cp-2", MaxJitter: time.Minute}
	if d := base.Sub(p.RenewAt("apiserver", nb, na)); d < 0 || d > time.Minute {
		t.Errorf("MaxJitter ignored: jitter %v", d)
	}
}

func TestDecide(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	renewAt, notAfter := t0.Add(10*time.Hour), t0.Add(20*time.Hour)
	tests := []struct {
		now  time.Time
		want State
	}{
		{t0, StateOK},
		{renewAt.Add(-time.Nanosecond), StateOK},
		{renewAt, StateDue},
		{notAfter.Add(-time.Nanosecond), StateDue},
		{notAfter, StateExpired},
		{notAfter.Add(400 * 24 * time.Hour), StateExpired}, // day 366 and later
	}
	for _, tc := range tests {
		if got := Decide(tc.now, renewAt, notAfter); got != tc.want {
			t.Errorf("Decide(%v) = %v, want %v", tc.now, got, tc.want)
		}
		if got := DecideCert(tc.now, t0, renewAt, notAfter); got != tc.want {
			t.Errorf("DecideCert(%v) = %v, want %v", tc.now, got, tc.want)
		}
	}
}

func TestDecideNotYetValid(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	notBefore, renewAt, notAfter := t0.Add(time.Hour), t0.Add(10*time.Hour), t0.Add(20*time.Hour)
	tests := []struct {
		now  time.Time
		want State
	}{
		{t0, StateNotYetValid},
		{notBefore.Add(-time.Nanosecond), StateNotYetValid},
		{notBefore, StateOK},
		{renewAt, StateDue},
		{notAfter, StateExpired},
	}
	for _, tc := range tests {
		got := DecideCert(tc.now, notBefore, renewAt, notAfter)
		if got != tc.want {
			t.Errorf("DecideCert(%v) = %v, want %v", tc.now, got, tc.want)
		}
		if u := got == StateNotYetValid || got == StateExpired; got.Unusable() != u {
			t.Errorf("%v.Unusable() = %v", got, got.Unusable())
		}
	}
}

const day = 24 * time.Hour

func TestHeld(t *testing.T) {
	p := Policy{RenewBefore: 90 * day}
	now := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	year := 365 * day
	tests := []struct {
		name                string
		state               State
		notBefore, notAfter time.Time
		caNotAfter          time.Time
		held                bool
	}{
		{"due, CA far away", StateDue, now.Add(-300 * day), now.Add(65 * day), now.Add(5 * year), false},
		{"due, capped at the CA already", StateDue, now.Add(-100 * day), now.Add(20 * day), now.Add(20 * day), true},
		{"due, the CA would add a little", StateDue, now.Add(-100 * day), now.Add(20 * day), now.Add(25 * day), true},
		{"due, the CA leaves a third of the window", StateDue, now.Add(-300 * day), now.Add(60 * day), now.Add(90 * day), false},
		{"expired is never held", StateExpired, now.Add(-100 * day), now.Add(-time.Hour), now.Add(time.Hour), false},
		{"not yet valid is never held", StateNotYetValid, now.Add(time.Hour), now.Add(year), now.Add(time.Hour * 2), false},
		{"ok is not held", StateOK, now.Add(-10 * day), now.Add(300 * day), now.Add(300 * day), false},
		{"no CA known", StateDue, now.Add(-300 * day), now.Add(20 * day), time.Time{}, false},
	}
	for _, tc := range tests {
		if got := p.Held(tc.state, now, tc.notBefore, tc.notAfter, tc.caNotAfter, year) != ""; got != tc.held {
			t.Errorf("%s: held=%v, want %v", tc.name, got, tc.held)
		}
	}
}

// A certificate renewed hourly by the daemon over the last 400 days of its
// CA: renewals happen while they extend it, then stop, instead of at two
// thirds of an ever shorter lifetime up to a loop in the last minutes.
func TestNoRenewalStormBeforeTheCAExpires(t *testing.T) {
	p := Policy{RenewBefore: 90 * day, NodeName: "cp-1"}
	validity := 365 * day
	ca := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	now := ca.Add(-400 * day)
	nb, na := now.Add(-200*day), now.Add(165*day)
	var renewals []time.Duration
	for ; now.Before(ca); now = now.Add(time.Hour) {
		st := DecideCert(now, nb, p.RenewAt("x", nb, na), na)
		if st == StateOK || p.Held(st, now, nb, na, ca, validity) != "" {
			continue
		}
		nb, na = now.Add(-Backdate), now.Add(validity)
		if na.After(ca) {
			na = ca
		}
		renewals = append(renewals, ca.Sub(now))
		if len(renewals) > 10 {
			break
		}
	}
	if len(renewals) > 2 {
		t.Errorf("%d renewals before the CA expires (at CA-%v): a storm", len(renewals), renewals)
	}
	if len(renewals) == 0 {
		t.Error("never renewed")
	}
}
