package cri

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"gopkg.in/yaml.v3"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pkirenewd/pkirenewd/internal/fsread"
)

// Sandbox is a pod sandbox as the restart logic sees it.
type Sandbox struct {
	ID          string
	Ready       bool
	CreatedAt   time.Time
	Labels      map[string]string
	Annotations map[string]string
}

// Container is a container of a sandbox.
type Container struct {
	ID      string
	Name    string
	Running bool
	// Attempt is the kubelet's restart count of the container (CRI
	// ContainerMetadata.Attempt): a container that exits is replaced by a
	// new one with the next attempt.
	Attempt uint32
	// StartedAt is when a running container's process started (CRI
	// ContainerStatus): what it read at start is at least this old.
	StartedAt time.Time
}

// Runtime is the part of the CRI the rolling restart needs.
type Runtime interface {
	// PodSandboxes lists the sandboxes whose labels include all of labels.
	PodSandboxes(ctx context.Context, labels map[string]string) ([]Sandbox, error)
	Containers(ctx context.Context, sandboxID string) ([]Container, error)
	StopPodSandbox(ctx context.Context, id string) error
	RemovePodSandbox(ctx context.Context, id string) error
}

// DefaultEndpoints are tried in order when nothing names the runtime:
// containerd, CRI-O, cri-dockerd.
var DefaultEndpoints = []string{
	"unix:///run/containerd/containerd.sock",
	"unix:///run/crio/crio.sock",
	"unix:///var/run/cri-dockerd.sock",
}

// ResolveEndpoint picks the runtime endpoint like crictl does: the
// configured one, else /etc/crictl.yaml's runtime-endpoint, else
// CONTAINER_RUNTIME_ENDPOINT, else the first default socket that exists.
func ResolveEndpoint(configured, crictlYAML string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	if data, err := fsread.Regular(crictlYAML, true); err == nil {
		var c struct {
			RuntimeEndpoint string `yaml:"runtime-endpoint"`
		}
		if err := yaml.Unmarshal(data, &c); err != nil {
			return "", fmt.Errorf("%s: %w", crictlYAML, err)
		}
		if c.RuntimeEndpoint != "" {
			return c.RuntimeEndpoint, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%s: %w", crictlYAML, err)
	}
	if e := os.Getenv("CONTAINER_RUNTIME_ENDPOINT"); e != "" {
		return e, nil
	}
	for _, e := range DefaultEndpoints {
		if st, err := os.Stat(strings.TrimPrefix(e, "unix://")); err == nil && st.Mode()&os.ModeSocket != 0 {
			return e, nil
		}
	}
	return "", fmt.Errorf("no container runtime found: set criEndpoint (--cri-endpoint), /etc/crictl.yaml runtime-endpoint or CONTAINER_RUNTIME_ENDPOINT (tried %s)", strings.Join(DefaultEndpoints, ", "))
}

// Client is a Runtime over the CRI gRPC API.
type Client struct {
	endpoint string
	conn     *grpc.ClientConn
	rt       runtimeapi.RuntimeServiceClient
	// Timeout bounds each call.
	Timeout time.Duration
}

var _ Runtime = (*Client)(nil)

// Dial connects to endpoint ("unix:///path" or a bare path) and checks that
// a CRI runtime answers Version.
func Dial(ctx context.Context, endpoint string) (*Client, error) {
	path := strings.TrimPrefix(endpoint, "unix://")
	if strings.Contains(path, "://") {
		return nil, fmt.Errorf("CRI endpoint %s: only unix sockets are supported", endpoint)
	}
	conn, err := grpc.NewClient("passthrough:///"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)),
	)
	if err != nil {
		return nil, fmt.Errorf("CRI endpoint %s: %w", endpoint, err)
	}
	c := &Client{endpoint: endpoint, conn: conn, rt: runtimeapi.NewRuntimeServiceClient(conn), Timeout: 30 * time.Second}
	vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := c.rt.Version(vctx, &runtimeapi.VersionRequest{})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("container runtime at %s is unreachable: %w", endpoint, err)
	}
	_ = v
	return c, nil
}

// Version reports the runtime's name and version.
func (c *Client) Version(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	v, err := c.rt.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		return "", err
	}
	return v.RuntimeName + " " + v.RuntimeVersion, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Endpoint is the address dialled.
func (c *Client) Endpoint() string { return c.endpoint }

// PodSandboxes implements Runtime.
func (c *Client) PodSandboxes(ctx context.Context, labels map[string]string) ([]Sandbox, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	resp, err := c.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: labels}})
	if err != nil {
		return nil, fmt.Errorf("ListPodSandbox: %w", err)
	}
	var out []Sandbox
	for _, s := range resp.Items {
		out = append(out, Sandbox{
			ID: s.Id, Ready: s.State == runtimeapi.PodSandboxState_SANDBOX_READY,
			CreatedAt: time.Unix(0, s.CreatedAt), Labels: s.Labels, Annotations: s.Annotations,
		})
	}
	return out, nil
}

// Containers implements Runtime.
func (c *Client) Containers(ctx context.Context, sandboxID string) ([]Container, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	resp, err := c.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: sandboxID}})
	if err != nil {
		return nil, fmt.Errorf("ListContainers: %w", err)
	}
	var out []Container
	for _, ct := range resp.Containers {
		ctr := Container{ID: ct.Id, Running: ct.State == runtimeapi.ContainerState_CONTAINER_RUNNING}
		if ct.Metadata != nil {
			ctr.Name, ctr.Attempt = ct.Metadata.Name, ct.Metadata.Attempt
		}
		if ctr.Running {
			// The list carries only the creation time; the process may
			// have started later, and it is the start that counts.
			st, err := c.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ct.Id})
			if err != nil {
				return nil, fmt.Errorf("ContainerStatus %.13s: %w", ct.Id, err)
			}
			if s := st.GetStatus(); s != nil && s.StartedAt != 0 {
				ctr.StartedAt = time.Unix(0, s.StartedAt)
			}
		}
		out = append(out, ctr)
	}
	return out, nil
}

// StopPodSandbox implements Runtime.
func (c *Client) StopPodSandbox(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	_, err := c.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
	return err
}

// RemovePodSandbox implements Runtime.
func (c *Client) RemovePodSandbox(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	_, err := c.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
	return err
}
