package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/pkirenewd/pkirenewd/writeset"
)

// preflight checks, before anything is written, what would otherwise make
// a rename fail half way through a transaction: each target's directory is
// writable and neither it nor the target is immutable or append-only, the
// target lies on its directory's file system (a file bind-mounted over a
// target cannot be renamed over), and each file system has room for the
// staged files and the backups. Errors name the file and say what to do.
func (s *Store) preflight(files []journalFile, changes []Change, olds [][]byte) error {
	need := map[uint64]int64{} // bytes per file system (st_dev)
	where := map[uint64]string{}
	for i, f := range files {
		dev, err := checkReplaceable(f.Path)
		if err != nil {
			return err
		}
		need[dev] += roundUp(int64(len(changes[i].Data)))
		where[dev] = filepath.Dir(f.Path)
	}
	var st unix.Stat_t
	if err := unix.Stat(s.StateDir, &st); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	for i := range files {
		// The backup holds the old content; the journal and MANIFEST
		// are small but each takes a block.
		need[st.Dev] += roundUp(int64(len(olds[i])))
	}
	need[st.Dev] += 4 * roundUp(1)
	where[st.Dev] = s.StateDir
	for dev, n := range need {
		if err := checkRoom(where[dev], n, len(files)+3); err != nil {
			return err
		}
	}
	return nil
}

// fsBlock is the allocation unit assumed for a small file.
const fsBlock = 4096

func roundUp(n int64) int64 { return (n + fsBlock - 1) / fsBlock * fsBlock }

// Why a file cannot be replaced, beside the errno of a directory that
// cannot be written (syscall.EROFS, EACCES).
var (
	ErrImmutable   = errors.New("immutable (chattr +i)")
	ErrAppendOnly  = errors.New("append-only (chattr +a)")
	ErrMountedOver = errors.New("on another file system than its directory")
)

// ReplaceError says why a file cannot be replaced now: the store's
// preflight refuses the transaction with it, and a due item whose file it
// names is held (see Replaceable).
type ReplaceError struct {
	// Path is the file to replace; At the file or directory at fault.
	Path, At string
	// Err is the cause: ErrImmutable, ErrAppendOnly, ErrMountedOver, or
	// the errno of a directory that cannot be written or looked at.
	Err error
	msg string
}

func (e *ReplaceError) Error() string { return e.msg }
func (e *ReplaceError) Unwrap() error { return e.Err }

// Fix says what makes the file replaceable again.
func (e *ReplaceError) Fix() string {
	switch {
	case errors.Is(e.Err, ErrImmutable):
		return "chattr -i " + e.At
	case errors.Is(e.Err, ErrAppendOnly):
		return "chattr -a " + e.At
	case errors.Is(e.Err, ErrMountedOver):
		return "unmount what is mounted over it (findmnt " + e.At + ")"
	}
	return writeset.Advice(e.At, e.Err)
}

func replaceError(p, at string, err error, format string, args ...any) *ReplaceError {
	return &ReplaceError{Path: p, At: at, Err: err, msg: fmt.Sprintf(format, args...)}
}

// Replaceable checks, with the preflight's own checks, that a renewal
// could replace each of paths now: its directory is writable, neither is
// immutable or append-only, and no file is mounted over it. root, when
// set, is where the paths are looked at (another process's view of the
// file system: /proc/<pid>/root); errors name the paths as given. The
// first failure is returned, a *ReplaceError when the cause is known.
func Replaceable(root string, paths ...string) error {
	for _, p := range paths {
		if root != "" {
			// An absolute symlink would resolve against our root, not
			// the process's: resolve the directory here first.
			if dir, err := filepath.EvalSymlinks(filepath.Dir(p)); err == nil {
				p = filepath.Join(dir, filepath.Base(p))
			}
		}
		if _, err := checkReplaceableIn(root, p); err != nil {
			return err
		}
	}
	return nil
}

// checkReplaceable checks one target and its directory and returns the
// file system they are on.
func checkReplaceable(p string) (uint64, error) { return checkReplaceableIn("", p) }

// checkReplaceableIn is checkReplaceable under root (see Replaceable).
func checkReplaceableIn(root, p string) (uint64, error) {
	dir := filepath.Dir(p)
	if err := checkFlags(root, p, dir, "directory "); err != nil {
		return 0, err
	}
	if err := checkFlags(root, p, p, ""); err != nil {
		return 0, err
	}
	if err := unix.Access(root+dir, unix.W_OK); err != nil {
		if errors.Is(err, syscall.EROFS) {
			return 0, replaceError(p, dir, err, "%s: cannot replace it: its directory %s is on a %v", p, dir, err)
		}
		return 0, replaceError(p, dir, err, "%s: cannot replace it: its directory %s is not writable: %v", p, dir, err)
	}
	var dst, fst unix.Stat_t
	if err := unix.Stat(root+dir, &dst); err != nil {
		return 0, replaceError(p, dir, err, "%s: %v", dir, err)
	}
	if err := unix.Lstat(root+p, &fst); err != nil {
		return 0, replaceError(p, p, err, "%s: %v", p, err)
	}
	if fst.Dev != dst.Dev {
		return 0, replaceError(p, p, ErrMountedOver, "%s is on another file system than its directory %s (a file mounted over it?): it cannot be replaced atomically", p, dir)
	}
	return dst.Dev, nil
}

// Inode flags from linux/fs.h (what chattr sets); golang.org/x/sys has
// the ioctl but no names for the flags.
const (
	fsImmutableFl = 0x00000010 // FS_IMMUTABLE_FL, chattr +i
	fsAppendFl    = 0x00000020 // FS_APPEND_FL, chattr +a
)

// checkFlags refuses an immutable or append-only file or directory p on
// the way to replacing target: the kernel refuses to rename over (or into)
// one, even for root.
func checkFlags(root, target, p, what string) error {
	flags, err := inodeFlags(root + p)
	if err != nil {
		return replaceError(target, p, err, "%s%s: reading its attributes: %v", what, p, err)
	}
	switch {
	case flags&fsImmutableFl != 0:
		return replaceError(target, p, ErrImmutable, "%s%s is immutable (chattr +i)", what, p)
	case flags&fsAppendFl != 0:
		return replaceError(target, p, ErrAppendOnly, "%s%s is append-only (chattr +a)", what, p)
	}
	return nil
}

// inodeFlags reads the chattr flags of p (FS_IOC_GETFLAGS) without
// following a symlink or blocking on a FIFO. A file system without such
// flags has none set.
func inodeFlags(p string) (uint32, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EINVAL) {
		return 0, nil
	}
	return flags, err
}

// checkRoom refuses a file system with less than need bytes or inodes
// files free. Root may use the blocks reserved for it, as the kernel lets
// it.
func checkRoom(dir string, need int64, files int) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	blocks := st.Bavail
	if os.Geteuid() == 0 {
		blocks = st.Bfree
	}
	free := int64(blocks) * st.Bsize
	if free < need {
		return fmt.Errorf("%s: %w: %d bytes free, the renewal needs about %d", dir, syscall.ENOSPC, free, need)
	}
	if st.Files > 0 && st.Ffree < uint64(files) {
		return fmt.Errorf("%s: %w: %d inodes free, the renewal needs %d", dir, syscall.ENOSPC, st.Ffree, files)
	}
	return nil
}

// checkStaged repeats the checks that matter for the renames just before
// the commit record, after the staged files exist: the flags may have been
// set meanwhile, and each staged file must be on its target's file system.
func checkStaged(files []journalFile) error {
	for _, f := range files {
		if _, err := checkReplaceable(f.Path); err != nil {
			return err
		}
		var sst, tst unix.Stat_t
		if err := unix.Lstat(f.Staged, &sst); err != nil {
			return fmt.Errorf("%s: %w", f.Staged, err)
		}
		if err := unix.Lstat(f.Path, &tst); err != nil {
			return fmt.Errorf("%s: %w", f.Path, err)
		}
		if sst.Dev != tst.Dev {
			return fmt.Errorf("%s: staged file %s is on another file system: a rename cannot replace it", f.Path, f.Staged)
		}
	}
	return nil
}
