package cluster_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/cluster"
	"github.com/pkirenewd/pkirenewd/cluster/clustertest"
	"github.com/pkirenewd/pkirenewd/pki"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

type configMaps struct{ items map[string]*corev1.ConfigMap }

func (c *configMaps) Get(_ context.Context, ns, name string) (*corev1.ConfigMap, error) {
	if cm, ok := c.items[ns+"/"+name]; ok {
		return cm.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
}

func (c *configMaps) Update(_ context.Context, cm *corev1.ConfigMap) (*corev1.ConfigMap, error) {
	c.items[cm.Namespace+"/"+cm.Name] = cm.DeepCopy()
	return cm, nil
}

func clusterInfo(ca *x509.Certificate) *corev1.ConfigMap {
	kc := "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: " +
		base64.StdEncoding.EncodeToString(pki.EncodeCertPEM(ca.Raw)) + "\n    server: https://192.0.2.10:6443\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nusers: null\n"
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-public", Name: "cluster-info"}, Data: map[string]string{"kubeconfig": kc, "jws-kubeconfig-abcdef": "x"}}
}

func ca(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, k
}

func renewed(t *testing.T, old *x509.Certificate, k *ecdsa.PrivateKey, d time.Duration) *x509.Certificate {
	t.Helper()
	i, err := pki.RenewCA(pki.CARenewal{Old: old, Key: k, Now: time.Now(), Validity: d})
	if err != nil {
		t.Fatal(err)
	}
	return i.Cert
}

func published(t *testing.T, b *cluster.CABoard) map[string]*x509.Certificate {
	t.Helper()
	p, err := b.Published(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*x509.Certificate{}
	for _, x := range p {
		key := x.CA + "@lease"
		if strings.HasPrefix(x.Where, "kube-public/") {
			key = x.CA + "@cluster-info"
		}
		out[key] = x.Cert
	}
	return out
}

// Two nodes renew the cluster CA at about the same time and publish in
// either order: the board ends with the later issue, which the other
// node then adopts; an older issue never goes back on the board, and
// cluster-info's CA is replaced only by an issue of the same CA.
func TestCABoardKeepsTheLatestIssue(t *testing.T) {
	ctx := context.Background()
	old, key := ca(t)
	a, b := renewed(t, old, key, 10*time.Hour), renewed(t, old, key, 20*time.Hour)
	cms := &configMaps{items: map[string]*corev1.ConfigMap{"kube-public/cluster-info": clusterInfo(old)}}
	board := &cluster.CABoard{Leases: clustertest.NewLeases(), Lease: "pkirenewd", Namespace: "kube-system", ConfigMaps: cms}
	for _, step := range []struct {
		publish *x509.Certificate
		want    *x509.Certificate
	}{
		{a, a},
		{b, b},
		{a, b},   // a node late with the earlier issue: b stays
		{old, b}, // a node that has not renewed: nothing goes back
	} {
		if err := board.Publish(ctx, "ca", step.publish); err != nil {
			t.Fatal(err)
		}
		got := published(t, board)
		if !got["ca@lease"].Equal(step.want) || !got["ca@cluster-info"].Equal(step.want) {
			t.Fatalf("published lease %v cluster-info %v, want the issue ending %v", got["ca@lease"].NotAfter, got["ca@cluster-info"].NotAfter, step.want.NotAfter)
		}
	}
	if cms.items["kube-public/cluster-info"].Data["jws-kubeconfig-abcdef"] != "x" {
		t.Error("cluster-info's other keys were changed")
	}
	// Another CA under the name, in cluster-info: never replaced there.
	other, _ := ca(t)
	cms.items["kube-public/cluster-info"] = clusterInfo(other)
	if err := board.Publish(ctx, "ca", renewed(t, old, key, 30*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := published(t, board); !got["ca@cluster-info"].Equal(other) {
		t.Error("cluster-info of another CA was overwritten")
	}
	// No cluster-info (kubeadm's bootstrap-token phase skipped): nothing made.
	delete(cms.items, "kube-public/cluster-info")
	if err := board.Publish(ctx, "front-proxy-ca", old); err != nil {
		t.Fatal(err)
	}
	if _, ok := cms.items["kube-public/cluster-info"]; ok {
		t.Error("cluster-info was made")
	}
}

// racingLeases makes the Lease between this node's Get and Create, as
// another node publishing at the same moment does.
type racingLeases struct {
	*clustertest.Leases
	raced bool
	other *x509.Certificate
}

func (r *racingLeases) Get(ctx context.Context, name string, o metav1.GetOptions) (*coordinationv1.Lease, error) {
	l, err := r.Leases.Get(ctx, name, o)
	if apierrors.IsNotFound(err) && !r.raced {
		r.raced = true
		other := &cluster.CABoard{Leases: r.Leases, Lease: name, Namespace: "kube-system"}
		if err := other.Publish(ctx, "etcd-ca", r.other); err != nil {
			return nil, err
		}
	}
	return l, err
}

func TestCABoardPublishesWhenAnotherNodeMadeTheLease(t *testing.T) {
	ctx := context.Background()
	old, key := ca(t)
	mine, theirs := renewed(t, old, key, 20*time.Hour), renewed(t, old, key, 10*time.Hour)
	leases := &racingLeases{Leases: clustertest.NewLeases(), other: theirs}
	board := &cluster.CABoard{Leases: leases, Lease: "pkirenewd", Namespace: "kube-system"}
	if err := board.Publish(ctx, "etcd-ca", mine); err != nil {
		t.Fatalf("publish after another node made the Lease: %v", err)
	}
	if got := published(t, board)["etcd-ca@lease"]; !got.Equal(mine) {
		t.Errorf("the board carries the issue ending %v, want the later one", got.NotAfter)
	}
}
