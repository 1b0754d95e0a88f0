package main

import (
	"context"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"

	"github.com/pkirenewd/pkirenewd/cluster"
	"github.com/pkirenewd/pkirenewd/config"
	"github.com/pkirenewd/pkirenewd/cri"
)

// coordination returns how this node waits for its turn to restart: the
// cluster lease through the local apiserver with admin.conf, and the etcd
// quorum guard. nil when both are off.
func coordination(cfg config.Config, log logrus.FieldLogger, heartbeat func()) func(ctx context.Context, recovering bool) (func(context.Context, string) error, func(), error) {
	if cfg.Lease == "" && !cfg.EtcdQuorumGuard {
		return nil
	}
	return func(ctx context.Context, recovering bool) (func(context.Context, string) error, func(), error) {
		// Only the apiserver's and etcd's addresses are read here; the
		// roll that follows reports unusable manifests.
		manifests, err := cri.LoadManifests(cfg.ManifestsDir)
		if err != nil {
			return nil, nil, err
		}
		h, err := coordinator(cfg, log, manifests.Usable, heartbeat).Acquire(ctx, recovering)
		if err != nil {
			return nil, nil, err
		}
		return h.Gate, func() { h.Release(context.Background()) }, nil
	}
}

func coordinator(cfg config.Config, log logrus.FieldLogger, manifests []*cri.Manifest, heartbeat func()) *cluster.Coordinator {
	c := &cluster.Coordinator{LeaseName: cfg.Lease, Wait: cfg.CoordinationTimeout, Log: log, Heartbeat: heartbeat}
	// The local apiserver: a node needs no load balancer, and its own
	// apiserver is the one it restarts.
	server := localAPIServer(manifests)
	for _, m := range manifests {
		switch {
		case m.Component == "etcd" && m.ServingAddr != "" && cfg.EtcdQuorumGuard:
			ca := m.Flag("trusted-ca-file")
			if ca == "" {
				ca = filepath.Join(cfg.PKIDir, "etcd", "ca.crt")
			}
			c.Guard = &cluster.EtcdGuard{
				Endpoint: "https://" + m.ServingAddr, CAFile: ca,
				CertFile: filepath.Join(cfg.PKIDir, "etcd", "healthcheck-client.crt"),
				KeyFile:  filepath.Join(cfg.PKIDir, "etcd", "healthcheck-client.key"),
			}
		}
	}
	if cfg.Lease != "" {
		lc := leaseConfig(cfg, server)
		c.NewLease = func() (*cluster.Lease, error) { return cluster.NewLease(lc, clock.RealClock{}) }
	}
	return c
}

// leaseConfig is how this node reaches the API: admin.conf's credentials,
// the local apiserver (server) first.
func leaseConfig(cfg config.Config, server string) cluster.LeaseConfig {
	return cluster.LeaseConfig{
		Kubeconfig: filepath.Join(cfg.KubeconfigDir, "admin.conf"), Server: server, Lease: cfg.Lease,
		Identity: cfg.NodeName, Duration: cfg.LeaseDuration, Timeout: 10 * time.Second,
	}
}

// localAPIServer is the address of this node's apiserver, from its
// manifest ("" when there is none).
func localAPIServer(manifests []*cri.Manifest) string {
	for _, m := range manifests {
		if m.Component == "kube-apiserver" && m.ServingAddr != "" {
			return "https://" + m.ServingAddr
		}
	}
	return ""
}

// eventSink posts Kubernetes Events about this node with the lease's
// credentials, through this node's own apiserver only (an Event is a
// convenience, not worth a detour); nil when coordination through the API
// is off or the node has no apiserver manifest.
func eventSink(cfg config.Config, log logrus.FieldLogger) *cluster.EventSink {
	if cfg.Lease == "" {
		return nil
	}
	manifests, _ := cri.LoadManifests(cfg.ManifestsDir)
	server := localAPIServer(manifests.Usable)
	if server == "" {
		return nil
	}
	lc := leaseConfig(cfg, server)
	lc.LocalOnly = true
	return &cluster.EventSink{Config: lc, Node: cfg.NodeName, Debug: log.Debugf}
}
