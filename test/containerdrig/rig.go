// Package containerdrig runs a real containerd (Debian's containerd 1.6 and runc,
// CRI plugin) from its own configuration under a temp dir, imports images
// built locally from static Go binaries (there is no registry), runs pods
// labelled exactly as the kubelet labels static control-plane pods, and
// plays the kubelet's part of recreating a static pod whose sandbox was
// removed. It is test-only: pkirenewd itself reaches the runtime through
// its CRI socket like crictl.
//
// Start needs root and containerd, ctr and runc on PATH
// (test/containerdrig/ensure-containerd.sh installs them). Without them the test
// is skipped, or fails when the CI environment variable is set. Only
// hostNetwork pods are supported (no CNI); control-plane pods are
// hostNetwork anyway.
package containerdrig

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pkirenewd/pkirenewd/test/cplane"
)

// PauseImage is the sandbox image, tagged as kubeadm v1.37 expects it so
// containerd never tries to pull.
const PauseImage = "registry.k8s.io/pause:3.10.2"

// HealthImage runs test/containerdrig/healthserver (at /usr/local/bin/healthserver).
const HealthImage = "pkirenewd.test/healthserver:1"

// criNamespace is the containerd namespace of the CRI plugin.
const criNamespace = "k8s.io"

// shimSocketDir is where containerd 1.6 shims put their sockets, whatever
// the configured state dir.
const shimSocketDir = "/run/containerd/s"

// Rig is a running containerd.
type Rig struct {
	t testing.TB
	// Dir is the rig's temp dir: containerd's root and state, its socket
	// and log, pod logs, and the built binaries.
	Dir string
	// RT is a CRI runtime client connected to the rig.
	RT runtimeapi.RuntimeServiceClient
	// Bin holds the static binaries the rig built (pause, healthserver).
	Bin string

	sock        string
	cmd         *exec.Cmd
	exited      chan struct{}
	conn        *grpc.ClientConn
	cgroup      string // "/ctrdrig-<random>": cgroup parent of every pod
	snapshotter string

	mu        sync.Mutex
	sandboxes map[string]bool // every sandbox ID seen, for shim sockets
}

// Endpoint is the CRI endpoint, "unix:///tmp/ctrdrigNNN/c.sock", as crictl
// and pkirenewd take it.
func (r *Rig) Endpoint() string { return "unix://" + r.sock }

// Socket is the path of containerd's GRPC socket (ctr -a takes it).
func (r *Rig) Socket() string { return r.sock }

// FreePort returns a loopback TCP port nobody listens on now, so tests on
// a shared machine do not collide on fixed ports.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// CgroupParent is the cgroup (in every hierarchy) under which the rig's pods
// run, "/ctrdrig-<random>".
func (r *Rig) CgroupParent() string { return r.cgroup }

// ContainerdLog is the path of containerd's log file.
func (r *Rig) ContainerdLog() string { return filepath.Join(r.Dir, "containerd.log") }

// RequireHost skips the test (fails it under CI, where everything must
// run) unless it runs as root with containerd, ctr, runc and the runc shim
// installed, and the extra binaries too; who names the rig in the message.
func RequireHost(t testing.TB, who string, extra ...string) {
	t.Helper()
	skip := t.Skip
	if os.Getenv("CI") != "" {
		skip = t.Fatal
	}
	if os.Geteuid() != 0 {
		skip(who + " needs root")
	}
	for _, b := range append([]string{"containerd", "ctr", "runc", "containerd-shim-runc-v2"}, extra...) {
		if _, err := exec.LookPath(b); err != nil {
			skip(b + " is not installed (test/containerdrig/ensure-containerd.sh installs containerd and runc; `make containerd`)")
		}
	}
}

// Start starts containerd and builds and imports the pause image
// (PauseImage) and the healthserver image (HealthImage). A t.Cleanup stops
// and removes every pod, stops containerd and removes what it left: shim
// sockets of its sandboxes, its cgroups, mounts under Dir, Dir itself. When
// the test failed, the cleanup logs the tail of the containerd log and of
// each container log.
func Start(t testing.TB) *Rig {
	t.Helper()
	RequireHost(t, "the containerd rig")
	t0 := time.Now()
	// Unix socket paths are limited to 108 bytes: keep the dir short
	// (t.TempDir() paths are too long).
	dir, err := os.MkdirTemp("/tmp", "ctrdrig")
	if err != nil {
		t.Fatal(err)
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	r := &Rig{t: t, Dir: dir, sock: filepath.Join(dir, "c.sock"), cgroup: "/ctrdrig-" + hex.EncodeToString(suffix),
		Bin: filepath.Join(dir, "bin"), exited: make(chan struct{}), sandboxes: map[string]bool{}}
	t.Cleanup(r.stop)
	for _, d := range []string{r.Bin, "root", "state", "opt", "runc", "cni/bin", "cni/net.d", "logs"} {
		if !filepath.IsAbs(d) {
			d = filepath.Join(dir, d)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r.snapshotter = "overlayfs"
	if err := checkOverlay(dir); err != nil {
		t.Logf("containerdrig: overlay mounts fail here (%v): using the native snapshotter", err)
		r.snapshotter = "native"
	}
	// runc's state goes under Dir too (Root), and CNI config is looked
	// for there (none: hostNetwork only), so nothing of the host's is used.
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[7]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  restrict_oom_score_adj = true
  enable_cdi = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[8]q
    conf_dir = %[9]q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = %[6]q
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %[10]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), r.sock, r.sock+".ttrpc", PauseImage, r.snapshotter,
		filepath.Join(dir, "opt"), filepath.Join(dir, "cni/bin"), filepath.Join(dir, "cni/net.d"), filepath.Join(dir, "runc"))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(r.ContainerdLog())
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	r.cmd = exec.Command("containerd", "--config", cfgPath)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	// containerd dies with the test binary if that is killed; shims
	// outlive it by design (cleanup handles them).
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true} // Ctrl-C of the test must not stop it before the pods are removed
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = r.cmd.Wait(); close(r.exited) }()
	r.conn, err = grpc.NewClient("passthrough:///"+r.sock,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", r.sock)
		}))
	if err != nil {
		t.Fatal(err)
	}
	r.RT = runtimeapi.NewRuntimeServiceClient(r.conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-r.exited:
			r.fail("containerd exited at startup: %v", r.cmd.ProcessState)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := r.RT.Version(ctx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			r.fail("containerd did not answer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	tUp := time.Now()
	r.build()
	tBuilt := time.Now()
	r.ImportImage(PauseImage, map[string]string{"/pause": filepath.Join(r.Bin, "pause")}, []string{"/pause"})
	r.ImportImage(HealthImage, map[string]string{"/usr/local/bin/healthserver": filepath.Join(r.Bin, "healthserver")}, nil)
	t.Logf("containerdrig: %s: containerd up in %v, binaries built in %v, images imported in %v (snapshotter %s)",
		dir, tUp.Sub(t0).Round(time.Millisecond), tBuilt.Sub(tUp).Round(time.Millisecond),
		time.Since(tBuilt).Round(time.Millisecond), r.snapshotter)
	return r
}

// checkOverlay tries an overlay mount inside dir, as the overlayfs
// snapshotter would make.
func checkOverlay(dir string) error {
	base := filepath.Join(dir, "overlay-check")
	defer os.RemoveAll(base)
	var ds []string
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		p := filepath.Join(base, d)
		if err := os.MkdirAll(p, 0o700); err != nil {
			return err
		}
		ds = append(ds, p)
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", ds[0], ds[1], ds[2])
	if err := syscall.Mount("overlay", ds[3], "overlay", 0, opts); err != nil {
		return err
	}
	return syscall.Unmount(ds[3], 0)
}

func (r *Rig) fail(format string, args ...any) {
	r.t.Helper()
	r.t.Logf("containerd log (tail):\n%s", cplane.Tail(r.ContainerdLog(), 40))
	r.t.Fatalf(format, args...)
}

// build builds the static pause and healthserver binaries into Bin.
func (r *Rig) build() {
	r.t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", r.Bin+"/",
		"./test/containerdrig/pause", "./test/containerdrig/healthserver")
	cmd.Dir = cplane.ModuleRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		r.t.Fatalf("containerdrig: build pause, healthserver: %v\n%s", err, out)
	}
}

func (r *Rig) noteSandbox(id string) {
	r.mu.Lock()
	r.sandboxes[id] = true
	r.mu.Unlock()
}

// RemoveAllPods stops and removes every pod sandbox, retrying for a few
// seconds: a removal right after a stop can race with a container start.
func (r *Rig) RemoveAllPods(ctx context.Context) error {
	var last error
	for i := 0; i < 20; i++ {
		resp, err := r.RT.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		switch {
		case err != nil:
			last = err
		case len(resp.Items) == 0:
			return nil
		default:
			last = fmt.Errorf("%d sandboxes left", len(resp.Items))
			for _, sb := range resp.Items {
				r.noteSandbox(sb.Id)
				if _, err := r.RT.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
					last = fmt.Errorf("stop %s: %w", sb.Id, err)
				}
				if _, err := r.RT.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
					last = fmt.Errorf("remove %s: %w", sb.Id, err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("containerdrig: removing pods: %w", last)
}

// ClearPods is a rig user's pod teardown, once its kubelet no longer
// recreates pods: it writes the sandboxes there are to logDir/list (see
// cplane.WriteSandboxes), removes every pod and copies containerd's log to
// logDir/containerd.log. It returns the IDs it listed.
func (r *Rig) ClearPods(ctx context.Context, logDir, list string) ([]string, error) {
	ids, _ := cplane.WriteSandboxes(ctx, r.RT, filepath.Join(logDir, list))
	err := r.RemoveAllPods(ctx)
	cplane.CopyFile(r.ContainerdLog(), filepath.Join(logDir, "containerd.log"))
	return ids, err
}

// stop removes every pod, stops containerd and removes what it left. Kubelet
// stand-ins have stopped before (their cleanups were registered later).
func (r *Rig) stop() {
	t := r.t
	if t.Failed() {
		t.Logf("containerdrig: containerd log (tail):\n%s", cplane.Tail(r.ContainerdLog(), 60))
		logs, _ := filepath.Glob(filepath.Join(r.Dir, "logs", "*", "*", "*.log"))
		for _, l := range logs {
			t.Logf("containerdrig: container log %s (tail):\n%s", l, cplane.Tail(l, 15))
		}
	}
	running := r.cmd != nil && r.cmd.Process != nil
	if running {
		select {
		case <-r.exited:
			running = false
			t.Errorf("containerdrig: containerd had exited: %v", r.cmd.ProcessState)
		default:
		}
	}
	if running && r.RT != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := r.RemoveAllPods(ctx); err != nil {
			t.Errorf("containerdrig: cleanup: %v", err)
		}
		cancel()
	}
	if r.conn != nil {
		r.conn.Close()
	}
	if running {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(10 * time.Second):
			_ = r.cmd.Process.Kill()
			<-r.exited
		}
	}
	// Normally nothing below finds anything: it is for pods that could
	// not be removed (or a containerd that died).
	r.killShims()
	r.removeCgroups()
	r.removeShimSockets()
	if err := cplane.RemoveTree(r.Dir); err != nil {
		t.Errorf("containerdrig: cleanup: %v", err)
	}
}

// killShims kills the containerd-shim processes serving this rig's
// containerd (they carry "-address <socket>").
func (r *Rig) killShims() {
	for _, pid := range r.shimPIDs() {
		r.t.Logf("containerdrig: cleanup: killing leftover shim %d", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func (r *Rig) shimPIDs() []int {
	var pids []int
	for _, s := range r.Shims() {
		pids = append(pids, s.PID)
	}
	return pids
}

// Shim is a containerd-shim process serving the rig's containerd.
type Shim struct {
	PID int
	// SandboxID is the pod sandbox it serves (its -id; "" if none).
	SandboxID string
}

// Shims lists the containerd-shim processes serving this rig's
// containerd, read from their command lines (… -id <sandbox ID> -address
// <the rig's socket>): a shim outlives a containerd that died.
func (r *Rig) Shims() []Shim {
	var out []Shim
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		var id, addr string
		for i := 0; i+1 < len(args); i++ {
			switch args[i] {
			case "-id":
				id = args[i+1]
			case "-address":
				addr = args[i+1]
			}
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil && addr == r.sock {
			out = append(out, Shim{PID: pid, SandboxID: id})
		}
	}
	return out
}

// cgroupDirs lists the rig's cgroup parent in every mounted hierarchy.
func (r *Rig) cgroupDirs() []string {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	var out []string
	for _, root := range roots {
		d := filepath.Join(root, r.cgroup)
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			out = append(out, d)
		}
	}
	return out
}

// removeCgroups removes the rig's cgroup parent in every hierarchy,
// depth-first (cgroup dirs must be removed leaf to root), killing any
// process still in one.
func (r *Rig) removeCgroups() {
	for _, base := range r.cgroupDirs() {
		if err := cplane.RemoveCgroupTree(base, true); err != nil {
			r.t.Errorf("containerdrig: cleanup: %v", err)
		}
	}
}

// ShimSocket is the socket containerd 1.6 gives the shim of a pod sandbox:
// /run/containerd/s/<sha256 of "<containerd address>/k8s.io/<sandbox ID>">.
// It is the same for every container of the pod.
func (r *Rig) ShimSocket(sandboxID string) string {
	d := sha256.Sum256([]byte(filepath.Join(r.sock, criNamespace, sandboxID)))
	return filepath.Join(shimSocketDir, hex.EncodeToString(d[:]))
}

// removeShimSockets removes leftover shim sockets of the sandboxes the rig
// saw. The names hash the rig's own socket path, so no other containerd's
// sockets are touched.
func (r *Rig) removeShimSockets() {
	for _, s := range r.shimSockets() {
		if err := os.Remove(s); err == nil {
			r.t.Logf("containerdrig: cleanup: removed leftover shim socket %s", s)
		}
	}
}

func (r *Rig) shimSockets() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id := range r.sandboxes {
		if s := r.ShimSocket(id); exists(s) {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// Leftovers lists whatever of the rig still exists: mounts under Dir, Dir
// itself, shim sockets of its sandboxes, its cgroups, its containerd or
// shim processes. After the rig's cleanup it should be empty; a test checks
// that from a t.Cleanup registered before Start (cleanups run last-in
// first-out) or after the subtest that started the rig.
func (r *Rig) Leftovers() []string {
	var out []string
	for _, m := range cplane.MountsUnder(r.Dir) {
		out = append(out, "mount "+m)
	}
	if exists(r.Dir) {
		out = append(out, "dir "+r.Dir)
	}
	for _, s := range r.shimSockets() {
		out = append(out, "shim socket "+s)
	}
	for _, d := range r.cgroupDirs() {
		out = append(out, "cgroup "+d)
	}
	for _, pid := range r.shimPIDs() {
		out = append(out, fmt.Sprintf("shim process %d", pid))
	}
	if r.cmd != nil && r.cmd.Process != nil {
		select {
		case <-r.exited:
		default:
			out = append(out, fmt.Sprintf("containerd process %d", r.cmd.Process.Pid))
		}
	}
	return out
}
