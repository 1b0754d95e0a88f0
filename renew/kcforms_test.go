package renew

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/kubeconfig"
	"github.com/pkirenewd/pkirenewd/kubeconfig/kubeconfigtest"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

// A whole renewal of a PKI whose admin.conf is compact JSON and whose
// controller-manager.conf is flow YAML, with non-ASCII names, renews
// everything and leaves each file in its form. Before, the second
// credential of the one-line JSON was looked for at a column the first
// replacement had moved, and the all-or-nothing plan renewed nothing.
func TestRenewKubeconfigForms(t *testing.T) {
	root := t.TempDir()
	l, err := renewtest.MakePKI(filepath.Join(root, "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256"})
	if err != nil {
		t.Fatal(err)
	}
	forms := map[string]func(t *testing.T, b []byte) []byte{
		"admin.conf":              func(t *testing.T, b []byte) []byte { return kubeconfigtest.AsJSON(t, kubeconfigtest.NonASCII(b), "") },
		"controller-manager.conf": kubeconfigtest.FlowYAML,
		"scheduler.conf":          func(t *testing.T, b []byte) []byte { return kubeconfigtest.AsJSON(t, b, "    ") },
	}
	before := map[string][]byte{}
	for name, form := range forms {
		p := filepath.Join(l.KubeconfigDir, name)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		before[name] = form(t, b)
		if err := os.WriteFile(p, before[name], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := New(Options{
		Dirs:     Dirs{PKIDir: l.PKIDir, KubeconfigDir: l.KubeconfigDir},
		StateDir: filepath.Join(root, "state"),
		Policy:   pki.Policy{RenewBefore: 90 * 24 * time.Hour, NodeName: "node1"},
		Validity: 365 * 24 * time.Hour,
	})
	inv, _, err := r.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	plan, err := r.Plan(inv, Selection{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Apply(plan); err != nil {
		t.Fatal(err)
	}
	if len(plan.Items) != 12 {
		t.Fatalf("renewed %d items, want 12", len(plan.Items))
	}
	for name := range forms {
		after, err := os.ReadFile(filepath.Join(l.KubeconfigDir, name))
		if err != nil {
			t.Fatal(err)
		}
		old, _ := kubeconfig.Parse(before[name])
		kc, err := kubeconfig.Parse(after)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var issued *Planned
		for i := range plan.Items {
			if plan.Items[i].Name == name {
				issued = &plan.Items[i]
			}
		}
		if issued == nil || !bytes.Equal(kc.CertData, issued.Issued.CertPEM) || !bytes.Equal(kc.KeyData, issued.Issued.KeyPEM) {
			t.Fatalf("%s does not carry the renewed credentials", name)
		}
		// The same file but for the two values, in its own form.
		want := bytes.Replace(before[name], []byte(base64.StdEncoding.EncodeToString(old.CertData)), []byte(base64.StdEncoding.EncodeToString(kc.CertData)), 1)
		want = bytes.Replace(want, []byte(base64.StdEncoding.EncodeToString(old.KeyData)), []byte(base64.StdEncoding.EncodeToString(kc.KeyData)), 1)
		if !bytes.Equal(after, want) {
			t.Errorf("%s changed outside its credentials:\n%s", name, after)
		}
	}
	_, statuses, err := r.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range statuses {
		if s.Err != nil || s.Missing {
			t.Errorf("%s after the renewal: err=%v missing=%v", s.Name, s.Err, s.Missing)
		}
	}
}
