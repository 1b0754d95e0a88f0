package renew_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"gopkg.in/yaml.v3"

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
		o.AdminCopies, o.AdminCopyGlob = []string{copyPath}, filepath.Join(users, "*", ".kube", "config")
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

// mergedKubeconfig is what `KUBECONFIG=other:admin.conf kubectl config
// view --flatten` makes: another cluster first and current, admin.conf's
// cluster, context and user after it.
func mergedKubeconfig(t *testing.T, admin, other []byte) []byte {
	t.Helper()
	// kubeadm's layout: clusters, contexts, current-context, kind,
	// preferences, users.
	between := func(s, from, to string) string {
		_, rest, ok := strings.Cut(s, "\n"+from+"\n")
		body, _, ok2 := strings.Cut(rest, "\n"+to)
		if !ok || !ok2 {
			t.Fatalf("fixture: no %s", from)
		}
		return body + "\n"
	}
	a, o := string(admin)+"end", string(other)+"end"
	rename := strings.NewReplacer("name: kubernetes\n", "name: staging\n", "cluster: kubernetes\n", "cluster: staging\n", "@kubernetes", "@staging").Replace
	return []byte("apiVersion: v1\nclusters:\n" + rename(between(o, "clusters:", "contexts:")) + between(a, "clusters:", "contexts:") +
		"contexts:\n" + between(a, "contexts:", "current-context:") + rename(between(o, "contexts:", "current-context:")) +
		"current-context: kubernetes-super-admin@staging\nkind: Config\npreferences: {}\nusers:\n" +
		between(a, "users:", "end") + between(o, "users:", "end"))
}

// In a merged copy the users entry with admin.conf's old credentials is
// renewed even when another context is current, and every other byte
// stays; each configured copy is updated (here a merged YAML one and a
// compact JSON one); a copy with other credentials is not touched; a
// copy that cannot be updated is a warning naming it, not a failure; a
// merged copy found only by the glob is reported, never written.
func TestAdminConfMergedCopies(t *testing.T) {
	f := newFixture(t, renewtest.Options{})
	// The other cluster's credentials: another PKI's super-admin.
	other, err := renewtest.MakePKI(filepath.Join(f.root, "staging"), renewtest.Options{Algorithm: "ECDSA-P256"})
	if err != nil {
		t.Fatal(err)
	}
	admin := filepath.Join(f.layout.KubeconfigDir, "admin.conf")
	orig, _ := os.ReadFile(admin)
	otherConf, _ := os.ReadFile(filepath.Join(other.KubeconfigDir, "super-admin.conf"))
	merged := mergedKubeconfig(t, orig, otherConf)
	var v any
	if err := yaml.Unmarshal(merged, &v); err != nil {
		t.Fatalf("fixture: %v\n%s", err, merged)
	}
	asJSON, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(f.root, "copies")
	if err := os.MkdirAll(filepath.Join(dir, "home", "carol"), 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"merged.yaml":       merged,
		"merged.json":       asJSON,
		"other-only.conf":   otherConf,
		"broken.conf":       []byte("users: [{name: a\n"),
		"home/carol/config": merged,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "a-directory"), 0o700); err != nil {
		t.Fatal(err)
	}
	configured := []string{"merged.yaml", "merged.json", "other-only.conf", "broken.conf", "a-directory", "missing.conf"}
	var paths []string
	for _, c := range configured {
		paths = append(paths, filepath.Join(dir, c))
	}
	r := f.renewer(func(o *renew.Options) {
		o.AdminCopies, o.AdminCopyGlob = paths, filepath.Join(dir, "home", "*", "config")
	})
	if _, err := f.renew(t, r, renew.Selection{Names: []string{"admin.conf"}, Force: true}); err != nil {
		t.Fatalf("a broken copy failed the renewal: %v", err)
	}

	renewed, _ := os.ReadFile(admin)
	oldCert, oldKey := credLines(t, orig)
	newCert, newKey := credLines(t, renewed)
	for _, name := range []string{"merged.yaml", "merged.json"} {
		got, _ := os.ReadFile(filepath.Join(dir, name))
		want := bytes.Replace(bytes.Replace(files[name], oldCert, newCert, 1), oldKey, newKey, 1)
		if bytes.Equal(want, files[name]) {
			t.Fatalf("fixture: %s has no admin.conf credentials", name)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: not admin.conf's entry alone renewed:\n%s", name, got)
		}
	}
	for _, name := range []string{"other-only.conf", "broken.conf", "home/carol/config"} {
		if got, _ := os.ReadFile(filepath.Join(dir, name)); !bytes.Equal(got, files[name]) {
			t.Errorf("%s was written", name)
		}
	}
	warned := map[string]string{}
	for _, e := range f.log.AllEntries() {
		if e.Level <= logrus.WarnLevel {
			warned[e.Data["PATH"].(string)] = e.Message
		}
	}
	for _, name := range []string{"broken.conf", "a-directory", "home/carol/config"} {
		if _, ok := warned[filepath.Join(dir, name)]; !ok {
			t.Errorf("no warning names %s", name)
		}
	}
	if len(warned) != 3 {
		t.Errorf("warnings: %v", warned)
	}
	if m := warned[filepath.Join(dir, "home", "carol", "config")]; !strings.Contains(m, "not touched") {
		t.Errorf("the glob's copy: %q", m)
	}
}

// credLines returns the base64 of the current user's certificate and key.
func credLines(t *testing.T, conf []byte) (cert, key []byte) {
	t.Helper()
	for _, l := range strings.Split(string(conf), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "client-certificate-data: "); ok {
			cert = []byte(v)
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "client-key-data: "); ok {
			key = []byte(v)
		}
	}
	if cert == nil || key == nil {
		t.Fatal("fixture: no embedded credentials")
	}
	return cert, key
}
