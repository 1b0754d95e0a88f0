//go:build e2e

package ha_test

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/test/ha"
)

// The rig comes up as three healthy members behind one apiserver that
// every node's admin.conf can use, and the health sampler sees exactly the
// member whose pod is stopped go down and come back once the node's
// stand-in kubelet has recreated it.
func TestHAClusterUp(t *testing.T) {
	c := ha.Start(t, ha.Options{Validity: 2 * time.Hour})
	ctx := c.Context()
	t.Logf("bring-up: %v", c.BringUp.Round(time.Millisecond))

	// Files: each node's own, with its IP in the etcd certificates.
	for _, n := range c.Nodes {
		ms, err := os.ReadDir(n.ManifestsDir())
		if err != nil || len(ms) != 1 || ms[0].Name() != "etcd.yaml" {
			t.Errorf("%s: manifests dir holds %v (%v), want only etcd.yaml", n.NodeName(), ms, err)
		}
		for _, f := range []string{"etcd/server.crt", "etcd/peer.crt"} {
			cert := readCert(t, filepath.Join(n.PKIDir(), f))
			if !hasIP(cert, n.IP()) {
				t.Errorf("%s: %s lacks %s: %v", n.NodeName(), f, n.IP(), cert.IPAddresses)
			}
			if got := cert.NotAfter.Sub(cert.NotBefore); got > 2*time.Hour+10*time.Minute {
				t.Errorf("%s: %s is valid for %v, want about 2h", n.NodeName(), f, got)
			}
		}
		if !hasIP(readCert(t, filepath.Join(n.PKIDir(), "apiserver.crt")), "127.0.0.1") {
			t.Errorf("%s: apiserver.crt lacks 127.0.0.1", n.NodeName())
		}
		m, err := os.ReadFile(filepath.Join(n.ManifestsDir(), "etcd.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"--listen-client-urls=" + n.EtcdClientURL(), "--initial-cluster-state=new", "host: " + n.IP(), n.EtcdDataDir()} {
			if !strings.Contains(string(m), want) {
				t.Errorf("%s: etcd.yaml lacks %q", n.NodeName(), want)
			}
		}
		if regexp.MustCompile(`127\.0\.0\.1\b`).Match(m) {
			t.Errorf("%s: etcd.yaml mentions 127.0.0.1:\n%s", n.NodeName(), m)
		}
		if _, err := os.Stat(filepath.Join(n.KubeconfigDir(), "admin.conf")); err != nil {
			t.Error(err)
		}
	}
	ca1, _ := os.ReadFile(filepath.Join(c.Nodes[0].PKIDir(), "ca.crt"))
	for _, n := range c.Nodes[1:] {
		if ca, _ := os.ReadFile(filepath.Join(n.PKIDir(), "ca.crt")); string(ca) != string(ca1) {
			t.Errorf("%s: ca.crt differs from node1's", n.NodeName())
		}
	}

	// etcd: three healthy members.
	for name, err := range c.MemberHealth(ctx) {
		if err != nil {
			t.Errorf("member %s: %v", name, err)
		}
	}
	members, err := c.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range members {
		names = append(names, m.Name)
	}
	if strings.Join(names, ",") != "node1,node2,node3" {
		t.Fatalf("members %v, want node1,node2,node3", names)
	}

	// The apiserver, with node2's and node3's admin.conf.
	if err := c.Node("node2").Admin().Ready(ctx); err != nil {
		t.Fatalf("/readyz with node2's admin.conf: %v", err)
	}
	lease := map[string]any{
		"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
		"metadata": map[string]any{"name": "ha-smoke", "namespace": "kube-system"},
		"spec":     map[string]any{"holderIdentity": "node3", "leaseDurationSeconds": 15},
	}
	if _, err := c.Node("node3").Admin().Create(ctx, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", lease); err != nil {
		t.Fatalf("create Lease with node3's admin.conf: %v", err)
	}
	if b, err := c.Node("node1").Admin().Get(ctx, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/ha-smoke"); err != nil || !strings.Contains(string(b), `"holderIdentity":"node3"`) {
		t.Fatalf("read the Lease back with node1's admin.conf: %v %s", err, b)
	}

	// Stop the leader's pod: the sampler sees it, and only it, down.
	victim, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stop := c.SampleHealth(ctx, 100*time.Millisecond)
	time.Sleep(time.Second)
	stopped := time.Now()
	old, err := c.StopEtcdPod(ctx, victim)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	t.Logf("stopped etcd-%s (leader, sandbox %.13s) in %v", victim.NodeName(), old, time.Since(stopped).Round(time.Millisecond))
	ev, err := victim.Kubelet.WaitRecreated(ctx, "etcd", stopped)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	if err := c.WaitHealthy(2 * time.Minute); err != nil {
		stop()
		t.Fatal(err)
	}
	recovered := time.Now()
	time.Sleep(time.Second)
	samples := stop()
	t.Logf("etcd-%s recreated %v after the stop, all healthy after %v; %d samples",
		victim.NodeName(), ev.Time.Sub(stopped).Round(time.Millisecond), recovered.Sub(stopped).Round(time.Millisecond), len(samples))

	var sawDown bool
	for _, s := range samples {
		for _, d := range s.Down {
			if d != victim.NodeName() {
				t.Errorf("%s: %s down (%v), only %s was stopped", s.At.Format("15:04:05.000"), d, s.Errs[d], victim.NodeName())
			}
			if s.At.Before(stopped.Add(-time.Second)) { // a probe may answer a little after its start
				t.Errorf("%s: %s down before the stop: %v", s.At.Format("15:04:05.000"), d, s.Errs[d])
			}
			sawDown = true
		}
	}
	// The others may fail /health for a moment while they elect a new
	// leader (a pending linearizable read fails); they never go down.
	var blips int
	for _, s := range samples {
		for _, u := range s.Unhealthy {
			if u != victim.NodeName() {
				blips++
				t.Logf("%s: %s unhealthy, not down: %v", s.At.Format("15:04:05.000"), u, s.Errs[u])
			}
		}
	}
	t.Logf("%d samples saw another member unhealthy (not down)", blips)
	if n, s := ha.MaxDown(samples); n > 1 {
		t.Errorf("%d members down at %s: %v", n, s.At.Format("15:04:05.000"), s.Errs)
	}
	if !sawDown {
		t.Errorf("the sampler never saw %s down", victim.NodeName())
	}
	if last := samples[len(samples)-1]; len(last.Unhealthy) > 0 {
		t.Errorf("still down at the end: %v", last.Errs)
	}
	if got := victim.Kubelet.Sandboxes("etcd"); len(got) != 2 {
		t.Errorf("%s's kubelet made %d etcd sandboxes, want 2", victim.NodeName(), len(got))
	}
	for _, n := range c.Nodes {
		if n != victim && len(n.Kubelet.Sandboxes("etcd")) != 1 {
			t.Errorf("%s's etcd was recreated too: %v", n.NodeName(), n.Kubelet.Sandboxes("etcd"))
		}
	}
	// The Lease survived (etcd kept its data).
	if _, err := c.Node("node2").Admin().Get(ctx, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/ha-smoke"); err != nil {
		t.Errorf("Lease after the restart: %v", err)
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func hasIP(cert *x509.Certificate, ip string) bool {
	for _, a := range cert.IPAddresses {
		if a.Equal(net.ParseIP(ip)) {
			return true
		}
	}
	return false
}
