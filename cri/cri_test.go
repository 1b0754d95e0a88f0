package cri_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	testclock "k8s.io/utils/clock/testing"

	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/cri/critest"
)

// Manifests written by kubeadm v1.37.2 (`init phase control-plane all` and
// `etcd local` with --dry-run and KUBEADM_INIT_DRYRUN_DIR).
func kubeadmManifests(t *testing.T) map[string]*cri.Manifest {
	t.Helper()
	ms, err := cri.LoadManifests("testdata/kubeadm-v1.37.2")
	if err != nil || len(ms.Problems) != 0 {
		t.Fatal(err, ms.Problems)
	}
	out := map[string]*cri.Manifest{}
	for _, m := range ms.Usable {
		out[m.Component] = m
	}
	if len(out) != 4 {
		t.Fatalf("components %v", out)
	}
	return out
}

func TestParseKubeadmManifests(t *testing.T) {
	ms := kubeadmManifests(t)
	tests := []struct {
		component, url, cert, addr string
	}{
		{"etcd", "http://127.0.0.1:2381/readyz", "/etc/kubernetes/pki/etcd/server.crt", "127.0.0.1:2379"},
		{"kube-apiserver", "https://192.0.2.10:6443/livez", "/etc/kubernetes/pki/apiserver.crt", "192.0.2.10:6443"},
		{"kube-controller-manager", "https://127.0.0.1:10257/healthz", "", ""},
		{"kube-scheduler", "https://127.0.0.1:10259/livez", "", ""},
	}
	for _, tc := range tests {
		m := ms[tc.component]
		if got := m.Probe.URL(); got != tc.url {
			t.Errorf("%s probe %s, want %s", tc.component, got, tc.url)
		}
		if m.ServingCert != tc.cert || m.ServingAddr != tc.addr {
			t.Errorf("%s serves %q at %q, want %q at %q", tc.component, m.ServingCert, m.ServingAddr, tc.cert, tc.addr)
		}
	}
	if got := ms["kube-apiserver"].Flag("etcd-certfile"); got != "/etc/kubernetes/pki/apiserver-etcd-client.crt" {
		t.Errorf("Flag(etcd-certfile) = %q", got)
	}
}

func TestAffected(t *testing.T) {
	ms := kubeadmManifests(t)
	var all []*cri.Manifest
	for _, m := range ms {
		all = append(all, m)
	}
	pki := "/etc/kubernetes/pki/"
	tests := []struct {
		name    string
		changed []string
		want    []string
	}{
		{"nothing", nil, nil},
		{"apiserver serving cert (flag; cm mounts its directory)", []string{pki + "apiserver.crt", pki + "apiserver.key"}, []string{"kube-apiserver", "kube-controller-manager"}},
		{"etcd serving cert", []string{pki + "etcd/server.crt", pki + "etcd/server.key"}, []string{"etcd"}},
		{"etcd healthcheck client (etcd mounts etcd/)", []string{pki + "etcd/healthcheck-client.crt"}, []string{"etcd"}},
		{"apiserver-etcd-client", []string{pki + "apiserver-etcd-client.crt"}, []string{"kube-apiserver", "kube-controller-manager"}},
		{"scheduler.conf (file mount)", []string{"/etc/kubernetes/scheduler.conf"}, []string{"kube-scheduler"}},
		{"controller-manager.conf", []string{"/etc/kubernetes/controller-manager.conf"}, []string{"kube-controller-manager"}},
		{"admin.conf: no static pod", []string{"/etc/kubernetes/admin.conf", "/etc/kubernetes/super-admin.conf"}, nil},
		{"kubelet.conf: no static pod", []string{"/etc/kubernetes/kubelet.conf"}, nil},
		{"a full renewal, in order", []string{"/etc/kubernetes/scheduler.conf", pki + "apiserver.crt", pki + "etcd/peer.crt", "/etc/kubernetes/controller-manager.conf"},
			[]string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}},
		{"unrelated file", []string{"/etc/hosts"}, nil},
	}
	for _, tc := range tests {
		if got := cri.Affected(all, tc.changed); !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestOrder(t *testing.T) {
	got := cri.Order([]string{"kube-scheduler", "zeta", "kube-apiserver", "alpha", "etcd", "kube-controller-manager"})
	want := []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "alpha", "zeta"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%v", got)
	}
}

func TestBadManifests(t *testing.T) {
	cases := map[string]string{
		"not yaml":       "{{",
		"not a pod":      "kind: Deployment\nmetadata: {name: x}\n",
		"no containers":  "kind: Pod\nmetadata: {name: x}\nspec: {}\n",
		"bad probe port": "kind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n  - livenessProbe:\n      httpGet: {port: nope, path: /}\n",
		"bad scheme":     "kind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n  - livenessProbe:\n      httpGet: {port: 1, scheme: FTP}\n",
	}
	for name, doc := range cases {
		if _, err := cri.ParseManifest("/m/x.yaml", []byte(doc)); err == nil || !strings.Contains(err.Error(), "/m/x.yaml") {
			t.Errorf("%s: %v", name, err)
		}
	}
	// No probe and no kubeadm default: usable, judged by staying up.
	m, err := cri.ParseManifest("/m/x.yaml", []byte("kind: Pod\nmetadata: {name: custom}\nspec:\n  containers:\n  - command: [x]\n"))
	if err != nil || m.HasProbe() {
		t.Errorf("no probe: %+v, %v", m, err)
	}
	// A bad file is a problem of its own, never an error of the load.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("{{"), 0o600); err != nil {
		t.Fatal(err)
	}
	ms, err := cri.LoadManifests(dir)
	if err != nil || len(ms.Problems) != 1 || !strings.Contains(ms.Problems[0].Error(), "bad.yaml") {
		t.Errorf("LoadManifests: %+v, %v", ms, err)
	}
	if _, err := cri.LoadManifests(filepath.Join(dir, "none")); err == nil {
		t.Error("LoadManifests of a missing directory: no error")
	}
}

func TestResolveEndpoint(t *testing.T) {
	dir := t.TempDir()
	crictl := filepath.Join(dir, "crictl.yaml")
	t.Setenv("CONTAINER_RUNTIME_ENDPOINT", "")
	if e, _ := cri.ResolveEndpoint("unix:///x.sock", crictl); e != "unix:///x.sock" {
		t.Errorf("configured: %s", e)
	}
	if err := os.WriteFile(crictl, []byte("runtime-endpoint: unix:///from/crictl.sock\ntimeout: 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if e, _ := cri.ResolveEndpoint("", crictl); e != "unix:///from/crictl.sock" {
		t.Errorf("crictl.yaml: %s", e)
	}
	t.Setenv("CONTAINER_RUNTIME_ENDPOINT", "unix:///from/env.sock")
	if e, _ := cri.ResolveEndpoint("", filepath.Join(dir, "none.yaml")); e != "unix:///from/env.sock" {
		t.Errorf("env: %s", e)
	}
	if err := os.WriteFile(crictl, []byte("runtime-endpoint: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := cri.ResolveEndpoint("", crictl); err == nil || !strings.Contains(err.Error(), crictl) {
		t.Errorf("bad crictl.yaml: %v", err)
	}
}

func TestDialUnreachable(t *testing.T) {
	_, err := cri.Dial(context.Background(), "unix://"+filepath.Join(t.TempDir(), "none.sock"))
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("%v", err)
	}
}

func restarter(rt cri.Runtime, p cri.Prober) (*cri.Restarter, *testclock.FakeClock) {
	clk := testclock.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	return &cri.Restarter{
		Runtime: rt, Prober: p, Clock: clk, Timeout: time.Minute,
		SerialOnDisk: func(string) (string, error) { return "abc", nil },
	}, clk
}

func TestRestartStopsAndRemovesTheRightSandbox(t *testing.T) {
	ms := kubeadmManifests(t)
	rt := critest.NewRuntime()
	rt.RecreateAfter = 3
	rt.RemoveFailures = 2 // the kubelet race, twice
	ids := map[string]string{}
	for _, c := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		ids[c] = rt.AddStaticPod(c)
	}
	p := &critest.Prober{Serials: map[string]string{"192.0.2.10:6443": "abc"}}
	r, _ := restarter(rt, p)
	res := r.Restart(context.Background(), ms["kube-apiserver"])
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	want := []string{"stop " + ids["kube-apiserver"], "remove " + ids["kube-apiserver"], "remove " + ids["kube-apiserver"], "remove " + ids["kube-apiserver"]}
	if !reflect.DeepEqual(rt.Calls, want) {
		t.Fatalf("calls %v, want %v", rt.Calls, want)
	}
	if res.OldSandbox != ids["kube-apiserver"] || res.NewSandbox == "" || res.NewSandbox == res.OldSandbox || res.Serial != "abc" {
		t.Fatalf("result %+v", res)
	}
	for c, id := range ids {
		if c != "kube-apiserver" && !reflect.DeepEqual(rt.Current(c), []string{id}) {
			t.Errorf("%s touched: %v", c, rt.Current(c))
		}
	}
}

func TestRestartWaitsForTheServedSerial(t *testing.T) {
	ms := kubeadmManifests(t)
	rt := critest.NewRuntime()
	rt.AddStaticPod("etcd")
	p := &critest.Prober{Serials: map[string]string{"127.0.0.1:2379": "old"}}
	r, _ := restarter(rt, p)
	res := r.Restart(context.Background(), ms["etcd"])
	if res.Err == nil || !strings.Contains(res.Err.Error(), "serves serial old") {
		t.Fatalf("restart with the old serial served: %v", res.Err)
	}
}

func TestFindStaticPod(t *testing.T) {
	ctx := context.Background()
	rt := critest.NewRuntime()
	if _, err := cri.FindStaticPod(ctx, rt, "etcd"); err == nil || !strings.Contains(err.Error(), "no ready pod sandbox") {
		t.Errorf("none: %v", err)
	}
	rt.AddStaticPod("etcd")
	rt.AddStaticPod("etcd")
	if _, err := cri.FindStaticPod(ctx, rt, "etcd"); err == nil || !strings.Contains(err.Error(), "2 ready pod sandboxes") {
		t.Errorf("two: %v", err)
	}
	rt.AddPod("kube-scheduler", "api")
	if _, err := cri.FindStaticPod(ctx, rt, "kube-scheduler"); err == nil || !strings.Contains(err.Error(), "not a static pod") {
		t.Errorf("not static: %v", err)
	}
	// Nothing was stopped.
	if len(rt.Calls) != 0 {
		t.Errorf("calls %v", rt.Calls)
	}
}

func TestRollStopsAtTheFirstUnhealthyComponent(t *testing.T) {
	ms := kubeadmManifests(t)
	rt := critest.NewRuntime()
	ids := map[string]string{}
	order := []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
	for _, c := range order {
		ids[c] = rt.AddStaticPod(c)
	}
	p := &critest.Prober{Fail: map[int]bool{10257: true}, Serials: map[string]string{"127.0.0.1:2379": "abc", "192.0.2.10:6443": "abc"}}
	r, clk := restarter(rt, p)
	restored := 0
	var list []*cri.Manifest
	for _, c := range order {
		list = append(list, ms[c])
	}
	start := clk.Now()
	results, err := r.Roll(context.Background(), list, func() error { restored++; return nil })
	var rerr *cri.RollError
	if !errors.As(err, &rerr) || rerr.Component != "kube-controller-manager" || !strings.Contains(rerr.LastProbe, "connection refused") {
		t.Fatalf("error %v", err)
	}
	if restored != 1 || rerr.Retried == nil {
		t.Fatalf("restored %d times, retried %v", restored, rerr.Retried)
	}
	// etcd, apiserver, controller-manager, controller-manager again.
	if len(results) != 4 || results[0].Err != nil || results[1].Err != nil || results[2].Err == nil || results[3].Component != "kube-controller-manager" {
		t.Fatalf("results %+v", results)
	}
	if !reflect.DeepEqual(rt.Current("kube-scheduler"), []string{ids["kube-scheduler"]}) {
		t.Errorf("scheduler touched after the failure: %v", rt.Current("kube-scheduler"))
	}
	for _, call := range rt.Calls {
		if strings.Contains(call, "kube-scheduler") {
			t.Errorf("scheduler was touched: %s", call)
		}
	}
	// Bounded by the timeout (twice: the failure and the retry), on the
	// fake clock.
	if took := clk.Since(start); took < 2*time.Minute || took > 2*time.Minute+5*time.Second {
		t.Errorf("roll took %v of fake time", took)
	}
}

func TestRollFailsWhenTheKubeletDoesNotRecreate(t *testing.T) {
	ms := kubeadmManifests(t)
	rt := critest.NewRuntime()
	rt.AddStaticPod("kube-scheduler")
	rt.NoRecreate = map[string]bool{"kube-scheduler": true}
	r, _ := restarter(rt, &critest.Prober{})
	_, err := r.Roll(context.Background(), []*cri.Manifest{ms["kube-scheduler"]}, nil)
	if err == nil || !strings.Contains(err.Error(), "no new running pod") {
		t.Fatalf("%v", err)
	}
}

func TestRollWithoutARunningPodTouchesNothing(t *testing.T) {
	ms := kubeadmManifests(t)
	rt := critest.NewRuntime()
	r, _ := restarter(rt, &critest.Prober{})
	restored := false
	_, err := r.Roll(context.Background(), []*cri.Manifest{ms["etcd"]}, func() error { restored = true; return nil })
	if err == nil || restored || len(rt.Calls) != 0 {
		t.Fatalf("err %v restored %v calls %v", err, restored, rt.Calls)
	}
}

// Three nodes' etcd pods in one runtime: the restart picks this node's by
// the kubelet's pod name, and waits for its own replacement, never taking
// another node's ready pod for it.
func TestRestartPicksThisNodesPod(t *testing.T) {
	ms := kubeadmManifests(t)
	rt := critest.NewRuntime()
	rt.RecreateAfter = 4
	ids := map[string]string{}
	for _, n := range []string{"node1", "node2", "node3"} {
		ids[n] = rt.AddNodePod("etcd", n)
	}
	r, _ := restarter(rt, &critest.Prober{Serials: map[string]string{"127.0.0.1:2379": "abc"}})
	r.Node = "node2"
	res := r.Restart(context.Background(), ms["etcd"])
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if res.OldSandbox != ids["node2"] || res.NewSandbox == ids["node1"] || res.NewSandbox == ids["node3"] || res.NewSandbox == "" {
		t.Fatalf("restarted %s -> %s; pods %v", res.OldSandbox, res.NewSandbox, ids)
	}
	for _, c := range rt.Calls {
		if strings.Contains(c, ids["node1"]) || strings.Contains(c, ids["node3"]) {
			t.Errorf("another node's pod touched: %s", c)
		}
	}
	// Without the node name three ready pods are ambiguous: nothing stopped.
	r.Node = ""
	calls := len(rt.Calls)
	if res := r.Restart(context.Background(), ms["etcd"]); res.Err == nil || !strings.Contains(res.Err.Error(), "3 ready pod sandboxes") {
		t.Fatalf("no node name: %v", res.Err)
	}
	if len(rt.Calls) != calls {
		t.Errorf("calls after the refusal: %v", rt.Calls[calls:])
	}
}

// The gate is asked before each component; its refusal stops the roll
// there, untouched and without a restore.
func TestRollGate(t *testing.T) {
	ms := kubeadmManifests(t)
	order := []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
	tests := []struct {
		refuse    string
		restarted []string
	}{
		{"", order},
		{"etcd", nil},
		{"kube-controller-manager", []string{"etcd", "kube-apiserver"}},
	}
	for _, tc := range tests {
		t.Run("refuse "+tc.refuse, func(t *testing.T) {
			rt := critest.NewRuntime()
			for _, c := range order {
				rt.AddStaticPod(c)
			}
			r, _ := restarter(rt, &critest.Prober{Serials: map[string]string{"127.0.0.1:2379": "abc", "192.0.2.10:6443": "abc"}})
			var asked []string
			r.Gate = func(_ context.Context, c string) error {
				asked = append(asked, c)
				if c == tc.refuse {
					return errors.New("member etcd-node3 unhealthy")
				}
				return nil
			}
			var list []*cri.Manifest
			for _, c := range order {
				list = append(list, ms[c])
			}
			restored := false
			results, err := r.Roll(context.Background(), list, func() error { restored = true; return nil })
			var got []string
			for _, res := range results {
				got = append(got, res.Component)
			}
			if !reflect.DeepEqual(got, tc.restarted) {
				t.Errorf("restarted %v, want %v", got, tc.restarted)
			}
			var rerr *cri.RollError
			switch {
			case tc.refuse == "" && err != nil:
				t.Fatal(err)
			case tc.refuse != "" && (!errors.As(err, &rerr) || !rerr.Gated || rerr.Component != tc.refuse || !strings.Contains(err.Error(), "etcd-node3 unhealthy")):
				t.Fatalf("error %v", err)
			}
			if restored {
				t.Error("a gate refusal restored the backup")
			}
			if want := len(tc.restarted) + map[bool]int{true: 1}[tc.refuse != ""]; len(asked) != want {
				t.Errorf("gate asked %v", asked)
			}
		})
	}
}

// A component whose sandbox is already stopped (pkirenewd was killed
// between StopPodSandbox and the health check) is not an error: the
// restart waits for the kubelet's new sandbox and checks it.
func TestRestartOfAnAlreadyStoppedPod(t *testing.T) {
	ms := kubeadmManifests(t)
	rt := critest.NewRuntime()
	rt.RecreateAfter = 2
	old := rt.AddStaticPod("kube-scheduler")
	if err := rt.StopPodSandbox(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	rt.Calls = nil
	r, _ := restarter(rt, &critest.Prober{})
	res := r.Restart(context.Background(), ms["kube-scheduler"])
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if res.OldSandbox != old || res.NewSandbox == "" || res.NewSandbox == old {
		t.Fatalf("result %+v", res)
	}
	for _, c := range rt.Calls {
		if strings.HasPrefix(c, "stop ") {
			t.Errorf("stopped again: %v", rt.Calls)
		}
	}
	// With no sandbox at all, nothing is waited for.
	if res := r.Restart(context.Background(), ms["etcd"]); !errors.Is(res.Err, cri.ErrNoReadySandbox) {
		t.Fatalf("no pod at all: %v", res.Err)
	}
}
