package reconcile_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	testclock "k8s.io/utils/clock/testing"

	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/cri/critest"
	"github.com/pkirenewd/pkirenewd/reconcile"
	"github.com/pkirenewd/pkirenewd/renew"
)

type recorder struct{ results []string }

func (r *recorder) Restart(component string, err error) {
	r.results = append(r.results, component+":"+map[bool]string{true: "failure", false: "success"}[err != nil])
}

func planOf(names ...string) *renew.Plan {
	p := &renew.Plan{}
	for _, n := range names {
		p.Items = append(p.Items, renew.Planned{Status: renew.Status{Item: &renew.Item{Name: n}}})
	}
	return p
}

func TestKubeletAfterRenewal(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	ctx := context.Background()
	calls := 0
	ok := func(context.Context) error { calls++; return nil }
	rec := &recorder{}
	if err := reconcile.KubeletAfterRenewal(ctx, planOf("apiserver", "admin.conf"), ok, log, rec); err != nil || calls != 0 {
		t.Fatalf("no kubelet.conf: err %v, %d restarts", err, calls)
	}
	if err := reconcile.KubeletAfterRenewal(ctx, planOf("apiserver", "kubelet.conf"), ok, log, rec); err != nil || calls != 1 {
		t.Fatalf("kubelet.conf: err %v, %d restarts", err, calls)
	}
	fail := func(context.Context) error { return errors.New("unit kubelet.service not found") }
	err := reconcile.KubeletAfterRenewal(ctx, planOf("kubelet.conf"), fail, log, rec)
	if err == nil || !strings.Contains(err.Error(), "kubelet.service not found") {
		t.Fatalf("failing restart: %v", err)
	}
	if strings.Join(rec.results, ",") != "kubelet:success,kubelet:failure" {
		t.Errorf("recorded %v", rec.results)
	}
	if err := reconcile.KubeletAfterRenewal(ctx, planOf("kubelet.conf"), nil, log, rec); err != nil {
		t.Errorf("no restarter: %v", err)
	}
}

// copyManifests writes the named fixtures (path under cri/testdata ->
// file name) into a manifests directory.
func copyManifests(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for src, name := range files {
		data, err := os.ReadFile(filepath.Join("../cri/testdata", src))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Restarts owed with kube-vip (no probe), a broken etcd.yaml and a
// haproxy manifest with a templated probe port beside them: the others are
// restarted, etcd stays owed and is an error naming its file, haproxy is a
// warning naming its file.
func TestRollOwedPastUnusableManifests(t *testing.T) {
	dir := copyManifests(t, map[string]string{
		"kubeadm-v1.37.2/kube-scheduler.yaml": "kube-scheduler.yaml", "foreign/truncated.yaml": "etcd.yaml",
		"foreign/kube-vip.yaml": "kube-vip.yaml", "foreign/haproxy.yaml": "haproxy.yaml",
	})
	ms, err := cri.LoadManifests(dir)
	if err != nil {
		t.Fatal(err)
	}
	rt := critest.NewRuntime()
	for _, c := range []string{"etcd", "kube-scheduler", "kube-vip", "haproxy"} {
		rt.AddStaticPod(c)
	}
	log, hook := logtest.NewNullLogger()
	rst := &cri.Restarter{Runtime: rt, Prober: &critest.Prober{}, Clock: testclock.NewFakeClock(time.Unix(0, 0)), Timeout: time.Minute, Log: log}
	state := t.TempDir()
	e := &reconcile.NodeEngine{StateDir: state, ManifestsDir: dir, Log: log, Now: func() time.Time { return time.Unix(0, 0) }}
	owed := &renew.PendingRestart{Components: []string{"etcd", "kube-scheduler", "kube-vip"}}
	results, err := e.RollOwed(context.Background(), rst, ms, owed)
	var restarted []string
	for _, r := range results {
		if r.Err != nil {
			t.Errorf("%s: %v", r.Component, r.Err)
		}
		restarted = append(restarted, r.Component)
	}
	if !reflect.DeepEqual(restarted, []string{"kube-scheduler", "kube-vip"}) {
		t.Errorf("restarted %v", restarted)
	}
	if err == nil || !strings.Contains(err.Error(), "etcd needs a restart") || !strings.Contains(err.Error(), filepath.Join(dir, "etcd.yaml")) {
		t.Errorf("error %v", err)
	}
	left, _ := renew.LoadPending(state)
	if left == nil || !reflect.DeepEqual(left.Components, []string{"etcd"}) {
		t.Errorf("still owed %+v", left)
	}
	var warned []string
	for _, en := range hook.AllEntries() {
		if en.Level == logrus.WarnLevel {
			warned = append(warned, en.Data["MANIFEST"].(string))
		}
	}
	if !reflect.DeepEqual(warned, []string{filepath.Join(dir, "haproxy.yaml")}) {
		t.Errorf("warnings for %v", warned)
	}
	for _, c := range rt.Calls {
		if strings.Contains(c, "etcd") || strings.Contains(c, "haproxy") {
			t.Errorf("touched: %s", c)
		}
	}
}
