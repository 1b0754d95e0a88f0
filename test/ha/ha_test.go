//go:build e2e

package ha_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/cluster"
	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/test/cplane"
	"github.com/pkirenewd/pkirenewd/test/ha"
	"github.com/pkirenewd/pkirenewd/test/testbin"
)

var pkirenewdBin string

func TestMain(m *testing.M) { testbin.Main(m, &pkirenewdBin) }

// proc is one node's pkirenewd.
type proc struct {
	*testbin.Proc
	node *ha.Node
}

func startPkirenewd(t *testing.T, c *ha.Cluster, n *ha.Node, sub string, args ...string) *proc {
	t.Helper()
	all := []string{sub}
	if sub == "run" {
		all = append(all, "--log-format", "json")
	}
	all = append(all, "--log-level", "debug", "--config", "/dev/null",
		"--pki-dir", n.PKIDir(), "--kubeconfig-dir", n.KubeconfigDir(), "--manifests-dir", n.ManifestsDir(),
		"--state-dir", n.StateDir(), "--cri-endpoint", c.CRIEndpoint(), "--node-name", n.NodeName(),
		"--metrics-address", "", "--admin-kubeconfig-copy", "", "--kubelet-restart-command", "true", "--kubelet-config", n.KubeletConfig(),
		"--restart-timeout", "2m")
	if sub == "run" || sub == "renew" {
		// Every node restarts its etcd: what the lease and the quorum
		// guard are proven on.
		all = append(all, "--restart-policy", "all")
	}
	all = append(all, args...)
	logPath := filepath.Join(c.LogDir, "pkirenewd-"+n.NodeName()+"-"+sub+".log")
	return &proc{Proc: testbin.Start(t, pkirenewdBin, logPath, all...), node: n}
}

type interval struct {
	node       string
	from, till time.Time
}

// Three control-plane nodes whose certificates all fall due at once, each
// with its own pkirenewd: they take turns through the Lease, no etcd
// member is restarted while another is down, and all three finish.
func TestThreeNodesTakeTurns(t *testing.T) {
	// kubeadm backdates NotBefore by 5 min: 3 min certificates live 8 min
	// and are due at 2/3 of that, some 20 s after issuance — all three
	// nodes' at once. They expire 3 min after issuance.
	c := ha.Start(t, ha.Options{Validity: 3 * time.Minute, Kubeconfigs: []string{"controller-manager", "scheduler", "kubelet"}})
	ctx := c.Context()
	t.Logf("three-member etcd and an apiserver up in %v", c.BringUp.Round(time.Millisecond))
	before := map[string]string{}
	for _, n := range c.Nodes {
		sb, err := c.EtcdSandbox(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		before[n.NodeName()] = sb
	}

	stopSampling := c.SampleHealth(ctx, 100*time.Millisecond)
	start := time.Now()
	var procs []*proc
	for _, n := range c.Nodes {
		procs = append(procs, startPkirenewd(t, c, n, "run", "--validity", "1h", "--lease-duration", "30s"))
	}
	done := func(p *proc) bool {
		for _, e := range p.Events() {
			if e.Str("msg") == "restart lease released" {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(4 * time.Minute)
	for {
		var waiting []string
		for _, p := range procs {
			if p.Exited() {
				t.Fatalf("%s: pkirenewd exited", p.node.NodeName())
			}
			if !done(p) {
				waiting = append(waiting, p.node.NodeName())
			}
		}
		if len(waiting) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not finished after 4 min: %v", waiting)
		}
		time.Sleep(500 * time.Millisecond)
	}
	took := time.Since(start)
	time.Sleep(2 * time.Second) // the last member's health, sampled after it
	samples := stopSampling()

	// At most one member was ever down.
	maxDown, worst := ha.MaxDown(samples)
	downs := map[string]int{}
	for _, s := range samples {
		for _, d := range s.Down {
			downs[d]++
		}
	}
	t.Logf("%d health samples every 100 ms; samples with a member down: %v; most down at once: %d", len(samples), downs, maxDown)
	if maxDown > 1 {
		t.Errorf("%d members down at once at %s: %v", maxDown, worst.At.Format(time.RFC3339Nano), worst.Down)
	}

	// One holder at a time: each node's hold, from "holding" to
	// "released", in its own log, never overlaps another's.
	var holds []interval
	for _, p := range procs {
		var iv interval
		iv.node = p.node.NodeName()
		waited := false
		for _, e := range p.Events() {
			switch e.Str("msg") {
			case "holding the restart lease":
				iv.from = e.At
			case "restart lease released":
				iv.till = e.At
			}
			if e.Str("ACTION") == "lease-wait" {
				waited = true
			}
			if e.Str("level") == "error" {
				t.Errorf("%s logged an error: %v", iv.node, e.Fields)
			}
		}
		if iv.from.IsZero() || iv.till.IsZero() {
			t.Errorf("%s: no complete hold of the lease", iv.node)
			continue
		}
		holds = append(holds, iv)
		t.Logf("%s held the lease %v .. %v (waited for it: %v)", iv.node, iv.from.Sub(start).Round(time.Millisecond), iv.till.Sub(start).Round(time.Millisecond), waited)
	}
	sort.Slice(holds, func(i, j int) bool { return holds[i].from.Before(holds[j].from) })
	for i := 1; i < len(holds); i++ {
		if holds[i].from.Before(holds[i-1].till) {
			t.Errorf("%s took the lease at %v, before %s released it at %v", holds[i].node, holds[i].from.Sub(start), holds[i-1].node, holds[i-1].till.Sub(start))
		}
	}
	threeIdentitiesOneLease(t, c)

	// Every node restarted its own etcd, which now serves the renewed
	// certificate; nothing is owed.
	for _, n := range c.Nodes {
		sb, err := c.EtcdSandbox(ctx, n)
		if err != nil {
			t.Error(err)
			continue
		}
		if sb == before[n.NodeName()] {
			t.Errorf("%s: etcd still in sandbox %.13s", n.NodeName(), sb)
		}
		want, err := cri.SerialOnDisk(filepath.Join(n.PKIDir(), "etcd/server.crt"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := cri.HTTPProber{}.ServedSerial(ctx, strings.TrimPrefix(n.EtcdClientURL(), "https://"))
		if err != nil || got != want {
			t.Errorf("%s: etcd serves %s (%v), etcd/server.crt has %s", n.NodeName(), got, err, want)
		}
		if _, err := os.Stat(filepath.Join(n.StateDir(), "pending-restart.json")); err == nil {
			t.Errorf("%s: restarts still owed", n.NodeName())
		}
	}
	for name, err := range c.MemberHealth(ctx) {
		if err != nil {
			t.Errorf("member %s after the roll: %v", name, err)
		}
	}
	t.Logf("three nodes renewed and restarted one at a time in %v", took.Round(time.Millisecond))

	// The guard refuses: node3's member is down (its kubelet stopped, so
	// it stays down); node1 is asked to restart its etcd and must not.
	n1, n3 := c.Node("node1"), c.Node("node3")
	n3.Kubelet.Stop()
	if _, err := c.StopEtcdPod(ctx, n3); err != nil {
		t.Fatal(err)
	}
	sb1, err := c.EtcdSandbox(ctx, n1)
	if err != nil {
		t.Fatal(err)
	}
	p := startPkirenewd(t, c, n1, "restart", "etcd", "--coordination-timeout", "20s")
	<-p.Done()
	var out strings.Builder
	for _, e := range p.Events() {
		out.WriteString(e.Str("msg") + " " + fmt.Sprint(e.Fields) + "\n")
	}
	if p.Cmd.ProcessState.ExitCode() != 1 || !strings.Contains(out.String(), "member node3 is unhealthy") {
		t.Errorf("restart of etcd with node3 down: exit %d\n%s", p.Cmd.ProcessState.ExitCode(), out.String())
	}
	if now, err := c.EtcdSandbox(ctx, n1); err != nil || now != sb1 {
		t.Errorf("node1's etcd was restarted while node3 was down (%.13s -> %.13s, %v)", sb1, now, err)
	}
}

// threeIdentitiesOneLease reads the apiserver's audit log: each node's
// pkirenewd took the one Lease as its own identity (issued from its own
// copy of the CA), never with admin.conf; the RBAC they share was created
// once, by whichever node came first.
func threeIdentitiesOneLease(t *testing.T, c *ha.Cluster) {
	t.Helper()
	events, err := cplane.ReadAudit(c.AuditLog())
	if err != nil {
		t.Fatal(err)
	}
	updates := map[string]int{}
	created := map[string]int{}
	for _, e := range events {
		switch e.UserAgent {
		case "pkirenewd-bootstrap":
			if e.Verb == "create" && e.ResponseStatus.Code == 201 {
				created[e.ObjectRef.Resource]++
			}
			continue
		case "pkirenewd":
		default:
			continue
		}
		if !strings.HasPrefix(e.User.Username, "system:pkirenewd:") || !slices.Contains(e.User.Groups, cluster.IdentityGroup) {
			t.Errorf("a pkirenewd request not as its own identity: %s", e)
		}
		if e.ObjectRef.Resource == "leases" {
			if e.ObjectRef.Name != "" && e.ObjectRef.Name != "pkirenewd" {
				t.Errorf("a lease other than kube-system/pkirenewd: %s", e)
			}
			if e.Verb == "update" {
				updates[e.User.Username]++
			}
		}
	}
	for _, n := range c.Nodes {
		if updates[cluster.IdentityUser(n.NodeName())] == 0 {
			t.Errorf("%s never updated the lease as %s: %v", n.NodeName(), cluster.IdentityUser(n.NodeName()), updates)
		}
	}
	if n := len(cluster.Objects("kube-system/pkirenewd").Roles); created["roles"] != n || created["rolebindings"] != n {
		t.Errorf("RBAC bootstrapped %v times, want once", created)
	}
	t.Logf("audit log: lease updates by identity %v; RBAC created once (%v)", updates, created)
}
