package main

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/pkirenewd/pkirenewd/cluster"
	"github.com/pkirenewd/pkirenewd/config"
	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/kubeconfig"
	"github.com/pkirenewd/pkirenewd/renew"
)

// caBoard is the CA board through this node's own apiserver with the
// lease's credentials (nil: coordination through the API is off, or the
// node has no apiserver manifest). Built for each use: the kubeconfig is
// read as it is on disk then, renewed or not.
func caBoard(cfg config.Config) (*cluster.CABoard, error) {
	if cfg.Lease == "" {
		return nil, nil
	}
	manifests, _ := cri.LoadManifests(cfg.ManifestsDir)
	lc := leaseConfig(cfg, localAPIServer(manifests.Usable))
	if lc.Server == "" {
		// No manifest says where this node's apiserver is: a kubeconfig
		// that points at this host says it too; any other server is not
		// asked on every look.
		lc.Server = loopbackServer(lc.Kubeconfig)
	}
	if lc.Server == "" {
		return nil, nil
	}
	lc.LocalOnly, lc.Timeout = true, 3*time.Second
	return cluster.NewCABoard(lc)
}

// loopbackServer is the kubeconfig's server when it is on this host
// (127.0.0.1, ::1, localhost), else "".
func loopbackServer(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	kc, err := kubeconfig.Parse(data)
	if err != nil {
		return ""
	}
	u, err := url.Parse(kc.Server)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(u.Hostname()); (ip != nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
		return kc.Server
	}
	return ""
}

// publishedCAs reads what the board carries, for the renewer's CA
// holders. Optional: when the API cannot be asked, the files alone decide
// (said at debug; the Lease's own errors are what the operator sees).
func publishedCAs(cfg config.Config, log logrus.FieldLogger) func() []renew.Published {
	if cfg.Lease == "" {
		return nil
	}
	return func() []renew.Published {
		b, err := caBoard(cfg)
		if b == nil || err != nil {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		pub, err := b.Published(ctx)
		if err != nil {
			log.WithError(err).Debug("the CA certificates the cluster carries could not be read")
			return nil
		}
		out := make([]renew.Published, 0, len(pub))
		for _, p := range pub {
			out = append(out, renew.Published{CA: p.CA, Where: p.Where, Cert: p.Cert})
		}
		return out
	}
}

// publishCA is the engine's PublishCA over the board (nil: off), as the
// node's own identity once access is made sure of (nil access: admin.conf).
func publishCA(cfg config.Config, access *cluster.Access) func(ctx context.Context, ca string, cert *x509.Certificate) error {
	if cfg.Lease == "" {
		return nil
	}
	return func(ctx context.Context, ca string, cert *x509.Certificate) error {
		b, err := caBoard(cfg)
		if b == nil || err != nil {
			return err
		}
		if access != nil {
			if err := access.Ensure(ctx); err != nil {
				return err
			}
		}
		err = b.Publish(ctx, ca, cert)
		var fe *cluster.ForbiddenError
		if errors.As(err, &fe) && access != nil {
			access.Refused(fe)
		}
		return err
	}
}
