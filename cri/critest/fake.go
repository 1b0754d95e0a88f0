// Package critest has fakes of the cri package's interfaces for unit tests
// of the restart logic. Integration tests use a real containerd
// (test/cririg).
package critest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/pkirenewd/pkirenewd/cri"
)

// Runtime is an in-memory container runtime with a kubelet's reflex: a
// removed static pod comes back (after RecreateAfter listings) unless the
// component is in NoRecreate.
type Runtime struct {
	mu         sync.Mutex
	seq        int
	sandboxes  []*cri.Sandbox
	containers map[string][]cri.Container
	listings   map[string]int    // per component, listings since removal
	nodes      map[string]string // per component, the node of the removed pod

	// Calls records StopPodSandbox/RemovePodSandbox as "stop ID"/"remove ID".
	Calls []string
	// RecreateAfter is how many listings pass before the kubelet's new
	// sandbox shows up.
	RecreateAfter int
	// NoRecreate lists components the "kubelet" does not bring back.
	NoRecreate map[string]bool
	// RemoveFailures makes the first N RemovePodSandbox calls fail like
	// the kubelet race does.
	RemoveFailures int
	// CrashEvery makes a component's container exit and the kubelet
	// replace it (new ID, next attempt) at every Nth listing of its
	// containers: a crash loop.
	CrashEvery map[string]int
	crashes    map[string]int // per sandbox, listings since the last crash
	// Now stamps the start of each container (default time.Now).
	Now func() time.Time
}

func (f *Runtime) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

var _ cri.Runtime = (*Runtime)(nil)

// NewRuntime returns an empty runtime.
func NewRuntime() *Runtime {
	return &Runtime{containers: map[string][]cri.Container{}, listings: map[string]int{}, nodes: map[string]string{}}
}

// AddStaticPod adds a ready static pod sandbox with a running container.
func (f *Runtime) AddStaticPod(component string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addLocked(component, "file")
}

// AddNodePod adds a ready static pod as the kubelet of node names it
// ("<component>-<node>"); it comes back under the same name.
func (f *Runtime) AddNodePod(component, node string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.addLocked(component, "file")
	f.sandboxes[len(f.sandboxes)-1].Labels["io.kubernetes.pod.name"] = component + "-" + node
	return id
}

// AddPod adds a ready sandbox with a config source other than a file.
func (f *Runtime) AddPod(component, source string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addLocked(component, source)
}

func (f *Runtime) addLocked(component, source string) string {
	f.seq++
	id := fmt.Sprintf("%s-sandbox-%03d", component, f.seq)
	f.sandboxes = append(f.sandboxes, &cri.Sandbox{
		ID: id, Ready: true, CreatedAt: time.Unix(int64(f.seq), 0),
		Labels:      map[string]string{"io.kubernetes.pod.namespace": "kube-system", "component": component},
		Annotations: map[string]string{"kubernetes.io/config.source": source},
	})
	f.containers[id] = []cri.Container{{ID: id + "-c", Name: component, Running: true, StartedAt: f.now()}}
	return id
}

// Current returns the IDs of the component's sandboxes.
func (f *Runtime) Current(component string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for _, s := range f.sandboxes {
		if s.Labels["component"] == component {
			ids = append(ids, s.ID)
		}
	}
	return ids
}

// PodSandboxes implements cri.Runtime.
func (f *Runtime) PodSandboxes(_ context.Context, labels map[string]string) ([]cri.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := labels["component"]; c != "" {
		if n, ok := f.listings[c]; ok {
			if n+1 >= f.RecreateAfter && !f.NoRecreate[c] {
				delete(f.listings, c)
				f.addLocked(c, "file")
				if n := f.nodes[c]; n != "" {
					f.sandboxes[len(f.sandboxes)-1].Labels["io.kubernetes.pod.name"] = c + "-" + n
				}
			} else {
				f.listings[c] = n + 1
			}
		}
	}
	var out []cri.Sandbox
next:
	for _, s := range f.sandboxes {
		for k, v := range labels {
			if s.Labels[k] != v {
				continue next
			}
		}
		out = append(out, *s)
	}
	return out, nil
}

// Containers implements cri.Runtime.
func (f *Runtime) Containers(_ context.Context, id string) ([]cri.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.crashLocked(id)
	return append([]cri.Container{}, f.containers[id]...), nil
}

// crashLocked replaces the sandbox's running container by the next
// attempt when its component crash-loops and its turn has come.
func (f *Runtime) crashLocked(id string) {
	cs := f.containers[id]
	if len(cs) == 0 || !cs[0].Running || f.CrashEvery[cs[0].Name] == 0 {
		return
	}
	if f.crashes == nil {
		f.crashes = map[string]int{}
	}
	f.crashes[id]++
	if f.crashes[id] < f.CrashEvery[cs[0].Name] {
		return
	}
	f.crashes[id] = 0
	c := cs[0]
	c.Attempt++
	c.ID = fmt.Sprintf("%s-c%d", id, c.Attempt)
	f.containers[id] = []cri.Container{c}
}

// StopPodSandbox implements cri.Runtime.
func (f *Runtime) StopPodSandbox(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls = append(f.Calls, "stop "+id)
	for _, s := range f.sandboxes {
		if s.ID == id {
			s.Ready = false
			for i := range f.containers[id] {
				f.containers[id][i].Running = false
			}
			return nil
		}
	}
	return fmt.Errorf("sandbox %s not found", id)
}

// RemovePodSandbox implements cri.Runtime.
func (f *Runtime) RemovePodSandbox(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls = append(f.Calls, "remove "+id)
	if f.RemoveFailures > 0 {
		f.RemoveFailures--
		return errors.New("container is in starting state")
	}
	for i, s := range f.sandboxes {
		if s.ID == id {
			f.sandboxes = append(f.sandboxes[:i], f.sandboxes[i+1:]...)
			delete(f.containers, id)
			c := s.Labels["component"]
			f.listings[c] = 0
			f.nodes[c] = strings.TrimPrefix(s.Labels["io.kubernetes.pod.name"], c+"-")
			return nil
		}
	}
	// Idempotent, as the CRI requires.
	return nil
}

// Prober answers probes from tables.
type Prober struct {
	mu sync.Mutex
	// Fail lists probe ports that never answer ok.
	Fail map[int]bool
	// Serials maps a served address to the serial it serves.
	Serials map[string]string
	// Probes counts probes per port.
	Probes map[int]int
}

var _ cri.Prober = (*Prober)(nil)

// Probe implements cri.Prober.
func (p *Prober) Probe(_ context.Context, pr cri.Probe) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Probes == nil {
		p.Probes = map[int]int{}
	}
	p.Probes[pr.Port]++
	if p.Fail[pr.Port] {
		return "", fmt.Errorf("dial tcp %s:%d: connect: connection refused", pr.Host, pr.Port)
	}
	return "200 ok", nil
}

// ServedSerial implements cri.Prober.
func (p *Prober) ServedSerial(_ context.Context, addr string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.Serials[addr]
	if !ok {
		return "", fmt.Errorf("TLS to %s: connection refused", addr)
	}
	return s, nil
}
