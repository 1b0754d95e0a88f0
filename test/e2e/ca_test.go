//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/kubeconfig"
	"github.com/pkirenewd/pkirenewd/pki"
)

var caFiles = map[string]string{"ca": "ca.crt", "etcd-ca": "etcd/ca.crt", "front-proxy-ca": "front-proxy-ca.crt"}

func readCAs(t *testing.T) map[string]*x509.Certificate {
	t.Helper()
	out := map[string]*x509.Certificate{}
	for name, f := range caFiles {
		data, err := os.ReadFile(filepath.Join(PKIDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if out[name], err = pki.ParseCertPEM(data); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// caRenewed fails until every CA on disk is a same-key renewal of old.
func caRenewed(t *testing.T, old map[string]*x509.Certificate) error {
	for name, f := range caFiles {
		data, err := os.ReadFile(filepath.Join(PKIDir, f))
		if err != nil {
			return err
		}
		c, err := pki.ParseCertPEM(data)
		if err != nil {
			return err
		}
		if bytes.Equal(c.Raw, old[name].Raw) {
			return fmt.Errorf("%s not renewed yet", name)
		}
		if err := pki.VerifyCARenewal(old[name], c); err != nil {
			t.Fatalf("%s: not a same-key renewal: %v", name, err)
		}
	}
	return nil
}

// The ten-year day, in minutes: kubeadm makes the three CAs with a life of
// 5 minutes (caCertificateValidityPeriod). The daemon, with its default
// caRenewBefore, renews each at two thirds of that life with its own key,
// brings every kubeconfig along, and restarts what reads a CA only at
// start: etcd (its trusted CAs), the apiserver (--etcd-cafile), the
// controller-manager (--root-ca-file, its kubeconfig), the scheduler (its
// kubeconfig) and the kubelet (kubelet.conf). No leaf is re-issued. Then
// the old CA certificates end, and everything still works: /readyz with
// admin.conf, etcd restarted (client and peer TLS against the renewed
// etcd CA), a pod's log through the kubelet, a write, the controller-
// manager's and the scheduler's leases still renewed, and the
// kube-root-ca.crt ConfigMap with the renewed CA.
func TestSameKeyCARenewalOnTheRealControlPlane(t *testing.T) {
	cp := StartControlPlane(t, Options{CAValidity: 5 * time.Minute, Validity: 24 * time.Hour})
	ctx := cp.Context()
	// cluster-info, as kubeadm init makes it, and a worker joined under
	// the old CA.
	cp.kubeadm(nil, "init", "phase", "bootstrap-token", "--config", cp.KubeadmConfig)
	old := readCAs(t)
	w := newE2EWorker(t, cp, pki.EncodeCertPEM(old["ca"].Raw))
	leaves := leafSerials(t)
	before := readyPods(t, cp)
	t.Logf("the CAs end at %s (in %v)", old["ca"].NotAfter.UTC().Format(time.RFC3339), time.Until(old["ca"].NotAfter).Round(time.Second))

	s := sampleReadyz(cp)
	d := startDaemon(t, cp, "--restart-policy", "needed", "--ca-validity", "24h", "--restart-timeout", "3m",
		"--kubelet-restart-command", cp.KubeletRestartCommand(), "--kubelet-config", cp.kubeletConfigPath())
	var renewedAt time.Time
	err := cp.Poll(6*time.Minute, 200*time.Millisecond, "the CAs renewed and the roll finished", func(ctx context.Context) error {
		if d.exited() {
			return fmt.Errorf("pkirenewd exited: %v", d.Cmd.ProcessState)
		}
		if renewedAt.IsZero() {
			if err := caRenewed(t, old); err != nil {
				return err
			}
			renewedAt = time.Now()
		}
		if err := cp.Healthy(ctx); err != nil {
			return err
		}
		return rollFinished(d)
	})
	if err != nil {
		t.Fatal(err)
	}
	down, samples, failed := s.Stop()
	t.Logf("| same-key renewal of the three CAs, restartPolicy needed | %v before the old CAs end | /readyz not ok %.1f s (%d of %d samples) |",
		old["ca"].NotAfter.Sub(renewedAt).Round(time.Second), down.Seconds(), failed, samples)

	for k, v := range leafSerials(t) {
		if v != leaves[k] {
			t.Errorf("%s was re-issued: a same-key CA renewal needs no new leaf", k)
		}
	}
	caPEM := pki.EncodeCertPEM(readCAs(t)["ca"].Raw)
	for _, conf := range []string{"admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf"} {
		data, err := os.ReadFile(filepath.Join(KubernetesDir, conf))
		if err != nil {
			t.Fatal(err)
		}
		cl, err := kubeconfig.ClusterCAs(data)
		if err != nil || len(cl) != 1 || !bytes.Equal(cl[0].Data, caPEM) {
			t.Errorf("%s does not carry the renewed CA (%v)", conf, err)
		}
	}
	samePods(t, before, readyPods(t, cp), nil, []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"})
	// Published for the others: the three CAs on the restart Lease (the
	// other control-plane nodes), the cluster CA in cluster-info (workers,
	// joins); and a worker's `ca sync` takes it from there.
	renewedCAs := readCAs(t)
	for name, c := range renewedCAs {
		if got := leaseAnnotation(t, cp, "pkirenewd.io/"+name+".crt"); !bytes.Equal([]byte(got), pki.EncodeCertPEM(c.Raw)) {
			t.Errorf("the restart Lease does not carry the renewed %s", name)
		}
	}
	if got := clusterInfoCA(t, cp); !bytes.Equal(got, caPEM) {
		t.Error("cluster-info does not carry the renewed CA")
	}
	// Before its sync the worker (the rig's node, unlabelled) reported
	// nothing; after it, the CA on disk.
	if _, out := checkNode(cp, "--kubelet-config", cp.kubeletConfigPath()); !strings.Contains(out, "NOTE 1 worker node(s) never reported their CA") {
		t.Errorf("check before the worker's sync:\n%s", out)
	}
	if code, out := w.sync(t, cp); code != 0 || !bytes.Equal(w.snapshot(t).ca, caPEM) {
		t.Errorf("the worker's ca sync: exit %d\n%s", code, out)
	}
	if !kubeletRestartLogged(d.Events()) {
		t.Error("the kubelet (kubelet.conf's CA) was not restarted")
	}
	for _, e := range d.Events() {
		if e.Str("msg") == "renewal failed" {
			t.Errorf("the daemon reported a failed renewal: %v", e.Fields)
		}
	}

	end := old["ca"].NotAfter
	for _, c := range old {
		if c.NotAfter.After(end) {
			end = c.NotAfter
		}
	}
	t.Logf("waiting for the old CA certificates to end at %s (%v)", end.UTC().Format(time.RFC3339), time.Until(end).Round(time.Second))
	select {
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	case <-time.After(time.Until(end) + 5*time.Second):
	}
	if err := d.stop(t); err != nil {
		t.Error(err)
	}
	// New TLS everywhere: etcd restarted, so the apiserver dials it again
	// and etcd checks its client certificate against the renewed CA.
	r := startPkirenewd(t, cp, "pkirenewd-restart-etcd.log", "restart", "etcd", "--restart-timeout", "3m")
	awaitExit(t, r, 5*time.Minute)
	if err := cp.WaitHealthy(2 * time.Minute); err != nil {
		t.Fatalf("after the old CAs ended: %v", err)
	}
	createConfigMap(t, cp, "e2e-after-the-ca-ended")
	pod := fmt.Sprintf("/api/v1/namespaces/kube-system/pods/kube-scheduler-%s/log?container=kube-scheduler&tailLines=1", cp.Opts.NodeName)
	if _, err := cp.Admin.Get(ctx, pod); err != nil {
		t.Errorf("a static pod's log through the kubelet: %v", err)
	}
	for _, lease := range []string{"kube-controller-manager", "kube-scheduler"} {
		if err := leaseRenewedSince(ctx, cp, lease, end); err != nil {
			t.Error(err)
		}
	}
	if err := cp.Poll(2*time.Minute, time.Second, "kube-root-ca.crt with the renewed CA", func(ctx context.Context) error {
		return rootCAConfigMap(ctx, cp, caPEM)
	}); err != nil {
		t.Error(err)
	}
	code, out := checkNode(cp, "--kubelet-config", cp.kubeletConfigPath())
	if code != 0 || strings.Contains(out, "OLD CA") {
		t.Errorf("check after the CA renewal: exit %d\n%s", code, out)
	}
}

// leaseAnnotation is an annotation of the restart Lease.
func leaseAnnotation(t *testing.T, cp *ControlPlane, key string) string {
	t.Helper()
	b, err := cp.Admin.Get(cp.Context(), "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/pkirenewd")
	if err != nil {
		t.Fatal(err)
	}
	var l struct {
		Metadata struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatal(err)
	}
	return l.Metadata.Annotations[key]
}

// clusterInfoCA is the CA of kube-public/cluster-info's kubeconfig.
func clusterInfoCA(t *testing.T, cp *ControlPlane) []byte {
	t.Helper()
	b, err := cp.Admin.Get(cp.Context(), "/api/v1/namespaces/kube-public/configmaps/cluster-info")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal(b, &cm); err != nil {
		t.Fatal(err)
	}
	cl, err := kubeconfig.ClusterCAs([]byte(cm.Data["kubeconfig"]))
	if err != nil || len(cl) != 1 {
		t.Fatalf("cluster-info: %v", err)
	}
	return cl[0].Data
}

// leaseRenewedSince fails unless the component's leader lease was renewed
// after t: it talks to the apiserver, trusting the renewed CA.
func leaseRenewedSince(ctx context.Context, cp *ControlPlane, name string, t time.Time) error {
	return cp.Poll(time.Minute, time.Second, name+"'s lease renewed after the old CA ended", func(ctx context.Context) error {
		b, err := cp.Admin.Get(ctx, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/"+name)
		if err != nil {
			return err
		}
		var l struct {
			Spec struct {
				RenewTime time.Time `json:"renewTime"`
			} `json:"spec"`
		}
		if err := json.Unmarshal(b, &l); err != nil {
			return err
		}
		if !l.Spec.RenewTime.After(t) {
			return fmt.Errorf("%s's lease last renewed %s", name, l.Spec.RenewTime.UTC().Format(time.RFC3339))
		}
		return nil
	})
}

// rootCAConfigMap fails unless default/kube-root-ca.crt, which every pod
// mounts, carries the CA certificate caPEM.
func rootCAConfigMap(ctx context.Context, cp *ControlPlane, caPEM []byte) error {
	b, err := cp.Admin.Get(ctx, "/api/v1/namespaces/default/configmaps/kube-root-ca.crt")
	if err != nil {
		return err
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal(b, &cm); err != nil {
		return err
	}
	if !bytes.Equal(bytes.TrimSpace([]byte(cm.Data["ca.crt"])), bytes.TrimSpace(caPEM)) {
		return errors.New("kube-root-ca.crt still carries another CA certificate")
	}
	return nil
}
