package cplane

import (
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestPodOfKeepsTheNewestContainer(t *testing.T) {
	s := &runtimeapi.PodSandbox{Id: "sb", State: runtimeapi.PodSandboxState_SANDBOX_READY, CreatedAt: 5,
		Metadata: &runtimeapi.PodSandboxMetadata{Attempt: 2}, Annotations: map[string]string{"kubernetes.io/config.source": "file"}}
	p := podOf(s, []*runtimeapi.Container{
		{Id: "old", CreatedAt: 10, State: runtimeapi.ContainerState_CONTAINER_EXITED},
		{Id: "new", CreatedAt: 30, State: runtimeapi.ContainerState_CONTAINER_RUNNING},
		{Id: "mid", CreatedAt: 20, State: runtimeapi.ContainerState_CONTAINER_EXITED},
	})
	if p.SandboxID != "sb" || !p.Ready || p.Attempt != 2 || p.ContainerID != "new" || !p.ContainerRunning ||
		p.Annotations["kubernetes.io/config.source"] != "file" {
		t.Errorf("podOf: %+v", p)
	}
	if p := podOf(&runtimeapi.PodSandbox{Id: "empty", State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}, nil); p.ContainerID != "" || p.Ready || p.ContainerRunning {
		t.Errorf("no containers, not ready: %+v", p)
	}
}

func TestOneReady(t *testing.T) {
	ready, notReady := Pod{SandboxID: "a", Ready: true}, Pod{SandboxID: "b"}
	for _, tc := range []struct {
		name string
		pods []Pod
		want string // "" is an error
	}{
		{"one of two", []Pod{notReady, ready}, "a"},
		{"none", []Pod{notReady}, ""},
		{"nothing", nil, ""},
		{"two", []Pod{ready, {SandboxID: "c", Ready: true}}, ""},
	} {
		p, err := OneReady("etcd-node1", tc.pods)
		switch {
		case tc.want == "" && (err == nil || !strings.HasPrefix(err.Error(), "etcd-node1: ")):
			t.Errorf("%s: %v, %v; want an error naming etcd-node1", tc.name, p, err)
		case tc.want != "" && (err != nil || p.SandboxID != tc.want):
			t.Errorf("%s: %v, %v; want %s", tc.name, p, err, tc.want)
		}
	}
}
