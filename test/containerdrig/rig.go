// Package containerdrig runs a real containerd (Debian's containerd 1.6 and runc,
// CRI plugin) from its own configuration under a temp dir, imports images
// built locally from static Go binaries (there is no registry), runs pods
// labelled exactly as the kubelet labels static control-plane pods, and
// plays the kubelet's part of recreating a static pod whose sandbox was
// removed. It is test-only: pkirenewd itself reaches the runtime through
// its CRI socket like crictl.
package containerdrig

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PauseImage is the sandbox image, tagged as kubeadm v1.37 expects it so
// containerd never tries to pull.
const PauseImage = "registry.k8s.io/pause:3.10.2"

// Rig is a running containerd.
type Rig struct {
	t      testing.TB
	Dir    string
	sock   string
	cmd    *exec.Cmd
	conn   *grpc.ClientConn
	RT     runtimeapi.RuntimeServiceClient
	cgroup string
	logf   *os.File
	// Bin holds the static binaries the rig built (pause, healthserver).
	Bin string
}

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

// CgroupParent is the cgroup every pod of this rig lives under.
func (r *Rig) CgroupParent() string { return r.cgroup }

// Endpoint is the CRI endpoint, as crictl and pkirenewd take it.
func (r *Rig) Endpoint() string { return "unix://" + r.sock }

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("containerd"); err == nil {
			return
		}
		if os.Getenv("CI") != "" {
			t.Fatal("containerd is not installed (test/containerdrig/ensure-containerd.sh installs it)")
		}
		t.Skip("containerd is not installed (run test/containerdrig/ensure-containerd.sh)")
	}
	if os.Getenv("CI") != "" {
		t.Fatal("the containerd rig needs root")
	}
	t.Skip("the containerd rig needs root")
}

// Start starts containerd and builds and imports the pause and
// healthserver images. Everything is removed again by t.Cleanup.
func Start(t testing.TB) *Rig {
	requireRoot(t)
	// Unix socket paths are limited to 108 bytes: keep the dir short.
	dir, err := os.MkdirTemp("/tmp", "ctrdrig")
	if err != nil {
		t.Fatal(err)
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	r := &Rig{t: t, Dir: dir, sock: filepath.Join(dir, "c.sock"), cgroup: "/ctrdrig-" + hex.EncodeToString(suffix), Bin: filepath.Join(dir, "bin")}
	t.Cleanup(r.stop)
	if err := os.MkdirAll(r.Bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  restrict_oom_score_adj = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), r.sock, r.sock+".ttrpc", PauseImage)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if r.logf, err = os.Create(filepath.Join(dir, "containerd.log")); err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command("containerd", "--config", cfgPath)
	r.cmd.Stdout, r.cmd.Stderr = r.logf, r.logf
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
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
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := r.RT.Version(ctx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			r.fail("containerd did not answer: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.build("pause", "./test/containerdrig/pause")
	r.build("healthserver", "./test/containerdrig/healthserver")
	r.ImportImage(PauseImage, map[string]string{"/pause": filepath.Join(r.Bin, "pause")}, []string{"/pause"})
	r.ImportImage(HealthImage, map[string]string{"/usr/local/bin/healthserver": filepath.Join(r.Bin, "healthserver")}, nil)
	return r
}

// HealthImage runs test/containerdrig/healthserver.
const HealthImage = "pkirenewd.test/healthserver:1"

func (r *Rig) fail(format string, args ...any) {
	r.t.Helper()
	if r.logf != nil {
		if data, err := os.ReadFile(r.logf.Name()); err == nil {
			if len(data) > 4000 {
				data = data[len(data)-4000:]
			}
			r.t.Logf("containerd log (tail):\n%s", data)
		}
	}
	r.t.Fatalf(format, args...)
}

// moduleRoot finds the repository root (where go.mod is).
func moduleRoot() string {
	dir, _ := os.Getwd()
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return dir
}

func (r *Rig) build(name, pkg string) {
	r.t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(r.Bin, name), pkg)
	cmd.Dir = moduleRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		r.t.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
}

// ImportImage builds a single-layer OCI image holding the given files
// (path in image -> host file) and imports it under ref.
func (r *Rig) ImportImage(ref string, files map[string]string, entrypoint []string) {
	r.t.Helper()
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	dirs := map[string]bool{}
	addDir := func(d string, mode int64) {
		if d == "/" || d == "." || dirs[d] {
			return
		}
		dirs[d] = true
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: mode})
	}
	write := func(p string, data []byte, mode int64) {
		var parents []string
		for d := filepath.Dir(p); d != "/" && d != "."; d = filepath.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			addDir(d, 0o755)
		}
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(p, "/"), Mode: mode, Size: int64(len(data))})
		_, _ = tw.Write(data)
	}
	addDir("/tmp", 0o1777)
	write("/etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"), 0o644)
	write("/etc/group", []byte("root:x:0:\nnogroup:x:65534:\n"), 0o644)
	write("/etc/nsswitch.conf", []byte("hosts: files dns\n"), 0o644)
	for p, host := range files {
		data, err := os.ReadFile(host)
		if err != nil {
			r.t.Fatal(err)
		}
		write(p, data, 0o755)
	}
	if err := tw.Close(); err != nil {
		r.t.Fatal(err)
	}
	blobs := map[string][]byte{}
	put := func(b []byte) (string, int) {
		d := sha256.Sum256(b)
		h := hex.EncodeToString(d[:])
		blobs[h] = b
		return "sha256:" + h, len(b)
	}
	layerDigest, layerSize := put(layer.Bytes())
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{
			"Env":        []string{"PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"},
			"Entrypoint": entrypoint,
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	cfgDigest, cfgSize := put(cfg)
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfgDigest, "size": cfgSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layerSize}},
	})
	mDigest, mSize := put(manifest)
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mDigest, "size": mSize,
			"platform":    map[string]string{"architecture": "amd64", "os": "linux"},
			"annotations": map[string]string{"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref},
		}},
	})
	var archive bytes.Buffer
	aw := tar.NewWriter(&archive)
	add := func(name string, data []byte) {
		_ = aw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		_, _ = aw.Write(data)
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", index)
	for h, b := range blobs {
		add("blobs/sha256/"+h, b)
	}
	if err := aw.Close(); err != nil {
		r.t.Fatal(err)
	}
	tarPath := filepath.Join(r.Dir, strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".tar")
	if err := os.WriteFile(tarPath, archive.Bytes(), 0o600); err != nil {
		r.t.Fatal(err)
	}
	if out, err := exec.Command("ctr", "-a", r.sock, "-n", "k8s.io", "images", "import", "--platform", "linux/amd64", tarPath).CombinedOutput(); err != nil {
		r.fail("ctr import %s: %v\n%s", ref, err, out)
	}
}

// StaticPod is a control-plane static pod as the kubelet runs it.
type StaticPod struct {
	Component string
	Node      string
	Image     string
	Command   []string
	// HostPaths are mounted read-only at the same path.
	HostPaths []string
}

// RunStaticPod creates and starts a pod sandbox and its container the way
// the kubelet does for a static pod.
func (r *Rig) RunStaticPod(ctx context.Context, p StaticPod, attempt uint32) (string, error) {
	uid := make([]byte, 8)
	_, _ = rand.Read(uid)
	name := p.Component + "-" + p.Node
	labels := map[string]string{
		"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": "kube-system",
		"io.kubernetes.pod.uid": hex.EncodeToString(uid), "component": p.Component, "tier": "control-plane",
	}
	sbCfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "kube-system", Uid: hex.EncodeToString(uid), Attempt: attempt},
		Labels:   labels,
		Annotations: map[string]string{
			"kubernetes.io/config.source": "file", "kubernetes.io/config.seen": time.Now().UTC().Format(time.RFC3339Nano),
			"kubernetes.io/config.hash": hex.EncodeToString(uid[:4]),
		},
		LogDirectory: filepath.Join(r.Dir, "logs", name+"-"+hex.EncodeToString(uid[:4])),
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: r.cgroup,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
			},
		},
	}
	if err := os.MkdirAll(sbCfg.LogDirectory, 0o755); err != nil {
		return "", err
	}
	sb, err := r.RT.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
	if err != nil {
		return "", fmt.Errorf("RunPodSandbox %s: %w", name, err)
	}
	var mounts []*runtimeapi.Mount
	for _, h := range p.HostPaths {
		mounts = append(mounts, &runtimeapi.Mount{HostPath: h, ContainerPath: h, Readonly: true})
	}
	ct, err := r.RT.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: sb.PodSandboxId,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: p.Component, Attempt: attempt},
			Image:    &runtimeapi.ImageSpec{Image: p.Image},
			Command:  p.Command,
			Labels: map[string]string{
				"io.kubernetes.container.name": p.Component, "io.kubernetes.pod.name": name,
				"io.kubernetes.pod.namespace": "kube-system", "io.kubernetes.pod.uid": hex.EncodeToString(uid),
			},
			LogPath: p.Component + ".log",
			Mounts:  mounts,
			Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
			}},
		},
		SandboxConfig: sbCfg,
	})
	if err != nil {
		return sb.PodSandboxId, fmt.Errorf("CreateContainer %s: %w", name, err)
	}
	if _, err := r.RT.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ct.ContainerId}); err != nil {
		return sb.PodSandboxId, fmt.Errorf("StartContainer %s: %w", name, err)
	}
	return sb.PodSandboxId, nil
}

// Kubelet recreates static pods whose sandbox is gone or not ready, like
// the kubelet's pod workers do for a static pod whose manifest is still in
// place.
type Kubelet struct {
	r      *Rig
	pods   []StaticPod
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	// Created records every sandbox the stand-in made, per component,
	// and CreatedAt when.
	Created   map[string][]string
	CreatedAt map[string][]time.Time
	// Override, when set, may replace the pod for a recreation (attempt
	// counts from 1) — e.g. to make a component fail after its restart.
	Override func(component string, attempt int) *StaticPod
	// Delay mimics the kubelet's 0.4-1.3 s reaction.
	Delay time.Duration
}

// StartKubelet runs the pods and keeps them running until Stop.
func (r *Rig) StartKubelet(pods []StaticPod, delay time.Duration, override func(string, int) *StaticPod) *Kubelet {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	k := &Kubelet{r: r, pods: pods, cancel: cancel, done: make(chan struct{}), Created: map[string][]string{}, CreatedAt: map[string][]time.Time{}, Override: override, Delay: delay}
	for _, p := range pods {
		id, err := r.RunStaticPod(ctx, p, 0)
		if err != nil {
			cancel()
			r.fail("%v", err)
		}
		k.Created[p.Component] = append(k.Created[p.Component], id)
		k.CreatedAt[p.Component] = append(k.CreatedAt[p.Component], time.Now())
	}
	go k.loop(ctx)
	r.t.Cleanup(k.Stop)
	return k
}

func (k *Kubelet) loop(ctx context.Context) {
	defer close(k.done)
	missingSince := map[string]time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		for _, p := range k.pods {
			resp, err := k.r.RT.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
				LabelSelector: map[string]string{"component": p.Component, "io.kubernetes.pod.namespace": "kube-system"},
				State:         &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
			}})
			if err != nil || len(resp.Items) > 0 {
				delete(missingSince, p.Component)
				continue
			}
			since, ok := missingSince[p.Component]
			if !ok {
				missingSince[p.Component] = time.Now()
				continue
			}
			if time.Since(since) < k.Delay {
				continue
			}
			delete(missingSince, p.Component)
			k.mu.Lock()
			attempt := len(k.Created[p.Component])
			k.mu.Unlock()
			pod := p
			if k.Override != nil {
				if o := k.Override(p.Component, attempt); o != nil {
					pod = *o
				}
			}
			id, err := k.r.RunStaticPod(ctx, pod, uint32(attempt))
			if id != "" {
				k.mu.Lock()
				k.Created[p.Component] = append(k.Created[p.Component], id)
				k.CreatedAt[p.Component] = append(k.CreatedAt[p.Component], time.Now())
				k.mu.Unlock()
			}
			if err != nil && ctx.Err() == nil {
				k.r.t.Logf("kubelet stand-in: %v", err)
			}
		}
	}
}

// Sandboxes returns the sandboxes created for a component so far.
func (k *Kubelet) Sandboxes(component string) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string{}, k.Created[component]...)
}

// CreationTimes returns when the component's sandboxes were created.
func (k *Kubelet) CreationTimes(component string) []time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]time.Time{}, k.CreatedAt[component]...)
}

// Stop stops recreating pods.
func (k *Kubelet) Stop() {
	k.cancel()
	<-k.done
}

// stop removes every pod, stops containerd and removes what it left.
func (r *Rig) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if r.RT != nil {
		for i := 0; i < 5; i++ {
			resp, err := r.RT.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
			if err != nil || len(resp.Items) == 0 {
				break
			}
			for _, sb := range resp.Items {
				_, _ = r.RT.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id})
				_, _ = r.RT.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id})
			}
		}
	}
	if r.conn != nil {
		r.conn.Close()
	}
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = r.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = r.cmd.Process.Kill()
			<-done
		}
	}
	if r.t.Failed() && r.logf != nil {
		if data, err := os.ReadFile(r.logf.Name()); err == nil {
			if len(data) > 3000 {
				data = data[len(data)-3000:]
			}
			r.t.Logf("containerd log (tail):\n%s", data)
		}
	}
	if r.logf != nil {
		r.logf.Close()
	}
	// Mounts left under the rig dir (snapshots, shm), deepest first.
	if data, err := os.ReadFile("/proc/self/mounts"); err == nil {
		var ms []string
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) > 1 && strings.HasPrefix(f[1], r.Dir+"/") {
				ms = append(ms, f[1])
			}
		}
		for i := len(ms) - 1; i >= 0; i-- {
			_ = exec.Command("umount", "-l", ms[i]).Run()
		}
	}
	removeCgroups(r.cgroup)
	_ = os.RemoveAll(r.Dir)
}

// removeCgroups removes the rig's cgroup parent in every hierarchy,
// depth-first (cgroup directories must be removed leaf to root).
func removeCgroups(parent string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	for _, root := range roots {
		base := filepath.Join(root, parent)
		if _, err := os.Stat(base); err != nil {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = os.Remove(dirs[i])
		}
	}
}
