package daemon_test

import (
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	testclock "k8s.io/utils/clock/testing"

	"github.com/pkirenewd/pkirenewd/daemon"
	"github.com/pkirenewd/pkirenewd/daemon/daemontest"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/reconcile"
	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

const day = 24 * time.Hour

// yearNode is a kubeadm-shaped PKI under the real engine and store, all on
// one fake clock: the daemon's loop, the engine and the store read it, so
// a year passes in seconds with no real sleep.
type yearNode struct {
	clk *testclock.FakeClock
	l   renewtest.Layout
	e   *reconcile.NodeEngine
}

func newYearNode(t *testing.T, issued time.Time, clk *testclock.FakeClock) *yearNode {
	t.Helper()
	root := t.TempDir()
	l, err := renewtest.MakePKI(filepath.Join(root, "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256", NotBefore: issued})
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	r := renew.New(renew.Options{Dirs: renew.Dirs{PKIDir: l.PKIDir, KubeconfigDir: l.KubeconfigDir}, StateDir: filepath.Join(root, "state"),
		Policy: pki.Policy{RenewBefore: 90 * day}, Validity: 365 * day, Now: clk.Now, Sleep: clk.Sleep, Log: log})
	e := &reconcile.NodeEngine{Renewer: r, StateDir: filepath.Join(root, "state"), ManifestsDir: filepath.Join(root, "kubernetes", "manifests"),
		Log: log, Clock: clk}
	return &yearNode{clk: clk, l: l, e: e}
}

// run starts the daemon on the node; it stops at the end of the test.
func (n *yearNode) run(t *testing.T) *daemontest.Notifier {
	t.Helper()
	notify := &daemontest.Notifier{}
	log := logrus.New()
	log.SetOutput(io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- daemon.Run(ctx, daemon.Options{Engine: n.e, Clock: n.clk, Notify: notify, Log: log}) }()
	t.Cleanup(func() { cancel(); <-done })
	n.settle(t)
	return notify
}

func (n *yearNode) settle(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if n.clk.HasWaiters() {
			time.Sleep(2 * time.Millisecond)
			if n.clk.HasWaiters() {
				return
			}
		}
	}
	t.Fatal("the loop never went to sleep")
}

func (n *yearNode) notAfter(t *testing.T) map[string]time.Time {
	t.Helper()
	st, err := n.e.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]time.Time{}
	for _, s := range st {
		if s.Cert != nil && s.Kind != renew.KindCA {
			out[s.Name] = s.Cert.NotAfter
		}
	}
	return out
}

// A year of the daemon on a fake clock, from the loop to the store: nothing
// is written before the renewal time (90 days before the end), everything
// is renewed then, once, for a year from that day.
func TestAYearOnOneFakeClock(t *testing.T) {
	t0 := time.Now().Truncate(time.Second)
	clk := testclock.NewFakeClock(t0)
	n := newYearNode(t, t0, clk)
	first := n.notAfter(t)
	n.run(t)
	for d := 1; d <= 366; d++ {
		clk.Step(day)
		n.settle(t)
		got := n.notAfter(t)
		renewed := got["apiserver"] != first["apiserver"]
		switch due := t0.Add(275 * day); {
		case renewed && clk.Now().Before(due):
			t.Fatalf("renewed on day %d, before its renewal time (day 275)", d)
		case !renewed && !clk.Now().Before(due.Add(day)):
			t.Fatalf("not renewed by day %d, a day past its renewal time", d)
		}
	}
	got := n.notAfter(t)
	for name, na := range got {
		if na.Equal(first[name]) {
			t.Errorf("%s not renewed in a year", name)
		}
		if want := t0.Add(275 * day).Add(365 * day); na.Before(want) || na.After(want.Add(2*day)) {
			t.Errorf("%s renewed until %s, want a year from its renewal (%s)", name, na, want)
		}
	}
}

// Day 366: the node was off for a year and a day; every leaf has expired.
// The daemon, started, renews them all at once, on the same fake clock.
func TestDay366OnOneFakeClock(t *testing.T) {
	t0 := time.Now().Truncate(time.Second)
	clk := testclock.NewFakeClock(t0)
	n := newYearNode(t, t0, clk)
	clk.SetTime(t0.Add(366 * day))
	n.run(t)
	for name, na := range n.notAfter(t) {
		if !na.After(clk.Now().Add(364 * day)) {
			t.Errorf("%s: NotAfter %s after the day-366 start, want a year from %s", name, na, clk.Now())
		}
	}
}
