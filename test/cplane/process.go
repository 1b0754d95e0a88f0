package cplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a child process of the rig (the kubelet, kube-apiserver).
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	name string // the binary's base name
	log  string
}

// StartProcess starts bin with args, its output appended to logPath after
// a "### <time> <name> <args>" line. It runs in a process group of its
// own, so a Ctrl-C does not reach it (the teardown stops it, in its
// order), and is killed if the test binary dies.
func StartProcess(bin string, args []string, logPath string) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	name := bin[strings.LastIndex(bin, "/")+1:]
	fmt.Fprintf(logf, "### %s %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), name, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{cmd: cmd, done: make(chan struct{}), name: name, log: logPath}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// Running reports whether the process is alive (false for nil).
func (p *Process) Running() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Pid is the process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited says that a started process has exited, how, and where its log
// is; nil while it runs and for nil (not started). A rig's Poller gives
// up on it: a wait for a component whose process is gone cannot end well.
func (p *Process) Exited() error {
	if p == nil || p.Running() {
		return nil
	}
	return fmt.Errorf("%s exited: %v (see %s)", p.name, p.cmd.ProcessState, p.log)
}

// Leftover lists the process if it still runs, for a rig's Leftovers.
func (p *Process) Leftover() []string {
	if !p.Running() {
		return nil
	}
	return []string{fmt.Sprintf("%s process %d", p.name, p.Pid())}
}

// Stop sends SIGTERM and, after 15 s, SIGKILL, and waits for the end.
// Idempotent; nil is a no-op.
func (p *Process) Stop() {
	if !p.Running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	kill := time.AfterFunc(15*time.Second, func() { _ = p.cmd.Process.Kill() })
	<-p.done
	kill.Stop()
}

// Signals turns SIGINT/SIGTERM and the approaching test deadline into a
// cancelled context, so a test returns and its cleanups (the teardown)
// run; later signals are caught too (and only reported) until stop is
// called at the end of the teardown.
type Signals struct {
	// Prefix starts every message ("e2e", "ha").
	Prefix string
	// What is torn down ("the control plane").
	What string
	// Deadline is the test's deadline (zero: none); Margin how long before
	// it the context is cancelled, to leave the teardown its time.
	Deadline time.Time
	Margin   time.Duration
}

// Watch returns a context cancelled (with the cause) on a signal or near
// the deadline, and stop, which cancels it and stops watching.
func (s Signals) Watch() (ctx context.Context, cancel context.CancelCauseFunc, stop func()) {
	ctx, cancel = context.WithCancelCause(context.Background())
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	var deadline <-chan time.Time
	if !s.Deadline.IsZero() {
		deadline = time.After(time.Until(s.Deadline) - s.Margin)
	}
	go func() {
		defer signal.Stop(sig)
		for {
			select {
			case v := <-sig:
				if ctx.Err() == nil {
					fmt.Fprintf(os.Stderr, "%s: %v: stopping the test and tearing %s down\n", s.Prefix, v, s.What)
				} else {
					fmt.Fprintf(os.Stderr, "%s: %v: teardown in progress, please wait\n", s.Prefix, v)
				}
				cancel(fmt.Errorf("interrupted by %v", v))
			case <-deadline:
				fmt.Fprintf(os.Stderr, "%s: the test deadline is near: stopping the test and tearing %s down\n", s.Prefix, s.What)
				cancel(fmt.Errorf("test deadline near (leaving the teardown %v)", s.Margin))
			case <-done:
				return
			}
		}
	}()
	return ctx, cancel, func() {
		cancel(fmt.Errorf("%s torn down", strings.TrimPrefix(s.What, "the ")))
		close(done)
	}
}

// Parallel runs fs at once and joins their errors.
func Parallel(fs ...func() error) error {
	errs := make([]error, len(fs))
	var wg sync.WaitGroup
	for i, f := range fs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
