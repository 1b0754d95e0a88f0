package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
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
	// LocalOnly uses Server alone, never the kubeconfig's own server:
	// for what may simply be skipped while the local apiserver is down.
	LocalOnly bool
	// Lease is "namespace/name".
	Lease    string
	Identity string
	Duration time.Duration
	Timeout  time.Duration
	// UserAgent tells pkirenewd's requests apart in the apiserver's audit
	// log (default "pkirenewd").
	UserAgent string
}

// SplitLease parses "namespace/name".
func SplitLease(s string) (ns, name string, err error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("lease %q: want namespace/name", s)
	}
	return ns, name, nil
}

// The scheme knows Leases only. client-go's generated coordination client
// would register every API group of Kubernetes at start-up, which doubled
// the daemon's resident memory (14 -> 31 MiB) for one resource.
var (
	leaseScheme = runtime.NewScheme()
	leaseCodecs = serializer.NewCodecFactory(leaseScheme)
)

func init() {
	if err := coordinationv1.AddToScheme(leaseScheme); err != nil {
		panic(err)
	}
	metav1.AddToGroupVersion(leaseScheme, coordinationv1.SchemeGroupVersion)
}

// restLeases is LeaseClient over client-go's REST client.
type restLeases struct {
	c  rest.Interface
	ns string
}

var _ LeaseClient = (*restLeases)(nil)

func (r *restLeases) Get(ctx context.Context, name string, _ metav1.GetOptions) (*coordinationv1.Lease, error) {
	out := &coordinationv1.Lease{}
	err := r.c.Get().Namespace(r.ns).Resource("leases").Name(name).Do(ctx).Into(out)
	return out, refused(err, leaseCall("get", r.ns, name))
}

func (r *restLeases) Create(ctx context.Context, l *coordinationv1.Lease, _ metav1.CreateOptions) (*coordinationv1.Lease, error) {
	out := &coordinationv1.Lease{}
	err := r.c.Post().Namespace(r.ns).Resource("leases").Body(l).Do(ctx).Into(out)
	return out, refused(err, leaseCall("create", r.ns, ""))
}

func (r *restLeases) Update(ctx context.Context, l *coordinationv1.Lease, _ metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	out := &coordinationv1.Lease{}
	err := r.c.Put().Namespace(r.ns).Resource("leases").Name(l.Name).Body(l).Do(ctx).Into(out)
	return out, refused(err, leaseCall("update", r.ns, l.Name))
}

func leaseCall(verb, ns, name string) Call {
	return Call{Verb: verb, Group: coordinationv1.GroupName, Resource: "leases", Namespace: ns, Name: name}
}

// NewLease builds a Lease from the kubeconfig as it is on disk now.
func NewLease(c LeaseConfig, clk clock.PassiveClock) (*Lease, error) {
	ns, name, err := SplitLease(c.Lease)
	if err != nil {
		return nil, err
	}
	clients, err := restClients(c, coordinationv1.SchemeGroupVersion, leaseCodecs)
	if err != nil {
		return nil, err
	}
	var fo failover
	for _, rcl := range clients {
		fo = append(fo, &restLeases{c: rcl, ns: ns})
	}
	return &Lease{Client: fo, Name: name, Identity: c.Identity, Duration: c.Duration, Clock: clk}, nil
}

// restClients builds, from the kubeconfig as it is on disk now, one REST
// client for gv per endpoint: the local apiserver first, then the
// kubeconfig's own server (the load balancer or controlPlaneEndpoint), for
// while the local one is down — it is the component being restarted.
func restClients(c LeaseConfig, gv schema.GroupVersion, codecs serializer.CodecFactory) ([]rest.Interface, error) {
	data, err := os.ReadFile(c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	rc, err := clientcmd.RESTConfigFromKubeConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Kubeconfig, err)
	}
	hosts := []string{rc.Host}
	switch {
	case c.LocalOnly && c.Server == "":
		return nil, fmt.Errorf("%s: no local apiserver to use", c.Kubeconfig)
	case c.LocalOnly:
		hosts = []string{c.Server}
	case c.Server != "" && c.Server != rc.Host:
		hosts = []string{c.Server, rc.Host}
	}
	rc.Timeout = c.Timeout
	rc.UserAgent = "pkirenewd"
	if c.UserAgent != "" {
		rc.UserAgent = c.UserAgent
	}
	rc.APIPath = "/apis"
	if gv.Group == "" {
		rc.APIPath = "/api" // the core group
	}
	rc.GroupVersion = &gv
	rc.ContentType = runtime.ContentTypeJSON
	rc.NegotiatedSerializer = codecs.WithoutConversion()
	var out []rest.Interface
	for _, h := range hosts {
		hc := rest.CopyConfig(rc)
		hc.Host = h
		rcl, err := rest.RESTClientFor(hc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Kubeconfig, err)
		}
		out = append(out, rcl)
	}
	return out, nil
}

// failover asks each endpoint in turn until one answers. An answer of the
// API (not found, conflict, forbidden ...) is the answer: the endpoints
// share one etcd, so asking another would not change it; only an endpoint
// that cannot be reached passes the call on.
type failover []LeaseClient

var _ LeaseClient = failover(nil)

func (f failover) try(call func(LeaseClient) (*coordinationv1.Lease, error)) (*coordinationv1.Lease, error) {
	var l *coordinationv1.Lease
	err := firstAnswer(f, func(c LeaseClient) error {
		var err error
		l, err = call(c)
		return err
	})
	return l, err
}

// firstAnswer makes call on each endpoint in turn until one answers: an
// answer of the API (not found, conflict, forbidden ...) is the answer,
// only an endpoint that cannot be reached passes the call on.
func firstAnswer[C any](endpoints []C, call func(C) error) error {
	var errs []error
	for _, c := range endpoints {
		err := call(c)
		var status apierrors.APIStatus
		if err == nil || errors.As(err, &status) {
			return err
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (f failover) Get(ctx context.Context, name string, o metav1.GetOptions) (*coordinationv1.Lease, error) {
	return f.try(func(c LeaseClient) (*coordinationv1.Lease, error) { return c.Get(ctx, name, o) })
}

func (f failover) Create(ctx context.Context, l *coordinationv1.Lease, o metav1.CreateOptions) (*coordinationv1.Lease, error) {
	return f.try(func(c LeaseClient) (*coordinationv1.Lease, error) { return c.Create(ctx, l, o) })
}

func (f failover) Update(ctx context.Context, l *coordinationv1.Lease, o metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	return f.try(func(c LeaseClient) (*coordinationv1.Lease, error) { return c.Update(ctx, l, o) })
}
