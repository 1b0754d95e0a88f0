package renewtest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// NeedRoot skips a test that sets inode flags or mounts, unless in CI.
func NeedRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root (chattr, mount)")
		}
		t.Skip("needs root (chattr, mount)")
	}
}

// Run runs a command and fails the test when it fails.
func Run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v %s", name, strings.Join(args, " "), err, out)
	}
}

// Chattr sets a flag (i: immutable, a: append-only) and clears it when the
// test ends, so that the temp dir can be removed.
func Chattr(t *testing.T, flag, p string) {
	t.Helper()
	Run(t, "chattr", "+"+flag, p)
	t.Cleanup(func() { _ = exec.Command("chattr", "-"+flag, p).Run() })
}

// ReadOnlyBind makes dir read-only by bind-mounting it onto itself, as
// ProtectSystem=strict does with what ReadWritePaths= does not list.
func ReadOnlyBind(t *testing.T, dir string) {
	t.Helper()
	Run(t, "mount", "--bind", dir, dir)
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	Run(t, "mount", "-o", "remount,bind,ro", dir)
}
