package reconcile

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"

	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/renew"
)

// DefaultKubeletCertDir is the kubelet's --cert-dir default.
const DefaultKubeletCertDir = "/var/lib/kubelet/pki"

// KubeletServingSetup is where the kubelet's serving certificate is and
// where the kubelet serves it.
type KubeletServingSetup struct {
	Serving renew.KubeletServing
	// Addr is the kubelet's HTTPS listener (host:port) as reached from
	// this node.
	Addr string
}

// LocateKubeletServing reads the kubelet's configuration file and says
// which serving certificate the kubelet uses (see servingFrom). certDir
// is the kubelet's --cert-dir; empty: the one the running kubelet of that
// configuration was given, else the kubelet's default. ok is false when
// there is no configuration file (no kubelet run the kubeadm way).
func LocateKubeletServing(configPath, certDir string, renewSelfSigned bool) (KubeletServingSetup, bool, error) {
	c, ok, err := loadKubeletConfig(configPath)
	if !ok || err != nil {
		return KubeletServingSetup{}, false, err
	}
	if certDir == "" {
		certDir = certDirFromProc(configPath)
	}
	return servingFrom(c, filepath.Dir(configPath), certDir, renewSelfSigned), true, nil
}

// servingFrom is the decision of kubelet v1.37's InitializeTLS: with
// serverTLSBootstrap the kubelet requests its certificate by CSR
// (<certDir>/kubelet-server-current.pem); with tlsCertFile it serves the
// operator's files (relative paths are relative to the configuration
// file, as the kubelet resolves them); else the pair it generated itself
// in certDir.
func servingFrom(c *kubeletConfig, configDir, certDir string, renewSelfSigned bool) KubeletServingSetup {
	abs := func(p string) string {
		if p != "" && !filepath.IsAbs(p) {
			return filepath.Join(configDir, p)
		}
		return p
	}
	port := 10250
	if c.Port != nil {
		port = *c.Port
	}
	s := KubeletServingSetup{Addr: net.JoinHostPort(localHost(c.Address), strconv.Itoa(port))}
	switch {
	case c.ServerTLSBootstrap:
		p := filepath.Join(certDir, "kubelet-server-current.pem")
		s.Serving = renew.KubeletServing{Source: renew.ServingBootstrap, CertPath: p, KeyPath: p}
	case c.TLSCertFile != "" || c.TLSPrivateKeyFile != "":
		s.Serving = renew.KubeletServing{Source: renew.ServingOperator, CertPath: abs(c.TLSCertFile), KeyPath: abs(c.TLSPrivateKeyFile)}
	default:
		s.Serving = renew.KubeletServing{Source: renew.ServingSelfSigned, Renew: renewSelfSigned,
			CertPath: filepath.Join(certDir, "kubelet.crt"), KeyPath: filepath.Join(certDir, "kubelet.key")}
	}
	return s
}

// certDirFromProc is the --cert-dir of the running kubelet whose --config
// is configPath, else the default.
func certDirFromProc(configPath string) string {
	args, ok := processArgs("/proc", "kubelet", func(args []string) bool { return flagNames(args, "config", configPath) })
	if !ok {
		return DefaultKubeletCertDir
	}
	return certDirFromArgs(args)
}

// certDirFromArgs reads --cert-dir (=value or separate) from a kubelet's
// command line; the default when it is not given.
func certDirFromArgs(args []string) string {
	if v := flagValue(args, "cert-dir"); v != "" {
		return v
	}
	return DefaultKubeletCertDir
}

// KubeletServingCheck makes the kubelet serve a renewed self-signed
// certificate: it waits (bounded) for the kubelet to reload the files, and
// restarts it when it does not.
type KubeletServingCheck struct {
	Addr string
	// Served reads the serial (hex) served at addr (default: a TLS
	// handshake, cri.HTTPProber).
	Served func(ctx context.Context, addr string) (string, error)
	// ReloadWait bounds the wait for the kubelet to reload the files
	// (default 30 s); RestartWait the wait after a restart (default 2 min).
	ReloadWait, RestartWait time.Duration
	// Interval between looks (default 250 ms).
	Interval time.Duration
}

func (c *KubeletServingCheck) served(ctx context.Context) (string, error) {
	if c.Served != nil {
		return c.Served(ctx, c.Addr)
	}
	return cri.HTTPProber{}.ServedSerial(ctx, c.Addr)
}

// waitServed polls until the kubelet serves want or bound has passed; it
// returns the last serial seen (and the last error when none was).
func (c *KubeletServingCheck) waitServed(ctx context.Context, clk clock.Clock, want string, bound time.Duration) (string, error) {
	interval := c.Interval
	if interval <= 0 {
		interval = 250 * time.Millisecond
	}
	deadline := clk.Now().Add(bound)
	for {
		got, err := c.served(ctx)
		if got == want || !clk.Now().Before(deadline) {
			return got, err
		}
		select {
		case <-ctx.Done():
			return got, ctx.Err()
		case <-clk.After(interval):
		}
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// ServingAction is what is to be done about the kubelet's serving
// certificate at one look: a pure decision over what was seen.
type ServingAction int

// Serving actions.
const (
	// ServingFine: nothing to do (it serves the file, or it is not ours
	// to judge).
	ServingFine ServingAction = iota
	// ServingWaitReload: just renewed; the kubelet v1.37 reloads it
	// (ReloadKubeletServerCertificateFile): wait, bounded.
	ServingWaitReload
	// ServingRestart: it serves an older certificate than the file.
	ServingRestart
)

// DecideServing places the kubelet: renewed tells that this round wrote
// the file; fileSerial and served are the serials of the file and on the
// port (servedErr: the port could not be read).
func DecideServing(renewed bool, fileSerial, served string, servedErr error) ServingAction {
	switch {
	case fileSerial == "" || served == fileSerial:
		return ServingFine
	case renewed:
		return ServingWaitReload
	case servedErr != nil:
		// A kubelet that does not answer now is not judged on a round
		// that wrote nothing (its healthz gates the restarts).
		return ServingFine
	}
	return ServingRestart
}

// kubeletServingItem is the renewable self-signed serving certificate on
// disk, or nil.
func (e *NodeEngine) kubeletServingItem() *renew.Status {
	_, statuses, err := e.Renewer.Inventory()
	if err != nil {
		return nil
	}
	for i, s := range statuses {
		if s.Name == renew.KubeletServingName && s.SelfSigned() && s.Cert != nil && s.Err == nil {
			return &statuses[i]
		}
	}
	return nil
}

// KubeletServesStale reports whether the kubelet serves another
// certificate than its self-signed kubelet.crt (one pkirenewd renews):
// then a restart is owed. A kubelet that cannot be reached is not judged.
func (e *NodeEngine) KubeletServesStale(ctx context.Context) (file, served string, stale bool) {
	if e.KubeletServing == nil {
		return "", "", false
	}
	it := e.kubeletServingItem()
	if it == nil {
		return "", "", false
	}
	file = renew.CertSerial(it.Cert)
	served, err := e.KubeletServing.served(ctx)
	return file, served, DecideServing(false, file, served, err) == ServingRestart
}

// renewedServing reports whether a plan replaced the kubelet's serving
// certificate.
func renewedServing(out *Outcome) bool {
	if out == nil || out.Plan == nil {
		return false
	}
	for _, it := range out.Plan.Items {
		if it.Name == renew.KubeletServingName {
			return true
		}
	}
	return false
}

// kubeletServes makes the kubelet serve its self-signed certificate on
// disk after a round: the kubelet reloads a renewed one by itself (waited
// for, bounded); one that still serves an older serial is restarted, and
// the serial is looked at again. Every failure names the kubelet.
func (e *NodeEngine) kubeletServes(ctx context.Context, out *Outcome) error {
	c := e.KubeletServing
	if c == nil {
		return nil
	}
	it := e.kubeletServingItem()
	if it == nil {
		return nil
	}
	want := renew.CertSerial(it.Cert)
	renewed := renewedServing(out)
	start := e.clock().Now()
	served, err := c.served(ctx)
	log := e.Log.WithFields(logrus.Fields{"COMPONENT": Kubelet, "CERT": renew.KubeletServingName, "PATH": it.CertPath, "SERIAL": want, "ADDRESS": c.Addr})
	action := DecideServing(renewed, want, served, err)
	if action == ServingWaitReload {
		served, err = c.waitServed(ctx, e.clock(), want, orDefault(c.ReloadWait, 30*time.Second))
	}
	switch {
	case served == want:
		if renewed {
			// At the first look already, or after the wait.
			log.WithFields(logrus.Fields{"ACTION": "reloaded", "TOOK": e.clock().Since(start).Round(time.Millisecond).String()}).
				Info("the kubelet reloaded its renewed serving certificate")
		}
		return nil
	case action == ServingFine:
		return nil
	case !renewed && e.RestartKubelet == nil:
		// Restarts are off (renew without --restart): said, and left
		// to `pkirenewd run` or the operator.
		log.WithField("SERVED", served).Warn("the kubelet serves an older certificate than its file: restart the kubelet")
		return nil
	}
	return e.restartForServing(ctx, log, want, served, err)
}

// restartForServing restarts a kubelet that serves an older certificate
// than its file and checks the serial it serves afterwards.
func (e *NodeEngine) restartForServing(ctx context.Context, log *logrus.Entry, want, served string, servedErr error) error {
	c := e.KubeletServing
	seen := "serial " + served
	if served == "" {
		seen = fmt.Sprintf("nothing readable (%v)", servedErr)
	}
	if e.RestartKubelet == nil {
		return fmt.Errorf("kubelet: serves %s on %s, not its serving certificate %s on disk (serial %s): restart the kubelet (set kubeletRestartCommand to let pkirenewd do it)",
			seen, c.Addr, renew.KubeletServingName, want)
	}
	log.WithFields(logrus.Fields{"ACTION": "restart", "SERVED": served}).Warn("the kubelet serves an older certificate than its file: restarting it")
	start := e.clock().Now()
	err := e.kubeletRestarter()(ctx)
	if e.Restarts != nil {
		e.Restarts.Restart(Kubelet, err)
	}
	if err != nil {
		return fmt.Errorf("kubelet: restarting it to serve its renewed serving certificate failed: %w", err)
	}
	if served, servedErr = c.waitServed(ctx, e.clock(), want, orDefault(c.RestartWait, 2*time.Minute)); served != want {
		return fmt.Errorf("kubelet: restarted, but it serves serial %q on %s (%v), not %s from its serving certificate", served, c.Addr, servedErr, want)
	}
	log.WithFields(logrus.Fields{"ACTION": "restarted", "TOOK": e.clock().Since(start).Round(time.Millisecond).String()}).Info("the kubelet was restarted and serves its renewed serving certificate")
	e.event(ReasonRestarted, "Restart", "kubelet restarted to serve its renewed serving certificate", false)
	return nil
}
