package cri_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/cri/critest"
)

// manifestsDir is a manifests directory holding kubeadm's four manifests,
// with replace swapping or adding files (base name -> content).
func manifestsDir(t *testing.T, replace map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	files, _ := filepath.Glob("testdata/kubeadm-v1.37.2/*.yaml")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range replace {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func fixture(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata/foreign", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestForeignManifestsParse(t *testing.T) {
	for _, tc := range []struct {
		file, component string
		hostPaths       []string
		wantErr         string // "" when usable
	}{
		{"kube-vip.yaml", "kube-vip", []string{"/etc/kubernetes/admin.conf"}, ""},
		{"keepalived.yaml", "keepalived", []string{"/etc/keepalived/keepalived.conf", "/etc/keepalived/check_apiserver.sh"}, ""},
		{"haproxy.yaml", "haproxy", []string{"/etc/haproxy/haproxy.cfg"}, `probe port "${APISERVER_DEST_PORT}"`},
	} {
		m, err := cri.ParseManifest(tc.file, []byte(fixture(t, tc.file)))
		switch {
		case tc.wantErr == "" && err != nil, tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: error %v, want %q", tc.file, err, tc.wantErr)
		case m == nil:
			t.Errorf("%s: nothing read", tc.file)
		case m.Component != tc.component || !reflect.DeepEqual(m.HostPaths, tc.hostPaths) || m.HasProbe():
			t.Errorf("%s: %s %v probe %+v", tc.file, m.Component, m.HostPaths, m.Probe)
		}
	}
	if m, err := cri.ParseManifest("truncated.yaml", []byte(fixture(t, "truncated.yaml"))); m != nil || err == nil {
		t.Errorf("truncated.yaml: %+v, %v", m, err)
	}
}

// TestDecide: kubeadm's four manifests plus one foreign or broken file,
// and what a change of files makes of them: the restart set, the warnings
// (file names) and the components blocked (component:file).
func TestDecide(t *testing.T) {
	pki := "/etc/kubernetes/pki/"
	leaves := []string{pki + "apiserver.crt", pki + "apiserver.key", pki + "apiserver-etcd-client.crt", pki + "front-proxy-client.crt",
		pki + "etcd/server.crt", pki + "etcd/peer.crt", pki + "etcd/healthcheck-client.crt"}
	admin := []string{"/etc/kubernetes/admin.conf", "/etc/kubernetes/super-admin.conf"}
	all := append(append(append([]string{}, leaves...), admin...), "/etc/kubernetes/controller-manager.conf", "/etc/kubernetes/scheduler.conf")
	three := []string{"etcd", "kube-apiserver", "kube-controller-manager"}
	four := []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
	badSchedulerProbe := strings.Replace(readKubeadm(t, "kube-scheduler.yaml"), "port: probe-port", "port: ${SCHED_PORT}", -1)
	badVIPProbe := strings.Replace(fixture(t, "kube-vip.yaml"), "  hostAliases:", "    livenessProbe:\n      httpGet:\n        port: ${VIP_PORT}\n  hostAliases:", 1)
	tests := []struct {
		name     string
		files    map[string]string
		changed  []string
		restart  []string
		warnings []string
		blocked  []string
	}{
		{"kubeadm alone, pki leaves", nil, leaves, three, nil, nil},
		{"kubeadm alone, nothing changed", nil, nil, nil, nil, nil},

		{"kube-vip, pki leaves", map[string]string{"kube-vip.yaml": fixture(t, "kube-vip.yaml")}, leaves, three, nil, nil},
		{"kube-vip, admin.conf: it uses it", map[string]string{"kube-vip.yaml": fixture(t, "kube-vip.yaml")}, admin, []string{"kube-vip"}, nil, nil},
		{"kube-vip, everything: after kubeadm's", map[string]string{"kube-vip.yaml": fixture(t, "kube-vip.yaml")}, all, append(four, "kube-vip"), nil, nil},
		{"kube-vip, nothing changed", map[string]string{"kube-vip.yaml": fixture(t, "kube-vip.yaml")}, nil, nil, nil, nil},

		{"keepalived, pki leaves", map[string]string{"keepalived.yaml": fixture(t, "keepalived.yaml")}, leaves, three, nil, nil},
		{"keepalived, admin.conf", map[string]string{"keepalived.yaml": fixture(t, "keepalived.yaml")}, admin, nil, nil, nil},
		{"keepalived, nothing changed", map[string]string{"keepalived.yaml": fixture(t, "keepalived.yaml")}, nil, nil, nil, nil},

		{"haproxy (templated probe port), pki leaves", map[string]string{"haproxy.yaml": fixture(t, "haproxy.yaml")}, leaves, three, []string{"haproxy.yaml"}, nil},
		{"haproxy, admin.conf", map[string]string{"haproxy.yaml": fixture(t, "haproxy.yaml")}, admin, nil, []string{"haproxy.yaml"}, nil},
		{"haproxy, nothing changed", map[string]string{"haproxy.yaml": fixture(t, "haproxy.yaml")}, nil, nil, []string{"haproxy.yaml"}, nil},

		{"truncated, pki leaves", map[string]string{"truncated.yaml": fixture(t, "truncated.yaml")}, leaves, three, []string{"truncated.yaml"}, nil},
		{"truncated, admin.conf", map[string]string{"truncated.yaml": fixture(t, "truncated.yaml")}, admin, nil, []string{"truncated.yaml"}, nil},
		{"truncated, nothing changed", map[string]string{"truncated.yaml": fixture(t, "truncated.yaml")}, nil, nil, []string{"truncated.yaml"}, nil},

		// kubeadm's own manifests broken: unreadable, what they use is
		// unknown, so any change blocks them; read far enough, only what
		// they use does.
		{"etcd.yaml truncated, pki leaves", map[string]string{"etcd.yaml": fixture(t, "truncated.yaml")}, leaves, []string{"kube-apiserver", "kube-controller-manager"}, nil, []string{"etcd:etcd.yaml"}},
		{"etcd.yaml truncated, admin.conf", map[string]string{"etcd.yaml": fixture(t, "truncated.yaml")}, admin, nil, nil, []string{"etcd:etcd.yaml"}},
		{"etcd.yaml truncated, nothing changed", map[string]string{"etcd.yaml": fixture(t, "truncated.yaml")}, nil, nil, []string{"etcd.yaml"}, nil},
		{"scheduler's probe port templated, pki leaves", map[string]string{"kube-scheduler.yaml": badSchedulerProbe}, leaves, three, []string{"kube-scheduler.yaml"}, nil},
		{"scheduler's probe port templated, scheduler.conf", map[string]string{"kube-scheduler.yaml": badSchedulerProbe}, all, three, nil, []string{"kube-scheduler:kube-scheduler.yaml"}},
		{"kube-vip with a templated probe port, admin.conf", map[string]string{"kube-vip.yaml": badVIPProbe}, admin, nil, nil, []string{"kube-vip:kube-vip.yaml"}},

		{"all foreign ones and a full renewal", map[string]string{"kube-vip.yaml": fixture(t, "kube-vip.yaml"), "keepalived.yaml": fixture(t, "keepalived.yaml"),
			"haproxy.yaml": fixture(t, "haproxy.yaml"), "truncated.yaml": fixture(t, "truncated.yaml")}, all, append(four, "kube-vip"), []string{"haproxy.yaml", "truncated.yaml"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := cri.LoadManifests(manifestsDir(t, tc.files))
			if err != nil {
				t.Fatal(err)
			}
			d := ms.ForChange(tc.changed)
			var restart, warnings, blocked []string
			for _, m := range d.Restart {
				restart = append(restart, m.Component)
			}
			for _, p := range d.Warnings {
				warnings = append(warnings, filepath.Base(p.Path))
				if !strings.Contains(p.Error(), p.Path) {
					t.Errorf("warning %q does not name %s", p.Error(), p.Path)
				}
			}
			for _, p := range d.Blocked {
				blocked = append(blocked, p.Component+":"+filepath.Base(p.Path))
				if !strings.Contains(p.Error(), p.Path) {
					t.Errorf("error %q does not name %s", p.Error(), p.Path)
				}
			}
			if !reflect.DeepEqual(restart, tc.restart) || !reflect.DeepEqual(warnings, tc.warnings) || !reflect.DeepEqual(blocked, tc.blocked) || len(d.Missing) != 0 {
				t.Errorf("restart %v warnings %v blocked %v missing %v\nwant restart %v warnings %v blocked %v", restart, warnings, blocked, d.Missing, tc.restart, tc.warnings, tc.blocked)
			}
		})
	}
}

func readKubeadm(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata/kubeadm-v1.37.2", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// Select by name: what `restart NAME...` and restarts owed by an earlier
// renewal use.
func TestSelect(t *testing.T) {
	ms, err := cri.LoadManifests(manifestsDir(t, map[string]string{
		"kube-vip.yaml": fixture(t, "kube-vip.yaml"), "haproxy.yaml": fixture(t, "haproxy.yaml"), "kube-scheduler.yaml": fixture(t, "truncated.yaml"),
	}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ms.Kubeadm(), []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Kubeadm() = %v, want %v", got, want)
	}
	d := ms.Select([]string{"kube-vip", "kube-scheduler", "haproxy", "gone", "etcd", "kube-vip"})
	var restart []string
	for _, m := range d.Restart {
		restart = append(restart, m.Component)
	}
	if !reflect.DeepEqual(restart, []string{"etcd", "kube-vip"}) || !reflect.DeepEqual(d.Missing, []string{"gone"}) ||
		len(d.Blocked) != 2 || d.Blocked[0].Component != "kube-scheduler" || d.Blocked[1].Component != "haproxy" || len(d.Warnings) != 0 {
		t.Errorf("%+v", d)
	}
}

func foreignManifest(t *testing.T, name string) *cri.Manifest {
	t.Helper()
	m, err := cri.ParseManifest("/etc/kubernetes/manifests/"+name, []byte(fixture(t, name)))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A pod without an HTTP probe is healthy once its new container has run
// RunningFor without a restart; nothing is probed.
func TestRestartWithoutProbe(t *testing.T) {
	rt := critest.NewRuntime()
	rt.RecreateAfter = 2
	old := rt.AddStaticPod("kube-vip")
	p := &critest.Prober{}
	r, clk := restarter(rt, p)
	log, hook := logtest.NewNullLogger()
	r.Log = log
	start := clk.Now()
	res := r.Restart(context.Background(), foreignManifest(t, "kube-vip.yaml"))
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if res.OldSandbox != old || res.NewSandbox == "" || res.NewSandbox == old || len(p.Probes) != 0 {
		t.Fatalf("result %+v, probes %v", res, p.Probes)
	}
	if took := clk.Since(start); took < 10*time.Second || took > 12*time.Second {
		t.Errorf("healthy after %v of fake time, want 10s and a few polls", took)
	}
	if !strings.Contains(res.LastProbe, "running for 10s without a restart") {
		t.Errorf("last probe %q", res.LastProbe)
	}
	want := "no HTTP probe in /etc/kubernetes/manifests/kube-vip.yaml: healthy = running for 10s without a restart"
	found := false
	for _, e := range hook.AllEntries() {
		found = found || e.Message == want
	}
	if !found {
		t.Errorf("no log line %q", want)
	}
}

// A probe-less pod whose container keeps being replaced (a crash loop)
// never counts as healthy.
func TestRestartWithoutProbeCrashLoop(t *testing.T) {
	rt := critest.NewRuntime()
	rt.CrashEvery = map[string]int{"keepalived": 8} // about every 2 s
	rt.AddStaticPod("keepalived")
	r, clk := restarter(rt, &critest.Prober{})
	r.RunningFor = 5 * time.Second
	start := clk.Now()
	res := r.Restart(context.Background(), foreignManifest(t, "keepalived.yaml"))
	if res.Err == nil || !strings.Contains(res.Err.Error(), "not running for 5s without a restart") || !strings.Contains(res.LastProbe, "container restarted") {
		t.Fatalf("crash loop: %v (last %q)", res.Err, res.LastProbe)
	}
	if took := clk.Since(start); took < time.Minute || took > time.Minute+time.Second {
		t.Errorf("gave up after %v of fake time, want the 1m timeout", took)
	}
}

// A FIFO, a directory or a huge file in the manifests directory is a
// problem naming it, and never hangs the load.
func TestManifestsThatAreNotFiles(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.yaml"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "huge.yaml"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, "huge.yaml"), 3<<30); err != nil {
		t.Fatal(err)
	}
	done := make(chan cri.Manifests)
	go func() {
		ms, _ := cri.LoadManifests(dir)
		done <- ms
	}()
	select {
	case ms := <-done:
		if len(ms.Problems) != 2 {
			t.Fatalf("problems %v", ms.Problems)
		}
		for _, p := range ms.Problems {
			if !strings.Contains(p.Error(), p.Path) {
				t.Errorf("%v does not name %s", p, p.Path)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("loading a FIFO manifest hung")
	}
}
