package daemon_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/pkirenewd/pkirenewd/daemon"
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
	if err := daemon.KubeletAfterRenewal(ctx, planOf("apiserver", "admin.conf"), ok, log, rec); err != nil || calls != 0 {
		t.Fatalf("no kubelet.conf: err %v, %d restarts", err, calls)
	}
	if err := daemon.KubeletAfterRenewal(ctx, planOf("apiserver", "kubelet.conf"), ok, log, rec); err != nil || calls != 1 {
		t.Fatalf("kubelet.conf: err %v, %d restarts", err, calls)
	}
	fail := func(context.Context) error { return errors.New("unit kubelet.service not found") }
	err := daemon.KubeletAfterRenewal(ctx, planOf("kubelet.conf"), fail, log, rec)
	if err == nil || !strings.Contains(err.Error(), "kubelet.service not found") {
		t.Fatalf("failing restart: %v", err)
	}
	if strings.Join(rec.results, ",") != "kubelet:success,kubelet:failure" {
		t.Errorf("recorded %v", rec.results)
	}
	if err := daemon.KubeletAfterRenewal(ctx, planOf("kubelet.conf"), nil, log, rec); err != nil {
		t.Errorf("no restarter: %v", err)
	}
}
