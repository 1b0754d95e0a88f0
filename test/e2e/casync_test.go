//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/casync"
	"github.com/pkirenewd/pkirenewd/casync/casynctest"
	"github.com/pkirenewd/pkirenewd/kubeconfig"
	"github.com/pkirenewd/pkirenewd/pki"
)

const clusterInfoPath = "/api/v1/namespaces/kube-public/configmaps/cluster-info"

// TestWorkerCASyncAgainstTheRealAPIServer: a worker's files (its ca.crt
// and a kubelet.conf with the node's own credentials, pointing at the
// real apiserver) are brought to a CA certificate re-issued with the
// cluster CA's key and published in cluster-info by `pkirenewd ca sync`,
// which reads cluster-info anonymously as kubeadm allows, restarts the
// kubelet and annotates the Node with the kubelet's credentials (the Node
// authorizer and NodeRestriction let it). Then a forged cluster-info (a
// twin of the CA under another key) is refused, named, and nothing is
// written.
func TestWorkerCASyncAgainstTheRealAPIServer(t *testing.T) {
	cp := StartControlPlane(t, Options{})
	ctx := cp.Context()
	// The rig runs only the certs and kubeconfig phases: make cluster-info
	// and its RBAC (system:anonymous may get it) as kubeadm init does.
	cp.kubeadm(nil, "init", "phase", "bootstrap-token", "--config", cp.KubeadmConfig)

	caPEM, err := os.ReadFile(filepath.Join(PKIDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.ParseCertPEM(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	anonymousGet(t, ctx, ca)

	w := newE2EWorker(t, cp, caPEM)

	// The control plane's part, by hand here: the CA re-issued with its
	// own key, published in cluster-info.
	keyPEM, err := os.ReadFile(filepath.Join(PKIDir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	issued, err := pki.RenewCA(pki.CARenewal{Old: ca, Key: key.Signer, Now: time.Now(), Validity: 20 * 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := pki.ParseCertPEM(issued.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, cp, ca, renewed)

	before := w.snapshot(t)
	t0 := time.Now()
	code, out := w.sync(t, cp)
	took := time.Since(t0)
	if code != 0 {
		t.Fatalf("ca sync: exit %d\n%s", code, out)
	}
	t.Logf("ca sync (fetch, write, kubelet restart, healthz, report) took %v:\n%s", took.Round(time.Millisecond), out)
	after := w.snapshot(t)
	newPEM := pki.EncodeCertPEM(renewed.Raw)
	if !bytes.Equal(after.ca, newPEM) {
		t.Errorf("ca.crt does not hold the renewed certificate:\n%s", after.ca)
	}
	b64 := base64.StdEncoding.EncodeToString
	if want := bytes.ReplaceAll(before.kc, []byte(b64(caPEM)), []byte(b64(newPEM))); !bytes.Equal(after.kc, want) {
		t.Errorf("kubelet.conf: want only the CA data of its cluster changed, got\n%s", after.kc)
	}
	clusters, err := kubeconfig.ClusterCAs(after.kc)
	if err != nil || len(clusters) != 2 || !bytes.Equal(clusters[0].Data, w.otherCA) || !bytes.Equal(clusters[1].Data, newPEM) {
		t.Errorf("kubelet.conf clusters: %v", err)
	}
	if n := len(w.restarts(t)); n != 1 {
		t.Errorf("kubelet restarted %d times, want 1", n)
	}
	if got := nodeAnnotation(t, cp); got != casync.Fingerprint(renewed) {
		t.Errorf("Node %s: %s=%q, want %s", cp.Opts.NodeName, casync.AnnotationCA, got, casync.Fingerprint(renewed))
	}
	backups := w.backups(t)
	if len(backups) != 1 {
		t.Errorf("backups %v, want one", backups)
	}

	// Again: current, nothing written, no restart.
	if code, out := w.sync(t, cp); code != 0 || !strings.HasPrefix(out, "current ") || len(w.restarts(t)) != 1 || len(w.backups(t)) != 1 {
		t.Errorf("second sync: exit %d\n%s", code, out)
	}

	// A forged cluster-info: the CA's twin under another key.
	forged := casynctest.Forge(t, renewed, renewed.NotAfter.AddDate(1, 0, 0))
	publish(t, cp, renewed, forged)
	before = w.snapshot(t)
	code, out = w.sync(t, cp)
	if code != 1 || !strings.Contains(out, "refused, nothing written: the published CA certificate has another public key") {
		t.Fatalf("forged cluster-info: exit %d\n%s", code, out)
	}
	t.Logf("forged cluster-info refused:\n%s", out)
	after = w.snapshot(t)
	if !bytes.Equal(after.ca, before.ca) || !bytes.Equal(after.kc, before.kc) {
		t.Error("forged cluster-info: the files changed")
	}
	if b := w.backups(t); len(b) != 1 || len(w.restarts(t)) != 1 {
		t.Errorf("forged cluster-info: backups %v, %d restarts", b, len(w.restarts(t)))
	}
	if got := nodeAnnotation(t, cp); got != casync.Fingerprint(renewed) {
		t.Errorf("forged cluster-info: the Node now reports %q", got)
	}
}

// e2eWorker is a worker's files in a temp dir.
type e2eWorker struct {
	dir, caPath, kcPath, state, restartLog string
	// otherCA is another cluster's CA in the kubeconfig, never touched.
	otherCA []byte
}

// newE2EWorker copies the node's ca.crt and kubelet.conf (the node's own
// credentials, the real apiserver's address) into a temp dir, with a
// comment and a second cluster whose CA is another one added.
func newE2EWorker(t *testing.T, cp *ControlPlane, caPEM []byte) *e2eWorker {
	t.Helper()
	dir := t.TempDir()
	w := &e2eWorker{dir: dir, caPath: filepath.Join(dir, "pki", "ca.crt"), kcPath: filepath.Join(dir, "kubelet.conf"),
		state: filepath.Join(dir, "state"), restartLog: filepath.Join(dir, "kubelet-restarts")}
	kc, err := os.ReadFile(filepath.Join(KubernetesDir, "kubelet.conf"))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := casynctest.NewCA(t, time.Now().Add(24*time.Hour))
	w.otherCA = casynctest.PEM(other)
	if !bytes.HasPrefix(kc, []byte("apiVersion: v1\nclusters:\n")) {
		t.Fatalf("kubelet.conf is not as kubeadm writes it:\n%s", kc)
	}
	kc = bytes.Replace(kc, []byte("clusters:\n"), []byte(fmt.Sprintf(
		"clusters:\n# another cluster, whose CA is not this one\n- cluster:\n    certificate-authority-data: %s\n    server: https://192.0.2.99:6443\n  name: other\n",
		base64.StdEncoding.EncodeToString(w.otherCA))), 1)
	kc = append([]byte("# the kubelet's kubeconfig of a worker, joined with kubeadm\n"), kc...)
	if err := os.MkdirAll(filepath.Dir(w.caPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w.caPath, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w.kcPath, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

// sync runs the built `pkirenewd ca sync` on the worker's files; the
// kubelet's restart is a command that records itself (this is no worker
// of the rig: its kubelet is the control plane's), its health the rig
// kubelet's healthz.
func (w *e2eWorker) sync(t *testing.T, cp *ControlPlane) (int, string) {
	t.Helper()
	cmd := exec.CommandContext(cp.Context(), pkirenewdBin, "ca", "sync", "--config", "/dev/null",
		"--pki-dir", filepath.Dir(w.caPath), "--kubeconfig", w.kcPath, "--state-dir", w.state,
		"--manifests-dir", filepath.Join(w.dir, "no-manifests"), "--kubelet-config", cp.kubeletConfigPath(),
		"--kubelet-restart-command", "date +%s.%N >>"+w.restartLog, "--node-name", "not-this-one")
	out, err := cmd.CombinedOutput()
	if err := os.WriteFile(filepath.Join(cp.LogDir, "pkirenewd-ca-sync.log"), out, 0o644); err != nil {
		t.Log(err)
	}
	if cmd.ProcessState == nil {
		t.Fatalf("ca sync did not run: %v", err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

type workerFiles struct{ ca, kc []byte }

func (w *e2eWorker) snapshot(t *testing.T) workerFiles {
	t.Helper()
	var f workerFiles
	var err error
	if f.ca, err = os.ReadFile(w.caPath); err != nil {
		t.Fatal(err)
	}
	if f.kc, err = os.ReadFile(w.kcPath); err != nil {
		t.Fatal(err)
	}
	return f
}

func (w *e2eWorker) restarts(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(w.restartLog)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

func (w *e2eWorker) backups(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(w.state, "backups"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// anonymousGet checks, from outside, that cluster-info is readable with
// no credentials (kubeadm's RBAC), as a joining node reads it.
func anonymousGet(t *testing.T, ctx context.Context, ca *x509.Certificate) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, APIServer+clusterInfoPath, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("anonymous GET of cluster-info: %s", resp.Status)
	}
}

// publish replaces old by published in cluster-info's kubeconfig, as the
// control plane's renewal does, with admin.conf.
func publish(t *testing.T, cp *ControlPlane, old, published *x509.Certificate) {
	t.Helper()
	body, err := cp.Admin.Get(cp.Context(), clusterInfoPath)
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal(body, &cm); err != nil {
		t.Fatal(err)
	}
	isOld := func(b []byte) bool {
		c, err := pki.ParseCertPEM(b)
		return err == nil && bytes.Equal(c.Raw, old.Raw)
	}
	kc, names, err := kubeconfig.WithClusterCA([]byte(cm.Data["kubeconfig"]), pki.EncodeCertPEM(published.Raw), isOld)
	if err != nil || len(names) != 1 {
		t.Fatalf("cluster-info %v %v:\n%s", names, err, cm.Data["kubeconfig"])
	}
	patch := map[string]any{"data": map[string]string{"kubeconfig": string(kc)}}
	if _, err := cp.Admin.Do(cp.Context(), http.MethodPatch, clusterInfoPath, patch); err != nil {
		t.Fatal(err)
	}
}

// nodeAnnotation reads the Node's CA annotation with admin.conf.
func nodeAnnotation(t *testing.T, cp *ControlPlane) string {
	t.Helper()
	body, err := cp.Admin.Get(cp.Context(), "/api/v1/nodes/"+cp.Opts.NodeName)
	if err != nil {
		t.Fatal(err)
	}
	var node struct {
		Metadata struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(body, &node); err != nil {
		t.Fatal(err)
	}
	return casync.ReportedCA(node.Metadata.Annotations)
}
