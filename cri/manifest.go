// Package cri restarts kubeadm's static control-plane pods through the
// container runtime interface, the way an operator does with `crictl stopp`
// and `crictl rmp`: one component at a time, each proven healthy (and, where
// it can be seen, serving the renewed certificate) before the next.
//
// Which components to restart and in what order are pure functions of the
// static pod manifests and the set of changed files, so they can be
// table-tested; the runtime, the health probe and the clock sit behind small
// interfaces.
package cri

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"
	"gopkg.in/yaml.v3"

	"github.com/pkirenewd/pkirenewd/internal/fsread"
)

// Probe is an HTTP(S) health check taken from a manifest.
type Probe struct {
	Scheme string // "HTTP" or "HTTPS"
	Host   string
	Port   int
	Path   string
}

// URL is the probe's address.
func (p Probe) URL() string {
	return fmt.Sprintf("%s://%s%s", strings.ToLower(p.Scheme), net.JoinHostPort(p.Host, strconv.Itoa(p.Port)), p.Path)
}

// Manifest is what pkirenewd needs from a static pod manifest.
type Manifest struct {
	Path      string
	Component string
	// Args are the container's command and args, in order.
	Args []string
	// HostPaths are the hostPath volumes' paths.
	HostPaths []string
	// Probe is the manifest's HTTP health check (or kubeadm's default for
	// its own components); the zero Probe means none (HasProbe).
	Probe Probe
	// ServingCert is the certificate file the component serves
	// (--tls-cert-file, or etcd's --cert-file); empty when it serves a
	// self-signed one.
	ServingCert string
	// ServingAddr is where ServingCert can be seen (host:port).
	ServingAddr string
	// Image is the first container's image (its tag tells the version).
	Image string
}

// HasProbe reports whether the manifest has an HTTP health check. Pods
// without one (kube-vip, keepalived) are judged by their container staying
// up instead.
func (m *Manifest) HasProbe() bool { return m.Probe.Port != 0 }

type podSpec struct {
	Metadata struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Kind string `yaml:"kind"`
	Spec struct {
		Containers []struct {
			Image   string   `yaml:"image"`
			Command []string `yaml:"command"`
			Args    []string `yaml:"args"`
			Ports   []struct {
				Name          string `yaml:"name"`
				ContainerPort int    `yaml:"containerPort"`
			} `yaml:"ports"`
			StartupProbe   *probe `yaml:"startupProbe"`
			LivenessProbe  *probe `yaml:"livenessProbe"`
			ReadinessProbe *probe `yaml:"readinessProbe"`
		} `yaml:"containers"`
		Volumes []struct {
			HostPath *struct {
				Path string `yaml:"path"`
			} `yaml:"hostPath"`
		} `yaml:"volumes"`
	} `yaml:"spec"`
}

type probe struct {
	HTTPGet *struct {
		Host   string    `yaml:"host"`
		Port   yaml.Node `yaml:"port"`
		Path   string    `yaml:"path"`
		Scheme string    `yaml:"scheme"`
	} `yaml:"httpGet"`
}

// defaultProbes are kubeadm's probes, used when a manifest has none.
var defaultProbes = map[string]Probe{
	"etcd":                    {Scheme: "HTTP", Host: "127.0.0.1", Port: 2381, Path: "/livez"},
	"kube-apiserver":          {Scheme: "HTTPS", Host: "127.0.0.1", Port: 6443, Path: "/livez"},
	"kube-controller-manager": {Scheme: "HTTPS", Host: "127.0.0.1", Port: 10257, Path: "/healthz"},
	"kube-scheduler":          {Scheme: "HTTPS", Host: "127.0.0.1", Port: 10259, Path: "/livez"},
}

// ParseManifest reads a static pod manifest; errors name the file. A
// manifest without an httpGet startupProbe or livenessProbe (and not one of
// kubeadm's, which have defaults) has no Probe. When only the probe is
// unusable (a port that is neither a number nor a named port, a scheme
// other than HTTP(S)), the manifest is returned along with the error: what
// the pod uses is still known, how to judge its health is not.
func ParseManifest(path string, data []byte) (*Manifest, error) {
	var pod podSpec
	if err := yaml.Unmarshal(data, &pod); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", path, err)
	}
	if pod.Kind != "Pod" {
		return nil, fmt.Errorf("manifest %s: kind is %q, not Pod", path, pod.Kind)
	}
	m := &Manifest{Path: path, Component: pod.Metadata.Labels["component"]}
	if m.Component == "" {
		m.Component = pod.Metadata.Name
	}
	if m.Component == "" {
		return nil, fmt.Errorf("manifest %s: no component label and no name", path)
	}
	if len(pod.Spec.Containers) == 0 {
		return nil, fmt.Errorf("manifest %s: no containers", path)
	}
	c := pod.Spec.Containers[0]
	m.Args = append(append([]string{}, c.Command...), c.Args...)
	m.Image = c.Image
	for _, v := range pod.Spec.Volumes {
		if v.HostPath != nil && v.HostPath.Path != "" {
			m.HostPaths = append(m.HostPaths, filepath.Clean(v.HostPath.Path))
		}
	}
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	var err error
	switch {
	case c.StartupProbe != nil && c.StartupProbe.HTTPGet != nil:
		m.Probe, err = probeFrom(c.StartupProbe, ports)
	case c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil:
		m.Probe, err = probeFrom(c.LivenessProbe, ports)
	default:
		m.Probe = defaultProbes[m.Component] // the zero Probe: none
	}
	if err != nil {
		m.Probe = Probe{}
		return m, fmt.Errorf("manifest %s: %w", path, err)
	}
	m.ServingCert, m.ServingAddr = servingCert(m)
	return m, nil
}

func probeFrom(p *probe, ports map[string]int) (Probe, error) {
	g := p.HTTPGet
	pr := Probe{Scheme: strings.ToUpper(g.Scheme), Host: g.Host, Path: g.Path}
	if pr.Scheme == "" {
		pr.Scheme = "HTTP"
	}
	if pr.Scheme != "HTTP" && pr.Scheme != "HTTPS" {
		return pr, fmt.Errorf("probe scheme %q is not HTTP or HTTPS", g.Scheme)
	}
	if pr.Host == "" {
		// hostNetwork pods are probed on the node's address; loopback
		// reaches every control-plane component kubeadm makes.
		pr.Host = "127.0.0.1"
	}
	if pr.Path == "" {
		pr.Path = "/"
	}
	port, err := strconv.Atoi(g.Port.Value)
	if err != nil { // a named container port (kubeadm: probe-port)
		named, ok := ports[g.Port.Value]
		if !ok {
			return pr, fmt.Errorf("probe port %q is neither a number nor a named container port", g.Port.Value)
		}
		port = named
	}
	if port <= 0 || port > 65535 {
		return pr, fmt.Errorf("probe port %q is out of range", g.Port.Value)
	}
	pr.Port = port
	return pr, nil
}

// Flag returns the value of --name (as --name=value or --name value).
func (m *Manifest) Flag(name string) string {
	for i, a := range m.Args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
		if a == "--"+name && i+1 < len(m.Args) {
			return m.Args[i+1]
		}
	}
	return ""
}

// servingCert finds the certificate a component serves and where, so a
// restart can be confirmed by the serial on the wire.
func servingCert(m *Manifest) (cert, addr string) {
	if !m.HasProbe() {
		// The serial is checked once the probe answers; with no probe
		// there is nothing to check it after.
		return "", ""
	}
	if c := m.Flag("tls-cert-file"); c != "" && m.Probe.Scheme == "HTTPS" {
		return c, net.JoinHostPort(m.Probe.Host, strconv.Itoa(m.Probe.Port))
	}
	if c := m.Flag("cert-file"); c != "" {
		for _, u := range strings.Split(m.Flag("listen-client-urls"), ",") {
			pu, err := url.Parse(strings.TrimSpace(u))
			if err == nil && pu.Scheme == "https" && pu.Host != "" {
				return c, pu.Host
			}
		}
	}
	return "", ""
}

// Problem is a manifest file that cannot be used: unreadable, not a pod,
// or with a health check pkirenewd cannot perform. It matters only when its
// component must be restarted (Decide).
type Problem struct {
	Path string
	// Component is who the file is for, as far as can be told: its
	// component label or pod name, else kubeadm's component when the file
	// has one of kubeadm's names; "" when unknown.
	Component string
	// Partial is what could be read of the manifest when only its probe
	// is unusable (what the pod uses is then known); nil otherwise.
	Partial *Manifest
	// Err names the file.
	Err error
}

func (p Problem) Error() string { return p.Err.Error() }

// Manifests is what a manifests directory holds: the usable manifests,
// sorted by component, and the files that are not.
type Manifests struct {
	Usable   []*Manifest
	Problems []Problem
}

// LoadManifests reads every *.yaml/*.yml/*.json manifest in dir. A file
// that cannot be used is a Problem, never an error for the whole load:
// the kubelet runs whatever else is there, and a kube-vip or haproxy pod
// beside kubeadm's must not stop a renewal that does not concern it. Only
// an unreadable directory is an error.
func LoadManifests(dir string) (Manifests, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return Manifests{}, fmt.Errorf("manifests: %w", err)
	}
	var out Manifests
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		m, prob := loadManifest(p)
		if prob != nil {
			out.Problems = append(out.Problems, *prob)
			continue
		}
		out.Usable = append(out.Usable, m)
	}
	sort.Slice(out.Usable, func(i, j int) bool { return out.Usable[i].Component < out.Usable[j].Component })
	return out, nil
}

func loadManifest(path string) (*Manifest, *Problem) {
	data, err := fsread.Regular(path, true)
	if err != nil {
		return nil, &Problem{Path: path, Component: kubeadmFileComponent(path), Err: fmt.Errorf("manifest %s: %w", path, err)}
	}
	m, err := ParseManifest(path, data)
	if err == nil {
		return m, nil
	}
	p := &Problem{Path: path, Component: kubeadmFileComponent(path), Partial: m, Err: err}
	if m != nil {
		p.Component = m.Component
	} else if name := podName(data); name != "" {
		p.Component = name
	}
	return nil, p
}

// podName is the component label or pod name of a document that is not
// a usable manifest, when that much can be read.
func podName(data []byte) string {
	var pod podSpec
	if yaml.Unmarshal(data, &pod) != nil {
		return ""
	}
	if c := pod.Metadata.Labels["component"]; c != "" {
		return c
	}
	return pod.Metadata.Name
}

// kubeadmFileComponent is the kubeadm component whose manifest has this
// file name ("etcd.yaml" -> "etcd"), or "".
func kubeadmFileComponent(path string) string {
	base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	if isKubeadmComponent(base) {
		return base
	}
	return ""
}

func isKubeadmComponent(c string) bool {
	for _, o := range restartOrder {
		if o == c {
			return true
		}
	}
	return false
}

// restartOrder is the order kubeadm's components come back in: etcd first
// (the apiserver needs it), then the apiserver (the others need it).
var restartOrder = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}

// Order sorts components for a rolling restart: kubeadm's four in their
// fixed order, anything else after them by name.
func Order(components []string) []string {
	out := append([]string{}, components...)
	sort.SliceStable(out, func(i, j int) bool { return before(out[i], out[j]) })
	return out
}

// before is the restart order of two components.
func before(a, b string) bool {
	rank := func(c string) int {
		for i, o := range restartOrder {
			if o == c {
				return i
			}
		}
		return len(restartOrder)
	}
	if ra, rb := rank(a), rank(b); ra != rb {
		return ra < rb
	}
	return a < b
}

// Affected returns, in restart order, the components that use any of the
// changed files: a changed file named in a command flag, or mounted into the
// pod (as a file, or through its directory).
func Affected(manifests []*Manifest, changed []string) []string {
	var out []string
	for _, m := range manifests {
		if uses(m, changed) {
			out = append(out, m.Component)
		}
	}
	return Order(out)
}

// UsesFile reports whether the pod of m reads file f: named in a command
// flag, or mounted (the file, or the directory holding it).
func UsesFile(m *Manifest, f string) bool { return uses(m, []string{f}) }

func uses(m *Manifest, changed []string) bool {
	for _, f := range changed {
		f = filepath.Clean(f)
		for _, a := range m.Args {
			if _, v, ok := strings.Cut(a, "="); ok {
				a = v
			}
			for _, part := range strings.Split(a, ",") {
				if part != "" && filepath.Clean(part) == f {
					return true
				}
			}
		}
		// A mount of the file itself or of the directory holding it; a
		// mount of an ancestor (the apiserver's /etc/kubernetes/pki holds
		// etcd/) does not count, or every pod would use every file.
		for _, h := range m.HostPaths {
			if f == h || filepath.Dir(f) == h {
				return true
			}
		}
	}
	return false
}

// Decision is which static pods a roll restarts and what stands in the way.
type Decision struct {
	// Restart are the manifests to roll, in restart order.
	Restart []*Manifest
	// Blocked are components that must be restarted but whose manifest
	// cannot be used, in restart order: they cannot be restarted safely,
	// and each is an error naming its file.
	Blocked []Problem
	// Missing are components asked for that have no manifest at all (the
	// pod was removed: nothing left to restart).
	Missing []string
	// Warnings are the unusable manifests of components nobody needs
	// restarted: worth a word, never a reason to stop.
	Warnings []Problem
}

// MustRestart returns, in restart order, the components a change of the
// files requires restarting: those whose manifest uses one of them, and
// those whose manifest cannot be used and either uses one as far as it
// could be read, or is one of kubeadm's four and could not be read far
// enough to tell (they use renewed files in every kubeadm layout).
func (ms Manifests) MustRestart(changed []string) []string {
	if len(changed) == 0 {
		return nil
	}
	out := append(Affected(ms.Usable, changed), ms.problemsUsing(changed)...)
	return Order(dedup(out))
}

// problemsUsing are the components with an unusable manifest that either
// use a changed file as far as it could be read, or are one of kubeadm's
// four and could not be read far enough to tell.
func (ms Manifests) problemsUsing(changed []string) []string {
	var out []string
	for _, p := range ms.Problems {
		switch {
		case p.Component == "":
		case p.Partial != nil && uses(p.Partial, changed):
			out = append(out, p.Component)
		case p.Partial == nil && isKubeadmComponent(p.Component):
			out = append(out, p.Component)
		}
	}
	return out
}

// Select decides the restart of the named components: a usable manifest
// is restarted, an unusable one blocks only its own component, and the
// problems of components not named are warnings.
func (ms Manifests) Select(components []string) Decision {
	var d Decision
	want := map[string]bool{}
	for _, c := range components {
		want[c] = true
	}
	blocked := map[string]bool{}
	for _, p := range ms.Problems {
		if p.Component != "" && want[p.Component] {
			d.Blocked = append(d.Blocked, p)
			blocked[p.Component] = true
			continue
		}
		d.Warnings = append(d.Warnings, p)
	}
	for _, c := range Order(dedup(components)) {
		m := ms.find(c)
		switch {
		case blocked[c]:
			// Two files claim it and one is unusable: which one the
			// kubelet runs cannot be told, so neither is used.
		case m != nil:
			d.Restart = append(d.Restart, m)
		default:
			d.Missing = append(d.Missing, c)
		}
	}
	sort.SliceStable(d.Blocked, func(i, j int) bool { return before(d.Blocked[i].Component, d.Blocked[j].Component) })
	return d
}

// ForChange is Select of MustRestart: the decision after a renewal.
func (ms Manifests) ForChange(changed []string) Decision {
	return ms.Select(ms.MustRestart(changed))
}

// Kubeadm lists kubeadm's components that have a manifest here, usable or
// not, in restart order: what `restart` with no names means.
func (ms Manifests) Kubeadm() []string {
	var out []string
	for _, m := range ms.Usable {
		if isKubeadmComponent(m.Component) {
			out = append(out, m.Component)
		}
	}
	for _, p := range ms.Problems {
		if isKubeadmComponent(p.Component) {
			out = append(out, p.Component)
		}
	}
	return Order(dedup(out))
}

func (ms Manifests) find(component string) *Manifest {
	for _, m := range ms.Usable {
		if m.Component == component {
			return m
		}
	}
	return nil
}

func dedup(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// WarnProblems logs, once each, the unusable manifests that stop nothing.
func WarnProblems(log logrus.FieldLogger, problems []Problem) {
	for _, p := range problems {
		f := logrus.Fields{"MANIFEST": p.Path}
		if p.Component != "" {
			f["COMPONENT"] = p.Component
		}
		log.WithFields(f).WithError(p.Err).Warnf("ignoring static pod manifest %s: it cannot be used, and its pod needs no restart", p.Path)
	}
}

// BlockedError is the error for components that must be restarted but
// whose manifest cannot be used; nil when there are none.
func BlockedError(blocked []Problem) error {
	var errs []error
	for _, p := range blocked {
		errs = append(errs, fmt.Errorf("%s needs a restart but cannot be restarted safely: %w", p.Component, p.Err))
	}
	return errors.Join(errs...)
}
