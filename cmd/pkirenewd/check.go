package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/reconcile"
	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/store"
)

// Exit statuses of `pkirenewd check`.
const (
	checkOK     = 0
	checkDue    = 1
	checkBroken = 2
)

func newCheckCmd(o *options) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Show when each certificate expires and will be renewed",
		Long: `Like 'kubeadm certs check-expiration', plus when pkirenewd will renew each
item, and the restarts a renewal still owes. Exit status: 0 all fine, 1
something is due, a CA is within caWarnBefore of expiry or restarts are
owed, 2 something is expired, missing or broken.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" && output != "yaml" {
				return &exitError{code: 2, err: fmt.Errorf("-o: unknown format %q (table, json, yaml)", output)}
			}
			r, err := o.renewer(false)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			inv, statuses, err := r.Inventory()
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			unwritableInDaemon(statuses)
			now := o.now()
			rep := newReport(statuses, now)
			rep.CAHolders = caHolders(inv)
			rep.Workers = workerReports(cmd.Context(), o, inv)
			owed, err := renew.LoadPending(o.cfg.StateDir)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if !owed.Empty() {
				rep.PendingRestarts = append(rep.PendingRestarts, owed.Components...)
				if owed.Kubelet {
					rep.PendingRestarts = append(rep.PendingRestarts, "kubelet")
				}
			}
			rep.StaleComponents, rep.UnseenComponents, rep.Holds = o.observe(cmd.Context(), r)
			rep.KubeletServing = o.kubeletServingReport(cmd.Context(), r)
			if pending, err := store.TransactionPending(o.cfg.StateDir); err == nil && pending {
				rep.TransactionPending = true
			}
			rep.Unwritable = writeProblems(o.cfg)
			rep.Metrics = metricsNote(cmd.Context(), o.cfg.MetricsAddress)
			rep.RBAC = o.rbacCheck(cmd.Context(), statuses)
			if h, ok := reconcile.UpgradeUnderWay(reconcile.KubeadmTmp(o.cfg.ManifestsDir), now, nil); ok {
				rep.KubeadmUpgrade = h.Why
			}
			switch output {
			case "json":
				enc := json.NewEncoder(o.stdout)
				enc.SetIndent("", "    ")
				err = enc.Encode(rep)
			case "yaml":
				enc := yaml.NewEncoder(o.stdout)
				enc.SetIndent(2)
				err = enc.Encode(rep)
			default:
				err = printTable(o.stdout, rep)
			}
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			for _, s := range statuses {
				logStatus(o, s)
			}
			if code := checkCode(statuses, rep); code != checkOK {
				return &exitError{code: code}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	return cmd
}

func logStatus(o *options, s renew.Status) {
	l := o.log.WithField("CERT", s.Name)
	for _, w := range s.Warnings {
		l.Warn(w)
	}
	switch {
	case s.Err != nil:
		l.WithError(s.Err).Error("broken")
	case s.Missing:
		l.WithField("PATH", s.CertPath).Error("missing")
	case s.RotationStuck():
		l.WithField("PATH", s.CertPath).Errorf("the %s has not rotated this certificate though it is past 90%% of its life: rotation is stuck (CSR approval? the clock?); the node drops out when it expires", s.RotatedBy)
	case s.Held != "":
		l.Error("due but not renewed: " + s.Held)
	case s.Unwritable != "":
		l.WithField("PATH", s.CertPath).Error("due and held, not renewed: " + s.Unwritable)
	case s.State == pki.StateNotYetValid:
		l.WithField("NOT_BEFORE", s.Cert.NotBefore.UTC().Format(time.RFC3339)).Error("not valid yet (issued under a clock that was ahead): unusable now; pkirenewd renews it at once")
	case s.Kind == renew.KindCA && s.State != pki.StateOK && s.WarnOnly:
		l.WithField("NOT_AFTER", s.Cert.NotAfter.UTC().Format(time.RFC3339)).Warn("CA expires soon and is renewed by hand here (caRenewal: manual, or its key is elsewhere): run `pkirenewd renew " + s.Name + "`")
	case s.Kind == renew.KindCA && s.State != pki.StateOK:
		l.WithField("NOT_AFTER", s.Cert.NotAfter.UTC().Format(time.RFC3339)).Warn("CA due: the daemon renews it with its own key and brings its holders along")
	}
}

// checkCode is check's exit status: 0 only for what it saw and found
// fine. Restarts owed, stale or unseen components, an interrupted
// renewal, a kubelet serving an old certificate, a directory that cannot
// be written and a hold each make it at least 1.
func checkCode(statuses []renew.Status, rep report) int {
	code := exitFor(statuses)
	servingStale := rep.KubeletServing != nil && rep.KubeletServing.Stale
	attention := len(rep.PendingRestarts) > 0 || len(rep.StaleComponents) > 0 || len(rep.UnseenComponents) > 0 ||
		rep.TransactionPending || servingStale || len(rep.Unwritable) > 0 || len(rep.Holds) > 0 || oldHolders(rep.CAHolders) > 0 || oldWorkers(rep.Workers) > 0 ||
		(rep.RBAC != nil && len(rep.RBAC.Missing) > 0)
	if code == checkOK && attention {
		code = checkDue
	}
	return code
}

func exitFor(statuses []renew.Status) int {
	code := checkOK
	for _, s := range statuses {
		switch {
		case s.Err != nil || s.Missing || s.State.Unusable():
			return checkBroken
		case s.State == pki.StateDue || s.Held != "" || s.Unwritable != "":
			code = checkDue
		}
	}
	return code
}

// reportCert carries kubeadm's output.kubeadm.k8s.io/v1alpha3 Certificate
// fields, then pkirenewd's own.
type reportCert struct {
	Name                 string     `json:"name" yaml:"name"`
	ExpirationDate       *time.Time `json:"expirationDate,omitempty" yaml:"expirationDate,omitempty"`
	ResidualTime         int64      `json:"residualTime" yaml:"residualTime"`
	ExternallyManaged    bool       `json:"externallyManaged" yaml:"externallyManaged"`
	CertificateAuthority string     `json:"caName,omitempty" yaml:"caName,omitempty"`
	Missing              bool       `json:"missing" yaml:"missing"`

	Path      string     `json:"path" yaml:"path"`
	RenewAt   *time.Time `json:"renewAt,omitempty" yaml:"renewAt,omitempty"`
	State     string     `json:"state" yaml:"state"`
	RotatedBy string     `json:"rotatedBy,omitempty" yaml:"rotatedBy,omitempty"`
	Error     string     `json:"error,omitempty" yaml:"error,omitempty"`
	// Held says why a due certificate is not renewed (its CA ends first).
	Held string `json:"held,omitempty" yaml:"held,omitempty"`
	// Unwritable says why a due item is held: its files cannot be
	// replaced (here, or in the running daemon's sandbox), and the fix.
	Unwritable string `json:"unwritable,omitempty" yaml:"unwritable,omitempty"`
	// Unmanaged says why pkirenewd only reports it; Note who looks
	// after it (the kubelet's serving certificate).
	Unmanaged string `json:"unmanaged,omitempty" yaml:"unmanaged,omitempty"`
	Note      string `json:"note,omitempty" yaml:"note,omitempty"`
	// Issue says why pkirenewd's own identity is issued anew at the next
	// renewal (none yet, another CA, another node).
	Issue string `json:"issue,omitempty" yaml:"issue,omitempty"`
}

// kubeletServingReport compares the kubelet's self-signed serving
// certificate on disk with the one it serves.
type kubeletServingReport struct {
	Path         string `json:"path" yaml:"path"`
	Address      string `json:"address" yaml:"address"`
	FileSerial   string `json:"fileSerial" yaml:"fileSerial"`
	ServedSerial string `json:"servedSerial,omitempty" yaml:"servedSerial,omitempty"`
	// Stale: it serves an older certificate than the file (a restart is
	// owed).
	Stale bool `json:"stale" yaml:"stale"`
}

type report struct {
	APIVersion             string       `json:"apiVersion" yaml:"apiVersion"`
	Kind                   string       `json:"kind" yaml:"kind"`
	Certificates           []reportCert `json:"certificates" yaml:"certificates"`
	CertificateAuthorities []reportCert `json:"certificateAuthorities" yaml:"certificateAuthorities"`
	// PendingRestarts are restarts a committed renewal still owes.
	PendingRestarts []string `json:"pendingRestarts,omitempty" yaml:"pendingRestarts,omitempty"`
	// StaleComponents run on credentials older than the files on disk,
	// as the runtime and the files show now.
	StaleComponents []staleComponent `json:"staleComponents,omitempty" yaml:"staleComponents,omitempty"`
	// KubeletServing: what the kubelet serves, when pkirenewd renews its
	// self-signed serving certificate and the kubelet answers.
	KubeletServing *kubeletServingReport `json:"kubeletServing,omitempty" yaml:"kubeletServing,omitempty"`
	// TransactionPending: an interrupted renewal is recorded in stateDir;
	// the next pkirenewd command or daemon cycle completes or undoes it.
	TransactionPending bool `json:"transactionPending,omitempty" yaml:"transactionPending,omitempty"`
	// UnseenComponents could not be observed: whether they run on old
	// credentials is unknown, and check never calls that fine.
	UnseenComponents []unseenComponent `json:"unseenComponents,omitempty" yaml:"unseenComponents,omitempty"`
	// Holds are why pkirenewd writes and restarts nothing now (someone
	// else changes the node), each with when it ends at the latest.
	Holds []holdReport `json:"holds,omitempty" yaml:"holds,omitempty"`
	// KubeadmUpgrade says why kubeadm is upgrading the node now: pkirenewd
	// writes and restarts nothing until it has finished, and what is stale
	// meanwhile is kubeadm's to replace.
	KubeadmUpgrade string `json:"kubeadmUpgrade,omitempty" yaml:"kubeadmUpgrade,omitempty"`
	// CAHolders are the files that carry a CA certificate, each with
	// whether it carries the one on disk (see caHolderReport).
	CAHolders []caHolderReport `json:"caHolders,omitempty" yaml:"caHolders,omitempty"`
	// Workers are the worker nodes' reports of their cluster CA (pkirenewd
	// ca sync): a worker that reported another CA is an old holder.
	Workers []workerReport `json:"workers,omitempty" yaml:"workers,omitempty"`
	// Unwritable: directories pkirenewd may write that it cannot, here or
	// in the running daemon's sandbox, each with its fix.
	Unwritable []string `json:"unwritable,omitempty" yaml:"unwritable,omitempty"`
	// RBAC is what the API refuses pkirenewd's own identity, or why it
	// could not be asked.
	RBAC *rbacReport `json:"rbac,omitempty" yaml:"rbac,omitempty"`
	// Metrics says what keeps the running daemon from serving its metrics
	// (optional: it renews all the same, and the exit status is not
	// changed by it).
	Metrics string `json:"metrics,omitempty" yaml:"metrics,omitempty"`
}

func newReport(statuses []renew.Status, now time.Time) report {
	rep := report{APIVersion: "output.kubeadm.k8s.io/v1alpha3", Kind: "CertificateExpirationInfo",
		Certificates: []reportCert{}, CertificateAuthorities: []reportCert{}}
	for _, s := range statuses {
		rc := reportCert{
			Name: s.Name, ExternallyManaged: s.External, Missing: s.Missing,
			CertificateAuthority: s.CAName, Path: s.CertPath, RotatedBy: s.RotatedBy, State: s.State.String(), Held: s.Held,
			Unwritable: s.Unwritable, Unmanaged: s.Unmanaged, Note: s.Note, Issue: s.Issue,
		}
		if s.Cert != nil {
			exp := s.Cert.NotAfter.UTC()
			rc.ExpirationDate = &exp
			rc.ResidualTime = int64(exp.Sub(now) / time.Second)
			if (s.Kind != renew.KindCA || !s.WarnOnly) && s.RotatedBy == "" && !s.External {
				at := s.RenewAt.UTC().Truncate(time.Second)
				rc.RenewAt = &at
			}
		}
		switch {
		case s.Err != nil:
			rc.State, rc.Error = "broken", s.Err.Error()
		case s.Missing:
			rc.State = "missing"
		}
		if s.Kind == renew.KindCA {
			rep.CertificateAuthorities = append(rep.CertificateAuthorities, rc)
		} else {
			rep.Certificates = append(rep.Certificates, rc)
		}
	}
	return rep
}

// kubeadm's table layout and formats, so the output reads the same.
const dateFormat = "Jan 02, 2006 15:04 MST"

func printTable(w io.Writer, rep report) error {
	tw := tabwriter.NewWriter(w, 10, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "CERTIFICATE\tEXPIRES\tRESIDUAL TIME\tCERTIFICATE AUTHORITY\tEXTERNALLY MANAGED\tRENEW AT")
	for _, c := range rep.Certificates {
		switch {
		case c.Missing:
			fmt.Fprintf(tw, "!MISSING! %s\t\t\t\t\t\n", c.Name)
			continue
		case c.ExpirationDate == nil && c.Issue != "" && c.Error == "":
			fmt.Fprintf(tw, "%s\t-\t-\t%s\t%-8v\t%s\n", c.Name, c.CertificateAuthority, yesNo(c.ExternallyManaged), renewAtText(c))
			continue
		case c.ExpirationDate == nil:
			fmt.Fprintf(tw, "!BROKEN! %s\t\t\t%s\t\t\n", c.Name, c.CertificateAuthority)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%-8v\t%s\n", c.Name, c.ExpirationDate.Format(dateFormat),
			shortHumanDuration(time.Duration(c.ResidualTime)*time.Second), c.CertificateAuthority, yesNo(c.ExternallyManaged), renewAtText(c))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "CERTIFICATE AUTHORITY\tEXPIRES\tRESIDUAL TIME\tEXTERNALLY MANAGED\tRENEW AT")
	for _, c := range rep.CertificateAuthorities {
		switch {
		case c.Missing:
			fmt.Fprintf(tw, "!MISSING! %s\t\t\t\t\n", c.Name)
			continue
		case c.ExpirationDate == nil:
			fmt.Fprintf(tw, "!BROKEN! %s\t\t\t\t\n", c.Name)
			continue
		}
		at := "by hand (caRenewal: manual)"
		if c.RenewAt != nil || c.ExternallyManaged {
			at = renewAtText(c)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%-8v\t%s\n", c.Name, c.ExpirationDate.Format(dateFormat),
			shortHumanDuration(time.Duration(c.ResidualTime)*time.Second), yesNo(c.ExternallyManaged), at)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := printOldHolders(w, rep.CAHolders); err != nil {
		return err
	}
	if err := printWorkers(w, rep.Workers); err != nil {
		return err
	}
	for _, sc := range rep.StaleComponents {
		if sc.Reason != "" {
			if _, err := fmt.Fprintf(w, "\nSTALE %s: %s\n", sc.Component, sc.Reason); err != nil {
				return err
			}
			continue
		}
		if _, err := fmt.Fprintf(w, "\nSTALE %s: running since %s, before %s changed (%s): restart owed\n", sc.Component,
			sc.StartedAt.Format(dateFormat), sc.File, sc.Changed.Format(dateFormat)); err != nil {
			return err
		}
	}
	for _, c := range rep.Certificates {
		if c.Unwritable != "" {
			if _, err := fmt.Fprintf(w, "\nHELD %s (%s): cannot be written, the rest is renewed without it: %s\n", c.Name, c.Path, c.Unwritable); err != nil {
				return err
			}
		}
		if note := strings.TrimSpace(c.Unmanaged + " " + c.Note); note != "" {
			if _, err := fmt.Fprintf(w, "\n%s (%s): %s\n", c.Name, c.Path, note); err != nil {
				return err
			}
		}
	}
	if ks := rep.KubeletServing; ks != nil && ks.Stale {
		if _, err := fmt.Fprintf(w, "\nSTALE kubelet: serves serial %s on %s, %s has %s: restart owed\n", ks.ServedSerial, ks.Address, ks.Path, ks.FileSerial); err != nil {
			return err
		}
	}
	for _, u := range rep.Unwritable {
		if _, err := fmt.Fprintf(w, "\nUNWRITABLE %s\n", u); err != nil {
			return err
		}
	}
	if rep.Metrics != "" {
		if _, err := fmt.Fprintf(w, "\nNOTE metrics: %s\n", rep.Metrics); err != nil {
			return err
		}
	}
	if err := printRBAC(w, rep.RBAC); err != nil {
		return err
	}
	for _, u := range rep.UnseenComponents {
		if _, err := fmt.Fprintf(w, "\nUNSEEN %s: cannot tell whether it runs on old credentials (%s): %s\n", u.Component, u.Reason, unseenAdvice); err != nil {
			return err
		}
	}
	for _, h := range rep.Holds {
		if _, err := fmt.Fprintf(w, "\nHELD (%s) until %s at the latest: %s; pkirenewd writes and restarts nothing meanwhile\n", h.Reason, h.Until.Format(dateFormat), h.Why); err != nil {
			return err
		}
	}
	if rep.TransactionPending {
		if _, err := fmt.Fprintln(w, "\nAn interrupted renewal is recorded in the state dir: the next pkirenewd run or renew completes or undoes it."); err != nil {
			return err
		}
	}
	if len(rep.PendingRestarts) > 0 {
		_, err := fmt.Fprintf(w, "\nRestarts owed by an earlier renewal: %s (pkirenewd run finishes them)\n", strings.Join(rep.PendingRestarts, ", "))
		return err
	}
	return nil
}

func renewAtText(c reportCert) string {
	switch {
	case c.Error != "":
		return "broken: see log"
	case c.Held != "":
		return "held: CA expires first"
	case c.Unwritable != "":
		return "HELD: cannot be written"
	case c.RotatedBy != "" && c.State != "ok":
		return "ROTATION STUCK: the " + c.RotatedBy + " has not replaced it"
	case c.RotatedBy != "":
		return "rotated by " + c.RotatedBy
	case c.Unmanaged != "" && c.State != "ok":
		return "DUE: renewed by nobody pkirenewd knows"
	case c.Unmanaged != "":
		return "reported only"
	case c.ExternallyManaged:
		return "-"
	case c.Issue != "":
		return "now (" + c.Issue + ")"
	case c.RenewAt == nil:
		return ""
	case c.State == "expired":
		return "now (expired)"
	case c.State == "notyetvalid":
		return "now (not valid yet)"
	case c.State == "due":
		return "now (due since " + c.RenewAt.Format(dateFormat) + ")"
	}
	return c.RenewAt.Format(dateFormat)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// shortHumanDuration renders a residual time as kubeadm does (apimachinery's
// duration.ShortHumanDuration).
func shortHumanDuration(d time.Duration) string {
	switch seconds := int(d.Seconds()); {
	case seconds < -1:
		return "<invalid>"
	case seconds < 0:
		return "0s"
	case seconds < 60:
		return fmt.Sprintf("%ds", seconds)
	}
	if minutes := int(d.Minutes()); minutes < 60 {
		return fmt.Sprintf("%dm", minutes)
	}
	if hours := int(d.Hours()); hours < 24 {
		return fmt.Sprintf("%dh", hours)
	} else if hours < 24*365 {
		return fmt.Sprintf("%dd", hours/24)
	}
	return fmt.Sprintf("%dy", int(d.Hours()/24/365))
}

type staleComponent struct {
	Component string    `json:"component" yaml:"component"`
	StartedAt time.Time `json:"startedAt" yaml:"startedAt"`
	File      string    `json:"file,omitempty" yaml:"file,omitempty"`
	Changed   time.Time `json:"changed" yaml:"changed"`
	Reason    string    `json:"reason,omitempty" yaml:"reason,omitempty"`
}

type unseenComponent struct {
	Component string `json:"component" yaml:"component"`
	Reason    string `json:"reason" yaml:"reason"`
}

type holdReport struct {
	Reason string    `json:"reason" yaml:"reason"`
	Why    string    `json:"why" yaml:"why"`
	Until  time.Time `json:"until" yaml:"until"`
}

// unseenAdvice is what to do about a component that cannot be observed.
const unseenAdvice = "start the container runtime or fix criEndpoint; if two pods of it are Ready, remove the leaked one (crictl pods, crictl stopp + rmp); or restart it by hand after a renewal"

// observe asks the runtime which components run on credentials older than
// the files, whether restarts are on or off: check reports what it sees,
// and names what it cannot see. With no static-pod manifests (a machine
// that only holds a PKI) there is nothing to observe.
func (o *options) observe(ctx context.Context, r *renew.Renewer) ([]staleComponent, []unseenComponent, []holdReport) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	e := &reconcile.NodeEngine{Renewer: r, StateDir: o.cfg.StateDir, ManifestsDir: o.cfg.ManifestsDir, ConnectToLook: connector(o.cfg, o.log),
		RestartKubelet: kubeletRestarter(o.cfg), Log: o.log, Clock: o.clock}
	observing(e, o.cfg)
	obs := e.Observe(ctx)
	var stale []staleComponent
	for _, s := range obs.Stale {
		stale = append(stale, staleComponent{Component: s.Component, StartedAt: s.StartedAt.UTC(), File: s.File, Changed: s.Changed.UTC(), Reason: s.Reason})
		l := o.log.WithFields(map[string]any{"COMPONENT": s.Component, "PATH": s.File})
		switch {
		case s.Reason != "":
			l.Warnf("%s: %s", s.Component, s.Reason)
		case !o.cfg.RestartComponents:
			l.Warnf("%s runs on credentials older than %s and restartComponents is false: restart it by hand", s.Component, s.File)
		default:
			l.Warnf("%s runs on credentials older than %s: a restart is owed", s.Component, s.File)
		}
	}
	var unseen []unseenComponent
	for _, u := range obs.Unseen {
		unseen = append(unseen, unseenComponent{Component: u.Component, Reason: u.Err.Error()})
		o.log.WithField("COMPONENT", u.Component).WithError(u.Err).Warnf("cannot tell whether %s runs on old credentials: %s", u.Component, unseenAdvice)
	}
	var holds []holdReport
	for _, h := range e.Holds(ctx) {
		holds = append(holds, holdReport{Reason: h.Reason, Why: h.Why, Until: h.Until.UTC()})
	}
	return stale, unseen, holds
}

// kubeletServingReport reads the serial the kubelet serves when pkirenewd
// renews its self-signed serving certificate; nil when it does not, or
// the kubelet cannot be reached (then nothing can be told).
func (o *options) kubeletServingReport(ctx context.Context, r *renew.Renewer) *kubeletServingReport {
	c := o.kubeletServingCheck()
	if c == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	e := &reconcile.NodeEngine{Renewer: r, Log: o.log, KubeletServing: c}
	file, served, stale := e.KubeletServesStale(ctx)
	if file == "" || served == "" {
		return nil
	}
	path := ""
	if s, ok := o.kubeletServing(); ok {
		path = s.Serving.CertPath
	}
	if stale {
		o.log.WithFields(map[string]any{"COMPONENT": "kubelet", "PATH": path}).Warnf("the kubelet serves serial %s, %s has %s: a restart is owed", served, path, file)
	}
	return &kubeletServingReport{Path: path, Address: c.Addr, FileSerial: file, ServedSerial: served, Stale: stale}
}

// unwritableInDaemon adds to each due item whose files can be replaced
// from here why the running daemon cannot replace them in its sandbox (a
// shell is outside it: only the daemon's mount namespace shows what
// ProtectSystem= made read-only). There it is held.
func unwritableInDaemon(statuses []renew.Status) {
	pid := daemonPID()
	if pid <= 0 || pid == os.Getpid() {
		return
	}
	root := filepath.Join("/proc", strconv.Itoa(pid), "root")
	for i, s := range statuses {
		if s.State == pki.StateOK || !s.Renewable() || s.Unwritable != "" {
			continue
		}
		if why := renew.UnwritableReason(root, s.Item); why != "" {
			statuses[i].Unwritable = fmt.Sprintf("in pkirenewd.service (pid %d): %s", pid, why)
		}
	}
}
