package kubeadm_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BenchmarkRenewAll times renewing a whole kubeadm-made PKI, each run on a
// fresh copy of the same PKI: pkirenewd (`renew --force`, one verified
// transaction with a backup, 12 items including kubelet.conf) against
// `kubeadm certs renew all` (in place, no backup, 11 items), both as
// processes. test/bench-ratio.sh prints the ratio.
func BenchmarkRenewAll(b *testing.B) {
	requireKubeadm(b)
	for _, alg := range []struct{ name, cfg string }{
		{"RSA-2048", ""},
		{"ECDSA-P256", "encryptionAlgorithm: ECDSA-P256\n"},
	} {
		pristine := kubeadmNode(b, alg.cfg, nil)
		run := map[string]func(n *node) *exec.Cmd{
			"pkirenewd": func(n *node) *exec.Cmd {
				return exec.Command(pkirenewdBin, "renew", "--force", "--config", "/dev/null", "--api-identity", "admin", "--pki-dir", n.pki(),
					"--kubeconfig-dir", n.kube(), "--state-dir", n.state(), "--kubeadm-config", n.cfg)
			},
			"kubeadm": func(n *node) *exec.Cmd {
				return exec.Command(kubeadmBin, "certs", "renew", "all", "--config", "/kubeadm.yaml", "--rootfs", n.root)
			},
		}
		for _, tool := range []string{"pkirenewd", "kubeadm"} {
			b.Run(alg.name+"/"+tool, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					n := &node{root: filepath.Join(b.TempDir(), "root")}
					if out, err := exec.Command("cp", "-a", pristine.root, n.root).CombinedOutput(); err != nil {
						b.Fatalf("copy: %v %s", err, out)
					}
					n.cfg = filepath.Join(n.root, "kubeadm.yaml")
					cmd := run[tool](n)
					b.StartTimer()
					if out, err := cmd.CombinedOutput(); err != nil {
						b.Fatalf("%s: %v\n%s", tool, err, out)
					}
					b.StopTimer()
					if err := os.RemoveAll(n.root); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
