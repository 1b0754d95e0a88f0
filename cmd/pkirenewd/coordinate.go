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
	"github.com/pkirenewd/pkirenewd/renew"
)

// coordination returns how this node waits for its turn to restart: the
// cluster lease through the local apiserver with the node's API identity
// (access: its own, made sure of first; nil: admin.conf), and the etcd
// quorum guard. nil when both are off.
func coordination(cfg config.Config, log logrus.FieldLogger, heartbeat func(), access *cluster.Access) func(ctx context.Context, recovering bool) (func(context.Context, string) error, func(), error) {
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
		c := coordinator(cfg, log, manifests.Usable, heartbeat)
		c.Access = access
		h, err := c.Acquire(ctx, recovering)
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

// leaseConfig is how this node reaches the API: its own identity's
// credentials (apiIdentity own) or admin.conf's, the local apiserver
// (server) first.
func leaseConfig(cfg config.Config, server string) cluster.LeaseConfig {
	lc := adminConfig(cfg, server)
	if ownIdentity(cfg) {
		lc.Kubeconfig = filepath.Join(cfg.KubeconfigDir, renew.IdentityName)
	}
	return lc
}

// adminConfig reaches the API with admin.conf.
func adminConfig(cfg config.Config, server string) cluster.LeaseConfig {
	return cluster.LeaseConfig{
		Kubeconfig: filepath.Join(cfg.KubeconfigDir, "admin.conf"), Server: server, Lease: cfg.Lease,
		Identity: cfg.NodeName, Duration: cfg.LeaseDuration, Timeout: 10 * time.Second,
	}
}

// ownIdentity reports whether pkirenewd talks to the API as itself: the
// lease is on and apiIdentity is own.
func ownIdentity(cfg config.Config) bool {
	return cfg.Lease != "" && cfg.APIIdentity == config.APIIdentityOwn
}

// identity is the subject of the node's own API identity (zero: none).
func identity(cfg config.Config) renew.Identity {
	if !ownIdentity(cfg) {
		return renew.Identity{}
	}
	return renew.Identity{User: cluster.IdentityUser(cfg.NodeName), Group: cluster.IdentityGroup}
}

// apiAccess makes sure the node's own identity may take the lease and
// post Events, bootstrapping the RBAC once with admin.conf when allowed;
// one per engine, shared by the lease and the Events so that the
// bootstrap happens once. nil with apiIdentity admin.
func apiAccess(cfg config.Config, log logrus.FieldLogger) *cluster.Access {
	if !ownIdentity(cfg) {
		return nil
	}
	manifests, _ := cri.LoadManifests(cfg.ManifestsDir)
	server := localAPIServer(manifests.Usable)
	return &cluster.Access{
		Own: leaseConfig(cfg, server), Admin: adminConfig(cfg, server), Lease: cfg.Lease,
		Bootstrap: cfg.APIIdentityBootstrap, Log: log,
	}
}

// logIdentity says at start whom pkirenewd talks to the API as.
func logIdentity(cfg config.Config, log logrus.FieldLogger) {
	switch {
	case cfg.Lease == "":
	case ownIdentity(cfg):
		log.WithFields(logrus.Fields{"USER": cluster.IdentityUser(cfg.NodeName), "PATH": filepath.Join(cfg.KubeconfigDir, renew.IdentityName)}).
			Infof("talking to the API as %s (group %s): the lease %s and Events only", cluster.IdentityUser(cfg.NodeName), cluster.IdentityGroup, cfg.Lease)
	default:
		log.WithField("PATH", filepath.Join(cfg.KubeconfigDir, "admin.conf")).
			Warn("apiIdentity admin: the lease and Events use admin.conf, which is cluster-admin (apiIdentity own needs four verbs only)")
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
func eventSink(cfg config.Config, log logrus.FieldLogger, access *cluster.Access) *cluster.EventSink {
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
	sink := &cluster.EventSink{Config: lc, Node: cfg.NodeName, Debug: log.Debugf, Access: access}
	if access != nil {
		access.Event = sink.Event
	}
	return sink
}
