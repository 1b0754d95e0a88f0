package rundaemon_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// While the daemon runs, the operator puts another /etc/kubernetes in
// place (a restored backup whose certificates are due). The daemon notices
// within seconds — the watch follows the path, not the old directory —
// renews the new files, and never writes into the directory moved away.
func TestKubernetesDirReplacedWhileRunning(t *testing.T) {
	dir := t.TempDir()
	kube := filepath.Join(dir, "kubernetes")
	l, err := renewtest.MakePKI(kube, renewtest.Options{Algorithm: "ECDSA-P256"})
	if err != nil {
		t.Fatal(err)
	}
	// The backup: issued 300 days ago, due with the default renewBefore.
	backup := filepath.Join(dir, "backup")
	if _, err := renewtest.MakePKI(backup, renewtest.Options{Algorithm: "ECDSA-P256", NotBefore: time.Now().Add(-300 * 24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	var out syncBuf
	cmd := exec.Command(pkirenewdBin, "run", "--config", "/dev/null", "--pki-dir", l.PKIDir, "--kubeconfig-dir", l.KubeconfigDir,
		"--manifests-dir", kube, "--state-dir", filepath.Join(dir, "state"), "--restart-components=false",
		"--metrics-address", "", "--validity", "365d")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	// Started: the first inventory logs a line per item.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), "super-admin.conf: ok"); {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not start:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	old := filepath.Join(dir, "kubernetes.old")
	if err := os.Rename(kube, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(backup, kube); err != nil {
		t.Fatal(err)
	}
	oldTree, err := renewtest.HashTree(old)
	if err != nil {
		t.Fatal(err)
	}
	swapped := time.Now()
	for {
		if n := strings.Count(out.String(), "certificate renewed"); n >= 12 {
			break
		}
		if time.Since(swapped) > 30*time.Second {
			t.Fatalf("the replaced directory's due certificates were not renewed:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the replaced /etc/kubernetes was noticed and renewed %v after the swap", time.Since(swapped).Round(time.Millisecond))
	if after, _ := renewtest.HashTree(old); len(renewtest.DiffTrees(oldTree, after)) != 0 {
		t.Errorf("the directory moved away was written: %v", renewtest.DiffTrees(oldTree, after))
	}
	out2, err := exec.Command(pkirenewdBin, "check", "--config", "/dev/null", "--pki-dir", l.PKIDir, "--kubeconfig-dir", l.KubeconfigDir,
		"--manifests-dir", kube, "--state-dir", filepath.Join(dir, "state")).CombinedOutput()
	if err != nil {
		t.Errorf("check after the renewal: %v\n%s", err, out2)
	}
}
