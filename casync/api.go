package casync

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/pkirenewd/pkirenewd/pki"
)

// ClusterInfoPath is kubeadm's discovery ConfigMap, which kubeadm lets
// system:anonymous read (Role kubeadm:bootstrap-signer-clusterinfo).
const ClusterInfoPath = "/api/v1/namespaces/kube-public/configmaps/cluster-info"

// apiTimeout bounds each call to the apiserver.
const apiTimeout = 30 * time.Second

// maxBody bounds what is read of an answer (a ConfigMap is at most 1 MiB).
const maxBody = 2 << 20

// TLSConfig verifies the apiserver against local alone, at VerifyTime:
// Go's own verification (chain, host name, usages) with the clock it
// uses set, never skipped.
func TLSConfig(local *x509.Certificate, now func() time.Time) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(local)
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    pool,
		Time:       func() time.Time { return VerifyTime(local, now()) },
	}
}

// FetchClusterInfo reads the kubeconfig of cluster-info from server,
// anonymously, the server verified against local.
func FetchClusterInfo(ctx context.Context, server string, local *x509.Certificate, now func() time.Time) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(server, "/")+ClusterInfoPath, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: TLSConfig(local, now), DisableKeepAlives: true, Proxy: http.ProxyFromEnvironment}}
	body, err := do(client, req)
	if err != nil {
		return nil, fmt.Errorf("cluster-info from %s: %w", server, err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal(body, &cm); err != nil {
		return nil, fmt.Errorf("cluster-info from %s: %w", server, err)
	}
	kc, ok := cm.Data["kubeconfig"]
	if !ok {
		return nil, fmt.Errorf("cluster-info from %s has no kubeconfig", server)
	}
	return []byte(kc), nil
}

// do sends req and returns the body of a 2xx answer; any other is an
// error with the start of its body (the apiserver's Status says why).
func do(client *http.Client, req *http.Request) ([]byte, error) {
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %s: %.300s", req.Method, req.URL.Path, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// nodePrefix starts the user name of a kubelet's client certificate.
const nodePrefix = "system:node:"

// ReportNode sets AnnotationCA to fingerprint on the node's own Node
// object with the kubelet's credentials (the kubeconfig at path, read
// again now: it holds the new CA). The Node is the one the client
// certificate names (system:node:NAME), the only one NodeRestriction lets
// it patch; fallback names it when the credentials are not a node's.
func ReportNode(ctx context.Context, path, fallback, fingerprint string) (node string, err error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return "", err
	}
	if node, err = nodeName(cfg, fallback); err != nil {
		return "", err
	}
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return node, err
	}
	client.Timeout = apiTimeout
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{AnnotationCA: fingerprint}}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, strings.TrimSuffix(cfg.Host, "/")+"/api/v1/nodes/"+node, bytes.NewReader(patch))
	if err != nil {
		return node, err
	}
	req.Header.Set("Content-Type", "application/merge-patch+json")
	req.Header.Set("Accept", "application/json")
	if _, err := do(client, req); err != nil {
		return node, fmt.Errorf("annotate Node %s: %w", node, err)
	}
	return node, nil
}

// nodeName is the node the kubelet's client certificate names.
func nodeName(cfg *rest.Config, fallback string) (string, error) {
	data := cfg.TLSClientConfig.CertData
	if len(data) == 0 && cfg.TLSClientConfig.CertFile != "" {
		var err error
		if data, err = os.ReadFile(cfg.TLSClientConfig.CertFile); err != nil {
			return "", err
		}
	}
	if leaf, err := pki.ParseCertPEM(data); err == nil && strings.HasPrefix(leaf.Subject.CommonName, nodePrefix) {
		return strings.TrimPrefix(leaf.Subject.CommonName, nodePrefix), nil
	}
	if fallback == "" {
		return "", errors.New("the kubeconfig's client certificate names no node (system:node:NAME) and no node name is configured")
	}
	return fallback, nil
}
