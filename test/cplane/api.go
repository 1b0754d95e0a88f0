package cplane

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pkirenewd/pkirenewd/test/kubeclient"
)

// BindClusterAdmins makes the ClusterRoleBinding kubeadm:cluster-admins ->
// cluster-admin that a full `kubeadm init` makes (admin.conf's group has
// no rights without it), with super-admin.conf's client
// (system:masters); it retries for a minute while the apiserver's RBAC
// bootstrap is not done, and an existing binding is fine.
func BindClusterAdmins(p Poller, super *kubeclient.Client) error {
	crb := map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
		"metadata": map[string]any{"name": "kubeadm:cluster-admins"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
		"subjects": []any{map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "kubeadm:cluster-admins"}},
	}
	return p.Poll(time.Minute, 500*time.Millisecond, "ClusterRoleBinding kubeadm:cluster-admins", func(ctx context.Context) error {
		_, err := super.Create(ctx, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", crb)
		if err == nil || kubeclient.IsStatus(err, http.StatusConflict) {
			return nil
		}
		return err
	})
}

// WriteSandboxes writes one line per pod sandbox the runtime has (ID,
// name, state, attempt, creation time) to path, for the logs, and
// returns the IDs.
func WriteSandboxes(ctx context.Context, rt runtimeapi.RuntimeServiceClient, path string) ([]string, error) {
	resp, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return nil, fmt.Errorf("ListPodSandbox: %w", err)
	}
	var b strings.Builder
	var ids []string
	for _, s := range resp.Items {
		ids = append(ids, s.Id)
		fmt.Fprintf(&b, "%s %s %s attempt=%d created=%s\n", s.Id, s.GetMetadata().GetName(), s.State, s.GetMetadata().GetAttempt(),
			time.Unix(0, s.CreatedAt).UTC().Format(time.RFC3339Nano))
	}
	return ids, os.WriteFile(path, []byte(b.String()), 0o644)
}

// EtcdHealth judges an answer of etcd's /health: 200 and
// {"health":"true"} (a member with a leader that served a linearizable
// read).
func EtcdHealth(body []byte, code int) error {
	var h struct {
		Health string `json:"health"`
	}
	if err := json.Unmarshal(body, &h); err != nil || h.Health != "true" || code != http.StatusOK {
		return fmt.Errorf("/health: %d %s", code, strings.TrimSpace(string(body)))
	}
	return nil
}

// WaitReady waits until the apiserver answers /readyz "ok" to client.
func WaitReady(p Poller, client *kubeclient.Client, timeout time.Duration) error {
	return p.Poll(timeout, 250*time.Millisecond, "kube-apiserver /readyz with "+filepath.Base(client.Kubeconfig), client.Ready)
}
