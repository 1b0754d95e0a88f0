package writeset

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pkirenewd/pkirenewd/config"
)

func paths(ds []Dir) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Path)
	}
	return out
}

func TestCompute(t *testing.T) {
	def := config.Defaults()
	monitor := config.Defaults()
	monitor.KubeletServingCert = config.KubeletServingMonitor
	copies := config.Defaults()
	copies.AdminKubeconfigCopies = []string{"/home/ops/.kube/config", "/etc/kubernetes/admin-copy.conf"}
	for _, tc := range []struct {
		name string
		cfg  config.Config
		node Node
		want []string
		keys []string
	}{
		{
			name: "stock kubeadm node",
			cfg:  def,
			node: Node{EtcdDir: true, KubeletServingCert: "/var/lib/kubelet/pki/kubelet.crt", AdminCopies: []string{"/root/.kube/config"}},
			want: []string{"/etc/kubernetes/pki", "/etc/kubernetes/pki/etcd", "/etc/kubernetes", "/var/lib/kubelet/pki", "/var/lib/pkirenewd", "/root/.kube"},
			keys: []string{"pkiDir", "pkiDir", "kubeconfigDir", "kubeletServingCert", "stateDir", "adminKubeconfigCopy"},
		},
		{
			name: "external etcd, no kubelet.crt yet, no copy",
			cfg:  def,
			node: Node{},
			want: []string{"/etc/kubernetes/pki", "/etc/kubernetes", "/var/lib/pkirenewd"},
			keys: []string{"pkiDir", "kubeconfigDir", "stateDir"},
		},
		{
			name: "kubeletServingCert: monitor writes no kubelet dir",
			cfg:  monitor,
			node: Node{KubeletServingCert: "/var/lib/kubelet/pki/kubelet.crt"},
			want: []string{"/etc/kubernetes/pki", "/etc/kubernetes", "/var/lib/pkirenewd"},
			keys: []string{"pkiDir", "kubeconfigDir", "stateDir"},
		},
		{
			name: "Kubespray: pki is a symlink to ssl, kubelet's --cert-dir elsewhere",
			cfg:  def,
			node: Node{
				Real:               map[string]string{"/etc/kubernetes/pki": "/etc/kubernetes/ssl", "/etc/kubernetes/pki/etcd": "/etc/kubernetes/ssl/etcd"},
				EtcdDir:            true,
				KubeletServingCert: "/var/lib/kubelet/certs/kubelet.crt",
			},
			want: []string{"/etc/kubernetes/ssl", "/etc/kubernetes/ssl/etcd", "/etc/kubernetes", "/var/lib/kubelet/certs", "/var/lib/pkirenewd"},
			keys: []string{"pkiDir", "pkiDir", "kubeconfigDir", "kubeletServingCert", "stateDir"},
		},
		{
			name: "more copies; one in kubeconfigDir is listed once with both keys",
			cfg:  copies,
			node: Node{AdminCopies: []string{"/root/.kube/config", "/home/ops/.kube/config", "/etc/kubernetes/admin-copy.conf"}},
			want: []string{"/etc/kubernetes/pki", "/etc/kubernetes", "/var/lib/pkirenewd", "/root/.kube", "/home/ops/.kube"},
			keys: []string{"pkiDir", "kubeconfigDir, adminKubeconfigCopies", "stateDir", "adminKubeconfigCopy", "adminKubeconfigCopies"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Compute(tc.cfg, tc.node)
			if !reflect.DeepEqual(paths(got), tc.want) {
				t.Fatalf("paths %q, want %q", paths(got), tc.want)
			}
			var keys []string
			for _, d := range got {
				keys = append(keys, d.Key)
				if d.Why == "" {
					t.Errorf("%s: no reason", d.Path)
				}
			}
			if !reflect.DeepEqual(keys, tc.keys) {
				t.Fatalf("keys %q, want %q", keys, tc.keys)
			}
		})
	}
}

// TestDiscoverKubespray lays out a node the way Kubespray does: the
// certificates in /etc/kubernetes/ssl, /etc/kubernetes/pki a symlink to it.
func TestDiscoverKubespray(t *testing.T) {
	root := t.TempDir()
	ssl := filepath.Join(root, "etc/kubernetes/ssl")
	mustMkdir(t, filepath.Join(ssl, "etcd"))
	if err := os.Symlink("ssl", filepath.Join(root, "etc/kubernetes/pki")); err != nil {
		t.Fatal(err)
	}
	kubeletPKI := filepath.Join(root, "var/lib/kubelet/pki")
	mustMkdir(t, kubeletPKI)
	mustWrite(t, filepath.Join(kubeletPKI, "kubelet.crt"))
	mustMkdir(t, filepath.Join(root, "root/.kube"))
	mustWrite(t, filepath.Join(root, "etc/kubernetes/admin.conf"))
	// A symlinked copy is never written (the copy is read without
	// following symlinks): not in the write set.
	mustMkdir(t, filepath.Join(root, "home/ops/.kube"))
	if err := os.Symlink(filepath.Join(root, "etc/kubernetes/admin.conf"), filepath.Join(root, "home/ops/.kube/config")); err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.PKIDir = filepath.Join(root, "etc/kubernetes/pki")
	cfg.KubeconfigDir = filepath.Join(root, "etc/kubernetes")
	cfg.StateDir = filepath.Join(root, "var/lib/pkirenewd") // not made yet
	cfg.AdminKubeconfigCopy = filepath.Join(root, "root/.kube/config")
	cfg.AdminKubeconfigCopies = []string{filepath.Join(root, "home/ops/.kube/config")}

	got := paths(Compute(cfg, Discover(cfg, filepath.Join(kubeletPKI, "kubelet.crt"))))
	want := []string{ssl, filepath.Join(ssl, "etcd"), cfg.KubeconfigDir, kubeletPKI, cfg.StateDir}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	// The copy appears once it exists as a file of its own.
	mustWrite(t, cfg.AdminKubeconfigCopy)
	got = paths(Compute(cfg, Discover(cfg, "")))
	want = []string{ssl, filepath.Join(ssl, "etcd"), cfg.KubeconfigDir, cfg.StateDir, filepath.Join(root, "root/.kube")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

func mustMkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, p string) {
	t.Helper()
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestProbeWritable(t *testing.T) {
	dir := t.TempDir()
	if err := Probe(dir); err != nil {
		t.Fatal(err)
	}
	// Not there yet: judged where it would be made.
	if err := Probe(filepath.Join(dir, "state/sub")); err != nil {
		t.Fatal(err)
	}
	if err := ProbeIn(os.Getpid(), dir); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("the probe left %d entries", len(entries))
	}
}

func TestProbeAccessDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes a 0555 directory: nothing to see")
	}
	dir := t.TempDir()
	ro := filepath.Join(dir, "ro")
	mustMkdir(t, ro)
	if err := os.Chmod(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(ro, 0o755) })
	err := Probe(ro)
	if !errors.Is(err, unix.EACCES) {
		t.Fatalf("got %v, want EACCES", err)
	}
	if a := Advice(ro, err); !strings.Contains(a, "CAP_DAC_OVERRIDE") {
		t.Fatalf("advice: %s", a)
	}
}

// TestProbeReadOnlyBindMount reproduces what ProtectSystem=strict does to a
// directory outside ReadWritePaths=: a read-only bind mount, in a mount
// namespace of the test's own (unshare -m), so nothing is visible outside.
func TestProbeReadOnlyBindMount(t *testing.T) {
	if os.Getenv("WRITESET_IN_NS") != "" {
		probeInNamespace(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("a read-only bind mount needs root (unshare -m and mount): run the test as root to cover it")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare(1): the read-only bind mount cannot be made")
	}
	dir := t.TempDir()
	mustMkdir(t, filepath.Join(dir, "ro"))
	mustMkdir(t, filepath.Join(dir, "rw"))
	cmd := exec.Command(unshare, "-m", "--propagation", "private", os.Args[0], "-test.run=^TestProbeReadOnlyBindMount$", "-test.v")
	cmd.Env = append(os.Environ(), "WRITESET_IN_NS="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in a mount namespace of its own: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("the namespaced test did not run:\n%s", out)
	}
	// Outside that namespace the directory was never read-only.
	if err := Probe(filepath.Join(dir, "ro")); err != nil {
		t.Fatalf("outside the namespace: %v", err)
	}
}

func probeInNamespace(t *testing.T) {
	dir := os.Getenv("WRITESET_IN_NS")
	ro, rw := filepath.Join(dir, "ro"), filepath.Join(dir, "rw")
	// What systemd does for ProtectSystem=strict: bind the directory on
	// itself, then remount the bind read-only.
	if err := unix.Mount(ro, ro, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind: %v", err)
	}
	if err := unix.Mount("", ro, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	// The mount really refuses a write: the probe must agree with it.
	if err := os.WriteFile(filepath.Join(ro, "x"), nil, 0o600); !errors.Is(err, unix.EROFS) {
		t.Fatalf("write into the read-only bind mount: %v", err)
	}
	err := Probe(ro)
	if !errors.Is(err, unix.EROFS) {
		t.Fatalf("Probe(%s) = %v, want EROFS", ro, err)
	}
	// A directory to be made under it is as unwritable.
	if err := Probe(filepath.Join(ro, "state")); !errors.Is(err, unix.EROFS) {
		t.Fatalf("Probe(missing under ro) = %v, want EROFS", err)
	}
	if err := ProbeIn(os.Getpid(), ro); !errors.Is(err, unix.EROFS) {
		t.Fatalf("ProbeIn = %v, want EROFS", err)
	}
	if err := Probe(rw); err != nil {
		t.Fatalf("Probe(%s) = %v", rw, err)
	}
	advice := Advice(ro, err)
	want := "ReadWritePaths=" + ro + `\n' >>/etc/systemd/system/pkirenewd.service.d/write.conf && systemctl daemon-reload && systemctl restart pkirenewd`
	if !strings.Contains(advice, want) {
		t.Fatalf("advice %q lacks %q", advice, want)
	}
}

func TestAdvice(t *testing.T) {
	d := "/var/lib/kubelet/pki"
	got := Advice(d, errors.New("x: "+unix.EROFS.Error()))
	if got != "make it writable for root" {
		t.Fatalf("an unwrapped error: %s", got)
	}
	got = Advice(d, &os.PathError{Op: "access", Path: d, Err: unix.EROFS})
	want := `mkdir -p /etc/systemd/system/pkirenewd.service.d && printf '[Service]\nReadWritePaths=/var/lib/kubelet/pki\n' >>/etc/systemd/system/pkirenewd.service.d/write.conf && systemctl daemon-reload && systemctl restart pkirenewd`
	if !strings.Contains(got, want) {
		t.Fatalf("%s\nlacks\n%s", got, want)
	}
	if got := Advice(d, unix.EPERM); !strings.Contains(got, "chattr -i "+d) {
		t.Fatal(got)
	}
}

func TestUnitReadWritePaths(t *testing.T) {
	unit := "[Service]\nReadWritePaths=/a -/b\n# ReadWritePaths=/commented\nReadWritePaths=+/c\n"
	if got := UnitReadWritePaths(unit); !reflect.DeepEqual(got, []string{"/a", "-/b", "+/c"}) {
		t.Fatal(got)
	}
	if got := UnitReadWritePaths(unit + "ReadWritePaths=\nReadWritePaths=/d\n"); !reflect.DeepEqual(got, []string{"/d"}) {
		t.Fatal(got)
	}
	rw := []string{"/etc/kubernetes", "-/var/lib/kubelet/pki"}
	for dir, want := range map[string]bool{
		"/etc/kubernetes": true, "/etc/kubernetes/pki/etcd": true, "/var/lib/kubelet/pki": true,
		"/etc/kubernetes2": false, "/var/lib/kubelet": false, "/root/.kube": false,
	} {
		if Covered(dir, rw) != want {
			t.Errorf("Covered(%s) = %v", dir, !want)
		}
	}
}
