// Package daemontest has fakes of the daemon's interfaces for unit tests of
// the loop.
package daemontest

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/pkirenewd/pkirenewd/daemon"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/reconcile"
	"github.com/pkirenewd/pkirenewd/renew"
)

// Engine is a node whose certificates are plain data: one item per name
// with a NotAfter and a renewAt; Renew moves them a lifetime ahead.
type Engine struct {
	mu sync.Mutex
	// Now tells the engine the time (the test's fake clock).
	Now      func() time.Time
	Items    map[string]*Item
	Renewals [][]string
	// Fail makes the next N Renew calls fail.
	Fail int
	// Inventories counts Inventory calls.
	Inventories int
	// OnRenew runs inside Renew (e.g. to cancel a context mid-renewal).
	OnRenew func()
	// Written is what Renew reports as written.
	Written []string
	// Owed are restarts owed (Look); a successful Renew does them.
	Owed []string
	// Stale and Unseen are what Look reports besides.
	Stale, Unseen []string
	// Transaction, LookAgain and UpgradeWhy are what TransactionPending,
	// LookAgainAt and Upgrading return.
	Transaction bool
	LookAgain   time.Time
	UpgradeWhy  string
	// HoldReason, when set, makes Renew held (see SetHold).
	HoldReason string
	// Held counts held Renew calls; Recovered, Recover calls.
	Held, Recovered int
}

// Item is one fake certificate.
type Item struct {
	NotBefore, NotAfter time.Time
	// RenewBefore decides renewAt.
	RenewBefore time.Duration
}

var _ daemon.Engine = (*Engine)(nil)

// Recover implements daemon.Engine.
func (e *Engine) Recover() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.Recovered++
	e.Transaction = false
	return nil
}

// SetTransaction records (or clears) an interrupted renewal, as a killed
// `pkirenewd renew` leaves one.
func (e *Engine) SetTransaction(on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.Transaction = on
}

// SetLookAgain asks the loop to look again at t (zero: no reason).
func (e *Engine) SetLookAgain(t time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.LookAgain = t
}

// SetUpgrading reports kubeadm upgrading the node (why "" : it is not).
func (e *Engine) SetUpgrading(why string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.UpgradeWhy = why
}

// RecoverCount is how many times Recover was called.
func (e *Engine) RecoverCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.Recovered
}

// Inventory implements daemon.Engine.
func (e *Engine) Inventory() ([]renew.Status, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.Inventories++
	now := e.Now()
	var out []renew.Status
	for name, it := range e.Items {
		at := it.NotAfter.Add(-it.RenewBefore)
		out = append(out, renew.Status{
			Item:    &renew.Item{Name: name, Kind: renew.KindCert, Cert: &x509.Certificate{NotBefore: it.NotBefore, NotAfter: it.NotAfter}},
			RenewAt: at, State: pki.Decide(now, at, it.NotAfter),
		})
	}
	return out, nil
}

// Look implements daemon.Engine: Owed, Stale and Unseen as set.
func (e *Engine) Look() reconcile.Look {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := reconcile.Look{Owed: append([]string(nil), e.Owed...)}
	for _, c := range e.Stale {
		l.Stale = append(l.Stale, reconcile.StaleComponent{Component: c})
	}
	for _, c := range e.Unseen {
		l.Unseen = append(l.Unseen, reconcile.Unseen{Component: c, Err: errors.New("the runtime cannot be asked")})
	}
	return l
}

// TransactionPending implements daemon.Engine.
func (e *Engine) TransactionPending() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.Transaction
}

// LookAgainAt implements daemon.Engine.
func (e *Engine) LookAgainAt() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.LookAgain
}

// Upgrading implements daemon.Engine: UpgradeWhy, when set.
func (e *Engine) Upgrading() (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.UpgradeWhy, e.UpgradeWhy != ""
}

// SetHold makes Renew held (reason "" ends it), as the real engine is
// while kubeadm upgrades the node.
func (e *Engine) SetHold(reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.HoldReason = reason
}

// heldError is what a held Renew returns.
type heldError struct {
	reason string
	// look makes its words change at every look, as a real hold's age
	// does.
	look int
}

func (h heldError) Error() string { return "held: " + h.reason }

// Held is what the daemon reads of a held renewal.
func (h heldError) Held() (reason, why string, until time.Time) {
	return h.reason, fmt.Sprintf("someone else changes the node (%s, look %d)", h.reason, h.look), time.Time{}
}

// Renew implements daemon.Engine.
func (e *Engine) Renew(_ context.Context, names []string) ([]string, error) {
	if e.OnRenew != nil {
		e.OnRenew()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.HoldReason != "" {
		e.Held++
		return nil, heldError{e.HoldReason, e.Held}
	}
	e.Renewals = append(e.Renewals, names)
	if e.Fail > 0 {
		e.Fail--
		return nil, context.DeadlineExceeded
	}
	e.Owed = nil
	now := e.Now()
	for _, n := range names {
		it := e.Items[n]
		life := it.NotAfter.Sub(it.NotBefore)
		it.NotBefore, it.NotAfter = now, now.Add(life)
	}
	return e.Written, nil
}

// RenewalCount is how many times Renew was called.
func (e *Engine) RenewalCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.Renewals)
}

// InventoryCount is how many times Inventory was called.
func (e *Engine) InventoryCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.Inventories
}

// Notifier records sd_notify states.
type Notifier struct {
	mu     sync.Mutex
	States []string
}

var _ daemon.Notifier = (*Notifier)(nil)

// Notify implements daemon.Notifier.
func (n *Notifier) Notify(states ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.States = append(n.States, states...)
}

// Count is how many states start with prefix.
func (n *Notifier) Count(prefix string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, s := range n.States {
		if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
			c++
		}
	}
	return c
}

// Last is the last state that starts with prefix ("" when none).
func (n *Notifier) Last(prefix string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := len(n.States) - 1; i >= 0; i-- {
		if strings.HasPrefix(n.States[i], prefix) {
			return n.States[i]
		}
	}
	return ""
}
