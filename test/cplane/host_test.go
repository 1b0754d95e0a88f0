package cplane

import (
	"os"
	"path/filepath"
	"strings"
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

func TestLogTails(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "pods/kube-system_etcd/etcd"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{
		"kubelet.log":                      "one\ntwo\nthree\n",
		"pods/kube-system_etcd/etcd/0.log": strings.Repeat("x", 400) + "\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := LogTails(dir, 2, "kubelet.log", "pods/*/*/*.log", "none.log")
	want := "kubelet.log (tail):\ntwo\nthree\npods/kube-system_etcd/etcd/0.log (tail):\n" + strings.Repeat("x", 300) + "...\n"
	if got != want {
		t.Errorf("LogTails:\n%s\nwant:\n%s", got, want)
	}
	if got := Tail(filepath.Join(dir, "none.log"), 3); !strings.HasPrefix(got, "(open ") {
		t.Errorf("Tail of a missing file: %q", got)
	}
}
