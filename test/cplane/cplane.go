// Package cplane is the one rig library for the tests that run the real
// control plane: test/e2e (a single kubeadm node owning /etc/kubernetes)
// and test/ha (three etcd members and a kube-apiserver under a temp dir).
// It holds what both rigs do alike: finding the module root, building or
// locating the pinned Kubernetes binaries (test/tools/build-k8s.sh) and
// the log dir (Setup), writing kubeadm's configuration (InitConfig),
// running kubeadm and reading its image list, polling with apimachinery's
// wait helpers (a Poller that gives up when a child Process exited), the
// apiserver's readiness and the kubeadm:cluster-admins binding, etcd's
// health-check client and health GETs, a component's pod sandboxes
// through the CRI, turning Ctrl-C and the test deadline into a cancelled
// context, child processes, file copies, log tails and the removal of
// mounts, cgroups and leftovers.
//
// Convention: every function here returns an error and never touches a
// testing.T; the suites' thin helpers turn an error into t.Fatal (bring-up)
// or t.Error (teardown). The suites keep only what is specific to them.
package cplane

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// BuildScript builds the pinned binaries; VersionsFile pins the versions
// (paths relative to the module root).
const (
	BuildScript  = "test/tools/build-k8s.sh"
	VersionsFile = "test/tools/versions"
)

// ModuleRoot finds the repository root (the nearest dir upwards from the
// working directory holding go.mod; the working directory if none).
func ModuleRoot() string {
	dir, _ := os.Getwd()
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return dir
}

// Row is one line of test/tools/versions.
type Row struct {
	// Version is the k8s.io/kubernetes module version, v1.MINOR.PATCH.
	Version string
	// Set is "default" (a full set and the rigs' default), "full" (kubeadm,
	// the kubelet, the components and etcd are built) or "kubeadm".
	Set string
	// Etcd is the etcd release built for a full set ("-" for kubeadm).
	Etcd string
}

// Full tells whether the build script builds a whole control plane of r.
func (r Row) Full() bool { return r.Set == "full" || r.Set == "default" }

// ParseVersions reads test/tools/versions (VERSION BUILD-DATE MODULE SET
// ETCD, oldest first); the build script checks the same file more closely.
// Exactly one row is the default.
func ParseVersions(versions []byte) ([]Row, error) {
	var rows []Row
	defaults := 0
	for _, line := range strings.Split(string(versions), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) != 5 {
			return nil, fmt.Errorf("%s: %q: want VERSION BUILD-DATE MODULE SET ETCD", VersionsFile, line)
		}
		r := Row{Version: f[0], Set: f[3], Etcd: f[4]}
		if r.Set == "default" {
			defaults++
		}
		rows = append(rows, r)
	}
	if defaults != 1 {
		return nil, fmt.Errorf("%s: want exactly one row with set \"default\", found %d", VersionsFile, defaults)
	}
	return rows, nil
}

// Versions reads the rows of test/tools/versions.
func Versions() ([]Row, error) {
	b, err := os.ReadFile(filepath.Join(ModuleRoot(), VersionsFile))
	if err != nil {
		return nil, err
	}
	return ParseVersions(b)
}

// PinnedVersion is the default Kubernetes version of the rigs: the
// "default" row of test/tools/versions, so that it is written down once.
func PinnedVersion() (string, error) {
	rows, err := Versions()
	if err != nil {
		return "", err
	}
	for _, r := range rows {
		if r.Set == "default" {
			return r.Version, nil
		}
	}
	return "", fmt.Errorf("%s: no default row", VersionsFile)
}

// OldestFull is the oldest version whose whole control plane is built.
func OldestFull() (Row, error) {
	rows, err := Versions()
	if err != nil {
		return Row{}, err
	}
	for _, r := range rows {
		if r.Full() {
			return r, nil
		}
	}
	return Row{}, fmt.Errorf("%s: no full row", VersionsFile)
}

// Build returns the dir with the given components (kubeadm, kubelet,
// kube-apiserver, ..., etcd, or "all") of Kubernetes version (empty: the
// pinned one), built once by test/tools/build-k8s.sh and cached. The
// script knows the versions of test/tools/versions and builds more than
// kubeadm only for its full sets; it names what it refuses.
func Build(version string, components ...string) (dir string, err error) {
	var args []string
	if version != "" {
		args = append(args, "--version", version)
	}
	args = append(args, components...)
	cmd := exec.Command("bash", append([]string{filepath.Join(ModuleRoot(), BuildScript)}, args...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", BuildScript, strings.Join(args, " "), err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if dir = lines[len(lines)-1]; dir == "" {
		return "", fmt.Errorf("%s printed no bin dir", BuildScript)
	}
	return dir, nil
}

// Version resolves an Options' version: the given one, else the pinned.
func Version(v string) (string, error) {
	if v != "" {
		return v, nil
	}
	v, err := PinnedVersion()
	if err != nil {
		return "", fmt.Errorf("the pinned Kubernetes version: %w", err)
	}
	return v, nil
}

// ClusterTail is the end of a ClusterConfiguration: the leaf certificate
// validity (0: kubeadm's default, 8760h) and key algorithm (empty:
// kubeadm's default, RSA-2048) when given.
func ClusterTail(validity time.Duration, encryptionAlgorithm string) string {
	var b strings.Builder
	if validity > 0 {
		fmt.Fprintf(&b, "certificateValidityPeriod: %s\n", validity)
	}
	if encryptionAlgorithm != "" {
		fmt.Fprintf(&b, "encryptionAlgorithm: %s\n", encryptionAlgorithm)
	}
	return b.String()
}

// Manifest reads the static pod manifest <component>.yaml a DryRun wrote
// to dir.
func Manifest(dir, component string) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(dir, component+".yaml"))
	if err != nil {
		return nil, fmt.Errorf("kubeadm's dry run made no manifest for %s: %w", component, err)
	}
	return data, nil
}
