package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/pkirenewd/pkirenewd/config"
	"github.com/pkirenewd/pkirenewd/daemon"
	"github.com/pkirenewd/pkirenewd/reconcile"
	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/systemd"
	"github.com/pkirenewd/pkirenewd/writeset"
)

// nodeWriteSet is the write set of cfg on this node: what the renewer
// built from the same configuration may write.
func nodeWriteSet(cfg config.Config) []writeset.Dir {
	return writeset.Compute(cfg, writeset.Discover(cfg, kubeletServingCert(cfg)))
}

// kubeletServingCert is the kubelet's self-signed kubelet.crt that the
// renewer renews under cfg (located as kubeletServing does); empty when
// it renews none.
func kubeletServingCert(cfg config.Config) string {
	if cfg.KubeletConfig == "" || cfg.KubeletServingCert != config.KubeletServingRenew {
		return ""
	}
	s, ok, err := reconcile.LocateKubeletServing(cfg.KubeletConfig, cfg.KubeletCertDir, true)
	if !ok || err != nil || s.Serving.Source != renew.ServingSelfSigned {
		return ""
	}
	return s.Serving.CertPath
}

// writeProblem is a directory of the write set that cannot be written.
type writeProblem struct {
	writeset.Dir
	Err error
}

func (p writeProblem) String() string {
	return fmt.Sprintf("%v: pkirenewd writes %s there (%s) and cannot: %s", p.Err, p.Why, p.Key, writeset.Advice(p.Path, p.Err))
}

// probeWriteSet probes each directory of the write set with probe.
func probeWriteSet(dirs []writeset.Dir, probe func(string) error) []writeProblem {
	var out []writeProblem
	for _, d := range dirs {
		if err := probe(d.Path); err != nil {
			out = append(out, writeProblem{Dir: d, Err: err})
		}
	}
	return out
}

// checkWriteSet is called with each configuration the daemon takes, at
// start and on every reload: every directory it may write is probed in
// its own mount namespace (the unit's sandbox), so that a directory the
// unit keeps read-only is said now, with its fix, not at the first
// renewal months later.
var checkWriteSet = func(log logrus.FieldLogger, cfg config.Config, metrics *daemon.PromMetrics) {
	dirs := nodeWriteSet(cfg)
	problems := probeWriteSet(dirs, writeset.Probe)
	var bad []writeset.Dir
	for _, p := range problems {
		bad = append(bad, p.Dir)
		log.WithFields(logrus.Fields{"PATH": p.Path, "REASON": p.Key}).Error(p.String())
	}
	if metrics != nil {
		metrics.Unwritable(bad)
	}
	if len(problems) == 0 {
		var ps []string
		for _, d := range dirs {
			ps = append(ps, d.Path)
		}
		log.WithField("PATHS", ps).Debug("every directory pkirenewd may write is writable")
	}
}

// writeProblems is what check says about the write set: the directories
// that cannot be written from here and, when the daemon runs under
// systemd, from inside its sandbox (a shell is outside it: only the
// daemon's own mount namespace shows what ProtectSystem= made read-only).
func writeProblems(cfg config.Config) []string {
	dirs := nodeWriteSet(cfg)
	var out []string
	seen := map[string]bool{}
	if pid := daemonPID(); pid > 0 && pid != os.Getpid() {
		for _, p := range probeWriteSet(dirs, func(d string) error { return writeset.ProbeIn(pid, d) }) {
			seen[p.Path] = true
			out = append(out, fmt.Sprintf("in pkirenewd.service (pid %d): %s", pid, p))
		}
	}
	for _, p := range probeWriteSet(dirs, writeset.Probe) {
		if !seen[p.Path] {
			out = append(out, p.String())
		}
	}
	return out
}

// daemonPID is the main pid of a running pkirenewd.service; 0 when there
// is none or systemd cannot be asked.
var daemonPID = func() int {
	if !systemd.Running() {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	pid, err := systemd.MainPID(ctx, "pkirenewd.service")
	if err != nil {
		return 0
	}
	return pid
}
