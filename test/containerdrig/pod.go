package containerdrig

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// StaticPod is a control-plane static pod as the kubelet runs it: one
// container named after the component, host network, in kube-system.
type StaticPod struct {
	Component string // e.g. "kube-scheduler": label component, container name
	Node      string // pod name is "<Component>-<Node>"
	Image     string // fully qualified, e.g. HealthImage
	Command   []string
	Args      []string
	// HostPaths are mounted read-only at the same path.
	HostPaths []string
	// WritableHostPaths are mounted read-write at the same path (e.g.
	// etcd's data dir).
	WritableHostPaths []string
	// Annotations are added to the sandbox's (e.g. kubeadm's
	// kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint).
	Annotations map[string]string
}

// RunStaticPod creates and starts a pod sandbox and its container the way
// the kubelet does for a static pod, and returns the sandbox ID. Sandbox
// labels: io.kubernetes.pod.{name,namespace,uid}, component, tier=control-plane;
// annotations kubernetes.io/config.{source=file,seen,hash}. The pod UID is
// random, the cgroup parent the rig's. If the container cannot be created or
// started, the sandbox is removed again and the error returned.
func (r *Rig) RunStaticPod(ctx context.Context, p StaticPod, attempt uint32) (string, error) {
	sb, _, err := r.runStaticPod(ctx, p, attempt)
	return sb, err
}

func (r *Rig) runStaticPod(ctx context.Context, p StaticPod, attempt uint32) (sandboxID, containerID string, err error) {
	uidb := make([]byte, 16)
	_, _ = rand.Read(uidb)
	uid := hex.EncodeToString(uidb)
	name := p.Component + "-" + p.Node
	labels := map[string]string{
		"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": "kube-system",
		"io.kubernetes.pod.uid": uid, "component": p.Component, "tier": "control-plane",
	}
	annotations := map[string]string{}
	for k, v := range p.Annotations {
		annotations[k] = v
	}
	annotations["kubernetes.io/config.source"] = "file"
	annotations["kubernetes.io/config.seen"] = time.Now().UTC().Format(time.RFC3339Nano)
	annotations["kubernetes.io/config.hash"] = uid
	ns := &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD}
	sbCfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "kube-system", Uid: uid, Attempt: attempt},
		Labels:       labels,
		Annotations:  annotations,
		LogDirectory: filepath.Join(r.Dir, "logs", "kube-system_"+name+"_"+uid),
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent:    r.cgroup,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: ns},
		},
	}
	if err := os.MkdirAll(sbCfg.LogDirectory, 0o755); err != nil {
		return "", "", err
	}
	sb, err := r.RT.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
	if err != nil {
		return "", "", fmt.Errorf("RunPodSandbox %s: %w", name, err)
	}
	r.noteSandbox(sb.PodSandboxId)
	var mounts []*runtimeapi.Mount
	for _, h := range p.HostPaths {
		mounts = append(mounts, &runtimeapi.Mount{HostPath: h, ContainerPath: h, Readonly: true})
	}
	for _, h := range p.WritableHostPaths {
		mounts = append(mounts, &runtimeapi.Mount{HostPath: h, ContainerPath: h})
	}
	ct, err := r.RT.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: sb.PodSandboxId,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: p.Component},
			Image:    &runtimeapi.ImageSpec{Image: p.Image},
			Command:  p.Command,
			Args:     p.Args,
			Labels: map[string]string{
				"io.kubernetes.container.name": p.Component, "io.kubernetes.pod.name": name,
				"io.kubernetes.pod.namespace": "kube-system", "io.kubernetes.pod.uid": uid,
			},
			Annotations: map[string]string{
				"io.kubernetes.container.restartCount":             "0",
				"io.kubernetes.container.terminationMessagePath":   "/dev/termination-log",
				"io.kubernetes.container.terminationMessagePolicy": "File",
				"io.kubernetes.pod.terminationGracePeriod":         "30",
			},
			LogPath: filepath.Join(p.Component, "0.log"), // <container>/<restartCount>.log, as the kubelet
			Mounts:  mounts,
			Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				NamespaceOptions: ns,
			}},
		},
		SandboxConfig: sbCfg,
	})
	if err == nil {
		_, err = r.RT.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ct.ContainerId})
		if err != nil {
			err = fmt.Errorf("StartContainer %s: %w", name, err)
		}
	} else {
		err = fmt.Errorf("CreateContainer %s: %w", name, err)
	}
	if err != nil {
		// Leave no READY sandbox without its container behind (a kubelet
		// stand-in would never recreate it).
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = r.RT.StopPodSandbox(cctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.PodSandboxId})
		_, _ = r.RT.RemovePodSandbox(cctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.PodSandboxId})
		return "", "", err
	}
	return sb.PodSandboxId, ct.ContainerId, nil
}

// KubeletEvent is one pod creation by the kubelet stand-in.
type KubeletEvent struct {
	Component   string
	Attempt     int       // 0 for the first creation, then 1, 2, ...
	Noticed     time.Time // when no READY sandbox was first seen (zero for the first creation)
	Time        time.Time // when the pod was running (or the creation failed)
	SandboxID   string    // empty when Err is set
	ContainerID string
	Err         error
}

// Kubelet recreates static pods whose sandbox is gone or not ready, like
// the kubelet's pod workers do for a static pod whose manifest is still in
// place. It does not restart exited containers (no CrashLoopBackOff either).
type Kubelet struct {
	r      *Rig
	pods   []StaticPod
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	// Created records every sandbox the stand-in made, per component,
	// and CreatedAt when (read them through Sandboxes and CreationTimes).
	Created   map[string][]string
	CreatedAt map[string][]time.Time
	events    []KubeletEvent
	// Override, when set, may replace the pod for a recreation (attempt
	// counts from 1) — e.g. to make a component fail after its restart.
	Override func(component string, attempt int) *StaticPod
	// Delay mimics the kubelet's 0.4-1.3 s reaction: a pod is recreated
	// once it has had no READY sandbox for this long.
	Delay time.Duration
	// healthz answers as the kubelet's does while the stand-in runs; it
	// is closed (connection refused) once it stops.
	healthz *http.Server
	addr    string
}

// StartKubelet runs the pods (attempt 0; the test fails if one cannot
// start) and then, every 100 ms until Stop or the end of the test, recreates
// any that has no READY sandbox left (labels component=<Component> and
// io.kubernetes.pod.name=<Component>-<Node> in kube-system, so one
// containerd can hold the pods of several nodes, with one stand-in per
// node), after delay. override may be nil.
func (r *Rig) StartKubelet(pods []StaticPod, delay time.Duration, override func(component string, attempt int) *StaticPod) *Kubelet {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	k := &Kubelet{r: r, pods: pods, cancel: cancel, done: make(chan struct{}), Created: map[string][]string{},
		CreatedAt: map[string][]time.Time{}, Override: override, Delay: delay}
	for _, p := range pods {
		sb, ct, err := r.runStaticPod(ctx, p, 0)
		if err != nil {
			cancel()
			close(k.done)
			r.fail("%v", err)
		}
		k.record(KubeletEvent{Component: p.Component, Time: time.Now(), SandboxID: sb, ContainerID: ct})
	}
	k.serveHealthz()
	go k.loop(ctx)
	r.t.Cleanup(k.Stop)
	return k
}

// serveHealthz answers /healthz on a loopback port of its own, as the
// kubelet does on 127.0.0.1:10248: pkirenewd stops no pod unless it
// answers.
func (k *Kubelet) serveHealthz() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		k.r.fail("kubelet stand-in healthz: %v", err)
	}
	k.addr = ln.Addr().String()
	k.healthz = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })}
	go func() { _ = k.healthz.Serve(ln) }()
}

// WriteConfig writes a KubeletConfiguration that names the stand-in's
// healthz (for pkirenewd's --kubelet-config) into dir and returns its
// path.
func (k *Kubelet) WriteConfig(dir string) string {
	host, port, _ := net.SplitHostPort(k.addr)
	p := filepath.Join(dir, "kubelet-config.yaml")
	cfg := "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nhealthzBindAddress: " + host + "\nhealthzPort: " + port + "\n"
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		k.r.fail("kubelet stand-in config: %v", err)
	}
	return p
}

func (k *Kubelet) record(e KubeletEvent) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.events = append(k.events, e)
	if e.SandboxID != "" {
		k.Created[e.Component] = append(k.Created[e.Component], e.SandboxID)
		k.CreatedAt[e.Component] = append(k.CreatedAt[e.Component], e.Time)
	}
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
				LabelSelector: map[string]string{"component": p.Component, "io.kubernetes.pod.namespace": "kube-system",
					"io.kubernetes.pod.name": p.Component + "-" + p.Node},
				State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
			}})
			if err != nil || len(resp.Items) > 0 {
				delete(missingSince, p.Component)
				continue
			}
			since, ok := missingSince[p.Component]
			if !ok {
				since = time.Now()
				missingSince[p.Component] = since
			}
			if time.Since(since) < k.Delay {
				continue
			}
			k.mu.Lock()
			attempt := len(k.Created[p.Component])
			k.mu.Unlock()
			pod := p
			if k.Override != nil {
				if o := k.Override(p.Component, attempt); o != nil {
					pod = *o
				}
			}
			sb, ct, err := k.r.runStaticPod(ctx, pod, uint32(attempt))
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				delete(missingSince, p.Component)
			} else {
				k.r.t.Logf("kubelet stand-in: %v (retrying)", err)
			}
			k.record(KubeletEvent{Component: p.Component, Attempt: attempt, Noticed: since, Time: time.Now(),
				SandboxID: sb, ContainerID: ct, Err: err})
		}
	}
}

// Sandboxes returns the sandboxes created for a component so far, oldest
// first.
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

// Events returns every creation (and failed creation) so far, in order.
func (k *Kubelet) Events() []KubeletEvent {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]KubeletEvent{}, k.events...)
}

// WaitRecreated waits until the stand-in has created a sandbox for
// component after the given time, and returns that event.
func (k *Kubelet) WaitRecreated(ctx context.Context, component string, after time.Time) (KubeletEvent, error) {
	for {
		for _, e := range k.Events() {
			if e.Component == component && e.Err == nil && e.Time.After(after) {
				return e, nil
			}
		}
		select {
		case <-ctx.Done():
			return KubeletEvent{}, fmt.Errorf("no new %s sandbox: %w", component, ctx.Err())
		case <-k.done:
			return KubeletEvent{}, fmt.Errorf("no new %s sandbox: kubelet stand-in stopped", component)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop stops recreating pods (the pods keep running). It is idempotent
// and also runs at the end of the test.
func (k *Kubelet) Stop() {
	k.once.Do(func() {
		k.cancel()
		_ = k.healthz.Close()
	})
	<-k.done
}
