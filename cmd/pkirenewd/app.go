package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"k8s.io/utils/clock"

	"github.com/pkirenewd/pkirenewd/config"
	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/internal/fsread"
	"github.com/pkirenewd/pkirenewd/kubeadmconfig"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/reconcile"
	"github.com/pkirenewd/pkirenewd/renew"
)

// version is stamped by the Makefile with -ldflags -X main.version=...
var version = "dev"

// exitError carries a command's exit status through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

// options is what every subcommand shares: the config file, the flags that
// override it, and the I/O the command writes to.
type options struct {
	configPath string
	logLevel   string
	flagValues map[string]*keyFlag

	stdout, stderr io.Writer
	now            func() time.Time
	// clock is the engine's (the real one: cmd is main).
	clock clock.WithTicker
	log   *logrus.Logger
	cfg   config.Config
	// heartbeat feeds the systemd watchdog during long waits (run only).
	heartbeat func()
	// deprecated are notes on the deprecated forms the arguments used.
	deprecated []string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o := &options{stdout: stdout, stderr: stderr, now: time.Now, clock: clock.RealClock{}, flagValues: map[string]*keyFlag{}}
	return o.execute(ctx, args)
}

// execute runs the command line; earlier builds' form of a boolean flag
// (--restart-components false) is rewritten first, and said once the log
// is set up.
func (o *options) execute(ctx context.Context, args []string) int {
	root := newRootCmd(o)
	bools, valued := flagForms(root)
	args, o.deprecated = legacyBoolArgs(args, bools, valued)
	root.SetArgs(args)
	root.SetOut(o.stdout)
	root.SetErr(o.stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(o.stderr, "pkirenewd:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(o.stderr, "pkirenewd:", err)
	return 2
}

// warnDeprecated says, once, each deprecated form the command line used.
func (o *options) warnDeprecated() {
	for _, n := range o.deprecated {
		o.log.Warn(n)
	}
	o.deprecated = nil
}

func newRootCmd(o *options) *cobra.Command {
	root := &cobra.Command{
		Use:   "pkirenewd",
		Short: "Keep a kubeadm control-plane node's certificates alive",
		Long: `pkirenewd renews a kubeadm node's leaf certificates and the client
certificates embedded in its kubeconfig files from the local CAs, well
before they expire, keeping every certificate's identity and writing
everything as one crash-safe transaction with a backup.`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return o.setup(cmd) },
	}
	pf := root.PersistentFlags()
	pf.StringVar(&o.configPath, "config", config.DefaultPath, "config file")
	pf.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	o.flagValues = addKeyFlags(pf)
	root.AddCommand(newCACmd(o), newCheckCmd(o), newRenewCmd(o), newRestartCmd(o), newRunCmd(o), newRBACCmd(o), newVersionCmd(o))
	return root
}

// setup loads the config file and applies the flags that were given.
func (o *options) setup(cmd *cobra.Command) error {
	o.log = logrus.New()
	o.log.SetOutput(o.stderr)
	o.log.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	lvl, err := logrus.ParseLevel(o.logLevel)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("--log-level: %w", err)}
	}
	o.log.SetLevel(lvl)
	if cmd.Name() != "run" {
		// run says them once its own logging (the journal) is set up.
		o.warnDeprecated()
	}
	if cmd.Name() == "version" {
		return nil
	}
	cfg, err := o.loadConfig(cmd)
	if err != nil {
		o.warnDeprecated()
		return &exitError{code: 2, err: err}
	}
	o.cfg = cfg
	return nil
}

// loadConfig reads the config file and applies the flags that were given
// (again on SIGHUP: the flags keep overriding the file).
func (o *options) loadConfig(cmd *cobra.Command) (config.Config, error) {
	cfg, err := config.Load(o.configPath, cmd.Flags().Changed("config"))
	if err != nil {
		return cfg, err
	}
	for _, k := range config.Keys() {
		if cmd.Flags().Changed(k.Flag) {
			if err := k.Set(&cfg, o.flagValues[k.Name].value()); err != nil {
				return cfg, fmt.Errorf("--%s: %w", k.Flag, err)
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	if cfg.NodeName == "" {
		cfg.NodeName, _ = os.Hostname()
	}
	cfg.PKIDir = o.pkiDir(cfg)
	return cfg, nil
}

// pkiDir resolves where the PKI is (see kubeadmconfig.ChoosePKIDir) and says so
// when the sources disagree. Unreadable sources are skipped here: the
// renewal reports a bad kubeadm configuration itself.
func (o *options) pkiDir(cfg config.Config) string {
	explicit := ""
	if cfg.PKIDirSet {
		explicit = cfg.PKIDir
	}
	var kubeadmDir, kubeadmSrc, manifestDir string
	if cs, src, err := kubeadmconfig.LoadClusterSettings(cfg.KubeadmConfig, cfg.StateDir, false); err == nil {
		kubeadmDir, kubeadmSrc = cs.CertificatesDir, src
	}
	apiserver := filepath.Join(cfg.ManifestsDir, "kube-apiserver.yaml")
	if data, err := fsread.Regular(apiserver, true); err == nil {
		if m, err := cri.ParseManifest(apiserver, data); err == nil {
			if ca := m.Flag("client-ca-file"); filepath.IsAbs(ca) {
				manifestDir = filepath.Dir(ca)
			}
		}
	}
	c := kubeadmconfig.ChoosePKIDir(cfg.PKIDir, explicit, kubeadmDir, kubeadmSrc, manifestDir, apiserver)
	l := o.log.WithFields(logrus.Fields{"PATH": c.Dir, "source": c.Source})
	if c.Conflict != "" {
		l.Warnf("PKI directory %s (from the %s), but %s", c.Dir, c.Source, c.Conflict)
	} else {
		l.Debug("PKI directory")
	}
	return c.Dir
}

// renewer builds the engine from the config, resolving the cluster's
// algorithm and validity from the kubeadm configuration.
func (o *options) renewer(cacheKubeadm bool) (*renew.Renewer, error) {
	cs, src, err := kubeadmconfig.LoadClusterSettings(o.cfg.KubeadmConfig, o.cfg.StateDir, cacheKubeadm)
	if err != nil {
		return nil, err
	}
	validity := o.cfg.Validity
	if !o.cfg.ValiditySet && cs.CertificateValidityPeriod > 0 {
		validity = cs.CertificateValidityPeriod
	}
	if src != "" {
		o.log.WithFields(logrus.Fields{"source": src, "algorithm": cs.EncryptionAlgorithm, "validity": validity}).Debug("kubeadm configuration")
	}
	copies := o.cfg.AdminCopies()
	glob := ""
	if len(copies) > 0 {
		// Other admins' copies are reported, never written.
		glob = "/home/*/.kube/config"
	}
	kubelet, _ := o.kubeletServing()
	return renew.New(renew.Options{
		AdminCopies: copies, AdminCopyGlob: glob,
		Dirs:          renew.Dirs{PKIDir: o.cfg.PKIDir, KubeconfigDir: o.cfg.KubeconfigDir, KubeletServing: kubelet.Serving, AdminCopies: copies, Identity: identity(o.cfg)},
		StateDir:      o.cfg.StateDir,
		Policy:        pki.Policy{RenewBefore: o.cfg.RenewBefore, NodeName: o.cfg.NodeName},
		CAWarnBefore:  o.cfg.CAWarnBefore,
		CARenewBefore: o.cfg.CARenewBefore,
		CAManual:      o.cfg.CARenewal == config.CARenewalManual,
		CAValidity:    o.cfg.CAValidity,
		Validity:      validity,
		Algorithm:     cs.EncryptionAlgorithm,
		Now:           o.now,
		Log:           o.log,
		Published:     publishedCAs(o.cfg, o.log),
	}), nil
}

// kubeletServing locates the kubelet's serving certificate from its
// configuration; ok is false when there is none to look at. A kubelet
// configuration that cannot be read is said once here; the kubelet's
// healthz check reports it where it matters.
func (o *options) kubeletServing() (reconcile.KubeletServingSetup, bool) {
	if o.cfg.KubeletConfig == "" {
		return reconcile.KubeletServingSetup{}, false
	}
	s, ok, err := reconcile.LocateKubeletServing(o.cfg.KubeletConfig, o.cfg.KubeletCertDir, o.cfg.KubeletServingCert == config.KubeletServingRenew)
	if err != nil {
		o.log.WithError(err).Warn("the kubelet's serving certificate cannot be located")
	}
	return s, ok && err == nil
}

// kubeletServingCheck is what makes the kubelet serve a renewed
// self-signed certificate; nil when pkirenewd does not renew one.
func (o *options) kubeletServingCheck() *reconcile.KubeletServingCheck {
	s, ok := o.kubeletServing()
	if !ok || s.Serving.Source != renew.ServingSelfSigned || !s.Serving.Renew {
		return nil
	}
	return &reconcile.KubeletServingCheck{Addr: s.Addr}
}

func newVersionCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			goVersion := "unknown"
			if bi, ok := debug.ReadBuildInfo(); ok {
				goVersion = bi.GoVersion
			}
			fmt.Fprintf(o.stdout, "pkirenewd %s (%s)\n", version, goVersion)
			return nil
		},
	}
}
