package renewtest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// HashTree maps every entry below root to its type, mode and content hash,
// so a test can prove that not one byte, mode or file changed.
func HashTree(root string) (map[string]string, error) {
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out[rel] = "link:" + target
		case info.IsDir():
			out[rel] = fmt.Sprintf("dir:%o", info.Mode().Perm())
		case !info.Mode().IsRegular():
			// Never open a FIFO or device: a test's tree may hold one.
			out[rel] = fmt.Sprintf("%s:%o", info.Mode().Type(), info.Mode().Perm())
		default:
			if info.Mode().Perm()&0o400 == 0 {
				out[rel] = fmt.Sprintf("file:%o:unreadable:%d", info.Mode().Perm(), info.Size())
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(data)
			out[rel] = fmt.Sprintf("file:%o:%s", info.Mode().Perm(), hex.EncodeToString(h[:]))
		}
		return nil
	})
	return out, err
}

// DiffTrees describes how two HashTree results differ ("" when equal).
func DiffTrees(a, b map[string]string) string {
	var diffs []string
	for k, v := range a {
		if b[k] != v {
			diffs = append(diffs, fmt.Sprintf("%s: %q -> %q", k, v, b[k]))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			diffs = append(diffs, k+": added")
		}
	}
	sort.Strings(diffs)
	return strings.Join(diffs, "\n")
}
