//go:build e2e

package e2e

import "github.com/pkirenewd/pkirenewd/test/kubeclient"

// Client is the shared test client (test/kubeclient): a kubeconfig read
// again for every request, so a renewed one is used at once.
type Client = kubeclient.Client

// IsStatus reports whether err is an API answer with the given code.
var IsStatus = kubeclient.IsStatus
