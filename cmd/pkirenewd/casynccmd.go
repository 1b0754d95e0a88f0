package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pkirenewd/pkirenewd/casync"
)

// defaultKubeletConf is where kubeadm join leaves the kubelet's kubeconfig.
const defaultKubeletConf = "/etc/kubernetes/kubelet.conf"

func newCACmd(o *options) *cobra.Command {
	ca := &cobra.Command{
		Use:   "ca",
		Short: "The cluster CA certificate on this node",
		Args:  cobra.NoArgs,
	}
	ca.AddCommand(newCASyncCmd(o))
	return ca
}

func newCASyncCmd(o *options) *cobra.Command {
	var kubeconfigPath string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "sync [--kubeconfig FILE] [--pki-dir DIR] [--dry-run]",
		Short: "On a worker: take the CA certificate the control plane re-issued with the same key",
		Long: `Bring this worker's copies of the cluster CA certificate (pkiDir/ca.crt and
the certificate-authority-data of the kubelet's kubeconfig) to the one the
control plane publishes in kube-public/cluster-info, before the old one
ends. cluster-info is read anonymously from the kubeconfig's server, which
is verified against the local ca.crt (once that has ended, as of just
before its end: the key is what is trusted).

The published certificate is accepted only if it has the public key of the
local one, the same subject and SubjectKeyId, is a self-signed CA, and ends
later. Then ca.crt and every kubeconfig cluster that held an older
certificate of that CA are written as one transaction with a backup in
stateDir (nothing else in the kubeconfig changes), the kubelet is restarted
(kubeletRestartCommand, else kubelet.service) and must answer its healthz,
and the node reports the CA it holds on its own Node, with the kubelet's
credentials: annotation ` + casync.AnnotationCA + `.

Meant for the pkirenewd-ca-sync.timer on each worker.

Exit status: 0 current or updated (and reported), 1 refused (nothing
written) or failed, the reason named.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s := o.caSyncer(kubeconfigPath, dryRun)
			res, err := s.Sync(cmd.Context())
			if res != nil {
				printCASync(o, s, res, dryRun)
			}
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&kubeconfigPath, "kubeconfig", defaultKubeletConf, "the kubelet's kubeconfig: its server is asked, its CA updated, its credentials report")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "fetch and decide, print what would be written, write nothing")
	return cmd
}

// caSyncer wires the sync to the node: the files, the state dir, the
// kubelet's restart and healthz as for a renewal, the node's name.
func (o *options) caSyncer(kubeconfigPath string, dryRun bool) *casync.Syncer {
	s := &casync.Syncer{
		CACertPath:     filepath.Join(o.cfg.PKIDir, "ca.crt"),
		KubeconfigPath: kubeconfigPath,
		StateDir:       o.cfg.StateDir,
		DryRun:         dryRun,
		Fetch: func(ctx context.Context, server string, local *x509.Certificate) ([]byte, error) {
			return casync.FetchClusterInfo(ctx, server, local, o.clock.Now)
		},
		RestartKubelet: kubeletRestarter(o.cfg),
		KubeletHealthy: kubeletAlive(o.cfg),
		Report: func(ctx context.Context, fingerprint string) (string, error) {
			return casync.ReportNode(ctx, kubeconfigPath, o.cfg.NodeName, fingerprint)
		},
		Clock: o.clock,
		Log:   o.log,
	}
	return s
}

func printCASync(o *options, s *casync.Syncer, res *casync.Result, dryRun bool) {
	p := res.Plan
	what := fmt.Sprintf("CA certificate sha256:%s, ends %s", casync.Fingerprint(p.Published), p.Published.NotAfter.UTC().Format("2006-01-02T15:04:05Z"))
	switch {
	case p.Current():
		fmt.Fprintf(o.stdout, "current   %s and %s hold the published %s\n", s.CACertPath, s.KubeconfigPath, what)
	case dryRun:
		fmt.Fprintf(o.stdout, "would write %s (%s)\n", paths(p), what)
	default:
		fmt.Fprintf(o.stdout, "updated   %s to the published %s (backup in %s)\n", paths(p), what, res.BackupDir)
	}
	if len(p.Clusters) > 0 {
		fmt.Fprintf(o.stdout, "          kubeconfig clusters: %s\n", strings.Join(p.Clusters, ", "))
	}
	if res.Restarted {
		fmt.Fprintln(o.stdout, "restarted kubelet, healthy")
	}
	if res.Node != "" {
		fmt.Fprintf(o.stdout, "reported  Node %s: %s=%s\n", res.Node, casync.AnnotationCA, casync.Fingerprint(p.Published))
	}
}

func paths(p *casync.Plan) string {
	var out []string
	for _, c := range p.Changes {
		out = append(out, c.Path)
	}
	return strings.Join(out, ", ")
}
