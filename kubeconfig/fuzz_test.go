package kubeconfig

import (
	"bytes"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"
)

const seedKubeconfig = `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: QUJD
    server: https://192.0.2.10:6443
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: kubernetes-admin
  name: kubernetes-admin@kubernetes
current-context: kubernetes-admin@kubernetes
kind: Config
users:
- name: kubernetes-admin
  user:
    client-certificate-data: QUJD
    client-key-data: "REVG"
`

// The forms kubectl reads besides kubeadm's block YAML.
var seedKubeconfigForms = []string{
	// Flow YAML, with non-ASCII text before the credentials on their line.
	"apiVersion: v1\nclusters: [{cluster: {server: 'https://192.0.2.10:6443'}, name: k}]\ncontexts: [{context: {cluster: k, user: ädmin}, name: c}]\ncurrent-context: c\nkind: Config\nusers: [{name: ädmin, user: {client-certificate-data: QUJD, client-key-data: REVG}}]\n",
	// Compact JSON (jq -c), non-ASCII and escapes included.
	`{"apiVersion":"v1","contexts":[{"context":{"cluster":"k","user":"日本"},"name":"c"}],"current-context":"c","kind":"Config","users":[{"name":"日本","user":{"client-certificate-data":"QUJD","client-key-data":"R\u0045VG"}}]}` + "\n",
	// Pretty JSON (kubectl -o json), CRLF.
	"{\r\n    \"contexts\": [{\"context\": {\"user\": \"a\"}, \"name\": \"c\"}],\r\n    \"current-context\": \"c\",\r\n    \"users\": [\r\n        {\"name\": \"a\", \"user\": {\"client-certificate-data\": \"QUJD\", \"client-key-data\": \"REVG\"}}\r\n    ]\r\n}\r\n",
	// Comments, quotes and CRLF.
	"# copy\r\ncontexts:\r\n- context: {user: a}\r\n  name: c\r\ncurrent-context: c\r\nusers:\r\n- name: a # admin\r\n  user:\r\n    client-certificate-data: 'QUJD' # cert\r\n    # key\r\n    client-key-data: \"REVG\"\r\n",
	// Forms only re-serialization handles: a literal block, a tag, an anchor.
	"contexts: [{context: {user: a}, name: c}]\ncurrent-context: c\nusers:\n- name: a\n  user:\n    client-certificate-data: |\n      QU\n      JD\n    client-key-data: !!str &k REVG\nother: x\n",
	// An anchored credential that an alias reads too: refused.
	"contexts: [{context: {user: a}, name: c}]\ncurrent-context: c\nusers:\n- name: a\n  user: {client-certificate-data: QUJD, client-key-data: &k REVG}\n- name: b\n  user: {client-certificate-data: QUJD, client-key-data: *k}\n",
	// Two users, the current one second; a second document.
	"contexts: [{context: {user: b}, name: c}]\ncurrent-context: c\nusers:\n- {name: a, user: {client-certificate-data: QUJD, client-key-data: REVG}}\n- {name: b, user: {client-certificate-data: QUJD, client-key-data: REVG}}\n---\nkind: Other\n",
}

func FuzzKubeconfig(f *testing.F) {
	f.Add([]byte(seedKubeconfig))
	for _, s := range seedKubeconfigForms {
		f.Add([]byte(s))
	}
	f.Add([]byte("kind: Config\ncurrent-context: x\n"))
	f.Add([]byte("{{"))
	f.Add([]byte("users: [{name: a, user: {client-certificate: /x}}]\ncontexts: [{name: c, context: {user: a}}]\ncurrent-context: c\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		kc, err := Parse(data)
		if err != nil || kc.certNode == nil {
			return
		}
		// Replacing the credentials changes exactly them, or fails.
		out, err := kc.WithCredentials([]byte("NEW CERT"), []byte("NEW KEY"))
		if err == nil {
			requireNewCredentials(t, data, out)
		}
		// The re-serialization, which only some forms reach, likewise.
		out, err = rewrite(data, map[int]credentials{kc.userIndex: {[]byte("NEW CERT"), []byte("NEW KEY")}}, false)
		if err == nil {
			requireNewCredentials(t, data, out)
		}
	})
}

// requireNewCredentials checks a rewritten kubeconfig independently of
// the editor's own check: it parses, and reads as the original did but
// for the current user's credentials.
func requireNewCredentials(t *testing.T, in, out []byte) {
	t.Helper()
	again, err := Parse(out)
	if err != nil {
		t.Fatalf("rewritten kubeconfig does not parse: %v", err)
	}
	if !bytes.Equal(again.CertData, []byte("NEW CERT")) || !bytes.Equal(again.KeyData, []byte("NEW KEY")) {
		t.Fatal("rewritten kubeconfig lost the new credentials")
	}
	var before, after any
	if yaml.Unmarshal(in, &before) != nil || yaml.Unmarshal(out, &after) != nil {
		return // not plain data (keys that are not strings, heavy aliasing)
	}
	b, a := userData(before, again.userIndex), userData(after, again.userIndex)
	if b == nil || a == nil {
		return
	}
	for _, k := range []string{"client-certificate-data", "client-key-data"} {
		b[k], a[k] = nil, nil
	}
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("something besides the credentials changed:\n%q\n%q", in, out)
	}
}

// userData is users[i].user of a kubeconfig decoded as plain data.
func userData(v any, i int) map[string]any {
	root, _ := v.(map[string]any)
	users, _ := root["users"].([]any)
	if i < 0 || i >= len(users) {
		return nil
	}
	e, _ := users[i].(map[string]any)
	u, _ := e["user"].(map[string]any)
	return u
}
