package reconcile_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
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
	e := &reconcile.NodeEngine{StateDir: state, ManifestsDir: dir, Log: log, Clock: testclock.NewFakeClock(time.Unix(0, 0))}
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

// renewedNode is a kubeadm-shaped PKI issued at notBefore and renewed in
// full, with a backup of the previous files.
func renewedNode(t *testing.T, notBefore time.Time) (*renew.Renewer, string, string) {
	t.Helper()
	root := t.TempDir()
	l, err := renewtest.MakePKI(filepath.Join(root, "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256", NotBefore: notBefore})
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(root, "state")
	r := renew.New(renew.Options{Dirs: renew.Dirs{PKIDir: l.PKIDir, KubeconfigDir: l.KubeconfigDir}, StateDir: state,
		Policy: pki.Policy{RenewBefore: 90 * 24 * time.Hour}, Validity: 365 * 24 * time.Hour})
	inv, _, err := r.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	plan, err := r.Plan(inv, renew.Selection{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Apply(plan)
	if err != nil {
		t.Fatal(err)
	}
	return r, state, res.BackupDir
}

// A component that fails its health check after a renewal goes back to
// the previous files only when they are better: fresh ones, yes; on day
// 366, expired ones, never — the renewed files stay, the failed component
// stays owed, and it is said at crit.
func TestRollBackOnlyToSomethingBetter(t *testing.T) {
	for _, tc := range []struct {
		name      string
		notBefore time.Time
		restored  bool
	}{
		{"previous files good for months", time.Now().Add(-time.Hour), true},
		{"day 366: previous files expired", time.Now().Add(-366 * 24 * time.Hour), false},
		{"previous files due", time.Now().Add(-300 * 24 * time.Hour), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, state, backup := renewedNode(t, tc.notBefore)
			dir := copyManifests(t, map[string]string{"kubeadm-v1.37.2/kube-scheduler.yaml": "kube-scheduler.yaml"})
			ms, err := cri.LoadManifests(dir)
			if err != nil {
				t.Fatal(err)
			}
			rt := critest.NewRuntime()
			rt.AddStaticPod("kube-scheduler")
			rt.NoRecreate = map[string]bool{"kube-scheduler": true}
			log, hook := logtest.NewNullLogger()
			rst := &cri.Restarter{Runtime: rt, Prober: &critest.Prober{}, Clock: testclock.NewFakeClock(time.Unix(0, 0)), Timeout: time.Minute, Log: log}
			e := &reconcile.NodeEngine{Renewer: r, StateDir: state, ManifestsDir: dir, Log: log}
			owed := &renew.PendingRestart{Components: []string{"kube-scheduler"}, BackupDir: backup}
			if err := renew.SavePending(state, owed); err != nil {
				t.Fatal(err)
			}
			_, err = e.RollOwed(context.Background(), rst, ms, owed)
			if err == nil {
				t.Fatal("the roll succeeded although the scheduler never came back")
			}
			if restored := sameAsBackup(t, backup); restored != tc.restored {
				t.Fatalf("restored=%v, want %v (error %v)", restored, tc.restored, err)
			}
			left, _ := renew.LoadPending(state)
			crit := false
			for _, en := range hook.AllEntries() {
				crit = crit || (en.Data["PRIORITY"] == 2 && strings.Contains(en.Message, "NOT ROLLING BACK"))
			}
			if !tc.restored {
				if !strings.Contains(err.Error(), "not rolled back") || !crit {
					t.Errorf("error %v, crit logged %v", err, crit)
				}
				if left == nil || !reflect.DeepEqual(left.Components, []string{"kube-scheduler"}) {
					t.Errorf("the failed component is not owed any more: %+v", left)
				}
			} else if crit {
				t.Error("a useful rollback was refused")
			}
		})
	}
}

// sameAsBackup reports whether every file of the backup holds its previous
// content again.
func sameAsBackup(t *testing.T, backup string) bool {
	t.Helper()
	files, err := store.BackedUp(backup)
	if err != nil {
		t.Fatal(err)
	}
	for p, old := range files {
		cur, err := os.ReadFile(p)
		if err != nil || string(cur) != string(old) {
			return false
		}
	}
	return true
}

// fourManifests writes kubeadm's four components reading the node's files
// (through a plain flag: the fake prober serves no certificate to check).
func fourManifests(t *testing.T, pki, kube string) string {
	t.Helper()
	dir := t.TempDir()
	writeManifest(t, dir, "etcd", "etcd", "--fake-cert="+pki+"/etcd/server.crt")
	writeManifest(t, dir, "kube-apiserver", "kube-apiserver", "--fake-cert="+pki+"/apiserver.crt")
	writeManifest(t, dir, "kube-controller-manager", "kube-controller-manager", "--kubeconfig="+kube+"/controller-manager.conf")
	writeManifest(t, dir, "kube-scheduler", "kube-scheduler", "--kubeconfig="+kube+"/scheduler.conf")
	return dir
}

// When restarts are impossible (the kubelet down, the runtime gone), a due
// renewal waits — nothing written, nothing stopped — until a certificate
// has less than LastResortBefore left; then the files are renewed, the
// restarts recorded as owed, and both said at crit. Once restarts are
// possible again the owed ones are done.
func TestRestartsImpossible(t *testing.T) {
	for _, tc := range []struct {
		name       string
		age        time.Duration // of the certificates, valid 365 days
		kubelet    error
		runtime    error
		lastResort bool
	}{
		{"kubelet down with 65 days left", 300 * 24 * time.Hour, errors.New("the kubelet does not answer"), nil, false},
		{"kubelet down with 5 days left", 360 * 24 * time.Hour, errors.New("the kubelet does not answer"), nil, true},
		{"runtime gone with 5 days left", 360 * 24 * time.Hour, nil, errors.New("dial unix /run/containerd/containerd.sock: connection refused"), true},
		{"runtime gone and expired", 370 * 24 * time.Hour, nil, errors.New("connection refused"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			l, err := renewtest.MakePKI(filepath.Join(root, "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256", NotBefore: time.Now().Add(-tc.age)})
			if err != nil {
				t.Fatal(err)
			}
			state := filepath.Join(root, "state")
			log, hook := logtest.NewNullLogger()
			r := renew.New(renew.Options{Dirs: renew.Dirs{PKIDir: l.PKIDir, KubeconfigDir: l.KubeconfigDir}, StateDir: state,
				Policy: pki.Policy{RenewBefore: 90 * 24 * time.Hour}, Validity: 365 * 24 * time.Hour, Log: log})
			// The manifests before the pods, as on a node (a manifest
			// changed after its pod started means the kubelet is about to
			// replace it).
			manifests := fourManifests(t, l.PKIDir, l.KubeconfigDir)
			rt := critest.NewRuntime()
			for _, c := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
				rt.AddStaticPod(c)
			}
			kubeletErr, runtimeErr := tc.kubelet, tc.runtime
			events := &eventLog{}
			e := &reconcile.NodeEngine{
				Events:  events,
				Renewer: r, StateDir: state, ManifestsDir: manifests, Log: log,
				LastResortBefore: 14 * 24 * time.Hour,
				KubeletAlive:     func(context.Context) error { return kubeletErr },
				Connect: func(context.Context) (*cri.Restarter, func(), error) {
					if runtimeErr != nil {
						return nil, nil, runtimeErr
					}
					return &cri.Restarter{Runtime: rt, Prober: &critest.Prober{}, Clock: testclock.NewFakeClock(time.Unix(0, 0)), Timeout: time.Minute, Log: log}, func() {}, nil
				},
			}
			before, _ := renewtest.HashTree(l.KubeconfigDir)
			_, err = e.Renew(context.Background(), []string{"apiserver", "scheduler.conf"})
			if err == nil {
				t.Fatal("Renew succeeded although restarts are impossible")
			}
			after, _ := renewtest.HashTree(l.KubeconfigDir)
			changed := renewtest.DiffTrees(before, after) != ""
			if changed != tc.lastResort {
				t.Fatalf("files changed=%v, want %v (error %v)", changed, tc.lastResort, err)
			}
			if len(rt.Calls) > 0 {
				t.Fatalf("pods were stopped: %v", rt.Calls)
			}
			crit := false
			for _, en := range hook.AllEntries() {
				crit = crit || (en.Data["PRIORITY"] == 2 && strings.Contains(en.Message, "LAST RESORT"))
			}
			owed, _ := renew.LoadPending(state)
			if !tc.lastResort {
				if !strings.Contains(err.Error(), "nothing was written") || crit {
					t.Errorf("error %v, crit %v", err, crit)
				}
				return
			}
			if !crit || owed == nil || !reflect.DeepEqual(owed.Components, []string{"kube-apiserver", "kube-scheduler"}) {
				t.Fatalf("crit %v, owed %+v, error %v", crit, owed, err)
			}
			if got := events.reasons(); got != "CertificatesRenewed RenewalFailed!" {
				t.Errorf("events %q after the last resort", got)
			}
			// Restarts possible again: the owed ones are done.
			kubeletErr, runtimeErr = nil, nil
			if _, err := e.Renew(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
			var stopped []string
			for _, c := range rt.Calls {
				if strings.HasPrefix(c, "stop ") {
					stopped = append(stopped, strings.Split(strings.TrimPrefix(c, "stop "), "-sandbox")[0])
				}
			}
			if !reflect.DeepEqual(stopped, []string{"kube-apiserver", "kube-scheduler"}) {
				t.Errorf("stopped %v", stopped)
			}
			if owed, _ := renew.LoadPending(state); !owed.Empty() {
				t.Errorf("still owed: %+v", owed)
			}
			want := "CertificatesRenewed RenewalFailed! ComponentRestarted ComponentRestarted"
			if tc.age > 365*24*time.Hour {
				want += " ControlPlaneRecovered" // day 366
			}
			if got := events.reasons(); got != want {
				t.Errorf("events %q after the owed restarts, want %q", got, want)
			}
		})
	}
}

// eventLog records Events as "Reason" ("Reason!" for a warning).
type eventLog struct{ got []string }

func (l *eventLog) Event(reason, _, _ string, warning bool) {
	if warning {
		reason += "!"
	}
	l.got = append(l.got, reason)
}

func (l *eventLog) reasons() string { return strings.Join(l.got, " ") }

// Something unrelated to a due renewal never blocks it: a pod whose
// staleness cannot be told (two ready sandboxes: which one the kubelet
// runs cannot be known) leaves the renewal and the other restarts to go
// ahead; only that component's restart fails, naming it.
func TestObservationNeverBlocksARenewal(t *testing.T) {
	root := t.TempDir()
	l, err := renewtest.MakePKI(filepath.Join(root, "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256", NotBefore: time.Now().Add(-300 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(root, "state")
	log, _ := logtest.NewNullLogger()
	r := renew.New(renew.Options{Dirs: renew.Dirs{PKIDir: l.PKIDir, KubeconfigDir: l.KubeconfigDir}, StateDir: state,
		Policy: pki.Policy{RenewBefore: 90 * 24 * time.Hour}, Validity: 365 * 24 * time.Hour, Log: log})
	manifests := fourManifests(t, l.PKIDir, l.KubeconfigDir)
	rt := critest.NewRuntime()
	for _, c := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"} {
		rt.AddStaticPod(c) // etcd twice: ambiguous
	}
	e := &reconcile.NodeEngine{
		Renewer: r, StateDir: state, ManifestsDir: manifests, Log: log,
		Connect: func(context.Context) (*cri.Restarter, func(), error) {
			return &cri.Restarter{Runtime: rt, Prober: &critest.Prober{}, Clock: testclock.NewFakeClock(time.Unix(0, 0)), Timeout: time.Minute, Log: log}, func() {}, nil
		},
	}
	before, _ := renewtest.HashTree(l.KubeconfigDir)
	written, err := e.Renew(context.Background(), []string{"etcd-server", "scheduler.conf"})
	if len(written) == 0 {
		t.Fatalf("nothing was written: %v", err)
	}
	if after, _ := renewtest.HashTree(l.KubeconfigDir); renewtest.DiffTrees(before, after) == "" {
		t.Fatal("the files did not change")
	}
	if err == nil || !strings.Contains(err.Error(), "etcd") {
		t.Errorf("error %v, want etcd's ambiguity named", err)
	}
	if owed, _ := renew.LoadPending(state); owed == nil || !slices.Contains(owed.Components, "etcd") {
		t.Errorf("etcd is not owed: %+v", owed)
	}
}
