package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pkirenewd/pkirenewd/store"
)

// Create makes a new file 0600, whole, and never replaces one that is
// there; nothing of it is left beside the target.
func TestCreateNewFileOnly(t *testing.T) {
	dir := t.TempDir()
	roots, err := store.NewRoots(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := &store.Store{StateDir: t.TempDir(), Roots: roots}
	p := filepath.Join(dir, "pkirenewd.conf")
	if err := s.Create(p, []byte("new")); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("created: %v %v", st, err)
	}
	if err := s.Create(p, []byte("again")); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	if data, _ := os.ReadFile(p); string(data) != "new" {
		t.Errorf("replaced: %q", data)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("left beside it: %v", entries)
	}
	if err := s.Create(filepath.Join(t.TempDir(), "x"), nil); err == nil {
		t.Error("created outside the managed directories")
	}
}
