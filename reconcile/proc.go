package reconcile

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/utils/clock"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's start time: 100 on
// every Linux architecture pkirenewd is built for.
const clockTicks = 100

// kubeletStartSlack absorbs the 10 ms resolution of a process's start
// time: a kubelet.conf written in the same instant the kubelet was started
// (kubeadm init does exactly that) must not make it stale.
const kubeletStartSlack = time.Second

// KubeletStartFromProc finds the kubelet that reads kubeletConf (comm
// "kubelet", with --kubeconfig naming the file, as kubeadm's unit drop-in
// runs it) and returns when it started. A kubelet of another node on the
// same host (a test rig, a nested node) is not this node's. With several,
// the oldest counts: it is the one that could hold old credentials.
func KubeletStartFromProc(kubeletConf string) (time.Time, bool, error) {
	return processStart("/proc", "kubelet", func(args []string) bool { return flagNames(args, "kubeconfig", kubeletConf) }, clock.RealClock{}.Now)
}

// flagNames reports whether args carry --name=value or --name value.
func flagNames(args []string, name, value string) bool {
	for i, a := range args {
		if a == "--"+name+"="+value || (a == "--"+name && i+1 < len(args) && args[i+1] == value) {
			return true
		}
	}
	return false
}

// flagValue is the value of --name (=value or separate) in args; empty
// when it is not given.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// matching lists the process directories under proc whose comm is comm and
// whose command line match accepts, with that command line.
func matching(proc, comm string, match func(args []string) bool) (dirs []string, args [][]string, err error) {
	all, err := filepath.Glob(filepath.Join(proc, "[0-9]*"))
	if err != nil {
		return nil, nil, err
	}
	for _, d := range all {
		c, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil || string(bytes.TrimSpace(c)) != comm {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil {
			continue
		}
		a := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if match(a) {
			dirs, args = append(dirs, d), append(args, a)
		}
	}
	return dirs, args, nil
}

// processArgs is the command line of the first matching process.
func processArgs(proc, comm string, match func(args []string) bool) ([]string, bool) {
	_, args, err := matching(proc, comm, match)
	if err != nil || len(args) == 0 {
		return nil, false
	}
	return args[0], true
}

func processStart(proc, comm string, match func(args []string) bool, now func() time.Time) (time.Time, bool, error) {
	dirs, _, err := matching(proc, comm, match)
	if err != nil {
		return time.Time{}, false, err
	}
	var boot unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot); err != nil {
		return time.Time{}, false, fmt.Errorf("CLOCK_BOOTTIME: %w", err)
	}
	sinceBoot := time.Duration(boot.Nano())
	var oldest time.Time
	for _, d := range dirs {
		stat, err := os.ReadFile(filepath.Join(d, "stat"))
		if err != nil {
			continue
		}
		ticks, err := startTicks(string(stat))
		if err != nil {
			continue
		}
		started := now().Add(-sinceBoot).Add(time.Duration(ticks) * time.Second / clockTicks).Add(kubeletStartSlack)
		if oldest.IsZero() || started.Before(oldest) {
			oldest = started
		}
	}
	return oldest, !oldest.IsZero(), nil
}

// startTicks reads field 22 (starttime) of /proc/<pid>/stat; the command
// name in field 2 may hold spaces and parentheses, so fields are counted
// after its closing parenthesis.
func startTicks(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("malformed stat")
	}
	return strconv.ParseUint(f[19], 10, 64)
}
