package renew_test

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
	"github.com/pkirenewd/pkirenewd/store"
)

// The root-only helpers of renewtest, by their short names here.
var (
	needRoot = renewtest.NeedRoot
	sh       = renewtest.Run
	chattr   = renewtest.Chattr
	roBind   = renewtest.ReadOnlyBind
)

// leftovers lists what a refused renewal left: staged files anywhere and
// anything in the state dir beyond an empty backups dir.
func leftovers(t *testing.T, f *fixture) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(f.layout.KubeconfigDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".pkirenewd-") {
			out = append(out, p)
		}
		return nil
	})
	_ = filepath.WalkDir(f.stateDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == f.stateDir || p == filepath.Join(f.stateDir, "backups") || d.Name() == "lock" {
			return nil
		}
		out = append(out, p)
		return nil
	})
	sort.Strings(out)
	return out
}

// refused renews everything and requires an error containing want, every
// byte as it was and nothing left behind.
func refused(t *testing.T, f *fixture, mod func(*renew.Options), want ...string) {
	t.Helper()
	before, err := renewtest.HashTree(f.layout.KubeconfigDir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.renew(t, f.renewer(mod), renew.Selection{Force: true})
	if err == nil {
		t.Fatal("renewal succeeded")
	}
	for _, w := range append(want, "nothing was written") {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not say %q:\n%v", w, err)
		}
	}
	if strings.Contains(err.Error(), "rolling back failed") {
		t.Errorf("spurious rollback failure:\n%v", err)
	}
	after, _ := renewtest.HashTree(f.layout.KubeconfigDir)
	if d := renewtest.DiffTrees(before, after); d != "" {
		t.Fatalf("changed:\n%s", d)
	}
	if l := leftovers(t, f); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
	requireConsistent(t, f.inventory(t))
}

func TestImmutableOrAppendOnlyTargetIsRefusedUpFront(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct{ flag, file, want string }{
		{"i", "pki/apiserver.crt", "apiserver.crt is immutable (chattr +i)"},
		{"a", "pki/apiserver.key", "apiserver.key is append-only (chattr +a)"},
		{"i", "admin.conf", "admin.conf is immutable (chattr +i)"},
		{"i", "pki/etcd", "directory " + "%s/pki/etcd is immutable (chattr +i)"},
		{"a", "pki", "directory " + "%s/pki is append-only (chattr +a)"},
	} {
		t.Run(tc.flag+"_"+strings.ReplaceAll(tc.file, "/", "_"), func(t *testing.T) {
			f := newFixture(t, renewtest.Options{})
			var steps []string
			chattr(t, tc.flag, filepath.Join(f.layout.KubeconfigDir, tc.file))
			want := strings.Replace(tc.want, "%s", f.layout.KubeconfigDir, 1)
			refused(t, f, func(o *renew.Options) { o.Step = func(s string) { steps = append(steps, s) } }, want)
			if len(steps) > 0 {
				t.Errorf("the transaction began (%v) before the refusal", steps)
			}
		})
	}
}

// A flag set while the files are being staged is caught by the second
// look just before the commit record: rolled back, nothing changed.
func TestFlagSetDuringStagingIsRefusedBeforeTheCommit(t *testing.T) {
	needRoot(t)
	f := newFixture(t, renewtest.Options{})
	target := filepath.Join(f.layout.PKIDir, "front-proxy-client.crt")
	refused(t, f, func(o *renew.Options) {
		o.Step = func(s string) {
			if s == "staged-synced" {
				chattr(t, "i", target)
			}
		}
	}, target+" is immutable")
}

func TestReadOnlyTargetDirIsRefusedBeforeTheJournal(t *testing.T) {
	needRoot(t)
	f := newFixture(t, renewtest.Options{})
	roBind(t, f.layout.PKIDir)
	var steps []string
	refused(t, f, func(o *renew.Options) { o.Step = func(s string) { steps = append(steps, s) } }, "read-only file system", f.layout.PKIDir)
	if len(steps) > 0 {
		t.Errorf("the transaction began (%v) before the refusal", steps)
	}
}

// A mount turning read-only after the journal was written: staging fails
// and the rollback, which unlinks staged files that were never made (EROFS
// there, not ENOENT), must still finish cleanly.
func TestReadOnlyAfterTheJournalRollsBackCleanly(t *testing.T) {
	needRoot(t)
	f := newFixture(t, renewtest.Options{})
	refused(t, f, func(o *renew.Options) {
		o.Step = func(s string) {
			if s == "backup" {
				roBind(t, f.layout.PKIDir)
			}
		}
	}, "read-only file system")
}

// A rename that fails after the commit record (here a flag set between the
// last check and the renames) is retried once, then every file already
// renamed is put back from the backup in the same run: all-old, pairs
// matching, nothing staged, no journal, and the error names the file.
func TestRenameFailingAfterTheCommitEndsAllOld(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct{ name, flagged, want string }{
		{"immutable target", "pki/apiserver.crt", "pki/apiserver.crt"},
		{"immutable directory", "pki/etcd", "pki/etcd/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, renewtest.Options{})
			before, _ := renewtest.HashTree(f.layout.KubeconfigDir)
			renamed := 0
			mod := func(o *renew.Options) {
				o.Step = func(s string) {
					if s == "renamed:apiserver.key" {
						chattr(t, "i", filepath.Join(f.layout.KubeconfigDir, tc.flagged))
					}
					if strings.HasPrefix(s, "renamed:") {
						renamed++
					}
				}
			}
			_, err := f.renew(t, f.renewer(mod), renew.Selection{Force: true})
			if err == nil || !strings.Contains(err.Error(), filepath.Join(f.layout.KubeconfigDir, tc.want)) || !strings.Contains(err.Error(), "put back") {
				t.Fatalf("want an error naming %s and saying the files were put back: %v", tc.want, err)
			}
			if renamed == 0 {
				t.Fatal("no rename happened: the test did not reach the commit")
			}
			after, _ := renewtest.HashTree(f.layout.KubeconfigDir)
			for p := range after {
				if strings.HasPrefix(filepath.Base(p), ".pkirenewd-") {
					delete(after, p) // looked at below
				}
			}
			if d := renewtest.DiffTrees(before, after); d != "" {
				t.Fatalf("not all-old:\n%s", d)
			}
			requireConsistent(t, f.inventory(t))
			// A staged file in a directory made immutable cannot be
			// unlinked: it must at least hold no key, and recovery
			// removes it once the directory allows.
			_ = filepath.WalkDir(f.layout.KubeconfigDir, func(p string, d os.DirEntry, err error) error {
				if st, serr := os.Stat(p); err == nil && serr == nil && strings.HasPrefix(d.Name(), ".pkirenewd-") && st.Size() != 0 {
					t.Errorf("staged file %s still holds %d bytes", p, st.Size())
				}
				return nil
			})
			sh(t, "chattr", "-i", filepath.Join(f.layout.KubeconfigDir, tc.flagged))
			if err := f.renewer(nil).Recover(); err != nil {
				t.Fatal(err)
			}
			for _, l := range leftovers(t, f) {
				if !strings.HasPrefix(l, filepath.Join(f.stateDir, "backups")+"/") {
					t.Errorf("left behind: %s", l)
				}
			}
			if pending, _ := (&store.Store{StateDir: f.stateDir}).Pending(); pending {
				t.Error("journal left behind")
			}
		})
	}
}
