//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pkirenewd/pkirenewd/test/cplane"
)

// componentVersions asks every part of the control plane what it runs:
// the image of each component's running container (from the CRI), the
// apiserver's and etcd's own /version, the kubelet's from its Node.
func componentVersions(ctx context.Context, cp *ControlPlane) (map[string]string, error) {
	out := map[string]string{}
	for _, c := range Components {
		p, err := cp.ReadyPod(ctx, c)
		if err != nil {
			return nil, err
		}
		st, err := cp.Rig.RT.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: p.ContainerID})
		if err != nil || st.Status == nil || st.Status.Image == nil {
			return nil, fmt.Errorf("%s: container status: %v", c, err)
		}
		out[c] = st.Status.Image.Image
	}
	var v struct {
		GitVersion string `json:"gitVersion"`
	}
	if err := getJSON(ctx, cp.Admin, "/version", &v); err != nil {
		return nil, err
	}
	out["kube-apiserver"] += " (/version " + v.GitVersion + ")"
	etcdVersion, err := etcdServerVersion(ctx)
	if err != nil {
		return nil, err
	}
	out["etcd"] += " (/version " + etcdVersion + ")"
	var node struct {
		Status struct {
			NodeInfo struct {
				KubeletVersion string `json:"kubeletVersion"`
			} `json:"nodeInfo"`
		} `json:"status"`
	}
	if err := getJSON(ctx, cp.Admin, "/api/v1/nodes/"+cp.Opts.NodeName, &node); err != nil {
		return nil, err
	}
	out["kubelet"] = node.Status.NodeInfo.KubeletVersion
	return out, nil
}

// etcdServerVersion is etcd's own answer on its client port.
func etcdServerVersion(ctx context.Context) (string, error) {
	cfg, err := cplane.EtcdClientTLS(PKIDir)
	if err != nil {
		return "", err
	}
	body, code, err := cplane.Get(ctx, cfg, "https://127.0.0.1:2379/version", 5*time.Second)
	if err != nil || code != 200 {
		return "", fmt.Errorf("etcd /version: %d %v", code, err)
	}
	var v struct {
		Server string `json:"etcdserver"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Server == "" {
		return "", fmt.Errorf("etcd /version: %q: %v", body, err)
	}
	return v.Server, nil
}

func getJSON(ctx context.Context, c *Client, path string, into any) error {
	b, err := c.Get(ctx, path)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if err := json.Unmarshal(b, into); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// logVersions logs what every component runs and checks that each is of
// the rig's Kubernetes version (etcd: the release its kubeadm names).
func logVersions(t *testing.T, cp *ControlPlane, when string) map[string]string {
	t.Helper()
	vs, err := componentVersions(cp.Context(), cp)
	if err != nil {
		t.Fatalf("versions %s: %v", when, err)
	}
	for _, c := range append(append([]string{}, Components...), "kubelet") {
		t.Logf("versions %s: %-23s %s", when, c, vs[c])
	}
	return vs
}

// wantVersion fails unless every Kubernetes component of vs (not etcd)
// names version.
func wantVersion(t *testing.T, vs map[string]string, version string) {
	t.Helper()
	for c, v := range vs {
		if c != "etcd" && !strings.Contains(v, version) {
			t.Errorf("%s runs %s, want %s", c, v, version)
		}
	}
}
