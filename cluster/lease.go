// Package cluster coordinates one node's restarts with the rest of the
// control plane. kubeadm issued every node's certificates within minutes
// of each other, so every node's pkirenewd falls due at about the same
// moment: a coordination.k8s.io Lease lets one node restart at a time, and
// a guard never restarts the local etcd unless every other member is
// healthy. When the certificates have already expired the API cannot
// answer; the node then recovers on its own and says so loudly.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
)

// LeaseClient is what the lease needs of client-go's LeaseInterface.
type LeaseClient interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*coordinationv1.Lease, error)
	Create(ctx context.Context, lease *coordinationv1.Lease, opts metav1.CreateOptions) (*coordinationv1.Lease, error)
	Update(ctx context.Context, lease *coordinationv1.Lease, opts metav1.UpdateOptions) (*coordinationv1.Lease, error)
}

// ErrLost: another node holds the lease we thought was ours.
var ErrLost = errors.New("lease lost")

// Holder describes who holds a lease and until when.
type Holder struct {
	Identity string
	Expires  time.Time
}

// Observation is the last record of a lease held by another node that
// this node saw, and when it saw it change, on its own clock.
type Observation struct {
	Record string
	At     time.Time
}

// Takeable decides whether me may take a lease with spec at now: it is
// free (no holder), already ours, or its record has not changed for the
// lease's duration since this node first saw it so (a crashed holder).
// Like client-go's leader election, expiry is judged by when this node
// observed the record change, never by the holder's renewTime: another
// node's clock may be minutes off, and comparing its timestamps with ours
// would let two nodes hold the lease at once. It returns the observation
// to pass to the next call.
func Takeable(spec coordinationv1.LeaseSpec, me string, now time.Time, seen Observation) (bool, Holder, Observation) {
	h := Holder{Identity: deref(spec.HolderIdentity)}
	if h.Identity == "" || h.Identity == me {
		return true, h, Observation{}
	}
	dur := time.Duration(0)
	if spec.LeaseDurationSeconds != nil {
		dur = time.Duration(*spec.LeaseDurationSeconds) * time.Second
	}
	record := fmt.Sprintf("%s|%s|%s|%d", h.Identity, microString(spec.RenewTime), microString(spec.AcquireTime), dur)
	if record != seen.Record {
		seen = Observation{Record: record, At: now}
	}
	h.Expires = seen.At.Add(dur)
	return !now.Before(h.Expires), h, seen
}

func microString(t *metav1.MicroTime) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// Lease is one named Lease taken by one identity (the node name).
type Lease struct {
	Client   LeaseClient
	Name     string
	Identity string
	Duration time.Duration
	Clock    clock.PassiveClock
	// Seen is what this node last saw of a foreign holder's record; it
	// must outlive one attempt (the Coordinator keeps it), or a crashed
	// holder's lease would never be seen to expire.
	Seen *Observation
}

func (l *Lease) seconds() *int32 {
	s := int32(l.Duration / time.Second)
	if s < 1 {
		s = 1
	}
	return &s
}

// TryAcquire makes one attempt to take the lease. It returns whether it
// did and, if not, who holds it. An error is the API failing (unreachable,
// TLS, authorization), never someone else holding the lease.
func (l *Lease) TryAcquire(ctx context.Context) (bool, Holder, error) {
	now := metav1.NewMicroTime(l.Clock.Now())
	me := l.Identity
	cur, err := l.Client.Get(ctx, l.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = l.Client.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: l.Name},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity: &me, LeaseDurationSeconds: l.seconds(), AcquireTime: &now, RenewTime: &now,
			},
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return false, Holder{Identity: "(another node, just now)"}, nil
		}
		if err != nil {
			return false, Holder{}, err
		}
		return true, Holder{Identity: me}, nil
	}
	if err != nil {
		return false, Holder{}, err
	}
	if l.Seen == nil {
		l.Seen = &Observation{}
	}
	ok, h, seen := Takeable(cur.Spec, me, now.Time, *l.Seen)
	*l.Seen = seen
	if !ok {
		return false, h, nil
	}
	upd := cur.DeepCopy()
	if h.Identity != me {
		upd.Spec.AcquireTime = &now
		t := int32(0)
		if cur.Spec.LeaseTransitions != nil {
			t = *cur.Spec.LeaseTransitions
		}
		t++
		upd.Spec.LeaseTransitions = &t
	}
	upd.Spec.HolderIdentity = &me
	upd.Spec.RenewTime = &now
	upd.Spec.LeaseDurationSeconds = l.seconds()
	if _, err := l.Client.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsConflict(err) {
			return false, Holder{Identity: "(another node, just now)"}, nil
		}
		return false, Holder{}, err
	}
	return true, Holder{Identity: me}, nil
}

// Renew extends the lease; ErrLost when another node holds it now.
func (l *Lease) Renew(ctx context.Context) error {
	cur, err := l.Client.Get(ctx, l.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if cur.Spec.HolderIdentity == nil || *cur.Spec.HolderIdentity != l.Identity {
		return fmt.Errorf("%w: held by %q", ErrLost, deref(cur.Spec.HolderIdentity))
	}
	now := metav1.NewMicroTime(l.Clock.Now())
	upd := cur.DeepCopy()
	upd.Spec.RenewTime = &now
	_, err = l.Client.Update(ctx, upd, metav1.UpdateOptions{})
	return err
}

// Release gives the lease up at once (instead of letting it run out), if
// it is still ours.
func (l *Lease) Release(ctx context.Context) error {
	cur, err := l.Client.Get(ctx, l.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if deref(cur.Spec.HolderIdentity) != l.Identity {
		return nil
	}
	none := ""
	now := metav1.NewMicroTime(l.Clock.Now())
	upd := cur.DeepCopy()
	upd.Spec.HolderIdentity = &none
	upd.Spec.RenewTime = &now
	_, err = l.Client.Update(ctx, upd, metav1.UpdateOptions{})
	return err
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
