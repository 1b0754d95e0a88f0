package renew_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

// attrs is what an operator sees of a file's access: owner, mode, the ACL
// per getfacl and every extended attribute per getfattr.
func attrs(t *testing.T, p string) string {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	acl, err := exec.Command("getfacl", "-c", "-n", p).Output()
	if err != nil {
		t.Fatalf("getfacl %s: %v", p, err)
	}
	xa, err := exec.Command("getfattr", "-d", "-m", "-", "-e", "hex", "--absolute-names", p).Output()
	if err != nil {
		t.Fatalf("getfattr %s: %v", p, err)
	}
	// getfattr's first line names the file.
	xl := strings.SplitN(string(xa), "\n", 2)
	return strings.Join([]string{st.Mode().Perm().String(), strconv.Itoa(int(sys.Uid)) + ":" + strconv.Itoa(int(sys.Gid)), string(acl), xl[len(xl)-1]}, "\n")
}

// decorate gives apiserver.key the case from the bug report (root:1000,
// 0600, an ACL letting nobody read it) plus user.*, trusted.* and, where
// the kernel lets root set one without an LSM, security.* attributes.
func decorate(t *testing.T, key string) {
	t.Helper()
	if err := os.Chown(key, 0, 1000); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	sh(t, "setfacl", "-m", "u:nobody:r", key)
	sh(t, "setfattr", "-n", "user.backup-policy", "-v", "never", key)
	sh(t, "setfattr", "-n", "trusted.pkirenewd-test", "-v", "kept", key)
	if err := exec.Command("setfattr", "-n", "security.selinux", "-v", "system_u:object_r:cert_t:s0", key).Run(); err != nil {
		t.Logf("no security.* attribute on this kernel (%v): not checked", err)
	}
}

func TestRenewalKeepsACLAndExtendedAttributes(t *testing.T) {
	needRoot(t)
	f := newFixture(t, renewtest.Options{})
	key := filepath.Join(f.layout.PKIDir, "apiserver.key")
	decorate(t, key)
	want := attrs(t, key)
	if !strings.Contains(want, "user:65534:r--") || !strings.Contains(want, "group::---") {
		t.Fatalf("the ACL was not set up:\n%s", want)
	}
	old, _ := os.ReadFile(key)
	if _, err := f.renew(t, f.renewer(nil), renew.Selection{Force: true, Names: []string{"apiserver"}}); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(key); string(now) == string(old) {
		t.Fatal("the key was not renewed")
	}
	if got := attrs(t, key); got != want {
		t.Fatalf("attributes of %s changed:\nwant\n%s\ngot\n%s", key, want, got)
	}
	requireConsistent(t, f.inventory(t))
}

// Putting the old files back after a failed commit keeps them too.
func TestUndoneCommitKeepsACLAndExtendedAttributes(t *testing.T) {
	needRoot(t)
	f := newFixture(t, renewtest.Options{})
	key := filepath.Join(f.layout.PKIDir, "apiserver.key")
	decorate(t, key)
	want := attrs(t, key)
	_, err := f.renew(t, f.renewer(func(o *renew.Options) {
		o.Step = func(s string) {
			if s == "renamed:apiserver.key" {
				chattr(t, "i", filepath.Join(f.layout.PKIDir, "apiserver.crt"))
			}
		}
	}), renew.Selection{Force: true, Names: []string{"apiserver"}})
	if err == nil || !strings.Contains(err.Error(), "put back") {
		t.Fatalf("want the commit undone: %v", err)
	}
	if got := attrs(t, key); got != want {
		t.Fatalf("attributes of %s changed by the restore:\nwant\n%s\ngot\n%s", key, want, got)
	}
	requireConsistent(t, f.inventory(t))
}

// A directory's default ACL must not reach a renewed key whose old file
// had no ACL: that would widen who can read it.
func TestInheritedDefaultACLIsNotKept(t *testing.T) {
	needRoot(t)
	f := newFixture(t, renewtest.Options{})
	sh(t, "setfacl", "-d", "-m", "u:nobody:rw", f.layout.PKIDir)
	key := filepath.Join(f.layout.PKIDir, "front-proxy-client.key")
	want := attrs(t, key)
	if _, err := f.renew(t, f.renewer(nil), renew.Selection{Force: true, Names: []string{"front-proxy-client"}}); err != nil {
		t.Fatal(err)
	}
	if got := attrs(t, key); got != want {
		t.Fatalf("attributes of %s changed:\nwant\n%s\ngot\n%s", key, want, got)
	}
}
