// Package fsread reads the small files pkirenewd consumes — certificates,
// keys, kubeconfigs, manifests, configuration — without ever blocking on a
// FIFO or device, following a symlink it was told not to, or reading more
// than any such file can need.
package fsread

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// MaxFileSize bounds every file pkirenewd reads. No real certificate, key
// or kubeconfig comes near it (a kubeconfig with an RSA-4096 pair is about
// 10 KiB), while a FIFO or a multi-gigabyte sparse file in its place would
// otherwise hang the inventory or exhaust the node's memory.
const MaxFileSize = 1 << 20

// Regular reads a regular file of at most MaxFileSize bytes. The file
// is opened with O_NONBLOCK, so a FIFO or device cannot block the open, and
// the opened descriptor is checked, so nothing can be swapped in between a
// stat and the read. follow says whether a final symlink may be followed;
// errors name p.
func Regular(p string, follow bool) ([]byte, error) {
	flags := os.O_RDONLY | syscall.O_NONBLOCK | syscall.O_CLOEXEC
	if !follow {
		flags |= syscall.O_NOFOLLOW
	}
	f, err := os.OpenFile(p, flags, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s is a symlink: not followed", p)
		}
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s)", p, typeName(st.Mode()))
	}
	if st.Size() > MaxFileSize {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d a certificate, key or kubeconfig can need: refusing to read it", p, st.Size(), MaxFileSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s: grew past %d bytes while being read: refusing it", p, MaxFileSize)
	}
	return data, nil
}

func typeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	}
	return m.Type().String()
}

// Exists reports whether p exists (without following a final symlink); any
// other error than "not found" is returned so that an unreadable directory
// does not masquerade as a missing certificate.
func Exists(p string) (bool, error) {
	_, err := os.Lstat(p)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, err
}
