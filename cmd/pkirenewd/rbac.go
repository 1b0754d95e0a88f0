package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/pkirenewd/pkirenewd/cluster"
	"github.com/pkirenewd/pkirenewd/renew"
)

func newRBACCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "rbac",
		Short: "Print the RBAC manifest of pkirenewd's own API identity",
		Long: `Print the Role and RoleBinding that let pkirenewd's own identity (group
` + cluster.IdentityGroup + `) take the configured lease and post Events, and
nothing else: pkirenewd rbac | kubectl apply -f -. With apiIdentityBootstrap
pkirenewd creates them itself, once, when they are missing.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if o.cfg.Lease == "" {
				return &exitError{code: 2, err: errors.New("no lease configured: pkirenewd does not talk to the API")}
			}
			_, err := io.WriteString(o.stdout, cluster.Manifest(o.cfg.Lease))
			return err
		},
	}
}

// rbacReport is what the API refuses pkirenewd's own identity.
type rbacReport struct {
	User      string   `json:"user" yaml:"user"`
	Missing   []string `json:"missing,omitempty" yaml:"missing,omitempty"`
	Bootstrap bool     `json:"bootstrap" yaml:"bootstrap"`
	Manifest  string   `json:"manifest,omitempty" yaml:"manifest,omitempty"`
	// Unasked says why the API could not be asked (not counted against
	// the exit status: check is about this node's files).
	Unasked string `json:"unasked,omitempty" yaml:"unasked,omitempty"`
}

// rbacCheck asks the API, as pkirenewd's own identity, whether it may make
// its calls; nil when it does not talk to the API as itself, or has no
// usable identity yet (the item says so).
func (o *options) rbacCheck(ctx context.Context, statuses []renew.Status) *rbacReport {
	if !ownIdentity(o.cfg) {
		return nil
	}
	for _, s := range statuses {
		if s.Name == renew.IdentityName && (s.Cert == nil || s.Issue != "" || s.Err != nil || s.State.Unusable()) {
			return nil
		}
	}
	// A node whose API is down (day 366) must not wait long for check.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	a := apiAccess(o.cfg, o.log)
	rep := &rbacReport{User: cluster.IdentityUser(o.cfg.NodeName), Bootstrap: o.cfg.APIIdentityBootstrap}
	missing, err := a.Missing(ctx)
	if err != nil {
		rep.Unasked = err.Error()
		o.log.WithError(err).Warn("cannot ask the API what pkirenewd's own identity may do")
		return rep
	}
	if len(missing) == 0 {
		return nil
	}
	for _, c := range missing {
		rep.Missing = append(rep.Missing, c.String())
	}
	rep.Manifest = cluster.Manifest(o.cfg.Lease)
	o.log.WithField("USER", rep.User).Error(rbacAdvice(rep))
	return rep
}

// rbacAdvice says what is missing and who mends it.
func rbacAdvice(r *rbacReport) string {
	s := fmt.Sprintf("RBAC: the API refuses %s (group %s): %v; ", r.User, cluster.IdentityGroup, r.Missing)
	if r.Bootstrap {
		return s + "the daemon creates the Role and RoleBinding once with admin.conf at its next contact (apiIdentityBootstrap), or apply the manifest below"
	}
	return s + "apiIdentityBootstrap is false: apply the manifest below (pkirenewd rbac | kubectl apply -f -)"
}

// printRBAC is the table's RBAC section.
func printRBAC(w io.Writer, r *rbacReport) error {
	if r == nil {
		return nil
	}
	if r.Unasked != "" {
		_, err := fmt.Fprintf(w, "\nNOTE rbac: cannot ask the API what %s may do: %s\n", r.User, r.Unasked)
		return err
	}
	_, err := fmt.Fprintf(w, "\nRBAC MISSING %s\n%s", rbacAdvice(r), r.Manifest)
	return err
}
