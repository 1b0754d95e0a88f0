// Package hostile_test runs pkirenewd where things go wrong around it: a
// full disk, a read-only file system, files owned by someone else, another
// pkirenewd holding the lock. Each case must end with a clear error or a
// correct result, and never with a half-written PKI.
package hostile_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
	"github.com/pkirenewd/pkirenewd/test/testbin"
)

var pkirenewdBin string

func TestMain(m *testing.M) { testbin.Main(m, &pkirenewdBin) }

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root (mounts)")
		}
		t.Skip("needs root (mounts)")
	}
}

// tmpfs mounts a tmpfs of the given size and unmounts it at the end.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0755", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

func run(t *testing.T, pki, kube, state string, args ...string) (string, error) {
	t.Helper()
	all := append([]string{args[0], "--config", "/dev/null", "--pki-dir", pki, "--kubeconfig-dir", kube, "--state-dir", state}, args[1:]...)
	out, err := exec.Command(pkirenewdBin, all...).CombinedOutput()
	return string(out), err
}

func consistent(t *testing.T, l renewtest.Layout) {
	t.Helper()
	inv, err := renew.TakeInventory(renew.Dirs{PKIDir: l.PKIDir, KubeconfigDir: l.KubeconfigDir})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range append(inv.CAs, inv.Certs...) {
		if it.Err != nil || it.Missing {
			t.Fatalf("%s: %v missing=%v", it.Name, it.Err, it.Missing)
		}
	}
}

func TestFullDiskRollsBack(t *testing.T) {
	requireRoot(t)
	mnt := tmpfs(t, "512k")
	l, err := renewtest.MakePKI(filepath.Join(mnt, "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256"})
	if err != nil {
		t.Fatal(err)
	}
	// Fill the disk but for ~16 KiB: the transaction stages ~40 KiB.
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	if err := os.WriteFile(filepath.Join(mnt, "filler"), make([]byte, free-16<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	before, _ := renewtest.HashTree(l.KubeconfigDir)
	out, err := run(t, l.PKIDir, l.KubeconfigDir, filepath.Join(t.TempDir(), "state"), "renew", "--force")
	if err == nil {
		t.Fatalf("renewal on a full disk succeeded:\n%s", out)
	}
	if !strings.Contains(out, "no space left on device") {
		t.Errorf("error does not say the disk is full:\n%s", out)
	}
	after, _ := renewtest.HashTree(l.KubeconfigDir)
	if d := renewtest.DiffTrees(before, after); d != "" {
		t.Fatalf("a full disk left changes:\n%s", d)
	}
	consistent(t, l)
	// With room again, it works.
	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, l.PKIDir, l.KubeconfigDir, filepath.Join(t.TempDir(), "state"), "renew", "--force"); err != nil {
		t.Fatalf("after freeing space: %v\n%s", err, out)
	}
	consistent(t, l)
}

func TestReadOnlyFileSystem(t *testing.T) {
	requireRoot(t)
	mnt := tmpfs(t, "4m")
	l, err := renewtest.MakePKI(filepath.Join(mnt, "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256"})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "remount,ro", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount ro: %v %s", err, out)
	}
	before, _ := renewtest.HashTree(l.KubeconfigDir)
	out, err := run(t, l.PKIDir, l.KubeconfigDir, filepath.Join(t.TempDir(), "state"), "renew", "--force")
	if err == nil || !strings.Contains(out, "read-only file system") {
		t.Fatalf("renewal on a read-only file system: %v\n%s", err, out)
	}
	after, _ := renewtest.HashTree(l.KubeconfigDir)
	if d := renewtest.DiffTrees(before, after); d != "" {
		t.Fatalf("changed:\n%s", d)
	}
	// check still reports (exit 0: nothing due).
	if out, err := run(t, l.PKIDir, l.KubeconfigDir, filepath.Join(t.TempDir(), "state"), "check"); err != nil {
		t.Fatalf("check on a read-only file system: %v\n%s", err, out)
	}
}

func TestFilesOwnedByAnotherUserKeepTheirOwner(t *testing.T) {
	requireRoot(t)
	l, err := renewtest.MakePKI(filepath.Join(t.TempDir(), "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256"})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"front-proxy-client.crt", "front-proxy-client.key"} {
		if err := os.Chown(filepath.Join(l.PKIDir, f), 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := run(t, l.PKIDir, l.KubeconfigDir, filepath.Join(t.TempDir(), "state"), "renew", "front-proxy-client", "--force"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for f, mode := range map[string]os.FileMode{"front-proxy-client.crt": 0o644, "front-proxy-client.key": 0o600} {
		st, err := os.Stat(filepath.Join(l.PKIDir, f))
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		if sys.Uid != 65534 || sys.Gid != 65534 || st.Mode().Perm() != mode {
			t.Errorf("%s: owner %d:%d mode %o, want 65534:65534 %o", f, sys.Uid, sys.Gid, st.Mode().Perm(), mode)
		}
	}
	consistent(t, l)
}

// The daemon and a manual `pkirenewd renew` at once: the second waits for
// the lock in stateDir and says who holds it.
func TestSecondProcessWaitsForTheLock(t *testing.T) {
	l, err := renewtest.MakePKI(filepath.Join(t.TempDir(), "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256"})
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "state")
	unlock, err := renew.Lock(state, nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pkirenewdBin, "renew", "--force", "--config", "/dev/null", "--pki-dir", l.PKIDir, "--kubeconfig-dir", l.KubeconfigDir, "--state-dir", state)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "waiting for the pkirenewd process") {
		if time.Now().After(deadline) {
			t.Fatalf("the second process did not say it waits:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(out.String(), " "+itoa(os.Getpid())+" ") {
		t.Errorf("it does not name the holder (pid %d):\n%s", os.Getpid(), out.String())
	}
	before, _ := renewtest.HashTree(l.KubeconfigDir)
	time.Sleep(300 * time.Millisecond)
	if mid, _ := renewtest.HashTree(l.KubeconfigDir); renewtest.DiffTrees(before, mid) != "" {
		t.Fatal("the second process wrote while the lock was held")
	}
	unlock()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after the lock was released: %v\n%s", err, out.String())
	}
	if after, _ := renewtest.HashTree(l.KubeconfigDir); renewtest.DiffTrees(before, after) == "" {
		t.Fatal("nothing renewed after the lock was released")
	}
	consistent(t, l)
}

func itoa(i int) string { return strconv.Itoa(i) }
