//go:build tools

// Package tools pins the Kubernetes v1.36.3 main packages that
// test/tools/build-k8s.sh builds (set "full"). It is never compiled into
// pkirenewd; it exists so that `go mod tidy` keeps their dependencies in
// go.mod and go.sum.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
