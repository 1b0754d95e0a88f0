package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"k8s.io/utils/clock"
)

// Watcher reports changes in the directories pkirenewd manages.
type Watcher struct {
	w      *fsnotify.Watcher
	Events chan string
	Errors chan error
	// dirs are the watched paths. A watch follows an inode, so when a
	// directory is replaced (a restored backup moved into place) the
	// path is watched again once it exists.
	dirs map[string]bool
	// retry is how often a replaced directory is looked for (default
	// 1s); retryFor bounds the search (default 1h: after that the
	// hourly re-check still covers it).
	retry, retryFor time.Duration
	// clock times the search (the real one by default).
	clock    clock.WithTicker
	done     chan struct{}
	mu       sync.Mutex
	retrying map[string]bool
}

// Watch watches the directories (not files: kubeadm and editors replace
// files, which would end a file watch). Missing optional directories (the
// etcd/ subdirectory with external etcd) are skipped.
func Watch(dirs ...string) (*Watcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("file watch: %w", err)
	}
	seen := map[string]bool{}
	for _, d := range dirs {
		d = filepath.Clean(d)
		if seen[d] {
			continue
		}
		seen[d] = true
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			fw.Close()
			return nil, fmt.Errorf("file watch %s: not a directory (%v)", d, err)
		}
		if err := fw.Add(d); err != nil {
			fw.Close()
			return nil, fmt.Errorf("file watch %s: %w", d, err)
		}
	}
	w := &Watcher{w: fw, Events: make(chan string, 1024), Errors: make(chan error, 4), dirs: seen,
		retry: time.Second, retryFor: time.Hour, clock: clock.RealClock{}, done: make(chan struct{}), retrying: map[string]bool{}}
	go w.pump()
	return w, nil
}

// SetClock sets the clock that times the search for a replaced directory
// (the daemon's own).
func (w *Watcher) SetClock(c clock.WithTicker) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.clock = c
}

// SetRetry sets how often a replaced directory is looked for.
func (w *Watcher) SetRetry(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.retry = d
}

// rewatch watches p again: now if it exists, else as soon as it does.
func (w *Watcher) rewatch(p string) {
	w.mu.Lock()
	if w.retrying[p] {
		w.mu.Unlock()
		return
	}
	w.retrying[p] = true
	retry, retryFor, clk := w.retry, w.retryFor, w.clock
	w.mu.Unlock()
	go func() {
		defer func() {
			w.mu.Lock()
			delete(w.retrying, p)
			w.mu.Unlock()
		}()
		t := clk.NewTicker(retry)
		defer t.Stop()
		deadline := clk.Now().Add(retryFor)
		for {
			if st, err := os.Stat(p); err == nil && st.IsDir() {
				_ = w.w.Remove(p)
				if err := w.w.Add(p); err == nil {
					// Whatever changed while unwatched: take inventory.
					select {
					case w.Events <- p:
					default:
					}
					return
				}
			}
			if clk.Now().After(deadline) {
				return
			}
			select {
			case <-w.done:
				return
			case <-t.C():
			}
		}
	}()
}

func (w *Watcher) pump() {
	defer close(w.Events)
	defer close(w.Errors)
	for {
		select {
		case ev, ok := <-w.w.Events:
			if !ok {
				return
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			if w.dirs[filepath.Clean(ev.Name)] && ev.Op&(fsnotify.Remove|fsnotify.Rename|fsnotify.Create) != 0 {
				// A watched directory was moved, removed or put in
				// place: the ones below it moved with it silently, so
				// every path is watched anew.
				for d := range w.dirs {
					w.rewatch(d)
				}
			}
			select {
			case w.Events <- ev.Name:
			default: // a burst: the loop is already going to rescan
			}
		case err, ok := <-w.w.Errors:
			if !ok {
				return
			}
			select {
			case w.Errors <- err:
			default:
			}
		}
	}
}

// Close stops watching.
func (w *Watcher) Close() error {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
	return w.w.Close()
}
