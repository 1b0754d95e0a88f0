package cplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ClientTLS is a TLS client config with a client certificate and key,
// verifying the server against the CA in caFile (e.g. etcd's
// healthcheck-client and etcd/ca.crt).
func ClientTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New(caFile + ": no certificate")
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// Get is one GET of url with its own connection (none is reused: a
// renewed certificate is seen at once), cfg for HTTPS (nil for plain
// HTTP) and timeout; it returns at most 4 KiB of the body and the status.
func Get(ctx context.Context, cfg *tls.Config, url string, timeout time.Duration) (body []byte, code int, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, 4096))
	return body, resp.StatusCode, err
}

// GetOK is Get that wants 200: any other status is an error naming url,
// the status and the body.
func GetOK(ctx context.Context, cfg *tls.Config, url string, timeout time.Duration) ([]byte, error) {
	body, code, err := Get(ctx, cfg, url, timeout)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("%s: %d %s", url, code, strings.TrimSpace(string(body)))
	}
	return body, err
}

// EtcdHealthy is one GET of an etcd member's /health URL (the client URL
// with cfg, or the metrics URL with nil), judged by EtcdHealth.
func EtcdHealthy(ctx context.Context, cfg *tls.Config, url string, timeout time.Duration) error {
	body, code, err := Get(ctx, cfg, url, timeout)
	if err != nil {
		return err
	}
	return EtcdHealth(body, code)
}

// EtcdClientTLS is kubeadm's etcd health-check client of a PKI dir (a
// certificatesDir): etcd/healthcheck-client, verifying etcd's server
// against etcd/ca.
func EtcdClientTLS(pkiDir string) (*tls.Config, error) {
	p := func(f string) string { return filepath.Join(pkiDir, "etcd", f) }
	return ClientTLS(p("healthcheck-client.crt"), p("healthcheck-client.key"), p("ca.crt"))
}
