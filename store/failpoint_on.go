//go:build failpoints

package store

import (
	"os"
	"strconv"
	"syscall"
)

// With -tags failpoints: PKIRENEWD_FAILPOINT_AT=N kills the process with
// SIGKILL at the Nth step reached (steps come in a fixed order for a given
// PKI, and temp file names differ between runs, so a count is the stable
// way to name one); PKIRENEWD_FAILPOINT_LOG=<file> appends every step
// reached to a file; PKIRENEWD_FAILPOINT_NAME=<step> kills it at the first
// step of that name (the orchestration's steps are named, not counted).
func init() {
	at, _ := strconv.Atoi(os.Getenv("PKIRENEWD_FAILPOINT_AT"))
	logPath := os.Getenv("PKIRENEWD_FAILPOINT_LOG")
	name := os.Getenv("PKIRENEWD_FAILPOINT_NAME")
	if at == 0 && logPath == "" && name == "" {
		return
	}
	n := 0
	failpoint = func(step string) {
		n++
		if logPath != "" {
			if f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
				_, _ = f.WriteString(step + "\n")
				_ = f.Close()
			}
		}
		if n == at || (name != "" && step == name) {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // never returns
		}
	}
}
