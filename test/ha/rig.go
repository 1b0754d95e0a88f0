//go:build e2e

// Package ha brings up a three-node HA control plane on loopback for tests
// that run one pkirenewd per node: three etcd members (etcd-node1..3, real
// etcd in static pods on one real containerd, test/containerdrig, each
// recreated by its own stand-in kubelet) and one real kube-apiserver
// process in front of them. Each node has kubeadm's own PKI, kubeconfigs
// and etcd manifest in directories of its own, issued from one shared CA
// set, so pkirenewd can be pointed at a node as at /etc/kubernetes.
//
// Nodes are 127.0.0.11, 127.0.0.12 and 127.0.0.13 (no interface is made:
// all of 127.0.0.0/8 is local); the etcd ports and the apiserver port are
// free ports, so the rig can run next to test/e2e (which owns
// /etc/kubernetes and 2379-2381, 6443 ...). Nothing is written outside a
// temp dir and the log dir.
//
// The package is built only with the e2e tag:
//
//	go test -tags e2e -count=1 -v -timeout 15m ./test/ha/
//
// It needs root, containerd and runc (`make containerd`) and the pinned
// kubeadm, kube-apiserver and etcd (test/tools/build-k8s.sh, cached).
// What it shares with test/e2e (binaries, kubeadm and its config, polling,
// signals, the admin binding, health GETs, sandbox lookup, teardown
// helpers) is in test/cplane; this file keeps what is particular to three
// members.
package ha

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/pkirenewd/pkirenewd/test/containerdrig"
	"github.com/pkirenewd/pkirenewd/test/cplane"
	"github.com/pkirenewd/pkirenewd/test/kubeclient"
)

// NodeNames are the nodes, in order; node i (from 0) has IP 127.0.0.1{i+1}.
var NodeNames = []string{"node1", "node2", "node3"}

// placeholderIP is the advertiseAddress kubeadm is given for node i
// (203.0.113.1{i+1}, TEST-NET-3): kubeadm reads a loopback advertiseAddress
// as "the global unicast address on lo" and fails without one, so the
// node's real (loopback) IP goes into the certificates through
// apiServer.certSANs and etcd.local.{server,peer}CertSANs and into the etcd
// flags through etcd.local.extraArgs instead. It is in the apiserver and
// etcd certificates' SANs, and nowhere else.
func placeholderIP(i int) string { return fmt.Sprintf("203.0.113.%d", 11+i) }

// Options shape a cluster.
type Options struct {
	// KubernetesVersion is the version of kubeadm and kube-apiserver
	// (default: the "default" version of test/tools/versions); etcd's and
	// pause's images are the ones that version's kubeadm lists.
	KubernetesVersion string
	// Validity is kubeadm's certificateValidityPeriod for every node's
	// leaf certificates and kubeconfigs (0: kubeadm's default, 8760h). The
	// apiserver's own credentials and the rig's etcd client do not depend
	// on it.
	Validity time.Duration
	// EncryptionAlgorithm is kubeadm's encryptionAlgorithm for the nodes
	// (empty: kubeadm's default, RSA-2048).
	EncryptionAlgorithm string
	// Kubeconfigs are the kubeconfig phases run for every node besides
	// "admin" (node1 also gets "super-admin", as on kubeadm's first
	// control-plane node), e.g. "controller-manager", "scheduler".
	Kubeconfigs []string
	// KubeletDelay is how long a node's stand-in kubelet waits before it
	// recreates a missing etcd pod (default 500ms; the kubelet takes
	// 0.4-1.3 s).
	KubeletDelay time.Duration
	// EtcdClientPort, EtcdPeerPort, EtcdMetricsPort are the ports every
	// member listens on at its node IP (0: free ports picked at start,
	// the same for the three nodes). 2379-2381 work too, but then test/e2e
	// cannot start meanwhile: its preflight wants them free on all
	// addresses.
	EtcdClientPort, EtcdPeerPort, EtcdMetricsPort int
	// ReadyTimeout bounds the wait for the etcd cluster and the apiserver
	// (default 3m).
	ReadyTimeout time.Duration
}

// Cluster is a running three-node control plane.
type Cluster struct {
	t    *testing.T
	Opts Options
	// Nodes are node1, node2, node3.
	Nodes []*Node
	// Rig is the containerd running the three etcd pods.
	Rig *containerdrig.Rig
	// Bin holds kubeadm, kube-apiserver and etcd.
	Bin string
	// Dir is the rig's temp dir: the nodes' dirs, the shared CA set
	// (ca/pki), the apiserver's own credentials (apiserver/).
	Dir string
	// LogDir gathers the logs: kubeadm.log, kube-apiserver.log, and at
	// teardown containerd.log, sandboxes.txt and pods/ (every etcd
	// container's log). PKIRENEWD_E2E_LOGS/<test name> when that variable
	// is set (kept), else a temp dir (kept only when the test fails).
	LogDir string
	// EtcdImage is the image of the etcd pods (kubeadm's name for it).
	EtcdImage string
	// CertsIssued is when kubeadm started issuing the nodes' certificates;
	// BringUp how long Start took.
	CertsIssued time.Time
	BringUp     time.Duration

	ctx    context.Context
	cancel context.CancelCauseFunc

	setup     cplane.Setup
	apiPort   int
	apiPKI    string
	apiserver *cplane.Process
	kubeadm   *cplane.Kubeadm
	etcdTLS   *tls.Config // the rig's own etcd client (long-lived cert)
}

// Node is one control-plane node: its directories are what /etc/kubernetes
// is on a real node.
type Node struct {
	c       *Cluster
	index   int
	name    string
	ip      string
	dir     string
	kubeadm string
	// Pod is the etcd static pod as the stand-in kubelet runs it (from
	// the manifest, read once).
	Pod containerdrig.StaticPod
	// Kubelet is the node's stand-in kubelet.
	Kubelet *containerdrig.Kubelet
}

// NodeName is nodeRegistration.name: node1, node2, node3 (the etcd member
// name too).
func (n *Node) NodeName() string { return n.name }

// IP is the node's address, 127.0.0.11, .12 or .13.
func (n *Node) IP() string { return n.ip }

// Dir is the node's root dir (holds the dirs below).
func (n *Node) Dir() string { return n.dir }

// PKIDir is the node's certificatesDir (/etc/kubernetes/pki on a node).
func (n *Node) PKIDir() string { return filepath.Join(n.dir, "pki") }

// KubeconfigDir holds admin.conf (and super-admin.conf on node1, plus
// Options.Kubeconfigs).
func (n *Node) KubeconfigDir() string { return filepath.Join(n.dir, "kubeconfig") }

// ManifestsDir holds etcd.yaml and nothing else.
func (n *Node) ManifestsDir() string { return filepath.Join(n.dir, "manifests") }

// StateDir is an empty dir for pkirenewd's state.
func (n *Node) StateDir() string { return filepath.Join(n.dir, "state") }

// KubeletConfig names the node's kubelet stand-in healthz (written when it
// starts), for pkirenewd's --kubelet-config.
func (n *Node) KubeletConfig() string { return filepath.Join(n.dir, "kubelet-config.yaml") }

// EtcdDataDir is the member's data dir (etcd.local.dataDir).
func (n *Node) EtcdDataDir() string { return filepath.Join(n.dir, "etcd") }

// KubeadmConfig is the kubeadm config (InitConfiguration and
// ClusterConfiguration) the node's files were made with.
func (n *Node) KubeadmConfig() string { return n.kubeadm }

// Manifest is the path of the node's etcd.yaml.
func (n *Node) Manifest() string { return filepath.Join(n.ManifestsDir(), "etcd.yaml") }

// EtcdClientURL is the member's client URL, https://<IP>:<client port>.
func (n *Node) EtcdClientURL() string {
	return "https://" + net.JoinHostPort(n.ip, strconv.Itoa(n.c.Opts.EtcdClientPort))
}

// EtcdPeerURL is the member's peer URL, https://<IP>:<peer port>.
func (n *Node) EtcdPeerURL() string {
	return "https://" + net.JoinHostPort(n.ip, strconv.Itoa(n.c.Opts.EtcdPeerPort))
}

// EtcdMetricsURL is the member's metrics (and /health, /livez, /readyz)
// URL, http://<IP>:<metrics port>.
func (n *Node) EtcdMetricsURL() string {
	return "http://" + net.JoinHostPort(n.ip, strconv.Itoa(n.c.Opts.EtcdMetricsPort))
}

// Admin is a client with the node's admin.conf (read again for every
// request, so a renewed one is used at once).
func (n *Node) Admin() *KubeClient {
	return &KubeClient{Kubeconfig: filepath.Join(n.KubeconfigDir(), "admin.conf")}
}

// Node returns the node with the given name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// CRIEndpoint is the containerd CRI endpoint all three nodes share
// (unix:///tmp/ctrdrigNNN/c.sock).
func (c *Cluster) CRIEndpoint() string { return c.Rig.Endpoint() }

// APIServerURL is https://127.0.0.1:<port>, the controlPlaneEndpoint every
// node's kubeconfigs point at.
func (c *Cluster) APIServerURL() string { return fmt.Sprintf("https://127.0.0.1:%d", c.apiPort) }

// CADir is the shared CA set (ca, etcd/ca, front-proxy-ca, sa) every node's
// PKI was issued from.
func (c *Cluster) CADir() string { return filepath.Join(c.Dir, "ca", "pki") }

// Context is cancelled on SIGINT/SIGTERM, shortly before the test's
// deadline and at teardown; waits in a test should use it so an
// interrupted run still tears down.
func (c *Cluster) Context() context.Context { return c.ctx }

// EtcdClientURLs lists the three members' client URLs.
func (c *Cluster) EtcdClientURLs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.EtcdClientURL())
	}
	return out
}

// Start brings up the cluster and returns once the three etcd members are
// healthy, the apiserver is ready with admin.conf's credentials and the
// ClusterRoleBinding kubeadm:cluster-admins exists. A t.Cleanup tears
// everything down, also when the test fails: the stand-in kubelets, the
// apiserver, the pods, containerd, the temp dir; anything left fails the
// test.
func Start(t *testing.T, opts Options) *Cluster {
	t.Helper()
	containerdrig.RequireHost(t, "the HA rig")
	t0 := time.Now()
	if opts.KubeletDelay == 0 {
		opts.KubeletDelay = 500 * time.Millisecond
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 3 * time.Minute
	}
	c := &Cluster{t: t, Opts: opts}
	sig := cplane.Signals{Prefix: "ha", What: "the cluster"}
	if d, ok := t.Deadline(); ok {
		// Leave the teardown a minute (a quarter of a shorter run).
		sig.Deadline, sig.Margin = d, min(time.Minute, time.Until(d)/4)
	}
	var stopSignals func()
	c.ctx, c.cancel, stopSignals = sig.Watch()
	t.Cleanup(stopSignals) // runs last

	var err error
	if c.setup, err = cplane.NewSetup(c.ctx, "ha", t.Name(), opts.KubernetesVersion, "kubeadm", "kube-apiserver", "etcd"); err != nil {
		t.Fatalf("ha: %v", err)
	}
	c.Opts.KubernetesVersion, c.Bin, c.LogDir, c.kubeadm = c.setup.Version, c.setup.Bin, c.setup.LogDir, c.setup.Kubeadm
	t.Logf("ha: logs in %s", c.LogDir)

	d, err := os.MkdirTemp("/tmp", "pkreha")
	if err != nil {
		t.Fatal(err)
	}
	c.Dir = d
	// Registered before the rig's cleanup, so it runs after it: the
	// directory goes and the leftover check comes last.
	pkiDone := make(chan struct{})
	pkiStarted := false
	t.Cleanup(func() {
		c.cancel(errors.New("cluster torn down"))
		if pkiStarted {
			<-pkiDone // kubeadm is killed by the cancel
		}
		c.removeDir()
		if left := c.Leftovers(); len(left) > 0 {
			t.Errorf("ha: teardown left: %s", strings.Join(left, "; "))
		}
		if dir := c.setup.KeepLogs(t.Failed()); dir != "" {
			t.Logf("ha: logs kept in %s", dir)
		}
	})

	if err := c.pickPorts(); err != nil {
		t.Fatal(err)
	}
	for i, name := range NodeNames {
		n := &Node{c: c, index: i, name: name, ip: fmt.Sprintf("127.0.0.%d", 11+i), dir: filepath.Join(d, name)}
		n.kubeadm = filepath.Join(n.dir, "kubeadm.yaml")
		c.Nodes = append(c.Nodes, n)
	}

	// kubeadm works while containerd starts.
	var pkiErr error
	pkiStarted = true
	go func() {
		defer close(pkiDone)
		pkiErr = c.makeNodeFiles()
	}()
	c.Rig = containerdrig.Start(t)
	t.Cleanup(c.teardown) // runs before the rig's own cleanup
	tRig := time.Now()
	<-pkiDone
	if pkiErr != nil {
		t.Fatalf("ha: %v", pkiErr)
	}
	tPKI := time.Now()
	// The apiserver starts first (it takes longest) and waits for etcd.
	if err := c.startAPIServer(); err != nil {
		t.Fatalf("ha: %v", err)
	}
	c.Rig.ImportImage(c.EtcdImage, map[string]string{"/usr/local/bin/etcd": filepath.Join(c.Bin, "etcd")}, nil)
	for _, n := range c.Nodes {
		n.Kubelet = c.Rig.StartKubelet([]containerdrig.StaticPod{n.Pod}, opts.KubeletDelay, nil)
		n.Kubelet.WriteConfig(n.dir)
	}
	tPods := time.Now()
	if err := c.WaitHealthy(opts.ReadyTimeout); err != nil {
		t.Fatalf("ha: %v", err)
	}
	tEtcd := time.Now()
	if err := cplane.WaitReady(c.poller(), c.Nodes[0].Admin(), opts.ReadyTimeout); err != nil {
		t.Fatalf("ha: %v", err)
	}
	tAPI := time.Now()
	super := &KubeClient{Kubeconfig: filepath.Join(c.Nodes[0].KubeconfigDir(), "super-admin.conf")}
	if err := cplane.BindClusterAdmins(c.poller(), super); err != nil {
		t.Fatalf("ha: %v", err)
	}
	c.BringUp = time.Since(t0)
	t.Logf("ha: cluster up in %v (containerd %v, kubeadm files %v, pods started %v, etcd healthy %v, apiserver ready %v)",
		c.BringUp.Round(time.Millisecond), tRig.Sub(t0).Round(time.Millisecond), tPKI.Sub(t0).Round(time.Millisecond),
		tPods.Sub(t0).Round(time.Millisecond), tEtcd.Sub(t0).Round(time.Millisecond), tAPI.Sub(t0).Round(time.Millisecond))
	return c
}

// pickPorts picks the apiserver port and, unless given, the etcd ports:
// each one free on 127.0.0.1 and on the three node IPs.
func (c *Cluster) pickPorts() error {
	ips := []string{"127.0.0.1", "127.0.0.11", "127.0.0.12", "127.0.0.13"}
	taken := map[int]bool{}
	free := func() (int, error) {
		for try := 0; try < 50; try++ {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return 0, err
			}
			p := l.Addr().(*net.TCPAddr).Port
			l.Close()
			ok := !taken[p]
			for _, ip := range ips[1:] {
				if !ok {
					break
				}
				l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(p)))
				if err != nil {
					ok = false
					break
				}
				l.Close()
			}
			if ok {
				taken[p] = true
				return p, nil
			}
		}
		return 0, errors.New("no free port on 127.0.0.1 and 127.0.0.11-13")
	}
	var err error
	if c.apiPort, err = free(); err != nil {
		return err
	}
	for _, p := range []*int{&c.Opts.EtcdClientPort, &c.Opts.EtcdPeerPort, &c.Opts.EtcdMetricsPort} {
		if *p == 0 {
			if *p, err = free(); err != nil {
				return err
			}
		}
	}
	return nil
}

// ---- kubeadm ----

// kubeadmConfig is the node's InitConfiguration and ClusterConfiguration.
// pkiDir overrides certificatesDir and validity the validity (the rig's
// own credentials use kubeadm's default).
func (c *Cluster) kubeadmConfig(n *Node, pkiDir string, validity time.Duration) string {
	var initial []string
	for _, m := range c.Nodes {
		initial = append(initial, m.name+"="+m.EtcdPeerURL())
	}
	return cplane.InitConfig{
		// kubeadm takes a loopback address here for "the global address on
		// lo": a placeholder; the node's address is in the SANs and etcd flags.
		AdvertiseAddress: placeholderIP(n.index), BindPort: c.apiPort, NodeName: n.name,
		KubernetesVersion: c.Opts.KubernetesVersion, CertificatesDir: pkiDir,
		ControlPlaneEndpoint: net.JoinHostPort("127.0.0.1", strconv.Itoa(c.apiPort)),
		CertSANs:             []string{"127.0.0.1", "localhost", n.ip},
		EtcdDataDir:          n.EtcdDataDir(), EtcdCertSANs: []string{n.ip},
		EtcdArgs: [][2]string{{"listen-client-urls", n.EtcdClientURL()}, {"advertise-client-urls", n.EtcdClientURL()},
			{"listen-peer-urls", n.EtcdPeerURL()}, {"initial-advertise-peer-urls", n.EtcdPeerURL()},
			{"listen-metrics-urls", n.EtcdMetricsURL()}, {"initial-cluster", strings.Join(initial, ",")}, {"initial-cluster-state", "new"}},
		Validity: validity, EncryptionAlgorithm: c.Opts.EncryptionAlgorithm,
	}.YAML()
}

// caFiles are the shared CA set, relative to certificatesDir.
var caFiles = []string{"ca.crt", "ca.key", "front-proxy-ca.crt", "front-proxy-ca.key", "etcd/ca.crt", "etcd/ca.key", "sa.key", "sa.pub"}

// makeNodeFiles makes the shared CA set, then for every node its PKI,
// kubeconfigs and etcd manifest, and the apiserver's own credentials
// (kubeadm's default validity, from the same CAs). It runs beside
// containerdrig.Start, so it reports errors instead of failing the test.
func (c *Cluster) makeNodeFiles() error {
	for _, n := range c.Nodes {
		for _, d := range []string{n.PKIDir(), n.KubeconfigDir(), n.ManifestsDir(), n.StateDir(), n.EtcdDataDir()} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return err
			}
		}
		if err := os.WriteFile(n.kubeadm, []byte(c.kubeadmConfig(n, n.PKIDir(), c.Opts.Validity)), 0o600); err != nil {
			return err
		}
	}
	n1 := c.Nodes[0]
	if err := c.kubeadm.CheckVersion(c.Opts.KubernetesVersion); err != nil {
		return err
	}

	// The shared CA set.
	caCfg := filepath.Join(c.Dir, "ca", "kubeadm.yaml")
	if err := os.MkdirAll(c.CADir(), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(caCfg, []byte(c.kubeadmConfig(n1, c.CADir(), 0)), 0o600); err != nil {
		return err
	}
	var fs []func() error
	for _, phase := range []string{"ca", "etcd-ca", "front-proxy-ca", "sa"} {
		fs = append(fs, func() error {
			_, err := c.kubeadm.Run(nil, "init", "phase", "certs", phase, "--config", caCfg)
			return err
		})
	}
	if err := cplane.Parallel(fs...); err != nil {
		return err
	}

	// Every node's PKI, and the apiserver's, from copies of the CA set
	// (kubeadm uses a CA it finds, and sa.key).
	c.apiPKI = filepath.Join(c.Dir, "apiserver", "pki")
	apiCfg := filepath.Join(c.Dir, "apiserver", "kubeadm.yaml")
	if err := os.MkdirAll(c.apiPKI, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(apiCfg, []byte(c.kubeadmConfig(n1, c.apiPKI, 0)), 0o600); err != nil {
		return err
	}
	c.CertsIssued = time.Now()
	fs = []func() error{func() error {
		if err := cplane.CopyFiles(c.CADir(), c.apiPKI, caFiles); err != nil {
			return err
		}
		_, err := c.kubeadm.Run(nil, "init", "phase", "certs", "all", "--config", apiCfg)
		return err
	}}
	for _, n := range c.Nodes {
		fs = append(fs, func() error { return c.makeNode(n) })
	}
	if err := cplane.Parallel(fs...); err != nil {
		return err
	}
	c.EtcdImage = c.Nodes[0].Pod.Image
	for _, n := range c.Nodes {
		if n.Pod.Image != c.EtcdImage {
			return fmt.Errorf("etcd image: %s has %s, node1 %s", n.name, n.Pod.Image, c.EtcdImage)
		}
	}
	// The etcd and pause tags are the ones this kubeadm version lists.
	images, err := c.kubeadm.Images(n1.kubeadm)
	if err != nil {
		return err
	}
	if err := cplane.CheckImages(images, containerdrig.PauseImage, map[string]string{"etcd": c.EtcdImage}); err != nil {
		return err
	}
	return c.loadEtcdTLS()
}

// makeNode makes one node's PKI, kubeconfigs and etcd manifest.
func (c *Cluster) makeNode(n *Node) error {
	if err := cplane.CopyFiles(c.CADir(), n.PKIDir(), caFiles); err != nil {
		return err
	}
	if _, err := c.kubeadm.Run(nil, "init", "phase", "certs", "all", "--config", n.kubeadm); err != nil {
		return err
	}
	kcs := []string{"admin"}
	if n.index == 0 {
		kcs = append(kcs, "super-admin")
	}
	kcs = append(kcs, c.Opts.Kubeconfigs...)
	for _, kc := range kcs {
		if _, err := c.kubeadm.Run(nil, "init", "phase", "kubeconfig", kc, "--config", n.kubeadm, "--kubeconfig-dir", n.KubeconfigDir()); err != nil {
			return err
		}
	}
	// etcd.yaml: kubeadm writes it to /etc/kubernetes/manifests unless
	// dry-run, which writes it to KUBEADM_INIT_DRYRUN_DIR.
	dry := filepath.Join(n.dir, "dryrun")
	if err := c.kubeadm.DryRun(dry, n.kubeadm, "etcd", "local"); err != nil {
		return err
	}
	data, err := cplane.Manifest(dry, "etcd")
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dry); err != nil {
		return err
	}
	// The one place kubeadm puts the advertiseAddress without asking
	// extraArgs: the annotation with the client URL.
	data = regexp.MustCompile(`(?m)^(\s*kubeadm\.kubernetes\.io/etcd\.advertise-client-urls:).*$`).
		ReplaceAll(data, []byte("${1} "+n.EtcdClientURL()))
	if bytes.Contains(data, []byte(placeholderIP(n.index))) {
		return fmt.Errorf("%s: etcd.yaml still has the placeholder address %s:\n%s", n.name, placeholderIP(n.index), data)
	}
	pod, err := c.staticPod(n, data)
	if err != nil {
		return fmt.Errorf("%s: etcd.yaml: %w", n.name, err)
	}
	n.Pod = pod
	return os.WriteFile(n.Manifest(), data, 0o600)
}

// manifest is the part of a static pod manifest the stand-in kubelet uses.
type manifest struct {
	Metadata struct {
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		HostNetwork bool `yaml:"hostNetwork"`
		Containers  []struct {
			Name         string   `yaml:"name"`
			Image        string   `yaml:"image"`
			Command      []string `yaml:"command"`
			Args         []string `yaml:"args"`
			VolumeMounts []struct {
				Name      string `yaml:"name"`
				MountPath string `yaml:"mountPath"`
				ReadOnly  bool   `yaml:"readOnly"`
			} `yaml:"volumeMounts"`
			LivenessProbe *struct {
				HTTPGet *struct {
					Host string `yaml:"host"`
				} `yaml:"httpGet"`
			} `yaml:"livenessProbe"`
		} `yaml:"containers"`
		Volumes []struct {
			Name     string `yaml:"name"`
			HostPath *struct {
				Path string `yaml:"path"`
			} `yaml:"hostPath"`
		} `yaml:"volumes"`
	} `yaml:"spec"`
}

// staticPod is the pod a kubelet would run from the node's etcd.yaml:
// its command and args, and its hostPath volumes mounted where the
// container mounts them (read-only if the mount says so).
func (*Cluster) staticPod(n *Node, data []byte) (containerdrig.StaticPod, error) {
	var m manifest
	if err := yaml.Unmarshal(data, &m); err != nil {
		return containerdrig.StaticPod{}, err
	}
	if m.Metadata.Labels["component"] != "etcd" || !m.Spec.HostNetwork || len(m.Spec.Containers) != 1 {
		return containerdrig.StaticPod{}, errors.New("not kubeadm's etcd pod (component=etcd, hostNetwork, one container)")
	}
	ct := m.Spec.Containers[0]
	if ct.LivenessProbe == nil || ct.LivenessProbe.HTTPGet == nil || ct.LivenessProbe.HTTPGet.Host != n.ip {
		return containerdrig.StaticPod{}, fmt.Errorf("livenessProbe host is not %s", n.ip)
	}
	p := containerdrig.StaticPod{Component: "etcd", Node: n.name, Image: ct.Image, Command: ct.Command, Args: ct.Args}
	hostPaths := map[string]string{}
	for _, v := range m.Spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = filepath.Clean(v.HostPath.Path)
		}
	}
	for _, vm := range ct.VolumeMounts {
		hp, ok := hostPaths[vm.Name]
		if !ok {
			return containerdrig.StaticPod{}, fmt.Errorf("volume %s is not a hostPath", vm.Name)
		}
		if filepath.Clean(vm.MountPath) != hp {
			return containerdrig.StaticPod{}, fmt.Errorf("volume %s: hostPath %s mounted at %s (the stand-in mounts at the same path)", vm.Name, hp, vm.MountPath)
		}
		if err := os.MkdirAll(hp, 0o700); err != nil { // DirectoryOrCreate
			return containerdrig.StaticPod{}, err
		}
		if vm.ReadOnly {
			p.HostPaths = append(p.HostPaths, hp)
		} else {
			p.WritableHostPaths = append(p.WritableHostPaths, hp)
		}
	}
	return p, nil
}

// loadEtcdTLS makes the rig's own etcd client credentials: the
// healthcheck-client certificate of the apiserver's PKI (kubeadm's default
// validity, untouched by renewals of the nodes).
func (c *Cluster) loadEtcdTLS() (err error) {
	c.etcdTLS, err = cplane.EtcdClientTLS(c.apiPKI)
	return err
}

// ---- kube-apiserver ----

// APIServerLog is the path of the apiserver's log.
func (c *Cluster) APIServerLog() string { return filepath.Join(c.LogDir, "kube-apiserver.log") }

// startAPIServer runs kube-apiserver as a child process with kubeadm's
// flags, on 127.0.0.1:<port>, against the three members, with credentials
// of its own (apiserver/pki).
func (c *Cluster) startAPIServer() error {
	p := func(f string) string { return filepath.Join(c.apiPKI, f) }
	args := []string{
		"--advertise-address=127.0.0.1",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(c.apiPort),
		// No Endpoints for the kubernetes Service (a loopback address is
		// not a valid endpoint).
		"--endpoint-reconciler-type=none",
		"--cert-dir=" + filepath.Join(c.Dir, "apiserver", "certs"),
		"--allow-privileged=true",
		"--authorization-mode=Node,RBAC",
		"--client-ca-file=" + p("ca.crt"),
		"--enable-admission-plugins=NodeRestriction",
		"--enable-bootstrap-token-auth=true",
		"--etcd-cafile=" + p("etcd/ca.crt"),
		"--etcd-certfile=" + p("apiserver-etcd-client.crt"),
		"--etcd-keyfile=" + p("apiserver-etcd-client.key"),
		"--etcd-servers=" + strings.Join(c.EtcdClientURLs(), ","),
		"--kubelet-client-certificate=" + p("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + p("apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
		"--proxy-client-cert-file=" + p("front-proxy-client.crt"),
		"--proxy-client-key-file=" + p("front-proxy-client.key"),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-client-ca-file=" + p("front-proxy-ca.crt"),
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-username-headers=X-Remote-User",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p("sa.pub"),
		"--service-account-signing-key-file=" + p("sa.key"),
		"--service-cluster-ip-range=10.96.0.0/12",
		"--tls-cert-file=" + p("apiserver.crt"),
		"--tls-private-key-file=" + p("apiserver.key"),
	}
	// Every request with its user, at Metadata level: whom each node's
	// pkirenewd talks to the API as.
	policy := filepath.Join(c.Dir, "apiserver", "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(cplane.AuditPolicy), 0o600); err != nil {
		return err
	}
	// A kept log dir of an earlier run must not lend its requests.
	if err := os.Remove(c.AuditLog()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	args = append(args, "--audit-policy-file="+policy, "--audit-log-path="+c.AuditLog())
	// Own process group (a Ctrl-C does not reach it: the teardown stops
	// it); killed if the test binary dies.
	proc, err := cplane.StartProcess(filepath.Join(c.Bin, "kube-apiserver"), args, c.APIServerLog())
	c.apiserver = proc
	return err
}

// AuditLog is the apiserver's audit log (JSON lines, every request).
func (c *Cluster) AuditLog() string { return filepath.Join(c.LogDir, "kube-apiserver-audit.log") }

// APIServerRunning reports whether the apiserver process is alive.
func (c *Cluster) APIServerRunning() bool { return c.apiserver.Running() }

func (c *Cluster) stopAPIServer() { c.apiserver.Stop() }

// poller polls under the Context, giving up when the apiserver has exited.
func (c *Cluster) poller() cplane.Poller {
	return cplane.Poller{Ctx: c.ctx, Gone: func() error { return c.apiserver.Exited() }}
}

// Poll calls f at once and then every interval until it returns nil, the
// timeout passes, the Context ends or the apiserver exits; the error says
// what was last seen.
func (c *Cluster) Poll(timeout, interval time.Duration, what string, f func(ctx context.Context) error) error {
	return c.poller().Poll(timeout, interval, what, f)
}

// ---- etcd ----

// MemberHealth asks every member for its /health on its metrics URL
// (plain HTTP, no credentials: it does not depend on any certificate a
// test renews), keyed by node name; nil means healthy: the member answers,
// has a leader and can serve a linearizable read. So with two members
// down the third is unhealthy too, and for a moment after a leader change
// (a read pending across it fails) the others can be as well: to see
// which members are down, use MemberLive.
func (c *Cluster) MemberHealth(ctx context.Context) map[string]error {
	return c.each(ctx, (*Node).Health)
}

// MemberLive asks every member for its /livez (a local, serializable
// read: no quorum needed), keyed by node name; an error means the member
// is down (not serving: stopped, starting, wedged).
func (c *Cluster) MemberLive(ctx context.Context) map[string]error {
	return c.each(ctx, (*Node).Live)
}

func (c *Cluster) each(ctx context.Context, f func(*Node, context.Context) error) map[string]error {
	out := make(map[string]error, len(c.Nodes))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := f(n, ctx)
			mu.Lock()
			out[n.name] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// Health is one /health of the member (2s timeout): {"health":"true"}.
func (n *Node) Health(ctx context.Context) error {
	return cplane.EtcdHealthy(ctx, nil, n.EtcdMetricsURL()+"/health", 2*time.Second)
}

// Live is one /livez of the member (2s timeout): 200 "ok".
func (n *Node) Live(ctx context.Context) error {
	_, err := cplane.GetOK(ctx, nil, n.EtcdMetricsURL()+"/livez", 2*time.Second)
	return err
}

// WaitHealthy waits until every member is healthy.
func (c *Cluster) WaitHealthy(timeout time.Duration) error {
	return c.Poll(timeout, 200*time.Millisecond, "etcd members healthy", func(ctx context.Context) error {
		var errs []error
		h := c.MemberHealth(ctx)
		for _, n := range c.Nodes {
			if err := h[n.name]; err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", n.name, err))
			}
		}
		return errors.Join(errs...)
	})
}

// EtcdClient is an etcd v3 client for the three members with the rig's
// own credentials (not a node's: they may be renewed under it). Close it.
func (c *Cluster) EtcdClient() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: c.EtcdClientURLs(), TLS: c.etcdTLS.Clone(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// Member is one etcd member as the member list gives it.
type Member struct {
	Name       string
	ID         uint64
	ClientURLs []string
	PeerURLs   []string
	Learner    bool
}

// MemberList lists the members, sorted by name.
func (c *Cluster) MemberList(ctx context.Context) ([]Member, error) {
	cli, err := c.EtcdClient()
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cli.MemberList(ctx)
	if err != nil {
		return nil, err
	}
	var out []Member
	for _, m := range resp.Members {
		out = append(out, Member{Name: m.Name, ID: m.ID, ClientURLs: m.ClientURLs, PeerURLs: m.PeerURLs, Learner: m.IsLearner})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Leader returns the node whose member leads now.
func (c *Cluster) Leader(ctx context.Context) (*Node, error) {
	cli, err := c.EtcdClient()
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var errs []error
	for _, n := range c.Nodes {
		st, err := cli.Status(ctx, n.EtcdClientURL())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.name, err))
			continue
		}
		if st.Leader != 0 && st.Leader == st.Header.MemberId {
			return n, nil
		}
	}
	return nil, fmt.Errorf("no leader found: %w", errors.Join(errs...))
}

// Sample is one round of probes of the three members.
type Sample struct {
	At time.Time
	// Down lists the members (node names, sorted) that failed /livez:
	// not serving at all.
	Down []string
	// Unhealthy lists the members that failed /livez or /health (no
	// leader, or no linearizable read: see MemberHealth). A leader change
	// can make the others unhealthy for a moment.
	Unhealthy []string
	// Errs holds the errors of the Unhealthy members (the /livez error
	// for those down).
	Errs map[string]error
}

// SampleHealth probes the three members every interval, each at once with
// /livez and, if that answers, /health (2s timeout each), until stop is
// called or ctx (or the Context) ends; stop waits for the probes in flight
// and returns the samples in order. A round starts every interval even
// while an earlier one waits for a slow answer (a /health across a leader
// change takes a second), so a member that is down only briefly is seen.
func (c *Cluster) SampleHealth(ctx context.Context, every time.Duration) (stop func() []Sample) {
	// Probes run under probeCtx, which stop does not cancel (a probe cut
	// short would look like a member down).
	probeCtx, cancelProbes := context.WithCancel(ctx)
	stopProbes := context.AfterFunc(c.ctx, cancelProbes)
	ticking, stopTicking := context.WithCancel(probeCtx)
	var mu sync.Mutex
	var samples []Sample
	var probes sync.WaitGroup
	done := make(chan struct{})
	probe := func(at time.Time) {
		defer probes.Done()
		var liveMu sync.Mutex
		live := map[string]error{}
		health := c.each(probeCtx, func(n *Node, ctx context.Context) error {
			if err := n.Live(ctx); err != nil {
				liveMu.Lock()
				live[n.name] = err
				liveMu.Unlock()
				return err
			}
			return n.Health(ctx)
		})
		if probeCtx.Err() != nil {
			return
		}
		s := Sample{At: at, Errs: map[string]error{}}
		for name, err := range health {
			if err != nil {
				s.Unhealthy = append(s.Unhealthy, name)
				s.Errs[name] = err
			}
			if live[name] != nil {
				s.Down = append(s.Down, name)
			}
		}
		sort.Strings(s.Down)
		sort.Strings(s.Unhealthy)
		mu.Lock()
		samples = append(samples, s)
		mu.Unlock()
	}
	go func() {
		defer close(done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for at := time.Now(); ; {
			probes.Add(1)
			go probe(at)
			select {
			case <-ticking.Done():
				return
			case at = <-tick.C:
			}
		}
	}()
	return func() []Sample {
		stopTicking()
		<-done
		probes.Wait()
		stopProbes()
		cancelProbes()
		mu.Lock()
		defer mu.Unlock()
		out := append([]Sample{}, samples...)
		sort.Slice(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
		return out
	}
}

// MaxDown returns the largest number of members down in one sample, and
// the first such sample.
func MaxDown(samples []Sample) (int, Sample) {
	best, at := 0, Sample{}
	for _, s := range samples {
		if len(s.Down) > best {
			best, at = len(s.Down), s
		}
	}
	return best, at
}

// EtcdSandbox returns the node's READY etcd sandbox (labels component=etcd,
// io.kubernetes.pod.name=etcd-<node>); none or several is an error.
func (c *Cluster) EtcdSandbox(ctx context.Context, n *Node) (string, error) {
	pods, err := cplane.Sandboxes(ctx, c.Rig.RT, map[string]string{"component": "etcd", "io.kubernetes.pod.name": "etcd-" + n.name})
	if err != nil {
		return "", err
	}
	p, err := cplane.OneReady("etcd-"+n.name, pods)
	return p.SandboxID, err
}

// StopEtcdPod stops and removes the node's etcd pod through the CRI, as
// pkirenewd's restart does; the node's stand-in kubelet recreates it.
func (c *Cluster) StopEtcdPod(ctx context.Context, n *Node) (sandboxID string, err error) {
	id, err := c.EtcdSandbox(ctx, n)
	if err != nil {
		return "", err
	}
	return id, cplane.RemoveSandbox(ctx, c.Rig.RT, id)
}

// ---- teardown ----

// teardown runs before the rig's own cleanup: the stand-in kubelets stop
// (else they recreate what is removed), then the apiserver, then every
// pod is removed; the logs are kept in LogDir.
func (c *Cluster) teardown() {
	t := c.t
	start := time.Now()
	c.cancel(errors.New("cluster torn down"))
	for _, n := range c.Nodes {
		if n.Kubelet != nil {
			n.Kubelet.Stop()
		}
	}
	c.stopAPIServer()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.Rig.ClearPods(ctx, c.LogDir, "sandboxes.txt"); err != nil {
		t.Errorf("ha: teardown: %v", err)
	}
	// Container logs: <rig>/logs/kube-system_etcd-node1_<uid>/etcd/0.log.
	logs, _ := filepath.Glob(filepath.Join(c.Rig.Dir, "logs", "*", "*", "*.log"))
	for _, l := range logs {
		rel, _ := filepath.Rel(filepath.Join(c.Rig.Dir, "logs"), l)
		dst := filepath.Join(c.LogDir, "pods", rel)
		_ = os.MkdirAll(filepath.Dir(dst), 0o755)
		cplane.CopyFile(l, dst)
	}
	if t.Failed() {
		t.Logf("ha: the logs' ends:\n%s%s", cplane.LogTails(c.LogDir, 20, "kube-apiserver.log"), cplane.LogTails(c.LogDir, 5, "pods/*/*/*.log"))
	}
	t.Logf("ha: teardown: kubelets, apiserver and pods gone in %v", time.Since(start).Round(time.Millisecond))
}

// removeDir removes the rig's temp dir (after containerd is gone).
func (c *Cluster) removeDir() {
	if c.Dir == "" {
		return
	}
	c.stopAPIServer() // in case the rig never started
	if err := cplane.RemoveTree(c.Dir); err != nil {
		c.t.Errorf("ha: teardown: %v", err)
	}
}

// Leftovers lists whatever of the cluster still exists: the temp dir,
// mounts under it, the apiserver, any process whose command line names the
// temp dir (an etcd), and what the containerd rig left (see
// containerdrig.Rig.Leftovers). After the teardown it is empty.
func (c *Cluster) Leftovers() []string {
	var out []string
	if c.Dir != "" {
		out = append(out, cplane.TreeLeftovers(c.Dir)...)
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(c.Dir+"/")) {
				out = append(out, fmt.Sprintf("process %s: %.120s", filepath.Base(filepath.Dir(p)), bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
			}
		}
	}
	out = append(out, c.apiserver.Leftover()...)
	if c.Rig != nil {
		out = append(out, c.Rig.Leftovers()...)
	}
	return out
}

// KubeClient is the shared test client.
type KubeClient = kubeclient.Client

// IsStatus reports whether err is an API answer with the given code.
var IsStatus = kubeclient.IsStatus
