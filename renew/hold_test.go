package renew_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

// A due item whose key cannot be replaced (chattr +i) is held with its
// certificate — a cert and its key are one item, never split — and says
// why and what fixes it; every other due item is planned and written.
func TestAnItemThatCannotBeWrittenIsHeldWhole(t *testing.T) {
	needRoot(t)
	f := newFixture(t, renewtest.Options{NotBefore: time.Now().Add(-300 * day)})
	key := filepath.Join(f.layout.PKIDir, "apiserver.key")
	crt := filepath.Join(f.layout.PKIDir, "apiserver.crt")
	chattr(t, "i", key)
	r := f.renewer(nil)
	inv, statuses, err := r.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	var due []string
	for _, s := range statuses {
		if s.Kind == renew.KindCA {
			continue
		}
		if s.State != pki.StateDue {
			t.Fatalf("%s: %v, want due", s.Name, s.State)
		}
		due = append(due, s.Name)
		want := ""
		if s.Name == "apiserver" {
			want = key + " is immutable (chattr +i); to fix: chattr -i " + key
		}
		if s.Unwritable != want {
			t.Errorf("%s: unwritable %q, want %q", s.Name, s.Unwritable, want)
		}
	}
	plan, err := r.Plan(inv, renew.Selection{Names: due, HoldUnwritable: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Held) != 1 || plan.Held[0].Name != "apiserver" {
		t.Fatalf("held %v, want apiserver alone", plan.Held)
	}
	if len(plan.Items) != len(due)-1 {
		t.Fatalf("%d planned, want %d", len(plan.Items), len(due)-1)
	}
	if slices.Contains(plan.Paths(), crt) || slices.Contains(plan.Paths(), key) {
		t.Fatal("the held item's certificate or key is in the plan")
	}
	if _, err := r.Apply(plan); err != nil {
		t.Fatal(err)
	}
	_, after, err := r.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range after {
		if s.Kind == renew.KindCA {
			continue
		}
		if wantDue := s.Name == "apiserver"; (s.State == pki.StateDue) != wantDue {
			t.Errorf("%s: %v after the renewal", s.Name, s.State)
		}
	}
	requireConsistent(t, f.inventory(t))

	// Without HoldUnwritable (an operator's explicit selection) it is
	// planned, and the transaction refuses it as before: all or nothing.
	inv, _, _ = r.Inventory()
	plan, err = r.Plan(inv, renew.Selection{Names: []string{"apiserver", "front-proxy-client"}})
	if err != nil || len(plan.Held) != 0 || len(plan.Items) != 2 {
		t.Fatalf("planning without holds: %v, held %v", err, plan.Held)
	}
	if _, err := r.Apply(plan); err == nil || !strings.Contains(err.Error(), "nothing was written") {
		t.Fatalf("an explicit selection with an immutable key: %v", err)
	}
}

// The kubelet's serving pair is a transaction apart from the kubeadm set.
func TestKubeletServingIsATransactionOfItsOwn(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{})
	ks := kubeletPair(t, filepath.Join(f.root, "kubelet", "pki"))
	r := f.renewer(f.withKubelet(ks))
	inv, _, err := r.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	plan, err := r.Plan(inv, renew.Selection{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	txs := plan.Transactions()
	if len(txs) != 2 {
		t.Fatalf("%d transactions, want the kubeadm set and the kubelet pair", len(txs))
	}
	if got := txs[1].Paths(); !slices.Equal(got, []string{ks.KeyPath, ks.CertPath}) {
		t.Errorf("second transaction writes %v, want the kubelet pair alone", got)
	}
	for _, p := range txs[0].Paths() {
		if strings.HasPrefix(p, filepath.Dir(ks.CertPath)) {
			t.Errorf("the kubeadm set's transaction writes %s", p)
		}
	}
	if len(txs[0].Items)+len(txs[1].Items) != len(plan.Items) {
		t.Error("an item is in no transaction")
	}
}
