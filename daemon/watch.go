package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fsnotify/fsnotify"
)

// Watcher reports changes in the directories pkirenewd manages.
type Watcher struct {
	w      *fsnotify.Watcher
	Events chan string
	Errors chan error
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
	w := &Watcher{w: fw, Events: make(chan string, 1024), Errors: make(chan error, 4)}
	go w.pump()
	return w, nil
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
func (w *Watcher) Close() error { return w.w.Close() }
