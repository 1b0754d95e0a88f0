package main

import (
	"strings"
	"testing"

	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

// With apiIdentity own (the default) a node that has no identity yet
// shows it due in check (exit 1), and a renewal issues it alone; with
// admin it is not an item at all. `pkirenewd rbac` prints the manifest
// for the configured lease.
func TestOwnIdentityInCheckAndRenew(t *testing.T) {
	n := newNode(t, renewtest.Options{})
	own := n.args("--api-identity", "own")
	code, out, stderr := n.run(t, append([]string{"check"}, own...)...)
	if code != 1 || !strings.Contains(out, "now (not issued yet)") || !strings.Contains(out, "CN=system:pkirenewd:") {
		t.Fatalf("check: exit %d\n%s\n%s", code, out, stderr)
	}
	code, out, stderr = n.run(t, append([]string{"renew", "--dry-run"}, own...)...)
	if code != 0 || !strings.Contains(out, "would issue pkirenewd.conf") {
		t.Fatalf("dry run: exit %d\n%s\n%s", code, out, stderr)
	}
	code, out, stderr = n.run(t, append([]string{"renew"}, own...)...)
	if code != 0 || !strings.Contains(out, "issued  pkirenewd.conf") || strings.Contains(out, "backed up") {
		t.Fatalf("renew: exit %d\n%s\n%s", code, out, stderr)
	}
	if code, out, _ := n.run(t, append([]string{"check"}, n.args()...)...); code != 0 || strings.Contains(out, "pkirenewd.conf") {
		t.Errorf("apiIdentity admin: exit %d, the identity is listed:\n%s", code, out)
	}
	code, out, _ = n.run(t, append([]string{"rbac"}, append(own, "--lease", "ops/renewals")...)...)
	if code != 0 || !strings.Contains(out, "namespace: ops") || !strings.Contains(out, "- renewals") || !strings.Contains(out, "namespace: kube-system") {
		t.Errorf("rbac for ops/renewals: exit %d\n%s", code, out)
	}
}
