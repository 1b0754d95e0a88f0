package kubeadm_test

// What real control-plane nodes carry beyond what kubeadm lays down: each
// case starts from a PKI and kubeconfigs made by the real kubeadm, adds one
// thing found on real nodes, runs the real pkirenewd binary and checks the
// whole tree afterwards. Either the renewal goes through and keeps what
// the node had (forms, owners, ACLs, attributes), or it is refused with an
// error naming the file and not a byte changed, nothing staged, no
// transaction left behind.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

const fastAlg = "encryptionAlgorithm: ECDSA-P256\n"

// runPkirenewd runs the binary on n with a config file and returns its exit
// code and output; it never hangs longer than a minute.
func runPkirenewd(t *testing.T, n *node, cfg string, args ...string) (int, string) {
	t.Helper()
	return runPkirenewdAs(t, n, nil, cfg, args...)
}

// unitCapabilities is `setpriv` run with the bounding set of the shipped
// unit: the binary then has exactly the capabilities it has under systemd.
func unitCapabilities(t *testing.T) []string {
	t.Helper()
	needTool(t, "setpriv")
	data, err := os.ReadFile("../../systemd/pkirenewd.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapabilityBoundingSet="); ok {
			set := "-all"
			for _, c := range strings.Fields(v) {
				set += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
			}
			return []string{"setpriv", "--bounding-set=" + set, "--inh-caps=-all", "--"}
		}
	}
	t.Fatal("the unit sets no CapabilityBoundingSet")
	return nil
}

func runPkirenewdAs(t *testing.T, n *node, prefix []string, cfg string, args ...string) (int, string) {
	t.Helper()
	cfgPath := filepath.Join(n.root, "pkirenewd.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// The file-level promises, without the API: no identity of its own.
	all := append(args, "--config", cfgPath, "--api-identity", "admin", "--pki-dir", n.pki(), "--kubeconfig-dir", n.kube(), "--state-dir", n.state(), "--kubeadm-config", n.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	argv := append(append(append([]string{}, prefix...), pkirenewdBin), all...)
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("pkirenewd %s hung:\n%s", strings.Join(args, " "), out)
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	case err != nil:
		t.Fatal(err)
	}
	return 0, string(out)
}

func needTool(t *testing.T, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed", tool)
		}
		t.Skipf("%s is not installed", tool)
	}
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func hashTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	h, err := renewtest.HashTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// untouched proves a refused renewal left no trace: every file as before,
// no staged file, no transaction journal.
func untouched(t *testing.T, n *node, before map[string]string) {
	t.Helper()
	if d := renewtest.DiffTrees(before, hashTree(t, n.kube())); d != "" {
		t.Errorf("files changed:\n%s", d)
	}
	noLeftovers(t, n)
}

func noLeftovers(t *testing.T, n *node) {
	t.Helper()
	_ = filepath.WalkDir(n.kube(), func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".pkirenewd-") {
			t.Errorf("staged file left behind: %s", p)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(n.state(), "journal.json")); err == nil {
		t.Error("a transaction journal was left behind")
	}
}

// renewedAll proves a renewal went through: every leaf has a new key and
// the PKI is consistent.
func renewedAll(t *testing.T, n *node, old map[string]*renew.Item) {
	t.Helper()
	now := inventory(t, n)
	for name, it := range now {
		if it.Kind == renew.KindCA || it.RotatedBy != "" {
			continue
		}
		if bytes.Equal(it.Cert.Raw, old[name].Cert.Raw) {
			t.Errorf("%s was not renewed", name)
		}
	}
	noLeftovers(t, n)
}

// kubeconfigDoc parses a kubeconfig in any form into plain data with the
// credential values of every user blanked, so two versions compare equal
// when nothing but the credentials changed.
func kubeconfigDoc(t *testing.T, p string) any {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	users, _ := doc["users"].([]any)
	for _, u := range users {
		if m, ok := u.(map[string]any)["user"].(map[string]any); ok {
			for _, k := range []string{"client-certificate-data", "client-key-data"} {
				if _, ok := m[k]; ok {
					m[k] = "(credential)"
				}
			}
		}
	}
	return doc
}

// Kubeconfig forms kubectl reads; each must be renewed with nothing else
// in the document changed.
func TestRealNodeKubeconfigForms(t *testing.T) {
	requireKubeadm(t)
	toJSON := func(indent bool) func([]byte) []byte {
		return func(in []byte) []byte {
			var doc map[string]any
			if err := yaml.Unmarshal(in, &doc); err != nil {
				t.Fatal(err)
			}
			var out []byte
			var err error
			if indent {
				out, err = json.MarshalIndent(doc, "", "    ")
			} else {
				out, err = json.Marshal(doc)
			}
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
	}
	forms := []struct {
		name    string
		convert func([]byte) []byte
	}{
		{"compact JSON", toJSON(false)},
		{"pretty JSON", toJSON(true)},
		{"CRLF and comments", func(in []byte) []byte {
			return []byte("# copied from the first control-plane node\r\n" + strings.ReplaceAll(string(in), "\n", "  # kept\r\n"))
		}},
		{"flow YAML", func(in []byte) []byte {
			var doc yaml.Node
			if err := yaml.Unmarshal(in, &doc); err != nil {
				t.Fatal(err)
			}
			var flow func(*yaml.Node)
			flow = func(n *yaml.Node) {
				if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
					n.Style = yaml.FlowStyle
				}
				for _, c := range n.Content {
					flow(c)
				}
			}
			flow(doc.Content[0])
			out, err := yaml.Marshal(&doc)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}},
	}
	for _, f := range forms {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			n := kubeadmNode(t, fastAlg, nil)
			old := inventory(t, n)
			var before = map[string]any{}
			for _, conf := range []string{"admin.conf", "controller-manager.conf", "scheduler.conf"} {
				p := filepath.Join(n.kube(), conf)
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, f.convert(data), 0o600); err != nil {
					t.Fatal(err)
				}
				before[conf] = kubeconfigDoc(t, p)
			}
			if code, out := runPkirenewd(t, n, "", "renew", "--force"); code != 0 {
				t.Fatalf("renew: exit %d\n%s", code, out)
			}
			renewedAll(t, n, old)
			for conf, doc := range before {
				if after := kubeconfigDoc(t, filepath.Join(n.kube(), conf)); !reflect.DeepEqual(doc, after) {
					t.Errorf("%s: more than the credentials changed:\nbefore %v\nafter  %v", conf, doc, after)
				}
			}
			// kubeadm reads the rewritten kubeconfigs too.
			for _, c := range checkExpiration(t, n).Certificates {
				if c.Missing {
					t.Errorf("kubeadm: %s missing after the renewal", c.Name)
				}
			}
		})
	}
}

// Targets the file system will not let us replace: refused before the
// commit, nothing changed, nothing left behind.
func TestRealNodeUnwritableTargets(t *testing.T) {
	requireKubeadm(t)
	renewtest.NeedRoot(t)
	needTool(t, "chattr")
	tests := []struct {
		name, file string
		set        func(t *testing.T, p string)
		// unwritable: check names the directory it cannot write and
		// exits 1 (the write set's probe sees a read-only mount; a flag
		// on one file is the renewal's to find).
		unwritable bool
	}{
		{"immutable certificate", "apiserver.crt", func(t *testing.T, p string) { renewtest.Chattr(t, "i", p) }, false},
		{"append-only key", "apiserver.key", func(t *testing.T, p string) { renewtest.Chattr(t, "a", p) }, false},
		{"read-only mount", "", renewtest.ReadOnlyBind, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := kubeadmNode(t, fastAlg, nil)
			target := filepath.Join(n.pki(), tc.file)
			before := hashTree(t, n.kube())
			tc.set(t, target)
			code, out := runPkirenewd(t, n, "", "renew", "--force")
			if code == 0 {
				t.Fatalf("renew went through:\n%s", out)
			}
			if !strings.Contains(out, target) {
				t.Errorf("the error does not name %s:\n%s", target, out)
			}
			if strings.Contains(out, "rolling back failed") {
				t.Errorf("spurious rollback failure:\n%s", out)
			}
			untouched(t, n, before)
			code, out = runPkirenewd(t, n, "", "check")
			switch {
			case tc.unwritable && (code != 1 || !strings.Contains(out, "UNWRITABLE "+target)):
				t.Errorf("check after the refusal: exit %d, want 1 naming %s unwritable\n%s", code, target, out)
			case !tc.unwritable && code != 0:
				t.Errorf("check after the refusal: exit %d\n%s", code, out)
			}
		})
	}
}

// Owners, modes, POSIX ACLs and extended attributes of replaced files are
// kept, and a private key never becomes readable by more people: as root,
// and with only the capabilities the shipped unit leaves.
func TestRealNodeMetadataKept(t *testing.T) {
	requireKubeadm(t)
	renewtest.NeedRoot(t)
	needTool(t, "setfacl")
	needTool(t, "setfattr")
	t.Run("root", func(t *testing.T) { metadataKept(t, nil) })
	t.Run("the unit's capabilities", func(t *testing.T) { metadataKept(t, unitCapabilities(t)) })
}

func metadataKept(t *testing.T, prefix []string) {
	n := kubeadmNode(t, fastAlg, nil)
	old := inventory(t, n)
	key := filepath.Join(n.pki(), "apiserver.key")
	crt := filepath.Join(n.pki(), "apiserver.crt")
	foreign := filepath.Join(n.pki(), "front-proxy-client.key")
	if err := os.Chown(key, 0, 1000); err != nil {
		t.Fatal(err)
	}
	sh(t, "setfacl", "-m", "u:65534:r", key)
	if err := os.Chown(foreign, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	// 0600 and not root's: only CAP_DAC_READ_SEARCH lets root read it.
	if err := os.Chmod(foreign, 0o600); err != nil {
		t.Fatal(err)
	}
	sh(t, "setfattr", "-n", "user.backup-policy", "-v", "nightly", crt)
	acl := sh(t, "getfacl", "-cn", key)
	if code, out := runPkirenewdAs(t, n, prefix, "", "renew", "--force"); code != 0 {
		t.Fatalf("renew: exit %d\n%s", code, out)
	}
	renewedAll(t, n, old)
	if got := sh(t, "getfacl", "-cn", key); got != acl {
		t.Errorf("ACL of %s changed:\nbefore %s\nafter  %s", key, acl, got)
	}
	st := stat(t, key)
	if st.Gid != 1000 || st.Mode&0o077 != 0o040 { // group bits = the ACL mask r--
		t.Errorf("%s: gid %d mode %o", key, st.Gid, st.Mode&0o777)
	}
	if st := stat(t, foreign); st.Uid != 1000 || st.Gid != 1000 || st.Mode&0o777 != 0o600 {
		t.Errorf("%s: %d:%d %o, want 1000:1000 600", foreign, st.Uid, st.Gid, st.Mode&0o777)
	}
	if got := strings.TrimSpace(sh(t, "getfattr", "--absolute-names", "--only-values", "-n", "user.backup-policy", crt)); got != "nightly" {
		t.Errorf("user.backup-policy of %s: %q", crt, got)
	}
}

func stat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

// kubeadm's certificatesDir is where pkirenewd looks when pkiDir is unset.
func TestRealNodeCustomCertificatesDir(t *testing.T) {
	requireKubeadm(t)
	n := kubeadmNode(t, fastAlg, nil)
	custom := filepath.Join(n.kube(), "custom-pki")
	if err := os.Rename(n.pki(), custom); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(n.root, "cluster.yaml")
	if err := os.WriteFile(cfg, []byte("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\ncertificatesDir: "+custom+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(n.root, "empty.yaml")
	_ = os.WriteFile(empty, nil, 0o600)
	out, err := exec.Command(pkirenewdBin, "renew", "--force", "--config", empty, "--kubeconfig-dir", n.kube(), "--state-dir", n.state(),
		"--kubeadm-config", cfg, "--manifests-dir", filepath.Join(n.root, "none")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), filepath.Join(custom, "apiserver.crt")) {
		t.Fatalf("renew with certificatesDir %s: %v\n%s", custom, err, out)
	}
}

// A merged ~/.kube/config (admin.conf's user next to another cluster's,
// the other one current) follows the renewal; the other entries stay.
func TestRealNodeMergedAdminCopy(t *testing.T) {
	requireKubeadm(t)
	n := kubeadmNode(t, fastAlg, nil)
	data, err := os.ReadFile(filepath.Join(n.kube(), "admin.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	doc["clusters"] = append(doc["clusters"].([]any), map[string]any{"name": "staging", "cluster": map[string]any{"server": "https://203.0.113.5:6443"}})
	doc["users"] = append(doc["users"].([]any), map[string]any{"name": "staging-admin", "user": map[string]any{"token": "not-a-secret"}})
	doc["contexts"] = append(doc["contexts"].([]any), map[string]any{"name": "staging", "context": map[string]any{"cluster": "staging", "user": "staging-admin"}})
	doc["current-context"] = "staging"
	merged, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(n.root, "root/.kube/config")
	if err := os.MkdirAll(filepath.Dir(copyPath), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyPath, merged, 0o600); err != nil {
		t.Fatal(err)
	}
	before := kubeconfigDoc(t, copyPath)
	if code, out := runPkirenewd(t, n, "adminKubeconfigCopies: ["+copyPath+"]\n", "renew", "--force"); code != 0 {
		t.Fatalf("renew: exit %d\n%s", code, out)
	}
	if after := kubeconfigDoc(t, copyPath); !reflect.DeepEqual(before, after) {
		t.Errorf("more than the admin credentials changed in the copy:\nbefore %v\nafter  %v", before, after)
	}
	admin := userCreds(t, filepath.Join(n.kube(), "admin.conf"), "kubernetes-admin")
	if got := userCreds(t, copyPath, "kubernetes-admin"); got != admin {
		t.Error("the copy's kubernetes-admin does not carry the renewed admin.conf credentials")
	}
}

func userCreds(t *testing.T, p, user string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Users []struct {
			Name string            `yaml:"name"`
			User map[string]string `yaml:"user"`
		} `yaml:"users"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	for _, u := range doc.Users {
		if u.Name == user {
			return u.User["client-certificate-data"] + u.User["client-key-data"]
		}
	}
	t.Fatalf("%s: no user %s", p, user)
	return ""
}

// Files no real node has: a certificate of gigabytes, a FIFO where the
// kubelet's certificate should be. Each is an error naming the file, fast,
// and the rest of the node is still reported.
func TestRealNodeNonFiles(t *testing.T) {
	requireKubeadm(t)
	t.Run("oversize certificate", func(t *testing.T) {
		n := kubeadmNode(t, fastAlg, nil)
		big := filepath.Join(n.pki(), "front-proxy-client.crt")
		if err := os.Truncate(big, 3<<30); err != nil { // sparse
			t.Fatal(err)
		}
		code, out := runPkirenewd(t, n, "", "check")
		if code != 2 || !strings.Contains(out, big) || !strings.Contains(out, "apiserver ") {
			t.Fatalf("check: exit %d\n%s", code, out)
		}
	})
	t.Run("FIFO as the kubelet's certificate", func(t *testing.T) {
		n := kubeadmNode(t, fastAlg, nil)
		fifo := filepath.Join(n.root, "var/lib/kubelet/pki/kubelet-client-current.pem")
		if err := os.MkdirAll(filepath.Dir(fifo), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		conf := "apiVersion: v1\nkind: Config\nclusters:\n- name: kubernetes\n  cluster:\n    server: https://192.0.2.10:6443\ncontexts:\n- name: system:node:node1@kubernetes\n  context: {cluster: kubernetes, user: system:node:node1}\ncurrent-context: system:node:node1@kubernetes\nusers:\n- name: system:node:node1\n  user:\n    client-certificate: " + fifo + "\n    client-key: " + fifo + "\n"
		if err := os.WriteFile(filepath.Join(n.kube(), "kubelet.conf"), []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out := runPkirenewd(t, n, "", "check")
		if code != 2 || !strings.Contains(out, fifo) {
			t.Fatalf("check: exit %d\n%s", code, out)
		}
	})
}

// A certificate kubeadm issued while the clock was two days ahead (made
// here by re-signing kubeadm's apiserver certificate with NotBefore in
// the future): check says it is not valid yet and exits 2, renew replaces
// it at once, and check is clean.
func TestRealNodeNotYetValid(t *testing.T) {
	requireKubeadm(t)
	n := kubeadmNode(t, fastAlg, nil)
	crtPath := filepath.Join(n.pki(), "apiserver.crt")
	inv := inventory(t, n)
	ca, leaf := inv["ca"], inv["apiserver"]
	caKey, err := renewtest.ReadKey(filepath.Join(n.pki(), "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := *leaf.Cert
	tmpl.NotBefore = time.Now().Add(48 * time.Hour)
	tmpl.NotAfter = tmpl.NotBefore.Add(365 * 24 * time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca.Cert, leaf.Cert.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(crtPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := runPkirenewd(t, n, "", "check", "-o", "yaml")
	if code != 2 || !strings.Contains(out, "state: notyetvalid") {
		t.Fatalf("check: exit %d, want 2 with a notyetvalid item\n%s", code, out)
	}
	if code, out := runPkirenewd(t, n, "", "renew"); code != 0 || !strings.Contains(out, "renewed apiserver ") {
		t.Fatalf("renew: exit %d\n%s", code, out)
	}
	if got := inventory(t, n)["apiserver"].Cert; got.NotBefore.After(time.Now()) {
		t.Errorf("still not valid before %v", got.NotBefore)
	}
	if code, out := runPkirenewd(t, n, "", "check"); code != 0 {
		t.Errorf("check after the renewal: exit %d\n%s", code, out)
	}
}
