package kubeconfig

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"

	"gopkg.in/yaml.v3"
)

// Embedded is what a kubeconfig of one cluster, one user and one context
// carries, as kubeadm writes its own (the context is user@cluster).
type Embedded struct {
	Cluster, Server, User  string
	CAPEM, CertPEM, KeyPEM []byte
}

// New writes a kubeconfig from scratch, for a credential that has no file
// yet; once written, its renewals edit it like any other (WithCredentials).
// The result is read back as a client would read it.
func New(e Embedded) ([]byte, error) {
	if e.Cluster == "" || e.Server == "" || e.User == "" {
		return nil, errors.New("kubeconfig: cluster, server and user are required")
	}
	b64 := base64.StdEncoding.EncodeToString
	ctx := e.User + "@" + e.Cluster
	doc := map[string]any{
		"apiVersion": "v1",
		"kind":       "Config",
		"clusters": []any{map[string]any{"name": e.Cluster, "cluster": map[string]any{
			"certificate-authority-data": b64(e.CAPEM), "server": e.Server,
		}}},
		"contexts": []any{map[string]any{"name": ctx, "context": map[string]any{
			"cluster": e.Cluster, "user": e.User,
		}}},
		"current-context": ctx,
		"preferences":     map[string]any{},
		"users": []any{map[string]any{"name": e.User, "user": map[string]any{
			"client-certificate-data": b64(e.CertPEM), "client-key-data": b64(e.KeyPEM),
		}}},
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	out := buf.Bytes()
	kc, err := Parse(out)
	if err != nil {
		return nil, fmt.Errorf("new kubeconfig does not parse: %w", err)
	}
	if kc.Server != e.Server || !bytes.Equal(kc.CertData, e.CertPEM) || !bytes.Equal(kc.KeyData, e.KeyPEM) || !bytes.Equal(kc.CAData, e.CAPEM) {
		return nil, errors.New("new kubeconfig does not carry what it was given")
	}
	return out, nil
}
