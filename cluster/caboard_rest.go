package cluster

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
)

// The scheme knows ConfigMaps only, for the same reason as the Leases'.
var (
	configMapScheme = runtime.NewScheme()
	configMapCodecs = serializer.NewCodecFactory(configMapScheme)
)

func init() {
	configMapScheme.AddKnownTypes(corev1.SchemeGroupVersion, &corev1.ConfigMap{}, &corev1.Node{}, &corev1.NodeList{})
	metav1.AddToGroupVersion(configMapScheme, corev1.SchemeGroupVersion)
}

// restConfigMaps is ConfigMapClient over client-go's REST clients, one per
// endpoint, asked in turn like the Lease's.
type restConfigMaps []rest.Interface

func (r restConfigMaps) Get(ctx context.Context, ns, name string) (*corev1.ConfigMap, error) {
	var out *corev1.ConfigMap
	return out, r.first(func(c rest.Interface) error {
		out = &corev1.ConfigMap{}
		err := c.Get().Namespace(ns).Resource("configmaps").Name(name).Do(ctx).Into(out)
		return refused(err, Call{Verb: "get", Resource: "configmaps", Namespace: ns, Name: name})
	})
}

func (r restConfigMaps) Update(ctx context.Context, cm *corev1.ConfigMap) (*corev1.ConfigMap, error) {
	var out *corev1.ConfigMap
	return out, r.first(func(c rest.Interface) error {
		out = &corev1.ConfigMap{}
		err := c.Put().Namespace(cm.Namespace).Resource("configmaps").Name(cm.Name).Body(cm).Do(ctx).Into(out)
		return refused(err, Call{Verb: "update", Resource: "configmaps", Namespace: cm.Namespace, Name: cm.Name})
	})
}

// first is the first answer of the API (see failover).
func (r restConfigMaps) first(call func(rest.Interface) error) error {
	return firstAnswer(r, call)
}

// NewCABoard builds the CA board from c: the restart Lease (when c names
// one) and cluster-info, through the endpoints c reaches.
func NewCABoard(c LeaseConfig) (*CABoard, error) {
	cms, err := restClients(c, corev1.SchemeGroupVersion, configMapCodecs)
	if err != nil {
		return nil, err
	}
	b := &CABoard{ConfigMaps: restConfigMaps(cms)}
	if c.Lease == "" {
		return b, nil
	}
	l, err := NewLease(c, nil)
	if err != nil {
		return nil, err
	}
	b.Leases, b.Lease = l.Client, l.Name
	b.Namespace, _, _ = SplitLease(c.Lease)
	return b, nil
}
