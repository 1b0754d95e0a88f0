package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pkirenewd/pkirenewd/cri"
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

Exit status: 0 success (or nothing to do), 1 failure (nothing was written).`,
		ValidArgs: renew.Names(),
		RunE: func(cmd *cobra.Command, names []string) error {
			if len(names) > 0 && force {
				o.log.Debug("--force with names: the named certificates are renewed whether due or not")
			}
			r, err := o.renewer(!dryRun)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			// The runtime and the manifests directory are checked before
			// anything is written: a renewal that cannot be followed by
			// its restart is not started. An unusable manifest stops only
			// its own component's restart, after the others.
			var (
				rst       *cri.Restarter
				manifests cri.Manifests
			)
			if restart && !dryRun {
				if manifests, err = cri.LoadManifests(o.cfg.ManifestsDir); err != nil {
					return &exitError{code: 1, err: fmt.Errorf("nothing was written: %w", err)}
				}
				var done func()
				if rst, done, err = o.restarter(cmd.Context()); err != nil {
					return &exitError{code: 1, err: fmt.Errorf("nothing was written: %w", err)}
				}
				defer done()
				if alive := kubeletAlive(o.cfg); alive != nil {
					if err := alive(cmd.Context()); err != nil {
						return &exitError{code: 1, err: fmt.Errorf("nothing was written: %w (a pod stopped now would not come back)", err)}
					}
				}
			}
			if !dryRun {
				unlock, err := renew.Lock(o.cfg.StateDir, o.log)
				if err != nil {
					return &exitError{code: 1, err: err}
				}
				defer unlock()
				if err := r.Recover(); err != nil {
					return &exitError{code: 1, err: err}
				}
			}
			inv, statuses, err := r.Inventory()
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			for _, s := range statuses {
				for _, w := range s.Warnings {
					o.log.WithField("CERT", s.Name).Warn(w)
				}
			}
			plan, err := r.Plan(inv, renew.Selection{Names: names, Force: force})
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("nothing was written:\n%w", err)}
			}
			if len(plan.Items) == 0 {
				fmt.Fprintln(o.stdout, "Nothing is due.", nextRenewal(statuses, o.now()))
				return nil
			}
			if dryRun {
				for _, p := range plan.Items {
					fmt.Fprintf(o.stdout, "would renew %-25s expires %s -> %s\n", p.Name,
						p.Cert.NotAfter.UTC().Format(dateFormat), p.Issued.Cert.NotAfter.UTC().Format(dateFormat))
				}
				fmt.Fprintln(o.stdout, "Dry run: nothing was written.")
				return nil
			}
			res, err := r.Apply(plan)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			for _, p := range plan.Items {
				fmt.Fprintf(o.stdout, "renewed %-25s expires %s (serial %s)\n", p.Name,
					p.Issued.Cert.NotAfter.UTC().Format(dateFormat), renew.CertSerial(p.Issued.Cert))
			}
			fmt.Fprintf(o.stdout, "Previous files backed up in %s\n", res.BackupDir)
			if rst == nil {
				fmt.Fprintln(o.stdout, "Restart the control-plane components that use the renewed files so they load them (pkirenewd restart, or renew --restart).")
				return nil
			}
			if err := restartAfterRenewal(cmd.Context(), o, rst, r, manifests, plan, res); err != nil {
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
