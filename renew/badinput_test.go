package renew_test

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

// badInputs are the ways a node's files go wrong. Each must stop the
// renewal with an error that names the offending file, and leave every byte
// of the PKI (and the state dir) as it was.
func badInputs() []struct {
	name    string
	mutate  func(t *testing.T, f *fixture)
	wantErr string // substring that identifies the file
} {
	pki := func(f *fixture, rel string) string { return filepath.Join(f.layout.PKIDir, rel) }
	conf := func(f *fixture, rel string) string { return filepath.Join(f.layout.KubeconfigDir, rel) }
	write := func(t *testing.T, p string, data []byte) {
		t.Helper()
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	read := func(t *testing.T, p string) []byte {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	editConf := func(old, new string) func(t *testing.T, f *fixture) {
		return func(t *testing.T, f *fixture) {
			p := conf(f, "admin.conf")
			s := string(read(t, p))
			if !strings.Contains(s, old) {
				t.Fatalf("admin.conf has no %q", old)
			}
			write(t, p, []byte(strings.Replace(s, old, new, 1)))
		}
	}
	other := func(t *testing.T) renewtest.Layout {
		l, err := renewtest.MakePKI(t.TempDir(), renewtest.Options{Algorithm: "ECDSA-P256"})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	return []struct {
		name    string
		mutate  func(t *testing.T, f *fixture)
		wantErr string
	}{
		{"truncated certificate PEM", func(t *testing.T, f *fixture) {
			b := read(t, pki(f, "apiserver.crt"))
			write(t, pki(f, "apiserver.crt"), b[:len(b)/2])
		}, "apiserver.crt"},
		{"empty certificate", func(t *testing.T, f *fixture) { write(t, pki(f, "apiserver.crt"), nil) }, "apiserver.crt"},
		{"certificate is not PEM", func(t *testing.T, f *fixture) { write(t, pki(f, "front-proxy-client.crt"), []byte("hello\n")) }, "front-proxy-client.crt"},
		{"PEM of another type", func(t *testing.T, f *fixture) {
			write(t, pki(f, "apiserver.crt"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}}))
		}, "apiserver.crt"},
		{"certificate DER garbage", func(t *testing.T, f *fixture) {
			write(t, pki(f, "apiserver.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")}))
		}, "apiserver.crt"},
		{"truncated key", func(t *testing.T, f *fixture) {
			b := read(t, pki(f, "apiserver.key"))
			write(t, pki(f, "apiserver.key"), b[:len(b)/2])
		}, "apiserver.key"},
		{"key of another certificate", func(t *testing.T, f *fixture) {
			write(t, pki(f, "apiserver.key"), read(t, pki(f, "front-proxy-client.key")))
		}, "apiserver.key"},
		{"missing key", func(t *testing.T, f *fixture) {
			if err := os.Remove(pki(f, "etcd/server.key")); err != nil {
				t.Fatal(err)
			}
		}, "etcd/server.key"},
		{"encrypted key", func(t *testing.T, f *fixture) {
			write(t, pki(f, "apiserver.key"), pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}))
		}, "apiserver.key"},
		{"certificate signed by another CA", func(t *testing.T, f *fixture) {
			l := other(t)
			write(t, pki(f, "apiserver.crt"), read(t, filepath.Join(l.PKIDir, "apiserver.crt")))
			write(t, pki(f, "apiserver.key"), read(t, filepath.Join(l.PKIDir, "apiserver.key")))
		}, "apiserver.crt"},
		{"CA key does not match CA", func(t *testing.T, f *fixture) {
			write(t, pki(f, "ca.key"), read(t, filepath.Join(other(t).PKIDir, "ca.key")))
		}, "ca.key"},
		{"corrupt CA certificate", func(t *testing.T, f *fixture) {
			write(t, pki(f, "etcd/ca.crt"), []byte("-----BEGIN CERTIFICATE-----\nAAAA\n"))
		}, "etcd/ca.crt"},
		{"CA certificate is a leaf", func(t *testing.T, f *fixture) {
			write(t, pki(f, "front-proxy-ca.crt"), read(t, pki(f, "front-proxy-client.crt")))
			write(t, pki(f, "front-proxy-ca.key"), read(t, pki(f, "front-proxy-client.key")))
		}, "front-proxy-ca.crt"},
		{"directory instead of file", func(t *testing.T, f *fixture) {
			if err := os.Remove(pki(f, "apiserver-kubelet-client.crt")); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(pki(f, "apiserver-kubelet-client.crt"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, "apiserver-kubelet-client.crt"},
		{"certificate symlink out of the tree", func(t *testing.T, f *fixture) {
			outside := filepath.Join(t.TempDir(), "apiserver.crt")
			write(t, outside, read(t, pki(f, "apiserver.crt")))
			if err := os.Remove(pki(f, "apiserver.crt")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, pki(f, "apiserver.crt")); err != nil {
				t.Fatal(err)
			}
		}, "apiserver.crt"},
		{"key symlink out of the tree", func(t *testing.T, f *fixture) {
			outside := filepath.Join(t.TempDir(), "ca.key")
			write(t, outside, read(t, pki(f, "ca.key")))
			if err := os.Remove(pki(f, "ca.key")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, pki(f, "ca.key")); err != nil {
				t.Fatal(err)
			}
		}, "ca.key"},
		{"kubeconfig is not YAML", func(t *testing.T, f *fixture) { write(t, conf(f, "scheduler.conf"), []byte("{{{{ not yaml")) }, "scheduler.conf"},
		{"kubeconfig is a list", func(t *testing.T, f *fixture) { write(t, conf(f, "scheduler.conf"), []byte("- a\n- b\n")) }, "scheduler.conf"},
		{"kubeconfig of another kind", editConf("kind: Config", "kind: Pod"), "admin.conf"},
		{"kubeconfig without current-context", editConf("current-context: kubernetes-admin@kubernetes", "current-context: \"\""), "admin.conf"},
		{"kubeconfig current-context unknown", editConf("current-context: kubernetes-admin@kubernetes", "current-context: nobody@nowhere"), "admin.conf"},
		{"kubeconfig without the user", editConf("- name: kubernetes-admin\n", "- name: someone-else\n"), "admin.conf"},
		{"kubeconfig bad base64", editConf("client-certificate-data: ", "client-certificate-data: !!!"), "admin.conf"},
		{"kubeconfig with only the certificate", func(t *testing.T, f *fixture) {
			p := conf(f, "admin.conf")
			var out []string
			for _, l := range strings.Split(string(read(t, p)), "\n") {
				if !strings.Contains(l, "client-key-data") {
					out = append(out, l)
				}
			}
			write(t, p, []byte(strings.Join(out, "\n")))
		}, "admin.conf"},
		{"kubeconfig key does not match", func(t *testing.T, f *fixture) {
			// Give admin.conf the scheduler's key.
			a, s := string(read(t, conf(f, "admin.conf"))), string(read(t, conf(f, "scheduler.conf")))
			keyLine := func(s string) string {
				for _, l := range strings.Split(s, "\n") {
					if strings.Contains(l, "client-key-data") {
						return l
					}
				}
				return ""
			}
			write(t, conf(f, "admin.conf"), []byte(strings.Replace(a, keyLine(a), keyLine(s), 1)))
		}, "admin.conf"},
		{"kubeconfig credential not PEM", func(t *testing.T, f *fixture) {
			p := conf(f, "controller-manager.conf")
			var out []string
			for _, l := range strings.Split(string(read(t, p)), "\n") {
				if strings.Contains(l, "client-certificate-data") {
					l = "    client-certificate-data: aGVsbG8K"
				}
				out = append(out, l)
			}
			write(t, p, []byte(strings.Join(out, "\n")))
		}, "controller-manager.conf"},
		{"kubeconfig is a directory", func(t *testing.T, f *fixture) {
			if err := os.Remove(conf(f, "scheduler.conf")); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(conf(f, "scheduler.conf"), 0o700); err != nil {
				t.Fatal(err)
			}
		}, "scheduler.conf"},
		{"kubeconfig symlink out of the tree", func(t *testing.T, f *fixture) {
			outside := filepath.Join(t.TempDir(), "admin.conf")
			write(t, outside, read(t, conf(f, "admin.conf")))
			if err := os.Remove(conf(f, "admin.conf")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, conf(f, "admin.conf")); err != nil {
				t.Fatal(err)
			}
		}, "admin.conf"},
		{"kubeconfig credential as a block scalar", func(t *testing.T, f *fixture) {
			p := conf(f, "admin.conf")
			var out []string
			for _, l := range strings.Split(string(read(t, p)), "\n") {
				if i := strings.Index(l, "client-certificate-data: "); i >= 0 {
					v := l[i+len("client-certificate-data: "):]
					l = l[:i] + "client-certificate-data: >-\n      " + v[:40] + "\n      " + v[40:]
				}
				out = append(out, l)
			}
			write(t, p, []byte(strings.Join(out, "\n")))
		}, "admin.conf"},
		{"required certificate missing", func(t *testing.T, f *fixture) {
			for _, n := range []string{"apiserver.crt", "apiserver.key"} {
				if err := os.Remove(pki(f, n)); err != nil {
					t.Fatal(err)
				}
			}
		}, "apiserver"},
	}
}

func TestBadInputsChangeNothing(t *testing.T) {
	cases := badInputs()
	if len(cases) < 20 {
		t.Fatalf("only %d bad inputs", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, renewtest.Options{Algorithm: "ECDSA-P256"})
			tc.mutate(t, f)
			before, err := renewtest.HashTree(f.root)
			if err != nil {
				t.Fatal(err)
			}
			r := f.renewer(nil)
			var names []string
			if tc.name == "required certificate missing" {
				names = []string{"apiserver"}
			}
			_, err = f.renew(t, r, renew.Selection{Force: true, Names: names})
			if err == nil {
				t.Fatal("renewal succeeded on a bad input")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error does not name %s:\n%v", tc.wantErr, err)
			}
			after, err := renewtest.HashTree(f.root)
			if err != nil {
				t.Fatal(err)
			}
			if d := renewtest.DiffTrees(before, after); d != "" {
				t.Fatalf("bytes on disk changed:\n%s", d)
			}
			// check reports it as broken or missing.
			_, statuses, err := r.Inventory()
			if err != nil {
				t.Fatal(err)
			}
			bad := 0
			for _, s := range statuses {
				if s.Err != nil || s.Missing {
					bad++
				}
			}
			if bad == 0 {
				t.Error("inventory reports nothing broken")
			}
		})
	}
}
