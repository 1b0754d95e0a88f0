package daemon_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	testclock "k8s.io/utils/clock/testing"

	"github.com/pkirenewd/pkirenewd/daemon"
	"github.com/pkirenewd/pkirenewd/daemon/daemontest"
)

// waitFor polls cond for up to 5 s of real time.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func warnings(hook *logtest.Hook, msg string) int {
	n := 0
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel && strings.Contains(e.Message, msg) {
			n++
		}
	}
	return n
}

// A metrics address another process listens on is a warning naming the
// address and the error, then a retry every minute on the daemon's clock,
// warned again at most hourly; once the address is free the metrics are
// served and the problem is gone.
func TestMetricsListenerRetriesABusyAddress(t *testing.T) {
	blocker, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close()
	addr := blocker.Addr().String()
	clk := testclock.NewFakeClock(t0)
	log, hook := logtest.NewNullLogger()
	changed := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := &daemon.MetricsListener{Metrics: daemon.NewPromMetrics(), Addr: addr, Clock: clk, Log: log, Changed: changed}
	l.Start(ctx)

	if p := l.Problem(); !strings.Contains(p, addr) || !strings.Contains(p, "address already in use") {
		t.Fatalf("problem %q, want the address and the error", p)
	}
	<-changed
	var warned []*logrus.Entry
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel {
			warned = append(warned, e)
		}
	}
	if len(warned) != 1 || !strings.Contains(warned[0].Message, addr) || !strings.Contains(warned[0].Data[logrus.ErrorKey].(error).Error(), "address already in use") {
		t.Fatalf("warnings %v", hook.AllEntries())
	}

	// A retry a minute, a warning an hour.
	step := func() {
		t.Helper()
		waitFor(t, "the retry timer", clk.HasWaiters)
		clk.Step(time.Minute)
	}
	for i := 1; i < 60; i++ {
		step()
	}
	waitFor(t, "the retry timer", clk.HasWaiters)
	if n := warnings(hook, "cannot serve metrics"); n != 1 {
		t.Fatalf("%d warnings in the first 59 minutes, want 1", n)
	}
	step() // t0+60m
	waitFor(t, "the hourly warning", func() bool { return warnings(hook, "cannot serve metrics") == 2 })
	if l.Served() != nil {
		t.Fatal("served on a busy address")
	}

	// The other process goes away: served at the next retry.
	blocker.Close()
	step()
	waitFor(t, "the metrics listener", func() bool { return l.Served() != nil })
	if p := l.Problem(); p != "" {
		t.Errorf("problem %q after binding", p)
	}
	<-changed
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	var served bool
	for _, e := range hook.AllEntries() {
		served = served || (e.Level == logrus.InfoLevel && e.Message == "serving metrics" && e.Data["ADDRESS"] == addr)
	}
	if !served {
		t.Error(`no Info "serving metrics" with the address`)
	}
	if clk.HasWaiters() {
		t.Error("still retrying after binding")
	}
}

// fakeOptional is an optional part whose problem the test sets.
type fakeOptional struct {
	mu      sync.Mutex
	problem string
}

func (f *fakeOptional) Problem() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.problem
}

func (f *fakeOptional) set(p string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.problem = p
}

// The daemon renews while an optional part is broken, and STATUS= says
// what is missing until it is fixed.
func TestStatusCarriesOptionalProblems(t *testing.T) {
	opt := &fakeOptional{problem: "metrics not served on 127.0.0.1:9795 (address already in use)"}
	changed := make(chan struct{}, 1)
	h := start(t, map[string]*daemontest.Item{"a": item(time.Hour, 100*time.Hour)}, func(o *daemon.Options) {
		o.Optional = []daemon.Optional{opt}
		o.OptionalChanged = changed
	})
	last := func() string { return h.notify.Last("STATUS=") }
	if s := last(); !strings.Contains(s, "1/1 certs ok") || !strings.HasSuffix(s, "; metrics not served on 127.0.0.1:9795 (address already in use)") {
		t.Fatalf("READY status %q", s)
	}
	h.step(time.Hour)
	if h.engine.RenewalCount() != 1 {
		t.Fatal("did not renew while the optional part was broken")
	}
	opt.set("")
	changed <- struct{}{}
	h.settle()
	if s := last(); strings.Contains(s, "metrics") {
		t.Fatalf("status %q after the problem went away", s)
	}
}
