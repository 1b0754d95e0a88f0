package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrExists: Create found the file already there.
var ErrExists = errors.New("already exists")

// Create writes a file that does not exist yet: a credential pkirenewd
// issues itself, with no old version to back up or to restore. The data is
// staged beside the target at 0600 before its first byte and made durable,
// then linked into place: a reader, or a crash, sees the whole file or
// none, and a file that appeared meanwhile is never replaced. The staged
// name is a temp name RemoveStrays knows, so a crash leaves nothing behind
// that recovery does not remove.
func (s *Store) Create(path string, data []byte) error {
	if err := s.refuseIfPending(); err != nil {
		return err
	}
	dir, err := s.Roots.Resolve(filepath.Dir(filepath.Clean(path)))
	if err != nil {
		return err
	}
	p := filepath.Join(dir, filepath.Base(path))
	tmp := filepath.Join(dir, fmt.Sprintf("%stmp-%d.%s", stagedPrefix, os.Getpid(), filepath.Base(p)))
	_ = os.Remove(tmp)
	if err := writeNew(tmp, data, FileMeta{Mode: 0o600, UID: -1, GID: -1}); err != nil {
		return fmt.Errorf("create %s: %w", p, err)
	}
	s.step("create-staged")
	err = os.Link(tmp, p)
	_ = os.Remove(tmp)
	switch {
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("create %s: %w", p, ErrExists)
	case err != nil:
		return fmt.Errorf("create %s: %w", p, err)
	}
	return SyncDir(dir)
}
