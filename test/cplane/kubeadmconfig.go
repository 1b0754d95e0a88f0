package cplane

import (
	"fmt"
	"strings"
	"time"
)

// InitConfig is what a rig puts in kubeadm's v1beta4 InitConfiguration and
// ClusterConfiguration: the node, the endpoint, the SANs, etcd's data dir
// and flags, the certificates' validity and key algorithm. The CRI socket
// is containerd's default: kubeadm's phases the rigs run never use it.
type InitConfig struct {
	// AdvertiseAddress and BindPort are localAPIEndpoint's.
	AdvertiseAddress string
	BindPort         int
	// NodeName is nodeRegistration.name.
	NodeName          string
	KubernetesVersion string
	CertificatesDir   string
	// ControlPlaneEndpoint is host:port ("": none, kubeadm uses the
	// advertise address).
	ControlPlaneEndpoint string
	// CertSANs are apiServer.certSANs.
	CertSANs []string
	// EtcdDataDir is etcd.local.dataDir; EtcdCertSANs go into both
	// serverCertSANs and peerCertSANs; EtcdArgs are extraArgs, in order.
	EtcdDataDir  string
	EtcdCertSANs []string
	EtcdArgs     [][2]string
	// Validity and EncryptionAlgorithm: see ClusterTail.
	Validity            time.Duration
	EncryptionAlgorithm string
	// CAValidity is caCertificateValidityPeriod, the three CAs' life
	// (0: kubeadm's ten years).
	CAValidity time.Duration
	// APIServerArgs are apiServer.extraArgs, in order; APIServerHostPaths
	// directories mounted into the apiserver where they are on the host.
	APIServerArgs      [][2]string
	APIServerHostPaths []string
}

// YAML renders the two documents kubeadm reads with --config.
func (c InitConfig) YAML() string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nlocalAPIEndpoint:\n  advertiseAddress: %s\n  bindPort: %d\n",
		c.AdvertiseAddress, c.BindPort)
	fmt.Fprintf(&b, "nodeRegistration:\n  name: %s\n  criSocket: unix:///run/containerd/containerd.sock\n---\n", c.NodeName)
	fmt.Fprintf(&b, "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: %s\ncertificatesDir: %s\n",
		c.KubernetesVersion, c.CertificatesDir)
	if c.ControlPlaneEndpoint != "" {
		fmt.Fprintf(&b, "controlPlaneEndpoint: %s\n", c.ControlPlaneEndpoint)
	}
	fmt.Fprintf(&b, "apiServer:\n  certSANs: %s\n", flowList(c.CertSANs))
	if len(c.APIServerArgs) > 0 {
		b.WriteString("  extraArgs:\n")
		for _, a := range c.APIServerArgs {
			fmt.Fprintf(&b, "  - {name: %s, value: %q}\n", a[0], a[1])
		}
	}
	if len(c.APIServerHostPaths) > 0 {
		b.WriteString("  extraVolumes:\n")
		for i, p := range c.APIServerHostPaths {
			fmt.Fprintf(&b, "  - {name: extra-%d, hostPath: %q, mountPath: %q, pathType: DirectoryOrCreate}\n", i, p, p)
		}
	}
	fmt.Fprintf(&b, "etcd:\n  local:\n    dataDir: %s\n", c.EtcdDataDir)
	if len(c.EtcdCertSANs) > 0 {
		fmt.Fprintf(&b, "    serverCertSANs: %[1]s\n    peerCertSANs: %[1]s\n", flowList(c.EtcdCertSANs))
	}
	if len(c.EtcdArgs) > 0 {
		b.WriteString("    extraArgs:\n")
		for _, a := range c.EtcdArgs {
			fmt.Fprintf(&b, "    - {name: %s, value: %q}\n", a[0], a[1])
		}
	}
	b.WriteString(ClusterTail(c.Validity, c.EncryptionAlgorithm))
	if c.CAValidity > 0 {
		fmt.Fprintf(&b, "caCertificateValidityPeriod: %s\n", c.CAValidity)
	}
	return b.String()
}

// flowList is a YAML flow sequence of quoted strings.
func flowList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
