package store

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/pkirenewd/pkirenewd/internal/fsread"
)

// Roots are the directories pkirenewd manages. Paths are resolved once, so a
// /etc/kubernetes/pki that is itself a symlink to a data disk still works,
// while a symlink inside it that points elsewhere is refused.
type Roots []string

// NewRoots resolves each directory; a missing or non-directory root is an
// error naming it.
func NewRoots(dirs ...string) (Roots, error) {
	var r Roots
	for _, d := range dirs {
		abs, err := filepath.Abs(d)
		if err != nil {
			return nil, err
		}
		real, err := filepath.EvalSymlinks(abs)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d, err)
		}
		st, err := os.Stat(real)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d, err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("%s: not a directory", d)
		}
		r = append(r, real)
	}
	return r, nil
}

func (r Roots) contains(p string) bool {
	for _, root := range r {
		if p == root || strings.HasPrefix(p, root+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// Resolve returns the real path of p, refusing a path whose symlinks lead
// out of the managed directories.
func (r Roots) Resolve(p string) (string, error) {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", err
	}
	if !r.contains(real) {
		return "", fmt.Errorf("%s resolves to %s, outside the managed directories %s: refusing to follow it", p, real, strings.Join(r, ", "))
	}
	return real, nil
}

// ReadFile reads a managed regular file without following a symlink out of
// the managed directories.
func (r Roots) ReadFile(p string) ([]byte, error) {
	real, err := r.Resolve(p)
	if err != nil {
		return nil, err
	}
	data, err := readRegular(real, false)
	if err != nil && real != p {
		return nil, fmt.Errorf("%s (-> %s): %w", p, real, err)
	}
	return data, err
}

// MaxFileSize bounds every file pkirenewd reads (see fsread).
const MaxFileSize = fsread.MaxFileSize

// readRegular is fsread.Regular: a bounded, non-blocking read of a regular
// file.
func readRegular(p string, follow bool) ([]byte, error) { return fsread.Regular(p, follow) }

// FileMeta is what must be preserved when a file is replaced. Xattrs
// holds every extended attribute: the POSIX ACL (system.posix_acl_access),
// an SELinux label (security.selinux), user.* and trusted.* ones. It is
// kept in the journal because the backup, 0600 and root's, cannot carry
// the original's.
type FileMeta struct {
	Mode   fs.FileMode       `json:"mode"`
	UID    int               `json:"uid"`
	GID    int               `json:"gid"`
	Xattrs map[string][]byte `json:"xattrs,omitempty"`
}

func StatMeta(p string) (FileMeta, error) {
	st, err := os.Lstat(p)
	if err != nil {
		return FileMeta{}, err
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		return FileMeta{}, fmt.Errorf("%s is a symlink: refusing to replace it", p)
	}
	if !st.Mode().IsRegular() {
		return FileMeta{}, fmt.Errorf("%s: not a regular file", p)
	}
	m := FileMeta{Mode: st.Mode().Perm(), UID: -1, GID: -1}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		m.UID, m.GID = int(sys.Uid), int(sys.Gid)
	}
	if m.Xattrs, err = readXattrs(p); err != nil {
		return FileMeta{}, fmt.Errorf("%s: reading its extended attributes: %w", p, err)
	}
	return m, nil
}

// writeNew creates p exclusively with mode 0600 (whatever the umask), so
// key material is never readable by others at any instant, writes data,
// syncs it, and only then gives it its final owner and mode.
func writeNew(p string, data []byte, meta FileMeta) (err error) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(p)
		}
	}()
	// O_CREAT honours the umask, which can only remove bits; make the
	// 0600 explicit before the first byte in case the file pre-existed as
	// something else we were racing with.
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	half := len(data) / 2
	if _, err = f.Write(data[:half]); err != nil {
		return err
	}
	hit("mid-write:" + filepath.Base(p))
	if _, err = f.Write(data[half:]); err != nil {
		return err
	}
	hit("before-fsync:" + filepath.Base(p))
	if err = f.Sync(); err != nil {
		return err
	}
	hit("after-fsync:" + filepath.Base(p))
	if meta.UID >= 0 && (meta.UID != os.Geteuid() || meta.GID != os.Getegid()) {
		if err = f.Chown(meta.UID, meta.GID); err != nil {
			return err
		}
	}
	// The attributes come after the chown (which may clear some) and
	// before the chmod: an ACL sets the group bits to its mask, so a
	// chmod to the old mode first would open the key to the owning group
	// until the ACL is back.
	if err = setXattrs(f, meta.Xattrs); err != nil {
		return err
	}
	if err = f.Chmod(meta.Mode); err != nil {
		return err
	}
	if err = checkMode(f, meta.Mode); err != nil {
		return err
	}
	return f.Sync()
}

// checkMode verifies that the file ended with exactly the old mode: an ACL
// that did not come across would show in the group bits.
func checkMode(f *os.File, want fs.FileMode) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if got := st.Mode().Perm(); got != want {
		return fmt.Errorf("%s: mode %04o after copying the attributes, want %04o", f.Name(), got, want)
	}
	return nil
}

// SyncDir makes a rename or create in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// WriteAtomic replaces p with data through a temp file in the same
// directory: readers see the old or the new file, never a mix.
func WriteAtomic(p string, data []byte, meta FileMeta) error {
	dir := filepath.Dir(p)
	// The stagedPrefix lets recovery find and remove it after a crash.
	tmp := filepath.Join(dir, fmt.Sprintf("%stmp-%d.%s", stagedPrefix, os.Getpid(), filepath.Base(p)))
	_ = os.Remove(tmp)
	if err := writeNew(tmp, data, meta); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return SyncDir(dir)
}
