package cluster

import (
	"fmt"
	"os"
	"strings"
	"time"

	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"
)

// LeaseConfig names a lease and how to reach the API for it.
type LeaseConfig struct {
	// Kubeconfig holds the node's admin credentials (admin.conf).
	Kubeconfig string
	// Server, when set, replaces the kubeconfig's server: the local
	// apiserver, so a node needs no load balancer to coordinate.
	Server string
	// Lease is "namespace/name".
	Lease    string
	Identity string
	Duration time.Duration
	Timeout  time.Duration
}

// SplitLease parses "namespace/name".
func SplitLease(s string) (ns, name string, err error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("lease %q: want namespace/name", s)
	}
	return ns, name, nil
}

// NewLease builds a Lease from the kubeconfig as it is on disk now.
func NewLease(c LeaseConfig, clk clock.PassiveClock) (*Lease, error) {
	ns, name, err := SplitLease(c.Lease)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	rc, err := clientcmd.RESTConfigFromKubeConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Kubeconfig, err)
	}
	if c.Server != "" {
		rc.Host = c.Server
	}
	rc.Timeout = c.Timeout
	rc.UserAgent = "pkirenewd"
	cs, err := coordinationv1client.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Kubeconfig, err)
	}
	return &Lease{Client: cs.Leases(ns), Name: name, Identity: c.Identity, Duration: c.Duration, Clock: clk}, nil
}
