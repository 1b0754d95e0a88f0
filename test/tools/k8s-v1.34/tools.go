//go:build tools

// Package tools pins kubeadm v1.34.4, which test/tools/build-k8s.sh builds.
// It is never compiled into pkirenewd; it exists so that `go mod tidy` keeps
// kubeadm's dependencies in go.mod and go.sum.
package tools

import _ "k8s.io/kubernetes/cmd/kubeadm"
