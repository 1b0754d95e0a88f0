package kubeadm_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/pkirenewd/pkirenewd/cri"
)

// affectedFromKubeadmManifests: the affected-component mapping and the
// health probes, on the manifests this kubeadm writes (`init phase
// control-plane all` and `etcd local`, dry-run into a dir).
func affectedFromKubeadmManifests(t *testing.T, ka kubeadmVersion) {
	n := kubeadmNodeOf(t, ka, "", nil)
	dir := filepath.Join(n.root, "manifests")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, phase := range [][]string{{"control-plane", "all"}, {"etcd", "local"}} {
		args := append([]string{"init", "phase"}, phase...)
		args = append(args, "--config", n.cfg, "--dry-run")
		cmd := exec.Command(ka.bin, args...)
		cmd.Env = append(os.Environ(), "KUBEADM_INIT_DRYRUN_DIR="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kubeadm %v: %v\n%s", args, err, out)
		}
	}
	ms, err := cri.LoadManifests(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms.Usable) != 4 || len(ms.Problems) != 0 {
		t.Fatalf("%d manifests, problems %v", len(ms.Usable), ms.Problems)
	}
	pki := "/etc/kubernetes/pki/"
	tests := []struct {
		changed []string
		want    []string
	}{
		{[]string{pki + "apiserver.crt", pki + "apiserver.key", pki + "etcd/server.crt", pki + "etcd/peer.key", "/etc/kubernetes/controller-manager.conf", "/etc/kubernetes/scheduler.conf", "/etc/kubernetes/admin.conf"},
			[]string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}},
		{[]string{pki + "etcd/server.crt"}, []string{"etcd"}},
		{[]string{pki + "front-proxy-client.crt"}, []string{"kube-apiserver", "kube-controller-manager"}},
		{[]string{"/etc/kubernetes/scheduler.conf"}, []string{"kube-scheduler"}},
	}
	for _, tc := range tests {
		if got := cri.Affected(ms.Usable, tc.changed); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Affected(%v) = %v, want %v", tc.changed, got, tc.want)
		}
	}
	for _, m := range ms.Usable {
		if m.Probe.Port == 0 || m.Probe.Path == "" {
			t.Errorf("%s: probe %+v", m.Component, m.Probe)
		}
	}
}
