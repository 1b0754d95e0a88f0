package cplane

import (
	"context"
	"fmt"
	"sort"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Pod is one pod sandbox of a control-plane component as the CRI reports
// it, with its newest container.
type Pod struct {
	SandboxID string
	Ready     bool
	Attempt   uint32
	CreatedAt time.Time
	// Annotations of the sandbox (the kubelet copies the pod's:
	// kubernetes.io/config.source=file for a static pod).
	Annotations map[string]string
	// ContainerID is the newest container of the sandbox ("" if none).
	ContainerID      string
	ContainerRunning bool
	ContainerCreated time.Time
}

// Sandboxes lists the kube-system pod sandboxes carrying labels (e.g.
// component=etcd), each with its newest container, oldest first. Both
// rigs find a component's pods so: the e2e kubelet and the HA rig's
// stand-in label them as kubeadm's static pods are.
func Sandboxes(ctx context.Context, rt runtimeapi.RuntimeServiceClient, labels map[string]string) ([]Pod, error) {
	sel := map[string]string{"io.kubernetes.pod.namespace": "kube-system"}
	for k, v := range labels {
		sel[k] = v
	}
	resp, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: sel}})
	if err != nil {
		return nil, fmt.Errorf("ListPodSandbox %v: %w", labels, err)
	}
	var out []Pod
	for _, s := range resp.Items {
		cs, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: s.Id}})
		if err != nil {
			return nil, fmt.Errorf("ListContainers %v: %w", labels, err)
		}
		out = append(out, podOf(s, cs.Containers))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// podOf is the Pod of a sandbox and its containers (the newest one kept).
func podOf(s *runtimeapi.PodSandbox, cs []*runtimeapi.Container) Pod {
	p := Pod{SandboxID: s.Id, Ready: s.State == runtimeapi.PodSandboxState_SANDBOX_READY, CreatedAt: time.Unix(0, s.CreatedAt),
		Annotations: s.Annotations, Attempt: s.GetMetadata().GetAttempt()}
	for _, c := range cs {
		if created := time.Unix(0, c.CreatedAt); p.ContainerID == "" || created.After(p.ContainerCreated) {
			p.ContainerID, p.ContainerCreated = c.Id, created
			p.ContainerRunning = c.State == runtimeapi.ContainerState_CONTAINER_RUNNING
		}
	}
	return p
}

// OneReady returns the one ready sandbox of pods; none or several is an
// error naming what (a kubelet keeps exactly one per static pod).
func OneReady(what string, pods []Pod) (Pod, error) {
	var ready []Pod
	for _, p := range pods {
		if p.Ready {
			ready = append(ready, p)
		}
	}
	if len(ready) != 1 {
		return Pod{}, fmt.Errorf("%s: %d ready sandboxes (of %d)", what, len(ready), len(pods))
	}
	return ready[0], nil
}

// RemoveSandbox stops and removes a pod sandbox, as pkirenewd's restart
// does through the CRI.
func RemoveSandbox(ctx context.Context, rt runtimeapi.RuntimeServiceClient, id string) error {
	if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("StopPodSandbox %s: %w", id, err)
	}
	if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("RemovePodSandbox %s: %w", id, err)
	}
	return nil
}
