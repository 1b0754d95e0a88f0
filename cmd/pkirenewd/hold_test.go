package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

// A due item that cannot be written (scheduler.conf immutable): check
// exits 1 and says so with the fix, in the table and in JSON; renew of
// what is due writes the rest and names it held (exit 1); an explicit
// --force stays all or nothing.
func TestHeldItemInCheckAndRenew(t *testing.T) {
	renewtest.NeedRoot(t)
	saved := daemonPID
	daemonPID = func() int { return 0 }
	t.Cleanup(func() { daemonPID = saved })
	n := newNode(t, renewtest.Options{NotBefore: time.Now().Add(-300 * 24 * time.Hour)})
	conf := filepath.Join(n.kube, "scheduler.conf")
	renewtest.Chattr(t, "i", conf)
	fix := "chattr -i " + conf
	// A manifests directory of its own: the host's may be another test's.
	args := n.args("--manifests-dir", filepath.Join(n.root, "manifests"))

	code, out, stderr := n.run(t, append([]string{"check", "-o", "json"}, args...)...)
	if code != checkDue {
		t.Fatalf("check: exit %d\n%s\n%s", code, out, stderr)
	}
	var rep report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	for _, c := range rep.Certificates {
		if held := c.Name == "scheduler.conf"; held != strings.Contains(c.Unwritable, fix) {
			t.Errorf("%s: unwritable %q", c.Name, c.Unwritable)
		}
	}
	code, out, _ = n.run(t, append([]string{"check"}, args...)...)
	if code != checkDue || !strings.Contains(out, "HELD: cannot be written") || !strings.Contains(out, "HELD scheduler.conf ("+conf+")") {
		t.Fatalf("check table: exit %d\n%s", code, out)
	}

	code, out, stderr = n.run(t, append([]string{"renew"}, args...)...)
	if code != 1 || countLines(out, "renewed ") != 11 || !strings.Contains(out, "held    scheduler.conf") || !strings.Contains(stderr, fix) {
		t.Fatalf("renew: exit %d\n%s\n%s", code, out, stderr)
	}
	code, out, _ = n.run(t, append([]string{"check", "-o", "json"}, args...)...)
	rep = report{}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != checkDue {
		t.Fatalf("check after renew: exit %d %v", code, err)
	}
	for _, c := range rep.Certificates {
		if due := c.State == "due"; due != (c.Name == "scheduler.conf") {
			t.Errorf("after renew: %s is %s", c.Name, c.State)
		}
	}

	code, _, stderr = n.run(t, append([]string{"renew", "--force"}, args...)...)
	if code != 1 || !strings.Contains(stderr, "nothing was written") || !strings.Contains(stderr, conf+" is immutable") {
		t.Fatalf("renew --force: exit %d\n%s", code, stderr)
	}
}
