package kubeconfig

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"

	"gopkg.in/yaml.v3"
)

// Config is a parsed kubeconfig that remembers which users entry holds
// the current context's credentials, so they can be replaced without
// touching anything else (see rewriteCredentials).
type Config struct {
	raw      []byte
	UserName string
	// ClusterName is the clusters entry of the current context.
	ClusterName string
	Server      string

	// Embedded credentials (nil when the user refers to files).
	CertData, KeyData []byte
	certNode, keyNode *yaml.Node
	// userIndex is the user's position in the users list.
	userIndex int

	// File references (kubelet.conf on current clusters).
	CertFile, KeyFile string

	CAData []byte
}

func mapGet(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// findNamed finds the entry {name: <name>, <field>: {...}} in a kubeconfig
// list such as users or contexts and returns its <field> mapping.
func findNamed(list *yaml.Node, name, field string) *yaml.Node {
	n, _ := findNamedAt(list, name, field)
	return n
}

// findNamedAt is findNamed that also tells the entry's index in the list.
func findNamedAt(list *yaml.Node, name, field string) (*yaml.Node, int) {
	if list == nil || list.Kind != yaml.SequenceNode {
		return nil, -1
	}
	for i, e := range list.Content {
		if n := mapGet(e, "name"); n != nil && n.Value == name {
			return mapGet(e, field), i
		}
	}
	return nil, -1
}

func scalar(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

func Parse(data []byte) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("not a kubeconfig: expected a YAML mapping")
	}
	root := doc.Content[0]
	if k := scalar(mapGet(root, "kind")); k != "" && k != "Config" {
		return nil, fmt.Errorf("not a kubeconfig: kind is %q", k)
	}
	cur := scalar(mapGet(root, "current-context"))
	if cur == "" {
		return nil, errors.New("no current-context")
	}
	ctx := findNamed(mapGet(root, "contexts"), cur, "context")
	if ctx == nil {
		return nil, fmt.Errorf("current-context %q not found in contexts", cur)
	}
	kc := &Config{raw: data, UserName: scalar(mapGet(ctx, "user"))}
	if kc.UserName == "" {
		return nil, fmt.Errorf("context %q names no user", cur)
	}
	kc.ClusterName = scalar(mapGet(ctx, "cluster"))
	if cl := findNamed(mapGet(root, "clusters"), kc.ClusterName, "cluster"); cl != nil {
		kc.Server = scalar(mapGet(cl, "server"))
		if ca := scalar(mapGet(cl, "certificate-authority-data")); ca != "" {
			kc.CAData, _ = base64.StdEncoding.DecodeString(ca)
		}
	}
	user, idx := findNamedAt(mapGet(root, "users"), kc.UserName, "user")
	kc.userIndex = idx
	if user == nil {
		return nil, fmt.Errorf("user %q (of context %q) not found in users", kc.UserName, cur)
	}
	kc.certNode, kc.keyNode = mapGet(user, "client-certificate-data"), mapGet(user, "client-key-data")
	kc.CertFile, kc.KeyFile = scalar(mapGet(user, "client-certificate")), scalar(mapGet(user, "client-key"))
	switch {
	case kc.certNode != nil || kc.keyNode != nil:
		if kc.certNode == nil || kc.keyNode == nil {
			return nil, fmt.Errorf("user %q has only one of client-certificate-data and client-key-data", kc.UserName)
		}
		var err error
		if kc.CertData, err = decodeB64(kc.certNode); err != nil {
			return nil, fmt.Errorf("user %q client-certificate-data: %w", kc.UserName, err)
		}
		if kc.KeyData, err = decodeB64(kc.keyNode); err != nil {
			return nil, fmt.Errorf("user %q client-key-data: %w", kc.UserName, err)
		}
	case kc.CertFile != "":
	default:
		return nil, fmt.Errorf("user %q has no client certificate", kc.UserName)
	}
	return kc, nil
}

func decodeB64(n *yaml.Node) ([]byte, error) {
	// client-go reads these fields with encoding/json, whose base64 skips
	// line breaks and nothing else: a literal block (lines kept) reads as
	// one string, a folded block or a plain scalar over several lines
	// (lines joined with spaces) does not, for kubectl as for us.
	if n.Kind != yaml.ScalarNode {
		return nil, fmt.Errorf("line %d: expected a base64 string", n.Line)
	}
	b, err := base64.StdEncoding.DecodeString(n.Value)
	if err != nil {
		return nil, fmt.Errorf("line %d: invalid base64: %w", n.Line, err)
	}
	return b, nil
}

// WithCredentials returns the kubeconfig text with the current user's
// embedded certificate and key replaced and nothing else changed.
func (kc *Config) WithCredentials(certPEM, keyPEM []byte) ([]byte, error) {
	if kc.certNode == nil || kc.keyNode == nil {
		return nil, errors.New("credentials are not embedded")
	}
	out, err := rewriteCredentials(kc.raw, map[int]credentials{kc.userIndex: {CertPEM: certPEM, KeyPEM: keyPEM}})
	if err != nil {
		return nil, err
	}
	// Parse the result back as a reader of the file will: the current
	// context must still lead to exactly the new credentials.
	check, err := Parse(out)
	if err != nil {
		return nil, fmt.Errorf("rewritten kubeconfig does not parse: %w", err)
	}
	if !bytes.Equal(check.CertData, certPEM) || !bytes.Equal(check.KeyData, keyPEM) {
		return nil, errors.New("rewritten kubeconfig does not carry the new credentials")
	}
	return out, nil
}
