package renew_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

// A copy of admin.conf with the same credentials follows the renewal
// (owner, mode and every other byte kept); a copy with other credentials,
// or one only found by the glob, is never written.
func TestAdminConfCopies(t *testing.T) {
	f := newFixture(t, renewtest.Options{})
	admin := filepath.Join(f.layout.KubeconfigDir, "admin.conf")
	orig, err := os.ReadFile(admin)
	if err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(f.root, "root", ".kube")
	users := filepath.Join(f.root, "home")
	for _, d := range []string{home, filepath.Join(users, "alice", ".kube"), filepath.Join(users, "bob", ".kube")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// The admin's copy, with a namespace set by hand after copying.
	copyPath := filepath.Join(home, "config")
	edited := bytes.Replace(orig, []byte("    user: kubernetes-admin\n"), []byte("    user: kubernetes-admin\n    namespace: kube-system\n"), 1)
	if bytes.Equal(edited, orig) {
		t.Fatal("fixture: admin.conf has no context user line to edit")
	}
	if err := os.WriteFile(copyPath, edited, 0o640); err != nil {
		t.Fatal(err)
	}
	alice := filepath.Join(users, "alice", ".kube", "config")
	if err := os.WriteFile(alice, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	// bob has another cluster's credentials (super-admin.conf here).
	bob := filepath.Join(users, "bob", ".kube", "config")
	super, _ := os.ReadFile(filepath.Join(f.layout.KubeconfigDir, "super-admin.conf"))
	if err := os.WriteFile(bob, super, 0o600); err != nil {
		t.Fatal(err)
	}

	r := f.renewer(func(o *renew.Options) {
		o.AdminCopy, o.AdminCopyGlob = copyPath, filepath.Join(users, "*", ".kube", "config")
	})
	if _, err := f.renew(t, r, renew.Selection{Names: []string{"admin.conf"}, Force: true}); err != nil {
		t.Fatal(err)
	}
	renewed, _ := os.ReadFile(admin)
	got, _ := os.ReadFile(copyPath)
	// The copy now equals the renewed admin.conf but for the hand edit.
	want := bytes.Replace(renewed, []byte("    user: kubernetes-admin\n"), []byte("    user: kubernetes-admin\n    namespace: kube-system\n"), 1)
	if !bytes.Equal(got, want) {
		t.Fatalf("copy not updated as admin.conf was:\n%s", got)
	}
	if st, _ := os.Stat(copyPath); st.Mode().Perm() != 0o640 {
		t.Errorf("copy mode %v, want 0640 kept", st.Mode().Perm())
	}
	if b, _ := os.ReadFile(alice); !bytes.Equal(b, orig) {
		t.Error("a copy found by the glob was written")
	}
	if b, _ := os.ReadFile(bob); !bytes.Equal(b, super) {
		t.Error("a kubeconfig with other credentials was written")
	}
	var reported []string
	for _, e := range f.log.AllEntries() {
		if strings.Contains(e.Message, "holds the old admin.conf credentials") {
			reported = append(reported, e.Data["PATH"].(string))
		}
	}
	if len(reported) != 1 || reported[0] != alice {
		t.Errorf("reported %v, want only %s", reported, alice)
	}

	// A symlink at the copy's path is never followed.
	if err := os.Remove(copyPath); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(f.root, "elsewhere")
	cur, _ := os.ReadFile(admin)
	if err := os.WriteFile(target, cur, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, copyPath); err != nil {
		t.Fatal(err)
	}
	if _, err := f.renew(t, r, renew.Selection{Names: []string{"admin.conf"}, Force: true}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); !bytes.Equal(b, cur) {
		t.Error("the copy's symlink was followed and its target written")
	}
}
