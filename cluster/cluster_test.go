package cluster_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/pkirenewd/pkirenewd/cluster"
	"github.com/pkirenewd/pkirenewd/cluster/clustertest"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func ptr[T any](v T) *T { return &v }

func TestTakeable(t *testing.T) {
	at := func(d time.Duration) *metav1.MicroTime { m := metav1.NewMicroTime(t0.Add(d)); return &m }
	held := func(renew time.Duration) coordinationv1.LeaseSpec {
		return coordinationv1.LeaseSpec{HolderIdentity: ptr("node2"), RenewTime: at(renew), LeaseDurationSeconds: ptr[int32](60)}
	}
	tests := []struct {
		name   string
		spec   coordinationv1.LeaseSpec
		seen   time.Duration // how long ago this record was first seen; <0: never
		ok     bool
		holder string
	}{
		{"no holder", coordinationv1.LeaseSpec{}, -1, true, ""},
		{"released", coordinationv1.LeaseSpec{HolderIdentity: ptr(""), RenewTime: at(0), LeaseDurationSeconds: ptr[int32](60)}, -1, true, ""},
		{"ours", coordinationv1.LeaseSpec{HolderIdentity: ptr("me"), RenewTime: at(0), LeaseDurationSeconds: ptr[int32](60)}, -1, true, "me"},
		{"held, first seen now", held(0), -1, false, "node2"},
		{"held, record unchanged for 59s", held(0), 59 * time.Second, false, "node2"},
		{"held, record unchanged for 60s: expired", held(0), 60 * time.Second, true, "node2"},
		// The holder's clock runs 80 s behind ours: its fresh renewTime
		// looks 80 s old. Judged by our observation, it is held.
		{"held, holder's clock 80s behind, first seen now", held(-80 * time.Second), -1, false, "node2"},
		// And 10 minutes ahead: a crashed holder must still expire.
		{"held, holder's clock 10m ahead, unchanged for 60s", held(10 * time.Minute), 60 * time.Second, true, "node2"},
		{"held, no times, first seen now", coordinationv1.LeaseSpec{HolderIdentity: ptr("node2")}, -1, true, "node2"},
	}
	for _, tc := range tests {
		var seen cluster.Observation
		if tc.seen >= 0 {
			// What the previous call returned for the same record.
			_, _, seen = cluster.Takeable(tc.spec, "me", t0.Add(-tc.seen), cluster.Observation{})
		}
		ok, h, _ := cluster.Takeable(tc.spec, "me", t0, seen)
		if ok != tc.ok || h.Identity != tc.holder {
			t.Errorf("%s: got %v %q, want %v %q", tc.name, ok, h.Identity, tc.ok, tc.holder)
		}
	}
}

// A renewal by the holder resets the observation: the lease stays held as
// long as its record keeps changing, whatever the timestamps say.
func TestTakeableFollowsRecordChanges(t *testing.T) {
	at := func(d time.Duration) *metav1.MicroTime { m := metav1.NewMicroTime(t0.Add(d)); return &m }
	var seen cluster.Observation
	for i := 0; i < 10; i++ {
		now := t0.Add(time.Duration(i) * 40 * time.Second)
		// The holder renews every 40 s with a clock an hour behind.
		spec := coordinationv1.LeaseSpec{HolderIdentity: ptr("node2"), RenewTime: at(time.Duration(i)*40*time.Second - time.Hour), LeaseDurationSeconds: ptr[int32](60)}
		var ok bool
		ok, _, seen = cluster.Takeable(spec, "me", now, seen)
		if ok {
			t.Fatalf("attempt %d: a lease renewed every 40 s was taken", i)
		}
	}
}

func lease(store *clustertest.Leases, id string, clk *clocktesting.FakeClock) *cluster.Lease {
	return &cluster.Lease{Client: store, Name: "pkirenewd", Identity: id, Duration: time.Minute, Clock: clk}
}

func TestLeaseHandsOver(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakeClock(t0)
	store := clustertest.NewLeases()
	a, b := lease(store, "node1", clk), lease(store, "node2", clk)
	if ok, _, err := a.TryAcquire(ctx); !ok || err != nil {
		t.Fatalf("free lease: %v %v", ok, err)
	}
	ok, h, err := b.TryAcquire(ctx)
	if ok || err != nil || h.Identity != "node1" || !h.Expires.Equal(t0.Add(time.Minute)) {
		t.Fatalf("held lease taken: %v %+v %v", ok, h, err)
	}
	clk.Step(30 * time.Second)
	if err := a.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	clk.Step(59 * time.Second)
	if ok, _, _ := b.TryAcquire(ctx); ok {
		t.Fatal("taken 59s after a renewal")
	}
	// node1 crashed: its lease runs out a duration after node2 first
	// saw the last renewal (59 s ago), by node2's own clock.
	clk.Step(59 * time.Second)
	if ok, _, _ := b.TryAcquire(ctx); ok {
		t.Fatal("taken 59s after the last renewal was first seen")
	}
	clk.Step(time.Second)
	if ok, _, err := b.TryAcquire(ctx); !ok || err != nil {
		t.Fatalf("expired lease not taken: %v", err)
	}
	if err := a.Renew(ctx); !errors.Is(err, cluster.ErrLost) {
		t.Fatalf("renewing a lease another took: %v", err)
	}
	if err := a.Release(ctx); err != nil || store.Holder("pkirenewd") != "node2" {
		t.Fatalf("release by a non-holder changed the lease: %v %q", err, store.Holder("pkirenewd"))
	}
	if err := b.Release(ctx); err != nil || store.Holder("pkirenewd") != "" {
		t.Fatalf("release: %v %q", err, store.Holder("pkirenewd"))
	}
	if ok, _, _ := a.TryAcquire(ctx); !ok {
		t.Fatal("released lease not taken")
	}
	if want := []string{"node1", "node2", "", "node1"}; !reflect.DeepEqual(store.Holders, want) {
		t.Errorf("holders %q, want %q", store.Holders, want)
	}
}

// drive advances the fake clock until done is closed, so the code under
// test can wait on it.
func drive(clk *clocktesting.FakeClock, step time.Duration, done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		default:
		}
		clk.Step(step)
		time.Sleep(200 * time.Microsecond)
	}
}

func coordinator(store *clustertest.Leases, id string, clk *clocktesting.FakeClock, log logrus.FieldLogger) *cluster.Coordinator {
	return &cluster.Coordinator{
		NewLease:  func() (*cluster.Lease, error) { return lease(store, id, clk), nil },
		LeaseName: "kube-system/pkirenewd", Clock: clk, Log: log,
		Jitter: func() float64 { return 0.5 },
	}
}

func TestAcquireWaitsForTheHolderThenTakesIt(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	store := clustertest.NewLeases()
	a := coordinator(store, "node1", clk, nil)
	ha, err := a.Acquire(context.Background(), false)
	if err != nil || !ha.Leased() {
		t.Fatalf("%v", err)
	}
	b := coordinator(store, "node2", clk, nil)
	got := make(chan *cluster.Hold)
	var bErr error
	go func() {
		h, err := b.Acquire(context.Background(), false)
		bErr = err
		got <- h
	}()
	// node1 keeps its lease for 3 minutes of roll (its renewals run on the
	// same clock), then releases it.
	stop := make(chan struct{})
	go drive(clk, time.Second, stop)
	for clk.Since(t0) < 3*time.Minute {
		select {
		case <-got:
			t.Fatal("node2 got the lease while node1 held it")
		case <-time.After(time.Millisecond):
		}
	}
	ha.Release(context.Background())
	hb := <-got
	close(stop)
	if bErr != nil || !hb.Leased() || store.Holder("pkirenewd") != "node2" {
		t.Fatalf("node2: %v, holder %q", bErr, store.Holder("pkirenewd"))
	}
	hb.Release(context.Background())
	if want := []string{"node1", "", "node2", ""}; !reflect.DeepEqual(store.Holders, want) {
		t.Errorf("holders %q, want %q", store.Holders, want)
	}
}

func TestAcquireGivesUpAfterWait(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	store := clustertest.NewLeases()
	ha, err := coordinator(store, "node1", clk, nil).Acquire(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer ha.Release(context.Background())
	b := coordinator(store, "node2", clk, nil)
	b.Wait = 2 * time.Minute
	done := make(chan struct{})
	go drive(clk, time.Second, done)
	_, err = b.Acquire(context.Background(), false)
	close(done)
	if err == nil || !strings.Contains(err.Error(), "still held by node1") {
		t.Fatalf("%v", err)
	}
	if d := clk.Since(t0); d < 2*time.Minute || d > 3*time.Minute {
		t.Errorf("gave up after %v", d)
	}
}

func TestUnreachableAPI(t *testing.T) {
	down := errors.New(`Get "https://192.0.2.10:6443/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/pkirenewd": tls: failed to verify certificate: x509: certificate has expired or is not yet valid`)
	t.Run("not recovering: wait, then fail", func(t *testing.T) {
		clk := clocktesting.NewFakeClock(t0)
		store := clustertest.NewLeases()
		store.SetDown(down)
		c := coordinator(store, "node1", clk, nil)
		c.Wait = time.Minute
		done := make(chan struct{})
		go drive(clk, time.Second, done)
		_, err := c.Acquire(context.Background(), false)
		close(done)
		if err == nil || !strings.Contains(err.Error(), "did not answer") || !strings.Contains(err.Error(), "certificate has expired") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("recovering: go ahead alone, loudly; take the lease once the API answers", func(t *testing.T) {
		clk := clocktesting.NewFakeClock(t0)
		store := clustertest.NewLeases()
		store.SetDown(down)
		log, hook := logtest.NewNullLogger()
		c := coordinator(store, "node1", clk, log)
		h, err := c.Acquire(context.Background(), true)
		if err != nil || h.Leased() {
			t.Fatalf("%v leased=%v", err, h.Leased())
		}
		var loud *logrus.Entry
		for _, e := range hook.AllEntries() {
			if e.Data["PRIORITY"] == cluster.Critical && strings.Contains(e.Message, "RECOVERING AN EXPIRED CONTROL PLANE") {
				loud = e
			}
		}
		if loud == nil || !strings.Contains(loud.Message, "the API does not answer") {
			t.Fatalf("no critical message that the node goes on without the lease in %v", hook.AllEntries())
		}
		if err := h.Gate(context.Background(), "kube-apiserver"); err != nil || h.Leased() {
			t.Fatalf("gate while the API is down: %v leased=%v", err, h.Leased())
		}
		store.SetDown(nil)
		// Asked again at once, the API is not asked: a second later it is.
		if err := h.Gate(context.Background(), "kube-controller-manager"); err != nil || h.Leased() {
			t.Fatalf("gate right after the API failed to answer: %v leased=%v", err, h.Leased())
		}
		clk.Step(time.Second)
		if err := h.Gate(context.Background(), "kube-controller-manager"); err != nil || !h.Leased() || store.Holder("pkirenewd") != "node1" {
			t.Fatalf("gate once the API answers: %v leased=%v holder %q", err, h.Leased(), store.Holder("pkirenewd"))
		}
		h.Release(context.Background())
		if store.Holder("pkirenewd") != "" {
			t.Errorf("not released")
		}
	})
}

// Recovering, an API that hangs (it cannot reach etcd) is given a second,
// not the usual call bound, when the lease is asked for and again before
// each component: the node goes ahead alone.
func TestRecoveringDoesNotWaitOnAHangingAPI(t *testing.T) {
	store := clustertest.NewLeases()
	store.Hang = true
	clk := clocktesting.NewFakeClock(t0)
	c := coordinator(store, "node1", clk, nil)
	c.Call = time.Hour // were it used, the test would time out
	h, err := c.Acquire(context.Background(), true)
	if err != nil || h.Leased() {
		t.Fatalf("%v leased=%v", err, h.Leased())
	}
	// Each component's gate tries the lease again (a second later), as
	// briefly.
	clk.Step(time.Second)
	if err := h.Gate(context.Background(), "kube-apiserver"); err != nil || h.Leased() {
		t.Fatalf("gate: %v leased=%v", err, h.Leased())
	}
	h.Release(context.Background())
}

// An expired control plane whose API came back with the renewed files
// (etcd and the apiserver reload their certificates) takes the lease as
// usual, but the expiry is still said at crit.
func TestRecoveringWithTheAPIUp(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	store := clustertest.NewLeases()
	log, hook := logtest.NewNullLogger()
	h, err := coordinator(store, "node1", clk, log).Acquire(context.Background(), true)
	if err != nil || !h.Leased() || store.Holder("pkirenewd") != "node1" {
		t.Fatalf("%v leased=%v holder %q", err, h.Leased(), store.Holder("pkirenewd"))
	}
	defer h.Release(context.Background())
	var crit []string
	for _, e := range hook.AllEntries() {
		if e.Data["PRIORITY"] == cluster.Critical {
			crit = append(crit, e.Message)
		}
	}
	if len(crit) != 1 || !strings.Contains(crit[0], "certificates had expired and were renewed") {
		t.Fatalf("crit messages %q, want the one saying the certificates had expired", crit)
	}
}

func TestGateEtcdQuorumGuard(t *testing.T) {
	unhealthy := errors.New("member node3 is unhealthy (https://127.0.0.13:2379: context deadline exceeded)")
	tests := []struct {
		name       string
		component  string
		errs       []error
		recovering bool
		wantErr    string
		wantCalls  int
	}{
		{"not etcd: no guard", "kube-apiserver", []error{unhealthy}, false, "", 0},
		{"healthy peers", "etcd", nil, false, "", 1},
		{"peer comes back", "etcd", []error{unhealthy, unhealthy, nil}, false, "", 3},
		{"peer stays down", "etcd", []error{unhealthy}, false, "member node3 is unhealthy", -1},
		{"recovering without API: not waiting", "etcd", []error{unhealthy}, true, "", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(t0)
			store := clustertest.NewLeases()
			g := &clustertest.Guard{Errs: tc.errs}
			c := coordinator(store, "node1", clk, nil)
			c.Guard, c.Wait = g, time.Minute
			if tc.recovering {
				store.SetDown(errors.New("connection refused"))
			}
			h, err := c.Acquire(context.Background(), tc.recovering)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Release(context.Background())
			done := make(chan struct{})
			go drive(clk, time.Second, done)
			err = h.Gate(context.Background(), tc.component)
			close(done)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("gate: %v, want %q", err, tc.wantErr)
			}
			if tc.wantCalls >= 0 && g.Calls != tc.wantCalls {
				t.Errorf("guard asked %d times, want %d", g.Calls, tc.wantCalls)
			}
		})
	}
}

func TestGateRefusesOnceTheLeaseIsLost(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	store := clustertest.NewLeases()
	h, err := coordinator(store, "node1", clk, nil).Acquire(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release(context.Background())
	// The API is unreachable for longer than the lease: node2 may have
	// taken it since, so node1 must not restart anything more.
	store.SetDown(errors.New("connection refused"))
	var n atomic.Int32
	done := make(chan struct{})
	go func() {
		for clk.Since(t0) < 2*time.Minute {
			clk.Step(time.Second)
			n.Add(1)
			time.Sleep(200 * time.Microsecond)
		}
		close(done)
	}()
	<-done
	if err := h.Gate(context.Background(), "kube-scheduler"); err == nil || !strings.Contains(err.Error(), "restart lease kube-system/pkirenewd") {
		t.Fatalf("gate after the lease ran out: %v", err)
	}
	// Lost to another node.
	store.SetDown(nil)
	clk2 := clocktesting.NewFakeClock(t0)
	store2 := clustertest.NewLeases()
	h2, err := coordinator(store2, "node1", clk2, nil).Acquire(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	// node2 took it (as after an expiry): written straight into the store.
	for {
		cur, err := store2.Get(context.Background(), "pkirenewd", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Spec.HolderIdentity = ptr("node2")
		if _, err := store2.Update(context.Background(), cur, metav1.UpdateOptions{}); err == nil {
			break
		}
	}
	clk2.Step(time.Minute) // past 2/3 of the duration: the gate asks the API
	if err := h2.Gate(context.Background(), "kube-scheduler"); !errors.Is(err, cluster.ErrLost) {
		t.Fatalf("gate after losing the lease: %v", err)
	}
}

func TestUnhealthy(t *testing.T) {
	down := errors.New("connection refused")
	members := []cluster.Member{
		{Name: "node1", ID: 1},
		{Name: "node2", ID: 2, Err: down},
		{Name: "node3", ID: 3},
		{Name: "learner", ID: 4, Learner: true, Err: down},
	}
	tests := []struct {
		self uint64
		want []string
	}{
		{1, []string{"node2"}},
		{2, nil}, // the sick member itself may be restarted
		{3, []string{"node2"}},
	}
	for _, tc := range tests {
		var got []string
		for _, m := range cluster.Unhealthy(members, tc.self) {
			got = append(got, m.Name)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("self %d: %v, want %v", tc.self, got, tc.want)
		}
	}
}
