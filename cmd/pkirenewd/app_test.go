package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
	certutil "k8s.io/client-go/util/cert"

	"github.com/pkirenewd/pkirenewd/config"
	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

// TestMain lets a test run the command as a separate process (as another
// user, for instance) by re-executing the test binary.
func TestMain(m *testing.M) {
	if os.Getenv("PKIRENEWD_TEST_MAIN") == "1" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

type node struct {
	root, pki, kube, state string
}

func newNode(t *testing.T, o renewtest.Options) *node {
	t.Helper()
	if o.Algorithm == "" {
		o.Algorithm = "ECDSA-P256"
	}
	root := t.TempDir()
	l, err := renewtest.MakePKI(filepath.Join(root, "kubernetes"), o)
	if err != nil {
		t.Fatal(err)
	}
	// An empty config file: every value is a default or a flag.
	if err := os.WriteFile(filepath.Join(root, "empty.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return &node{root: root, pki: l.PKIDir, kube: l.KubeconfigDir, state: filepath.Join(root, "state")}
}

func (n *node) args(extra ...string) []string {
	// No static pods unless a test gives its own manifests dir (a later
	// flag wins): the host's /etc/kubernetes/manifests is not this node's.
	// kubeadm's files only, unless a test asks for pkirenewd's own API
	// identity (identity_test.go).
	return append([]string{"--config", filepath.Join(n.root, "empty.yaml"), "--pki-dir", n.pki, "--kubeconfig-dir", n.kube, "--state-dir", n.state,
		"--manifests-dir", filepath.Join(n.root, "no-manifests"), "--api-identity", "admin"}, extra...)
}

func (n *node) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCheckExitCodes(t *testing.T) {
	tests := []struct {
		name string
		o    renewtest.Options
		want int
		args []string
	}{
		{"fresh", renewtest.Options{}, 0, nil},
		{"due", renewtest.Options{NotBefore: time.Now().Add(-300 * 24 * time.Hour)}, 1, nil},
		{"expired", renewtest.Options{NotBefore: time.Now().Add(-400 * 24 * time.Hour)}, 2, nil},
		{"CA within caWarnBefore, renewed by hand", renewtest.Options{CAValidity: 100 * 24 * time.Hour, Validity: 30 * 24 * time.Hour}, 1, []string{"--ca-renewal", "manual"}},
		// Renewed at 2/3 of its life: not yet due at a day, due at 80.
		{"CA of a short life, renewed by the daemon", renewtest.Options{CAValidity: 100 * 24 * time.Hour, Validity: 30 * 24 * time.Hour}, 0, nil},
		{"CA due for its renewal", renewtest.Options{CANotBefore: time.Now().Add(-80 * 24 * time.Hour), CAValidity: 100 * 24 * time.Hour, Validity: 30 * 24 * time.Hour}, 1, nil},
		{"not yet valid", renewtest.Options{NotBefore: time.Now().Add(48 * time.Hour), CANotBefore: time.Now().Add(-24 * time.Hour)}, 2, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, tc.o)
			code, out, stderr := n.run(t, append([]string{"check"}, n.args(tc.args...)...)...)
			if code != tc.want {
				t.Fatalf("exit %d, want %d\n%s\n%s", code, tc.want, out, stderr)
			}
			for _, want := range []string{"CERTIFICATE   ", "RESIDUAL TIME", "EXTERNALLY MANAGED", "RENEW AT", "CERTIFICATE AUTHORITY", "apiserver-kubelet-client", "front-proxy-ca", "super-admin.conf"} {
				if !strings.Contains(out, want) {
					t.Errorf("table lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

// A certificate issued under a clock that was ahead: check says so and
// exits 2, renew replaces it, check is then clean.
func TestNotYetValidCheckThenRenew(t *testing.T) {
	n := newNode(t, renewtest.Options{NotBefore: time.Now().Add(48 * time.Hour), CANotBefore: time.Now().Add(-24 * time.Hour)})
	code, out, stderr := n.run(t, append([]string{"check"}, n.args()...)...)
	if code != 2 || !strings.Contains(out, "now (not valid yet)") {
		t.Fatalf("check: exit %d\n%s\n%s", code, out, stderr)
	}
	if code, out, stderr := n.run(t, append([]string{"renew"}, n.args()...)...); code != 0 || countLines(out, "renewed ") != 12 {
		t.Fatalf("renew: exit %d\n%s\n%s", code, out, stderr)
	}
	if code, out, _ := n.run(t, append([]string{"check"}, n.args()...)...); code != 0 {
		t.Fatalf("check after renew: exit %d\n%s", code, out)
	}
}

// kubeadm's certificatesDir is followed when pkiDir is not set, and a
// manifest naming another place is reported with the choice made.
func TestCertificatesDirFromKubeadmConfig(t *testing.T) {
	root := t.TempDir()
	l, err := renewtest.MakePKI(filepath.Join(root, "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256"})
	if err != nil {
		t.Fatal(err)
	}
	custom := filepath.Join(root, "kubernetes", "custom-pki")
	if err := os.Rename(l.PKIDir, custom); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(root, "kubeadm.yaml")
	if err := os.WriteFile(cfg, []byte("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\ncertificatesDir: "+custom+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	manifests := filepath.Join(root, "manifests")
	apiserver := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-apiserver\n  labels: {component: kube-apiserver}\nspec:\n  containers:\n  - command: [kube-apiserver, --client-ca-file=/etc/kubernetes/pki/ca.crt]\n"
	if err := os.MkdirAll(manifests, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(manifests, "kube-apiserver.yaml"), []byte(apiserver), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(root, "empty.yaml")
	_ = os.WriteFile(empty, nil, 0o644)
	args := []string{"check", "--config", empty, "--kubeconfig-dir", l.KubeconfigDir, "--state-dir", filepath.Join(root, "state"), "--manifests-dir", manifests}
	n := &node{}
	// Without the kubeadm configuration the manifest's (wrong) place is
	// used, and it does not exist: broken, named.
	if code, out, stderr := n.run(t, args...); code != 2 || !strings.Contains(stderr+out, "/etc/kubernetes/pki") {
		t.Fatalf("without kubeadm config: exit %d\n%s\n%s", code, out, stderr)
	}
	// The certificates are fine; with a manifest and no runtime to ask,
	// the apiserver cannot be seen: exit 1, naming it.
	code, out, stderr := n.run(t, append(args, "--kubeadm-config", cfg, "-o", "json")...)
	if code != 1 || !strings.Contains(out, filepath.Join(custom, "apiserver.crt")) || !strings.Contains(out, `"component": "kube-apiserver"`) {
		t.Fatalf("with kubeadm config: exit %d\n%s\n%s", code, out, stderr)
	}
	if !strings.Contains(stderr, "certificatesDir in "+cfg) || !strings.Contains(stderr, "--client-ca-file in "+filepath.Join(manifests, "kube-apiserver.yaml")+" says /etc/kubernetes/pki") {
		t.Errorf("the disagreement is not reported:\n%s", stderr)
	}
}

func TestCheckBroken(t *testing.T) {
	n := newNode(t, renewtest.Options{})
	if err := os.WriteFile(filepath.Join(n.pki, "apiserver.crt"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := n.run(t, append([]string{"check"}, n.args()...)...)
	if code != 2 || !strings.Contains(out, "!BROKEN! apiserver") || !strings.Contains(stderr, "apiserver.crt") {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
}

func TestCheckJSONAndYAML(t *testing.T) {
	n := newNode(t, renewtest.Options{NotBefore: time.Now().Add(-300 * 24 * time.Hour)})
	for _, format := range []string{"json", "yaml"} {
		code, out, stderr := n.run(t, append([]string{"check", "-o", format}, n.args()...)...)
		if code != 1 {
			t.Fatalf("%s: exit %d: %s", format, code, stderr)
		}
		var rep report
		var err error
		if format == "json" {
			err = json.Unmarshal([]byte(out), &rep)
		} else {
			err = yaml.Unmarshal([]byte(out), &rep)
		}
		if err != nil {
			t.Fatalf("%s: %v\n%s", format, err, out)
		}
		if rep.Kind != "CertificateExpirationInfo" || rep.APIVersion != "output.kubeadm.k8s.io/v1alpha3" {
			t.Errorf("%s: kind %q apiVersion %q", format, rep.Kind, rep.APIVersion)
		}
		if len(rep.Certificates) != 12 || len(rep.CertificateAuthorities) != 3 {
			t.Fatalf("%s: %d certs, %d CAs", format, len(rep.Certificates), len(rep.CertificateAuthorities))
		}
		for _, c := range rep.Certificates {
			if c.State != "due" || c.RenewAt == nil || c.ExpirationDate == nil || c.ResidualTime <= 0 || c.CertificateAuthority == "" || c.Path == "" {
				t.Errorf("%s: %+v", format, c)
			}
		}
	}
	if code, _, stderr := n.run(t, append([]string{"check", "-o", "xml"}, n.args()...)...); code != 2 || !strings.Contains(stderr, "xml") {
		t.Errorf("-o xml: exit %d %s", code, stderr)
	}
}

func TestRenewDryRunThenRenew(t *testing.T) {
	n := newNode(t, renewtest.Options{NotBefore: time.Now().Add(-300 * 24 * time.Hour)})
	before, _ := renewtest.HashTree(n.root)
	code, out, stderr := n.run(t, append([]string{"renew", "--dry-run"}, n.args()...)...)
	if code != 0 || countLines(out, "would renew") != 12 || !strings.Contains(out, "nothing was written") {
		t.Fatalf("dry run: exit %d\n%s\n%s", code, out, stderr)
	}
	if after, _ := renewtest.HashTree(n.root); renewtest.DiffTrees(before, after) != "" {
		t.Fatalf("dry run wrote:\n%s", renewtest.DiffTrees(before, after))
	}
	code, out, stderr = n.run(t, append([]string{"renew"}, n.args()...)...)
	if code != 0 || countLines(out, "renewed ") != 12 || !strings.Contains(out, "backed up in "+filepath.Join(n.state, "backups")) {
		t.Fatalf("renew: exit %d\n%s\n%s", code, out, stderr)
	}
	if code, out, _ := n.run(t, append([]string{"check"}, n.args()...)...); code != 0 {
		t.Fatalf("check after renew: exit %d\n%s", code, out)
	}
	code, out, _ = n.run(t, append([]string{"renew"}, n.args()...)...)
	if code != 0 || !strings.Contains(out, "Nothing is due. Next: ") {
		t.Fatalf("second renew: exit %d\n%s", code, out)
	}
}

func TestRenewNamedWithInterspersedFlags(t *testing.T) {
	n := newNode(t, renewtest.Options{NotBefore: time.Now().Add(-time.Hour)})
	args := append([]string{"renew", "apiserver"}, n.args("front-proxy-client", "--force")...)
	code, out, stderr := n.run(t, args...)
	if code != 0 || countLines(out, "renewed ") != 2 {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
	code, _, stderr = n.run(t, append([]string{"renew", "nosuchcert"}, n.args()...)...)
	if code != 1 || !strings.Contains(stderr, "unknown certificate") || !strings.Contains(stderr, "nothing was written") {
		t.Fatalf("unknown name: exit %d %s", code, stderr)
	}
}

func TestConfigFileAndFlagPrecedence(t *testing.T) {
	// 65 days left: due with the default 90d, not with 30d.
	n := newNode(t, renewtest.Options{NotBefore: time.Now().Add(-300 * 24 * time.Hour)})
	cfg := filepath.Join(n.root, "config.yaml")
	if err := os.WriteFile(cfg, []byte("renewBefore: 30d\npkiDir: "+n.pki+"\nkubeconfigDir: "+n.kube+"\nstateDir: "+n.state+"\nmanifestsDir: "+filepath.Join(n.root, "no-manifests")+"\napiIdentity: admin\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, stderr := n.run(t, "check", "--config", cfg); code != 0 {
		t.Fatalf("config renewBefore 30d: exit %d\n%s\n%s", code, out, stderr)
	}
	if code, out, stderr := n.run(t, "check", "--config", cfg, "--renew-before", "90d"); code != 1 {
		t.Fatalf("--renew-before overriding the file: exit %d\n%s\n%s", code, out, stderr)
	}
	if code, _, stderr := n.run(t, "check", "--config", cfg, "--renew-before", "soon"); code != 2 || !strings.Contains(stderr, "--renew-before") {
		t.Fatalf("bad flag value: exit %d %s", code, stderr)
	}
	if err := os.WriteFile(cfg, []byte("renewBefor: 30d\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := n.run(t, "check", "--config", cfg); code != 2 || !strings.Contains(stderr, `unknown key "renewBefor"`) || !strings.Contains(stderr, cfg) {
		t.Fatalf("unknown key: exit %d %s", code, stderr)
	}
	if code, _, stderr := n.run(t, "check", "--config", filepath.Join(n.root, "missing.yaml")); code != 2 || !strings.Contains(stderr, "missing.yaml") {
		t.Fatalf("missing explicit config: exit %d %s", code, stderr)
	}
	if code, _, stderr := n.run(t, append([]string{"check"}, n.args("--pki-dir", filepath.Join(n.root, "nope"))...)...); code != 2 || !strings.Contains(stderr, "nope") {
		t.Fatalf("missing pki dir: exit %d %s", code, stderr)
	}
}

func TestKubeadmConfigFlag(t *testing.T) {
	n := newNode(t, renewtest.Options{Algorithm: "ECDSA-P256", NotBefore: time.Now().Add(-300 * 24 * time.Hour)})
	kcfg := filepath.Join(n.root, "kubeadm.yaml")
	if err := os.WriteFile(kcfg, []byte("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nencryptionAlgorithm: ECDSA-P384\ncertificateValidityPeriod: 2160h\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := n.run(t, append([]string{"renew", "apiserver"}, n.args("--kubeadm-config", kcfg)...)...)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
	want := time.Now().Add(2160 * time.Hour).UTC().Format("Jan 02, 2006")
	if !strings.Contains(out, want) {
		t.Errorf("renewed certificate does not expire on %s:\n%s", want, out)
	}
	if _, err := os.Stat(filepath.Join(n.state, "kubeadm-config.yaml")); err != nil {
		t.Errorf("kubeadm config not cached: %v", err)
	}
	// A broken kubeadm config is an error naming it, nothing is written.
	if err := os.WriteFile(kcfg, []byte("kind: ClusterConfiguration\nencryptionAlgorithm: DSA\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := renewtest.HashTree(n.root)
	code, _, stderr = n.run(t, append([]string{"renew", "--force"}, n.args("--kubeadm-config", kcfg)...)...)
	if code != 1 || !strings.Contains(stderr, kcfg) {
		t.Fatalf("broken kubeadm config: exit %d %s", code, stderr)
	}
	if after, _ := renewtest.HashTree(n.root); renewtest.DiffTrees(before, after) != "" {
		t.Fatal("files changed")
	}
}

// An unreadable key: as root, DAC does not stop reads, so the command runs
// as nobody in a child process.
func TestUnreadableFile(t *testing.T) {
	n := newNode(t, renewtest.Options{})
	var before map[string]string
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		// The test's own temp dirs are 0700; open them up, and make sure
		// the rest of the way is traversable.
		for _, p := range []string{n.root, filepath.Dir(n.root)} {
			if err := os.Chmod(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for p := filepath.Dir(filepath.Dir(n.root)); p != "/"; p = filepath.Dir(p) {
			if st, err := os.Stat(p); err != nil || st.Mode().Perm()&0o005 != 0o005 {
				t.Skipf("%s is not world-traversable; cannot test as nobody", p)
			}
		}
		if err := os.Mkdir(n.state, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(n.state, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		// The test binary sits in a 0700 build dir: give nobody a copy.
		self, err := os.ReadFile(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(filepath.Dir(n.root), "pkirenewd.test")
		if err := os.WriteFile(bin, self, 0o755); err != nil {
			t.Fatal(err)
		}
		before, _ = renewtest.HashTree(filepath.Join(n.root, "kubernetes"))
		cmd = exec.Command(bin, append([]string{"renew", "--force"}, n.args()...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	} else {
		if err := os.Chmod(filepath.Join(n.pki, "apiserver.key"), 0); err != nil {
			t.Fatal(err)
		}
		before, _ = renewtest.HashTree(filepath.Join(n.root, "kubernetes"))
		cmd = exec.Command(os.Args[0], append([]string{"renew", "--force"}, n.args()...)...)
	}
	cmd.Env = append(os.Environ(), "PKIRENEWD_TEST_MAIN=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("renew succeeded with unreadable keys:\n%s", out)
	}
	if _, ok := err.(*exec.ExitError); !ok {
		t.Fatalf("could not run the command: %v", err)
	}
	if !strings.Contains(string(out), "permission denied") || !strings.Contains(string(out), "pki/apiserver.key") {
		t.Errorf("error does not say which file could not be read:\n%s", out)
	}
	if after, _ := renewtest.HashTree(filepath.Join(n.root, "kubernetes")); renewtest.DiffTrees(before, after) != "" {
		t.Fatalf("files changed:\n%s", renewtest.DiffTrees(before, after))
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"version"}, &out, &out); code != 0 || !strings.HasPrefix(out.String(), "pkirenewd ") {
		t.Fatalf("exit %d: %s", code, out.String())
	}
}

func TestShortHumanDuration(t *testing.T) {
	tests := map[time.Duration]string{
		-5 * time.Second:          "<invalid>",
		-500 * time.Millisecond:   "0s",
		30 * time.Second:          "30s",
		59 * time.Minute:          "59m",
		23 * time.Hour:            "23h",
		364 * 24 * time.Hour:      "364d",
		10 * 365 * 24 * time.Hour: "10y",
	}
	for d, want := range tests {
		if got := shortHumanDuration(d); got != want {
			t.Errorf("shortHumanDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func countLines(out, prefix string) int {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// renew --restart checks the runtime and the manifests before it writes.
func TestRenewRestartPreconditions(t *testing.T) {
	n := newNode(t, renewtest.Options{NotBefore: time.Now().Add(-300 * 24 * time.Hour)})
	manifests := filepath.Join(n.root, "manifests")
	if err := os.MkdirAll(manifests, 0o755); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile("../../cri/testdata/kubeadm-v1.37.2/kube-scheduler.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(manifests, "kube-scheduler.yaml"), good, 0o600); err != nil {
		t.Fatal(err)
	}
	before, _ := renewtest.HashTree(n.root)
	code, _, stderr := n.run(t, append([]string{"renew", "--restart"}, n.args("--manifests-dir", manifests, "--cri-endpoint", "unix://"+filepath.Join(n.root, "no.sock"))...)...)
	if code != 1 || !strings.Contains(stderr, "unreachable") || !strings.Contains(stderr, "nothing was written") {
		t.Fatalf("unreachable runtime: exit %d %s", code, stderr)
	}
	if after, _ := renewtest.HashTree(n.root); renewtest.DiffTrees(before, after) != "" {
		t.Fatalf("files changed:\n%s", renewtest.DiffTrees(before, after))
	}
	// A missing manifests directory is checked before anything is written.
	code, _, stderr = n.run(t, append([]string{"renew", "--restart"}, n.args("--manifests-dir", filepath.Join(n.root, "none"))...)...)
	if code != 1 || !strings.Contains(stderr, "nothing was written") || !strings.Contains(stderr, "none") {
		t.Fatalf("missing manifests dir: exit %d %s", code, stderr)
	}
	// A malformed manifest alone would stop only its own component's
	// restart; the runtime is what stops here, and the error names the
	// unusable manifest beside it, so neither hides the other.
	if err := os.WriteFile(filepath.Join(manifests, "etcd.yaml"), []byte("kind: Pod\nspec: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before, _ = renewtest.HashTree(n.root)
	code, _, stderr = n.run(t, append([]string{"renew", "--restart"}, n.args("--manifests-dir", manifests, "--cri-endpoint", "unix://"+filepath.Join(n.root, "no.sock"))...)...)
	if code != 1 || !strings.Contains(stderr, "unreachable") || !strings.Contains(stderr, "etcd.yaml") {
		t.Fatalf("malformed manifest: exit %d %s", code, stderr)
	}
	if after, _ := renewtest.HashTree(n.root); renewtest.DiffTrees(before, after) != "" {
		t.Fatalf("files changed:\n%s", renewtest.DiffTrees(before, after))
	}
	// An unknown name is an error before the runtime is asked, listing
	// the unusable files too.
	code, _, stderr = n.run(t, append([]string{"restart", "kube-nothing"}, n.args("--manifests-dir", manifests)...)...)
	if code != 1 || !strings.Contains(stderr, `no static pod manifest for "kube-nothing" (have: kube-scheduler; unusable: `+filepath.Join(manifests, "etcd.yaml")) {
		t.Fatalf("restart of an unknown component: exit %d %s", code, stderr)
	}
}

// Restarts a renewal still owes show in check and make it exit 1.
func TestCheckShowsOwedRestarts(t *testing.T) {
	n := newNode(t, renewtest.Options{})
	if err := renew.SavePending(n.state, &renew.PendingRestart{Components: []string{"kube-scheduler"}, Kubelet: true}); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := n.run(t, append([]string{"check"}, n.args()...)...)
	if code != 1 || !strings.Contains(out, "Restarts owed by an earlier renewal: kube-scheduler, kubelet") {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
	code, out, _ = n.run(t, append([]string{"check", "-o", "json"}, n.args()...)...)
	if code != 1 || !strings.Contains(out, `"pendingRestarts": [`) {
		t.Fatalf("json: exit %d\n%s", code, out)
	}
	if err := renew.SavePending(n.state, nil); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := n.run(t, append([]string{"check"}, n.args()...)...); code != 0 || strings.Contains(out, "owed") {
		t.Fatalf("nothing owed: exit %d\n%s", code, out)
	}
}

// Copies of admin.conf come from adminKubeconfigCopy and
// adminKubeconfigCopies, in the file or as flags; one that cannot be
// updated is a warning naming it and the renewal still succeeds.
func TestAdminKubeconfigCopies(t *testing.T) {
	n := newNode(t, renewtest.Options{})
	admin, err := os.ReadFile(filepath.Join(n.kube, "admin.conf"))
	if err != nil {
		t.Fatal(err)
	}
	a, b, c, broken := filepath.Join(n.root, "a"), filepath.Join(n.root, "b"), filepath.Join(n.root, "c"), filepath.Join(n.root, "broken")
	for _, p := range []string{a, b, c} {
		if err := os.WriteFile(p, admin, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(broken, []byte("users: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(n.root, "copies.yaml")
	if err := os.WriteFile(cfg, []byte("adminKubeconfigCopy: "+a+"\nadminKubeconfigCopies:\n- "+b+"\n- "+broken+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"renew", "admin.conf", "--force", "--config", cfg, "--pki-dir", n.pki, "--kubeconfig-dir", n.kube, "--state-dir", n.state}
	code, out, stderr := n.run(t, args...)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
	if !strings.Contains(stderr, "level=warning") || !strings.Contains(stderr, "PATH="+broken) {
		t.Errorf("no warning names the broken copy:\n%s", stderr)
	}
	renewed, _ := os.ReadFile(filepath.Join(n.kube, "admin.conf"))
	for p, want := range map[string][]byte{a: renewed, b: renewed, c: admin} {
		if got, _ := os.ReadFile(p); !bytes.Equal(got, want) {
			t.Errorf("%s: renewed=%v, want renewed=%v", p, bytes.Equal(got, renewed), bytes.Equal(want, renewed))
		}
	}
	// The flag replaces the file's list.
	if err := os.WriteFile(c, renewed, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = n.run(t, append(args, "--admin-kubeconfig-copies", c+","+a)...)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
	renewed, _ = os.ReadFile(filepath.Join(n.kube, "admin.conf"))
	for _, p := range []string{a, c} {
		if got, _ := os.ReadFile(p); !bytes.Equal(got, renewed) {
			t.Errorf("%s not renewed by the flag's list", p)
		}
	}
	if got, _ := os.ReadFile(b); bytes.Equal(got, renewed) {
		t.Errorf("%s renewed though the flag replaced the file's list", b)
	}
}

// Flags are typed: a boolean needs no argument, a duration takes days, a
// list repeats, a bad value names the flag before anything runs, and
// --help shows each type and default.
func TestTypedFlags(t *testing.T) {
	n := newNode(t, renewtest.Options{})
	captured := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), args, &out, &errb)
		return code, out.String() + errb.String()
	}
	// A boolean alone, and a path right after it, are two flags.
	if code, out := captured(append([]string{"check", "--etcd-quorum-guard", "--restart-components=false"}, n.args()...)...); code != 0 {
		t.Fatalf("--etcd-quorum-guard --pki-dir …: exit %d\n%s", code, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--renew-before", "soon"}, `invalid argument "soon" for "--renew-before"`},
		{[]string{"--restart-components=maybe"}, `"--restart-components"`},
		{[]string{"--pki-dir", "relative/pki"}, `"--pki-dir"`},
		{[]string{"--lease", "no-slash"}, `"--lease"`},
	} {
		code, out := captured(append([]string{"check"}, append(n.args(), tc.args...)...)...)
		if code != 2 || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d, want 2 naming %s\n%s", tc.args, code, tc.want, out)
		}
	}
	_, help := captured("check", "--help")
	for _, want := range []string{"--renew-before duration", "(default 90d)", "--restart-components ", "--pki-dir path", "--admin-kubeconfig-copies paths"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

// A list flag given twice keeps both values.
func TestListFlagRepeats(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	flags := addKeyFlags(fs)
	if err := fs.Parse([]string{"--admin-kubeconfig-copies", "/root/.kube/config", "--admin-kubeconfig-copies=/srv/admin/kubeconfig", "--renew-before", "30d", "--etcd-quorum-guard=false"}); err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	for _, k := range config.Keys() {
		if fs.Changed(k.Flag) {
			if err := k.Set(&cfg, flags[k.Name].value()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := strings.Join(cfg.AdminKubeconfigCopies, " "); got != "/root/.kube/config /srv/admin/kubeconfig" {
		t.Errorf("copies %q", got)
	}
	if cfg.RenewBefore != 30*24*time.Hour || cfg.EtcdQuorumGuard {
		t.Errorf("renewBefore %v, etcdQuorumGuard %v", cfg.RenewBefore, cfg.EtcdQuorumGuard)
	}
}

// check judges the kubelet's own rotation of its client certificate.
func TestCheckKubeletRotationStuck(t *testing.T) {
	for _, tc := range []struct {
		age  time.Duration
		want string
		code int
	}{
		{10 * 24 * time.Hour, "rotated by kubelet", 0},
		{335 * 24 * time.Hour, "ROTATION STUCK", 1},
	} {
		root := t.TempDir()
		n := newNode(t, renewtest.Options{KubeletPKIDir: filepath.Join(root, "kubelet-pki"), NotBefore: time.Now().Add(-tc.age), Validity: 365 * 24 * time.Hour})
		// Everything else fresh enough not to be due: only the kubelet's
		// own certificate speaks.
		code, out, stderr := n.run(t, append([]string{"check"}, n.args("--renew-before", "1d")...)...)
		if !strings.Contains(out, tc.want) || (tc.code == 1 && code == 0) || (tc.code == 0 && code != 0) {
			t.Errorf("issued %v ago: exit %d, want %d and %q\n%s\n%s", tc.age, code, tc.code, tc.want, out, stderr)
		}
		if tc.code == 1 && !strings.Contains(stderr, "rotation is stuck") {
			t.Errorf("the stuck rotation is not logged:\n%s", stderr)
		}
	}
}

// kubeletNode adds a kubelet to n: its configuration (serving on a
// loopback TLS listener of the test) and the self-signed pair the real
// kubelet generates; served is the certificate file the listener serves.
func kubeletNode(t *testing.T, n *node, extraConfig string, served *atomic.Pointer[string]) (configPath, certDir string) {
	t.Helper()
	certDir = filepath.Join(n.root, "kubelet", "pki")
	if err := os.MkdirAll(certDir, 0o755); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey("node-1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(certDir, "kubelet.crt"), certPEM, 0o644)
	_ = os.WriteFile(filepath.Join(certDir, "kubelet.key"), keyPEM, 0o600)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		p := *served.Load()
		c, err := tls.LoadX509KeyPair(p, filepath.Join(filepath.Dir(p), "kubelet.key"))
		return &c, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	configPath = filepath.Join(n.root, "kubelet", "config.yaml")
	cfg := fmt.Sprintf("kind: KubeletConfiguration\naddress: 127.0.0.1\nport: %d\n%s", port, extraConfig)
	if err := os.WriteFile(configPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return configPath, certDir
}

func TestCheckKubeletServingCert(t *testing.T) {
	n := newNode(t, renewtest.Options{})
	var served atomic.Pointer[string]
	cfgPath, certDir := kubeletNode(t, n, "", &served)
	crt := filepath.Join(certDir, "kubelet.crt")
	served.Store(&crt)
	args := n.args("--kubelet-config", cfgPath, "--kubelet-cert-dir", certDir, "--restart-components=false")
	code, out, stderr := n.run(t, append([]string{"check"}, args...)...)
	if code != 0 || countLines(out, "kubelet-serving ") != 1 {
		t.Fatalf("serving the file: exit %d\n%s\n%s", code, out, stderr)
	}
	var rep report
	_, js, _ := n.run(t, append([]string{"check", "-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(js), &rep); err != nil || rep.KubeletServing == nil || rep.KubeletServing.Stale || rep.KubeletServing.FileSerial == "" {
		t.Fatalf("json: %v %+v", err, rep.KubeletServing)
	}

	// Renewed; the kubelet (the listener) reloads it. Then it serves
	// the pair from before (as a kubelet that did not reload would):
	// check must not say ok.
	old := filepath.Join(n.root, "old", "kubelet.crt")
	_ = os.MkdirAll(filepath.Dir(old), 0o755)
	for _, f := range []string{"kubelet.crt", "kubelet.key"} {
		data, _ := os.ReadFile(filepath.Join(certDir, f))
		_ = os.WriteFile(filepath.Join(filepath.Dir(old), f), data, 0o600)
	}
	if code, out, stderr := n.run(t, append([]string{"renew", "kubelet-serving"}, args...)...); code != 0 || !strings.Contains(stderr, "reloaded its renewed serving certificate") {
		t.Fatalf("renew kubelet-serving: %d\n%s\n%s", code, out, stderr)
	}
	served.Store(&old)
	code, out, _ = n.run(t, append([]string{"check"}, args...)...)
	if code != 1 || !strings.Contains(out, "STALE kubelet: serves serial") {
		t.Errorf("serving an older certificate than the file: exit %d\n%s", code, out)
	}

	// monitor: reported only, and renewing it by name is refused.
	mon := append(args, "--kubelet-serving-cert", "monitor")
	code, out, _ = n.run(t, append([]string{"check"}, mon...)...)
	if code != 0 || !strings.Contains(out, "kubeletServingCert: monitor") || !strings.Contains(out, "reported only") {
		t.Errorf("monitor: exit %d\n%s", code, out)
	}
	if code, _, stderr := n.run(t, append([]string{"renew", "kubelet-serving"}, mon...)...); code != 1 || !strings.Contains(stderr, "kubeletServingCert: monitor") {
		t.Errorf("renew under monitor: exit %d %s", code, stderr)
	}
}

func TestCheckKubeletServingBootstrap(t *testing.T) {
	n := newNode(t, renewtest.Options{})
	var served atomic.Pointer[string]
	cfgPath, certDir := kubeletNode(t, n, "serverTLSBootstrap: true\n", &served)
	if err := os.Rename(filepath.Join(certDir, "kubelet.crt"), filepath.Join(certDir, "kubelet-server-current.pem")); err != nil {
		t.Fatal(err)
	}
	code, out, _ := n.run(t, append([]string{"check"}, n.args("--kubelet-config", cfgPath, "--kubelet-cert-dir", certDir, "--restart-components=false")...)...)
	if code != 0 || !strings.Contains(out, "CSR approver's job") || !strings.Contains(out, "rotated by kubelet") {
		t.Errorf("serverTLSBootstrap: exit %d\n%s", code, out)
	}
}

// While kubeadm upgrades the node check says so, in the table and in
// JSON, and exits 1; the backups a finished upgrade keeps say nothing.
func TestCheckNotesAKubeadmUpgrade(t *testing.T) {
	n := newNode(t, renewtest.Options{})
	manifests := filepath.Join(n.kube, "manifests")
	args := n.args("--manifests-dir", manifests, "--restart-components=false")
	tmp := filepath.Join(n.kube, "tmp")
	backup := filepath.Join(tmp, "kubeadm-backup-manifests-2026-11-29-10-46-02")
	if err := os.MkdirAll(backup, 0o700); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := n.run(t, append([]string{"check"}, args...)...); code != 0 || strings.Contains(out, "kubeadm upgrade") {
		t.Fatalf("after an upgrade: exit %d\n%s", code, out)
	}
	if err := os.Mkdir(filepath.Join(tmp, "kubeadm-upgraded-manifests42"), 0o700); err != nil {
		t.Fatal(err)
	}
	// A hold is shown with its reason and end, and is not "fine".
	code, out, _ := n.run(t, append([]string{"check"}, args...)...)
	if code != 1 || !strings.Contains(out, "HELD (kubeadm-upgrade) until ") || !strings.Contains(out, "kubeadm upgrade in progress (kubeadm-upgraded-manifests42") {
		t.Fatalf("during an upgrade: exit %d\n%s", code, out)
	}
	code, out, _ = n.run(t, append([]string{"check", "-o", "json"}, args...)...)
	if code != 1 || !strings.Contains(out, `"kubeadmUpgrade": "kubeadm upgrade in progress (kubeadm-upgraded-manifests42`) || !strings.Contains(out, `"reason": "kubeadm-upgrade"`) {
		t.Fatalf("json: exit %d\n%s", code, out)
	}
}

// A drop-in written for an earlier build keeps working: the value is
// applied, and the warning names the form to write.
func TestOldBooleanFlagForm(t *testing.T) {
	n := newNode(t, renewtest.Options{})
	for _, args := range [][]string{
		append([]string{"check", "--restart-components", "false"}, n.args()...),
		append(append([]string{"--restart-components", "false"}, n.args()...), "check"),
	} {
		var out, errb bytes.Buffer
		o := &options{stdout: &out, stderr: &errb, now: time.Now, flagValues: map[string]*keyFlag{}}
		if code := o.execute(context.Background(), args); code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out.String(), errb.String())
		}
		if o.cfg.RestartComponents {
			t.Errorf("%v: restartComponents still true", args)
		}
		if want := "--restart-components false: write --restart-components=false (the form with a space is deprecated)"; !strings.Contains(errb.String(), "level=warning") || !strings.Contains(errb.String(), want) {
			t.Errorf("%v: no warning %q:\n%s", args, want, errb.String())
		}
	}
	// The documented forms say nothing.
	var errb bytes.Buffer
	if code := run(context.Background(), append([]string{"check", "--restart-components=false"}, n.args()...), &bytes.Buffer{}, &errb); code != 0 || strings.Contains(errb.String(), "deprecated") {
		t.Errorf("--restart-components=false: exit %d\n%s", code, errb.String())
	}
}

func TestRenewCAThenCheckShowsAnOldHolder(t *testing.T) {
	n := newNode(t, renewtest.Options{})
	sched := filepath.Join(n.kube, "scheduler.conf")
	before, err := os.ReadFile(sched)
	if err != nil {
		t.Fatal(err)
	}
	if code, out, stderr := n.run(t, append([]string{"renew", "ca"}, n.args()...)...); code != 0 {
		t.Fatalf("renew ca: exit %d\n%s\n%s", code, out, stderr)
	}
	if code, out, stderr := n.run(t, append([]string{"check"}, n.args("--cri-endpoint", "unix:///nonexistent")...)...); strings.Contains(out, "OLD CA") || code == 2 {
		t.Fatalf("after renew ca: exit %d, an old holder left\n%s\n%s", code, out, stderr)
	}
	// A restore from an old backup puts the old CA back in one kubeconfig.
	if err := os.WriteFile(sched, before, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ := n.run(t, append([]string{"check"}, n.args()...)...)
	if code != 1 || !strings.Contains(out, "OLD CA ca: "+sched+" (cluster kubernetes) carries serial") {
		t.Fatalf("old holder: exit %d\n%s", code, out)
	}
	if code, out, stderr := n.run(t, append([]string{"renew"}, n.args()...)...); code != 0 {
		t.Fatalf("renew: exit %d\n%s\n%s", code, out, stderr)
	}
	if _, out, _ := n.run(t, append([]string{"check"}, n.args()...)...); strings.Contains(out, "OLD CA") {
		t.Fatalf("the old holder was not brought along:\n%s", out)
	}
}
