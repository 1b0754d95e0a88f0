package cplane

import (
	"context"
	"os"
	"path/filepath"
)

// Setup is what a rig makes first, once its Signals are watched: the
// pinned binaries, the test's log dir and a kubeadm runner logging to
// kubeadm.log there.
type Setup struct {
	// Version is the Kubernetes version (the pinned one if none was given).
	Version string
	// Bin holds the built components.
	Bin string
	// LogDir is the test's log dir (see LogDir); LogDirIsTemp says it is a
	// temp dir, removed by KeepLogs when the test passed.
	LogDir       string
	LogDirIsTemp bool
	// Kubeadm is Bin's kubeadm under ctx.
	Kubeadm *Kubeadm
}

// NewSetup builds (or finds cached) the components of version (empty: the
// pinned one) and makes the log dir of testName (a temp dir named
// pkirenewd-<prefix>-logs* when PKIRENEWD_E2E_LOGS is not set).
func NewSetup(ctx context.Context, prefix, testName, version string, components ...string) (Setup, error) {
	var s Setup
	var err error
	if s.Version, err = Version(version); err != nil {
		return s, err
	}
	if s.Bin, err = Build(s.Version, components...); err != nil {
		return s, err
	}
	if s.LogDir, s.LogDirIsTemp, err = LogDir(testName, "pkirenewd-"+prefix+"-logs"); err != nil {
		return s, err
	}
	s.Kubeadm = &Kubeadm{Path: filepath.Join(s.Bin, "kubeadm"), Log: filepath.Join(s.LogDir, "kubeadm.log"), Ctx: ctx}
	return s, nil
}

// KeepLogs ends the log dir at teardown: a temp one is removed when the
// test passed. It returns where the logs are kept ("" if removed).
func (s Setup) KeepLogs(failed bool) string {
	if s.LogDirIsTemp && !failed {
		os.RemoveAll(s.LogDir)
		return ""
	}
	return s.LogDir
}
