// Package crash_test kills a real pkirenewd process with SIGKILL at every
// step of a renewal transaction (a build with the "failpoints" tag; release
// builds have no failpoints), restarts it, and proves the PKI is consistent
// and each item, and the whole transaction, is wholly old or wholly new.
package crash_test

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

func build(t *testing.T, tags string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pkirenewd")
	args := []string{"build", "-o", bin}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	if out, err := exec.Command("go", append(args, "github.com/pkirenewd/pkirenewd/cmd/pkirenewd")...).CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

type node struct{ root, pki, kube, state string }

func (n node) args(cmd ...string) []string {
	return append(cmd, "--config", "/dev/null", "--pki-dir", n.pki, "--kubeconfig-dir", n.kube, "--state-dir", n.state)
}

func sums(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			data, _ := os.ReadFile(p)
			m[p] = fmt.Sprintf("%x", sha256.Sum256(data))
		}
		return nil
	})
	return m
}

// freshNodes makes one kubeadm-shaped PKI and returns a maker of copies
// of it, one per crash point.
func freshNodes(t *testing.T) func() node {
	t.Helper()
	template := t.TempDir()
	if _, err := renewtest.MakePKI(filepath.Join(template, "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256"}); err != nil {
		t.Fatal(err)
	}
	return func() node {
		root := t.TempDir()
		if out, err := exec.Command("cp", "-a", filepath.Join(template, "kubernetes"), root).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
		return node{root: root, pki: filepath.Join(root, "kubernetes", "pki"), kube: filepath.Join(root, "kubernetes"), state: filepath.Join(root, "state")}
	}
}

func TestSIGKILLAtEveryStep(t *testing.T) {
	crashy := build(t, "failpoints")
	normal := build(t, "")
	fresh := freshNodes(t)
	// The steps of one transaction, from a run that is not killed.
	probe := fresh()
	logf := filepath.Join(probe.root, "steps")
	cmd := exec.Command(crashy, probe.args("renew", "--force")...)
	cmd.Env = append(os.Environ(), "PKIRENEWD_FAILPOINT_LOG="+logf)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("probe run: %v\n%s", err, out)
	}
	data, _ := os.ReadFile(logf)
	steps := strings.Split(strings.TrimSpace(string(data)), "\n")
	kinds := map[string]int{}
	for _, s := range steps {
		k, _, _ := strings.Cut(s, ":")
		kinds[k]++
	}
	t.Logf("%d crash points in one 12-item transaction: %v", len(steps), kinds)
	for _, want := range []string{"journal-prepared", "backup", "staged", "staged-synced", "journal-committed", "renamed", "renamed-synced", "done", "mid-write", "before-fsync", "after-fsync"} {
		if kinds[want] == 0 {
			t.Errorf("no %s step", want)
		}
	}
	newSums := sums(t, probe.kube)

	for i := range steps {
		n := fresh()
		oldSums := sums(t, n.kube)
		cmd := exec.Command(crashy, n.args("renew", "--force")...)
		cmd.Env = append(os.Environ(), "PKIRENEWD_FAILPOINT_AT="+strconv.Itoa(i+1))
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("step %d (%s): not killed: %v\n%s", i+1, steps[i], err, out)
		}
		// Restart: a plain renew recovers (nothing is due afterwards or the
		// transaction is rolled back and nothing is due either).
		if out, err := exec.Command(normal, n.args("renew")...).CombinedOutput(); err != nil {
			t.Fatalf("step %d (%s): restart: %v\n%s", i+1, steps[i], err, out)
		}
		inv, err := renew.TakeInventory(renew.Dirs{PKIDir: n.pki, KubeconfigDir: n.kube})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range append(inv.CAs, inv.Certs...) {
			if it.Err != nil || it.Missing {
				t.Fatalf("step %d (%s): %s broken after recovery: %v", i+1, steps[i], it.Name, it.Err)
			}
		}
		got := sums(t, n.kube)
		changed, leftovers := 0, 0
		for p, sum := range got {
			rel, _ := filepath.Rel(n.kube, p)
			if strings.HasPrefix(filepath.Base(p), ".") {
				leftovers++
				continue
			}
			if old, ok := oldSums[p]; ok && old != sum {
				changed++
			}
			_ = rel
		}
		if leftovers > 0 {
			t.Errorf("step %d (%s): %d temp files left", i+1, steps[i], leftovers)
		}
		// All old (0 changed) or all new (every file the probe changed).
		probeChanged := 0
		for p, sum := range newSums {
			q := strings.Replace(p, probe.kube, n.kube, 1)
			if oldSums[q] != "" && oldSums[q] != sum {
				probeChanged++
			}
		}
		if changed != 0 && changed != probeChanged {
			t.Fatalf("step %d (%s): mixed: %d of %d files new", i+1, steps[i], changed, probeChanged)
		}
	}
}

// The same for the renewal of the three CAs with their holders: killed at
// any step and recovered, every CA file is the old one or every one is
// new, and every holder carries the CA file's certificate, never another
// issue of it (a kubeconfig left on the old CA while ca.crt moved on).
func TestSIGKILLAtEveryStepOfACARenewal(t *testing.T) {
	crashy := build(t, "failpoints")
	fresh := freshNodes(t)
	cas := []string{"renew", "ca", "etcd-ca", "front-proxy-ca"}
	probe := fresh()
	logf := filepath.Join(probe.root, "steps")
	cmd := exec.Command(crashy, probe.args(cas...)...)
	cmd.Env = append(os.Environ(), "PKIRENEWD_FAILPOINT_LOG="+logf)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("probe run: %v\n%s", err, out)
	}
	data, _ := os.ReadFile(logf)
	steps := strings.Split(strings.TrimSpace(string(data)), "\n")
	t.Logf("%d crash points in the CAs' transaction", len(steps))
	caFiles := []string{"ca.crt", "etcd/ca.crt", "front-proxy-ca.crt"}
	for i := range steps {
		n := fresh()
		old := sums(t, n.pki)
		cmd := exec.Command(crashy, n.args(cas...)...)
		cmd.Env = append(os.Environ(), "PKIRENEWD_FAILPOINT_AT="+strconv.Itoa(i+1))
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("step %d (%s): not killed: %v\n%s", i+1, steps[i], err, out)
		}
		// Recovery alone, as the next start does it: nothing renewed.
		r := renew.New(renew.Options{Dirs: renew.Dirs{PKIDir: n.pki, KubeconfigDir: n.kube}, StateDir: n.state})
		if err := r.Recover(); err != nil {
			t.Fatalf("step %d (%s): recover: %v", i+1, steps[i], err)
		}
		inv, err := renew.TakeInventory(renew.Dirs{PKIDir: n.pki, KubeconfigDir: n.kube})
		if err != nil {
			t.Fatal(err)
		}
		now := sums(t, n.pki)
		renewed := 0
		for _, f := range caFiles {
			p := filepath.Join(n.pki, f)
			if now[p] != old[p] {
				renewed++
			}
		}
		if renewed != 0 && renewed != len(caFiles) {
			t.Fatalf("step %d (%s): mixed: %d of %d CA files new", i+1, steps[i], renewed, len(caFiles))
		}
		for _, ca := range inv.CAs {
			if ca.Err != nil {
				t.Fatalf("step %d (%s): %s broken after recovery: %v", i+1, steps[i], ca.Name, ca.Err)
			}
			for _, h := range inv.StaleHolders(ca) {
				t.Fatalf("step %d (%s): %s carries another issue of %s than %s", i+1, steps[i], h, ca.Name, ca.CertPath)
			}
		}
	}
}
