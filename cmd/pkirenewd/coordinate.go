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
	var server string
	for _, m := range manifests {
		switch {
		case m.Component == "kube-apiserver" && m.ServingAddr != "":
			// The local apiserver: a node needs no load balancer, and
			// its own apiserver is the one it restarts.
			server = "https://" + m.ServingAddr
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
		lc := cluster.LeaseConfig{
			Kubeconfig: filepath.Join(cfg.KubeconfigDir, "admin.conf"), Server: server, Lease: cfg.Lease,
			Identity: cfg.NodeName, Duration: cfg.LeaseDuration, Timeout: 10 * time.Second,
		}
		c.NewLease = func() (*cluster.Lease, error) { return cluster.NewLease(lc, clock.RealClock{}) }
	}
	return c
}
