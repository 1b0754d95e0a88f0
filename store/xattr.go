package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// readXattrs returns every extended attribute of p (not following a
// symlink); none is nil. A file system without xattrs has none.
func readXattrs(p string) (map[string][]byte, error) {
	names, err := xattrNames(func(b []byte) (int, error) { return unix.Llistxattr(p, b) })
	if err != nil || len(names) == 0 {
		return nil, err
	}
	out := map[string][]byte{}
	for _, n := range names {
		v, err := xattrValue(func(b []byte) (int, error) { return unix.Lgetxattr(p, n, b) })
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		out[n] = v
	}
	return out, nil
}

// xattrNames calls a listxattr variant with a buffer big enough, growing
// it when the list grew between the size query and the read.
func xattrNames(list func([]byte) (int, error)) ([]string, error) {
	for {
		n, err := list(nil)
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil || n == 0 {
			return nil, err
		}
		buf := make([]byte, n)
		n, err = list(buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var names []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" {
				names = append(names, s)
			}
		}
		return names, nil
	}
}

func xattrValue(get func([]byte) (int, error)) ([]byte, error) {
	for {
		n, err := get(nil)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, n)
		n, err = get(buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// setXattrs gives f exactly the attributes want. An attribute the kernel
// will not let us set (EPERM, ENOTSUP) is accepted only when f already
// carries the same value (a label inherited from the directory): anything
// else would silently drop an ACL or label and is refused, before the
// commit. An attribute f inherited that the old file did not have (a
// default ACL of the directory) is removed, so access never widens; only a
// security.* label the kernel insists on may stay.
func setXattrs(f *os.File, want map[string][]byte) error {
	fd := int(f.Fd())
	have, err := xattrNames(func(b []byte) (int, error) { return unix.Flistxattr(fd, b) })
	if err != nil {
		return fmt.Errorf("%s: listing extended attributes: %w", f.Name(), err)
	}
	for _, n := range have {
		if _, ok := want[n]; ok {
			continue
		}
		if err := unix.Fremovexattr(fd, n); err != nil && !errors.Is(err, unix.ENODATA) {
			if strings.HasPrefix(n, "security.") && refusedByKernel(err) {
				continue
			}
			return fmt.Errorf("%s: cannot remove the inherited extended attribute %s, which the file it replaces does not have: %w", f.Name(), n, err)
		}
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		err := unix.Fsetxattr(fd, n, want[n], 0)
		if err == nil {
			continue
		}
		if refusedByKernel(err) {
			cur, gerr := xattrValue(func(b []byte) (int, error) { return unix.Fgetxattr(fd, n, b) })
			if gerr == nil && bytes.Equal(cur, want[n]) {
				continue
			}
		}
		return fmt.Errorf("%s: cannot keep the extended attribute %s of the file it replaces: %w", f.Name(), n, err)
	}
	return nil
}

func refusedByKernel(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EACCES)
}
