package cplane

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestProcessExitedAndLeftover(t *testing.T) {
	var none *Process
	if none.Exited() != nil || none.Leftover() != nil {
		t.Error("a process never started: exited or left over")
	}
	log := filepath.Join(t.TempDir(), "sleep.log")
	p, err := StartProcess("/bin/sleep", []string{"60"}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Exited(); err != nil {
		t.Errorf("running: %v", err)
	}
	if left := p.Leftover(); len(left) != 1 || !strings.HasPrefix(left[0], "sleep process ") {
		t.Errorf("running: leftover %v", left)
	}
	p.Stop()
	if err := p.Exited(); err == nil || !strings.Contains(err.Error(), "sleep exited: signal: terminated (see "+log+")") {
		t.Errorf("stopped: %v", err)
	}
	if left := p.Leftover(); left != nil {
		t.Errorf("stopped: leftover %v", left)
	}
}
