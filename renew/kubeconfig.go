package renew

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"

	"gopkg.in/yaml.v3"
)

// kubeconfig is a parsed kubeconfig that remembers where the credentials of
// the current context's user sit in the original text, so they can be
// replaced without touching a byte of anything else (unknown fields,
// comments, ordering and kubeadm's formatting all stay).
type kubeconfig struct {
	raw      []byte
	UserName string
	Server   string

	// Embedded credentials (nil when the user refers to files).
	CertData, KeyData []byte
	certNode, keyNode *yaml.Node

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
	if list == nil || list.Kind != yaml.SequenceNode {
		return nil
	}
	for _, e := range list.Content {
		if n := mapGet(e, "name"); n != nil && n.Value == name {
			return mapGet(e, field)
		}
	}
	return nil
}

func scalar(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

func parseKubeconfig(data []byte) (*kubeconfig, error) {
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
	kc := &kubeconfig{raw: data, UserName: scalar(mapGet(ctx, "user"))}
	if kc.UserName == "" {
		return nil, fmt.Errorf("context %q names no user", cur)
	}
	if cl := findNamed(mapGet(root, "clusters"), scalar(mapGet(ctx, "cluster")), "cluster"); cl != nil {
		kc.Server = scalar(mapGet(cl, "server"))
		if ca := scalar(mapGet(cl, "certificate-authority-data")); ca != "" {
			kc.CAData, _ = base64.StdEncoding.DecodeString(ca)
		}
	}
	user := findNamed(mapGet(root, "users"), kc.UserName, "user")
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
	// client-go decodes these fields strictly, so a value split over lines
	// is as broken for kubectl as it is for us.
	if n.Kind != yaml.ScalarNode || n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		return nil, fmt.Errorf("line %d: expected a single-line base64 string", n.Line)
	}
	b, err := base64.StdEncoding.DecodeString(n.Value)
	if err != nil {
		return nil, fmt.Errorf("invalid base64: %w", err)
	}
	return b, nil
}

// withCredentials returns the kubeconfig text with the current user's
// embedded certificate and key replaced and nothing else changed.
func (kc *kubeconfig) withCredentials(certPEM, keyPEM []byte) ([]byte, error) {
	if kc.certNode == nil || kc.keyNode == nil {
		return nil, errors.New("credentials are not embedded")
	}
	lines := bytes.SplitAfter(kc.raw, []byte("\n"))
	for _, r := range []struct {
		n   *yaml.Node
		val []byte
	}{{kc.certNode, certPEM}, {kc.keyNode, keyPEM}} {
		if err := replaceScalar(lines, r.n, base64.StdEncoding.EncodeToString(r.val)); err != nil {
			return nil, err
		}
	}
	out := bytes.Join(lines, nil)
	// Parse the result back: the replacement must be exactly what a reader
	// of the file will see.
	check, err := parseKubeconfig(out)
	if err != nil {
		return nil, fmt.Errorf("rewritten kubeconfig does not parse: %w", err)
	}
	if !bytes.Equal(check.CertData, certPEM) || !bytes.Equal(check.KeyData, keyPEM) {
		return nil, errors.New("rewritten kubeconfig does not carry the new credentials")
	}
	return out, nil
}

// replaceScalar swaps a single-line plain or quoted scalar in place.
// kubeadm (and kubectl) always write base64 data that way; anything else
// (a folded block, a flow mapping) is refused rather than reformatted.
func replaceScalar(lines [][]byte, n *yaml.Node, value string) error {
	if n.Line < 1 || n.Line > len(lines) {
		return errors.New("credential position out of range")
	}
	line := lines[n.Line-1]
	col := n.Column - 1
	var old string
	switch n.Style {
	case 0:
		old = n.Value
	case yaml.DoubleQuotedStyle:
		old = `"` + n.Value + `"`
		value = `"` + value + `"`
	case yaml.SingleQuotedStyle:
		old = `'` + n.Value + `'`
		value = `'` + value + `'`
	default:
		return fmt.Errorf("line %d: credential is not a single-line scalar; refusing to reformat the file", n.Line)
	}
	if col < 0 || col+len(old) > len(line) || string(line[col:col+len(old)]) != old {
		return fmt.Errorf("line %d: credential is not a single-line scalar; refusing to reformat the file", n.Line)
	}
	nl := make([]byte, 0, len(line)-len(old)+len(value))
	nl = append(nl, line[:col]...)
	nl = append(nl, value...)
	nl = append(nl, line[col+len(old):]...)
	lines[n.Line-1] = nl
	return nil
}
