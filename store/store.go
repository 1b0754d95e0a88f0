package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pkirenewd/pkirenewd/internal/fsread"
)

// Change is one file a transaction replaces.
type Change struct {
	Path string
	Data []byte
}

// Store writes a set of changes as one transaction: every file is backed
// up, the new files are staged next to their targets, a commit record is
// made durable, and only then are the staged files renamed into place. A
// crash at any point leaves either the complete old set or, after Recover,
// the complete new set.
type Store struct {
	StateDir string
	// Roots are the managed directories; targets must lie inside them.
	Roots Roots
	// Now stamps backup directories.
	Now func() time.Time
	// KeepBackups is how many backup directories are kept (default 10).
	KeepBackups int
	// Step, when set, is called after each step of a transaction with the
	// step's name: the test hook that proves crash consistency.
	Step func(step string)
}

// Transaction states in the journal.
const (
	statePrepared  = "prepared"
	stateCommitted = "committed"
	// stateRestored marks the filed record of a transaction that was
	// undone: its backup holds what is on disk again.
	stateRestored = "restored"
)

type journalFile struct {
	Path      string   `json:"path"`
	Staged    string   `json:"staged"`
	Backup    string   `json:"backup"`
	OldSHA256 string   `json:"oldSHA256"`
	NewSHA256 string   `json:"newSHA256"`
	Meta      FileMeta `json:"meta"`
}

type journal struct {
	ID        string        `json:"id"`
	State     string        `json:"state"`
	BackupDir string        `json:"backupDir"`
	Files     []journalFile `json:"files"`
}

// Result describes a finished transaction.
type Result struct {
	ID        string
	BackupDir string
	Paths     []string
}

func (s *Store) journalPath() string { return filepath.Join(s.StateDir, "journal.json") }
func (s *Store) backupsDir() string  { return filepath.Join(s.StateDir, "backups") }

func (s *Store) step(name string) {
	hit(name)
	if s.Step != nil {
		s.Step(name)
	}
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func (s *Store) ensureStateDir() error {
	if err := os.MkdirAll(s.backupsDir(), 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	for _, d := range []string{s.StateDir, s.backupsDir()} {
		if err := os.Chmod(d, 0o700); err != nil {
			return fmt.Errorf("state dir: %w", err)
		}
	}
	return nil
}

// TransactionPending reports whether an unfinished transaction is recorded
// in stateDir.
func TransactionPending(stateDir string) (bool, error) {
	return (&Store{StateDir: stateDir}).Pending()
}

// Pending reports whether an unfinished transaction is recorded.
func (s *Store) Pending() (bool, error) {
	return fsread.Exists(s.journalPath())
}

func (j *journal) dirs() []string {
	set := map[string]bool{}
	for _, f := range j.Files {
		set[filepath.Dir(f.Path)] = true
	}
	var out []string
	for d := range set {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// writeManifest records in the backup directory where each file came from,
// so an operator can restore by hand without reading the journal.
func writeManifest(j *journal) error {
	var b strings.Builder
	for _, f := range j.Files {
		fmt.Fprintf(&b, "%s\t%s\t%04o\n", filepath.Base(f.Backup), f.Path, f.Meta.Mode)
	}
	return writeNew(filepath.Join(j.BackupDir, "MANIFEST"), []byte(b.String()), FileMeta{Mode: 0o600, UID: -1, GID: -1})
}

func (s *Store) writeJournal(j *journal) error {
	data, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	if err := WriteAtomic(s.journalPath(), append(data, '\n'), FileMeta{Mode: 0o600, UID: -1, GID: -1}); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

// rollForward renames every staged file into place. It is idempotent: a
// file already renamed is recognised by its content.
func (s *Store) rollForward(j *journal) error {
	for _, f := range j.Files {
		ok, err := fsread.Exists(f.Staged)
		if err != nil {
			return err
		}
		if ok {
			if err := os.Rename(f.Staged, f.Path); err != nil {
				return fmt.Errorf("rename into %s: %w", f.Path, err)
			}
			s.step("renamed:" + filepath.Base(f.Path))
			continue
		}
		cur, err := readRegular(f.Path, false)
		if err != nil {
			return err
		}
		if sum(cur) != f.NewSHA256 {
			return fmt.Errorf("%s: staged file vanished and the target does not hold the new content", f.Path)
		}
	}
	for _, d := range j.dirs() {
		if err := SyncDir(d); err != nil {
			return err
		}
	}
	s.step("renamed-synced")
	return s.finish(j)
}

// finish files the journal with its backup as the transaction's record.
func (s *Store) finish(j *journal) error {
	data, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	if err := WriteAtomic(filepath.Join(j.BackupDir, "journal.json"), data, FileMeta{Mode: 0o600, UID: -1, GID: -1}); err != nil {
		return err
	}
	if err := os.Remove(s.journalPath()); err != nil {
		return err
	}
	if err := SyncDir(s.StateDir); err != nil {
		return err
	}
	s.step("done")
	return nil
}

// rollbackPrepared undoes a transaction that never reached its commit
// record: the targets were not touched, so removing the staged files and
// the backup is enough.
func (s *Store) rollbackPrepared(j *journal) error {
	for _, f := range j.Files {
		if err := removeIfExists(f.Staged); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(j.BackupDir); err != nil {
		return err
	}
	if err := removeIfExists(s.journalPath()); err != nil {
		return err
	}
	return SyncDir(s.StateDir)
}

// removeIfExists removes p unless it is already gone. It looks first
// because unlinking an absent file on a read-only mount fails with EROFS,
// not ENOENT, and a file that is not there is not an error.
func removeIfExists(p string) error {
	ok, err := fsread.Exists(p)
	if err != nil || !ok {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// stagedPrefix starts the name of every file the store creates next to a
// target (staged files and temp files): they may hold private keys, so
// RemoveStrays finds them — by their whole name, never by the prefix
// alone: a file someone else named .pkirenewd-something is not ours.
const stagedPrefix = ".pkirenewd-"

// strayName matches exactly the names the store gives staged files
// (.pkirenewd-<UTC time>-<8 hex>.<target>) and temp files
// (.pkirenewd-tmp-<pid>.<target>).
var strayName = regexp.MustCompile(`^\.pkirenewd-([0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}|tmp-[0-9]+)\..+$`)

// RemoveStrays removes staged and temp files that an interrupted run left
// next to the targets, whether or not its journal survived: they may hold
// private keys and no transaction can use them once recovery is done. It
// looks in each managed directory and the directories directly below it
// (pki/etcd). Call it only under the lock and after Recover succeeded.
func (s *Store) RemoveStrays() ([]string, error) {
	if pending, err := s.Pending(); err != nil || pending {
		if err == nil {
			err = fmt.Errorf("an unfinished transaction is recorded in %s", s.journalPath())
		}
		return nil, err
	}
	var removed []string
	var errs []error
	for _, dir := range s.managedDirs() {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue // a vanished or unreadable subdirectory holds nothing of ours we could remove
		}
		for _, e := range entries {
			if e.IsDir() || !strayName.MatchString(e.Name()) {
				continue
			}
			p := filepath.Join(dir, e.Name())
			if err := removeIfExists(p); err != nil {
				errs = append(errs, fmt.Errorf("stray staged file %s (may hold a private key): %w", p, err))
				continue
			}
			removed = append(removed, p)
		}
		if len(removed) > 0 {
			_ = SyncDir(dir)
		}
	}
	return removed, errors.Join(errs...)
}

// managedDirs are the roots and their direct subdirectories.
func (s *Store) managedDirs() []string {
	seen := map[string]bool{}
	var out []string
	add := func(d string) {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	for _, root := range s.Roots {
		add(root)
		entries, _ := os.ReadDir(root)
		for _, e := range entries {
			if e.IsDir() {
				add(filepath.Join(root, e.Name()))
			}
		}
	}
	return out
}

// Recovery tells what Recover did.
type Recovery string

// Recovery outcomes.
const (
	RecoveryNone       Recovery = ""
	RecoveryRolledBack Recovery = "rolled back"
	RecoveryRolledFwd  Recovery = "rolled forward"
	RecoveryRestored   Recovery = "restored from backup"
)

// Recover completes or undoes a transaction interrupted by a crash: rolled
// forward when its commit record was written, rolled back otherwise. If a
// committed transaction can no longer be completed (its staged files were
// removed by hand), the whole set is restored from the backup so the PKI is
// all-old rather than mixed.
func (s *Store) Recover() (Recovery, string, error) {
	data, err := readRegular(s.journalPath(), false)
	if errors.Is(err, fs.ErrNotExist) {
		return RecoveryNone, "", nil
	}
	if err != nil {
		return RecoveryNone, "", fmt.Errorf("journal: %w", err)
	}
	var j journal
	if err := json.Unmarshal(data, &j); err != nil || j.ID == "" {
		return RecoveryNone, "", fmt.Errorf("journal %s is corrupt (%v): refusing to touch the PKI; inspect it and the backups in %s", s.journalPath(), err, s.backupsDir())
	}
	switch j.State {
	case statePrepared:
		return RecoveryRolledBack, j.ID, s.rollbackPrepared(&j)
	case stateCommitted:
		if err := s.rollForward(&j); err == nil {
			return RecoveryRolledFwd, j.ID, nil
		}
		stuck, err := s.restoreJournal(&j)
		if err == nil {
			err = stuck
		}
		if err != nil {
			return RecoveryNone, j.ID, err
		}
		return RecoveryRestored, j.ID, nil
	default:
		return RecoveryNone, j.ID, fmt.Errorf("journal %s has unknown state %q", s.journalPath(), j.State)
	}
}

// undoCommitted restores the old files of a committed transaction that
// could not be finished, in the same run, and returns the error that
// stopped it. Only if the restore fails too does the journal stay for
// recovery on the next start.
func (s *Store) undoCommitted(j *journal, cause error) error {
	stuck, err := s.restoreJournal(j)
	if err != nil {
		return fmt.Errorf("transaction %s: %w; putting the previous files back failed too: %v; recovery on next start will finish it", j.ID, cause, err)
	}
	err = fmt.Errorf("%w: every file of the transaction was put back as it was before (transaction %s undone)", cause, j.ID)
	if stuck != nil {
		err = fmt.Errorf("%w; %v", err, stuck)
	}
	return err
}

// restoreJournal makes a committed transaction all-old again. The staged
// files go first: they hold keys and cannot be used any more. A crash
// after that makes recovery restore again (a staged file is missing, so
// it cannot roll forward). Each target that does not hold its old content
// is replaced atomically by its backup with the original owner, mode and
// extended attributes; a target that was never renamed is left alone.
// stuck names staged files that could not be removed (an immutable
// directory): they are emptied instead, and recovery removes them later.
func (s *Store) restoreJournal(j *journal) (stuck, err error) {
	var stuckErrs []error
	for _, f := range j.Files {
		if err := removeStaged(f.Staged); err != nil {
			stuckErrs = append(stuckErrs, err)
		}
	}
	for _, f := range j.Files {
		if cur, err := readRegular(f.Path, false); err == nil && sum(cur) == f.OldSHA256 {
			continue
		}
		old, err := readRegular(f.Backup, false)
		if err != nil {
			return nil, fmt.Errorf("restore %s: %w", f.Path, err)
		}
		if sum(old) != f.OldSHA256 {
			return nil, fmt.Errorf("restore %s: backup %s is damaged", f.Path, f.Backup)
		}
		if err := WriteAtomic(f.Path, old, f.Meta); err != nil {
			return nil, fmt.Errorf("restore %s: %w", f.Path, err)
		}
		s.step("restored:" + filepath.Base(f.Path))
	}
	j.State = stateRestored
	return errors.Join(stuckErrs...), s.finish(j)
}

// removeStaged removes a staged file. Where its directory refuses the
// unlink, the file is emptied so that no key material stays in it.
func removeStaged(p string) error {
	err := removeIfExists(p)
	if err == nil {
		return nil
	}
	f, terr := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if terr != nil {
		return fmt.Errorf("staged file %s could not be removed (%v) nor emptied (%v): remove it, it may hold a private key", p, err, terr)
	}
	_ = f.Sync()
	_ = f.Close()
	return fmt.Errorf("staged file %s could not be removed (%v): it was emptied; recovery removes it once its directory allows", p, err)
}

// BackedUp returns, for each file a finished transaction replaced, its path
// and its previous content.
func BackedUp(backupDir string) (map[string][]byte, error) {
	data, err := readRegular(filepath.Join(backupDir, "journal.json"), false)
	if err != nil {
		return nil, err
	}
	var j journal
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("%s: %w", backupDir, err)
	}
	out := map[string][]byte{}
	for _, f := range j.Files {
		old, err := readRegular(f.Backup, false)
		if err != nil {
			return nil, err
		}
		out[f.Path] = old
	}
	return out, nil
}

// Restore puts back the files a finished transaction replaced, as a
// transaction of its own (so it is itself backed up and crash-safe). It is
// how a failed rolling restart returns to the previous certificates.
func (s *Store) Restore(backupDir string) (*Result, error) {
	data, err := readRegular(filepath.Join(backupDir, "journal.json"), false)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	var j journal
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("restore: %s: %w", backupDir, err)
	}
	var changes []Change
	for _, f := range j.Files {
		old, err := readRegular(f.Backup, false)
		if err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		if sum(old) != f.OldSHA256 {
			return nil, fmt.Errorf("restore: backup %s is damaged", f.Backup)
		}
		changes = append(changes, Change{Path: f.Path, Data: old})
	}
	return s.Commit(changes)
}

// backupOrder is a backup directory's place in creation order: its
// sequence number ("00000012.<time>-<id>"). Directories from before
// sequence numbers (named by time alone) come first, by name. The clock is
// not trusted for this: after it steps back, the newest backup would have
// the oldest time and be pruned first.
func backupOrder(name string) (seq int, ok bool) {
	prefix, _, found := strings.Cut(name, ".")
	if !found || len(prefix) != 8 {
		return 0, false
	}
	n, err := strconv.Atoi(prefix)
	return n, err == nil
}

func sortBackups(dirs []string) {
	sort.SliceStable(dirs, func(i, j int) bool {
		a, aok := backupOrder(dirs[i])
		b, bok := backupOrder(dirs[j])
		switch {
		case aok != bok:
			return !aok
		case aok:
			return a < b
		}
		return dirs[i] < dirs[j]
	})
}

// nextSeq numbers a new backup after the newest one there is.
func (s *Store) nextSeq() int {
	last := 0
	for _, d := range s.backupDirs() {
		if n, ok := backupOrder(d); ok && n > last {
			last = n
		}
	}
	return last + 1
}

func (s *Store) backupDirs() []string {
	entries, err := os.ReadDir(s.backupsDir())
	if err != nil {
		return nil
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	return dirs
}

// pruneBackups keeps the newest KeepBackups directories, newest by
// creation order (see backupOrder).
func (s *Store) pruneBackups() {
	keep := s.KeepBackups
	if keep <= 0 {
		keep = 10
	}
	dirs := s.backupDirs()
	sortBackups(dirs)
	for len(dirs) > keep {
		_ = os.RemoveAll(filepath.Join(s.backupsDir(), dirs[0]))
		dirs = dirs[1:]
	}
}
