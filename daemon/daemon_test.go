package daemon_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	testclock "k8s.io/utils/clock/testing"

	"github.com/pkirenewd/pkirenewd/daemon"
	"github.com/pkirenewd/pkirenewd/daemon/daemontest"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/renew"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func status(name string, renewAt, notAfter time.Time, now time.Time) renew.Status {
	return renew.Status{
		Item:    &renew.Item{Name: name, Kind: renew.KindCert, Cert: &x509.Certificate{NotAfter: notAfter}},
		RenewAt: renewAt, State: pki.Decide(now, renewAt, notAfter),
	}
}

func TestNextWake(t *testing.T) {
	h := time.Hour
	ca := renew.Status{Item: &renew.Item{Name: "ca", Kind: renew.KindCA, Cert: &x509.Certificate{NotAfter: t0.Add(h)}}, RenewAt: t0, State: pki.StateDue}
	warnOnly := ca
	warnOnly.WarnOnly = true
	holders := warnOnly
	holders.HoldersOld = 2
	notDue := ca
	notDue.RenewAt, notDue.State = t0.Add(30*time.Minute), pki.StateOK
	external := status("front-proxy-client", t0, t0.Add(h), t0)
	external.External = true
	tests := []struct {
		name     string
		statuses []renew.Status
		wantDue  []string
		wantWake time.Time
		wantNext string
	}{
		{"nothing: hourly re-check", nil, nil, t0.Add(h), ""},
		{"next within the hour", []renew.Status{status("a", t0.Add(30*time.Minute), t0.Add(h), t0), status("b", t0.Add(40*time.Minute), t0.Add(h), t0)}, nil, t0.Add(30 * time.Minute), "a"},
		{"next far away: capped at an hour", []renew.Status{status("a", t0.Add(100*h), t0.Add(200*h), t0)}, nil, t0.Add(h), "a"},
		{"due now", []renew.Status{status("a", t0.Add(-h), t0.Add(h), t0), status("b", t0.Add(10*h), t0.Add(20*h), t0)}, []string{"a"}, t0, "b"},
		{"expired is due", []renew.Status{status("a", t0.Add(-2*h), t0.Add(-h), t0)}, []string{"a"}, t0, ""},
		{"a CA warned about only and external items never due", []renew.Status{warnOnly, external}, nil, t0.Add(h), ""},
		{"a CA the daemon renews is due", []renew.Status{ca, external}, []string{"ca"}, t0, ""},
		{"a CA renewed by hand is due for its old holders", []renew.Status{holders}, []string{"ca"}, t0, ""},
		{"a CA's renewal is a wake-up time", []renew.Status{notDue}, nil, t0.Add(30 * time.Minute), "ca"},
		// Issued seconds apart (kubeadm: PKI, then kubeconfigs): renewed together.
		{"soon-due items join the due ones", []renew.Status{status("apiserver", t0.Add(-time.Second), t0.Add(90*24*h), t0), status("admin.conf", t0.Add(2*time.Second), t0.Add(90*24*h), t0), status("later", t0.Add(30*24*h), t0.Add(90*24*h), t0)}, []string{"apiserver", "admin.conf"}, t0, "later"},
	}
	for _, tc := range tests {
		p := daemon.NextWake(t0, tc.statuses, h)
		if !p.Wake.Equal(tc.wantWake) || p.Next != tc.wantNext || len(p.Due) != len(tc.wantDue) {
			t.Errorf("%s: %+v", tc.name, p)
		}
		for i := range tc.wantDue {
			if p.Due[i] != tc.wantDue[i] {
				t.Errorf("%s: due %v", tc.name, p.Due)
			}
		}
	}
}

func TestBackoff(t *testing.T) {
	s, m, h := time.Second, time.Minute, time.Hour
	tests := []struct {
		failures int
		until    time.Duration
		want     time.Duration
	}{
		{1, 100 * h, 30 * s},
		{2, 100 * h, m},
		{3, 100 * h, 2 * m},
		{8, 100 * h, 64 * m / 64 * 64},
		{20, 100 * h, h},
		{20, 10 * m, 5 * m},  // closer to expiry than the backoff: sooner
		{20, 10 * s, 30 * s}, // but never a tight loop
		{20, -5 * h, 30 * s}, // expired already
	}
	for _, tc := range tests {
		want := tc.want
		if tc.failures == 8 {
			want = h // 30s * 2^7 = 64m, capped
		}
		if got := daemon.Backoff(tc.failures, 30*s, h, tc.until); got != want {
			t.Errorf("Backoff(%d, until %v) = %v, want %v", tc.failures, tc.until, got, want)
		}
	}
}

type harness struct {
	t      *testing.T
	clk    *testclock.FakeClock
	engine *daemontest.Engine
	notify *daemontest.Notifier
	events chan string
	reload chan struct{}
	cancel context.CancelFunc
	done   chan error
	reconf func() (daemon.Engine, error)
}

func start(t *testing.T, items map[string]*daemontest.Item, mod func(*daemon.Options)) *harness {
	t.Helper()
	clk := testclock.NewFakeClock(t0)
	h := &harness{t: t, clk: clk, notify: &daemontest.Notifier{}, events: make(chan string, 10), reload: make(chan struct{}, 1), done: make(chan error, 1)}
	h.engine = &daemontest.Engine{Now: clk.Now, Items: items}
	log := logrus.New()
	log.SetOutput(io.Discard)
	o := daemon.Options{
		Engine: h.engine, Clock: clk, Notify: h.notify, Log: log,
		Events: h.events, Reload: h.reload,
		Reconfigure: func() (daemon.Engine, error) { return h.reconf() },
	}
	if mod != nil {
		mod(&o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- daemon.Run(ctx, o) }()
	t.Cleanup(func() { cancel(); <-h.done })
	h.settle()
	return h
}

// settle waits until the loop is blocked on its timers again.
func (h *harness) settle() {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if h.clk.HasWaiters() {
			time.Sleep(5 * time.Millisecond)
			if h.clk.HasWaiters() {
				return
			}
		}
		time.Sleep(time.Millisecond)
	}
	h.t.Fatal("loop never went to sleep")
}

func (h *harness) step(d time.Duration) {
	h.t.Helper()
	h.clk.Step(d)
	h.settle()
}

func item(renewAt, notAfter time.Duration) *daemontest.Item {
	return &daemontest.Item{NotBefore: t0, NotAfter: t0.Add(notAfter), RenewBefore: notAfter - renewAt}
}

func TestRenewsExactlyOnceWhenDue(t *testing.T) {
	h := start(t, map[string]*daemontest.Item{"a": item(10*time.Hour, 30*time.Hour), "b": item(20*time.Hour, 30*time.Hour)}, nil)
	if h.notify.Count("READY=1") != 1 {
		t.Fatalf("states %v", h.notify.States)
	}
	for i := 0; i < 9; i++ {
		h.step(time.Hour)
	}
	if n := h.engine.RenewalCount(); n != 0 {
		t.Fatalf("renewed %d times before the deadline", n)
	}
	if n := h.engine.InventoryCount(); n < 10 {
		t.Errorf("only %d inventories in 9 hours: no hourly re-check", n)
	}
	h.step(time.Hour) // t0+10h: a is due
	if got := h.engine.Renewals; len(got) != 1 || len(got[0]) != 1 || got[0][0] != "a" {
		t.Fatalf("renewals %v", got)
	}
	for i := 0; i < 9; i++ {
		h.step(time.Hour)
	}
	if n := h.engine.RenewalCount(); n != 1 {
		t.Fatalf("renewals %v", h.engine.Renewals)
	}
	h.step(time.Hour) // t0+20h: b, and a again (renewed at 10h with the same lifetime)
	if got := h.engine.Renewals; len(got) != 2 || len(got[1]) != 2 {
		t.Fatalf("renewals %v", got)
	}
}

func TestBacksOffOnFailure(t *testing.T) {
	h := start(t, map[string]*daemontest.Item{"a": item(time.Hour, 100*time.Hour)}, nil)
	h.engine.Fail = 3
	h.step(time.Hour) // due: first attempt fails
	if n := h.engine.RenewalCount(); n != 1 {
		t.Fatalf("attempts %d", n)
	}
	h.step(29 * time.Second)
	if n := h.engine.RenewalCount(); n != 1 {
		t.Fatalf("retried before the backoff: %d", n)
	}
	h.step(time.Second) // 30s
	if n := h.engine.RenewalCount(); n != 2 {
		t.Fatalf("attempts %d after 30s", n)
	}
	h.step(59 * time.Second)
	if n := h.engine.RenewalCount(); n != 2 {
		t.Fatalf("retried before 60s: %d", n)
	}
	h.step(time.Second) // 60s
	h.step(2 * time.Minute)
	if n := h.engine.RenewalCount(); n != 4 {
		t.Fatalf("attempts %d, want 4 (3 failures then success)", n)
	}
	h.step(30 * time.Minute)
	if n := h.engine.RenewalCount(); n != 4 {
		t.Fatalf("kept renewing after success: %d", n)
	}
}

func TestFileChangesRescanAndOwnWritesDoNot(t *testing.T) {
	dir := t.TempDir()
	own := filepath.Join(dir, "apiserver.crt")
	if err := os.WriteFile(own, []byte("ours"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := start(t, map[string]*daemontest.Item{"a": item(time.Hour, 100*time.Hour)}, nil)
	h.engine.Written = []string{own}
	h.step(time.Hour) // renewal writes own
	base := h.engine.InventoryCount()
	h.events <- own
	h.settle()
	h.step(3 * time.Second)
	if n := h.engine.InventoryCount(); n != base {
		t.Fatalf("own write caused a rescan (%d -> %d)", base, n)
	}
	// Someone else replaces it (kubeadm certs renew): a rescan, once,
	// after the burst settles.
	if err := os.WriteFile(own, []byte("kubeadm's"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		h.events <- own
	}
	h.events <- filepath.Join(dir, "apiserver.key")
	h.settle()
	if n := h.engine.InventoryCount(); n != base {
		t.Fatalf("rescan before the debounce: %d", n-base)
	}
	h.step(2 * time.Second)
	if n := h.engine.InventoryCount(); n != base+1 {
		t.Fatalf("%d rescans, want 1", n-base)
	}
}

func TestReload(t *testing.T) {
	h := start(t, map[string]*daemontest.Item{"a": item(time.Hour, 100*time.Hour)}, nil)
	other := &daemontest.Engine{Now: h.clk.Now, Items: map[string]*daemontest.Item{"b": item(2*time.Hour, 100*time.Hour)}}
	h.reconf = func() (daemon.Engine, error) { return nil, errors.New("config.yaml: line 1: unknown key") }
	h.reload <- struct{}{}
	h.settle()
	if h.notify.Count("RELOADING=1") != 1 || h.notify.Count("READY=1") != 2 {
		t.Fatalf("states %v", h.notify.States)
	}
	h.step(time.Hour)
	if h.engine.RenewalCount() != 1 {
		t.Fatal("a failed reload dropped the old configuration")
	}
	h.reconf = func() (daemon.Engine, error) { return other, nil }
	h.reload <- struct{}{}
	h.settle()
	h.step(time.Hour)
	if other.RenewalCount() != 1 || h.engine.RenewalCount() != 1 {
		t.Fatalf("after reload: new engine %d renewals, old %d", other.RenewalCount(), h.engine.RenewalCount())
	}
}

func TestStopDuringRenewalFinishesIt(t *testing.T) {
	h := start(t, map[string]*daemontest.Item{"a": item(time.Hour, 100*time.Hour)}, nil)
	h.engine.OnRenew = h.cancel // SIGTERM arrives mid-renewal
	h.clk.Step(time.Hour)
	select {
	case err := <-h.done:
		if err != nil {
			t.Fatal(err)
		}
		h.done <- nil
	case <-time.After(5 * time.Second):
		t.Fatal("did not stop")
	}
	if h.engine.RenewalCount() != 1 || !h.engine.Items["a"].NotBefore.Equal(t0.Add(time.Hour)) {
		t.Fatal("the renewal in hand was not finished")
	}
	if h.notify.Count("STOPPING=1") != 1 {
		t.Fatalf("states %v", h.notify.States)
	}
}

func TestWatchdogFromTheLoop(t *testing.T) {
	h := start(t, map[string]*daemontest.Item{"a": item(100*time.Hour, 200*time.Hour)}, func(o *daemon.Options) { o.WatchdogInterval = 15 * time.Second })
	before := h.notify.Count("WATCHDOG=1")
	for i := 0; i < 4; i++ {
		h.step(15 * time.Second)
	}
	if got := h.notify.Count("WATCHDOG=1") - before; got != 4 {
		t.Fatalf("%d watchdog pings in 60s at 15s", got)
	}
}

// A reload is a fresh start for a failing renewal: it does not wait out the
// backoff earned under the previous configuration.
func TestReloadResetsTheBackoff(t *testing.T) {
	h := start(t, map[string]*daemontest.Item{"a": item(time.Hour, 100*time.Hour)}, nil)
	h.engine.Fail = 5
	h.step(time.Hour) // due: fails, backoff 30 s
	h.step(30 * time.Second)
	h.step(time.Minute) // third failure, next retry in 2 min
	if n := h.engine.RenewalCount(); n != 3 {
		t.Fatalf("attempts %d", n)
	}
	h.engine.Fail = 0
	h.reconf = func() (daemon.Engine, error) { return h.engine, nil }
	h.reload <- struct{}{}
	h.settle()
	if n := h.engine.RenewalCount(); n != 4 {
		t.Fatalf("no attempt right after the reload (%d attempts)", n)
	}
}

// Restarts owed by an earlier run (a crash mid-roll, a lease held
// elsewhere) are done at start with no renewal, retried with the backoff
// until done, and then never again.
func TestOwedRestartsAreDone(t *testing.T) {
	h := start(t, map[string]*daemontest.Item{"a": item(10*time.Hour, 30*time.Hour)}, func(o *daemon.Options) {
		e := o.Engine.(*daemontest.Engine)
		e.Owed = []string{"kube-apiserver", "kube-scheduler"}
		e.Fail = 1 // the lease is held elsewhere the first time
	})
	if got := h.engine.Renewals; len(got) != 1 || len(got[0]) != 0 {
		t.Fatalf("at start: renewals %v, want one call with no names", got)
	}
	h.step(29 * time.Second)
	if n := h.engine.RenewalCount(); n != 1 {
		t.Fatalf("retried before the backoff: %d", n)
	}
	h.step(time.Second)
	if got := h.engine.Renewals; len(got) != 2 || len(got[1]) != 0 || len(h.engine.Look().Owed) != 0 {
		t.Fatalf("after the backoff: renewals %v, owed %v", got, h.engine.Look().Owed)
	}
	h.step(time.Hour)
	if n := h.engine.RenewalCount(); n != 2 {
		t.Fatalf("called again with nothing owed: %v", h.engine.Renewals)
	}
}

// The loop wakes when the engine asks to look again, before its hourly
// re-check.
func TestLooksAgainWhenAReloadCanBeJudged(t *testing.T) {
	h := start(t, map[string]*daemontest.Item{"a": item(100*time.Hour, 300*time.Hour)}, func(o *daemon.Options) {
		o.Engine.(*daemontest.Engine).SetLookAgain(t0.Add(75 * time.Second))
	})
	base := h.engine.InventoryCount()
	h.step(74 * time.Second)
	if n := h.engine.InventoryCount(); n != base {
		t.Fatalf("looked again before it was asked to (%d -> %d)", base, n)
	}
	h.engine.SetLookAgain(time.Time{})
	h.step(time.Second)
	if n := h.engine.InventoryCount(); n != base+1 {
		t.Fatalf("did not look again when asked to (%d -> %d)", base, n)
	}
}

// An interrupted renewal left by anyone (a killed `pkirenewd renew`) is
// completed or undone at the next look, not only at start.
func TestATransactionLeftBehindIsRecoveredAtTheNextLook(t *testing.T) {
	h := start(t, map[string]*daemontest.Item{"a": item(100*time.Hour, 300*time.Hour)}, nil)
	base := h.engine.RecoverCount()
	h.engine.SetTransaction(true)
	h.step(time.Hour)
	if n := h.engine.RecoverCount(); n != base+1 {
		t.Fatalf("recovered %d times at the next look, want once", n-base)
	}
	h.step(time.Hour)
	if n := h.engine.RecoverCount(); n != base+1 {
		t.Fatalf("recovered again with nothing left (%d)", n-base)
	}
}

func TestRenewedElsewhere(t *testing.T) {
	cert := func(name string, notAfter time.Duration) renew.Status {
		return status(name, t0, t0.Add(notAfter), t0)
	}
	before := []renew.Status{cert("apiserver", time.Hour), cert("admin.conf", time.Hour), cert("scheduler.conf", time.Hour)}
	after := []renew.Status{cert("apiserver", 2*time.Hour), cert("admin.conf", 2*time.Hour), cert("scheduler.conf", time.Hour), cert("new", time.Hour)}
	for _, tc := range []struct {
		name string
		ours map[string]bool
		want string
	}{
		{"nothing renewed by pkirenewd", nil, "admin.conf apiserver"},
		{"apiserver renewed by pkirenewd", map[string]bool{"apiserver": true}, "admin.conf"},
		{"both ours", map[string]bool{"apiserver": true, "admin.conf": true}, ""},
	} {
		got := daemon.RenewedElsewhere(before, after, tc.ours)
		if s := fmt.Sprint(strings.Join(got, " ")); s != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, s, tc.want)
		}
	}
	if got := daemon.RenewedElsewhere(nil, after, nil); len(got) != 0 {
		t.Errorf("first inventory: %v", got)
	}
}

// While kubeadm upgrades the node the loop looks every 10 s, not at its
// hourly re-check, and the journal says when the upgrade starts and ends
// (once each).
func TestWatchesAKubeadmUpgradeUntilItEnds(t *testing.T) {
	log, hook := logtest.NewNullLogger()
	h := start(t, map[string]*daemontest.Item{"a": item(100*time.Hour, 300*time.Hour)}, func(o *daemon.Options) {
		o.Engine.(*daemontest.Engine).SetUpgrading("kubeadm upgrade in progress (kubeadm-upgraded-manifests1, 1s old)")
		o.Log = log
	})
	upgradeLines := func() (out []string) {
		for _, e := range hook.AllEntries() {
			if e.Data["ACTION"] == "outside-upgrade" {
				out = append(out, e.Message)
			}
		}
		return out
	}
	if got := upgradeLines(); len(got) != 1 || !strings.Contains(got[0], "writes and restarts nothing until it has finished") {
		t.Fatalf("at start: %q", got)
	}
	base := h.engine.InventoryCount()
	h.step(10 * time.Second)
	h.step(10 * time.Second)
	if n := h.engine.InventoryCount(); n != base+2 {
		t.Fatalf("looked %d times in 20 s of upgrade, want 2", n-base)
	}
	if got := upgradeLines(); len(got) != 1 {
		t.Fatalf("said it again while the upgrade went on: %q", got)
	}
	h.engine.SetUpgrading("")
	h.step(10 * time.Second)
	if got := upgradeLines(); len(got) != 2 || !strings.Contains(got[1], "has finished") {
		t.Fatalf("after the upgrade: %q", got)
	}
	base = h.engine.InventoryCount()
	h.step(10 * time.Minute)
	if n := h.engine.InventoryCount(); n != base {
		t.Fatalf("still looking every 10 s after the upgrade (%d looks in 10 min)", n-base)
	}
}
