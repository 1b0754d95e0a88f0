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

	"gopkg.in/yaml.v3"
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
	Probe     Probe
	// ServingCert is the certificate file the component serves
	// (--tls-cert-file, or etcd's --cert-file); empty when it serves a
	// self-signed one.
	ServingCert string
	// ServingAddr is where ServingCert can be seen (host:port).
	ServingAddr string
}

type podSpec struct {
	Metadata struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Kind string `yaml:"kind"`
	Spec struct {
		Containers []struct {
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

// ParseManifest reads a static pod manifest; errors name the file.
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
		p, ok := defaultProbes[m.Component]
		if !ok {
			return nil, fmt.Errorf("manifest %s: no startupProbe or livenessProbe with httpGet, and no default for %q", path, m.Component)
		}
		m.Probe = p
	}
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", path, err)
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

// LoadManifests reads every *.yaml/*.yml/*.json manifest in dir.
func LoadManifests(dir string) ([]*Manifest, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("manifests: %w", err)
	}
	var out []*Manifest
	var errs []error
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("manifest %s: %w", p, err))
			continue
		}
		m, err := ParseManifest(p, data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, m)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Component < out[j].Component })
	return out, nil
}

// restartOrder is the order kubeadm's components come back in: etcd first
// (the apiserver needs it), then the apiserver (the others need it).
var restartOrder = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}

// Order sorts components for a rolling restart: kubeadm's four in their
// fixed order, anything else after them by name.
func Order(components []string) []string {
	rank := func(c string) int {
		for i, o := range restartOrder {
			if o == c {
				return i
			}
		}
		return len(restartOrder)
	}
	out := append([]string{}, components...)
	sort.SliceStable(out, func(i, j int) bool {
		ri, rj := rank(out[i]), rank(out[j])
		if ri != rj {
			return ri < rj
		}
		return out[i] < out[j]
	})
	return out
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
