// Command pkirenewd keeps a kubeadm control-plane node's certificates alive:
// it renews the leaf certificates and kubeconfig credentials from the local
// CAs well before they expire.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
