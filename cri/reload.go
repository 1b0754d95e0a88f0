package cri

import (
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Restart policies: which components a renewal restarts.
const (
	// PolicyNeeded restarts only what cannot pick up its renewed files
	// while it runs (the default).
	PolicyNeeded = "needed"
	// PolicyAll restarts every static pod that uses a renewed file.
	PolicyAll = "all"
)

// Reload is one way a kubeadm component re-reads credential files while it
// runs, so that renewing them needs no restart. The table below is the one
// place this knowledge lives: the restart plan of a renewal and the
// observation of stale components both read it.
type Reload struct {
	Component string
	// Flags name the files re-read.
	Flags []string
	// Within is how long after a change the component may go on using
	// the old file: 0 when it reads the files at every TLS handshake.
	Within time.Duration
	// Served means the certificate is presented on a listener of the
	// component, where the serial on the wire proves the reload.
	Served bool
	// Source is where the component's code shows it (versions v1.34 to
	// v1.37, etcd 3.6 and 3.7), and what the e2e measured.
	Source string
}

// reloads is the reload table. Everything else a component reads at start
// (kubeconfigs with embedded credentials above all) needs a restart.
var reloads = []Reload{
	{Component: "kube-apiserver", Flags: []string{"tls-cert-file", "tls-private-key-file"}, Within: time.Minute, Served: true,
		Source: "k8s.io/apiserver pkg/server/options/serving.go: dynamiccertificates.NewDynamicServingContentFromFiles, re-read on fsnotify events and every minute"},
	{Component: "kube-apiserver", Flags: []string{"proxy-client-cert-file", "proxy-client-key-file"}, Within: time.Minute,
		Source: "k8s.io/kube-aggregator pkg/apiserver/apiserver.go: NewDynamicServingContentFromFiles(\"aggregator-proxy-cert\")"},
	{Component: "kube-apiserver", Flags: []string{"kubelet-client-certificate", "kubelet-client-key"}, Within: 5 * time.Minute,
		Source: "pkg/kubelet/client/kubelet_client.go ReloadTLSFiles: client-go transport/cert_rotation.go re-reads the files every 5 minutes (CertCallbackRefreshDuration), then closes its connections"},
	{Component: "kube-apiserver", Flags: []string{"etcd-certfile", "etcd-keyfile"},
		Source: "go.etcd.io/etcd/client/pkg transport/listener.go: GetClientCertificate reads both files at every handshake (tlsutil.NewCert); etcd checks client certificates only at handshake"},
	{Component: "kube-apiserver", Flags: []string{"client-ca-file"}, Within: time.Minute,
		Source: "pkg/kubeapiserver/options/authentication.go: dynamiccertificates.NewDynamicCAContentFromFile(\"client-ca-bundle\"), re-read on fsnotify events and every minute; a same-key renewed CA verifies the same client certificates meanwhile"},
	{Component: "kube-apiserver", Flags: []string{"requestheader-client-ca-file"}, Within: time.Minute,
		Source: "k8s.io/apiserver pkg/server/options/authentication.go: NewDynamicCAContentFromFile(\"request-header\"), re-read like client-ca-file"},
	{Component: "etcd", Flags: []string{"cert-file", "key-file"}, Served: true,
		Source: "go.etcd.io/etcd/client/pkg transport/listener.go: GetCertificate reads both files at every handshake"},
	{Component: "etcd", Flags: []string{"peer-cert-file", "peer-key-file"}, Served: true,
		Source: "go.etcd.io/etcd/client/pkg transport/listener.go: GetCertificate and GetClientCertificate read both files at every handshake"},
}

// Reloads returns the reload table, for documentation and tests.
func Reloads() []Reload { return append([]Reload(nil), reloads...) }

// reloadOf finds the table row of component's flag.
func reloadOf(component, flag string) (Reload, bool) {
	for _, r := range reloads {
		if r.Component != component {
			continue
		}
		for _, f := range r.Flags {
			if f == flag {
				return r, true
			}
		}
	}
	return Reload{}, false
}

// Pickup is how a running component takes up a changed file.
type Pickup struct {
	// Reads is false when the component does not read the file at all.
	Reads bool
	// Reload is true when every way it reads the file is re-read at run
	// time (within Within); false means only a restart makes it use it.
	Reload bool
	Within time.Duration
	// Served: the certificate (of this file, or of the key in this
	// file) is presented on a listener, where its reload is seen.
	Served bool
	// Addr is where a served certificate file can be seen (host:port):
	// the serial there proves the reload. Empty for keys.
	Addr string
}

// HowPickedUp tells how m's component picks up a change of file f.
// kubeadm's components read files only through their flags (their
// directory mounts only make them reachable); any other pod that mounts the
// file or its directory reads it at start, as far as anyone can tell.
func HowPickedUp(m *Manifest, f string) Pickup {
	f = filepath.Clean(f)
	flags := flagsNaming(m, f)
	if len(flags) == 0 {
		if !isKubeadmComponent(m.Component) && uses(m, []string{f}) {
			return Pickup{Reads: true}
		}
		return Pickup{}
	}
	p := Pickup{Reads: true, Reload: true}
	for _, fl := range flags {
		r, ok := reloadOf(m.Component, fl)
		if !ok {
			return Pickup{Reads: true}
		}
		if r.Within > p.Within {
			p.Within = r.Within
		}
		if r.Served {
			p.Served = true
			if p.Addr == "" {
				p.Addr = servedAt(m, fl)
			}
		}
	}
	return p
}

// flagsNaming lists the flags (without "--") whose value names f, as a
// whole or as one item of a comma-separated list. An argument that is not
// a flag naming f (a positional path) is reported as "".
func flagsNaming(m *Manifest, f string) []string {
	var out []string
	for i, a := range m.Args {
		name, v, isFlag := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "--") {
			isFlag = false
			v = a
			name = ""
			if i > 0 && strings.HasPrefix(m.Args[i-1], "--") && !strings.Contains(m.Args[i-1], "=") {
				name = strings.TrimPrefix(m.Args[i-1], "--")
			}
		} else if !isFlag {
			continue // "--flag value": the value is the next argument
		}
		for _, part := range strings.Split(v, ",") {
			if part != "" && filepath.Clean(part) == f {
				out = append(out, name)
			}
		}
	}
	return out
}

// servedAt is where the certificate of a serving flag can be seen: the
// apiserver's --tls-cert-file on its HTTPS probe's port, etcd's on its
// client and peer URLs (loopback preferred).
func servedAt(m *Manifest, flag string) string {
	// Only certificate flags: the serial is read from the certificate
	// file, and the key changes with it.
	switch flag {
	case "tls-cert-file":
		if m.Probe.Scheme == "HTTPS" && m.Probe.Port != 0 {
			return net.JoinHostPort(probeHost(m.Probe.Host), strconv.Itoa(m.Probe.Port))
		}
	case "cert-file":
		return urlHost(m.Flag("listen-client-urls"))
	case "peer-cert-file":
		return urlHost(m.Flag("listen-peer-urls"))
	}
	return ""
}

func probeHost(h string) string {
	if h == "" {
		return "127.0.0.1"
	}
	return h
}

// urlHost picks the loopback https URL of a comma-separated list, else the
// first https one.
func urlHost(list string) string {
	first := ""
	for _, u := range strings.Split(list, ",") {
		pu, err := url.Parse(strings.TrimSpace(u))
		if err != nil || pu.Scheme != "https" || pu.Host == "" {
			continue
		}
		if ip := net.ParseIP(pu.Hostname()); ip != nil && ip.IsLoopback() {
			return pu.Host
		}
		if first == "" {
			first = pu.Host
		}
	}
	return first
}

// Change is a renewed file and when the certificate it replaced ended.
type Change struct {
	Path        string
	OldNotAfter time.Time
}

// ReloadCheck is a component that takes up a renewed certificate by
// itself, and where the certificate it serves proves it did.
type ReloadCheck struct {
	Component, File, Addr string
	// Within is how long the component may take.
	Within time.Duration
}

// RestartPlan is what a renewal needs done to the running static pods.
type RestartPlan struct {
	// Restart are the components to restart, in restart order.
	Restart []string
	// Reasons say, per component restarted, why it cannot reload.
	Reasons map[string]string
	// Checks are the reloads to watch (components not restarted).
	Checks []ReloadCheck
}

// reloadMargin is what a reload must have to spare before the old
// certificate ends: a component that may use it until then is restarted.
const reloadMargin = time.Minute

// PlanRestarts decides what a renewal of changes restarts. Under PolicyAll
// that is every pod that uses a changed file (MustRestart). Under
// PolicyNeeded a component is restarted only for a file it cannot reload,
// or can reload only after the old certificate has ended (day 366: the
// apiserver re-reads its kubelet client certificate every 5 minutes); the
// served reloads are returned to be verified. Unusable manifests are
// judged as MustRestart does.
func (ms Manifests) PlanRestarts(changes []Change, policy string, now time.Time) RestartPlan {
	paths := make([]string, 0, len(changes))
	for _, c := range changes {
		paths = append(paths, c.Path)
	}
	if policy == PolicyAll {
		return RestartPlan{Restart: ms.MustRestart(paths)}
	}
	if len(changes) == 0 {
		return RestartPlan{}
	}
	plan := RestartPlan{Reasons: map[string]string{}}
	var restart []string
	var checks []ReloadCheck
	judgeAll := func(m *Manifest) {
		for _, c := range changes {
			why, check := judge(m, c, now)
			switch {
			case why != "":
				restart = append(restart, m.Component)
				if plan.Reasons[m.Component] == "" {
					plan.Reasons[m.Component] = why
				}
			case check != nil:
				checks = append(checks, *check)
			}
		}
	}
	for _, m := range ms.Usable {
		judgeAll(m)
	}
	for _, p := range ms.Problems {
		switch {
		case p.Component == "":
		case p.Partial != nil:
			judgeAll(&Manifest{Path: p.Path, Component: p.Component, Args: p.Partial.Args, HostPaths: p.Partial.HostPaths})
		case isKubeadmComponent(p.Component):
			restart = append(restart, p.Component)
			plan.Reasons[p.Component] = "its manifest cannot be read far enough to tell what it reloads"
		}
	}
	plan.Restart = Order(dedup(restart))
	for _, c := range checks {
		if !contains(plan.Restart, c.Component) {
			plan.Checks = append(plan.Checks, c)
		}
	}
	return plan
}

// judge is one component and one changed file: a reason to restart, a
// reload to verify, or neither.
func judge(m *Manifest, c Change, now time.Time) (string, *ReloadCheck) {
	p := HowPickedUp(m, c.Path)
	switch {
	case !p.Reads:
		return "", nil
	case !p.Reload:
		return "it reads " + c.Path + " only at start", nil
	case !p.Served && p.Within > 0 && !c.OldNotAfter.IsZero() && c.OldNotAfter.Sub(now) < p.Within+reloadMargin:
		// Unseen, and possibly used after it ended. (A served
		// certificate is watched instead: a late reload there is seen
		// and then restarted.)
		return "it re-reads " + c.Path + " only within " + p.Within.String() + " and the old certificate ends before that", nil
	case p.Addr != "":
		return "", &ReloadCheck{Component: m.Component, File: c.Path, Addr: p.Addr, Within: p.Within}
	}
	return "", nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
