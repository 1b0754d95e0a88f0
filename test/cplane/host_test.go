package cplane

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCopyFilesKeepsKeysPrivate(t *testing.T) {
	from, to := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(from, "etcd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(from, "etcd/ca.key"), []byte("key"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CopyFiles(from, to, []string{"etcd/ca.key"}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(to, "etcd/ca.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("copy: %v %v, want mode 0600", fi, err)
	}
	if err := CopyFiles(from, to, []string{"missing.key"}); err == nil {
		t.Error("a missing file: no error")
	}
}
