package testbin

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Event is one line of pkirenewd's log: JSON (`run --log-format json`) or
// logfmt text (the one-shot commands); a line that is neither is kept as
// {"msg": line, "level": "raw"}.
type Event struct {
	At     time.Time // when the test read it
	Fields map[string]any
}

// Str returns a string field, or "".
func (e Event) Str(k string) string {
	v, _ := e.Fields[k].(string)
	return v
}

// Proc is a pkirenewd process whose log is copied to a file and parsed as
// it comes.
type Proc struct {
	Cmd    *exec.Cmd
	done   chan struct{}
	mu     sync.Mutex
	events []Event
}

// Start runs bin with args in its own process group (killed with the
// test), its output copied to logPath and parsed into events. The test's
// cleanup sends SIGTERM and waits (SIGKILL after 30 s).
func Start(t testing.TB, bin, logPath string, args ...string) *Proc {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proc{Cmd: exec.Command(bin, args...), done: make(chan struct{})}
	pr, pw := io.Pipe()
	p.Cmd.Stdout, p.Cmd.Stderr = pw, pw
	// Own process group: a Ctrl-C reaches the test, which stops it
	// through its cleanup.
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.Cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	t.Logf("started %s %s", bin, strings.Join(args, " "))
	go func() {
		_ = p.Cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	go func() {
		defer logf.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			fmt.Fprintf(logf, "%s\n", line)
			var f map[string]any
			if json.Unmarshal(line, &f) != nil {
				if f = ParseLogfmt(string(line)); f == nil {
					f = map[string]any{"msg": string(line), "level": "raw"}
				}
			}
			p.mu.Lock()
			p.events = append(p.events, Event{At: time.Now(), Fields: f})
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		if !p.Exited() {
			_ = p.Cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				_ = p.Cmd.Process.Kill()
				<-p.done
			}
		}
	})
	return p
}

// Events returns the lines read so far.
func (p *Proc) Events() []Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Event{}, p.events...)
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits up to timeout (pkirenewd finishes the
// component in hand first); anything but exit 0 is an error.
func (p *Proc) Stop(timeout time.Duration) error {
	if p.Exited() {
		return fmt.Errorf("pkirenewd had exited: %v", p.Cmd.ProcessState)
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.Cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("pkirenewd did not stop within %v of SIGTERM", timeout)
	}
	if code := p.Cmd.ProcessState.ExitCode(); code != 0 {
		return fmt.Errorf("pkirenewd exited with %d after SIGTERM", code)
	}
	return nil
}

var errNotLogfmt = errors.New("not logfmt")

// ParseLogfmt parses one logrus text line (key=value, values quoted when
// needed); nil when it is not one.
func ParseLogfmt(line string) map[string]any {
	out, err := parseLogfmt(line)
	if err != nil {
		return nil
	}
	return out
}

func parseLogfmt(line string) (map[string]any, error) {
	out := map[string]any{}
	for i := 0; i < len(line); {
		for i < len(line) && line[i] == ' ' {
			i++
		}
		eq := strings.IndexByte(line[i:], '=')
		if eq <= 0 || strings.ContainsAny(line[i:i+eq], " \"") {
			return nil, errNotLogfmt
		}
		key := line[i : i+eq]
		i += eq + 1
		var val string
		if i < len(line) && line[i] == '"' {
			j := i + 1
			for j < len(line) && line[j] != '"' {
				if line[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(line) {
				return nil, errNotLogfmt
			}
			uq, err := strconv.Unquote(line[i : j+1])
			if err != nil {
				return nil, err
			}
			val, i = uq, j+1
		} else {
			j := strings.IndexByte(line[i:], ' ')
			if j < 0 {
				j = len(line) - i
			}
			val, i = line[i:i+j], i+j
		}
		out[key] = val
	}
	if _, ok := out["level"]; !ok {
		return nil, errNotLogfmt
	}
	return out, nil
}
