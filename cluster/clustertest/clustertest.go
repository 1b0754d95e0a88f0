// Package clustertest has in-memory fakes of the cluster package's
// interfaces: one Lease object with the apiserver's optimistic
// concurrency, and an etcd guard answering from a table.
package clustertest

import (
	"context"
	"errors"
	"strconv"
	"sync"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/pkirenewd/pkirenewd/cluster"
)

var leases = schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}

// Leases stores leases by name. Down makes every call fail as an
// unreachable apiserver does. Several cluster.Lease values may share one
// Leases, as the nodes of a cluster share the apiserver.
type Leases struct {
	mu    sync.Mutex
	items map[string]*coordinationv1.Lease
	rv    int
	Down  error
	// Hang makes Get wait for its context to end, as an apiserver that
	// cannot reach etcd does.
	Hang bool
	// Holders records every holder identity set, in order ("" for a
	// release), so a test can check the lease passed hands cleanly.
	Holders []string
}

var _ cluster.LeaseClient = (*Leases)(nil)

// NewLeases returns an empty store.
func NewLeases() *Leases { return &Leases{items: map[string]*coordinationv1.Lease{}} }

// SetDown makes the API unreachable (err) or reachable again (nil).
func (f *Leases) SetDown(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Down = err
}

// Holder returns the current holder of name.
func (f *Leases) Holder(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.items[name]; ok && l.Spec.HolderIdentity != nil {
		return *l.Spec.HolderIdentity
	}
	return ""
}

// Get implements cluster.LeaseClient.
func (f *Leases) Get(ctx context.Context, name string, _ metav1.GetOptions) (*coordinationv1.Lease, error) {
	f.mu.Lock()
	hang := f.Hang
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Down != nil {
		return nil, f.Down
	}
	l, ok := f.items[name]
	if !ok {
		return nil, apierrors.NewNotFound(leases, name)
	}
	return l.DeepCopy(), nil
}

// Create implements cluster.LeaseClient.
func (f *Leases) Create(_ context.Context, l *coordinationv1.Lease, _ metav1.CreateOptions) (*coordinationv1.Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Down != nil {
		return nil, f.Down
	}
	if _, ok := f.items[l.Name]; ok {
		return nil, apierrors.NewAlreadyExists(leases, l.Name)
	}
	return f.store(l), nil
}

// Update implements cluster.LeaseClient: a stale resourceVersion is a
// conflict, as on a real apiserver.
func (f *Leases) Update(_ context.Context, l *coordinationv1.Lease, _ metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Down != nil {
		return nil, f.Down
	}
	cur, ok := f.items[l.Name]
	if !ok {
		return nil, apierrors.NewNotFound(leases, l.Name)
	}
	if cur.ResourceVersion != l.ResourceVersion {
		return nil, apierrors.NewConflict(leases, l.Name, errors.New("the object has been modified"))
	}
	return f.store(l), nil
}

func (f *Leases) store(l *coordinationv1.Lease) *coordinationv1.Lease {
	f.rv++
	c := l.DeepCopy()
	c.ResourceVersion = strconv.Itoa(f.rv)
	prev := ""
	if old, ok := f.items[l.Name]; ok && old.Spec.HolderIdentity != nil {
		prev = *old.Spec.HolderIdentity
	}
	now := ""
	if c.Spec.HolderIdentity != nil {
		now = *c.Spec.HolderIdentity
	}
	if now != prev || len(f.Holders) == 0 {
		f.Holders = append(f.Holders, now)
	}
	f.items[l.Name] = c
	return c.DeepCopy()
}

// Guard answers OthersHealthy with the next error of Errs (the last one
// repeats; none: healthy) and counts the calls.
type Guard struct {
	mu    sync.Mutex
	Errs  []error
	Calls int
}

var _ cluster.Guard = (*Guard)(nil)

// OthersHealthy implements cluster.Guard.
func (g *Guard) OthersHealthy(context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.Calls++
	if len(g.Errs) == 0 {
		return nil
	}
	err := g.Errs[0]
	if len(g.Errs) > 1 {
		g.Errs = g.Errs[1:]
	}
	return err
}
