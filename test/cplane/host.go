package cplane

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// LogDir makes the folder for one test's logs: $PKIRENEWD_E2E_LOGS/<test>
// (kept) when that is set, else a new temp dir (temp true: the suite
// removes it unless the test failed).
func LogDir(testName, tempPrefix string) (dir string, temp bool, err error) {
	if base := os.Getenv("PKIRENEWD_E2E_LOGS"); base != "" {
		dir = filepath.Join(base, strings.NewReplacer("/", "_", " ", "_").Replace(testName))
		return dir, false, os.MkdirAll(dir, 0o755)
	}
	dir, err = os.MkdirTemp("", tempPrefix)
	return dir, true, err
}

// CopyFile copies a log or similar file, best effort (a missing source is
// not an error worth failing a teardown for).
func CopyFile(from, to string) {
	in, err := os.Open(from)
	if err != nil {
		return
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return
	}
	defer out.Close()
	_, _ = io.Copy(out, in)
}

// CopyFiles copies the named files (paths relative to both dirs, e.g.
// "etcd/ca.key") from one dir to another, making dirs 0700 and files 0600:
// they are keys.
func CopyFiles(from, to string, names []string) error {
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(from, name))
		if err != nil {
			return err
		}
		dst := filepath.Join(to, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// RemoveTree unmounts every mount at or under dir (lazily: a container's
// may still be busy) and removes dir. "" is a no-op.
func RemoveTree(dir string) error {
	if dir == "" {
		return nil
	}
	var errs []error
	for _, m := range MountsUnder(dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// TreeLeftovers lists dir if it still exists and the mounts under it.
func TreeLeftovers(dir string) []string {
	if dir == "" {
		return nil
	}
	var out []string
	if _, err := os.Lstat(dir); err == nil {
		out = append(out, "dir "+dir)
	}
	for _, m := range MountsUnder(dir) {
		out = append(out, "mount "+m)
	}
	return out
}

// KubepodsCgroups lists the kubelet's /kubepods cgroup in every mounted
// hierarchy (cgroup v1 hybrid: /sys/fs/cgroup/<controller>/kubepods, and
// the unified one).
func KubepodsCgroups() []string {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	var out []string
	seen := map[string]bool{}
	for _, r := range roots {
		d := filepath.Join(r, "kubepods")
		real, err := filepath.EvalSymlinks(d)
		if err != nil || seen[real] {
			continue
		}
		if fi, err := os.Stat(real); err == nil && fi.IsDir() {
			seen[real] = true
			out = append(out, d)
		}
	}
	return out
}

// RemoveCgroupTree removes a cgroup and its children depth-first (a
// cgroup dir goes only once it has no children and no processes); with
// kill, processes still in one are killed (they can only be containers of
// this run), else a busy cgroup is an error at once.
func RemoveCgroupTree(base string, kill bool) error {
	var dirs []string
	_ = filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := removeCgroup(dirs[i], kill); err != nil {
			return err
		}
	}
	return nil
}

func removeCgroup(dir string, kill bool) error {
	var err error
	for try := 0; try < 100; try++ {
		if err = syscall.Rmdir(dir); err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !kill {
			break
		}
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, perr := strconv.Atoi(f); perr == nil && pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("rmdir %s: %w", dir, err)
}

// MountsUnder lists mount points at or below dir, deepest first.
func MountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeOctal(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeOctal undoes mountinfo's \040-style escapes.
func unescapeOctal(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Tail returns the last n lines of a file (each cut at 300 bytes), or
// why it cannot.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		if len(l) > 300 {
			lines[i] = l[:300] + "..."
		}
	}
	return strings.Join(lines, "\n")
}

// LogTails is the last lines of every log in logDir matching one of the
// globs (relative to logDir, e.g. "kubelet.log", "pods/*/*/*.log": the
// containers' logs), each under a "<name> (tail):" line, for the output
// of a failed test.
func LogTails(logDir string, lines int, globs ...string) string {
	var b strings.Builder
	for _, g := range globs {
		files, _ := filepath.Glob(filepath.Join(logDir, g))
		for _, f := range files {
			fmt.Fprintf(&b, "%s (tail):\n%s\n", strings.TrimPrefix(f, logDir+"/"), Tail(f, lines))
		}
	}
	return b.String()
}
