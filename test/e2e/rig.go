//go:build e2e

// Package e2e brings up a real single-node Kubernetes control plane —
// kubeadm's PKI, kubeconfigs and static pod manifests, run by a real
// kubelet on a real containerd (test/containerdrig) — and tears it down
// completely, so that pkirenewd can be proven against the real thing.
//
// The package is built only with the e2e tag:
//
//	go test -tags e2e -timeout 30m -v ./test/e2e/
//
// It needs root, containerd and runc (test/containerdrig/ensure-containerd.sh)
// and the pinned Kubernetes binaries (test/tools/build-k8s.sh all, cached).
// It owns /etc/kubernetes for the duration of a test (kubeadm's manifests
// folder is fixed): it refuses to run when that exists and was not made by
// it. What it shares with test/ha is in test/cplane. See README.md.
package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/test/containerdrig"
	"github.com/pkirenewd/pkirenewd/test/cplane"
)

// Fixed locations of a kubeadm node.
const (
	KubernetesDir = "/etc/kubernetes"
	PKIDir        = "/etc/kubernetes/pki"
	ManifestsDir  = "/etc/kubernetes/manifests"
	// MarkerFile says /etc/kubernetes was made by this harness (it holds
	// the owning process's PID).
	MarkerFile = "/etc/kubernetes/.pkirenewd-e2e"
	// AdvertiseAddress is the node's (non-loopback) address, on an
	// interface of its own (a documentation address: traffic never leaves
	// the machine).
	AdvertiseAddress = "192.0.2.10"
	// Interface carries AdvertiseAddress.
	Interface = "pkre2e0"
	// APIServer is where the tests reach the apiserver (certSANs has
	// 127.0.0.1).
	APIServer = "https://127.0.0.1:6443"
)

// Components are kubeadm's control-plane static pods, in pkirenewd's
// restart order.
var Components = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}

// ports the control plane and the kubelet listen on; all must be free.
var ports = []int{6443, 2379, 2380, 2381, 10257, 10259, 10250, 10248}

// kubeletTunables are the sysctls the kubelet sets when
// protectKernelDefaults is false; they are put back on teardown.
var kubeletTunables = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

// hostPathsKubeletMakes are made on the host by the kubelet whatever its
// root dir (device plugins, container log symlinks, flexvolume).
var hostPathsKubeletMakes = []string{"/var/lib/kubelet/device-plugins", "/var/log/containers", "/var/log/pods",
	"/usr/libexec/kubernetes/kubelet-plugins/volume/exec"}

// Options shape a control plane.
type Options struct {
	// KubernetesVersion is the version of kubeadm, the kubelet and the
	// components (default: the "full" version of test/tools/versions, the
	// only one test/tools/build-k8s.sh builds a control plane of; the
	// images, etcd's and pause's tags included, are the ones that
	// version's `kubeadm config images list` names).
	KubernetesVersion string
	// Validity is kubeadm's certificateValidityPeriod for every leaf
	// certificate and kubeconfig (0: kubeadm's default, 8760h).
	Validity time.Duration
	// CAValidity is kubeadm's caCertificateValidityPeriod for the three
	// CAs (0: kubeadm's default, ten years).
	CAValidity time.Duration
	// EncryptionAlgorithm is kubeadm's encryptionAlgorithm (empty: RSA-2048).
	EncryptionAlgorithm string
	// NodeName is nodeRegistration.name (default "node1").
	NodeName string
	// MaxContainerRestartPeriod caps the kubelet's CrashLoopBackOff
	// (crashLoopBackOff.maxContainerRestartPeriod; default 1s, the
	// minimum), so back-to-back restarts are not held back.
	MaxContainerRestartPeriod time.Duration
	// ReadyTimeout bounds the bring-up's wait for all four components
	// (default 4m).
	ReadyTimeout time.Duration
	// AuditLog makes the apiserver write an audit log, AuditLog(), of
	// every request with its user at Metadata level.
	AuditLog bool
}

// AuditLog is the apiserver's audit log (Options.AuditLog), JSON lines.
func (cp *ControlPlane) AuditLog() string { return filepath.Join(cp.LogDir, "audit", "audit.log") }

// auditArgs writes the audit policy and returns the apiserver's flags
// that use it and the log dir to mount where it is.
func (cp *ControlPlane) auditArgs() ([][2]string, []string) {
	dir := filepath.Dir(cp.AuditLog())
	cp.must(os.MkdirAll(dir, 0o700))
	policy := filepath.Join(dir, "policy.yaml")
	cp.must(os.WriteFile(policy, []byte(cplane.AuditPolicy), 0o600))
	// A kept log dir of an earlier run must not lend its requests.
	if err := os.Remove(cp.AuditLog()); err != nil && !errors.Is(err, os.ErrNotExist) {
		cp.must(err)
	}
	return [][2]string{{"audit-policy-file", policy}, {"audit-log-path", cp.AuditLog()}}, []string{dir}
}

// ControlPlane is a running single-node control plane.
type ControlPlane struct {
	t    *testing.T
	Opts Options
	// Rig is the containerd the kubelet uses.
	Rig *containerdrig.Rig
	// Bin holds kubeadm, kubelet, the components and etcd.
	Bin string
	// Dir is the run's own temp dir: kubeadm config, dry-run manifests,
	// kubelet root dir and config, etcd data.
	Dir string
	// LogDir gathers every log: kubeadm.log, kubelet.log, containerd.log,
	// pods/ (the component containers' logs, the kubelet's podLogsDir),
	// and whatever a test adds (e.g. pkirenewd.log).
	LogDir string
	// KubeadmConfig is the kubeadm configuration used for every phase.
	KubeadmConfig string
	// KubeletRoot is the kubelet's --root-dir.
	KubeletRoot string
	// Images maps each component to the image kubeadm's manifest names.
	Images map[string]string
	// Admin uses admin.conf, SuperAdmin super-admin.conf, both against
	// APIServer.
	Admin, SuperAdmin *Client
	// CertsIssued is when kubeadm issued the certificates (just before the
	// certs phase); BringUp how long the whole start took.
	CertsIssued time.Time
	BringUp     time.Duration

	ctx           context.Context
	setup         cplane.Setup
	kubeadmRunner *cplane.Kubeadm

	markerOurs bool
	ifaceOurs  bool
	created    []string          // host paths that did not exist before
	tunables   map[string]string // sysctl -> value before the kubelet ran

	mu          sync.Mutex
	kubelet     *cplane.Process
	kubeletBin  string // set by UpgradeKubelet; "" is Bin/kubelet
	kubeletArgs []string
	sandboxes   map[string]bool // every sandbox ID seen (for shim sockets)

	// restartMu serialises kubelet restarts asked for through
	// KubeletRestartCommand with the teardown (which sets noRestart).
	restartMu       sync.Mutex
	noRestart       bool
	kubeletRestarts []time.Time // when each such restart completed
	triggerOnce     sync.Once
	restarting      bool // under mu: a stopped kubelet is about to be started again
}

// Context is cancelled on SIGINT/SIGTERM and shortly before the test's
// deadline (leaving time for the teardown); every wait in a test should use
// it so that an interrupted run still tears down.
func (cp *ControlPlane) Context() context.Context { return cp.ctx }

// StartControlPlane brings up kubeadm's control plane
// (Options.KubernetesVersion, by default the pinned one) from nothing and
// returns once etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler are healthy and each runs as a static pod made by the
// kubelet. Everything is torn down by t.Cleanup (also when the test fails
// or is interrupted with Ctrl-C): the kubelet first, then every pod,
// containerd, the kubelet's mounts and cgroups, what the kubelet made on
// the host, /etc/kubernetes, the interface; a leftover fails the test.
func StartControlPlane(t *testing.T, opts Options) *ControlPlane {
	t.Helper()
	containerdrig.RequireHost(t, "the e2e control plane", "ip")
	t0 := time.Now()
	if opts.NodeName == "" {
		opts.NodeName = "node1"
	}
	if opts.MaxContainerRestartPeriod == 0 {
		opts.MaxContainerRestartPeriod = time.Second
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 4 * time.Minute
	}
	cp := &ControlPlane{t: t, Opts: opts, sandboxes: map[string]bool{}, tunables: map[string]string{}}
	sig := cplane.Signals{Prefix: "e2e", What: "the control plane", Margin: 2 * time.Minute} // leave the teardown two minutes
	sig.Deadline, _ = t.Deadline()
	var stopSignals func()
	cp.ctx, _, stopSignals = sig.Watch()
	// Registered first, so it runs after every other cleanup: signals are
	// caught until the teardown is complete.
	t.Cleanup(stopSignals)

	// Binaries (cached: instant warm), the log dir, kubeadm.
	var err error
	cp.setup, err = cplane.NewSetup(cp.ctx, "e2e", t.Name(), opts.KubernetesVersion, "all")
	cp.must(err)
	cp.Opts.KubernetesVersion, cp.Bin, cp.LogDir, cp.kubeadmRunner = cp.setup.Version, cp.setup.Bin, cp.setup.LogDir, cp.setup.Kubeadm
	t.Logf("e2e: logs in %s", cp.LogDir)

	cp.preflight()
	// From here on everything made is undone by the host teardown, which
	// runs last (cleanups run last-in first-out).
	t.Cleanup(cp.teardownHost)

	d, err := os.MkdirTemp("/tmp", "pkre2e")
	if err != nil {
		t.Fatal(err)
	}
	cp.Dir = d
	cp.KubeletRoot = filepath.Join(d, "kubelet")
	for _, sub := range []string{"kubelet", "dryrun", "etcd", "volume-plugins"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}

	cp.addInterface()
	if err := os.MkdirAll(KubernetesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(MarkerFile, []byte(fmt.Sprintf("pid=%d\n", os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	cp.markerOurs = true

	// PKI, kubeconfigs, manifests.
	cp.kubeadmPhases()
	tPhases := time.Now()

	// containerd with kubeadm's images.
	cp.Rig = containerdrig.Start(t)
	t.Cleanup(cp.teardownPods) // before the rig's own cleanup
	cp.importImages()
	tImages := time.Now()

	// What the kubelet will make on the host, to be removed again.
	cp.noteCreated()
	cp.saveTunables()
	cp.writeKubeletConfig()
	cp.startKubelet()

	cp.Admin = &Client{Kubeconfig: filepath.Join(KubernetesDir, "admin.conf"), Server: APIServer}
	cp.SuperAdmin = &Client{Kubeconfig: filepath.Join(KubernetesDir, "super-admin.conf"), Server: APIServer}
	if err := cplane.WaitReady(cp.poller(), cp.Admin, opts.ReadyTimeout); err != nil {
		t.Fatalf("e2e: %v", err)
	}
	tAPI := time.Now()
	if err := cplane.BindClusterAdmins(cp.poller(), cp.SuperAdmin); err != nil {
		t.Fatalf("e2e: %v", err)
	}
	if err := cp.WaitHealthy(opts.ReadyTimeout - time.Since(tImages)); err != nil {
		t.Fatalf("e2e: control plane not healthy: %v", err)
	}
	for _, c := range Components {
		if _, err := cp.ReadyPod(cp.ctx, c); err != nil {
			t.Fatalf("e2e: %v", err)
		}
	}
	// A node is not up until the kubelet has registered its mirror pods:
	// while a static pod has none, every sync of it first asks the API to
	// create one, and with etcd stopped that request hangs until the
	// apiserver's timeout (~34 s, once or twice) before the kubelet makes
	// the new sandbox. A restart right after bring-up (the apiserver not
	// yet done with its PriorityClasses) then takes over a minute — a
	// state no long-running kubeadm node is in.
	if err := cp.WaitMirrorPods(opts.ReadyTimeout); err != nil {
		t.Fatalf("e2e: %v", err)
	}
	cp.BringUp = time.Since(t0)
	t.Logf("e2e: control plane up in %v (kubeadm phases %v, containerd + images %v, kubelet to apiserver ready %v, to all healthy %v)",
		cp.BringUp.Round(time.Millisecond), tPhases.Sub(t0).Round(time.Millisecond), tImages.Sub(tPhases).Round(time.Millisecond),
		tAPI.Sub(tImages).Round(time.Millisecond), time.Since(tAPI).Round(time.Millisecond))
	return cp
}

// must fails the test on a bring-up error.
func (cp *ControlPlane) must(err error) {
	cp.t.Helper()
	if err != nil {
		cp.t.Fatalf("e2e: %v", err)
	}
}

// preflight refuses to run over anything that is not the harness's own.
func (cp *ControlPlane) preflight() {
	t := cp.t
	t.Helper()
	if _, err := os.Lstat(KubernetesDir); err == nil {
		data, err := os.ReadFile(MarkerFile)
		if err != nil {
			t.Fatalf("e2e: %s exists and was not made by this harness (no %s): refusing to touch it", KubernetesDir, MarkerFile)
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(data)), "pid="))); err == nil && pid != os.Getpid() {
			if syscall.Kill(pid, 0) == nil {
				t.Fatalf("e2e: %s belongs to another e2e run (pid %d, still running)", KubernetesDir, pid)
			}
		}
		t.Logf("e2e: removing %s left by an earlier e2e run", KubernetesDir)
		if err := os.RemoveAll(KubernetesDir); err != nil {
			t.Fatal(err)
		}
	}
	if linkExists(Interface) {
		t.Logf("e2e: removing interface %s left by an earlier e2e run", Interface)
		_ = exec.Command("ip", "link", "del", Interface).Run()
	}
	if out, _ := exec.Command("ip", "-o", "addr", "show").Output(); strings.Contains(string(out), " "+AdvertiseAddress+"/") {
		t.Fatalf("e2e: %s is already assigned to an interface here", AdvertiseAddress)
	}
	for _, p := range ports {
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err != nil {
			t.Fatalf("e2e: port %d is in use (a control plane or kubelet runs here?): %v", p, err)
		}
		l.Close()
	}
	// Empty kubepods cgroups of an earlier run are removed; ones with
	// processes mean another kubelet.
	for _, d := range cplane.KubepodsCgroups() {
		if err := cplane.RemoveCgroupTree(d, false); err != nil {
			t.Fatalf("e2e: %s exists and cannot be removed (another kubelet runs here?): %v", d, err)
		}
	}
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// addInterface puts AdvertiseAddress on an interface of its own: a dummy
// interface, or (kernels without the dummy driver) an empty bridge.
func (cp *ControlPlane) addInterface() {
	t := cp.t
	t.Helper()
	kind := "dummy"
	if out, err := exec.Command("ip", "link", "add", Interface, "type", "dummy").CombinedOutput(); err != nil {
		kind = "bridge"
		if out2, err2 := exec.Command("ip", "link", "add", Interface, "type", "bridge").CombinedOutput(); err2 != nil {
			t.Fatalf("e2e: ip link add %s: dummy: %v %s; bridge: %v %s", Interface, err, out, err2, out2)
		}
	}
	cp.ifaceOurs = true
	for _, args := range [][]string{{"addr", "add", AdvertiseAddress + "/32", "dev", Interface}, {"link", "set", Interface, "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("e2e: ip %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	t.Logf("e2e: %s on %s (%s)", AdvertiseAddress, Interface, kind)
}

// initConfig is kubeadm's configuration for this node.
func (cp *ControlPlane) initConfig() cplane.InitConfig {
	c := cplane.InitConfig{AdvertiseAddress: AdvertiseAddress, BindPort: 6443, NodeName: cp.Opts.NodeName,
		KubernetesVersion: cp.Opts.KubernetesVersion, CertificatesDir: PKIDir, CertSANs: []string{"127.0.0.1", "localhost"},
		EtcdDataDir: filepath.Join(cp.Dir, "etcd"), Validity: cp.Opts.Validity, EncryptionAlgorithm: cp.Opts.EncryptionAlgorithm,
		CAValidity: cp.Opts.CAValidity}
	if cp.Opts.AuditLog {
		c.APIServerArgs, c.APIServerHostPaths = cp.auditArgs()
	}
	return c
}

// kubeadm runs the pinned kubeadm (its output appended to kubeadm.log)
// and returns its output; an error fails the test.
func (cp *ControlPlane) kubeadm(env []string, args ...string) string {
	cp.t.Helper()
	out, err := cp.kubeadmRunner.Run(env, args...)
	cp.must(err)
	return out
}

// kubeadmPhases lays down the PKI and kubeconfigs in /etc/kubernetes and the
// static pod manifests in /etc/kubernetes/manifests, as `kubeadm init`
// would, and finds the image of each component.
func (cp *ControlPlane) kubeadmPhases() {
	t := cp.t
	t.Helper()
	cp.KubeadmConfig = filepath.Join(cp.Dir, "kubeadm.yaml")
	cp.must(os.WriteFile(cp.KubeadmConfig, []byte(cp.initConfig().YAML()), 0o600))
	cp.must(cp.kubeadmRunner.CheckVersion(cp.Opts.KubernetesVersion))
	images, err := cp.kubeadmRunner.Images(cp.KubeadmConfig)
	cp.must(err)
	cp.Images = map[string]string{}
	// containerd's sandbox image is the rig's; an older kubeadm names an
	// older pause tag (v1.34: 3.10.1), which is imported as well, as a
	// node that has run `kubeadm config images pull` would have it.
	cp.Images["pause"] = images["pause"]
	for _, c := range Components {
		if cp.Images[c] = images[c]; cp.Images[c] == "" {
			t.Fatalf("e2e: kubeadm config images list: no %s in %v", c, images)
		}
	}
	cp.CertsIssued = time.Now()
	for _, phase := range []string{"certs", "kubeconfig"} {
		cp.kubeadm(nil, "init", "phase", phase, "all", "--config", cp.KubeadmConfig)
	}
	cp.must(os.MkdirAll(ManifestsDir, 0o700))
	dry := filepath.Join(cp.Dir, "dryrun")
	cp.must(cp.kubeadmRunner.DryRun(dry, cp.KubeadmConfig, "etcd", "local"))
	cp.must(cp.kubeadmRunner.DryRun(dry, cp.KubeadmConfig, "control-plane", "all"))
	for _, c := range Components {
		data, err := cplane.Manifest(dry, c)
		cp.must(err)
		if !strings.Contains(string(data), "image: "+cp.Images[c]) {
			t.Fatalf("e2e: manifest of %s does not use %s", c, cp.Images[c])
		}
		cp.must(os.WriteFile(filepath.Join(ManifestsDir, c+".yaml"), data, 0o600))
	}
}

// importImages builds one image per component (the static binary in
// /usr/local/bin, on PATH) tagged as kubeadm's manifests name it.
func (cp *ControlPlane) importImages() {
	for _, c := range Components {
		cp.Rig.ImportImage(cp.Images[c], map[string]string{"/usr/local/bin/" + c: filepath.Join(cp.Bin, c)}, nil)
	}
	cp.importPauseAs(cp.Images["pause"])
}

// importPauseAs makes ref an image of the rig's pause binary (kubeadm's
// pause tag, or an image that only has to be present), unless it is the
// sandbox image itself.
func (cp *ControlPlane) importPauseAs(ref string) {
	if ref != "" && ref != containerdrig.PauseImage {
		cp.Rig.ImportImage(ref, map[string]string{"/pause": filepath.Join(cp.Rig.Bin, "pause")}, []string{"/pause"})
	}
}

// noteCreated records which of the paths the kubelet (or a DirectoryOrCreate
// hostPath in the manifests) may make do not exist yet; the teardown removes
// exactly those.
func (cp *ControlPlane) noteCreated() {
	paths := append([]string{}, hostPathsKubeletMakes...)
	ms, err := cri.LoadManifests(ManifestsDir)
	if err != nil {
		cp.t.Fatalf("e2e: %v", err)
	}
	for _, m := range ms.Usable {
		paths = append(paths, m.HostPaths...)
	}
	seen := map[string]bool{}
	for _, p := range paths {
		p = filepath.Clean(p)
		if strings.HasPrefix(p, KubernetesDir+"/") || strings.HasPrefix(p, cp.Dir+"/") {
			continue
		}
		// The top-most ancestor that does not exist.
		top := ""
		for d := p; d != "/"; d = filepath.Dir(d) {
			if _, err := os.Lstat(d); err == nil {
				break
			}
			top = d
		}
		if top != "" && !seen[top] {
			seen[top] = true
			cp.created = append(cp.created, top)
		}
	}
	sort.Strings(cp.created)
	cp.t.Logf("e2e: the kubelet may create (removed on teardown): %s", strings.Join(cp.created, " "))
}

func (cp *ControlPlane) saveTunables() {
	for _, k := range kubeletTunables {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			cp.tunables[k] = strings.TrimSpace(string(b))
		}
	}
}

func (cp *ControlPlane) restoreTunables() {
	for _, k := range kubeletTunables {
		want, ok := cp.tunables[k]
		if !ok {
			continue
		}
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil && strings.TrimSpace(string(b)) == want {
			continue
		}
		if err := os.WriteFile("/proc/sys/"+k, []byte(want), 0o644); err != nil {
			cp.t.Errorf("e2e: teardown: restore sysctl %s=%s: %v", k, want, err)
		}
	}
}

func (cp *ControlPlane) kubeletConfigPath() string { return filepath.Join(cp.Dir, "kubelet.yaml") }

func (cp *ControlPlane) writeKubeletConfig() {
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: %[1]s
podLogsDir: %[2]s
containerRuntimeEndpoint: %[3]s
imageServiceEndpoint: %[3]s
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
protectKernelDefaults: false
makeIPTablesUtilChains: false
address: %[7]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
  x509:
    clientCAFile: %[6]s
authorization:
  mode: AlwaysAllow
# Alpha (off) in v1.34, beta (on) from v1.35: enabled, so every version
# takes maxContainerRestartPeriod.
featureGates:
  KubeletCrashLoopBackOffMax: true
crashLoopBackOff:
  maxContainerRestartPeriod: %[4]s
volumePluginDir: %[5]s
rotateCertificates: false
serverTLSBootstrap: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
resolvConf: /etc/resolv.conf
`, ManifestsDir, filepath.Join(cp.LogDir, "pods"), cp.Rig.Endpoint(), cp.Opts.MaxContainerRestartPeriod,
		filepath.Join(cp.Dir, "volume-plugins"), filepath.Join(PKIDir, "ca.crt"),
		// The node's InternalIP: where the apiserver reaches the kubelet
		// (logs, exec) with its kubelet client certificate.
		AdvertiseAddress)
	if err := os.MkdirAll(filepath.Join(cp.LogDir, "pods"), 0o755); err != nil {
		cp.t.Fatal(err)
	}
	if err := os.WriteFile(cp.kubeletConfigPath(), []byte(cfg), 0o600); err != nil {
		cp.t.Fatal(err)
	}
	cp.kubeletArgs = []string{
		"--config=" + cp.kubeletConfigPath(),
		"--kubeconfig=" + filepath.Join(KubernetesDir, "kubelet.conf"),
		"--root-dir=" + cp.KubeletRoot,
		"--cert-dir=" + filepath.Join(cp.KubeletRoot, "pki"),
		"--hostname-override=" + cp.Opts.NodeName,
		"--node-ip=" + AdvertiseAddress,
		"--v=2",
	}
}

// startKubelet starts the kubelet as a child process in its own process
// group (a Ctrl-C does not reach it: the teardown stops it first), logging
// to LogDir/kubelet.log.
func (cp *ControlPlane) startKubelet() {
	cp.t.Helper()
	if err := cp.startKubeletErr(); err != nil {
		cp.t.Fatalf("e2e: %v", err)
	}
}

func (cp *ControlPlane) startKubeletErr() error {
	cp.mu.Lock()
	bin := cp.kubeletBin
	cp.mu.Unlock()
	if bin == "" {
		bin = filepath.Join(cp.Bin, "kubelet")
	}
	p, err := cplane.StartProcess(bin, cp.kubeletArgs, filepath.Join(cp.LogDir, "kubelet.log"))
	if err != nil {
		return err
	}
	cp.mu.Lock()
	cp.kubelet = p
	cp.mu.Unlock()
	return nil
}

// KubeletRestartCommand returns a shell command (for pkirenewd's
// --kubelet-restart-command) that makes the harness restart its kubelet
// child process and returns once the new kubelet has been started: it
// creates a trigger file that the harness watches, and waits until the
// harness removes it again (at most 60 s, else it fails).
func (cp *ControlPlane) KubeletRestartCommand() string {
	trigger := filepath.Join(cp.Dir, "restart-kubelet")
	cp.triggerOnce.Do(func() { go cp.watchKubeletTrigger(trigger) })
	return fmt.Sprintf(`touch %[1]s && i=0; while [ -e %[1]s ]; do i=$((i+1)); [ $i -gt 600 ] && { echo "the e2e harness did not restart the kubelet" >&2; exit 1; }; sleep 0.1; done`, trigger)
}

// KubeletRestarts lists when each restart asked for through
// KubeletRestartCommand completed (the new kubelet started).
func (cp *ControlPlane) KubeletRestarts() []time.Time {
	cp.restartMu.Lock()
	defer cp.restartMu.Unlock()
	return append([]time.Time{}, cp.kubeletRestarts...)
}

func (cp *ControlPlane) watchKubeletTrigger(trigger string) {
	for {
		select {
		case <-cp.ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		if _, err := os.Stat(trigger); err != nil {
			continue
		}
		cp.restartMu.Lock()
		if cp.noRestart {
			cp.restartMu.Unlock()
			return
		}
		cp.mu.Lock()
		cp.restarting = true
		cp.mu.Unlock()
		cp.StopKubelet()
		err := cp.startKubeletErr()
		cp.mu.Lock()
		cp.restarting = false
		cp.mu.Unlock()
		if err == nil {
			cp.kubeletRestarts = append(cp.kubeletRestarts, time.Now())
		}
		cp.restartMu.Unlock()
		if err != nil {
			cp.t.Errorf("e2e: restart kubelet on request: %v", err)
			continue // the trigger stays: the command fails
		}
		_ = os.Remove(trigger)
	}
}

// KubeletRunning reports whether the kubelet process is alive.
func (cp *ControlPlane) KubeletRunning() bool {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.kubelet.Running()
}

// kubeletGone says, for a poll, that a started kubelet has exited (not
// while a requested restart is under way).
func (cp *ControlPlane) kubeletGone() error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.restarting {
		return nil
	}
	return cp.kubelet.Exited()
}

// StopKubelet stops the kubelet (SIGTERM, then SIGKILL after 15 s). The
// static pods keep running. Idempotent.
func (cp *ControlPlane) StopKubelet() {
	cp.mu.Lock()
	p := cp.kubelet
	cp.mu.Unlock()
	p.Stop()
}

// RestartKubelet stops and starts the kubelet, e.g. so it reads a renewed
// kubelet.conf. The static pods keep running and are adopted.
func (cp *ControlPlane) RestartKubelet() {
	cp.t.Helper()
	cp.StopKubelet()
	cp.startKubelet()
}

// poller polls under the Context, giving up when the kubelet has exited.
func (cp *ControlPlane) poller() cplane.Poller {
	return cplane.Poller{Ctx: cp.ctx, Gone: cp.kubeletGone}
}

func (cp *ControlPlane) poll(timeout, interval time.Duration, what string, f func(ctx context.Context) error) error {
	return cp.poller().Poll(timeout, interval, what, f)
}

// Poll calls f at once and then every interval until it returns nil, the
// timeout passes, the Context ends or the kubelet exits; the error says
// what was last seen.
func (cp *ControlPlane) Poll(timeout, interval time.Duration, what string, f func(ctx context.Context) error) error {
	return cp.poll(timeout, interval, what, f)
}

// apiserverReady is one /readyz with admin.conf.
func (cp *ControlPlane) apiserverReady(ctx context.Context) error { return cp.Admin.Ready(ctx) }

// Healthy checks the four components once: kube-apiserver's /readyz with
// admin.conf's credentials (verified against the CA), etcd's /health on
// 2379 with the healthcheck-client certificate (verified against the etcd
// CA), kube-controller-manager's and kube-scheduler's /healthz (10257,
// 10259; their self-signed serving certificates are not verified).
func (cp *ControlPlane) Healthy(ctx context.Context) error {
	var errs []error
	if err := cp.apiserverReady(ctx); err != nil {
		errs = append(errs, fmt.Errorf("kube-apiserver: %w", err))
	}
	if err := etcdHealthy(ctx); err != nil {
		errs = append(errs, fmt.Errorf("etcd: %w", err))
	}
	for _, x := range []struct{ name, url string }{
		{"kube-controller-manager", "https://127.0.0.1:10257/healthz"},
		{"kube-scheduler", "https://127.0.0.1:10259/healthz"},
	} {
		if err := insecureGetOK(ctx, x.url); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", x.name, err))
		}
	}
	return errors.Join(errs...)
}

// WaitMirrorPods waits until the API has a mirror pod for each of the
// four static pods.
func (cp *ControlPlane) WaitMirrorPods(timeout time.Duration) error {
	return cp.poll(timeout, 250*time.Millisecond, "mirror pods registered", func(ctx context.Context) error {
		b, err := cp.Admin.Get(ctx, "/api/v1/namespaces/kube-system/pods")
		if err != nil {
			return err
		}
		var list struct {
			Items []struct {
				Metadata struct {
					Name        string            `json:"name"`
					Annotations map[string]string `json:"annotations"`
				} `json:"metadata"`
			} `json:"items"`
		}
		if err := json.Unmarshal(b, &list); err != nil {
			return fmt.Errorf("pod list: %w", err)
		}
		mirrors := map[string]bool{}
		for _, p := range list.Items {
			if _, ok := p.Metadata.Annotations["kubernetes.io/config.mirror"]; ok {
				mirrors[p.Metadata.Name] = true
			}
		}
		for _, c := range Components {
			if name := c + "-" + cp.Opts.NodeName; !mirrors[name] {
				return fmt.Errorf("no mirror pod %s yet", name)
			}
		}
		return nil
	})
}

// WaitHealthy waits until Healthy passes.
func (cp *ControlPlane) WaitHealthy(timeout time.Duration) error {
	return cp.poll(timeout, 250*time.Millisecond, "control plane healthy", cp.Healthy)
}

// etcdHealthy is one /health of etcd with kubeadm's health-check client.
func etcdHealthy(ctx context.Context) error {
	cfg, err := cplane.EtcdClientTLS(PKIDir)
	if err != nil {
		return err
	}
	return cplane.EtcdHealthy(ctx, cfg, "https://127.0.0.1:2379/health", 5*time.Second)
}

// insecureGetOK is one GET of a self-signed serving certificate's URL.
func insecureGetOK(ctx context.Context, url string) error {
	_, err := cplane.GetOK(ctx, &tls.Config{InsecureSkipVerify: true}, url, 5*time.Second) //nolint:gosec // self-signed serving certs
	return err
}

// Pod is one pod sandbox of a component, with its newest container.
type Pod = cplane.Pod

// Sandboxes lists every pod sandbox of a control-plane component (labels
// io.kubernetes.pod.namespace=kube-system, component=<component>), oldest
// first.
func (cp *ControlPlane) Sandboxes(ctx context.Context, component string) ([]Pod, error) {
	pods, err := cplane.Sandboxes(ctx, cp.Rig.RT, map[string]string{"component": component})
	for _, p := range pods {
		cp.noteSandbox(p.SandboxID)
	}
	return pods, err
}

// ReadyPod returns the component's one ready sandbox with a running
// container; none or several is an error.
func (cp *ControlPlane) ReadyPod(ctx context.Context, component string) (Pod, error) {
	all, err := cp.Sandboxes(ctx, component)
	if err != nil {
		return Pod{}, err
	}
	p, err := cplane.OneReady(component, all)
	switch {
	case err != nil:
		return Pod{}, err
	case !p.ContainerRunning:
		return Pod{}, fmt.Errorf("%s: sandbox %.13s has no running container", component, p.SandboxID)
	case p.Annotations["kubernetes.io/config.source"] != "file":
		return Pod{}, fmt.Errorf("%s: sandbox %.13s is not a static pod (config.source %q)", component, p.SandboxID, p.Annotations["kubernetes.io/config.source"])
	}
	return p, nil
}

func (cp *ControlPlane) noteSandbox(id string) {
	cp.mu.Lock()
	cp.sandboxes[id] = true
	cp.mu.Unlock()
}

// ---- teardown ----

// teardownPods runs before the rig's own cleanup: it stops the kubelet
// (else it recreates what is removed), records every sandbox, removes
// every pod and keeps containerd's log.
func (cp *ControlPlane) teardownPods() {
	t := cp.t
	start := time.Now()
	cp.restartMu.Lock()
	cp.noRestart = true
	cp.restartMu.Unlock()
	cp.StopKubelet()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ids, err := cp.Rig.ClearPods(ctx, cp.LogDir, "sandboxes-at-teardown.txt")
	if err != nil {
		t.Errorf("e2e: teardown: %v", err)
	}
	for _, id := range append(ids, cp.shimSandboxIDs()...) {
		cp.noteSandbox(id)
	}
	t.Logf("e2e: teardown: kubelet stopped and pods removed in %v", time.Since(start).Round(time.Millisecond))
}

// shimSandboxIDs lists the sandbox IDs of the rig's shims (a pod the CRI
// no longer lists can still have one).
func (cp *ControlPlane) shimSandboxIDs() []string {
	var ids []string
	for _, s := range cp.Rig.Shims() {
		if s.SandboxID != "" {
			ids = append(ids, s.SandboxID)
		}
	}
	return ids
}

// teardownHost runs last, after containerd has gone: it removes what the
// kubelet left on the host, /etc/kubernetes and the interface, restores
// the sysctls the kubelet changed, and fails the test on any leftover.
func (cp *ControlPlane) teardownHost() {
	t := cp.t
	start := time.Now()
	cp.StopKubelet() // in case the rig never started
	for _, d := range cplane.KubepodsCgroups() {
		if err := cplane.RemoveCgroupTree(d, true); err != nil {
			t.Errorf("e2e: teardown: %v", err)
		}
	}
	if err := cplane.RemoveTree(cp.Dir); err != nil {
		t.Errorf("e2e: teardown: %v", err)
	}
	if cp.Rig != nil {
		cp.mu.Lock()
		for id := range cp.sandboxes {
			if err := os.Remove(cp.Rig.ShimSocket(id)); err == nil {
				t.Logf("e2e: teardown: removed leftover shim socket of %.13s", id)
			}
		}
		cp.mu.Unlock()
	}
	for _, p := range cp.created {
		if err := cplane.RemoveTree(p); err != nil {
			t.Errorf("e2e: teardown: %v", err)
		}
	}
	if cp.markerOurs {
		if data, err := os.ReadFile(MarkerFile); err == nil && strings.TrimSpace(string(data)) == fmt.Sprintf("pid=%d", os.Getpid()) {
			if err := os.RemoveAll(KubernetesDir); err != nil {
				t.Errorf("e2e: teardown: %v", err)
			}
		} else {
			t.Errorf("e2e: teardown: %s no longer carries our marker: left alone", KubernetesDir)
		}
	}
	if cp.ifaceOurs {
		if out, err := exec.Command("ip", "link", "del", Interface).CombinedOutput(); err != nil {
			t.Errorf("e2e: teardown: ip link del %s: %v %s", Interface, err, out)
		}
	}
	cp.restoreTunables()
	if left := cp.Leftovers(); len(left) > 0 {
		t.Errorf("e2e: teardown left: %s", strings.Join(left, "; "))
	}
	t.Logf("e2e: teardown (host) in %v", time.Since(start).Round(time.Millisecond))
	if t.Failed() {
		t.Logf("e2e: the logs' ends:\n%s%s", cplane.LogTails(cp.LogDir, 15, "kubelet.log"), cplane.LogTails(cp.LogDir, 5, "pods/*/*/*.log"))
	}
	if dir := cp.setup.KeepLogs(t.Failed()); dir != "" {
		t.Logf("e2e: logs kept in %s", dir)
	}
}

// Leftovers lists whatever of the control plane still exists on the host.
// After the teardown it must be empty.
func (cp *ControlPlane) Leftovers() []string {
	var out []string
	if _, err := os.Lstat(KubernetesDir); err == nil && cp.markerOurs {
		out = append(out, "dir "+KubernetesDir)
	}
	out = append(out, cplane.TreeLeftovers(cp.Dir)...)
	for _, p := range cp.created {
		if _, err := os.Lstat(p); err == nil {
			out = append(out, "path "+p)
		}
	}
	for _, d := range cplane.KubepodsCgroups() {
		out = append(out, "cgroup "+d)
	}
	if cp.ifaceOurs && linkExists(Interface) {
		out = append(out, "interface "+Interface)
	}
	cp.mu.Lock()
	out = append(out, cp.kubelet.Leftover()...)
	cp.mu.Unlock()
	if cp.Rig != nil {
		out = append(out, cp.Rig.Leftovers()...)
	}
	for _, k := range kubeletTunables {
		want, ok := cp.tunables[k]
		if b, err := os.ReadFile("/proc/sys/" + k); ok && err == nil && strings.TrimSpace(string(b)) != want {
			out = append(out, fmt.Sprintf("sysctl %s=%s (was %s)", k, strings.TrimSpace(string(b)), want))
		}
	}
	return out
}
