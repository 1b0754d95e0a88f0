//go:build e2e

package ha_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/test/ha"
)

// Three control-plane nodes, one etcd CA. node1 and node2 renew it at the
// same moment, each with its own issue (same key, a later end), and
// publish it on the restart Lease; then every node's round adopts the
// latest published issue instead of keeping or making its own. All three
// end with one and the same certificate, each restarts its own etcd
// (trusted CAs are read at start) under the Lease and the quorum guard,
// and no two members are ever down at once.
func TestThreeNodesEndWithOneCA(t *testing.T) {
	c := ha.Start(t, ha.Options{Kubeconfigs: []string{"controller-manager", "scheduler", "kubelet"}})
	ctx := c.Context()
	t.Logf("three-member etcd and an apiserver up in %v", c.BringUp.Round(time.Millisecond))
	old, err := os.ReadFile(filepath.Join(c.Node("node1").PKIDir(), "etcd", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	stopSampling := c.SampleHealth(ctx, 100*time.Millisecond)
	start := time.Now()
	run := func(procs ...*proc) {
		t.Helper()
		for _, p := range procs {
			<-p.Done()
			if code := p.Cmd.ProcessState.ExitCode(); code != 0 {
				t.Fatalf("%s: pkirenewd exited %d (its log is in %s)", p.node.NodeName(), code, c.LogDir)
			}
		}
	}
	args := []string{"--restart", "--lease-duration", "30s"}
	// Nodes where pkirenewd has run before: each has its API identity,
	// with which it reads and writes the board.
	for _, n := range c.Nodes {
		run(startPkirenewd(t, c, n, "renew", "pkirenewd.conf"))
	}
	run(startPkirenewd(t, c, c.Node("node1"), "renew", append([]string{"etcd-ca"}, args...)...),
		startPkirenewd(t, c, c.Node("node2"), "renew", append([]string{"etcd-ca"}, args...)...))
	raced := map[string][]byte{}
	for _, n := range c.Nodes[:2] {
		raced[n.NodeName()], _ = os.ReadFile(filepath.Join(n.PKIDir(), "etcd", "ca.crt"))
	}
	if bytes.Equal(raced["node1"], raced["node2"]) || bytes.Equal(raced["node1"], old) {
		t.Fatal("node1 and node2 did not each renew the etcd CA: the race this test is about did not happen")
	}
	for _, n := range c.Nodes {
		run(startPkirenewd(t, c, n, "renew", args...))
	}
	took := time.Since(start)
	time.Sleep(2 * time.Second)
	samples := stopSampling()

	var one []byte
	for _, n := range c.Nodes {
		got, err := os.ReadFile(filepath.Join(n.PKIDir(), "etcd", "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case one == nil:
			one = got
		case !bytes.Equal(got, one):
			t.Errorf("%s's etcd CA differs from node1's", n.NodeName())
		}
	}
	if !bytes.Equal(one, raced["node1"]) && !bytes.Equal(one, raced["node2"]) {
		t.Error("the nodes ended with an issue neither racer made")
	}
	maxDown, worst := ha.MaxDown(samples)
	t.Logf("%d health samples every 100 ms; most members down at once: %d", len(samples), maxDown)
	if maxDown > 1 {
		t.Errorf("%d members down at once at %s: %v", maxDown, worst.At.Format(time.RFC3339Nano), worst.Down)
	}
	for name, err := range c.MemberHealth(ctx) {
		if err != nil {
			t.Errorf("member %s after the CA renewal: %v", name, err)
		}
	}
	t.Logf("two nodes renewed the etcd CA at once; three nodes on one certificate, their etcd restarted one at a time, in %v", took.Round(time.Millisecond))
}
