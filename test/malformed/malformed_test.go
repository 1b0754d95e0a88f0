// Package malformed_test feeds pkirenewd the corpus of malformed inputs in
// testdata/ (certificates, keys, kubeconfigs, manifests, config files,
// kubeadm configs, crictl.yaml): each case replaces one file of a healthy
// node, and pkirenewd must fail with an error naming that file and leave
// every byte on disk as it was.
package malformed_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
	"github.com/pkirenewd/pkirenewd/test/testbin"
)

var pkirenewdBin string

func TestMain(m *testing.M) { testbin.Main(m, &pkirenewdBin) }

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestMalformedCorpus(t *testing.T) {
	cases, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) < 30 {
		t.Fatalf("only %d cases in the corpus", len(cases))
	}
	manifests, _ := filepath.Glob("../../cri/testdata/kubeadm-v1.37.2/*.yaml")
	for _, c := range cases {
		dir := filepath.Join("testdata", c.Name())
		t.Run(c.Name(), func(t *testing.T) {
			t.Parallel()
			target, command, want := read(t, filepath.Join(dir, "target")), read(t, filepath.Join(dir, "command")), read(t, filepath.Join(dir, "want"))
			content, err := os.ReadFile(filepath.Join(dir, "content"))
			if err != nil {
				t.Fatal(err)
			}
			root := t.TempDir()
			kube := filepath.Join(root, "kubernetes")
			if _, err := renewtest.MakePKI(kube, renewtest.Options{Algorithm: "ECDSA-P256"}); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(kube, "manifests"), 0o755); err != nil {
				t.Fatal(err)
			}
			for _, m := range manifests {
				data, _ := os.ReadFile(m)
				if err := os.WriteFile(filepath.Join(kube, "manifests", filepath.Base(m)), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			for _, f := range []string{"config.yaml", "kubeadm.yaml"} {
				if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var path string
			switch {
			case target == "config.yaml" || target == "kubeadm.yaml" || target == "crictl.yaml":
				path = filepath.Join(root, target)
			default:
				path = filepath.Join(kube, target)
			}
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			if command == "crictl" {
				// The runtime endpoint from a broken /etc/crictl.yaml
				// (read before CONTAINER_RUNTIME_ENDPOINT).
				if _, err := cri.ResolveEndpoint("", path); err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("ResolveEndpoint: %v", err)
				}
				return
			}
			before, err := renewtest.HashTree(root)
			if err != nil {
				t.Fatal(err)
			}
			args := strings.Fields(command)
			if args[len(args)-1] == "--kubeadm-config" {
				args = append(args, filepath.Join(root, "kubeadm.yaml"))
			}
			args = append(args, "--config", filepath.Join(root, "config.yaml"), "--pki-dir", filepath.Join(kube, "pki"),
				"--kubeconfig-dir", kube, "--manifests-dir", filepath.Join(kube, "manifests"),
				"--state-dir", filepath.Join(t.TempDir(), "state"), "--cri-endpoint", "unix://"+filepath.Join(root, "no-runtime.sock"))
			out, err := exec.Command(pkirenewdBin, args...).CombinedOutput()
			if err == nil {
				t.Fatalf("pkirenewd %s succeeded on %s:\n%s", command, target, out)
			}
			if !strings.Contains(string(out), want) {
				t.Errorf("the error does not name %s:\n%s", want, out)
			}
			after, _ := renewtest.HashTree(root)
			if d := renewtest.DiffTrees(before, after); d != "" {
				t.Fatalf("bytes changed:\n%s", d)
			}
		})
	}
}
