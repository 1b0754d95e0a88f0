package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/reconcile"
	"github.com/pkirenewd/pkirenewd/renew"
)

func newRenewCmd(o *options) *cobra.Command {
	var dryRun, force, restart bool
	cmd := &cobra.Command{
		Use:   "renew [--dry-run] [--force] [NAME...]",
		Short: "Renew the certificates that are due, or the named ones",
		Long: `Renew what is due now, as one transaction with a backup in stateDir.
With NAMEs, renew those (whether due or not); with --force and no NAME,
renew every certificate pkirenewd manages ('all' is accepted as a NAME
too). --dry-run prepares and verifies the renewals and prints the plan,
but writes nothing.

Names: ` + strings.Join(renew.Names(), ", ") + `.

The kubeadm set and the kubelet's serving pair are transactions of their
own: one that cannot be written does not stop the other. Without NAME or
--force, an item whose files cannot be replaced (a read-only or immutable
directory, an immutable file) is held and named, and the rest renewed.

Exit status: 0 success (or nothing to do), 1 failure: nothing was written,
unless the message says what was renewed and what is still owed or held (a
restart that failed, a kubelet that does not serve its renewed certificate,
an item that cannot be written); check then names it too.`,
		ValidArgs: renew.Names(),
		RunE: func(cmd *cobra.Command, names []string) error {
			if len(names) > 0 && force {
				o.log.Debug("--force with names: the named certificates are renewed whether due or not")
			}
			r, err := o.renewer(!dryRun)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			// What is due is renewed as far as it can be: an item
			// whose files cannot be replaced is held and named, the
			// rest renewed. What is named or forced is all or nothing.
			sel := renew.Selection{Names: names, Force: force, HoldUnwritable: len(names) == 0 && !force}
			if dryRun {
				return dryRunPlan(o, r, sel)
			}
			if _, statuses, err := r.Inventory(); err == nil {
				logWarnings(o, statuses)
			}
			// The same path as the daemon's: recovery, the runtime, the
			// manifests and the kubelet checked before anything is
			// written (with --restart), one transaction, then the roll
			// of what is owed, under the lease.
			e := o.node(o.cfg, r, restart, nil)
			out, err := e.Converge(cmd.Context(), &sel)
			flushEvents(e)
			if out != nil && out.Plan != nil {
				printRenewed(o, r, out, restart)
			}
			if restart && out != nil && out.Owed != nil {
				printRestarts(o, out, err)
			}
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "prepare and verify the renewals, print the plan, write nothing")
	cmd.Flags().BoolVar(&force, "force", false, "renew even what is not due (all when no NAME is given)")
	cmd.Flags().BoolVar(&restart, "restart", false, "then restart, one at a time and health-checked, the static pods that use the renewed files (restoring the previous files if one fails)")
	return cmd
}

func nextRenewal(statuses []renew.Status, now time.Time) string {
	var next *renew.Status
	for i, s := range statuses {
		if !s.Renewable() {
			continue
		}
		if next == nil || s.RenewAt.Before(next.RenewAt) {
			next = &statuses[i]
		}
	}
	if next == nil {
		return ""
	}
	return fmt.Sprintf("Next: %s on %s (in %s).", next.Name, next.RenewAt.UTC().Format(dateFormat),
		shortHumanDuration(next.RenewAt.Sub(now)))
}

// dryRunPlan prepares and verifies the renewals and prints them; nothing is
// written.
func dryRunPlan(o *options, r *renew.Renewer, sel renew.Selection) error {
	inv, statuses, err := r.Inventory()
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	logWarnings(o, statuses)
	plan, err := r.Plan(inv, sel)
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("nothing was written:\n%w", err)}
	}
	if len(plan.Items) == 0 {
		fmt.Fprintln(o.stdout, "Nothing is due.", nextRenewal(statuses, o.now()))
		return nil
	}
	for _, p := range plan.Items {
		if p.Fresh() {
			fmt.Fprintf(o.stdout, "would issue %-25s expires %s (%s)\n", p.Name, p.Issued.Cert.NotAfter.UTC().Format(dateFormat), p.Issue)
			continue
		}
		fmt.Fprintf(o.stdout, "would renew %-25s expires %s -> %s\n", p.Name,
			p.Cert.NotAfter.UTC().Format(dateFormat), p.Issued.Cert.NotAfter.UTC().Format(dateFormat))
	}
	fmt.Fprintln(o.stdout, "Dry run: nothing was written.")
	return nil
}

func logWarnings(o *options, statuses []renew.Status) {
	for _, s := range statuses {
		for _, w := range s.Warnings {
			o.log.WithField("CERT", s.Name).Warn(w)
		}
	}
}

// printRenewed says what the renewal wrote, or when the next one is due.
func printRenewed(o *options, r *renew.Renewer, out *reconcile.Outcome, restart bool) {
	for _, h := range out.Plan.Held {
		fmt.Fprintf(o.stdout, "held    %-25s not renewed: its files cannot be replaced (see the error)\n", h.Name)
	}
	if len(out.Plan.Items) == 0 && len(out.Plan.Held) > 0 {
		return
	}
	if len(out.Plan.Items) == 0 {
		if _, statuses, err := r.Inventory(); err == nil {
			fmt.Fprintln(o.stdout, "Nothing is due.", nextRenewal(statuses, o.now()))
		}
		return
	}
	if out.Result == nil {
		return // refused before anything was written
	}
	for _, p := range out.Plan.Items {
		verb := "renewed"
		if p.Fresh() {
			verb = "issued "
		}
		fmt.Fprintf(o.stdout, "%s %-25s expires %s (serial %s)\n", verb, p.Name,
			p.Issued.Cert.NotAfter.UTC().Format(dateFormat), renew.CertSerial(p.Issued.Cert))
	}
	for _, res := range out.Results {
		if res.BackupDir != "" { // a new file has no previous one
			fmt.Fprintf(o.stdout, "Previous files backed up in %s\n", res.BackupDir)
		}
	}
	if !restart {
		fmt.Fprintln(o.stdout, "Restart the control-plane components that use the renewed files so they load them (pkirenewd restart, or renew --restart).")
	}
}

// printRestarts says what the roll did and, when it stopped, what is left.
func printRestarts(o *options, out *reconcile.Outcome, err error) {
	if len(out.Owed.Components) > 0 {
		fmt.Fprintf(o.stdout, "Restarted %s:\n", strings.Join(out.Owed.Components, ", "))
	}
	printRoll(o, out.Rolled)
	var rerr *cri.RollError
	switch {
	case err != nil && errors.As(err, &rerr) && rerr.Retried != nil:
		fmt.Fprintf(o.stdout, "The previous files were restored from %s and %s restarted on them.\n", out.Owed.BackupDir, rerr.Component)
	case err != nil:
		fmt.Fprintf(o.stdout, "The restarts still owed are recorded in %s; `pkirenewd run` (or renew --restart) finishes them.\n", o.cfg.StateDir)
	default:
		fmt.Fprintf(o.stdout, "All %d restarted components are healthy.\n", len(out.Rolled))
		if out.Owed.Kubelet && kubeletRestarter(o.cfg) != nil {
			fmt.Fprintln(o.stdout, "restarted kubelet                  for its renewed kubelet.conf")
		}
	}
}
