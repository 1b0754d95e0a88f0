package cplane

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
)

// Kubeadm runs one kubeadm binary; every run's output is appended to Log.
// It is safe for concurrent use (the HA rig runs phases in parallel).
type Kubeadm struct {
	// Path is the kubeadm binary.
	Path string
	// Log is the file every run's command line and output are appended to.
	Log string
	// Ctx ends every run (the rig's Context: a Ctrl-C kills kubeadm).
	Ctx context.Context

	mu sync.Mutex
}

// Run runs kubeadm with env added to the environment and returns its
// combined output; the error names the command and holds the output.
func (k *Kubeadm) Run(env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(k.Ctx, k.Path, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	k.mu.Lock()
	if f, ferr := os.OpenFile(k.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); ferr == nil {
		fmt.Fprintf(f, "### %s kubeadm %s\n%s\n", strings.Join(env, " "), strings.Join(args, " "), out)
		f.Close()
	}
	k.mu.Unlock()
	if err != nil {
		return string(out), fmt.Errorf("kubeadm %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// CheckVersion fails unless `kubeadm version -o short` is want.
func (k *Kubeadm) CheckVersion(want string) error {
	out, err := k.Run(nil, "version", "-o", "short")
	if err != nil {
		return err
	}
	if v := strings.TrimSpace(out); v != want {
		return fmt.Errorf("kubeadm is %s, want %s", v, want)
	}
	return nil
}

// Images runs `kubeadm config images list` for the config and returns the
// images by name (kube-apiserver, ..., etcd, pause, coredns): the tags of
// etcd and pause are the ones this kubeadm version wants.
func (k *Kubeadm) Images(config string) (map[string]string, error) {
	out, err := k.Run(nil, "config", "images", "list", "--config", config)
	if err != nil {
		return nil, err
	}
	return ParseImages(out)
}

// CheckImages checks kubeadm's image list against the images a rig
// runs: the pause image must be the rig's sandbox image, and each
// component's the one want names (e.g. from a manifest).
func CheckImages(images map[string]string, sandboxImage string, want map[string]string) error {
	if images["pause"] != sandboxImage {
		return fmt.Errorf("kubeadm wants %s, the rig's sandbox image is %s", images["pause"], sandboxImage)
	}
	for c, ref := range want {
		if images[c] != ref {
			return fmt.Errorf("%s: kubeadm config images list names %q, the rig runs %s", c, images[c], ref)
		}
	}
	return nil
}

// ParseImages reads `kubeadm config images list` output: one reference a
// line, registry/name:tag, keyed by name. kubeadm's klog warnings (a
// configuration it accepts but warns about, such as leaves that outlive
// the CAs) come on the same output, and are skipped.
func ParseImages(out string) (map[string]string, error) {
	images := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if klogLine.MatchString(line) {
			continue
		}
		ref := strings.TrimSpace(line)
		if ref == "" {
			continue
		}
		name, _, ok := strings.Cut(ref[strings.LastIndex(ref, "/")+1:], ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("kubeadm config images list: %q is not registry/name:tag", ref)
		}
		images[name] = ref
	}
	if len(images) == 0 {
		return nil, fmt.Errorf("kubeadm config images list: no images")
	}
	return images, nil
}

// klogLine is klog's header: severity, MMDD, time, thread id.
var klogLine = regexp.MustCompile(`^[IWEF][0-9]{4} [0-9:.]+ +[0-9]+ `)

// DryRun runs `kubeadm init phase <phase...> --config config --dry-run`
// with KUBEADM_INIT_DRYRUN_DIR=dir: kubeadm then writes the static pod
// manifests there instead of /etc/kubernetes/manifests (see Manifest).
func (k *Kubeadm) DryRun(dir, config string, phase ...string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	args := append(append([]string{"init", "phase"}, phase...), "--config", config, "--dry-run")
	_, err := k.Run([]string{"KUBEADM_INIT_DRYRUN_DIR=" + dir}, args...)
	return err
}
