package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"
	"sigs.k8s.io/yaml"

	"github.com/pkirenewd/pkirenewd/internal/fsread"
	"github.com/pkirenewd/pkirenewd/renew"
)

// DefaultKubeletConfig is where kubeadm writes the kubelet's configuration.
const DefaultKubeletConfig = "/var/lib/kubelet/config.yaml"

// DefaultKubeletHealthz is the kubelet's own healthz default
// (healthzBindAddress 127.0.0.1, healthzPort 10248).
const DefaultKubeletHealthz = "http://127.0.0.1:10248/healthz"

// KubeletHealthzURL says where the kubelet's healthz answers, and from
// what that was learnt. The configuration file is the configured one when
// it exists, else the one the running kubelet was given (--config in
// /proc/<pid>/cmdline: Kubespray runs it with
// /etc/kubernetes/kubelet-config.yaml), else there is none and the
// kubelet's own default holds. "Not checked" is never an answer: a
// kubelet that is not running does not answer its default either, and
// then no static pod may be stopped. With healthz turned off
// (healthzPort 0) the URL is empty and a running kubelet process is the
// only sign of life.
func KubeletHealthzURL(configured string) (url, from string, err error) {
	return kubeletHealthz("/proc", configured)
}

func kubeletHealthz(proc, configured string) (url, from string, err error) {
	path := configured
	c, ok, err := loadKubeletConfig(path)
	if err != nil {
		return "", path, err
	}
	if !ok {
		path = ""
		for _, args := range kubeletArgs(proc) {
			p := flagValue(args, "config")
			if p == "" {
				continue
			}
			if c, ok, err = loadKubeletConfig(p); err != nil {
				return "", p, err
			}
			if ok {
				path = p
				break
			}
		}
	}
	if !ok {
		return DefaultKubeletHealthz, "the kubelet's defaults (no configuration file found)", nil
	}
	port := 10248
	if c.HealthzPort != nil {
		port = *c.HealthzPort
	}
	if port == 0 {
		return "", path, nil
	}
	return "http://" + net.JoinHostPort(localHost(c.HealthzBindAddress), strconv.Itoa(port)) + "/healthz", path, nil
}

// kubeletArgs are the command lines of the running kubelets.
func kubeletArgs(proc string) [][]string {
	_, args, _ := matching(proc, "kubelet", func([]string) bool { return true })
	return args
}

// KubeletGate must pass before any static pod is stopped: the kubelet
// that would recreate it answers on its healthz, or, with healthz turned
// off, at least runs.
func KubeletGate(ctx context.Context, configured string) error {
	return kubeletGate(ctx, "/proc", configured)
}

func kubeletGate(ctx context.Context, proc, configured string) error {
	url, from, err := kubeletHealthz(proc, configured)
	if err != nil {
		return fmt.Errorf("the kubelet's healthz cannot be located: %w", err)
	}
	if url != "" {
		if err := KubeletAlive(ctx, url); err != nil {
			return fmt.Errorf("%w (healthz from %s)", err, from)
		}
		return nil
	}
	if len(kubeletArgs(proc)) == 0 {
		return fmt.Errorf("no kubelet runs (%s turns its healthz off, and no kubelet process is seen): nothing would recreate a stopped static pod", from)
	}
	return nil
}

// kubeletConfig is what pkirenewd reads of a KubeletConfiguration.
type kubeletConfig struct {
	Kind               string `json:"kind"`
	HealthzBindAddress string `json:"healthzBindAddress"`
	HealthzPort        *int   `json:"healthzPort"`
	Address            string `json:"address"`
	Port               *int   `json:"port"`
	TLSCertFile        string `json:"tlsCertFile"`
	TLSPrivateKeyFile  string `json:"tlsPrivateKeyFile"`
	ServerTLSBootstrap bool   `json:"serverTLSBootstrap"`
}

// loadKubeletConfig reads the kubelet's configuration file; ok is false
// when there is none. It is read as the kubelet reads it when its strict
// decoding fails (kubeletconfig/util/codec): YAML turned into JSON with
// sigs.k8s.io/yaml, a key given twice taking the last value — a
// featureGates map appended by hand beside kubeadm's is such a file, and
// the kubelet runs on it.
func loadKubeletConfig(path string) (*kubeletConfig, bool, error) {
	data, err := fsread.Regular(path, true)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	var c kubeletConfig
	if err := yaml.Unmarshal(data, &c); err != nil {
		return nil, false, fmt.Errorf("kubelet configuration %s: %w", path, err)
	}
	if c.Kind != "" && c.Kind != "KubeletConfiguration" {
		return nil, false, fmt.Errorf("kubelet configuration %s: kind is %q, not KubeletConfiguration", path, c.Kind)
	}
	return &c, true, nil
}

// localHost is where to reach a kubelet listener bound to host: a
// wildcard address is reached on the loopback.
func localHost(host string) string {
	if host == "" || host == "0.0.0.0" || host == "::" {
		return "127.0.0.1"
	}
	return host
}

// KubeletAlive asks the kubelet's healthz. A stopped pod is recreated only
// by a live kubelet: with the kubelet down, stopping etcd (first in every
// roll) would leave the node without it.
func KubeletAlive(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return fmt.Errorf("the kubelet does not answer on %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the kubelet's %s answers %d %s", url, resp.StatusCode, body)
	}
	return nil
}

// KubeletClientUsable tells whether the kubelet could authenticate if it
// were restarted now: the client certificate its kubelet.conf points at
// (kubelet-client-current.pem, rotated by the kubelet itself) must exist
// and be valid. One that has expired is not renewed by a restart: a
// control-plane node joined with kubeadm keeps no bootstrap-kubelet.conf,
// so a restarted kubelet cannot get a new one and does not come back —
// while the running one still serves its pods.
func KubeletClientUsable(statuses []renew.Status, now time.Time) error {
	for _, s := range statuses {
		if s.Item == nil || s.Name != "kubelet.conf" || s.RotatedBy == "" {
			continue
		}
		const todo = "renew the kubelet's client certificate first (kubeadm kubeconfig user --client-name system:node:<node> --org system:nodes, or a bootstrap token), then restart the kubelet by hand"
		switch {
		case s.Err != nil:
			return fmt.Errorf("the kubelet's client certificate cannot be read (%v): a restarted kubelet could not authenticate; %s", s.Err, todo)
		case s.Missing || s.Cert == nil:
			return fmt.Errorf("the kubelet's client certificate %s is missing: a restarted kubelet could not authenticate; %s", s.CertPath, todo)
		case !now.Before(s.Cert.NotAfter):
			return fmt.Errorf("the kubelet's client certificate %s expired %s: a restarted kubelet could not authenticate and would not come back; %s",
				s.CertPath, s.Cert.NotAfter.UTC().Format(time.RFC3339), todo)
		case now.Before(s.Cert.NotBefore):
			return fmt.Errorf("the kubelet's client certificate %s is not valid before %s (issued under a clock that was ahead): a restarted kubelet could not authenticate; %s",
				s.CertPath, s.Cert.NotBefore.UTC().Format(time.RFC3339), todo)
		}
	}
	return nil
}

// kubeletRestarter is RestartKubelet behind the guard: the kubelet is left
// running, and the reason said loudly, when it could not come back.
func (e *NodeEngine) kubeletRestarter() func(context.Context) error {
	if e.RestartKubelet == nil {
		return nil
	}
	return func(ctx context.Context) error {
		_, statuses, err := e.Renewer.Inventory()
		if err == nil {
			err = KubeletClientUsable(statuses, e.now())
		}
		if err != nil {
			e.Log.WithFields(logrus.Fields{"COMPONENT": Kubelet, "ACTION": "no-restart", "PRIORITY": critical}).WithError(err).
				Error("NOT RESTARTING THE KUBELET: it is left running")
			e.event(ReasonFailed, "Restart", "kubelet not restarted: "+err.Error(), true)
			return fmt.Errorf("kubelet not restarted: %w", err)
		}
		return e.RestartKubelet(ctx)
	}
}
