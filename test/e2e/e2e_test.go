//go:build e2e

package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/test/containerdrig"
	"github.com/pkirenewd/pkirenewd/test/cplane"
	"github.com/pkirenewd/pkirenewd/test/testbin"
)

var pkirenewdBin string

func TestMain(m *testing.M) { testbin.Main(m, &pkirenewdBin) }

// TestControlPlane brings the control plane up, checks it works end to end
// (health, the CRI's view, an API write) and tears it down.
func TestControlPlane(t *testing.T) {
	cp := StartControlPlane(t, Options{})
	ctx := cp.Context()
	if err := cp.Healthy(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range Components {
		p, err := cp.ReadyPod(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: sandbox %.13s attempt %d, container %.13s", c, p.SandboxID, p.Attempt, p.ContainerID)
	}
	createConfigMap(t, cp, "e2e-smoke")
	// The bring-up waited for the mirror pods; they are still there.
	if err := cp.WaitMirrorPods(10 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// addProbelessPod puts a static pod like keepalived's (hostNetwork, no
// probe, a hostPath config file that no renewal touches) beside kubeadm's
// manifests and waits until the real kubelet runs it.
func addProbelessPod(t *testing.T, cp *ControlPlane, name string) Pod {
	t.Helper()
	conf := filepath.Join(cp.Dir, name+".conf")
	if err := os.WriteFile(conf, []byte("vrrp_instance VI_1 {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %[1]s
  namespace: kube-system
  labels: {component: %[1]s}
spec:
  hostNetwork: true
  containers:
  - name: %[1]s
    image: %[2]s
    command: [healthserver, --addr=127.0.0.1:%[3]d]
    volumeMounts:
    - {name: config, mountPath: /etc/keepalived/keepalived.conf, readOnly: true}
  volumes:
  - name: config
    hostPath: {path: %[4]s, type: File}
`, name, containerdrig.HealthImage, containerdrig.FreePort(t), conf)
	path := filepath.Join(ManifestsDir, name+".yaml")
	if err := os.WriteFile(path, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	var pod Pod
	err := cp.Poll(2*time.Minute, time.Second, name+" running", func(ctx context.Context) error {
		p, err := cp.ReadyPod(ctx, name)
		pod = p
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

func createConfigMap(t *testing.T, cp *ControlPlane, name string) {
	t.Helper()
	cm := map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": name},
		"data":     map[string]string{"at": time.Now().UTC().Format(time.RFC3339Nano)},
	}
	if _, err := cp.Admin.Create(cp.Context(), "/api/v1/namespaces/default/configmaps", cm); err != nil {
		t.Fatalf("create ConfigMap %s with admin.conf: %v", name, err)
	}
}

// logEvent is one line of pkirenewd's log.
type logEvent = testbin.Event

// daemon is a running pkirenewd.
type daemon struct {
	*testbin.Proc
	// stateDir is its --state-dir.
	stateDir string
}

func (d *daemon) exited() bool { return d.Exited() }

// stop sends SIGTERM and waits for exit 0 (the daemon finishes the
// component in hand first).
func (d *daemon) stop(t *testing.T) error {
	t.Helper()
	return d.Stop(7 * time.Minute)
}

// startDaemon runs `pkirenewd run` against the control plane, its log in
// LogDir/pkirenewd.log (JSON lines) and parsed into events.
func startDaemon(t *testing.T, cp *ControlPlane, args ...string) *daemon {
	t.Helper()
	return startPkirenewd(t, cp, "pkirenewd.log", "run", args...)
}

// startPkirenewd runs `pkirenewd SUBCOMMAND` with the node's paths, its
// JSON log in LogDir/logName and parsed into events.
func startPkirenewd(t *testing.T, cp *ControlPlane, logName, sub string, args ...string) *daemon {
	t.Helper()
	// Only `run` has --log-format; the one-shot commands log logfmt text.
	all := []string{sub}
	if sub == "run" {
		all = append(all, "--log-format", "json")
	}
	if sub == "run" || sub == "renew" {
		// The scenarios written for restarting every component that uses
		// a renewed file say so; those of the default policy (needed)
		// pass --restart-policy needed, which comes later and wins.
		all = append(all, "--restart-policy", "all")
	}
	state := t.TempDir()
	all = append(all, []string{"--log-level", "debug",
		"--config", "/dev/null",
		"--pki-dir", PKIDir, "--kubeconfig-dir", KubernetesDir, "--manifests-dir", ManifestsDir,
		"--state-dir", state, "--cri-endpoint", cp.Rig.Endpoint(),
		"--node-name", cp.Opts.NodeName, "--admin-kubeconfig-copy", "",
		"--metrics-address", ""}...)
	all = append(all, args...)
	return &daemon{Proc: testbin.Start(t, pkirenewdBin, filepath.Join(cp.LogDir, logName), all...), stateDir: state}
}

// leafSerials reads the serial of every renewable item: the leaf
// certificates in the PKI and the client certificates embedded in the
// kubeconfigs.
func leafSerials(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, name := range []string{"apiserver", "apiserver-kubelet-client", "apiserver-etcd-client", "front-proxy-client",
		"etcd/server", "etcd/peer", "etcd/healthcheck-client"} {
		s, err := cri.SerialOnDisk(filepath.Join(PKIDir, name+".crt"))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = s
	}
	for _, name := range []string{"admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf"} {
		c, err := (&Client{Kubeconfig: filepath.Join(KubernetesDir, name)}).ClientCert()
		if err != nil {
			t.Fatal(err)
		}
		out[name] = c.SerialNumber.Text(16)
	}
	return out
}

func notAfter(t *testing.T, path string) time.Time {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.NotAfter
}

// restart is one "component healthy" of pkirenewd's log.
type restart struct {
	component, sandbox, took string
	at                       time.Time
}

// restartedTwice lists the components restarted in more than one round.
func restartedTwice(rounds [][]restart) []string {
	n := map[string]int{}
	var out []string
	for _, round := range rounds {
		for _, r := range round {
			if n[r.component]++; n[r.component] == 2 {
				out = append(out, r.component)
			}
		}
	}
	return out
}

// TestRenewalRollsTheRealControlPlane is scenario 1: kubeadm issued every
// certificate for a few minutes; `pkirenewd run` renews them when due and
// restarts etcd, kube-apiserver, kube-controller-manager and kube-scheduler
// through the CRI, in that order, each recreated by the real kubelet and
// healthy; afterwards the components serve and use the renewed
// certificates and the API works with the renewed admin.conf. It runs on
// the default version of test/tools/versions.
func TestRenewalRollsTheRealControlPlane(t *testing.T) {
	renewalRollsTheControlPlane(t, "")
}

// TestRenewalRollsTheOldestControlPlane is scenario 1 on the oldest
// supported version, with that version's kubeadm, kubelet, components and
// etcd: the people who need pkirenewd most run a minor or three behind.
func TestRenewalRollsTheOldestControlPlane(t *testing.T) {
	oldest, err := cplane.OldestFull()
	if err != nil {
		t.Fatal(err)
	}
	renewalRollsTheControlPlane(t, oldest.Version)
}

// renewalRollsTheControlPlane is scenario 1 on Kubernetes version (empty:
// the default one).
func renewalRollsTheControlPlane(t *testing.T, version string) {
	const (
		// kubeadm backdates NotBefore by 5 min, so a certificate lives
		// 8 min and is due 2 min before expiry: 1 min after kubeadm
		// issued it (minus pkirenewd's jitter of up to 12 s). The roll
		// then has 2 min before the old certificates expire.
		validity    = 3 * time.Minute
		renewBefore = 2 * time.Minute
	)
	cp := StartControlPlane(t, Options{Validity: validity, KubernetesVersion: version})
	ctx := cp.Context()
	wantVersion(t, logVersions(t, cp, "running"), cp.Opts.KubernetesVersion)

	before := map[string]Pod{}
	for _, c := range Components {
		p, err := cp.ReadyPod(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		before[c] = p
	}
	// What HA nodes carry beside kubeadm's four (kubeadm's HA guide): a
	// keepalived-like static pod with no probe that uses no renewed file.
	// The renewal must neither stop on it nor touch it.
	vip := addProbelessPod(t, cp, "keepalived")
	oldSerials := leafSerials(t)
	expiry := notAfter(t, filepath.Join(PKIDir, "apiserver.crt"))
	t.Logf("certificates valid until %s (%v from now)", expiry.UTC().Format(time.RFC3339), time.Until(expiry).Round(time.Second))

	daemonStart := time.Now()
	d := startDaemon(t, cp, "--renew-before", renewBefore.String(), "--validity", validity.String(), "--restart-timeout", "6m",
		"--kubelet-restart-command", cp.KubeletRestartCommand())

	// Wait until every item has been renewed and the daemon has finished
	// the round(s) (it takes inventory — "scheduled" — after each).
	// Give up before the original certificates expire.
	var renewedAt time.Time
	err := cp.Poll(time.Until(expiry)+time.Minute, time.Second, "renewal of every certificate", func(ctx context.Context) error {
		if d.exited() {
			return fmt.Errorf("pkirenewd exited: %v", d.Cmd.ProcessState)
		}
		evs := d.Events()
		for _, e := range evs {
			if e.Str("level") == "error" || e.Str("level") == "fatal" {
				return fmt.Errorf("pkirenewd logged an error: %v", e.Fields)
			}
		}
		now := leafSerials(t)
		var pending []string
		for k, v := range now {
			if v == oldSerials[k] {
				pending = append(pending, k)
			}
		}
		if len(pending) > 0 {
			return fmt.Errorf("not renewed yet: %s", strings.Join(pending, " "))
		}
		if renewedAt.IsZero() {
			renewedAt = time.Now()
		}
		lastRenew, lastScheduled := -1, -1
		for i, e := range evs {
			switch {
			case e.Str("msg") == "renewing":
				lastRenew = i
			case e.Str("msg") == "scheduled":
				lastScheduled = i
			}
		}
		if lastScheduled < lastRenew {
			return errors.New("the renewal round has not finished")
		}
		if !kubeletRestartLogged(evs) {
			return errors.New("pkirenewd has not restarted the kubelet yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.stop(t); err != nil {
		t.Error(err)
	}
	evs := d.Events()

	// The rounds: what was renewed, which components were restarted in
	// which order, how long each took.
	var rounds [][]restart
	var firstRenew time.Time
	for _, e := range evs {
		switch {
		case e.Str("msg") == "renewing":
			if firstRenew.IsZero() {
				firstRenew = e.At
			}
			t.Logf("round %d: renewing %s (%v after the daemon started)", len(rounds)+1, e.Str("CERT"), e.At.Sub(daemonStart).Round(time.Millisecond))
			rounds = append(rounds, nil)
		case e.Str("msg") == "component healthy" && len(rounds) > 0:
			r := restart{component: e.Str("COMPONENT"), sandbox: e.Str("SANDBOX"), took: e.Str("TOOK"), at: e.At}
			rounds[len(rounds)-1] = append(rounds[len(rounds)-1], r)
			t.Logf("round %d: %s restarted and healthy in %s (new sandbox %s)", len(rounds), r.component, r.took, r.sandbox)
		}
	}
	if len(rounds) == 0 {
		t.Fatal("pkirenewd never logged a renewal")
	}
	// Each round restarted what it renewed in pkirenewd's order.
	first, last := map[string]restart{}, map[string]restart{}
	for i, round := range rounds {
		var got []string
		for _, r := range round {
			got = append(got, r.component)
			if _, ok := first[r.component]; !ok {
				first[r.component] = r
			}
			last[r.component] = r
		}
		if want := cri.Order(got); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("round %d restarted %v, not in the order %v", i+1, got, want)
		}
	}
	if len(rounds) > 1 {
		// kubeadm issues the PKI (certs phase) a few seconds before the
		// kubeconfigs (kubeconfig phase); pkirenewd renews what is due
		// when it wakes, so the kubeconfigs come due in a second round.
		t.Logf("NOTE: %d renewal rounds; components restarted more than once: %v", len(rounds), restartedTwice(rounds))
	}

	// The CRI: each component now runs in the sandbox of its last
	// restart, made by the kubelet after the daemon started; the four
	// sandboxes were made in the restart order.
	var prev time.Time
	for _, c := range Components {
		if _, ok := first[c]; !ok {
			t.Errorf("%s was never restarted", c)
			continue
		}
		p, err := cp.ReadyPod(ctx, c)
		if err != nil {
			t.Error(err)
			continue
		}
		if p.SandboxID == before[c].SandboxID {
			t.Errorf("%s: still the sandbox from before the renewal (%.13s)", c, p.SandboxID)
		}
		if !strings.HasPrefix(p.SandboxID, last[c].sandbox) {
			t.Errorf("%s runs in sandbox %.13s, pkirenewd saw %s healthy last", c, p.SandboxID, last[c].sandbox)
		}
		if !p.CreatedAt.After(daemonStart) {
			t.Errorf("%s: sandbox %.13s created %s, before the daemon started", c, p.SandboxID, p.CreatedAt)
		}
		if !p.CreatedAt.After(prev) {
			t.Errorf("%s: sandbox created %s, not after the previous component's (%s)", c, p.CreatedAt, prev)
		}
		prev = p.CreatedAt
		t.Logf("%s: sandbox %.13s -> %.13s (created %v after the daemon started)", c, before[c].SandboxID,
			p.SandboxID, p.CreatedAt.Sub(daemonStart).Round(time.Millisecond))
	}

	if p, err := cp.ReadyPod(ctx, "keepalived"); err != nil || p.SandboxID != vip.SandboxID || p.ContainerID != vip.ContainerID {
		t.Errorf("the keepalived-like pod was touched: before sandbox %.13s container %.13s, now %+v %v", vip.SandboxID, vip.ContainerID, p, err)
	}
	for _, r := range first {
		if r.component == "keepalived" {
			t.Error("pkirenewd restarted the keepalived-like pod, which uses no renewed file")
		}
	}

	// Served certificates are the renewed files.
	for _, x := range []struct{ addr, file string }{
		{"127.0.0.1:6443", filepath.Join(PKIDir, "apiserver.crt")},
		{"127.0.0.1:2379", filepath.Join(PKIDir, "etcd/server.crt")},
	} {
		onDisk, err := cri.SerialOnDisk(x.file)
		if err != nil {
			t.Fatal(err)
		}
		served, err := cri.HTTPProber{}.ServedSerial(ctx, x.addr)
		if err != nil {
			t.Error(err)
			continue
		}
		if served != onDisk {
			t.Errorf("%s serves serial %s, %s has %s", x.addr, served, x.file, onDisk)
		}
		t.Logf("%s serves the renewed %s (serial %s)", x.addr, filepath.Base(x.file), served)
	}

	// The renewed admin.conf works: /readyz, the others' health, a write.
	if c, err := cp.Admin.ClientCert(); err != nil || c.SerialNumber.Text(16) == oldSerials["admin.conf"] {
		t.Fatalf("admin.conf was not renewed (%v)", err)
	}
	if err := cp.Healthy(ctx); err != nil {
		t.Error(err)
	}
	createConfigMap(t, cp, "e2e-after-renewal")

	// Every roll ran under the cluster lease, taken through the local
	// apiserver and released at the end.
	var took, released int
	for _, e := range evs {
		switch e.Str("msg") {
		case "holding the restart lease":
			took++
		case "restart lease released":
			released++
		}
	}
	if took == 0 || took != released {
		t.Errorf("lease taken %d times, released %d times, in %d rounds", took, released, len(rounds))
	}
	if h, err := restartLeaseHolder(ctx, cp); err != nil || h != "" {
		t.Errorf("restart lease after the roll: holder %q (%v)", h, err)
	}

	// kubelet.conf embeds the kubelet's certificate (the init phases put
	// it there): it was renewed, and pkirenewd ran its
	// kubeletRestartCommand, which made the harness restart the kubelet.
	checkKubeletRestarted(t, cp, evs, oldSerials["kubelet.conf"])
	checkEvents(t, cp)

	var roll time.Duration
	if n := len(rounds); n > 0 && len(rounds[n-1]) > 0 {
		roll = rounds[n-1][len(rounds[n-1])-1].at.Sub(firstRenew)
	}
	t.Logf("timings: bring-up %v; daemon start to first renewal %v; first renewal to last component healthy %v",
		cp.BringUp.Round(time.Millisecond), firstRenew.Sub(daemonStart).Round(time.Millisecond), roll.Round(time.Millisecond))
}

// restartLeaseHolder reads pkirenewd's Lease (it must exist).
// checkEvents reads back, through the API, the Events pkirenewd posted
// about the node: the renewal and each component's restart.
func checkEvents(t *testing.T, cp *ControlPlane) {
	t.Helper()
	b, err := cp.Admin.Get(cp.Context(), "/apis/events.k8s.io/v1/namespaces/kube-system/events")
	if err != nil {
		t.Errorf("listing Events: %v", err)
		return
	}
	var list struct {
		Items []struct {
			Reason              string `json:"reason"`
			Note                string `json:"note"`
			ReportingController string `json:"reportingController"`
			Regarding           struct {
				Kind string `json:"kind"`
				Name string `json:"name"`
			} `json:"regarding"`
		} `json:"items"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Errorf("Events: %v", err)
		return
	}
	renewed, restarted := 0, map[string]bool{}
	for _, ev := range list.Items {
		if ev.ReportingController != "pkirenewd" || ev.Regarding.Kind != "Node" || ev.Regarding.Name != cp.Opts.NodeName {
			continue
		}
		switch ev.Reason {
		case "CertificatesRenewed":
			renewed++
		case "ComponentRestarted":
			restarted[strings.Fields(ev.Note)[0]] = true
		}
	}
	if renewed == 0 {
		t.Error("no CertificatesRenewed Event about the node")
	}
	for _, c := range append(append([]string{}, Components...), "kubelet") {
		if !restarted[c] {
			t.Errorf("no ComponentRestarted Event for %s (have %v)", c, restarted)
		}
	}
	t.Logf("Events read back through the API: %d CertificatesRenewed, ComponentRestarted for %d components", renewed, len(restarted))
}

func restartLeaseHolder(ctx context.Context, cp *ControlPlane) (string, error) {
	b, err := cp.Admin.Get(ctx, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/pkirenewd")
	if err != nil {
		return "", err
	}
	var l struct {
		Spec struct {
			HolderIdentity string `json:"holderIdentity"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return "", err
	}
	return l.Spec.HolderIdentity, nil
}

func kubeletRestartLogged(evs []logEvent) bool {
	for _, e := range evs {
		if e.Str("COMPONENT") == "kubelet" && e.Str("msg") == "kubelet restarted" {
			return true
		}
	}
	return false
}

// leaseRenewTime is spec.renewTime of the node's Lease in kube-node-lease
// (the kubelet's heartbeat, renewed every 10 s with its own credentials).
func leaseRenewTime(ctx context.Context, cp *ControlPlane) (time.Time, error) {
	b, err := cp.Admin.Get(ctx, "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/"+cp.Opts.NodeName)
	if err != nil {
		return time.Time{}, err
	}
	var l struct {
		Spec struct {
			RenewTime      string `json:"renewTime"`
			HolderIdentity string `json:"holderIdentity"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return time.Time{}, err
	}
	return time.Parse(time.RFC3339Nano, l.Spec.RenewTime)
}

// checkKubeletRestarted proves the kubelet was restarted through
// pkirenewd's kubeletRestartCommand after kubelet.conf was renewed, and that
// the new kubelet works with the renewed credentials: its node Lease is
// renewed after the restart.
func checkKubeletRestarted(t *testing.T, cp *ControlPlane, evs []logEvent, oldSerial string) {
	t.Helper()
	kc, err := (&Client{Kubeconfig: filepath.Join(KubernetesDir, "kubelet.conf")}).ClientCert()
	if err != nil {
		t.Fatal(err)
	}
	if kc.SerialNumber.Text(16) == oldSerial {
		t.Fatalf("kubelet.conf was not renewed (serial %s)", oldSerial)
	}
	st, err := os.Stat(filepath.Join(KubernetesDir, "kubelet.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var asked, done time.Time
	for _, e := range evs {
		if e.Str("COMPONENT") != "kubelet" {
			continue
		}
		t.Logf("pkirenewd about the kubelet: %s", e.Str("msg"))
		switch e.Str("msg") {
		case "restarting the kubelet for its renewed kubelet.conf":
			asked = e.At
		case "kubelet restarted":
			done = e.At
		}
	}
	restarts := cp.KubeletRestarts()
	if asked.IsZero() || done.IsZero() || len(restarts) == 0 {
		t.Fatalf("kubelet.conf was renewed but the kubelet was not restarted (pkirenewd asked %v, finished %v; harness restarts %v)",
			!asked.IsZero(), !done.IsZero(), restarts)
	}
	restarted := restarts[len(restarts)-1]
	if !restarted.After(st.ModTime()) {
		t.Errorf("the kubelet was last restarted at %s, before kubelet.conf was last written (%s)", restarted, st.ModTime())
	}
	if restarted.Before(asked) || restarted.After(done) {
		t.Errorf("the harness restarted the kubelet at %s, outside pkirenewd's restart (%s .. %s)", restarted, asked, done)
	}
	var renewed time.Time
	if err := cp.Poll(time.Minute, time.Second, "the node Lease renewed by the restarted kubelet", func(ctx context.Context) error {
		rt, err := leaseRenewTime(ctx, cp)
		if err != nil {
			return err
		}
		// renewTime has microsecond precision; the new kubelet
		// renews on start and every 10 s.
		if !rt.After(restarted) {
			return fmt.Errorf("Lease renewTime %s is not after the restart (%s)", rt.UTC().Format(time.RFC3339Nano), restarted.UTC().Format(time.RFC3339Nano))
		}
		renewed = rt
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("kubelet: kubelet.conf serial %s -> %s; restarted %d time(s) by pkirenewd's kubeletRestartCommand (%v after kubelet.conf was written), its Lease renewed %v after the restart",
		oldSerial, kc.SerialNumber.Text(16), len(restarts), restarted.Sub(st.ModTime()).Round(time.Millisecond), renewed.Sub(restarted).Round(time.Millisecond))
}
