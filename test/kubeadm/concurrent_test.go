package kubeadm_test

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// An operator runs `kubeadm certs renew all` while pkirenewd renews the
// same node. Whoever wins each file, every certificate ends up with its
// own key (no mixed pair) and every kubeconfig parses: pkirenewd's check
// finds nothing broken. pkirenewd may give way (exit 1, "changed by
// another writer", or a pair caught mid-write refused before anything was
// written), never leave a mix.
func TestConcurrentKubeadmCertsRenew(t *testing.T) {
	requireKubeadm(t)
	pristine := kubeadmNode(t, "encryptionAlgorithm: ECDSA-P256\n", nil)
	outcomes := map[string]int{}
	const rounds = 12
	for i := 0; i < rounds; i++ {
		n := &node{root: filepath.Join(t.TempDir(), "root")}
		if out, err := exec.Command("cp", "-a", pristine.root, n.root).CombinedOutput(); err != nil {
			t.Fatalf("copy: %v %s", err, out)
		}
		n.cfg = filepath.Join(n.root, "kubeadm.yaml")
		var wg sync.WaitGroup
		var pkOut, kaOut []byte
		var pkErr, kaErr error
		wg.Add(2)
		go func() {
			defer wg.Done()
			pkOut, pkErr = exec.Command(pkirenewdBin, "renew", "--force", "--config", "/dev/null", "--api-identity", "admin", "--pki-dir", n.pki(),
				"--kubeconfig-dir", n.kube(), "--state-dir", n.state(), "--kubeadm-config", n.cfg).CombinedOutput()
		}()
		go func() {
			defer wg.Done()
			kaOut, kaErr = exec.Command(kubeadmBin, "certs", "renew", "all", "--config", "/kubeadm.yaml", "--rootfs", n.root).CombinedOutput()
		}()
		wg.Wait()
		if kaErr != nil {
			t.Fatalf("round %d: kubeadm: %v\n%s", i, kaErr, kaOut)
		}
		switch {
		case pkErr == nil:
			outcomes["pkirenewd committed"]++
		case strings.Contains(string(pkOut), "changed by another writer"):
			outcomes["pkirenewd gave way"]++
		case strings.Contains(string(pkOut), "nothing was written") && strings.Contains(string(pkOut), "does not match the certificate"):
			// It read a pair kubeadm was halfway through writing (kubeadm
			// writes the key, then the certificate, not atomically) and
			// refused to plan on it, naming the file: giving way too.
			outcomes["pkirenewd refused a pair caught mid-write"]++
		default:
			t.Fatalf("round %d: pkirenewd failed otherwise: %v\n%s", i, pkErr, pkOut)
		}
		if bytes.Contains(pkOut, []byte("writing this renewal's pair again")) {
			outcomes["pkirenewd repaired a pair"]++
		}
		// Nothing broken: every pair matches, every kubeconfig parses.
		out, err := exec.Command(pkirenewdBin, "check", "--config", "/dev/null", "--api-identity", "admin", "--pki-dir", n.pki(),
			"--kubeconfig-dir", n.kube(), "--state-dir", n.state()).CombinedOutput()
		if err != nil {
			t.Fatalf("round %d: check after the race: %v\n%s\npkirenewd:\n%s", i, err, out, pkOut)
		}
		if out, err := exec.Command(kubeadmBin, "certs", "check-expiration", "--config", "/kubeadm.yaml", "--rootfs", n.root).CombinedOutput(); err != nil {
			t.Fatalf("round %d: kubeadm certs check-expiration: %v\n%s", i, err, out)
		}
	}
	t.Logf("%d rounds of pkirenewd renew --force racing kubeadm certs renew all: %v", rounds, outcomes)
}
