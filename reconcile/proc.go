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
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's start time: 100 on
// every Linux architecture pkirenewd is built for.
const clockTicks = 100

// kubeletStartSlack absorbs the 10 ms resolution of a process's start
// time: a kubelet.conf written in the same instant the kubelet was started
// (kubeadm init does exactly that) must not make it stale.
const kubeletStartSlack = time.Second

// KubeletStartFromProc finds the kubelet among the processes (comm
// "kubelet") and returns when it started. With several (a test rig with
// one per node), the oldest counts: it is the one that could hold old
// credentials.
func KubeletStartFromProc() (time.Time, bool, error) {
	return processStart("/proc", "kubelet", time.Now)
}

func processStart(proc, comm string, now func() time.Time) (time.Time, bool, error) {
	dirs, err := filepath.Glob(filepath.Join(proc, "[0-9]*"))
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
		c, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil || string(bytes.TrimSpace(c)) != comm {
			continue
		}
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
