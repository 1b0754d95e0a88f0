// Package kubeclient is the tests' minimal Kubernetes API client: plain
// HTTPS with the credentials embedded in a kubeconfig, as kubeadm writes
// them. It is deliberately not client-go, so the end-to-end tests check
// pkirenewd's use of client-go against an independent client.
package kubeclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Client is a minimal Kubernetes API client that takes its server and
// credentials from a kubeconfig with embedded data (as kubeadm writes
// them). The file is read again for every request and connections are
// not reused, so a renewed kubeconfig is used as soon as it is on disk.
type Client struct {
	Kubeconfig string
	// Server overrides the kubeconfig's server.
	Server string
	// Timeout of one request (default 10s).
	Timeout time.Duration
}

type kubeconfig struct {
	CurrentContext string `yaml:"current-context"`
	Clusters       []struct {
		Name    string `yaml:"name"`
		Cluster struct {
			Server string `yaml:"server"`
			CAData string `yaml:"certificate-authority-data"`
		} `yaml:"cluster"`
	} `yaml:"clusters"`
	Contexts []struct {
		Name    string `yaml:"name"`
		Context struct {
			Cluster string `yaml:"cluster"`
			User    string `yaml:"user"`
		} `yaml:"context"`
	} `yaml:"contexts"`
	Users []struct {
		Name string `yaml:"name"`
		User struct {
			CertData string `yaml:"client-certificate-data"`
			KeyData  string `yaml:"client-key-data"`
		} `yaml:"user"`
	} `yaml:"users"`
}

// Credentials reads the kubeconfig: its server, and a TLS config with its
// CA and client certificate, whose leaf is returned too.
func (k *Client) Credentials() (server string, cfg *tls.Config, leaf *x509.Certificate, err error) {
	path := k.Kubeconfig
	data, err := os.ReadFile(path)
	if err != nil {
		return "", nil, nil, err
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(data, &kc); err != nil {
		return "", nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(kc.Contexts) == 0 || len(kc.Clusters) == 0 || len(kc.Users) == 0 {
		return "", nil, nil, fmt.Errorf("%s: no context, cluster or user", path)
	}
	ctx := kc.Contexts[0].Context
	for _, c := range kc.Contexts {
		if c.Name == kc.CurrentContext {
			ctx = c.Context
		}
	}
	cl := kc.Clusters[0].Cluster
	for _, c := range kc.Clusters {
		if c.Name == ctx.Cluster {
			cl = c.Cluster
		}
	}
	u := kc.Users[0].User
	for _, x := range kc.Users {
		if x.Name == ctx.User {
			u = x.User
		}
	}
	dec := func(field, s string) ([]byte, error) {
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("%s: %s: not base64 data (%v)", path, field, err)
		}
		return b, nil
	}
	caPEM, err := dec("certificate-authority-data", cl.CAData)
	if err != nil {
		return "", nil, nil, err
	}
	certPEM, err := dec("client-certificate-data", u.CertData)
	if err != nil {
		return "", nil, nil, err
	}
	keyPEM, err := dec("client-key-data", u.KeyData)
	if err != nil {
		return "", nil, nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return "", nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	leaf, err = x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return "", nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return "", nil, nil, fmt.Errorf("%s: certificate-authority-data holds no certificate", path)
	}
	server = cl.Server
	if k.Server != "" {
		server = k.Server
	}
	return server, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, leaf, nil
}

// StatusError is a non-2xx answer.
type StatusError struct {
	Method, URL string
	Code        int
	Body        string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.URL, e.Code, strings.TrimSpace(e.Body))
}

// IsStatus reports whether err is a StatusError with the given code.
func IsStatus(err error, code int) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == code
}

// Do sends one request (body, when not nil, is JSON-encoded) and returns
// the body of a 2xx answer; any other status is a *StatusError.
func (k *Client) Do(ctx context.Context, method, path string, body any) ([]byte, error) {
	server, cfg, _, err := k.Credentials()
	if err != nil {
		return nil, err
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	timeout := k.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	url := strings.TrimRight(server, "/") + path
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		ct := "application/json"
		if method == http.MethodPatch {
			ct = "application/merge-patch+json" // a JSON merge patch (RFC 7386)
		}
		req.Header.Set("Content-Type", ct)
	}
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b := string(out)
		if len(b) > 512 {
			b = b[:512] + "..."
		}
		return out, &StatusError{Method: method, URL: url, Code: resp.StatusCode, Body: b}
	}
	return out, nil
}

// Get is Do with GET.
func (k *Client) Get(ctx context.Context, path string) ([]byte, error) {
	return k.Do(ctx, http.MethodGet, path, nil)
}

// Create POSTs obj to a collection path.
func (k *Client) Create(ctx context.Context, path string, obj any) ([]byte, error) {
	return k.Do(ctx, http.MethodPost, path, obj)
}

// Ready checks /readyz once.
func (k *Client) Ready(ctx context.Context) error {
	b, err := k.Get(ctx, "/readyz")
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(b)) != "ok" {
		return fmt.Errorf("/readyz: %s", b)
	}
	return nil
}

// ClientCert returns the client certificate the kubeconfig holds now.
func (k *Client) ClientCert() (*x509.Certificate, error) {
	_, _, leaf, err := k.Credentials()
	return leaf, err
}
