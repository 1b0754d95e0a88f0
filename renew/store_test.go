package renew_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
	"github.com/pkirenewd/pkirenewd/store"
)

type crash struct{ step string }

// runUntilCrash applies plan and "kills" the process at the given step by
// unwinding out of the store, which leaves exactly what a SIGKILL would
// leave on disk at that point (minus unsynced page cache).
func runUntilCrash(f *fixture, plan *renew.Plan, step string) (crashed bool, err error) {
	r := f.renewer(func(o *renew.Options) {
		o.Step = func(s string) {
			if s == step {
				panic(crash{s})
			}
		}
	})
	defer func() {
		if v := recover(); v != nil {
			if _, ok := v.(crash); !ok {
				panic(v)
			}
			crashed = true
		}
	}()
	_, err = r.Apply(plan)
	return false, err
}

func fileSums(t testing.TB, paths []string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		m[p] = fmt.Sprintf("%x", sha256.Sum256(b))
	}
	return m
}

func TestCrashAtEveryStepRecoversConsistently(t *testing.T) {
	t.Parallel()
	// Record the steps of one transaction.
	probe := newFixture(t, renewtest.Options{Algorithm: "ECDSA-P256"})
	var steps []string
	r := probe.renewer(func(o *renew.Options) { o.Step = func(s string) { steps = append(steps, s) } })
	inv, _, _ := r.Inventory()
	plan, err := r.Plan(inv, renew.Selection{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Apply(plan); err != nil {
		t.Fatal(err)
	}
	if len(steps) < 2*len(plan.Paths()) {
		t.Fatalf("only %d steps recorded for %d files", len(steps), len(plan.Paths()))
	}
	t.Logf("%d crash points covered", len(steps))

	for _, step := range steps {
		t.Run(strings.ReplaceAll(step, ":", "_"), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, renewtest.Options{Algorithm: "ECDSA-P256"})
			r := f.renewer(nil)
			inv, _, _ := r.Inventory()
			plan, err := r.Plan(inv, renew.Selection{Force: true})
			if err != nil {
				t.Fatal(err)
			}
			paths := plan.Paths()
			oldSums := fileSums(t, paths)
			newSums := map[string]string{}
			for _, it := range plan.Items {
				for _, c := range it.Changes {
					newSums[c.Path] = fmt.Sprintf("%x", sha256.Sum256(c.Data))
				}
			}
			crashed, err := runUntilCrash(f, plan, step)
			if !crashed {
				t.Fatalf("did not crash at %s (err %v)", step, err)
			}
			// Restart: recovery, then the PKI must be consistent and the
			// transaction all-old or all-new.
			if err := f.renewer(nil).Recover(); err != nil {
				t.Fatal(err)
			}
			requireConsistent(t, f.inventory(t))
			got := fileSums(t, paths)
			allOld, allNew := true, true
			for _, p := range paths {
				allOld = allOld && got[p] == oldSums[p]
				allNew = allNew && got[p] == newSums[p]
			}
			if !allOld && !allNew {
				t.Fatalf("mixed transaction after crash at %s", step)
			}
			committed := step == "done" || strings.HasPrefix(step, "renamed") || step == "journal-committed"
			if committed != allNew {
				t.Errorf("after crash at %s: allNew=%v, want %v", step, allNew, committed)
			}
			// No leftovers: no staged files, no journal.
			_ = filepath.WalkDir(f.root, func(p string, d os.DirEntry, err error) error {
				if strings.Contains(filepath.Base(p), ".pkirenewd-") || filepath.Base(p) == "journal.json" && filepath.Dir(p) == f.stateDir {
					t.Errorf("leftover %s", p)
				}
				return nil
			})
			// And the node can renew again.
			f.now = f.now.Add(time.Hour)
			if _, err := f.renew(t, f.renewer(nil), renew.Selection{Force: true}); err != nil {
				t.Fatalf("renewal after recovery: %v", err)
			}
		})
	}
}

func TestCommitRefusesWhilePending(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{Algorithm: "ECDSA-P256"})
	r := f.renewer(nil)
	inv, _, _ := r.Inventory()
	plan, _ := r.Plan(inv, renew.Selection{Names: []string{"apiserver"}})
	if crashed, _ := runUntilCrash(f, plan, "backup"); !crashed {
		t.Fatal("no crash")
	}
	plan2, _ := r.Plan(inv, renew.Selection{Names: []string{"front-proxy-client"}})
	if _, err := r.Apply(plan2); err == nil || !strings.Contains(err.Error(), "unfinished transaction") {
		t.Fatalf("commit over a pending journal: %v", err)
	}
}

func TestCorruptJournalIsRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{Algorithm: "ECDSA-P256"})
	if err := os.MkdirAll(f.stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.stateDir, "journal.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	tree, _ := renewtest.HashTree(f.root)
	if err := f.renewer(nil).Recover(); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Recover: %v", err)
	}
	after, _ := renewtest.HashTree(f.root)
	if d := renewtest.DiffTrees(tree, after); d != "" {
		t.Fatalf("changed:\n%s", d)
	}
}

func TestBackupsAndRestore(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{Algorithm: "ECDSA-P256"})
	before, _ := renewtest.HashTree(f.layout.KubeconfigDir)
	r := f.renewer(nil)
	inv, _, _ := r.Inventory()
	plan, _ := r.Plan(inv, renew.Selection{Force: true})
	res, err := r.Apply(plan)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(res.BackupDir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("backup dir %v mode %v", err, st.Mode())
	}
	entries, _ := os.ReadDir(res.BackupDir)
	for _, e := range entries {
		info, _ := e.Info()
		if info.Mode().Perm() != 0o600 {
			t.Errorf("backup %s mode %o", e.Name(), info.Mode().Perm())
		}
	}
	roots, _ := store.NewRoots(f.layout.PKIDir, f.layout.KubeconfigDir)
	s := &store.Store{StateDir: f.stateDir, Roots: roots}
	if _, err := s.Restore(res.BackupDir); err != nil {
		t.Fatal(err)
	}
	after, _ := renewtest.HashTree(f.layout.KubeconfigDir)
	if d := renewtest.DiffTrees(before, after); d != "" {
		t.Fatalf("restore did not bring back the old files:\n%s", d)
	}
	// Only the newest 10 backups are kept.
	for i := 0; i < 12; i++ {
		now := time.Now().Add(time.Duration(i) * time.Minute)
		s.Now = func() time.Time { return now }
		if _, err := s.Commit([]store.Change{{Path: filepath.Join(f.layout.PKIDir, "apiserver.crt"), Data: []byte(fmt.Sprint(i))}}); err != nil {
			t.Fatal(err)
		}
	}
	entries, _ = os.ReadDir(filepath.Join(f.stateDir, "backups"))
	if len(entries) != 10 {
		t.Errorf("%d backups kept, want 10", len(entries))
	}
}

// Private keys are never readable by group or others at any step of a
// transaction, whatever the umask; backups are 0700/0600.
func TestKeysNeverReadableByOthers(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	f := newFixture(t, renewtest.Options{Algorithm: "ECDSA-P256"})
	checked := 0
	check := func(step string) {
		for _, dir := range []string{f.layout.KubeconfigDir, f.stateDir} {
			_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					if err == nil && strings.HasPrefix(p, filepath.Join(f.stateDir, "backups")) {
						if st, _ := os.Stat(p); st.Mode().Perm() != 0o700 {
							t.Errorf("at %s: backup dir %s mode %o", step, p, st.Mode().Perm())
						}
					}
					return nil
				}
				data, rerr := os.ReadFile(p)
				st, serr := os.Stat(p)
				if rerr != nil || serr != nil {
					return nil
				}
				if bytes.Contains(data, []byte("PRIVATE KEY")) || bytes.Contains(data, []byte("client-key-data")) || strings.HasPrefix(p, filepath.Join(f.stateDir, "backups")) {
					checked++
					if st.Mode().Perm()&0o077 != 0 {
						t.Errorf("at %s: %s holds key material with mode %o", step, p, st.Mode().Perm())
					}
				}
				return nil
			})
		}
	}
	r := f.renewer(func(o *renew.Options) { o.Step = check })
	inv, _, _ := r.Inventory()
	plan, err := r.Plan(inv, renew.Selection{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Apply(plan); err != nil {
		t.Fatal(err)
	}
	if checked < 100 {
		t.Fatalf("only %d key-file checks", checked)
	}
}

// Staged and temp files of an interrupted run hold private keys: recovery
// removes them even when the run's journal is gone, and touches nothing
// else.
func TestRecoverRemovesStrayStagedFiles(t *testing.T) {
	t.Parallel()
	f := newFixture(t, renewtest.Options{Algorithm: "ECDSA-P256"})
	key, err := os.ReadFile(filepath.Join(f.layout.PKIDir, "apiserver.key"))
	if err != nil {
		t.Fatal(err)
	}
	// Not ours: a dot file of the operator's stays, and so do files that
	// merely share the prefix (the e2e rig's marker .pkirenewd-e2e was
	// once taken for a stray and removed).
	for _, mine := range []string{
		filepath.Join(f.layout.PKIDir, ".keep"),
		filepath.Join(f.layout.KubeconfigDir, ".pkirenewd-e2e"),
		filepath.Join(f.layout.PKIDir, ".pkirenewd-notes.txt"),
		filepath.Join(f.layout.PKIDir, ".pkirenewd-20250101T000000Z-0badf00d"),
	} {
		if err := os.WriteFile(mine, []byte("not pkirenewd's"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := renewtest.HashTree(f.root)
	strays := []string{
		filepath.Join(f.layout.PKIDir, ".pkirenewd-20250101T000000Z-0badf00d.apiserver.key"),
		filepath.Join(f.layout.PKIDir, "etcd", ".pkirenewd-20250101T000000Z-0badf00d.peer.key"),
		filepath.Join(f.layout.KubeconfigDir, ".pkirenewd-20250101T000000Z-0badf00d.admin.conf"),
		filepath.Join(f.layout.PKIDir, ".pkirenewd-tmp-4242.sa.key"),
	}
	for _, p := range strays {
		if err := os.WriteFile(p, key, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.renewer(nil).Recover(); err != nil {
		t.Fatal(err)
	}
	for _, p := range strays {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived recovery (%v)", p, err)
		}
	}
	after, _ := renewtest.HashTree(f.root)
	if d := renewtest.DiffTrees(before, after); d != "" {
		t.Fatalf("recovery changed more than the strays:\n%s", d)
	}
	if len(f.log.AllEntries()) < len(strays) {
		t.Errorf("%d log lines for %d removed strays", len(f.log.AllEntries()), len(strays))
	}
}

// Backups are pruned oldest first in the order they were made, not by the
// time in their names: after the clock steps back, the newest backup has
// the oldest time and must be the one kept.
func TestBackupsPrunedByCreationOrder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	target := filepath.Join(dir, "pki", "file")
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(target, []byte("v0"), 0o600); err != nil {
		t.Fatal(err)
	}
	roots, err := store.NewRoots(filepath.Dir(target))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2027, 6, 1, 12, 0, 0, 0, time.UTC)
	var made []string
	for i := 1; i <= 6; i++ {
		at := t0.Add(time.Duration(i) * time.Hour)
		if i > 3 {
			at = t0.Add(-time.Duration(i) * 24 * time.Hour) // the clock stepped back
		}
		s := &store.Store{StateDir: filepath.Join(dir, "state"), Roots: roots, Now: func() time.Time { return at }, KeepBackups: 3}
		res, err := s.Commit([]store.Change{{Path: target, Data: []byte(fmt.Sprintf("v%d", i))}})
		if err != nil {
			t.Fatal(err)
		}
		made = append(made, filepath.Base(res.BackupDir))
	}
	entries, err := os.ReadDir(filepath.Join(dir, "state", "backups"))
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, e := range entries {
		kept = append(kept, e.Name())
	}
	if want := made[3:]; strings.Join(kept, " ") != strings.Join(want, " ") {
		t.Errorf("kept %v, want the last three made %v", kept, want)
	}
}
