// Package kubeconfigtest turns kubeadm's kubeconfigs into the other forms
// kubectl reads (flow YAML, JSON, CRLF, comments, quotes, literal blocks),
// for the tests of the kubeconfig editor and of a whole renewal, which must
// both leave every form as it was but for the credentials.
package kubeconfigtest

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// CredLine matches a credential line of kubeadm's block YAML.
var CredLine = regexp.MustCompile(`(client-(?:certificate|key)-data): ([A-Za-z0-9+/=]+)`)

// QuoteCreds puts the credentials between open and close.
func QuoteCreds(b []byte, open, close string) []byte {
	return CredLine.ReplaceAll(b, []byte("${1}: "+open+"${2}"+close))
}

// CRLF ends every line with CRLF.
func CRLF(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")) }

// NonASCII renames the user (and so the context) so that multi-byte
// characters come before the credentials on their line in flow forms.
func NonASCII(b []byte) []byte {
	return bytes.ReplaceAll(b, []byte("kubernetes-admin"), []byte("ädmin-ümlaut-日本"))
}

// WithComments adds comments above, between and after the credentials.
func WithComments(_ *testing.T, b []byte) []byte {
	s := "# admin.conf, copied from the first control-plane node\n" + string(b)
	s = strings.Replace(s, "users:\n", "users:\n# the admin's client certificate, one year\n", 1)
	s = regexp.MustCompile(`(client-certificate-data: \S+)\n`).ReplaceAllString(s, "$1 # kubeadm:cluster-admins\n    # the key follows\n")
	return []byte(s)
}

// FlowYAML writes every collection below the top level in flow style:
// users: [{name: a, user: {client-certificate-data: ..., ...}}].
func FlowYAML(t *testing.T, b []byte) []byte {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var flow func(n *yaml.Node)
	flow = func(n *yaml.Node) {
		if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
			n.Style = yaml.FlowStyle
		}
		for _, c := range n.Content {
			flow(c)
		}
	}
	for _, c := range doc.Content[0].Content {
		flow(c)
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte("users: [{name: ")) {
		t.Fatalf("not flow YAML:\n%s", out)
	}
	return out
}

// AsJSON is `kubectl config view --raw -o json` (indent "    "), or
// piped through `jq -c .` (indent "").
func AsJSON(t *testing.T, b []byte, indent string) []byte {
	var v any
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	var out []byte
	var err error
	if indent == "" {
		out, err = json.Marshal(v)
	} else {
		out, err = json.MarshalIndent(v, "", indent)
	}
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}

// CALine matches the cluster CA line of kubeadm's block YAML.
var CALine = regexp.MustCompile(`(certificate-authority-data): ([A-Za-z0-9+/=]+)`)

// QuoteCA puts the cluster CA between open and close.
func QuoteCA(b []byte, open, close string) []byte {
	return CALine.ReplaceAll(b, []byte("${1}: "+open+"${2}"+close))
}

// LiteralCert writes the certificate as a literal block wrapped at 64
// columns, which kubectl reads (its base64 skips line breaks).
func LiteralCert(t *testing.T, b []byte) []byte {
	m := CredLine.FindSubmatch(b)
	if m == nil || string(m[1]) != "client-certificate-data" {
		t.Fatal("fixture: no certificate line")
	}
	return literal(b, m)
}

// LiteralCA is LiteralCert for the cluster CA.
func LiteralCA(t *testing.T, b []byte) []byte {
	m := CALine.FindSubmatch(b)
	if m == nil {
		t.Fatal("fixture: no certificate-authority-data line")
	}
	return literal(b, m)
}

// literal rewrites the line m (key, value) as a literal block.
func literal(b []byte, m [][]byte) []byte {
	v := string(m[2])
	var lines []string
	for len(v) > 64 {
		lines, v = append(lines, v[:64]), v[64:]
	}
	lines = append(lines, v)
	return bytes.Replace(b, m[0], []byte(string(m[1])+": |\n      "+strings.Join(lines, "\n      ")), 1)
}
