// Package hostile_test runs pkirenewd where things go wrong around it: a
// full disk, a read-only file system, files owned by someone else, another
// pkirenewd holding the lock. Each case must end with a clear error or a
// correct result, and never with a half-written PKI.
package hostile_test

import (
	"bytes"
	"errors"
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
	"github.com/pkirenewd/pkirenewd/store"
	"github.com/pkirenewd/pkirenewd/test/testbin"
)

var pkirenewdBin string

func TestMain(m *testing.M) { testbin.Main(m, &pkirenewdBin) }

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
	// No static pods: the host's /etc/kubernetes/manifests (an e2e rig's,
	// say) is not this node's.
	all := append([]string{args[0], "--config", "/dev/null", "--api-identity", "admin", "--pki-dir", pki, "--kubeconfig-dir", kube, "--state-dir", state,
		"--manifests-dir", filepath.Join(filepath.Dir(state), "no-manifests")}, args[1:]...)
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
	renewtest.NeedRoot(t)
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
	renewtest.NeedRoot(t)
	mnt := tmpfs(t, "4m")
	l, err := renewtest.MakePKI(filepath.Join(mnt, "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256"})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "remount,ro", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount ro: %v %s", err, out)
	}
	before, _ := renewtest.HashTree(l.KubeconfigDir)
	state := filepath.Join(t.TempDir(), "state")
	out, err := run(t, l.PKIDir, l.KubeconfigDir, state, "renew", "--force")
	if err == nil || !strings.Contains(out, "read-only file system") {
		t.Fatalf("renewal on a read-only file system: %v\n%s", err, out)
	}
	after, _ := renewtest.HashTree(l.KubeconfigDir)
	if d := renewtest.DiffTrees(before, after); d != "" {
		t.Fatalf("changed:\n%s", d)
	}
	if strings.Contains(out, "rolling back failed") {
		t.Errorf("spurious rollback failure:\n%s", out)
	}
	if s := stateLeftovers(t, state); len(s) > 0 {
		t.Errorf("left in the state dir: %v", s)
	}
	// check still reports: nothing is due, but the directories it
	// writes cannot be written, which it names (exit 1).
	out, err = run(t, l.PKIDir, l.KubeconfigDir, filepath.Join(t.TempDir(), "state"), "check")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out, "UNWRITABLE "+l.PKIDir+": read-only file system") {
		t.Fatalf("check on a read-only file system: %v\n%s", err, out)
	}
}

func TestFilesOwnedByAnotherUserKeepTheirOwner(t *testing.T) {
	renewtest.NeedRoot(t)
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
	unlock, err := store.Lock(state, nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pkirenewdBin, "renew", "--force", "--config", "/dev/null", "--api-identity", "admin", "--pki-dir", l.PKIDir, "--kubeconfig-dir", l.KubeconfigDir, "--state-dir", state)
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

// stateLeftovers lists what a refused renewal left in the state dir
// beyond the lock and an empty backups dir.
func stateLeftovers(t *testing.T, state string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(state, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == state || p == filepath.Join(state, "backups") || p == filepath.Join(state, "lock") {
			return nil
		}
		out = append(out, p)
		return nil
	})
	return out
}

// stagedFiles lists staged or temp files of pkirenewd under dir.
func stagedFiles(dir string) []string {
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".pkirenewd-") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// refusedWithNothingLeft runs a forced renewal that must fail saying want,
// with every byte as it was, nothing staged and nothing in the state dir.
func refusedWithNothingLeft(t *testing.T, l renewtest.Layout, want ...string) {
	t.Helper()
	state := filepath.Join(t.TempDir(), "state")
	before, _ := renewtest.HashTree(l.KubeconfigDir)
	out, err := run(t, l.PKIDir, l.KubeconfigDir, state, "renew", "--force")
	if err == nil {
		t.Fatalf("renewal succeeded:\n%s", out)
	}
	for _, w := range append(want, "nothing was written") {
		if !strings.Contains(out, w) {
			t.Errorf("output does not say %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "rolling back failed") {
		t.Errorf("spurious rollback failure:\n%s", out)
	}
	after, _ := renewtest.HashTree(l.KubeconfigDir)
	if d := renewtest.DiffTrees(before, after); d != "" {
		t.Fatalf("changed:\n%s", d)
	}
	if s := stagedFiles(l.KubeconfigDir); len(s) > 0 {
		t.Errorf("staged files left: %v", s)
	}
	if s := stateLeftovers(t, state); len(s) > 0 {
		t.Errorf("left in the state dir: %v", s)
	}
	consistent(t, l)
}

func chattr(t *testing.T, flag, p string) {
	t.Helper()
	if out, err := exec.Command("chattr", "+"+flag, p).CombinedOutput(); err != nil {
		t.Fatalf("chattr +%s %s: %v %s", flag, p, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("chattr", "-"+flag, p).Run() })
}

func TestImmutableTargetIsRefused(t *testing.T) {
	renewtest.NeedRoot(t)
	l, err := renewtest.MakePKI(filepath.Join(t.TempDir(), "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256"})
	if err != nil {
		t.Fatal(err)
	}
	crt := filepath.Join(l.PKIDir, "apiserver.crt")
	chattr(t, "i", crt)
	refusedWithNothingLeft(t, l, crt+" is immutable (chattr +i)")
}

func TestAppendOnlyTargetIsRefused(t *testing.T) {
	renewtest.NeedRoot(t)
	l, err := renewtest.MakePKI(filepath.Join(t.TempDir(), "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256"})
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(l.PKIDir, "apiserver.key")
	chattr(t, "a", key)
	refusedWithNothingLeft(t, l, key+" is append-only (chattr +a)")
}

func TestReadOnlyBindMountIsRefused(t *testing.T) {
	renewtest.NeedRoot(t)
	l, err := renewtest.MakePKI(filepath.Join(t.TempDir(), "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256"})
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--bind", l.PKIDir, l.PKIDir}, {"-o", "remount,bind,ro", l.PKIDir}} {
		if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
			t.Fatalf("mount %v: %v %s", args, err, out)
		}
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", l.PKIDir).Run() })
	refusedWithNothingLeft(t, l, "read-only file system", l.PKIDir)
}

// The bug report's key: root:1000, 0600, readable by nobody through an
// ACL. After a renewal getfacl and getfattr must show exactly what they
// showed before, so gid 1000 never gains read access.
func TestACLAndExtendedAttributesAreKept(t *testing.T) {
	renewtest.NeedRoot(t)
	l, err := renewtest.MakePKI(filepath.Join(t.TempDir(), "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256"})
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(l.PKIDir, "apiserver.key")
	if err := os.Chown(key, 0, 1000); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"chmod", "0600", key},
		{"setfacl", "-m", "u:nobody:r", key},
		{"setfattr", "-n", "user.owner-team", "-v", "platform", key},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	security := exec.Command("setfattr", "-n", "security.selinux", "-v", "system_u:object_r:cert_t:s0", key).Run() == nil
	if !security {
		t.Log("this kernel does not let root set a security.* attribute: not checked")
	}
	show := func() (string, string, os.FileMode) {
		acl, err := exec.Command("getfacl", "-c", "-n", key).Output()
		if err != nil {
			t.Fatal(err)
		}
		xa, err := exec.Command("getfattr", "-d", "-m", "-", "-e", "hex", "--absolute-names", key).Output()
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(key)
		if err != nil {
			t.Fatal(err)
		}
		return string(acl), string(xa), st.Mode().Perm()
	}
	acl, xa, mode := show()
	if !strings.Contains(acl, "group::---") || !strings.Contains(xa, "user.owner-team") || security != strings.Contains(xa, "security.selinux") {
		t.Fatalf("set-up failed:\n%s\n%s", acl, xa)
	}
	old, _ := os.ReadFile(key)
	if out, err := run(t, l.PKIDir, l.KubeconfigDir, filepath.Join(t.TempDir(), "state"), "renew", "apiserver", "--force"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if now, _ := os.ReadFile(key); bytes.Equal(now, old) {
		t.Fatal("apiserver.key was not renewed")
	}
	acl2, xa2, mode2 := show()
	if acl2 != acl || xa2 != xa || mode2 != mode {
		t.Fatalf("access to %s changed:\nbefore %o\n%s%s\nafter %o\n%s%s", key, mode, acl, xa, mode2, acl2, xa2)
	}
	st, _ := os.Stat(key)
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 0 || sys.Gid != 1000 {
		t.Errorf("owner %d:%d, want 0:1000", sys.Uid, sys.Gid)
	}
	consistent(t, l)
}

// kubelet.conf's client-certificate is a FIFO: check and renew must say so
// and go on, not wait for a writer.
func TestFIFOKubeletClientCertDoesNotHang(t *testing.T) {
	root := t.TempDir()
	kpki := filepath.Join(root, "kubelet-pki")
	l, err := renewtest.MakePKI(filepath.Join(root, "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256", KubeletPKIDir: kpki})
	if err != nil {
		t.Fatal(err)
	}
	cur := filepath.Join(kpki, "kubelet-client-current.pem")
	if err := os.Remove(cur); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(cur, 0o600); err != nil {
		t.Fatal(err)
	}
	out := runBounded(t, l, "check")
	if !strings.Contains(out, cur) || !strings.Contains(out, "FIFO") {
		t.Fatalf("check does not name the FIFO %s:\n%s", cur, out)
	}
}

// A 2 MiB (sparse) front-proxy-client.crt is refused by name, not read
// whole and reported ok.
func TestOversizedCertificateIsRefused(t *testing.T) {
	l, err := renewtest.MakePKI(filepath.Join(t.TempDir(), "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256"})
	if err != nil {
		t.Fatal(err)
	}
	crt := filepath.Join(l.PKIDir, "front-proxy-client.crt")
	if err := os.Truncate(crt, 2<<20); err != nil {
		t.Fatal(err)
	}
	before, _ := renewtest.HashTree(l.KubeconfigDir)
	for _, args := range [][]string{{"check"}, {"renew", "front-proxy-client", "--force"}} {
		out := runBounded(t, l, args...)
		if !strings.Contains(out, crt) || !strings.Contains(out, "1048576") {
			t.Errorf("%s does not refuse %s by name:\n%s", args[0], crt, out)
		}
	}
	after, _ := renewtest.HashTree(l.KubeconfigDir)
	if d := renewtest.DiffTrees(before, after); d != "" {
		t.Fatalf("changed:\n%s", d)
	}
}

// runBounded runs pkirenewd with a deadline, expecting it to fail (the
// inputs are broken) well before it.
func runBounded(t *testing.T, l renewtest.Layout, args ...string) string {
	t.Helper()
	all := append([]string{args[0], "--config", "/dev/null", "--api-identity", "admin", "--pki-dir", l.PKIDir, "--kubeconfig-dir", l.KubeconfigDir, "--state-dir", filepath.Join(t.TempDir(), "state")}, args[1:]...)
	cmd := exec.Command(pkirenewdBin, all...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("pkirenewd %s succeeded on a broken input:\n%s", args[0], out.String())
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("pkirenewd %s hung (killed after 20 s):\n%s", args[0], out.String())
	}
	return out.String()
}
