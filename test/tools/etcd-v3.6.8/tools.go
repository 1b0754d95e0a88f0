//go:build tools

// Package tools pins the etcd main package that test/tools/build-k8s.sh builds.
// etcd lives in its own module, apart from test/tools/k8s*, so that its own
// dependencies (grpc, otel, etcd client) do not change the Kubernetes build.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
