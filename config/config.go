// Package config holds pkirenewd's settings: the defaults that fit a stock
// kubeadm control-plane node, the YAML file in /etc/pkirenewd/config.yaml and
// the command-line flags that override it.
//
// The file is parsed strictly: an unknown key or a bad value is an error that
// names the key and its line, because a typo in a conffile that is silently
// ignored is how a node reaches day 366 with a "configured" renewer.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// DefaultPath is where packages install the conffile.
const DefaultPath = "/etc/pkirenewd/config.yaml"

// Day is the unit users think in for certificate lifetimes.
const Day = 24 * time.Hour

// Config is the whole set of settings. Field names match the YAML keys.
type Config struct {
	PKIDir        string
	KubeconfigDir string
	ManifestsDir  string
	StateDir      string
	// KubeadmConfig is a kubeadm ClusterConfiguration (or kubeadm-config
	// ConfigMap) file to take encryptionAlgorithm and
	// certificateValidityPeriod from. Empty: use the copy cached in StateDir.
	KubeadmConfig string
	RenewBefore   time.Duration
	// Validity is used when the cluster's configuration does not say.
	Validity     time.Duration
	CAWarnBefore time.Duration
	// CARenewal is "auto" (the daemon renews a CA, with its own key,
	// CARenewBefore ahead of its end) or "manual" (only `renew ca`).
	CARenewal string
	// CARenewBefore is how long before its end a CA is renewed.
	CARenewBefore time.Duration
	// CAValidity is a renewed CA's lifetime; zero keeps its own.
	CAValidity time.Duration
	// NodeName seeds the per-node jitter; empty means the host name.
	NodeName string
	// CRIEndpoint is the container runtime's socket; empty means
	// /etc/crictl.yaml, CONTAINER_RUNTIME_ENDPOINT, then the defaults.
	CRIEndpoint string
	// RestartTimeout bounds one component's restart, stop to healthy.
	RestartTimeout time.Duration
	// RestartRunningFor is how long a restarted static pod without an
	// HTTP probe (kube-vip, keepalived) must run without a restart to be
	// healthy.
	RestartRunningFor time.Duration
	// RestartPolicy is "needed" (restart only what cannot reload its
	// renewed files) or "all" (every static pod that uses one).
	RestartPolicy string
	// KubeletConfig is the kubelet's configuration file; its healthz must
	// answer before any static pod is stopped. Absent file: not checked.
	KubeletConfig string
	// KubeletServingCert is what pkirenewd does with the kubelet's
	// self-signed serving certificate: "renew" or "monitor".
	KubeletServingCert string
	// KubeletCertDir is the kubelet's --cert-dir; empty: the running
	// kubelet's, else /var/lib/kubelet/pki.
	KubeletCertDir string
	// LastResortBefore: when restarts are impossible (no runtime, kubelet
	// down, manifests unreadable), a due renewal still goes ahead, with the
	// restarts owed, once a certificate has less than this left.
	LastResortBefore time.Duration
	// RestartComponents makes the daemon restart what uses renewed files.
	RestartComponents bool
	// MetricsAddress is where `run` serves Prometheus metrics; empty: off.
	MetricsAddress string
	// KubeletRestartCommand restarts the kubelet after its embedded
	// kubelet.conf credentials were renewed; empty: systemd's D-Bus API
	// (kubelet.service) when systemd runs.
	KubeletRestartCommand string
	// Lease ("namespace/name") serializes restarts across control-plane
	// nodes; empty: no coordination (a node alone, or restarts by hand).
	Lease string
	// LeaseDuration: how long a crashed holder blocks the other nodes.
	LeaseDuration time.Duration
	// CoordinationTimeout bounds a wait for the lease or for healthy
	// etcd peers; the restarts are then retried later.
	CoordinationTimeout time.Duration
	// EtcdQuorumGuard restarts etcd only when every other member is healthy.
	EtcdQuorumGuard bool
	// AdminKubeconfigCopy is the usual copy of admin.conf; when it holds
	// the same credentials it is updated with admin.conf. Empty: none.
	AdminKubeconfigCopy string
	// APIIdentity is whom pkirenewd talks to the API as (the Lease and
	// Events): "own" (a client certificate it issues itself, bound by RBAC
	// to that Lease and Events) or "admin" (admin.conf: cluster-admin).
	APIIdentity string
	// APIIdentityBootstrap lets pkirenewd create its Role and RoleBinding
	// once with admin.conf when they are missing; off, an operator applies
	// them (GitOps) and check says what is missing.
	APIIdentityBootstrap bool
	// AdminKubeconfigCopies are more copies (or kubeconfigs merged from
	// admin.conf), updated the same way. AdminKubeconfigCopy stays a key
	// of its own so that existing config files and flags keep working.
	AdminKubeconfigCopies []string

	// PKIDirSet records that the user chose PKIDir explicitly (file or
	// flag); otherwise the kubeadm configuration's certificatesDir, then
	// the apiserver's manifest, say where the PKI is.
	PKIDirSet bool
	// ValiditySet records that the user chose Validity explicitly (file or
	// flag); an explicit choice wins over the kubeadm configuration.
	ValiditySet bool
}

// caRenewal values.
const (
	CARenewalAuto   = "auto"
	CARenewalManual = "manual"
)

// apiIdentity values.
const (
	APIIdentityOwn   = "own"
	APIIdentityAdmin = "admin"
)

// kubeletServingCert values.
const (
	KubeletServingRenew   = "renew"
	KubeletServingMonitor = "monitor"
)

// MinLeaseDuration is the shortest leaseDuration accepted.
const MinLeaseDuration = 15 * time.Second

// AdminCopies is every configured copy of admin.conf, each once, in the
// order given.
func (c Config) AdminCopies() []string {
	var out []string
	for _, p := range append([]string{c.AdminKubeconfigCopy}, c.AdminKubeconfigCopies...) {
		if p != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// Defaults returns the settings for a stock kubeadm node.
func Defaults() Config {
	return Config{
		PKIDir:        "/etc/kubernetes/pki",
		KubeconfigDir: "/etc/kubernetes",
		ManifestsDir:  "/etc/kubernetes/manifests",
		StateDir:      "/var/lib/pkirenewd",
		RenewBefore:   90 * Day,
		Validity:      365 * Day,
		CAWarnBefore:  180 * Day,
		CARenewal:     CARenewalAuto,
		CARenewBefore: 365 * Day,
		// The kubelet's CrashLoopBackOff can hold a recreated container
		// back for up to 5 minutes.
		RestartTimeout:    6 * time.Minute,
		RestartRunningFor: 10 * time.Second,
		// etcd and the apiserver re-read their certificates: restarting
		// them costs API downtime and, for etcd, risks quorum.
		RestartPolicy: "needed",
		KubeletConfig: "/var/lib/kubelet/config.yaml",
		// Nobody else ever renews it (the kubelet only makes one when
		// there is none): see the README's "The kubelet's certificates".
		KubeletServingCert: KubeletServingRenew,
		// Long enough to be noticed and fixed by a human (the journal and
		// check say it at crit), short enough to leave two weeks for the
		// restarts after the files were renewed.
		LastResortBefore:  14 * Day,
		RestartComponents: true,
		MetricsAddress:    "127.0.0.1:9795",
		Lease:             "kube-system/pkirenewd",
		// Longer than an apiserver restart (its own node's apiserver
		// carries the lease's renewals), short enough that a crashed
		// holder blocks the other nodes briefly.
		LeaseDuration:       2 * time.Minute,
		CoordinationTimeout: 10 * time.Minute,
		EtcdQuorumGuard:     true,
		// admin.conf is cluster-admin (kubeadm >= v1.29): a daemon on
		// every control-plane node that needs four verbs should not hold
		// it for them.
		APIIdentity:          APIIdentityOwn,
		APIIdentityBootstrap: true,
		AdminKubeconfigCopy:  "/root/.kube/config",
	}
}

// Key describes one setting: its YAML key, its flag and how to set it from a
// string. Flags and the file share this table so they cannot drift apart.
type Key struct {
	Name  string // YAML key
	Flag  string // kebab-case flag
	Usage string
	// Type is what the value is, for the flag's help: bool, duration,
	// path, paths (a list, repeatable as a flag) or string.
	Type string
	set  func(c *Config, v string) error
	get  func(c *Config) string
	// setList, for keys that hold a list, takes a YAML sequence from the
	// file; set then takes a comma-separated list (the flag's form).
	setList func(c *Config, vs []string) error
}

// Keys lists every setting in the order they are documented.
func Keys() []Key {
	return []Key{
		explicit(pathKey("pkiDir", "pki-dir", "kubeadm certificatesDir (default: the kubeadm configuration's certificatesDir, else the kube-apiserver manifest's, else /etc/kubernetes/pki)", func(c *Config) *string { return &c.PKIDir }), func(c *Config) { c.PKIDirSet = true }),
		pathKey("kubeconfigDir", "kubeconfig-dir", "directory holding admin.conf, controller-manager.conf, ...", func(c *Config) *string { return &c.KubeconfigDir }),
		pathKey("manifestsDir", "manifests-dir", "static pod manifests directory", func(c *Config) *string { return &c.ManifestsDir }),
		pathKey("stateDir", "state-dir", "backups, transaction journal and cached kubeadm configuration", func(c *Config) *string { return &c.StateDir }),
		pathKey("kubeadmConfig", "kubeadm-config", "kubeadm ClusterConfiguration file to take encryptionAlgorithm and certificateValidityPeriod from", func(c *Config) *string { return &c.KubeadmConfig }),
		durKey("renewBefore", "renew-before", "renew this long before expiry (short-lived certificates: at 2/3 of their lifetime)", func(c *Config) *time.Duration { return &c.RenewBefore }, nil),
		durKey("validity", "validity", "validity of renewed certificates when the kubeadm configuration does not set certificateValidityPeriod", func(c *Config) *time.Duration { return &c.Validity }, func(c *Config) { c.ValiditySet = true }),
		durKey("caWarnBefore", "ca-warn-before", "warn this long before a CA expires", func(c *Config) *time.Duration { return &c.CAWarnBefore }, nil),
		{
			Name: "caRenewal", Flag: "ca-renewal", Usage: "auto: renew each CA (ca, etcd-ca, front-proxy-ca) with its own key caRenewBefore ahead of its end, and bring its holders along; manual: only `pkirenewd renew ca` does",
			set: func(c *Config, v string) error {
				if v != CARenewalAuto && v != CARenewalManual {
					return fmt.Errorf("%q is not auto or manual", v)
				}
				c.CARenewal = v
				return nil
			},
			get: func(c *Config) string { return c.CARenewal },
		},
		durKey("caRenewBefore", "ca-renew-before", "renew a CA this long before it ends (a CA of a shorter life: at 2/3 of it)", func(c *Config) *time.Duration { return &c.CARenewBefore }, nil),
		{
			Name: "caValidity", Flag: "ca-validity", Usage: "lifetime of a renewed CA certificate (0: the CA's own lifetime)", Type: "duration",
			set: func(c *Config, v string) error {
				d, err := ParseDuration(v)
				if err != nil {
					return err
				}
				if d < 0 {
					return fmt.Errorf("%q must not be negative", v)
				}
				c.CAValidity = d
				return nil
			},
			get: func(c *Config) string { return FormatDuration(c.CAValidity) },
		},
		{
			Name: "nodeName", Flag: "node-name", Usage: "node name that seeds the renewal jitter (default: host name)",
			set: func(c *Config, v string) error { c.NodeName = v; return nil },
			get: func(c *Config) string { return c.NodeName },
		},
		{
			Name: "criEndpoint", Flag: "cri-endpoint", Usage: "container runtime endpoint (default: /etc/crictl.yaml, CONTAINER_RUNTIME_ENDPOINT, then containerd's, CRI-O's and cri-dockerd's sockets)",
			set: func(c *Config, v string) error {
				if v != "" && !strings.HasPrefix(v, "unix://") && !filepath.IsAbs(v) {
					return fmt.Errorf("%q is not a unix socket (unix:///path or /path)", v)
				}
				c.CRIEndpoint = v
				return nil
			},
			get: func(c *Config) string { return c.CRIEndpoint },
		},
		durKey("restartTimeout", "restart-timeout", "how long one component may take from StopPodSandbox to healthy", func(c *Config) *time.Duration { return &c.RestartTimeout }, nil),
		pathKey("kubeletConfig", "kubelet-config", "the kubelet's configuration file: its healthz address must answer before any static pod is stopped (absent: the running kubelet's --config, else the kubelet's default 127.0.0.1:10248)", func(c *Config) *string { return &c.KubeletConfig }),
		enumKey("kubeletServingCert", "kubelet-serving-cert", "the kubelet's self-signed serving certificate (kubelet.crt): renew it in place and make the kubelet serve it, or monitor it only (certificates from tlsCertFile or serverTLSBootstrap are always only monitored)", func(c *Config) *string { return &c.KubeletServingCert }, KubeletServingRenew, KubeletServingMonitor),
		pathKey("kubeletCertDir", "kubelet-cert-dir", "the kubelet's --cert-dir, where its self-signed kubelet.crt is (default: the running kubelet's --cert-dir, else /var/lib/kubelet/pki)", func(c *Config) *string { return &c.KubeletCertDir }),
		orZero(durKey("lastResortBefore", "last-resort-before", "when restarts are impossible, renew the files anyway (restarts owed) once a certificate has less than this left; 0: never", func(c *Config) *time.Duration { return &c.LastResortBefore }, nil), func(c *Config) { c.LastResortBefore = 0 }),
		durKey("restartRunningFor", "restart-running-for", "a restarted static pod without an HTTP probe is healthy once its container has run this long without a restart", func(c *Config) *time.Duration { return &c.RestartRunningFor }, nil),
		enumKey("restartPolicy", "restart-policy", "needed: restart only the components that cannot reload their renewed files (kube-controller-manager, kube-scheduler, the kubelet, foreign pods); all: every static pod that uses one", func(c *Config) *string { return &c.RestartPolicy }, "needed", "all"),
		boolKey("restartComponents", "restart-components", "run: restart the static pods that use renewed files (false: renew files only)", func(c *Config) *bool { return &c.RestartComponents }),
		{
			Name: "metricsAddress", Flag: "metrics-address", Usage: "run: serve Prometheus metrics on this host:port (empty: off)",
			set: func(c *Config, v string) error {
				if v != "" {
					if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
						return fmt.Errorf("%q is not host:port", v)
					}
				}
				c.MetricsAddress = v
				return nil
			},
			get: func(c *Config) string { return c.MetricsAddress },
		},
		{
			Name: "kubeletRestartCommand", Flag: "kubelet-restart-command", Usage: "shell command that restarts the kubelet after kubelet.conf was renewed (default: restart kubelet.service through systemd's D-Bus API)",
			set: func(c *Config, v string) error { c.KubeletRestartCommand = v; return nil },
			get: func(c *Config) string { return c.KubeletRestartCommand },
		},
		{
			Name: "lease", Flag: "lease", Usage: "coordination.k8s.io Lease (namespace/name) that lets one control-plane node restart at a time; empty: no coordination",
			set: func(c *Config, v string) error {
				if v != "" {
					ns, name, ok := strings.Cut(v, "/")
					if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
						return fmt.Errorf("%q is not namespace/name", v)
					}
				}
				c.Lease = v
				return nil
			},
			get: func(c *Config) string { return c.Lease },
		},
		durKey("leaseDuration", "lease-duration", "how long the lease lasts without renewal (a crashed holder blocks the other nodes this long)", func(c *Config) *time.Duration { return &c.LeaseDuration }, nil),
		durKey("coordinationTimeout", "coordination-timeout", "how long to wait for the lease or for healthy etcd peers before retrying later", func(c *Config) *time.Duration { return &c.CoordinationTimeout }, nil),
		boolKey("etcdQuorumGuard", "etcd-quorum-guard", "restart the local etcd only when every other member is healthy", func(c *Config) *bool { return &c.EtcdQuorumGuard }),
		enumKey("apiIdentity", "api-identity", "who takes the lease and posts Events: own (a client certificate pkirenewd issues itself from the cluster CA, pkirenewd.conf in kubeconfigDir, bound by RBAC to that Lease and Events) or admin (admin.conf, cluster-admin)", func(c *Config) *string { return &c.APIIdentity }, APIIdentityOwn, APIIdentityAdmin),
		boolKey("apiIdentityBootstrap", "api-identity-bootstrap", "apiIdentity own: create the Role and RoleBinding once with admin.conf when they are missing (false: apply packaging's rbac.yaml yourself; check says what is missing)", func(c *Config) *bool { return &c.APIIdentityBootstrap }),
		pathKey("adminKubeconfigCopy", "admin-kubeconfig-copy", "copy of admin.conf updated along with it when it holds the same credentials (empty: none)", func(c *Config) *string { return &c.AdminKubeconfigCopy }),
		pathListKey("adminKubeconfigCopies", "admin-kubeconfig-copies", "more copies of admin.conf, or kubeconfigs merged from it, updated the same way (repeat the flag, or comma-separated)", func(c *Config) *[]string { return &c.AdminKubeconfigCopies }),
	}
}

// pathListKey is a list of absolute paths: a YAML sequence in the file
// (or one comma-separated value), comma-separated as a flag.
func pathListKey(name, flag, usage string, field func(*Config) *[]string) Key {
	setList := func(c *Config, vs []string) error {
		var out []string
		for _, v := range vs {
			v = strings.TrimSpace(v)
			if v == "" {
				continue
			}
			if !filepath.IsAbs(v) {
				return fmt.Errorf("%q is not an absolute path", v)
			}
			out = append(out, filepath.Clean(v))
		}
		*field(c) = out
		return nil
	}
	return Key{
		Name: name, Flag: flag, Usage: usage, Type: "paths",
		setList: setList,
		set:     func(c *Config, v string) error { return setList(c, strings.Split(v, ",")) },
		get:     func(c *Config) string { return strings.Join(*field(c), ",") },
	}
}

// enumKey is a string that takes one of two values.
func enumKey(name, flag, usage string, field func(*Config) *string, a, b string) Key {
	return Key{
		Name: name, Flag: flag, Usage: usage,
		set: func(c *Config, v string) error {
			if v != a && v != b {
				return fmt.Errorf("%q is not %s or %s", v, a, b)
			}
			*field(c) = v
			return nil
		},
		get: func(c *Config) string { return *field(c) },
	}
}

func boolKey(name, flag, usage string, field func(*Config) *bool) Key {
	return Key{
		Name: name, Flag: flag, Usage: usage, Type: "bool",
		set: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%q is not true or false", v)
			}
			*field(c) = b
			return nil
		},
		get: func(c *Config) string { return strconv.FormatBool(*field(c)) },
	}
}

// explicit makes a key remember that the user set it.
func explicit(k Key, mark func(*Config)) Key {
	set := k.set
	k.set = func(c *Config, v string) error {
		if err := set(c, v); err != nil {
			return err
		}
		mark(c)
		return nil
	}
	return k
}

func pathKey(name, flag, usage string, field func(*Config) *string) Key {
	return Key{
		Name: name, Flag: flag, Usage: usage, Type: "path",
		set: func(c *Config, v string) error {
			if v != "" && !filepath.IsAbs(v) {
				return fmt.Errorf("%q is not an absolute path", v)
			}
			*field(c) = filepath.Clean(v)
			if v == "" {
				*field(c) = ""
			}
			return nil
		},
		get: func(c *Config) string { return *field(c) },
	}
}

// orZero lets a duration key also take 0 (and "0s", "0d"): off.
func orZero(k Key, zero func(*Config)) Key {
	set := k.set
	k.set = func(c *Config, v string) error {
		if d, err := ParseDuration(v); err == nil && d == 0 {
			zero(c)
			return nil
		}
		return set(c, v)
	}
	return k
}

func durKey(name, flag, usage string, field func(*Config) *time.Duration, mark func(*Config)) Key {
	return Key{
		Name: name, Flag: flag, Usage: usage, Type: "duration",
		set: func(c *Config, v string) error {
			d, err := ParseDuration(v)
			if err != nil {
				return err
			}
			if d <= 0 {
				return fmt.Errorf("%q must be positive", v)
			}
			*field(c) = d
			if mark != nil {
				mark(c)
			}
			return nil
		},
		get: func(c *Config) string { return FormatDuration(*field(c)) },
	}
}

// Set assigns a setting from its string form; the error names the key.
func (k Key) Set(c *Config, v string) error {
	if err := k.set(c, v); err != nil {
		return fmt.Errorf("%s: %w", k.Name, err)
	}
	return nil
}

// setSequence assigns a list setting from a YAML sequence of values.
func (k Key) setSequence(c *Config, n *yaml.Node) error {
	vs := make([]string, 0, len(n.Content))
	for _, e := range n.Content {
		if e.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: %s: expected a list of single values", e.Line, k.Name)
		}
		vs = append(vs, e.Value)
	}
	if err := k.setList(c, vs); err != nil {
		return fmt.Errorf("line %d: %s: %w", n.Line, k.Name, err)
	}
	return nil
}

// Get returns the setting's string form.
func (k Key) Get(c *Config) string { return k.get(c) }

// TypeName is the key's type for help texts (string when not set).
func (k Key) TypeName() string {
	if k.Type == "" {
		return "string"
	}
	return k.Type
}

// IsList reports whether the key holds a list (a repeatable flag).
func (k Key) IsList() bool { return k.setList != nil }

// ParseDuration accepts Go duration syntax plus a "d" (day) suffix on a
// whole or fractional number, alone or leading a Go duration ("90d",
// "1d12h").
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty duration")
	}
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.ParseFloat(s[:i], 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		days = time.Duration(n * float64(Day))
		s = s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (use e.g. 90d, 2160h, 30m)", s)
	}
	return days + d, nil
}

// FormatDuration prints whole days as "Nd" and anything else in Go syntax.
func FormatDuration(d time.Duration) string {
	if d > 0 && d%Day == 0 {
		return strconv.FormatInt(int64(d/Day), 10) + "d"
	}
	return d.String()
}

// Parse reads a config file's contents over base. An empty document is valid
// and changes nothing.
func Parse(name string, data []byte, base Config) (Config, error) {
	c := base
	if len(bytes.TrimSpace(data)) == 0 {
		return c, nil
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) { // comments only
			return c, nil
		}
		return base, fmt.Errorf("config %s: %w", name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return base, fmt.Errorf("config %s: line %d: more than one YAML document", name, extra.Line)
	}
	if len(doc.Content) == 0 {
		return c, nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return c, nil
	}
	if root.Kind != yaml.MappingNode {
		return base, fmt.Errorf("config %s: line %d: expected a mapping of settings", name, root.Line)
	}
	keys := map[string]Key{}
	for _, k := range Keys() {
		keys[k.Name] = k
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		kn, vn := root.Content[i], root.Content[i+1]
		k, ok := keys[kn.Value]
		if !ok {
			return base, fmt.Errorf("config %s: line %d: unknown key %q", name, kn.Line, kn.Value)
		}
		if seen[kn.Value] {
			return base, fmt.Errorf("config %s: line %d: key %q given twice", name, kn.Line, kn.Value)
		}
		seen[kn.Value] = true
		if vn.Kind == yaml.SequenceNode && k.setList != nil {
			if err := k.setSequence(&c, vn); err != nil {
				return base, fmt.Errorf("config %s: %w", name, err)
			}
			continue
		}
		if vn.Kind != yaml.ScalarNode {
			return base, fmt.Errorf("config %s: line %d: %s: expected a single value", name, vn.Line, kn.Value)
		}
		if vn.Tag == "!!null" {
			continue
		}
		if err := k.Set(&c, vn.Value); err != nil {
			return base, fmt.Errorf("config %s: line %d: %w", name, vn.Line, err)
		}
	}
	return c, nil
}

// Load reads the file at path over the defaults. A missing file is fine only
// when the path was not given explicitly: a stock node has no config.
func Load(path string, explicit bool) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && !explicit {
			return Defaults(), nil
		}
		return Defaults(), fmt.Errorf("config %s: %w", path, err)
	}
	return Parse(path, data, Defaults())
}

// Validate checks the combination of settings.
func (c Config) Validate() error {
	for _, p := range []struct{ name, v string }{
		{"pkiDir", c.PKIDir}, {"kubeconfigDir", c.KubeconfigDir}, {"manifestsDir", c.ManifestsDir}, {"stateDir", c.StateDir},
	} {
		if p.v == "" {
			return fmt.Errorf("%s: must not be empty", p.name)
		}
	}
	// The lease is renewed every third of its duration: below seconds,
	// that is a busy loop against the apiserver (and 0 panics a ticker).
	if c.Lease != "" && c.LeaseDuration < MinLeaseDuration {
		return fmt.Errorf("leaseDuration: %s is shorter than %s", c.LeaseDuration, MinLeaseDuration)
	}
	if c.StateDir == c.PKIDir || c.StateDir == c.KubeconfigDir {
		return fmt.Errorf("stateDir: %s must not be the pki or kubeconfig directory (backups hold private keys)", c.StateDir)
	}
	return nil
}
