// Package reconcile is the one place that turns what is observed on a node
// (the certificate files, the containers the runtime runs, the kubelet)
// into what must be done, and does it: renew what is due, restart what
// still runs on credentials older than the files on disk. The daemon and
// every CLI command that renews or restarts call it, so there is one
// behaviour. Like a Kubernetes controller it is level-triggered: each
// cycle looks at the world again, so a crash, a lost record or an
// operator's `kubeadm certs renew` can never leave a component on old
// credentials unnoticed.
package reconcile

import (
	"sort"
	"time"
)

// Running is one component as it runs now: its container (or the kubelet's
// process) and when it started.
type Running struct {
	Component string
	// ID is the container ID (empty for the kubelet).
	ID        string
	StartedAt time.Time
}

// StaleComponent runs on credentials older than the files on disk: a file
// it reads only at start changed after it started.
type StaleComponent struct {
	Component string
	StartedAt time.Time
	// File is the newest such file and Changed its change time.
	File    string
	Changed time.Time
	// Reason, when set, says why in words (a reload that did not
	// happen, an in-memory certificate near its end); otherwise File
	// changed after the component started.
	Reason string
}

// Stale computes which running components are stale. uses maps each
// component to the credential files it reads only at start; changed holds
// each file's change time (ctime: set by every write and rename, and,
// unlike mtime, never set back by a copy or restore tool). A component
// with no running container is not stale here: the kubelet starts it on
// the files as they are.
func Stale(uses map[string][]string, running []Running, changed map[string]time.Time) []StaleComponent {
	var out []StaleComponent
	for _, r := range running {
		var s *StaleComponent
		for _, f := range uses[r.Component] {
			c, ok := changed[f]
			if !ok || !c.After(r.StartedAt) {
				continue
			}
			if s == nil || c.After(s.Changed) {
				s = &StaleComponent{Component: r.Component, StartedAt: r.StartedAt, File: f, Changed: c}
			}
		}
		if s != nil {
			out = append(out, *s)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Component < out[j].Component })
	return out
}
