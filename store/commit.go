package store

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/utils/clock"
)

// ErrChangedUnderneath: a file changed between being read and being
// replaced, so someone else is writing the PKI right now.
var ErrChangedUnderneath = errors.New("changed by another writer during the renewal (kubeadm certs renew?): nothing was written; it will be retried on fresh files")

// Commit writes changes as one transaction. Each step below is one stage
// of the protocol, in the order a crash must find them: nothing is written
// until every target has been read and checked; the journal is written
// before any backup or staged file, so recovery knows what belongs to the
// transaction; the commit record is written only when the backups and the
// staged files are durable; and only then are the staged files renamed
// into place. Until the commit record, a failure is undone (abort); after
// it, the transaction is finished or every file is put back (install).
func (s *Store) Commit(changes []Change) (*Result, error) {
	if len(changes) == 0 {
		return &Result{}, nil
	}
	if err := s.refuseIfPending(); err != nil {
		return nil, err
	}
	if err := s.ensureStateDir(); err != nil {
		return nil, err
	}
	j := s.newJournal()
	olds, err := s.readTargets(j, changes)
	if err != nil {
		return nil, err
	}
	// Refuse what would make a rename fail after the commit record
	// before anything at all is written.
	if err := s.preflight(j.Files, changes, olds); err != nil {
		return nil, fmt.Errorf("%w: nothing was written", err)
	}
	if err := s.openJournal(j); err != nil {
		return nil, err
	}
	if err := s.prepareCommit(j, changes, olds); err != nil {
		return nil, s.abort(j, err)
	}
	if err := s.install(j); err != nil {
		return nil, err
	}
	s.pruneBackups()
	return j.result(), nil
}

// refuseIfPending refuses a new transaction while an unfinished one is
// recorded: its staged files and backups would be mixed with the new ones.
func (s *Store) refuseIfPending() error {
	pending, err := s.Pending()
	if err == nil && pending {
		err = fmt.Errorf("an unfinished transaction is recorded in %s: run recovery first", s.journalPath())
	}
	return err
}

// newJournal starts the record of a transaction: its id (time and random
// suffix, which names its staged files) and its backup directory, next in
// sequence.
func (s *Store) newJournal() *journal {
	now := clock.RealClock{}.Now
	if s.Now != nil {
		now = s.Now
	}
	rnd := make([]byte, 4)
	_, _ = rand.Read(rnd)
	id := now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(rnd)
	return &journal{ID: id, State: statePrepared, BackupDir: filepath.Join(s.backupsDir(), fmt.Sprintf("%08d.%s", s.nextSeq(), id))}
}

// readTargets validates every target and reads what it holds before
// anything is written, so a bad target stops the transaction with no
// trace. It records each file in j (where it is staged and backed up,
// its old and new sums, the metadata to keep) and returns the old
// contents, in the order of changes.
func (s *Store) readTargets(j *journal, changes []Change) ([][]byte, error) {
	seen := map[string]bool{}
	olds := make([][]byte, len(changes))
	for i, c := range changes {
		p := filepath.Clean(c.Path)
		if seen[p] {
			return nil, fmt.Errorf("%s: changed twice in one transaction", p)
		}
		seen[p] = true
		dir, err := s.Roots.Resolve(filepath.Dir(p))
		if err != nil {
			return nil, err
		}
		p = filepath.Join(dir, filepath.Base(p))
		meta, err := StatMeta(p)
		if err != nil {
			return nil, err
		}
		if olds[i], err = readRegular(p, false); err != nil {
			return nil, err
		}
		j.Files = append(j.Files, journalFile{
			Path:      p,
			Staged:    filepath.Join(dir, fmt.Sprintf("%s%s.%s", stagedPrefix, j.ID, filepath.Base(p))),
			Backup:    filepath.Join(j.BackupDir, fmt.Sprintf("%02d-%s", i, filepath.Base(p))),
			OldSHA256: sum(olds[i]),
			NewSHA256: sum(c.Data),
			Meta:      meta,
		})
	}
	return olds, nil
}

// openJournal writes the prepared journal first, so that recovery knows
// which staged files and backups belong to an interrupted transaction.
func (s *Store) openJournal(j *journal) error {
	if err := os.Mkdir(j.BackupDir, 0o700); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := s.writeJournal(j); err != nil {
		_ = os.RemoveAll(j.BackupDir)
		return err
	}
	s.step("journal-prepared")
	return nil
}

// prepareCommit does everything between the prepared journal and the
// point of no return, ending with the commit record. A failure anywhere in
// it leaves only what abort can undo.
func (s *Store) prepareCommit(j *journal, changes []Change, olds [][]byte) error {
	if err := s.backUp(j, olds); err != nil {
		return err
	}
	if err := s.stage(j, changes); err != nil {
		return err
	}
	if err := s.lastLook(j); err != nil {
		return err
	}
	j.State = stateCommitted
	if err := s.writeJournal(j); err != nil {
		return err
	}
	s.step("journal-committed")
	return nil
}

// abort undoes a transaction that failed before its commit record, and
// says so: the caller's files are as they were.
func (s *Store) abort(j *journal, err error) error {
	if rerr := s.rollbackPrepared(j); rerr != nil {
		return fmt.Errorf("%w (and rolling back failed: %v; it will be retried on next start)", err, rerr)
	}
	if !strings.Contains(err.Error(), "nothing was written") {
		err = fmt.Errorf("%w: nothing was written", err)
	}
	return err
}

// backUp copies the old contents into the backup directory, with its
// MANIFEST, durably: restore and rollback read them from there.
func (s *Store) backUp(j *journal, olds [][]byte) error {
	for i, f := range j.Files {
		if err := writeNew(f.Backup, olds[i], FileMeta{Mode: 0o600, UID: -1, GID: -1}); err != nil {
			return fmt.Errorf("backup of %s: %w", f.Path, err)
		}
	}
	if err := writeManifest(j); err != nil {
		return err
	}
	if err := SyncDir(j.BackupDir); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	s.step("backup")
	return nil
}

// stage writes each new file beside its target, with the target's
// metadata, and makes the directories durable: after the commit record
// only renames are left to do.
func (s *Store) stage(j *journal, changes []Change) error {
	for i, f := range j.Files {
		if err := writeNew(f.Staged, changes[i].Data, f.Meta); err != nil {
			return fmt.Errorf("stage %s: %w", f.Path, err)
		}
		s.step("staged:" + filepath.Base(f.Path))
	}
	for _, d := range j.dirs() {
		if err := SyncDir(d); err != nil {
			return fmt.Errorf("sync %s: %w", d, err)
		}
	}
	s.step("staged-synced")
	return nil
}

// lastLook checks the targets once more, last thing before the point of
// no return. Another writer (an operator's `kubeadm certs renew`) may have
// replaced a target since it was read: committing would interleave its
// files with ours, so give way; the caller retries on fresh input. And
// attributes may have changed while staging.
func (s *Store) lastLook(j *journal) error {
	for i, f := range j.Files {
		cur, err := readRegular(f.Path, false)
		if err != nil {
			return err
		}
		if sum(cur) != j.Files[i].OldSHA256 {
			return fmt.Errorf("%s: %w", f.Path, ErrChangedUnderneath)
		}
	}
	return checkStaged(j.Files)
}

// install renames the staged files into place after the commit record.
// Most refusals are caught before the commit record; one that still comes
// (a flag set this instant, an I/O error) must not leave new and old files
// side by side. Try once more, then put every file back as it was.
func (s *Store) install(j *journal) error {
	if err := s.rollForward(j); err != nil {
		if err = s.rollForward(j); err != nil {
			return s.undoCommitted(j, err)
		}
	}
	return nil
}

// result is what the caller learns of a finished transaction.
func (j *journal) result() *Result {
	res := &Result{ID: j.ID, BackupDir: j.BackupDir}
	for _, f := range j.Files {
		res.Paths = append(res.Paths, f.Path)
	}
	return res
}
