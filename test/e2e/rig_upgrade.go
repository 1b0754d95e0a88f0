//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/pkirenewd/pkirenewd/test/cplane"
)

// KubeletInstanceConfig is where kubeadm (v1.35 on) keeps the node's own
// kubelet settings; `kubeadm upgrade` reads the CRI endpoint from it.
const KubeletInstanceConfig = "/var/lib/kubelet/instance-config.yaml"

// prepareUpgrade gives the node what `kubeadm upgrade apply` reads and
// that `kubeadm init` would have made but the rig's phases do not: the
// kubeadm-config and kubelet-config ConfigMaps (`kubeadm init phase
// upload-config all`), the CoreDNS Deployment, the CRI endpoint in the
// kubelet instance config, a cordoned Node (kubeadm's guide drains the
// node first; here it also skips the CreateJob check, as the rig has no
// pod network) and every
// image the new version's kubeadm lists, made from toBin. It returns the
// new version's kubeadm (its log: kubeadm-upgrade.log).
func (cp *ControlPlane) prepareUpgrade(to, toBin string) *cplane.Kubeadm {
	t := cp.t
	t.Helper()
	cp.kubeadm(nil, "init", "phase", "upload-config", "all", "--config", cp.KubeadmConfig)
	_, err := cp.Admin.Do(cp.ctx, http.MethodPatch, "/api/v1/nodes/"+cp.Opts.NodeName, map[string]any{"spec": map[string]any{"unschedulable": true}})
	cp.must(err)
	// kubeadm's CoreDNS Deployment, which `kubeadm upgrade` checks before
	// anything else; its pods stay Pending on the cordoned node.
	cp.kubeadm(nil, "init", "phase", "addon", "coredns", "--config", cp.KubeadmConfig)

	if _, err := os.Lstat(KubeletInstanceConfig); err == nil {
		t.Fatalf("e2e: %s exists and is not the harness's: refusing to touch it", KubeletInstanceConfig)
	}
	cp.must(os.MkdirAll(filepath.Dir(KubeletInstanceConfig), 0o700))
	t.Cleanup(func() { os.Remove(KubeletInstanceConfig) })
	cp.must(os.WriteFile(KubeletInstanceConfig, []byte(fmt.Sprintf(
		"apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncontainerRuntimeEndpoint: %s\n", cp.Rig.Endpoint())), 0o600))

	runner := &cplane.Kubeadm{Path: filepath.Join(toBin, "kubeadm"), Log: filepath.Join(cp.LogDir, "kubeadm-upgrade.log"), Ctx: cp.ctx}
	cp.must(runner.CheckVersion(to))
	cfg := filepath.Join(cp.Dir, "kubeadm-"+to+".yaml")
	toCfg := cp.initConfig()
	toCfg.KubernetesVersion = to
	cp.must(os.WriteFile(cfg, []byte(toCfg.YAML()), 0o600))
	images, err := runner.Images(cfg)
	cp.must(err)
	for _, c := range Components {
		if images[c] == "" {
			t.Fatalf("e2e: kubeadm %s lists no %s image", to, c)
		}
		cp.Rig.ImportImage(images[c], map[string]string{"/usr/local/bin/" + c: filepath.Join(toBin, c)}, nil)
	}
	// The addons are present only for kubeadm's image check (they are not
	// run); its pause tag beside the sandbox image, as at bring-up.
	for _, name := range []string{"coredns", "kube-proxy", "pause"} {
		cp.importPauseAs(images[name])
	}
	return runner
}

// UpgradeKubelet is the operator's step after `kubeadm upgrade apply`:
// the kubelet binary replaced and the kubelet restarted.
func (cp *ControlPlane) UpgradeKubelet(bin string) {
	cp.t.Helper()
	cp.StopKubelet()
	cp.mu.Lock()
	cp.kubeletBin = bin
	cp.mu.Unlock()
	cp.startKubelet()
}
