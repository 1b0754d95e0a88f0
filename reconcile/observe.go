package reconcile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/renew"
)

// Kubelet is the pseudo-component name of the kubelet in a stale set.
const Kubelet = "kubelet"

// Observer looks at what runs on the node.
type Observer struct {
	Runtime cri.Runtime
	// Node is the kubelet's node name (see cri.Restarter.Node).
	Node string
	// KubeletStart returns when the kubelet that reads kubeletConf
	// started; ok false when none runs (nothing to compare). Default:
	// /proc.
	KubeletStart func(kubeletConf string) (time.Time, bool, error)
	// Changed returns a file's change time (default: its ctime).
	Changed func(path string) (time.Time, error)
	// Prober reads served serials (default cri.HTTPProber).
	Prober cri.Prober
	// lookAgain, when set, receives the earliest time a reload that may
	// still be under way can be judged.
	lookAgain *time.Time
}

// CredentialFiles are the files of the inventory that a process reads at
// start to prove who it is: each leaf's certificate and key, and each
// kubeconfig that embeds its credentials. CAs are left out (pkirenewd never
// writes them).
func CredentialFiles(inv *renew.Inventory) (files []string, kubeletConf string) {
	for _, it := range inv.Certs {
		if it.Missing || it.RotatedBy != "" {
			continue
		}
		switch it.Kind {
		case renew.KindCert:
			files = append(files, it.CertPath, it.KeyPath)
		case renew.KindKubeconfig:
			files = append(files, it.CertPath)
			if it.Name == "kubelet.conf" {
				kubeletConf = it.CertPath
			}
		}
	}
	return files, kubeletConf
}

// Uses maps each usable manifest's component to the credential files it
// reads; the kubelet to kubelet.conf when that embeds its credentials.
func Uses(ms cri.Manifests, files []string, kubeletConf string) map[string][]string {
	out := map[string][]string{}
	for _, m := range ms.Usable {
		for _, f := range files {
			if cri.UsesFile(m, f) {
				out[m.Component] = append(out[m.Component], f)
			}
		}
	}
	if kubeletConf != "" {
		out[Kubelet] = []string{kubeletConf}
	}
	return out
}

// Stale observes which components run on credentials older than the files
// on disk. A component without a running static pod is skipped (the
// kubelet starts it on the files as they are). A component the runtime
// cannot tell about is that component's problem alone: the others are
// still observed and returned, and the error is a Blind naming it, since
// nothing can be told of it.
func (o Observer) Stale(ctx context.Context, uses map[string][]string) ([]StaleComponent, error) {
	var all []string
	for _, files := range uses {
		all = append(all, files...)
	}
	changed := o.changedTimes(all)
	var running []Running
	unseen := map[string]error{}
	for c, files := range uses {
		r, ok, err := o.running(ctx, c, files)
		if err != nil {
			unseen[c] = err
			continue
		}
		if ok {
			running = append(running, r)
		}
	}
	return Stale(uses, running, changed), blindErr(unseen)
}

// changedTimes are the change times of files (those that can be read).
func (o Observer) changedTimes(files []string) map[string]time.Time {
	changedAt := o.Changed
	if changedAt == nil {
		changedAt = Ctime
	}
	changed := map[string]time.Time{}
	for _, f := range files {
		if _, ok := changed[f]; ok {
			continue
		}
		if t, err := changedAt(f); err == nil {
			changed[f] = t
		}
	}
	return changed
}

func (o Observer) running(ctx context.Context, component string, uses []string) (Running, bool, error) {
	if component == Kubelet {
		start := o.KubeletStart
		if start == nil {
			start = KubeletStartFromProc
		}
		if len(uses) == 0 {
			return Running{}, false, nil
		}
		t, ok, err := start(uses[0])
		return Running{Component: Kubelet, StartedAt: t}, ok, err
	}
	sb, err := cri.FindStaticPodOn(ctx, o.Runtime, component, o.Node)
	if err != nil {
		if errors.Is(err, cri.ErrNoReadySandbox) {
			return Running{}, false, nil
		}
		return Running{}, false, err
	}
	cs, err := o.Runtime.Containers(ctx, sb.ID)
	if err != nil {
		return Running{}, false, fmt.Errorf("%s: %w", component, err)
	}
	for _, c := range cs {
		if c.Running && !c.StartedAt.IsZero() {
			return Running{Component: component, ID: c.ID, StartedAt: c.StartedAt}, true, nil
		}
	}
	return Running{}, false, nil
}

// Ctime is a file's inode change time: every write, rename, chmod or chown
// sets it, and no tool can set it back (unlike mtime, which cp -p, tar and
// restores do).
func Ctime(path string) (time.Time, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fi.ModTime(), nil
	}
	return time.Unix(st.Ctim.Sec, st.Ctim.Nsec), nil
}
