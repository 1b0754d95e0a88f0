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

	"sigs.k8s.io/yaml"

	"github.com/pkirenewd/pkirenewd/internal/fsread"
)

// DefaultKubeletConfig is where kubeadm writes the kubelet's configuration.
const DefaultKubeletConfig = "/var/lib/kubelet/config.yaml"

// KubeletHealthzURL reads the kubelet's healthz address from its
// configuration file (KubeletConfiguration: healthzBindAddress, default
// 127.0.0.1; healthzPort, default 10248, 0 turns it off). ok is false when
// there is nothing to check: no such file (this node's kubelet is not run
// the kubeadm way) or healthz turned off.
func KubeletHealthzURL(path string) (url string, ok bool, err error) {
	c, ok, err := loadKubeletConfig(path)
	if !ok || err != nil {
		return "", false, err
	}
	port := 10248
	if c.HealthzPort != nil {
		port = *c.HealthzPort
	}
	if port == 0 {
		return "", false, nil
	}
	return "http://" + net.JoinHostPort(localHost(c.HealthzBindAddress), strconv.Itoa(port)) + "/healthz", true, nil
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
