package reconcile_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/cri/critest"
	"github.com/pkirenewd/pkirenewd/reconcile"
)

func writeManifest(t *testing.T, dir, component string, args ...string) {
	t.Helper()
	body := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + component + "\n  labels: {component: " + component + "}\nspec:\n  containers:\n  - name: c\n    command:\n"
	for _, a := range args {
		body += "    - " + a + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, component+".yaml"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// The observer joins the manifests (who reads which file), the runtime
// (when each runs since) and the files' change times.
func TestObserverStale(t *testing.T) {
	t0 := time.Date(2027, 5, 1, 8, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	writeManifest(t, dir, "kube-scheduler", "kube-scheduler", "--kubeconfig=/k/scheduler.conf")
	writeManifest(t, dir, "kube-controller-manager", "kube-controller-manager", "--kubeconfig=/k/controller-manager.conf")
	writeManifest(t, dir, "etcd", "etcd", "--cert-file=/k/pki/etcd/server.crt")
	ms, err := cri.LoadManifests(dir)
	if err != nil {
		t.Fatal(err)
	}
	rt := critest.NewRuntime()
	rt.Now = func() time.Time { return t0 }
	rt.AddStaticPod("kube-scheduler")
	rt.AddStaticPod("kube-controller-manager")
	// etcd has no running pod: the kubelet will start it on the new files.
	changed := map[string]time.Time{
		"/k/scheduler.conf":          t0.Add(time.Hour),  // renewed after the start
		"/k/controller-manager.conf": t0.Add(-time.Hour), // before
		"/k/pki/etcd/server.crt":     t0.Add(time.Hour),
		"/k/kubelet.conf":            t0.Add(time.Hour),
	}
	o := reconcile.Observer{
		Runtime:      rt,
		KubeletStart: func(string) (time.Time, bool, error) { return t0.Add(2 * time.Hour), true, nil },
		Changed: func(p string) (time.Time, error) {
			if c, ok := changed[p]; ok {
				return c, nil
			}
			return time.Time{}, os.ErrNotExist
		},
	}
	files := []string{"/k/scheduler.conf", "/k/controller-manager.conf", "/k/pki/etcd/server.crt", "/k/pki/etcd/server.key"}
	uses := reconcile.Uses(ms, files, "/k/kubelet.conf")
	if want := []string{"/k/pki/etcd/server.crt"}; !reflect.DeepEqual(uses["etcd"], want) {
		t.Errorf("etcd uses %v, want %v", uses["etcd"], want)
	}
	stale, err := o.Stale(context.Background(), uses)
	if err != nil {
		t.Fatal(err)
	}
	want := []reconcile.StaleComponent{{Component: "kube-scheduler", StartedAt: t0, File: "/k/scheduler.conf", Changed: t0.Add(time.Hour)}}
	if !reflect.DeepEqual(stale, want) {
		t.Errorf("stale %+v\nwant %+v", stale, want)
	}

	// The kubelet started before its kubelet.conf changed: stale too.
	o.KubeletStart = func(string) (time.Time, bool, error) { return t0, true, nil }
	stale, _ = o.Stale(context.Background(), uses)
	if len(stale) != 2 || stale[0].Component != "kube-scheduler" || stale[1].Component != reconcile.Kubelet {
		t.Errorf("with an old kubelet: %+v", stale)
	}

	// A runtime that cannot answer is an error, not "nothing stale".
	o.Runtime = failing{}
	if _, err := o.Stale(context.Background(), uses); err == nil {
		t.Error("an unreachable runtime passed for a clean node")
	}
}

// One component the runtime answers ambiguously about (two Ready
// sandboxes while the kubelet replaces its pod, or a leaked one) is that
// component's problem: it is named unseen, and the others are still
// observed.
func TestObserverOneAmbiguousComponent(t *testing.T) {
	t0 := time.Date(2027, 5, 1, 8, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	writeManifest(t, dir, "kube-scheduler", "kube-scheduler", "--kubeconfig=/k/scheduler.conf")
	writeManifest(t, dir, "kube-controller-manager", "kube-controller-manager", "--kubeconfig=/k/controller-manager.conf")
	ms, err := cri.LoadManifests(dir)
	if err != nil {
		t.Fatal(err)
	}
	rt := critest.NewRuntime()
	rt.Now = func() time.Time { return t0 }
	rt.AddStaticPod("kube-scheduler")
	rt.AddStaticPod("kube-scheduler")
	rt.AddStaticPod("kube-controller-manager")
	o := reconcile.Observer{Runtime: rt, Changed: func(string) (time.Time, error) { return t0.Add(time.Hour), nil }}
	uses := reconcile.Uses(ms, []string{"/k/scheduler.conf", "/k/controller-manager.conf"}, "")
	stale, err := o.Stale(context.Background(), uses)
	if len(stale) != 1 || stale[0].Component != "kube-controller-manager" {
		t.Errorf("the other component was not observed: stale %+v", stale)
	}
	var blind reconcile.Blind
	if !errors.As(err, &blind) || len(blind) != 1 || blind[0].Component != "kube-scheduler" {
		t.Fatalf("err %v, want kube-scheduler unseen", err)
	}
	if !strings.Contains(err.Error(), "refusing to guess") {
		t.Errorf("the reason is lost: %v", err)
	}
}

type failing struct{ cri.Runtime }

func (failing) PodSandboxes(context.Context, map[string]string) ([]cri.Sandbox, error) {
	return nil, errors.New("connection refused")
}

// A file replaced by a rename gets a new change time even when the new
// content carries an old mtime (as a restore from backup does).
func TestCtimeFollowsRenames(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "scheduler.conf")
	if err := os.WriteFile(p, []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	before, err := reconcile.Ctime(p)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	tmp := p + ".new"
	if err := os.WriteFile(tmp, []byte("b"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(tmp, old, old); err != nil { // a restore tool sets mtime back
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	after, err := reconcile.Ctime(p)
	if err != nil {
		t.Fatal(err)
	}
	if !after.After(before) {
		t.Errorf("ctime %v after the replacement, %v before: a restored file would pass for old", after, before)
	}
}
