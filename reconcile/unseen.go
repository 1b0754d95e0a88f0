package reconcile

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Unseen is a component whose credentials could not be observed: the
// runtime did not answer about it, or answered ambiguously (two Ready
// sandboxes). Nothing can be said of it, so nothing may be called fine.
type Unseen struct {
	Component string
	Err       error
}

// Blind is the error of an observation that could not see some
// components; the others were still observed and are reported.
type Blind []Unseen

func (b Blind) Error() string {
	var parts []string
	for _, u := range b {
		parts = append(parts, fmt.Sprintf("%s: %v", u.Component, u.Err))
	}
	return "cannot tell whether these components run on old credentials: " + strings.Join(parts, "; ")
}

// Observation is what one look at the running components found: which
// run on credentials older than the files, and which could not be seen.
type Observation struct {
	Stale  []StaleComponent
	Unseen []Unseen
}

// Components names the stale components, in restart order.
func (o Observation) Components() []string {
	var out []string
	for _, s := range o.Stale {
		out = append(out, s.Component)
	}
	return out
}

// blindFor is what an observation that could not start (no runtime, no
// manifests directory) says: every component it would have looked at is
// unseen, for that one reason.
func blindFor(components []string, err error) []Unseen {
	var out []Unseen
	for _, c := range components {
		out = append(out, Unseen{Component: c, Err: err})
	}
	return out
}

// addUnseen records per-component errors carried by err (a Blind); any
// other error is returned as it is.
func addUnseen(into map[string]error, err error) error {
	var b Blind
	if !errors.As(err, &b) {
		return err
	}
	for _, u := range b {
		if _, ok := into[u.Component]; !ok {
			into[u.Component] = u.Err
		}
	}
	return nil
}

// unseenList is into as a sorted list, less the components seen stale by
// another look (a component seen stale has been seen).
func unseenList(into map[string]error) []Unseen {
	var out []Unseen
	for c, err := range into {
		out = append(out, Unseen{Component: c, Err: err})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Component < out[j].Component })
	return out
}

// blindErr is nil for no unseen component, else a Blind.
func blindErr(unseen map[string]error) error {
	if len(unseen) == 0 {
		return nil
	}
	return Blind(unseenList(unseen))
}
