// Package writeset says which directories pkirenewd may write, and why, as
// data computed from the configuration and from what is on the node.
//
// It exists because two lists must agree: what the code writes and what the
// systemd unit lets it write. The shipped unit runs under
// ProtectSystem=strict, where everything outside ReadWritePaths= is a
// read-only bind mount. A directory the code writes but the unit does not
// list fails only when a renewal first touches it, months after the install
// (EROFS, "nothing was written"). With the write set as data, the daemon
// probes it at start and on every reload, check reports it, and a test holds
// the shipped unit's ReadWritePaths= against the write set of the default
// configuration on a complete kubeadm node.
package writeset

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pkirenewd/pkirenewd/config"
)

// Dir is one directory pkirenewd may write.
type Dir struct {
	// Path is the directory's real path (symlinks resolved where it
	// exists): what a ReadWritePaths= line must cover.
	Path string `json:"path" yaml:"path"`
	// Key is the configuration key (or keys, comma-separated) that makes
	// it written; Why says what is written there.
	Key string `json:"key" yaml:"key"`
	Why string `json:"why" yaml:"why"`
}

// Reason is the key and what is written, for a log line.
func (d Dir) Reason() string { return d.Key + ": " + d.Why }

// Node is what was found on the node that decides the write set.
type Node struct {
	// Real maps a configured directory to its real path, for those that
	// exist (certificatesDir may be a symlink: Kubespray's
	// /etc/kubernetes/pki -> ssl). A path not in it is taken as given.
	Real map[string]string
	// EtcdDir: pkiDir has an etcd/ directory (local etcd's leaves).
	EtcdDir bool
	// KubeletServingCert is the kubelet's self-signed kubelet.crt that
	// pkirenewd renews (kubeletServingCert: renew), when it exists; empty
	// otherwise.
	KubeletServingCert string
	// AdminCopies are the configured copies of admin.conf that exist as
	// regular files (a symlinked copy is never written).
	AdminCopies []string
}

// Compute is the write set of cfg on a node: every directory pkirenewd may
// create, replace or remove a file in, each once, in a stable order. Keep
// it in step with the code's writers:
//
//   - pkiDir (and etcd/): the store's transaction (store.Store.Commit)
//   - kubeconfigDir: the same transaction, the kubeconfig files
//   - the kubelet's cert dir: its self-signed pair, with kubeletServingCert:
//     renew (renew.KubeletServing's managed root)
//   - stateDir: backups, the transaction journal, the lock, the owed
//     restarts (renew.SavePending) and the cached kubeadm configuration
//   - each admin copy's directory: the copy is replaced through a temp file
//     beside it (renew.updateCopy, writeAtomic)
func Compute(cfg config.Config, n Node) []Dir {
	real := func(p string) string {
		if r, ok := n.Real[p]; ok && r != "" {
			return r
		}
		return filepath.Clean(p)
	}
	var out []Dir
	add := func(path, key, why string) {
		if path == "" {
			return
		}
		path = real(path)
		for i := range out {
			if out[i].Path != path {
				continue
			}
			if !slices.Contains(strings.Split(out[i].Key, ", "), key) {
				out[i].Key += ", " + key
				out[i].Why += "; " + why
			}
			return
		}
		out = append(out, Dir{Path: path, Key: key, Why: why})
	}
	add(cfg.PKIDir, "pkiDir", "the kubeadm certificates and keys")
	if n.EtcdDir {
		add(filepath.Join(cfg.PKIDir, "etcd"), "pkiDir", "local etcd's certificates and keys (etcd/)")
	}
	add(cfg.KubeconfigDir, "kubeconfigDir", "admin.conf, controller-manager.conf, scheduler.conf and the other kubeconfigs")
	if cfg.KubeletServingCert == config.KubeletServingRenew && n.KubeletServingCert != "" {
		add(filepath.Dir(n.KubeletServingCert), "kubeletServingCert", "the kubelet's self-signed "+filepath.Base(n.KubeletServingCert)+" and its key")
	}
	add(cfg.StateDir, "stateDir", "backups, the transaction journal, the lock, owed restarts, the cached kubeadm configuration")
	for _, c := range n.AdminCopies {
		key := "adminKubeconfigCopies"
		if c == cfg.AdminKubeconfigCopy {
			key = "adminKubeconfigCopy"
		}
		add(filepath.Dir(c), key, "the copy of admin.conf "+c)
	}
	return out
}

// Discover reads what Compute needs from the node. kubeletServingCert is
// the self-signed kubelet.crt pkirenewd would renew (as located from the
// kubelet's configuration and command line), empty when none.
func Discover(cfg config.Config, kubeletServingCert string) Node {
	n := Node{Real: map[string]string{}}
	resolve := func(p string) {
		if p == "" {
			return
		}
		if r, err := filepath.EvalSymlinks(p); err == nil {
			n.Real[p] = r
		}
	}
	resolve(cfg.PKIDir)
	etcd := filepath.Join(cfg.PKIDir, "etcd")
	if st, err := os.Stat(etcd); err == nil && st.IsDir() {
		n.EtcdDir = true
		resolve(etcd)
	}
	resolve(cfg.KubeconfigDir)
	resolve(cfg.StateDir)
	if kubeletServingCert != "" {
		if st, err := os.Stat(kubeletServingCert); err == nil && st.Mode().IsRegular() {
			n.KubeletServingCert = kubeletServingCert
			resolve(filepath.Dir(kubeletServingCert))
		}
	}
	for _, c := range cfg.AdminCopies() {
		if st, err := os.Lstat(c); err == nil && st.Mode().IsRegular() {
			n.AdminCopies = append(n.AdminCopies, c)
			resolve(filepath.Dir(c))
		}
	}
	return n
}

// Probe tests whether this process may create and replace files in dir,
// in its own mount namespace, with nothing written: statfs for a
// read-only mount (ProtectSystem=strict makes read-only bind mounts, which
// statfs reports as ST_RDONLY), then access(W_OK|X_OK), which the kernel
// answers with the mount's, the inode's (immutable) and the security
// modules' verdict. A directory that does not exist yet (stateDir before
// its first use) is judged by its nearest existing parent, where it would
// be created.
func Probe(dir string) error { return probeUnder("", dir) }

// ProbeIn is Probe as seen from the mount namespace of process pid (the
// running daemon, reached through /proc/<pid>/root), for a check run from
// a shell outside the unit's sandbox.
func ProbeIn(pid int, dir string) error {
	return probeUnder(filepath.Join("/proc", strconv.Itoa(pid), "root"), dir)
}

func probeUnder(root, dir string) error {
	p := filepath.Clean(dir)
	for {
		_, err := os.Stat(root + p)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: %w", dir, unwrapPath(err))
		}
		parent := filepath.Dir(p)
		if parent == p {
			return fmt.Errorf("%s: %w", dir, unwrapPath(err))
		}
		p = parent
	}
	where := dir
	if p != filepath.Clean(dir) {
		where = fmt.Sprintf("%s (does not exist yet; its parent %s)", dir, p)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(root+p, &st); err != nil {
		return fmt.Errorf("%s: statfs: %w", where, err)
	}
	if st.Flags&unix.ST_RDONLY != 0 {
		return fmt.Errorf("%s: %w", where, unix.EROFS)
	}
	if err := unix.Access(root+p, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	return nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// DropInPath is where the fix and the README extend the unit's write set.
const DropInPath = "/etc/systemd/system/pkirenewd.service.d/write.conf"

// Fix is the command that makes dirs writable under the shipped unit when
// its sandbox mounts them read-only (ProtectSystem=strict): a drop-in with
// a ReadWritePaths= line, then a reload of systemd and a restart. It
// appends a section of its own, so an existing write.conf keeps its lines.
func Fix(dirs ...string) string {
	return fmt.Sprintf("mkdir -p %s && printf '[Service]\\nReadWritePaths=%s\\n' >>%s && systemctl daemon-reload && systemctl restart pkirenewd",
		filepath.Dir(DropInPath), strings.Join(dirs, " "), DropInPath)
}

// Advice says how to make dir writable after Probe failed with err.
func Advice(dir string, err error) string {
	switch {
	case errors.Is(err, unix.EROFS):
		return "under the shipped unit (ProtectSystem=strict) add it to the write set with a drop-in: " + Fix(dir) +
			" (if the file system itself is mounted read-only, remount it read-write instead)"
	case errors.Is(err, unix.EPERM):
		return "it is immutable (lsattr -d " + dir + "): chattr -i " + dir
	case errors.Is(err, unix.EACCES):
		return "its owner or mode does not let root write it without CAP_DAC_OVERRIDE, which the unit drops: make it root's and writable by its owner"
	}
	return "make it writable for root"
}

// Covered reports whether dir lies under one of the ReadWritePaths=
// entries rw (each as written in a unit: a leading '-' or '+' is ignored).
func Covered(dir string, rw []string) bool {
	dir = filepath.Clean(dir)
	for _, e := range rw {
		e = filepath.Clean(strings.TrimLeft(e, "-+"))
		if dir == e || strings.HasPrefix(dir, e+"/") || e == "/" {
			return true
		}
	}
	return false
}

// UnitReadWritePaths reads the ReadWritePaths= entries of a unit file's
// text, as systemd does: lines accumulate, an empty assignment resets
// the list, entries are separated by white space.
func UnitReadWritePaths(unit string) []string {
	var out []string
	for _, line := range strings.Split(unit, "\n") {
		line = strings.TrimSpace(line)
		v, ok := strings.CutPrefix(line, "ReadWritePaths=")
		if !ok {
			continue
		}
		if strings.TrimSpace(v) == "" {
			out = nil
			continue
		}
		out = append(out, strings.Fields(v)...)
	}
	return out
}
