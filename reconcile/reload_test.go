package reconcile_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	testclock "k8s.io/utils/clock/testing"

	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/cri/critest"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/reconcile"
	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
	"github.com/pkirenewd/pkirenewd/store"
)

// kubeadmManifests copies kubeadm v1.37.2's four manifests, pointed at the
// test's PKI and kubeconfigs.
func kubeadmManifests(t *testing.T, l renewtest.Layout) string {
	t.Helper()
	dir := t.TempDir()
	files, _ := filepath.Glob("../cri/testdata/kubeadm-v1.37.2/*.yaml")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(data), "/etc/kubernetes/pki", l.PKIDir)
		s = strings.ReplaceAll(s, "/etc/kubernetes/", l.KubeconfigDir+"/")
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// servingProber serves, at each address, the certificate its component
// loaded: the file's as it is now when the component reloads, else (frozen)
// the one it had at start until it is stopped.
type servingProber struct {
	critest.Prober
	mu     sync.Mutex
	rt     *critest.Runtime
	files  map[string]string // address -> certificate file
	frozen map[string]string // address -> serial loaded at start
}

func (p *servingProber) ServedSerial(_ context.Context, addr string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.frozen[addr]; ok && !p.stopped(addr) {
		return s, nil
	}
	return cri.SerialOnDisk(p.files[addr])
}

func (p *servingProber) stopped(addr string) bool {
	component := "etcd"
	if strings.HasSuffix(addr, ":6443") {
		component = "kube-apiserver"
	}
	for _, c := range p.rt.Calls {
		if strings.HasPrefix(c, "stop "+component+"-") {
			return true
		}
	}
	return false
}

// testNode is a kubeadm-shaped node for the engine: a PKI whose leaves
// were issued age ago (valid 365 days), a renewer, a runtime running the
// four components (started at started, zero: now), and a prober that
// serves what each loaded.
type testNode struct {
	l         renewtest.Layout
	manifests string
	state     string
	r         *renew.Renewer
	rt        *critest.Runtime
	prober    *servingProber
	log       *logrus.Logger
	hook      *logtest.Hook
}

func newTestNode(t *testing.T, age time.Duration, started time.Time) *testNode {
	t.Helper()
	root := t.TempDir()
	l, err := renewtest.MakePKI(filepath.Join(root, "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256", NotBefore: time.Now().Add(-age)})
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{l: l, state: filepath.Join(root, "state"), rt: critest.NewRuntime()}
	n.log, n.hook = logtest.NewNullLogger()
	n.r = renew.New(renew.Options{Dirs: renew.Dirs{PKIDir: l.PKIDir, KubeconfigDir: l.KubeconfigDir}, StateDir: n.state,
		Policy: pki.Policy{RenewBefore: 90 * 24 * time.Hour}, Validity: 365 * 24 * time.Hour, Log: n.log})
	// The manifests before the pods, as on a node.
	n.manifests = kubeadmManifests(t, l)
	if !started.IsZero() {
		n.rt.Now = func() time.Time { return started }
	}
	for _, c := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		n.rt.AddStaticPod(c)
	}
	n.prober = &servingProber{rt: n.rt, files: map[string]string{
		"192.0.2.10:6443": l.PKIDir + "/apiserver.crt", "127.0.0.1:2379": l.PKIDir + "/etcd/server.crt", "192.0.2.10:2380": l.PKIDir + "/etcd/peer.crt",
	}, frozen: map[string]string{}}
	return n
}

// engine is a NodeEngine of the node under restartPolicy needed.
func (n *testNode) engine(t *testing.T) *reconcile.NodeEngine {
	return &reconcile.NodeEngine{
		Renewer: n.r, StateDir: n.state, ManifestsDir: n.manifests, Log: n.log, RestartPolicy: cri.PolicyNeeded,
		Connect: func(context.Context) (*cri.Restarter, func(), error) {
			return &cri.Restarter{Runtime: n.rt, Prober: n.prober, Clock: testclock.NewFakeClock(time.Unix(0, 0)), Timeout: time.Minute, Log: n.log}, func() {}, nil
		},
	}
}

// A full renewal under restartPolicy needed: etcd and kube-apiserver
// serve the renewed certificates by themselves and are not touched; the
// controller-manager and the scheduler are restarted. An apiserver that
// keeps serving the old certificate is restarted instead, and said so.
func TestNeededPolicy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		frozen   string // address that keeps the old certificate
		stopped  []string
		warnings string
	}{
		{"everything reloads", "", []string{"kube-controller-manager", "kube-scheduler"}, ""},
		{"the apiserver does not reload", "192.0.2.10:6443", []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"},
			"kube-apiserver did not take up the renewed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t, 300*24*time.Hour, time.Time{})
			rt, hook := n.rt, n.hook
			if tc.frozen != "" {
				n.prober.frozen[tc.frozen], _ = cri.SerialOnDisk(n.prober.files[tc.frozen])
			}
			e := n.engine(t)
			e.ReloadBound = 500 * time.Millisecond
			if _, err := e.Renew(context.Background(), []string{"all"}); err != nil {
				t.Fatal(err)
			}
			var stopped []string
			for _, c := range rt.Calls {
				if strings.HasPrefix(c, "stop ") {
					stopped = append(stopped, strings.Split(strings.TrimPrefix(c, "stop "), "-sandbox")[0])
				}
			}
			if !reflect.DeepEqual(stopped, tc.stopped) {
				t.Errorf("stopped %v, want %v", stopped, tc.stopped)
			}
			var warned []string
			for _, en := range hook.AllEntries() {
				if en.Level <= 3 && !strings.Contains(en.Message, "kubelet.conf renewed") { // warning and worse; no kubelet here
					warned = append(warned, en.Message)
				}
			}
			if got := strings.Join(warned, "\n"); (tc.warnings == "") != (got == "") || !strings.Contains(got, tc.warnings) {
				t.Errorf("warnings:\n%s\nwant %q", got, tc.warnings)
			}
			if owed, _ := renew.LoadPending(n.state); !owed.Empty() {
				t.Errorf("still owed: %+v", owed)
			}
		})
	}
}

// What runs is compared with the files under restartPolicy needed: the
// kubeconfig users by the files' change times, a reloading server by the
// serial it serves (once it has had its time to reload), and the
// certificates kept in memory by the container's age.
func TestObserveUnderNeededPolicy(t *testing.T) {
	for _, tc := range []struct {
		name   string
		frozen string
		assume time.Duration
		want   map[string]string // component -> part of the reason ("" for a file change)
	}{
		{"reloads seen", "", 0, map[string]string{"kube-controller-manager": "", "kube-scheduler": ""}},
		{"an apiserver that did not reload", "192.0.2.10:6443", 0,
			map[string]string{"kube-apiserver": "did not reload", "kube-controller-manager": "", "kube-scheduler": ""}},
		{"in-memory certificates near their end", "", 25 * time.Hour,
			map[string]string{"kube-apiserver": "loopback certificate ends in", "kube-controller-manager": "", "kube-scheduler": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t, 0, time.Now().Add(-2*time.Hour))
			if tc.frozen != "" {
				n.prober.frozen[tc.frozen] = "0123"
			}
			e := n.engine(t)
			e.AssumeMemoryLife, e.MemoryMargin = tc.assume, 24*time.Hour
			// Ten minutes after the files were written: every reload has
			// had its time.
			e.Clock = testclock.NewFakeClock(time.Now().Add(10 * time.Minute))
			obs := e.Observe(context.Background())
			if len(obs.Unseen) > 0 {
				t.Fatal(reconcile.Blind(obs.Unseen))
			}
			stale := obs.Stale
			got := map[string]string{}
			for _, s := range stale {
				got[s.Component] = s.Reason
			}
			if len(got) != len(tc.want) {
				t.Fatalf("stale %+v, want %v", stale, tc.want)
			}
			for c, part := range tc.want {
				if r, ok := got[c]; !ok || (part == "") != (r == "") || !strings.Contains(r, part) {
					t.Errorf("%s: reason %q, want %q", c, r, part)
				}
			}
		})
	}
}

func TestMemoryCerts(t *testing.T) {
	const day = 24 * time.Hour
	for _, tc := range []struct {
		name string
		m    cri.Manifest
		want []reconcile.MemoryCert
	}{
		{"apiserver v1.37", cri.Manifest{Component: "kube-apiserver", Image: "registry.k8s.io/kube-apiserver:v1.37.2"},
			[]reconcile.MemoryCert{{Name: "loopback certificate", Life: (3*365 + 1) * day}}},
		{"apiserver v1.33 from a mirror with a port and a digest", cri.Manifest{Component: "kube-apiserver", Image: "mirror.local:5000/k8s/kube-apiserver:v1.33.0@sha256:abcd"},
			[]reconcile.MemoryCert{{Name: "loopback certificate", Life: (3*365 + 1) * day}}},
		{"apiserver v1.32: one year", cri.Manifest{Component: "kube-apiserver", Image: "registry.k8s.io/kube-apiserver:v1.32.9"},
			[]reconcile.MemoryCert{{Name: "loopback certificate", Life: 365 * day}}},
		{"apiserver of an unknown version: the shorter life", cri.Manifest{Component: "kube-apiserver", Image: "mirror.local:5000/kube-apiserver@sha256:abcd"},
			[]reconcile.MemoryCert{{Name: "loopback certificate", Life: 365 * day}}},
		{"controller-manager as kubeadm runs it", cri.Manifest{Component: "kube-controller-manager", Args: []string{"kube-controller-manager", "--kubeconfig=/etc/kubernetes/controller-manager.conf"}},
			[]reconcile.MemoryCert{{Name: "self-signed serving certificate", Life: 365*day - time.Hour}}},
		{"scheduler given a serving certificate", cri.Manifest{Component: "kube-scheduler", Args: []string{"--tls-cert-file=/etc/kubernetes/pki/scheduler.crt"}}, nil},
		{"etcd", cri.Manifest{Component: "etcd"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.m
			if got := reconcile.MemoryCerts(&m); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestMemoryDue(t *testing.T) {
	const day = 24 * time.Hour
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	life := (3*365 + 1) * day
	for _, tc := range []struct {
		age  time.Duration
		due  bool
		ends string
	}{
		{300 * day, false, "2029-01-01"},
		{life - 91*day, false, "2029-01-01"},
		{life - 89*day, true, "2029-01-01"},
		{life + day, true, "2029-01-01"},
	} {
		ends, due := reconcile.MemoryDue(start, life, 90*day, start.Add(tc.age))
		if due != tc.due || ends.Format("2006-01-02") != tc.ends {
			t.Errorf("age %s: due %v ends %s, want %v %s", tc.age, due, ends, tc.due, tc.ends)
		}
	}
}

// Right after a change a reloading server is not judged yet; the engine
// says when it can be: the change plus the reload's bound and a grace.
func TestLookAgainWhileAReloadMayBeUnderWay(t *testing.T) {
	n := newTestNode(t, 0, time.Now().Add(-2*time.Hour))
	n.prober.frozen["192.0.2.10:6443"] = "0123"
	e := n.engine(t)
	obs := e.Observe(context.Background())
	if len(obs.Unseen) > 0 {
		t.Fatal(reconcile.Blind(obs.Unseen))
	}
	stale := obs.Stale
	for _, s := range stale {
		if s.Component == "kube-apiserver" {
			t.Errorf("judged before its reload could happen: %+v", s)
		}
	}
	ch, err := reconcile.Ctime(n.l.PKIDir + "/apiserver.crt")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := e.LookAgainAt(), ch.Add(time.Minute+15*time.Second); !got.Equal(want) {
		t.Errorf("look again at %s, want %s", got, want)
	}
}

func TestUnsettled(t *testing.T) {
	now := time.Date(2027, 1, 1, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	for _, tc := range []struct {
		name string
		tmp  []reconcile.Entry
		pods []reconcile.Pod
		want string // part of the reason; "" when settled
	}{
		{"nothing going on", []reconcile.Entry{{Name: "some-file", ModTime: ago(time.Minute)}},
			[]reconcile.Pod{{Manifest: "etcd.yaml", ManifestChanged: ago(time.Hour), Started: ago(50 * time.Minute)}}, ""},
		{"kubeadm upgrade staging manifests", []reconcile.Entry{{Name: "kubeadm-upgraded-manifests123456", ModTime: ago(30 * time.Second)}}, nil, "kubeadm upgrade in progress"},
		{"kubeadm upgrade staging manifests beside its backups", []reconcile.Entry{{Name: "kubeadm-backup-etcd-2027-01-01-11-58-00", ModTime: ago(2 * time.Minute)},
			{Name: "kubeadm-backup-manifests-2027-01-01-11-58-00", ModTime: ago(2 * time.Minute)}, {Name: "kubeadm-upgraded-manifests98", ModTime: ago(2 * time.Minute)}}, nil, "kubeadm-upgraded-manifests98"},
		{"the backups a finished upgrade keeps", []reconcile.Entry{{Name: "kubeadm-backup-etcd-2027-01-01-11-58-00", ModTime: ago(2 * time.Minute)},
			{Name: "kubeadm-backup-manifests-2027-01-01-11-58-00", ModTime: ago(2 * time.Minute)}}, nil, ""},
		{"what a failed upgrade left a day ago", []reconcile.Entry{{Name: "kubeadm-upgraded-manifests12", ModTime: ago(24 * time.Hour)}}, nil, ""},
		{"a manifest changed after its pod started", nil,
			[]reconcile.Pod{{Manifest: "kube-apiserver.yaml", ManifestChanged: ago(10 * time.Second), Started: ago(time.Hour)}}, "kube-apiserver.yaml changed 10s ago"},
		{"the kubelet has replaced it", nil,
			[]reconcile.Pod{{Manifest: "kube-apiserver.yaml", ManifestChanged: ago(10 * time.Second), Started: ago(5 * time.Second)}}, ""},
		{"a change the kubelet never acted on does not block for ever", nil,
			[]reconcile.Pod{{Manifest: "kube-apiserver.yaml", ManifestChanged: ago(6 * time.Minute), Started: ago(time.Hour)}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, ok := reconcile.Unsettled(tc.tmp, tc.pods, now, nil)
			if ok != (tc.want != "") || !strings.Contains(h.Why, tc.want) {
				t.Errorf("got %q %v, want %q", h.Why, ok, tc.want)
			}
		})
	}
}

// While kubeadm upgrades the node nothing is written or restarted; once
// its directories are gone the renewal goes through.
func TestNothingDuringAKubeadmUpgrade(t *testing.T) {
	n := newTestNode(t, 300*24*time.Hour, time.Time{})
	e := n.engine(t)
	staging := filepath.Join(filepath.Dir(e.ManifestsDir), "tmp", "kubeadm-upgraded-manifests3210")
	if err := os.MkdirAll(staging, 0o700); err != nil {
		t.Fatal(err)
	}
	before, _ := renewtest.HashTree(n.l.KubeconfigDir)
	_, err := e.Renew(context.Background(), []string{"all"})
	if !errors.Is(err, reconcile.ErrUnsettled) || !strings.Contains(err.Error(), "kubeadm upgrade in progress") {
		t.Fatalf("error %v", err)
	}
	if after, _ := renewtest.HashTree(n.l.KubeconfigDir); renewtest.DiffTrees(before, after) != "" || len(n.rt.Calls) > 0 {
		t.Fatalf("something was written or stopped: %v", n.rt.Calls)
	}
	if why, on := e.Upgrading(); !on || !strings.Contains(why, "kubeadm-upgraded-manifests3210") {
		t.Errorf("Upgrading during the upgrade: %q %v", why, on)
	}
	// What a successful upgrade keeps does not hold anything back.
	backup := filepath.Join(filepath.Dir(staging), "kubeadm-backup-manifests-2026-11-29-10-46-02")
	if err := os.Mkdir(backup, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(staging); err != nil {
		t.Fatal(err)
	}
	if why, on := e.Upgrading(); on {
		t.Errorf("Upgrading after the upgrade: %q", why)
	}
	if _, err := e.Renew(context.Background(), []string{"scheduler.conf"}); err != nil {
		t.Fatalf("after the upgrade: %v", err)
	}
}

// A time stamp ahead of the clock (written before NTP set it back) holds
// no longer than the same hold would from when it was first seen; a
// one-shot look ages it from now, the longest it may still hold.
func TestHoldsFromTheFutureAreBounded(t *testing.T) {
	now := time.Date(2027, 1, 1, 12, 0, 0, 0, time.UTC)
	ahead := now.Add(3 * time.Hour)
	tmp := []reconcile.Entry{{Name: "kubeadm-upgraded-manifests7", ModTime: ahead}}
	pods := []reconcile.Pod{{Manifest: "kube-apiserver.yaml", ManifestChanged: ahead, Started: now.Add(-time.Hour)}}
	seen := &reconcile.Sightings{}
	for _, tc := range []struct {
		at      time.Time
		reasons []string
	}{
		{now, []string{reconcile.HoldUpgrade, reconcile.HoldPod}},
		{now.Add(4 * time.Minute), []string{reconcile.HoldUpgrade, reconcile.HoldPod}},
		{now.Add(6 * time.Minute), []string{reconcile.HoldUpgrade}},
		{now.Add(61 * time.Minute), nil},
	} {
		var got []string
		for _, h := range reconcile.Holds(tmp, pods, tc.at, seen) {
			got = append(got, h.Reason)
			if limit := now.Add(time.Hour); h.Until.After(limit) {
				t.Errorf("at %s: %s holds until %s, past %s", tc.at, h.Reason, h.Until, limit)
			}
		}
		if strings.Join(got, ",") != strings.Join(tc.reasons, ",") {
			t.Errorf("at %s: holds %v, want %v", tc.at.Sub(now), got, tc.reasons)
		}
	}
	one := reconcile.Holds(tmp, nil, now, nil)
	if len(one) != 1 || !one[0].Until.Equal(now.Add(time.Hour)) {
		t.Errorf("a one-shot look: %+v, want one hold until now+1h", one)
	}
}

// With restarts off, kubeadm's staging directory still holds every write:
// what is logged ("writes nothing") is what is done.
func TestAHoldHoldsWithRestartsOff(t *testing.T) {
	n := newTestNode(t, 300*24*time.Hour, time.Time{})
	e := n.engine(t)
	e.Connect, e.KubeletAlive = nil, nil
	staging := filepath.Join(filepath.Dir(e.ManifestsDir), "tmp", "kubeadm-upgraded-manifests42")
	if err := os.MkdirAll(staging, 0o700); err != nil {
		t.Fatal(err)
	}
	before, _ := renewtest.HashTree(n.l.PKIDir)
	_, err := e.Renew(context.Background(), []string{"all"})
	var h *reconcile.HoldError
	if !errors.As(err, &h) || h.Reason != reconcile.HoldUpgrade {
		t.Fatalf("error %v, want a kubeadm-upgrade hold", err)
	}
	if after, _ := renewtest.HashTree(n.l.PKIDir); renewtest.DiffTrees(before, after) != "" {
		t.Fatal("written during the upgrade with restarts off")
	}
	if err := os.Remove(staging); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Renew(context.Background(), []string{"apiserver"}); err != nil {
		t.Fatalf("after the upgrade: %v", err)
	}
	if after, _ := renewtest.HashTree(n.l.PKIDir); renewtest.DiffTrees(before, after) == "" {
		t.Fatal("not renewed once the upgrade had finished")
	}
}

// A renewal that finds another pkirenewd process holding the lock waits
// for it, and the wait keeps the watchdog fed: it is progress, not a hang.
func TestWaitingForTheLockFeedsTheWatchdog(t *testing.T) {
	n := newTestNode(t, 300*24*time.Hour, time.Time{})
	e := n.engine(t)
	var beats atomic.Int32
	e.Heartbeat = func() { beats.Add(1) }
	unlock, err := store.Lock(n.state, n.log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.Renew(context.Background(), []string{"scheduler.conf"})
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for beats.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if beats.Load() == 0 {
		t.Fatal("no heartbeat while waiting for the lock")
	}
	select {
	case err := <-done:
		t.Fatalf("renewed while another process held the lock: %v", err)
	default:
	}
	unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
