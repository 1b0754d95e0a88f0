package daemon_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/daemon"
)

// A watched directory replaced by another (a backup moved into place) is
// watched again: a change in the new one is reported.
func TestWatchFollowsAReplacedDirectory(t *testing.T) {
	root := t.TempDir()
	kube := filepath.Join(root, "kubernetes")
	pki := filepath.Join(kube, "pki")
	if err := os.MkdirAll(pki, 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := daemon.Watch(pki, kube)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.SetRetry(10 * time.Millisecond)
	// The operator restores /etc/kubernetes from a backup.
	restored := filepath.Join(root, "restored")
	if err := os.MkdirAll(filepath.Join(restored, "pki"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(kube, filepath.Join(root, "kubernetes.old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(restored, kube); err != nil {
		t.Fatal(err)
	}
	// Drain until both paths are watched again (each reports itself).
	seen := map[string]bool{}
	timeout := time.After(10 * time.Second)
	for !seen[pki] || !seen[kube] {
		select {
		case p := <-w.Events:
			seen[p] = true
		case <-timeout:
			t.Fatalf("replaced directories not watched again; seen %v", seen)
		}
	}
	target := filepath.Join(pki, "apiserver.crt")
	if err := os.WriteFile(target, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	timeout = time.After(10 * time.Second)
	for {
		select {
		case p := <-w.Events:
			if p == target {
				return
			}
		case <-timeout:
			t.Fatal("a write in the new pki directory was not reported")
		}
	}
}
