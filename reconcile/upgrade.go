package reconcile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pkirenewd/pkirenewd/cri"
)

// ErrUnsettled: someone else is changing the node (kubeadm upgrade, the
// kubelet replacing a pod); the renewal or restart is retried later.
var ErrUnsettled = errors.New("the node is being changed by someone else")

// Entry is a file or directory and when it last changed.
type Entry struct {
	Name    string
	ModTime time.Time
}

// kubeadm upgrade apply and kubeadm upgrade node stage the new manifests
// in <kubernetesDir>/tmp/kubeadm-upgraded-manifests*, made when the
// upgrade of the static pods starts and removed when it succeeds. The old
// manifests and etcd's data go to kubeadm-backup-manifests-* and
// kubeadm-backup-etcd-*, which kubeadm keeps after a successful upgrade
// (GetPathManagerForUpgrade asks CleanupDirs to keep both; seen on the e2e
// rig after `kubeadm upgrade apply` v1.36.3 -> v1.37.2), so only the
// staging directory says an upgrade is under way (cmd/kubeadm/app/phases/
// upgrade/staticpods.go).
const upgradeStaging = "kubeadm-upgraded-manifests"

const (
	// upgradeLeftover: a staging directory older than this is what a
	// failed or killed upgrade left behind (kubeadm keeps it for the
	// operator when it rolls back), not one under way (kubeadm waits at
	// most 5 minutes per component).
	upgradeLeftover = time.Hour
	// manifestSettle bounds the wait for the kubelet to replace a pod
	// whose manifest changed (it looks every 20 s): a manifest it never
	// acts on (an invalid one, a kubelet that is down) must not hold
	// renewals back for ever.
	manifestSettle = 5 * time.Minute
)

// Pod is a static pod as observed: when its manifest last changed and
// when its running container started (zero: none runs).
type Pod struct {
	Manifest        string
	ManifestChanged time.Time
	Started         time.Time
}

// Hold reasons, as the metric's label says them.
const (
	HoldUpgrade = "kubeadm-upgrade"
	HoldPod     = "pod-replacing"
)

// Hold is a reason to write and restart nothing now: someone else is
// changing the node. It is not a failure: the daemon looks again often
// and goes ahead once it has gone.
type Hold struct {
	// Reason is HoldUpgrade or HoldPod.
	Reason string
	Why    string
	// Until is when it ends at the latest if its cause stays.
	Until time.Time
}

// HoldError is what a renewal or restart that was held returns.
type HoldError struct {
	Hold
	// Done says what was not done ("nothing was written or restarted").
	Done string
}

func (h *HoldError) Error() string {
	return fmt.Sprintf("%v: %s; %s, retrying once it settles", ErrUnsettled, h.Why, h.Done)
}

// Unwrap makes errors.Is(err, ErrUnsettled) hold.
func (h *HoldError) Unwrap() error { return ErrUnsettled }

// Held tells the daemon, which does not know this package's types, why
// and until when.
func (h *HoldError) Held() (reason, why string, until time.Time) { return h.Reason, h.Why, h.Until }

// Sightings remember, in memory, when a time stamp ahead of the clock was
// first seen. A staging directory or manifest written while the clock was
// ahead (before NTP at boot) must not hold renewals back for the skew on
// top of the hold: it is aged from when it was first seen instead. nil
// (a one-shot command) ages it from now: the longest it may still hold.
type Sightings struct {
	mu    sync.Mutex
	first map[string]time.Time
}

// Since is the time to age an entry from: its stamp, or for a stamp ahead
// of now, when (key, stamp) was first seen.
func (s *Sightings) Since(key string, stamp, now time.Time) time.Time {
	if !stamp.After(now) {
		return stamp
	}
	if s == nil {
		return now
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.first == nil {
		s.first = map[string]time.Time{}
	}
	k := key + "@" + stamp.UTC().Format(time.RFC3339Nano)
	if t, ok := s.first[k]; ok {
		return t
	}
	s.first[k] = now
	return now
}

// Holds are every reason the node is being changed by someone else now —
// kubeadm upgrading it, or the kubelet about to replace a pod whose
// manifest changed after its container started — each with when it ends
// at the latest. Nothing is renewed or restarted meanwhile: the files and
// the pods are kubeadm's (or the kubelet's) until they settle.
func Holds(tmp []Entry, pods []Pod, now time.Time, seen *Sightings) []Hold {
	out := upgradeHolds(tmp, now, seen)
	for _, p := range pods {
		if p.Started.IsZero() || !p.ManifestChanged.After(p.Started) {
			continue
		}
		if age, until, ok := within(seen, p.Manifest, p.ManifestChanged, now, manifestSettle); ok {
			out = append(out, Hold{Reason: HoldPod, Until: until,
				Why: fmt.Sprintf("%s changed %s ago, after its pod started: the kubelet is replacing that pod", p.Manifest, age.Round(time.Second))})
		}
	}
	return out
}

// within ages a time stamp (see Sightings) and tells whether it is still
// within window, and when that ends.
func within(seen *Sightings, key string, stamp, now time.Time, window time.Duration) (age time.Duration, until time.Time, ok bool) {
	since := seen.Since(key, stamp, now)
	age = now.Sub(since)
	return age, since.Add(window), age < window
}

// Unsettled is the first of Holds, if any.
func Unsettled(tmp []Entry, pods []Pod, now time.Time, seen *Sightings) (Hold, bool) {
	if h := Holds(tmp, pods, now, seen); len(h) > 0 {
		return h[0], true
	}
	return Hold{}, false
}

// upgradeHolds tells whether the entries of <kubernetesDir>/tmp say that
// kubeadm is upgrading the node.
func upgradeHolds(tmp []Entry, now time.Time, seen *Sightings) []Hold {
	var out []Hold
	for _, e := range tmp {
		if !strings.HasPrefix(e.Name, upgradeStaging) {
			continue
		}
		if age, until, ok := within(seen, e.Name, e.ModTime, now, upgradeLeftover); ok {
			out = append(out, Hold{Reason: HoldUpgrade, Until: until,
				Why: fmt.Sprintf("kubeadm upgrade in progress (%s, %s old)", e.Name, age.Round(time.Second))})
		}
	}
	return out
}

// UpgradeUnderWay tells whether the entries of <kubernetesDir>/tmp say
// that kubeadm is upgrading the node, and why.
func UpgradeUnderWay(tmp []Entry, now time.Time, seen *Sightings) (Hold, bool) {
	if h := upgradeHolds(tmp, now, seen); len(h) > 0 {
		return h[0], true
	}
	return Hold{}, false
}

// Upgrading tells whether kubeadm is upgrading the node now (the daemon
// says so in the journal and looks again often until it has finished).
func (e *NodeEngine) Upgrading() (string, bool) {
	h, ok := UpgradeUnderWay(KubeadmTmp(e.ManifestsDir), e.now(), e.sightings())
	return h.Why, ok
}

func (e *NodeEngine) sightings() *Sightings {
	e.seenOnce.Do(func() { e.seen = &Sightings{} })
	return e.seen
}

// KubeadmTmp lists kubeadm's <kubernetesDir>/tmp, beside the manifests
// directory (none: nothing).
func KubeadmTmp(manifestsDir string) []Entry {
	var tmp []Entry
	if des, err := os.ReadDir(filepath.Join(filepath.Dir(manifestsDir), "tmp")); err == nil {
		for _, de := range des {
			if fi, err := de.Info(); err == nil {
				tmp = append(tmp, Entry{Name: de.Name(), ModTime: fi.ModTime()})
			}
		}
	}
	return tmp
}

// Holds looks at the node for every active hold: kubeadm's staging
// directory always, and each manifest against its running container when
// the runtime can be asked (restarts on or off).
func (e *NodeEngine) Holds(ctx context.Context) []Hold {
	var rt cri.Runtime
	var node string
	connect := e.Connect
	if connect == nil {
		connect = e.ConnectToLook
	}
	if connect != nil {
		if rst, done, err := connect(ctx); err == nil {
			defer done()
			rt, node = rst.Runtime, rst.Node
		}
	}
	ms, _ := cri.LoadManifests(e.ManifestsDir)
	return e.holds(ctx, rt, node, ms)
}

// held is the first hold, as the error a renewal or restart returns.
func (e *NodeEngine) held(ctx context.Context, rst *cri.Restarter, ms cri.Manifests, done string) error {
	var rt cri.Runtime
	var node string
	switch {
	case rst != nil:
		rt, node = rst.Runtime, rst.Node
	case e.ConnectToLook != nil:
		if r, closeIt, err := e.ConnectToLook(ctx); err == nil {
			defer closeIt()
			rt, node = r.Runtime, r.Node
			ms, _ = cri.LoadManifests(e.ManifestsDir)
		}
	}
	if h := e.holds(ctx, rt, node, ms); len(h) > 0 {
		return &HoldError{Hold: h[0], Done: done}
	}
	return nil
}

// holds looks at kubeadm's staging directory beside the manifests
// directory and, with a runtime, each usable manifest against its running
// container.
func (e *NodeEngine) holds(ctx context.Context, rt cri.Runtime, node string, ms cri.Manifests) []Hold {
	tmp := KubeadmTmp(e.ManifestsDir)
	var pods []Pod
	if rt != nil {
		obs := Observer{Runtime: rt, Node: node}
		for _, m := range ms.Usable {
			// ctime: kubeadm renames its new manifest into place, which
			// keeps the staged file's mtime but sets the ctime.
			changed, err := Ctime(m.Path)
			if err != nil {
				continue
			}
			r, running, err := obs.running(ctx, m.Component, nil)
			if err != nil || !running {
				continue
			}
			pods = append(pods, Pod{Manifest: m.Path, ManifestChanged: changed, Started: r.StartedAt})
		}
	}
	return Holds(tmp, pods, e.now(), e.sightings())
}
