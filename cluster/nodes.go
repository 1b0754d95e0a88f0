package cluster

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
)

// ControlPlaneLabel marks kubeadm's control-plane nodes: their CA files
// are their own pkirenewd's, not a worker's report.
const ControlPlaneLabel = "node-role.kubernetes.io/control-plane"

// NodeCA is what one worker node reported of its cluster CA: the
// annotation key's value (empty: it never reported).
type NodeCA struct {
	Node     string
	Reported string
}

// WorkerCAs lists the worker nodes with what each reported under
// annotation (see casync.AnnotationCA).
func (b *CABoard) WorkerCAs(ctx context.Context, annotation string) ([]NodeCA, error) {
	cms, ok := b.ConfigMaps.(restConfigMaps)
	if !ok {
		return nil, nil
	}
	var list corev1.NodeList
	err := cms.first(func(rc rest.Interface) error {
		return rc.Get().Resource("nodes").Do(ctx).Into(&list)
	})
	if err != nil {
		return nil, err
	}
	var out []NodeCA
	for _, n := range list.Items {
		if _, cp := n.Labels[ControlPlaneLabel]; cp {
			continue
		}
		out = append(out, NodeCA{Node: n.Name, Reported: n.Annotations[annotation]})
	}
	return out, nil
}
