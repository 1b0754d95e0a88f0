// Command pkigen writes a throwaway kubeadm-shaped PKI (certificates,
// keys and kubeconfigs) for the demo and for manual experiments.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pkigen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o renewtest.Options
	age := fs.Duration("age", 0, "how long ago the leaf certificates were issued")
	fs.StringVar(&o.Algorithm, "algorithm", "RSA-2048", "RSA-2048, RSA-3072, RSA-4096, ECDSA-P256 or ECDSA-P384")
	fs.StringVar(&o.NodeName, "node-name", "node1", "node name")
	fs.DurationVar(&o.Validity, "validity", 365*24*time.Hour, "leaf validity")
	fs.BoolVar(&o.ExternalEtcd, "external-etcd", false, "leave out the etcd CA and certificates")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: pkigen [flags] DIR")
		return 2
	}
	o.NotBefore = time.Now().Add(-*age)
	l, err := renewtest.MakePKI(fs.Arg(0), o)
	if err != nil {
		fmt.Fprintln(stderr, "pkigen:", err)
		return 1
	}
	fmt.Fprintf(stdout, "kubeadm-shaped PKI in %s, kubeconfigs in %s\n", l.PKIDir, l.KubeconfigDir)
	return 0
}
