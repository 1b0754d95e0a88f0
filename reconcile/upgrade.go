package reconcile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

// Unsettled tells whether the node is being changed by someone else —
// kubeadm upgrading it, or the kubelet about to replace a pod whose
// manifest changed after its container started — and why. Nothing is
// renewed or restarted meanwhile: the files and the pods are kubeadm's (or
// the kubelet's) until they settle.
func Unsettled(tmp []Entry, pods []Pod, now time.Time) (string, bool) {
	if why, ok := UpgradeUnderWay(tmp, now); ok {
		return why, true
	}
	for _, p := range pods {
		if !p.Started.IsZero() && p.ManifestChanged.After(p.Started) && now.Sub(p.ManifestChanged) < manifestSettle {
			return fmt.Sprintf("%s changed %s ago, after its pod started: the kubelet is replacing that pod", p.Manifest, now.Sub(p.ManifestChanged).Round(time.Second)), true
		}
	}
	return "", false
}

// UpgradeUnderWay tells whether the entries of <kubernetesDir>/tmp say
// that kubeadm is upgrading the node, and why.
func UpgradeUnderWay(tmp []Entry, now time.Time) (string, bool) {
	for _, e := range tmp {
		if strings.HasPrefix(e.Name, upgradeStaging) && now.Sub(e.ModTime) < upgradeLeftover {
			return fmt.Sprintf("kubeadm upgrade in progress (%s, %s old)", e.Name, now.Sub(e.ModTime).Round(time.Second)), true
		}
	}
	return "", false
}

// Upgrading tells whether kubeadm is upgrading the node now (the daemon
// says so in the journal and looks again often until it has finished;
// check says so beside what it reports).
func (e *NodeEngine) Upgrading() (string, bool) {
	return UpgradeUnderWay(KubeadmTmp(e.ManifestsDir), e.now())
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

// unsettled looks at the node: kubeadm's upgrade staging directory beside
// the manifests directory, and each usable manifest against its running
// container.
func (e *NodeEngine) unsettled(ctx context.Context, rst *cri.Restarter, ms cri.Manifests) (string, bool) {
	tmp := KubeadmTmp(e.ManifestsDir)
	obs := Observer{Runtime: rst.Runtime, Node: rst.Node}
	var pods []Pod
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
	return Unsettled(tmp, pods, e.now())
}
