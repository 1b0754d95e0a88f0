// Package restart_test proves the rolling restart against a real
// containerd: pkirenewd renews a kubeadm-shaped PKI and restarts the
// components that use it through the CRI, in order, each health-checked,
// and stops and rolls back at the first one that does not come back.
package restart_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
	"github.com/pkirenewd/pkirenewd/test/containerdrig"
	"github.com/pkirenewd/pkirenewd/test/testbin"
)

var pkirenewdBin string

func TestMain(m *testing.M) { testbin.Main(m, &pkirenewdBin) }

// node is a kubeadm-shaped node whose four control-plane components are
// healthservers run as static pods in the rig's containerd.
type node struct {
	root, pki, kube, manifests, state string
	rig                               *containerdrig.Rig
	kubelet                           *containerdrig.Kubelet
	pods                              map[string]containerdrig.StaticPod
	// kubeletConfig names the stand-in's healthz, which must answer
	// before pkirenewd stops a pod.
	kubeletConfig string
}

// Ports of the stand-in components: free ones, not kubeadm's, so the test
// cannot collide with a real control plane or another test.
var etcdPort, apiserverPort, cmPort, schedPort int

func manifest(component string, port int, scheme string, command []string, hostPaths map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Pod\nmetadata:\n  labels:\n    component: %s\n    tier: control-plane\n  name: %s\n  namespace: kube-system\nspec:\n  containers:\n  - command:\n", component, component)
	for _, c := range command {
		fmt.Fprintf(&b, "    - %s\n", c)
	}
	fmt.Fprintf(&b, "    image: %s\n    name: %s\n    ports:\n    - containerPort: %d\n      name: probe-port\n", containerdrig.HealthImage, component, port)
	fmt.Fprintf(&b, "    startupProbe:\n      httpGet:\n        host: 127.0.0.1\n        path: /livez\n        port: probe-port\n        scheme: %s\n", scheme)
	b.WriteString("  hostNetwork: true\n  volumes:\n")
	for name, p := range hostPaths {
		fmt.Fprintf(&b, "  - hostPath:\n      path: %s\n    name: %s\n", p, name)
	}
	return b.String()
}

func newNode(t *testing.T, rig *containerdrig.Rig, override func(string, int) *containerdrig.StaticPod) *node {
	t.Helper()
	return newNodeWith(t, rig, override, renewtest.Options{Algorithm: "ECDSA-P256", NotBefore: time.Now().Add(-300 * 24 * time.Hour)}, nil)
}

// newNodeWith makes the node; extra adds manifests kubeadm did not write
// (file name -> function of the node giving the content), which the
// stand-in kubelet runs too when they are usable.
func newNodeWith(t *testing.T, rig *containerdrig.Rig, override func(string, int) *containerdrig.StaticPod, o renewtest.Options, extra map[string]func(*node) string) *node {
	t.Helper()
	etcdPort, apiserverPort, cmPort, schedPort = containerdrig.FreePort(t), containerdrig.FreePort(t), containerdrig.FreePort(t), containerdrig.FreePort(t)
	root, err := os.MkdirTemp("/tmp", "restart-node")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	l, err := renewtest.MakePKI(filepath.Join(root, "kubernetes"), o)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{root: root, pki: l.PKIDir, kube: l.KubeconfigDir, manifests: filepath.Join(root, "kubernetes", "manifests"), state: filepath.Join(root, "state"), rig: rig}
	if err := os.MkdirAll(n.manifests, 0o755); err != nil {
		t.Fatal(err)
	}
	addr := func(p int) string { return fmt.Sprintf("--addr=127.0.0.1:%d", p) }
	files := map[string]string{
		"etcd.yaml": manifest("etcd", etcdPort, "HTTPS", []string{"healthserver", addr(etcdPort),
			"--cert-file=" + n.pki + "/etcd/server.crt", "--key-file=" + n.pki + "/etcd/server.key",
			fmt.Sprintf("--listen-client-urls=https://127.0.0.1:%d", etcdPort)}, map[string]string{"etcd-certs": n.pki + "/etcd"}),
		"kube-apiserver.yaml": manifest("kube-apiserver", apiserverPort, "HTTPS", []string{"healthserver", addr(apiserverPort),
			"--tls-cert-file=" + n.pki + "/apiserver.crt", "--tls-private-key-file=" + n.pki + "/apiserver.key"}, map[string]string{"k8s-certs": n.pki}),
		"kube-controller-manager.yaml": manifest("kube-controller-manager", cmPort, "HTTP", []string{"healthserver", addr(cmPort),
			"--kubeconfig=" + n.kube + "/controller-manager.conf"}, map[string]string{"k8s-certs": n.pki, "kubeconfig": n.kube + "/controller-manager.conf"}),
		"kube-scheduler.yaml": manifest("kube-scheduler", schedPort, "HTTP", []string{"healthserver", addr(schedPort),
			"--kubeconfig=" + n.kube + "/scheduler.conf"}, map[string]string{"kubeconfig": n.kube + "/scheduler.conf"}),
	}
	for f, content := range extra {
		files[f] = content(n)
	}
	for f, data := range files {
		if err := os.WriteFile(filepath.Join(n.manifests, f), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The stand-in kubelet runs what the manifests say.
	ms, err := cri.LoadManifests(n.manifests)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ms.Problems {
		if _, ok := extra[filepath.Base(p.Path)]; !ok {
			t.Fatal(p)
		}
	}
	n.pods = map[string]containerdrig.StaticPod{}
	var pods []containerdrig.StaticPod
	for _, m := range ms.Usable {
		p := containerdrig.StaticPod{Component: m.Component, Node: "node1", Image: containerdrig.HealthImage, Command: m.Args, HostPaths: m.HostPaths}
		n.pods[m.Component] = p
		pods = append(pods, p)
	}
	n.kubelet = rig.StartKubelet(pods, 500*time.Millisecond, override)
	n.kubeletConfig = n.kubelet.WriteConfig(root)
	for _, m := range ms.Usable {
		if m.HasProbe() {
			waitHealthy(t, m)
		}
	}
	return n
}

func waitHealthy(t *testing.T, m *cri.Manifest) {
	t.Helper()
	p := cri.HTTPProber{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := p.Probe(context.Background(), m.Probe); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never became healthy", m.Component)
}

// args are the subcommand, the node's settings, then the test's own flags
// (which win).
func (n *node) args(args ...string) []string {
	return append([]string{args[0], "--config", "/dev/null", "--pki-dir", n.pki, "--kubeconfig-dir", n.kube, "--manifests-dir", n.manifests,
		"--state-dir", n.state, "--cri-endpoint", n.rig.Endpoint(), "--restart-timeout", "30s", "--validity", "365d",
		// The stand-in has no apiserver and its etcd is a health server.
		"--lease=", "--etcd-quorum-guard=false",
		// Its health servers read their certificates only at start, so
		// every component must be restarted: what these tests roll.
		"--restart-policy", "all", "--kubelet-config", n.kubeletConfig}, args[1:]...)
}

func (n *node) pkirenewd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(pkirenewdBin, n.args(args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), code
}

var order = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}

// sandboxCounts counts each component's sandboxes so far.
func (n *node) sandboxCounts() map[string]int {
	out := map[string]int{}
	for _, c := range order {
		out[c] = len(n.kubelet.Sandboxes(c))
	}
	return out
}

// startDaemon runs `pkirenewd run` on the node until the test ends; its
// output goes to the returned buffer.
func (n *node) startDaemon(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(pkirenewdBin, n.args(append([]string{"run", "--metrics-address", ""}, args...)...)...)
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, out
}

// waitRestarted waits until every component has a sandbox beyond before.
func (n *node) waitRestarted(t *testing.T, before map[string]int, timeout time.Duration, log *bytes.Buffer) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done := true
		for _, c := range order {
			done = done && len(n.kubelet.Sandboxes(c)) > before[c]
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not restart all four components in %v:\n%s", timeout, log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestRenewRestartOnRealContainerd(t *testing.T) {
	rig := containerdrig.Start(t)
	// The controller-manager's third pod (the second restart) fails.
	n := newNode(t, rig, func(component string, attempt int) *containerdrig.StaticPod {
		if component == "kube-controller-manager" && attempt == 2 {
			p := containerdrig.StaticPod{Component: component, Node: "node1", Image: containerdrig.HealthImage,
				Command: []string{"healthserver", fmt.Sprintf("--addr=127.0.0.1:%d", cmPort), "--fail"}}
			return &p
		}
		return nil
	})

	// 1. Everything is due: renew and restart all four, in order, then
	// the kubelet for its renewed kubelet.conf (here a command that leaves
	// a mark).
	mark := filepath.Join(n.root, "kubelet-restarted")
	start := time.Now()
	out, code := n.pkirenewd(t, "renew", "--restart", "--kubelet-restart-command", "touch "+mark)
	if code != 0 {
		t.Fatalf("renew --restart: exit %d\n%s", code, out)
	}
	t.Logf("renew --restart of 4 components took %v\n%s", time.Since(start).Round(time.Millisecond), out)
	if _, err := os.Stat(mark); err != nil || !strings.Contains(out, "restarted kubelet") {
		t.Errorf("the kubelet was not restarted for its renewed kubelet.conf: %v", err)
	}
	var created []time.Time
	for _, c := range order {
		times := n.kubelet.CreationTimes(c)
		if len(times) != 2 {
			t.Fatalf("%s: %d sandboxes, want 2 (restarted once)", c, len(times))
		}
		created = append(created, times[1])
		if !strings.Contains(out, "restarted "+c) {
			t.Errorf("output lacks the restart of %s", c)
		}
	}
	for i := 1; i < len(created); i++ {
		if !created[i].After(created[i-1]) {
			t.Errorf("%s was recreated before %s", order[i], order[i-1])
		}
	}
	// The new certificates are served (these restarts are what made them
	// visible: the healthservers load their certificate once).
	for _, c := range []struct{ addr, file string }{
		{fmt.Sprintf("127.0.0.1:%d", apiserverPort), n.pki + "/apiserver.crt"},
		{fmt.Sprintf("127.0.0.1:%d", etcdPort), n.pki + "/etcd/server.crt"},
	} {
		served, err := cri.HTTPProber{}.ServedSerial(context.Background(), c.addr)
		want, _ := cri.SerialOnDisk(c.file)
		if err != nil || served != want {
			t.Errorf("%s serves %s (%v), %s has %s", c.addr, served, err, c.file, want)
		}
	}

	// 2. A forced renewal whose controller-manager does not come back:
	// the roll stops there, the scheduler is not touched, the previous
	// files come back and the controller-manager is restarted on them.
	before, err := renewtest.HashTree(filepath.Join(n.root, "kubernetes"))
	if err != nil {
		t.Fatal(err)
	}
	schedBefore := n.kubelet.Sandboxes("kube-scheduler")
	out, code = n.pkirenewd(t, "renew", "--force", "--restart", "--restart-timeout", "8s")
	if code != 1 {
		t.Fatalf("failing roll: exit %d\n%s", code, out)
	}
	t.Logf("failing roll:\n%s", out)
	for _, want := range []string{"FAILED    kube-controller-manager", "500 unhealthy", "previous files were restored", "restarted kube-controller-manager"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if got := n.kubelet.Sandboxes("kube-scheduler"); len(got) != len(schedBefore) {
		t.Errorf("scheduler restarted after the failure: %v -> %v", schedBefore, got)
	}
	after, _ := renewtest.HashTree(filepath.Join(n.root, "kubernetes"))
	if d := renewtest.DiffTrees(before, after); d != "" {
		t.Errorf("the previous files were not restored:\n%s", d)
	}
	// The node is healthy and consistent again.
	ms, _ := cri.LoadManifests(n.manifests)
	for _, m := range ms.Usable {
		waitHealthy(t, m)
	}
	// etcd and the apiserver came back on the renewed files before the
	// controller-manager failed; those files are gone again, so they run
	// on credentials older than the files. The scheduler's files were
	// replaced twice under it (renewed, restored): what it loaded cannot
	// be told from the files, so it counts as stale too. check says so
	// (exit 1), the controller-manager (restarted on the restored files)
	// is fine, and restarting the three converges.
	out, code = n.pkirenewd(t, "check")
	if code != 1 || !strings.Contains(out, "STALE etcd:") || !strings.Contains(out, "STALE kube-apiserver:") ||
		!strings.Contains(out, "STALE kube-scheduler:") || strings.Contains(out, "STALE kube-controller-manager:") {
		t.Errorf("check after the rollback: exit %d, want 1 naming etcd, kube-apiserver and kube-scheduler\n%s", code, out)
	}
	if out, code := n.pkirenewd(t, "restart", "etcd", "kube-apiserver", "kube-scheduler"); code != 0 {
		t.Fatalf("restart of the stale ones: exit %d\n%s", code, out)
	}
	if out, code := n.pkirenewd(t, "check"); code != 0 {
		t.Errorf("check after restarting them: exit %d\n%s", code, out)
	}
	// 3. The restart command alone, for one component: the others are
	// not touched.
	others := map[string]int{}
	for _, c := range order[:3] {
		others[c] = len(n.kubelet.Sandboxes(c))
	}
	schedBefore = n.kubelet.Sandboxes("kube-scheduler")
	out, code = n.pkirenewd(t, "restart", "kube-scheduler")
	if code != 0 || !strings.Contains(out, "restarted kube-scheduler") {
		t.Fatalf("restart: exit %d\n%s", code, out)
	}
	if got := n.kubelet.Sandboxes("kube-scheduler"); len(got) != len(schedBefore)+1 {
		t.Errorf("scheduler sandboxes %v", got)
	}
	for c, k := range others {
		if got := len(n.kubelet.Sandboxes(c)); got != k {
			t.Errorf("restart kube-scheduler touched %s (%d -> %d sandboxes)", c, k, got)
		}
	}
}

// BenchmarkRestart measures StopPodSandbox to healthy for one component
// on the real containerd with the kubelet stand-in (0.5 s reaction).
func BenchmarkRestart(b *testing.B) {
	rig := containerdrig.Start(b)
	root := b.TempDir()
	schedPort := containerdrig.FreePort(b)
	pod := containerdrig.StaticPod{Component: "kube-scheduler", Node: "node1", Image: containerdrig.HealthImage,
		Command: []string{"healthserver", fmt.Sprintf("--addr=127.0.0.1:%d", schedPort)}}
	rig.StartKubelet([]containerdrig.StaticPod{pod}, 500*time.Millisecond, nil)
	m := &cri.Manifest{Path: filepath.Join(root, "x.yaml"), Component: "kube-scheduler", Probe: cri.Probe{Scheme: "HTTP", Host: "127.0.0.1", Port: schedPort, Path: "/livez"}}
	client, err := cri.Dial(context.Background(), rig.Endpoint())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	r := &cri.Restarter{Runtime: client, Prober: cri.HTTPProber{}, Timeout: 30 * time.Second, PollInterval: 50 * time.Millisecond}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := (cri.HTTPProber{}).Probe(context.Background(), m.Probe); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res := r.Restart(context.Background(), m)
		if res.Err != nil {
			b.Fatal(res.Err)
		}
		b.ReportMetric(res.Took.Seconds(), "s-stop-to-healthy")
	}
}

// The daemon renews 40-second certificates on its own and rolls the four
// components through the real containerd after each renewal.
func TestDaemonRestartsAfterRenewal(t *testing.T) {
	rig := containerdrig.Start(t)
	// Leaves valid for 40 s (plus the 5 min backdating): due 20 s in.
	n := newNodeWith(t, rig, nil, renewtest.Options{Algorithm: "ECDSA-P256", Validity: 40 * time.Second}, nil)
	before := n.sandboxCounts()
	cmd, out := n.startDaemon(t, "--renew-before", "20s", "--validity", "40s")
	n.waitRestarted(t, before, 90*time.Second, out)
	var created []time.Time
	for _, c := range order {
		times := n.kubelet.CreationTimes(c)
		created = append(created, times[before[c]])
	}
	for i := 1; i < len(created); i++ {
		if !created[i].After(created[i-1]) {
			t.Errorf("%s recreated before %s", order[i], order[i-1])
		}
	}
	_ = cmd.Process.Signal(os.Interrupt)
	_ = cmd.Wait()
	if !strings.Contains(out.String(), "component healthy") {
		t.Errorf("no health-checked restart in the log:\n%s", out.String())
	}
}
