package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pkirenewd/pkirenewd/config"
	"github.com/pkirenewd/pkirenewd/writeset"
)

// kubeadmNode lays out under root what a control-plane node made by
// `kubeadm init` (v1.37, local etcd) carries, where kubeadm and the kubelet
// put it; the contents are placeholders except the kubelet's
// configuration, which is read.
func kubeadmNode(t *testing.T, root string) {
	t.Helper()
	files := []string{
		"etc/kubernetes/admin.conf", "etc/kubernetes/super-admin.conf", "etc/kubernetes/controller-manager.conf",
		"etc/kubernetes/scheduler.conf", "etc/kubernetes/kubelet.conf",
		"etc/kubernetes/manifests/etcd.yaml", "etc/kubernetes/manifests/kube-apiserver.yaml",
		"etc/kubernetes/manifests/kube-controller-manager.yaml", "etc/kubernetes/manifests/kube-scheduler.yaml",
		"etc/kubernetes/pki/sa.key", "etc/kubernetes/pki/sa.pub",
		// The kubelet made its serving pair at its first start, and
		// rotates its client certificate through the symlink.
		"var/lib/kubelet/pki/kubelet.crt", "var/lib/kubelet/pki/kubelet.key",
		"var/lib/kubelet/pki/kubelet-client-2026-01-01-00-00-00.pem",
		"var/lib/kubelet/kubeadm-flags.env",
		// The admin's copy, as kubeadm init tells them to make it.
		"root/.kube/config",
	}
	for _, n := range []string{"ca", "apiserver", "apiserver-kubelet-client", "front-proxy-ca", "front-proxy-client", "apiserver-etcd-client",
		"etcd/ca", "etcd/server", "etcd/peer", "etcd/healthcheck-client"} {
		files = append(files, "etc/kubernetes/pki/"+n+".crt", "etc/kubernetes/pki/"+n+".key")
	}
	for _, f := range files {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("placeholder\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/var/lib/kubelet/pki/kubelet-client-2026-01-01-00-00-00.pem", filepath.Join(root, "var/lib/kubelet/pki/kubelet-client-current.pem")); err != nil {
		t.Fatal(err)
	}
	// What kubeadm writes to /var/lib/kubelet/config.yaml.
	kubeletConfig, err := os.ReadFile("../../test/packaging/kubeadm-kubelet-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/kubelet/config.yaml"), kubeletConfig, 0o644); err != nil {
		t.Fatal(err)
	}
}

// underRoot is cfg with every path setting moved under root. The kubelet's
// --cert-dir, which kubeadm does not set, is the kubelet's default there.
func underRoot(t *testing.T, cfg config.Config, root string) config.Config {
	t.Helper()
	for _, k := range config.Keys() {
		switch k.TypeName() {
		case "path":
			if v := k.Get(&cfg); v != "" {
				if err := k.Set(&cfg, filepath.Join(root, v)); err != nil {
					t.Fatal(err)
				}
			}
		case "paths":
			var vs []string
			for _, v := range strings.Split(k.Get(&cfg), ",") {
				if v != "" {
					vs = append(vs, filepath.Join(root, v))
				}
			}
			if err := k.Set(&cfg, strings.Join(vs, ",")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if cfg.KubeletCertDir == "" {
		cfg.KubeletCertDir = filepath.Join(root, "/var/lib/kubelet/pki")
	}
	return cfg
}

// The shipped unit lets pkirenewd write everything the default
// configuration writes on a stock kubeadm node: a directory the code
// writes without a matching ReadWritePaths= line fails here, not on a
// node months after the install.
func TestShippedUnitCoversTheDefaultWriteSet(t *testing.T) {
	unit, err := os.ReadFile("../../systemd/pkirenewd.service")
	if err != nil {
		t.Fatal(err)
	}
	rw := writeset.UnitReadWritePaths(string(unit))
	if !strings.Contains(string(unit), "ProtectSystem=strict") {
		t.Fatal("the unit no longer has ProtectSystem=strict: revisit this test")
	}
	root := t.TempDir()
	kubeadmNode(t, root)
	cfg := underRoot(t, config.Defaults(), root)
	dirs := nodeWriteSet(cfg)
	var written []string
	for _, d := range dirs {
		p, ok := strings.CutPrefix(d.Path, root)
		if !ok {
			t.Fatalf("%s (%s) is outside the fixture %s", d.Path, d.Reason(), root)
		}
		written = append(written, p)
		if !writeset.Covered(p, rw) {
			t.Errorf("the default configuration writes %s (%s), which the unit's ReadWritePaths=%s does not cover", p, d.Reason(), strings.Join(rw, " "))
		}
	}
	// The fixture must reach every kind of written directory, or this
	// test proves less than it says.
	for _, want := range []string{"/etc/kubernetes/pki", "/etc/kubernetes/pki/etcd", "/etc/kubernetes", "/var/lib/kubelet/pki", "/var/lib/pkirenewd", "/root/.kube"} {
		if !slices.Contains(written, want) {
			t.Errorf("the write set %q lacks %s", written, want)
		}
	}
	// A written directory that may be absent on a node (no kubelet.crt, no
	// copy) must be optional in the unit ('-'), or the unit fails to start.
	for _, e := range rw {
		if p := strings.TrimLeft(e, "-+"); (p == "/var/lib/kubelet/pki" || p == "/root/.kube") && !strings.HasPrefix(e, "-") {
			t.Errorf("ReadWritePaths=%s: a node may lack it; write -%s", e, p)
		}
	}
}

// Every directory of the write set is probed: a read-only one is a
// problem with its fix; the writable fixture has none.
func TestWriteProblems(t *testing.T) {
	saved := daemonPID
	daemonPID = func() int { return 0 }
	t.Cleanup(func() { daemonPID = saved })
	root := t.TempDir()
	kubeadmNode(t, root)
	cfg := underRoot(t, config.Defaults(), root)
	if got := writeProblems(cfg); len(got) != 0 {
		t.Fatalf("a writable node: %q", got)
	}
	dirs := nodeWriteSet(cfg)
	kubeletPKI := filepath.Join(root, "var/lib/kubelet/pki")
	probs := probeWriteSet(dirs, func(d string) error {
		if d == kubeletPKI {
			return &os.PathError{Op: "access", Path: d, Err: os.ErrPermission}
		}
		return nil
	})
	if len(probs) != 1 || probs[0].Key != "kubeletServingCert" {
		t.Fatalf("problems %+v", probs)
	}
	if s := probs[0].String(); !strings.Contains(s, kubeletPKI) || !strings.Contains(s, "kubelet.crt") {
		t.Fatalf("%s", s)
	}
}
