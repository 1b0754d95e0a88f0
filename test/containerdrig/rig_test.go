package containerdrig_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pkirenewd/pkirenewd/test/containerdrig"
)

// writeCert writes a self-signed serving cert for 127.0.0.1 with a random
// serial to certFile/keyFile (replacing them atomically) and returns the serial.
func writeCert(t *testing.T, certFile, keyFile string) *big.Int {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "kube-scheduler"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for f, b := range map[string][]byte{
		certFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyFile:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	} {
		if err := os.WriteFile(f+".tmp", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f+".tmp", f); err != nil {
			t.Fatal(err)
		}
	}
	return serial
}

// servedSerial GETs url over HTTPS (new connection) and returns the serial of
// the certificate served, if the answer was 200.
func servedSerial(url string) (*big.Int, error) {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // self-signed; the serial is what matters
		DisableKeepAlives: true,
	}}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return resp.TLS.PeerCertificates[0].SerialNumber, nil
}

// waitServing waits until url answers 200 with the given serial.
func waitServing(t *testing.T, url string, want *big.Int) {
	t.Helper()
	var got *big.Int
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got, err = servedSerial(url); err == nil && got.Cmp(want) == 0 {
			return
		}
	}
	t.Fatalf("%s never served serial %v (last: serial %v, %v)", url, want, got, err)
}

// A static pod serving HTTPS is stopped and removed through the CRI like
// pkirenewd does it; the kubelet stand-in recreates it and the new container
// serves the certificate that is on disk now.
func TestStaticPodRecreatedServesNewCert(t *testing.T) {
	r := containerdrig.Start(t)
	pki := filepath.Join(r.Dir, "pki")
	if err := os.MkdirAll(pki, 0o755); err != nil {
		t.Fatal(err)
	}
	crt, key := filepath.Join(pki, "scheduler.crt"), filepath.Join(pki, "scheduler.key")
	serial1 := writeCert(t, crt, key)
	port := containerdrig.FreePort(t)
	url := fmt.Sprintf("https://127.0.0.1:%d/healthz", port)
	pod := containerdrig.StaticPod{Component: "kube-scheduler", Node: "node1", Image: containerdrig.HealthImage,
		Command:   []string{"healthserver"},
		Args:      []string{fmt.Sprintf("--addr=127.0.0.1:%d", port), "--tls-cert-file=" + crt, "--tls-private-key-file=" + key},
		HostPaths: []string{pki}}
	k := r.StartKubelet([]containerdrig.StaticPod{pod}, 500*time.Millisecond, nil)
	waitServing(t, url, serial1)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	list := func() []*runtimeapi.PodSandbox {
		t.Helper()
		resp, err := r.RT.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
			LabelSelector: map[string]string{"io.kubernetes.pod.namespace": "kube-system", "component": "kube-scheduler"}}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Items
	}
	sbs := list()
	if len(sbs) != 1 {
		t.Fatalf("want 1 kube-scheduler sandbox, got %d", len(sbs))
	}
	old := sbs[0]
	want := map[string]string{"io.kubernetes.pod.name": "kube-scheduler-node1", "io.kubernetes.pod.namespace": "kube-system",
		"io.kubernetes.pod.uid": old.Metadata.Uid, "component": "kube-scheduler", "tier": "control-plane"}
	for l, v := range want {
		if old.Labels[l] != v {
			t.Errorf("label %s = %q, want %q", l, old.Labels[l], v)
		}
	}
	if old.Annotations["kubernetes.io/config.source"] != "file" || old.Annotations["kubernetes.io/config.hash"] == "" ||
		old.Annotations["kubernetes.io/config.seen"] == "" {
		t.Errorf("annotations %v", old.Annotations)
	}
	if s := r.ShimSocket(old.Id); !exists(s) {
		t.Errorf("shim socket %s of the running pod not found", s)
	}

	// Renew: the running container keeps serving the certificate it loaded.
	serial2 := writeCert(t, crt, key)
	if got, err := servedSerial(url); err != nil || got.Cmp(serial1) != 0 {
		t.Fatalf("before restart: serial %v, %v; want the old %v", got, err, serial1)
	}

	start := time.Now()
	if _, err := r.RT.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: old.Id}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.RT.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: old.Id}); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	ev, err := k.WaitRecreated(ctx, "kube-scheduler", start)
	if err != nil {
		t.Fatal(err)
	}
	waitServing(t, url, serial2)
	healthy := time.Now()
	t.Logf("StopPodSandbox → removed %v → new pod running %v (stand-in delay 500ms) → serving the new serial %v",
		removed.Sub(start).Round(time.Millisecond), ev.Time.Sub(start).Round(time.Millisecond), healthy.Sub(start).Round(time.Millisecond))

	sbs = list()
	if len(sbs) != 1 || sbs[0].Id != ev.SandboxID || sbs[0].Id == old.Id || sbs[0].Metadata.Attempt != 1 {
		t.Fatalf("after restart: sandboxes %v, want only %s (attempt 1)", sbs, ev.SandboxID)
	}
	if exists(r.ShimSocket(old.Id)) {
		t.Errorf("shim socket of the removed sandbox is still there")
	}
	cts, err := r.RT.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: ev.SandboxID}})
	if err != nil || len(cts.Containers) != 1 || cts.Containers[0].Id != ev.ContainerID ||
		cts.Containers[0].State != runtimeapi.ContainerState_CONTAINER_RUNNING ||
		cts.Containers[0].Labels["io.kubernetes.container.name"] != "kube-scheduler" {
		t.Fatalf("containers of the new sandbox: %v, %v", cts, err)
	}
	if got := k.Sandboxes("kube-scheduler"); len(got) != 2 || got[0] != old.Id || got[1] != ev.SandboxID {
		t.Fatalf("stand-in sandboxes %v", got)
	}
}

// A container whose command fails is still created; the stand-in's
// Override swaps the command in on the recreation.
func TestKubeletOverride(t *testing.T) {
	r := containerdrig.Start(t)
	port := containerdrig.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", port)
	pod := containerdrig.StaticPod{Component: "etcd", Node: "node1", Image: containerdrig.HealthImage,
		Command: []string{"healthserver", fmt.Sprintf("--addr=127.0.0.1:%d", port)}}
	k := r.StartKubelet([]containerdrig.StaticPod{pod}, 0, func(component string, attempt int) *containerdrig.StaticPod {
		p := pod
		p.Args = []string{"--fail"}
		return &p
	})
	get := func() (int, error) {
		c := &http.Client{Timeout: time.Second}
		resp, err := c.Get(url)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	waitStatus := func(want int) {
		t.Helper()
		var code int
		var err error
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if code, err = get(); err == nil && code == want {
				return
			}
		}
		t.Fatalf("%s: want %d, last %d %v", url, want, code, err)
	}
	waitStatus(200)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := k.Sandboxes("etcd")[0]
	start := time.Now()
	if _, err := r.RT.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.RT.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.WaitRecreated(ctx, "etcd", start); err != nil {
		t.Fatal(err)
	}
	waitStatus(500)
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// After a rig is gone nothing of it remains: no containerd or shim, no
// mounts, no shim sockets, no cgroups, no directory.
func TestRigLeavesNothing(t *testing.T) {
	var r *containerdrig.Rig
	var sandboxes []string
	t.Run("rig", func(t *testing.T) {
		r = containerdrig.Start(t)
		port := containerdrig.FreePort(t)
		k := r.StartKubelet([]containerdrig.StaticPod{
			{Component: "etcd", Node: "node1", Image: containerdrig.HealthImage, Command: []string{"healthserver", fmt.Sprintf("--addr=127.0.0.1:%d", port)}},
			{Component: "kube-apiserver", Node: "node1", Image: containerdrig.HealthImage, Command: []string{"healthserver", fmt.Sprintf("--addr=127.0.0.1:%d", containerdrig.FreePort(t))}},
		}, 0, nil)
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
			if err == nil {
				resp.Body.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
		}
		sandboxes = append(k.Sandboxes("etcd"), k.Sandboxes("kube-apiserver")...)
		if len(r.Leftovers()) == 0 {
			t.Fatal("Leftovers reports nothing for a running rig")
		}
	})
	if r == nil {
		t.Fatal("rig did not start")
	}
	if left := r.Leftovers(); len(left) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(left, "\n"))
	}
	// The same, checked without the package's help.
	mounts, _ := os.ReadFile("/proc/mounts")
	if strings.Contains(string(mounts), r.Dir) {
		t.Errorf("mounts left under %s", r.Dir)
	}
	if _, err := os.Stat(r.Dir); !os.IsNotExist(err) {
		t.Errorf("%s left: %v", r.Dir, err)
	}
	if cg, _ := filepath.Glob("/sys/fs/cgroup/*" + r.CgroupParent()); len(cg) > 0 {
		t.Errorf("cgroups left: %v", cg)
	}
	for _, id := range sandboxes {
		if s := r.ShimSocket(id); exists(s) {
			t.Errorf("shim socket left: %s", s)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), r.Dir) {
			t.Errorf("process left: %s %q", p, b)
		}
	}
}
