package main

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/casync"
	"github.com/pkirenewd/pkirenewd/casync/casynctest"
)

// caWorker is a worker's files and a fake apiserver (127.0.0.1) under
// its CA, a kubelet healthz, and a restart command that records itself.
type caWorker struct {
	dir, caPath, kcPath, restarted string
	args                           []string
	api                            *casynctest.APIServer
	key                            crypto.Signer
}

func newCAWorker(t *testing.T) (*caWorker, *casynctest.APIServer) {
	t.Helper()
	w := &caWorker{dir: t.TempDir()}
	ca, key := casynctest.NewCA(t, time.Now().Add(30*24*time.Hour))
	w.key = key
	w.api = casynctest.StartAPIServer(t, ca, key, time.Now().Add(24*time.Hour))
	w.caPath, w.kcPath = casynctest.Worker(t, filepath.Join(w.dir, "kubernetes"), w.api.URL, ca, key, "worker-1")
	healthz := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	t.Cleanup(healthz.Close)
	port := healthz.Listener.Addr().(*net.TCPAddr).Port
	kubeletCfg := filepath.Join(w.dir, "kubelet.yaml")
	if err := os.WriteFile(kubeletCfg, []byte(fmt.Sprintf("kind: KubeletConfiguration\nhealthzBindAddress: 127.0.0.1\nhealthzPort: %d\n", port)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(w.dir, "empty.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	w.restarted = filepath.Join(w.dir, "restarted")
	w.args = []string{"ca", "sync", "--config", filepath.Join(w.dir, "empty.yaml"),
		"--pki-dir", filepath.Dir(w.caPath), "--kubeconfig", w.kcPath, "--state-dir", filepath.Join(w.dir, "state"),
		"--manifests-dir", filepath.Join(w.dir, "no-manifests"), "--kubelet-config", kubeletCfg,
		"--kubelet-restart-command", "echo kubelet >>" + w.restarted}
	return w, w.api
}

func (w *caWorker) run(extra ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), append(append([]string{}, w.args...), extra...), &out, &errb)
	return code, out.String(), errb.String()
}

func (w *caWorker) snapshot(t *testing.T) [2][]byte {
	t.Helper()
	var s [2][]byte
	for i, p := range []string{w.caPath, w.kcPath} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		s[i] = b
	}
	return s
}

func (w *caWorker) restarts() int {
	b, _ := os.ReadFile(w.restarted)
	return strings.Count(string(b), "kubelet\n")
}

func TestCASyncCommand(t *testing.T) {
	w, api := newCAWorker(t)
	before := w.snapshot(t)
	local, err := casync.LocalCA(before[0])
	if err != nil {
		t.Fatal(err)
	}

	// Current: cluster-info holds the local certificate.
	api.Publish(casynctest.ClusterInfo(api.URL, local))
	code, out, errOut := w.run()
	if code != 0 || !strings.HasPrefix(out, "current ") || w.restarts() != 0 {
		t.Fatalf("current: exit %d, %d restarts\n%s%s", code, w.restarts(), out, errOut)
	}
	if !strings.Contains(out, "reported  Node worker-1: pkirenewd.io/ca-sha256="+casync.Fingerprint(local)) {
		t.Errorf("not reported:\n%s", out)
	}

	// A forged certificate (another key): refused, named, nothing written.
	api.Publish(casynctest.ClusterInfo(api.URL, casynctest.Forge(t, local, local.NotAfter.AddDate(10, 0, 0))))
	code, out, errOut = w.run()
	if code != 1 || !strings.Contains(errOut, "refused, nothing written: the published CA certificate has another public key") || out != "" {
		t.Fatalf("forged: exit %d\n%s%s", code, out, errOut)
	}
	if s := w.snapshot(t); !bytes.Equal(s[0], before[0]) || !bytes.Equal(s[1], before[1]) || w.restarts() != 0 {
		t.Fatal("forged: something was written or restarted")
	}

	// Renewed with the same key: --dry-run says and writes nothing.
	renewed := casynctest.Reissue(t, local, w.key, local.NotAfter.AddDate(10, 0, 0))
	api.Publish(casynctest.ClusterInfo(api.URL, renewed))
	code, out, errOut = w.run("--dry-run")
	if code != 0 || !strings.HasPrefix(out, "would write "+w.caPath+", "+w.kcPath) || len(api.Received()) != 1 {
		t.Fatalf("dry run: exit %d\n%s%s", code, out, errOut)
	}
	if s := w.snapshot(t); !bytes.Equal(s[0], before[0]) || !bytes.Equal(s[1], before[1]) || w.restarts() != 0 {
		t.Fatal("dry run: something was written or restarted")
	}

	// Then the sync: both files, the kubelet restarted, the new CA reported.
	code, out, errOut = w.run()
	if code != 0 || !strings.HasPrefix(out, "updated   "+w.caPath+", "+w.kcPath) || !strings.Contains(out, "restarted kubelet, healthy") || w.restarts() != 1 {
		t.Fatalf("sync: exit %d, %d restarts\n%s%s", code, w.restarts(), out, errOut)
	}
	after := w.snapshot(t)
	b64 := base64.StdEncoding.EncodeToString
	if !bytes.Equal(after[0], casynctest.PEM(renewed)) ||
		!bytes.Equal(after[1], bytes.ReplaceAll(before[1], []byte(b64(before[0])), []byte(b64(casynctest.PEM(renewed))))) {
		t.Errorf("files:\n%s\n%s", after[0], after[1])
	}
	p := api.Received()
	if got := p[len(p)-1]; got.Node != "worker-1" || got.Annotations[casync.AnnotationCA] != casync.Fingerprint(renewed) {
		t.Errorf("last report %+v", got)
	}
}
