//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/cluster"
	"github.com/pkirenewd/pkirenewd/test/cplane"
)

// TestOwnAPIIdentity: pkirenewd talks to the real apiserver as itself,
// proven by the apiserver's audit log of every request. With its RBAC
// missing and the bootstrap forbidden, a forced renewal with restarts
// renews the files, issues the identity, and stops at the lease with a
// named error (the verbs refused and the manifest); check exits non-zero
// and says the same. With the bootstrap allowed, the Role and RoleBinding
// are created once with admin.conf and the roll runs under the lease as
// the own identity; the next renewal, and the daemon issuing a new
// identity, use the own identity only. What that identity may do in
// kube-system is exactly the table's verbs.
func TestOwnAPIIdentity(t *testing.T) {
	cp := StartControlPlane(t, Options{AuditLog: true})
	ctx := cp.Context()
	user := cluster.IdentityUser(cp.Opts.NodeName)
	state := t.TempDir()
	identity := filepath.Join(KubernetesDir, "pkirenewd.conf")
	common := []string{"--config", "/dev/null", "--log-level", "debug", "--pki-dir", PKIDir, "--kubeconfig-dir", KubernetesDir,
		"--manifests-dir", ManifestsDir, "--state-dir", state, "--cri-endpoint", cp.Rig.Endpoint(), "--node-name", cp.Opts.NodeName,
		"--admin-kubeconfig-copy", "", "--metrics-address", "", "--kubelet-restart-command", cp.KubeletRestartCommand()}
	var phases []phase
	// The kubelet restarted for the last renewal's kubelet.conf must
	// answer before the next renewal: pkirenewd writes nothing while no
	// kubelet could recreate what it stops.
	kubeletUp := func() {
		t.Helper()
		if err := cp.Poll(time.Minute, 200*time.Millisecond, "the kubelet's healthz", func(ctx context.Context) error {
			return insecureGetOK(ctx, "http://127.0.0.1:10248/healthz")
		}); err != nil {
			t.Fatal(err)
		}
	}
	run := func(name string, args ...string) (int, string) {
		t.Helper()
		kubeletUp()
		start := time.Now()
		out, err := exec.CommandContext(ctx, pkirenewdBin, append(args, common...)...).CombinedOutput()
		_ = os.WriteFile(filepath.Join(cp.LogDir, name+".log"), out, 0o644)
		phases = append(phases, phase{name, start, time.Now()})
		t.Logf("%s: %s in %v", name, strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	rbacExists := func() (bool, bool) {
		_, errRole := cp.Admin.Get(ctx, "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles/pkirenewd")
		_, errBinding := cp.Admin.Get(ctx, "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/rolebindings/pkirenewd")
		return errRole == nil, errBinding == nil
	}

	// 1. RBAC missing, bootstrap forbidden.
	before := leafSerials(t)
	code, out := run("renew-forbidden", "renew", "--force", "--restart", "--api-identity-bootstrap=false")
	for _, want := range []string{"RBAC: the API refuses " + user + " (group system:pkirenewd)", "update on leases.coordination.k8s.io kube-system/pkirenewd",
		"apiIdentityBootstrap is false", "kind: RoleBinding", "issued  pkirenewd.conf"} {
		if !strings.Contains(out, want) {
			t.Errorf("renew with the bootstrap forbidden lacks %q:\n%s", want, out)
		}
	}
	if code == 0 {
		t.Errorf("renew with the RBAC missing and the bootstrap forbidden: exit 0")
	}
	after := leafSerials(t)
	for k, v := range before {
		if after[k] == v {
			t.Errorf("%s not renewed though the lease was refused (the files come first)", k)
		}
	}
	if role, binding := rbacExists(); role || binding {
		t.Fatalf("RBAC created with the bootstrap forbidden (Role %v, RoleBinding %v)", role, binding)
	}
	code, out = checkNode(cp, "--state-dir", state, "--api-identity-bootstrap=false")
	if code == 0 || !strings.Contains(out, "RBAC MISSING") || !strings.Contains(out, "create on events.events.k8s.io in kube-system") || !strings.Contains(out, "kind: Role\n") {
		t.Errorf("check with the RBAC missing: exit %d\n%s", code, out)
	}
	t.Logf("bootstrap forbidden: renew exit non-zero naming the refused verbs, files renewed, check exit %d", code)

	// 2. Bootstrap allowed: created once, the roll as the own identity.
	if code, out := run("renew-bootstrap", "renew", "--force", "--restart"); code != 0 || !strings.Contains(out, "created Role kube-system/pkirenewd, RoleBinding kube-system/pkirenewd, Role kube-public/pkirenewd, RoleBinding kube-public/pkirenewd, ClusterRole pkirenewd, ClusterRoleBinding pkirenewd with admin.conf") {
		t.Fatalf("renew with the bootstrap: exit %d\n%s", code, out)
	}
	if role, binding := rbacExists(); !role || !binding {
		t.Fatalf("after the bootstrap: Role %v, RoleBinding %v", role, binding)
	}
	if code, out := checkNode(cp, "--state-dir", state); code != 0 || strings.Contains(out, "RBAC") {
		t.Errorf("check after the bootstrap: exit %d\n%s", code, out)
	}

	// 3. The next renewal: the own identity only.
	if code, out := run("renew-own", "renew", "--force", "--restart"); code != 0 || strings.Contains(out, "created Role") {
		t.Fatalf("renew after the bootstrap: exit %d\n%s", code, out)
	}
	if h, err := restartLeaseHolder(ctx, cp); err != nil || h != "" {
		t.Errorf("restart lease after the rolls: holder %q (%v)", h, err)
	}

	// 4. The daemon on a node without an identity: issued in its first
	// round, announced by an Event it posts as itself.
	if err := os.Remove(identity); err != nil {
		t.Fatal(err)
	}
	kubeletUp()
	dStart := time.Now()
	d := startPkirenewd(t, cp, "pkirenewd-run.log", "run", "--state-dir", state, "--restart-policy", "needed", "--kubelet-restart-command", cp.KubeletRestartCommand())
	if err := cp.Poll(2*time.Minute, time.Second, "the daemon's Event about its new identity", func(ctx context.Context) error {
		if d.exited() {
			return errors.New("pkirenewd exited")
		}
		b, err := cp.Admin.Get(ctx, "/apis/events.k8s.io/v1/namespaces/kube-system/events")
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), "renewed 1: pkirenewd.conf") {
			return errors.New("no Event yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := d.stop(t); err != nil {
		t.Error(err)
	}
	phases = append(phases, phase{"daemon", dStart, time.Now()})
	t.Logf("the daemon issued its identity and posted its Event %v after it started", time.Since(dStart).Round(time.Millisecond))

	// What the identity may do: `kubectl auth can-i --list` as itself
	// (user and group) in each namespace of the table, less what every
	// authenticated user may do.
	own := &Client{Kubeconfig: identity, Server: APIServer}
	for _, ns := range []string{"kube-system", cluster.ClusterInfoNamespace} {
		got := canList(t, own, ns)
		var want []string
		for _, c := range cluster.Needed("kube-system/pkirenewd") {
			if c.Namespace == "" { // a cluster-wide rule shows in every namespace
				c.Namespace = ns
			}
			if c.Namespace == ns {
				want = append(want, c.String())
			}
		}
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s may do in %s:\n  %s\nwant exactly:\n  %s", user, ns, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
		t.Logf("can-i --list as %s (group %s) in %s: %s", user, cluster.IdentityGroup, ns, strings.Join(got, "; "))
	}

	// The audit log: every request pkirenewd made came from its own
	// identity, except the bootstrap's, made once with admin.conf.
	events, err := cplane.ReadAudit(cp.AuditLog())
	if err != nil {
		t.Fatal(err)
	}
	byUser := map[string]map[string]int{}
	var bootstrap []cplane.AuditEvent
	for _, e := range events {
		switch e.UserAgent {
		case "pkirenewd":
		case "pkirenewd-bootstrap":
			bootstrap = append(bootstrap, e)
			if e.User.Username != "kubernetes-admin" {
				t.Errorf("bootstrap request not with admin.conf: %s", e)
			}
			continue
		default:
			continue
		}
		if e.User.Username != user || !slices.Contains(e.User.Groups, cluster.IdentityGroup) {
			t.Errorf("pkirenewd's request not as its own identity: %s", e)
		}
		if byUser[e.User.Username] == nil {
			byUser[e.User.Username] = map[string]int{}
		}
		byUser[e.User.Username][e.Verb+" "+e.ObjectRef.Resource]++
	}
	var created []string
	for _, e := range bootstrap {
		if e.Verb == "create" && e.ResponseStatus.Code == 201 {
			created = append(created, e.ObjectRef.Resource)
		}
		if p := phaseOf(phases, e.Received); p != "renew-bootstrap" {
			t.Errorf("bootstrap request during %q: %s", p, e)
		}
	}
	if !slices.Equal(created, []string{"roles", "rolebindings", "roles", "rolebindings", "clusterroles", "clusterrolebindings"}) || len(bootstrap) != 12 {
		t.Errorf("bootstrap requests: %v", bootstrap)
	}
	mine := byUser[user]
	for _, call := range []string{"update leases", "get leases", "create events", "create selfsubjectaccessreviews"} {
		if mine[call] == 0 {
			t.Errorf("no %q by %s in the audit log: %v", call, user, mine)
		}
	}
	t.Logf("audit log: %d requests; pkirenewd's: %v; with admin.conf: %d (the bootstrap: get and create of each Role, RoleBinding, ClusterRole and ClusterRoleBinding)", len(events), byUser, len(bootstrap))
}

// phase is a step of a test, for telling whose requests an audit event
// records.
type phase struct {
	name     string
	from, to time.Time
}

// phaseOf names the phase a request was received in.
func phaseOf(phases []phase, at time.Time) string {
	for _, p := range phases {
		if !at.Before(p.from) && !at.After(p.to) {
			return p.name
		}
	}
	return "between phases"
}

// canList is what c's user may do in ns (a SelfSubjectRulesReview, what
// `kubectl auth can-i --list` asks), as Calls, without what every
// authenticated user may do (system:basic-user's self reviews).
func canList(t *testing.T, c *Client, ns string) []string {
	t.Helper()
	b, err := c.Create(context.Background(), "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
		map[string]any{"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": map[string]any{"namespace": ns}})
	if err != nil {
		t.Fatal(err)
	}
	var review struct {
		Status struct {
			ResourceRules []struct {
				Verbs, APIGroups, Resources, ResourceNames []string
			} `json:"resourceRules"`
		} `json:"status"`
	}
	if err := json.Unmarshal(b, &review); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range review.Status.ResourceRules {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, res := range r.Resources {
			if strings.HasPrefix(res, "selfsubject") {
				continue
			}
			for _, g := range r.APIGroups {
				for _, v := range r.Verbs {
					for _, n := range names {
						got = append(got, cluster.Call{Verb: v, Group: g, Resource: res, Namespace: ns, Name: n}.String())
					}
				}
			}
		}
	}
	sort.Strings(got)
	return got
}
