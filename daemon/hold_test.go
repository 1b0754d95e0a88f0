package daemon_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/pkirenewd/pkirenewd/daemon"
	"github.com/pkirenewd/pkirenewd/daemon/daemontest"
)

// A renewal held by a kubeadm upgrade is not a failure: no "renewal
// failed", no failure counted, no backoff; it is looked at every 10 s and
// goes ahead within one look of the hold's end, however long it lasted.
func TestAHoldIsNotAFailure(t *testing.T) {
	log, hook := logtest.NewNullLogger()
	m := daemon.NewPromMetrics()
	var eng *daemontest.Engine
	h := start(t, map[string]*daemontest.Item{"a": item(time.Hour, 300*time.Hour)}, func(o *daemon.Options) {
		eng = o.Engine.(*daemontest.Engine)
		eng.SetHold("kubeadm-upgrade")
		o.Log, o.Metrics = log, m
	})
	h.step(time.Hour) // due, and held
	for i := 0; i < 6*30; i++ {
		h.step(10 * time.Second) // 30 minutes of upgrade
	}
	if got := eng.Held; got < 6*30 {
		t.Errorf("looked %d times in 30 min of hold, want one every 10 s", got)
	}
	if got := series(t, m, "pkirenewd_renewals_total", "result", "failure"); got != 0 {
		t.Errorf("a hold counted %v failures", got)
	}
	if got := series(t, m, "pkirenewd_held", "reason", "kubeadm-upgrade"); got != 1 {
		t.Errorf("pkirenewd_held{reason=kubeadm-upgrade} = %v while held", got)
	}
	var holds int
	for _, e := range hook.AllEntries() {
		if e.Level <= logrus.ErrorLevel {
			t.Errorf("logged at %s during a hold: %s", e.Level, e.Message)
		}
		if e.Data["ACTION"] == "hold" {
			holds++
		}
	}
	if holds != 1 {
		t.Errorf("said the hold %d times, want once", holds)
	}
	if !strings.Contains(h.notify.Last("STATUS="), "held:") {
		t.Errorf("status during a hold: %q", h.notify.Last("STATUS="))
	}
	eng.SetHold("")
	h.step(10 * time.Second)
	if n := eng.RenewalCount(); n != 1 {
		t.Fatalf("renewed %d times within 10 s of the hold's end, want 1", n)
	}
	if got := series(t, m, "pkirenewd_held", "reason", "kubeadm-upgrade"); got != 0 {
		t.Errorf("still held in the metric after the hold: %v", got)
	}
}

// Stale components that restarts are off for, and components that cannot
// be seen, are said in the journal (once while they stay) and kept in the
// metrics: never silent, never "fine".
func TestStaleAndUnseenAreReported(t *testing.T) {
	log, hook := logtest.NewNullLogger()
	m := daemon.NewPromMetrics()
	h := start(t, map[string]*daemontest.Item{"a": item(100*time.Hour, 300*time.Hour)}, func(o *daemon.Options) {
		e := o.Engine.(*daemontest.Engine)
		e.Stale, e.Unseen = []string{"kube-controller-manager"}, []string{"kube-scheduler"}
		o.Log, o.Metrics = log, m
	})
	h.step(time.Hour)
	h.step(time.Hour)
	if got := series(t, m, "pkirenewd_stale_components", "component", "kube-controller-manager"); got != 1 {
		t.Errorf("pkirenewd_stale_components{kube-controller-manager} = %v", got)
	}
	if got := series(t, m, "pkirenewd_unseen_components", "component", "kube-scheduler"); got != 1 {
		t.Errorf("pkirenewd_unseen_components{kube-scheduler} = %v", got)
	}
	said := map[string]int{}
	for _, e := range hook.AllEntries() {
		if a, _ := e.Data["ACTION"].(string); a == "stale" || a == "unseen" {
			said[a+" "+e.Data["COMPONENT"].(string)]++
			if e.Level != logrus.WarnLevel {
				t.Errorf("%s at %s", e.Message, e.Level)
			}
		}
	}
	if said["stale kube-controller-manager"] != 1 || said["unseen kube-scheduler"] != 1 {
		t.Errorf("said %v, want each once", said)
	}
	if h.engine.RenewalCount() != 0 {
		t.Error("a stale component that restarts are off for was acted on")
	}
}

// series is the value of the series of metric name whose label is value
// (0 when there is none).
func series(t *testing.T, m *daemon.PromMetrics, name, label, value string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					if s.GetCounter() != nil {
						return s.GetCounter().GetValue()
					}
					return s.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}
