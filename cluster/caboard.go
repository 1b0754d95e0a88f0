package cluster

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"github.com/pkirenewd/pkirenewd/kubeconfig"
	"github.com/pkirenewd/pkirenewd/pki"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// caAnnotation is the restart Lease's annotation that carries a CA's
// certificate (never its key: every control-plane node has the key
// already) for the other control-plane nodes.
func caAnnotation(ca string) string { return "pkirenewd.io/" + ca + ".crt" }

// ClusterInfo is kubeadm's discovery ConfigMap: workers and `kubeadm join`
// take the cluster CA from its kubeconfig.
const (
	ClusterInfoNamespace = metav1.NamespacePublic
	ClusterInfoName      = "cluster-info"
)

// PublishedCA is a CA certificate the cluster carries.
type PublishedCA struct {
	CA    string // ca, etcd-ca, front-proxy-ca
	Where string
	Cert  *x509.Certificate
}

// ConfigMapClient is what the CA board needs of ConfigMaps.
type ConfigMapClient interface {
	Get(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error)
	Update(ctx context.Context, cm *corev1.ConfigMap) (*corev1.ConfigMap, error)
}

// CABoard is where control-plane nodes tell each other, and the workers,
// about a renewed CA: the restart Lease's annotations (all three CAs, for
// the other control-plane nodes) and cluster-info (the cluster CA, for
// workers and joins). A renewal is published only over an older issue of
// the same CA, so the latest issue wins and the nodes never diverge.
type CABoard struct {
	// Leases and Lease: the restart Lease (nil: a node alone).
	Leases LeaseClient
	Lease  string // name, in the Leases' namespace
	// ConfigMaps reaches cluster-info (nil: not published there).
	ConfigMaps ConfigMapClient
	// Namespace is the Lease's, for Where.
	Namespace string
}

// Published reads every CA certificate the board carries. An object that
// does not exist carries none.
func (b *CABoard) Published(ctx context.Context) ([]PublishedCA, error) {
	var out []PublishedCA
	if b.Leases != nil {
		l, err := b.Leases.Get(ctx, b.Lease, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, err
		default:
			for _, ca := range []string{"ca", "etcd-ca", "front-proxy-ca"} {
				if c := parseOne(l.Annotations[caAnnotation(ca)]); c != nil {
					out = append(out, PublishedCA{CA: ca, Where: b.Namespace + "/" + b.Lease + " (lease annotation " + caAnnotation(ca) + ")", Cert: c})
				}
			}
		}
	}
	if b.ConfigMaps != nil {
		cm, err := b.ConfigMaps.Get(ctx, ClusterInfoNamespace, ClusterInfoName)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, err
		default:
			clusters, err := kubeconfig.ClusterCAs([]byte(cm.Data["kubeconfig"]))
			if err != nil {
				return nil, fmt.Errorf("%s/%s: %w", ClusterInfoNamespace, ClusterInfoName, err)
			}
			for _, c := range clusters {
				if cert := parseOne(string(c.Data)); cert != nil {
					out = append(out, PublishedCA{CA: "ca", Where: ClusterInfoNamespace + "/" + ClusterInfoName, Cert: cert})
				}
			}
		}
	}
	return out, nil
}

func parseOne(s string) *x509.Certificate {
	if s == "" {
		return nil
	}
	c, err := pki.ParseCertPEM([]byte(s))
	if err != nil {
		return nil
	}
	return c
}

// Supersedes reports whether cert may replace current on the board: a
// later issue of the same CA (pki.Supersedes). Anything else is another
// CA's, or would go back.
func Supersedes(cert, current *x509.Certificate) bool {
	return current == nil || pki.Supersedes(current, cert)
}

// Publish puts cert, the certificate of CA ca on this node, on the board
// where the board carries an older issue of it (or, on the Lease, none).
// cluster-info is only updated, never made: kubeadm makes it, and a
// cluster without it has no joins to serve. A conflict (another node, or
// the lease's holder, wrote meanwhile, or made the Lease) is read again
// and decided again.
func (b *CABoard) Publish(ctx context.Context, ca string, cert *x509.Certificate) error {
	for try := 0; ; try++ {
		err := b.publishOnce(ctx, ca, cert)
		// Another writer first: a conflict, or the Lease made meanwhile.
		if err == nil || !(apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)) || try == 4 {
			return err
		}
	}
}

func (b *CABoard) publishOnce(ctx context.Context, ca string, cert *x509.Certificate) error {
	if b.Leases != nil {
		if err := b.publishLease(ctx, ca, cert); err != nil {
			return fmt.Errorf("lease %s/%s: %w", b.Namespace, b.Lease, err)
		}
	}
	if b.ConfigMaps != nil && ca == "ca" {
		if err := b.publishClusterInfo(ctx, cert); err != nil {
			return fmt.Errorf("%s/%s: %w", ClusterInfoNamespace, ClusterInfoName, err)
		}
	}
	return nil
}

func encode(cert *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
}

func (b *CABoard) publishLease(ctx context.Context, ca string, cert *x509.Certificate) error {
	l, err := b.Leases.Get(ctx, b.Lease, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		// A Lease with no holder is free: the restarts' coordination
		// takes it as it would a new one.
		l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: b.Lease, Namespace: b.Namespace, Annotations: map[string]string{caAnnotation(ca): encode(cert)}}}
		_, err = b.Leases.Create(ctx, l, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	cur := parseOne(l.Annotations[caAnnotation(ca)])
	if cur != nil && (cur.Equal(cert) || !Supersedes(cert, cur)) {
		return nil
	}
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Annotations[caAnnotation(ca)] = encode(cert)
	_, err = b.Leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

func (b *CABoard) publishClusterInfo(ctx context.Context, cert *x509.Certificate) error {
	cm, err := b.ConfigMaps.Get(ctx, ClusterInfoNamespace, ClusterInfoName)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	raw := []byte(cm.Data["kubeconfig"])
	out, names, err := kubeconfig.WithClusterCA(raw, []byte(encode(cert)), func(current []byte) bool {
		c := parseOne(string(current))
		return c != nil && !c.Equal(cert) && Supersedes(cert, c)
	})
	if err != nil || len(names) == 0 || bytes.Equal(out, raw) {
		return err
	}
	cm.Data["kubeconfig"] = string(out)
	_, err = b.ConfigMaps.Update(ctx, cm)
	return err
}
