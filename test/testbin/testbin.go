// Package testbin builds the pkirenewd binary once for a test package that
// runs it as a process.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Main builds pkirenewd into a temp dir, stores its path in *bin, runs the
// tests and removes the dir: call it from TestMain.
func Main(m *testing.M, bin *string) {
	dir, err := os.MkdirTemp("", "pkirenewd-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = filepath.Join(dir, "pkirenewd")
	if out, err := exec.Command("go", "build", "-o", *bin, "github.com/pkirenewd/pkirenewd/cmd/pkirenewd").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build pkirenewd: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
