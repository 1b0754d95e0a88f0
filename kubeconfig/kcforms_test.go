package kubeconfig

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/pkirenewd/pkirenewd/kubeconfig/kubeconfigtest"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

// kcForm turns kubeadm's admin.conf into another form kubectl reads.
type kcForm struct {
	name string
	make func(t *testing.T, kubeadm []byte) []byte
	// inPlace: the credentials can be swapped byte for byte, so every
	// other byte must stay.
	inPlace bool
	// json: the file is JSON and must stay JSON, laid out as it was.
	json bool
}

func kcForms() []kcForm {
	id := func(_ *testing.T, b []byte) []byte { return b }
	return []kcForm{
		{"kubeadm block YAML", id, true, false},
		{"flow YAML", kubeconfigtest.FlowYAML, true, false},
		{"flow YAML, non-ASCII names before the credentials", func(t *testing.T, b []byte) []byte {
			return kubeconfigtest.NonASCII(kubeconfigtest.FlowYAML(t, b))
		}, true, false},
		{"compact JSON", func(t *testing.T, b []byte) []byte { return kubeconfigtest.AsJSON(t, b, "") }, true, true},
		{"compact JSON, non-ASCII names before the credentials", func(t *testing.T, b []byte) []byte {
			return kubeconfigtest.AsJSON(t, kubeconfigtest.NonASCII(b), "")
		}, true, true},
		{"pretty JSON", func(t *testing.T, b []byte) []byte { return kubeconfigtest.AsJSON(t, b, "    ") }, true, true},
		{"pretty JSON, CRLF", func(t *testing.T, b []byte) []byte { return kubeconfigtest.CRLF(kubeconfigtest.AsJSON(t, b, "  ")) }, true, true},
		{"CRLF", func(_ *testing.T, b []byte) []byte { return kubeconfigtest.CRLF(b) }, true, false},
		{"comments", kubeconfigtest.WithComments, true, false},
		{"single-quoted", func(_ *testing.T, b []byte) []byte { return kubeconfigtest.QuoteCreds(b, `'`, `'`) }, true, false},
		{"double-quoted", func(_ *testing.T, b []byte) []byte { return kubeconfigtest.QuoteCreds(b, `"`, `"`) }, true, false},
		{"non-ASCII, comments and quotes, CRLF", func(t *testing.T, b []byte) []byte {
			return kubeconfigtest.CRLF(kubeconfigtest.QuoteCreds(kubeconfigtest.WithComments(t, kubeconfigtest.NonASCII(b)), `"`, `"`))
		}, true, false},
		// Forms the byte edit cannot place: written again from the tree.
		{"literal block credential", kubeconfigtest.LiteralCert, false, false},
		{"tagged credential", func(_ *testing.T, b []byte) []byte { return kubeconfigtest.QuoteCreds(b, "!!str ", "") }, false, false},
	}
}

// generic is a kubeconfig as plain data, to compare what readers see
// independently of the yaml.Node comparison the editor itself uses.
func generic(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var v map[string]any
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	return v
}

func setCreds(t *testing.T, v map[string]any, user string, cert, key []byte) {
	t.Helper()
	for _, u := range v["users"].([]any) {
		e := u.(map[string]any)
		if e["name"] == user {
			m := e["user"].(map[string]any)
			m["client-certificate-data"] = base64.StdEncoding.EncodeToString(cert)
			m["client-key-data"] = base64.StdEncoding.EncodeToString(key)
			return
		}
	}
	t.Fatalf("no user %q", user)
}

type pemPair struct{ cert, key []byte }

// kubeadmPair makes a real PKI and returns admin.conf and another real
// pair (the scheduler's) to put in it.
func kubeadmPair(t *testing.T) ([]byte, pemPair) {
	t.Helper()
	l, err := renewtest.MakePKI(t.TempDir(), renewtest.Options{Algorithm: "ECDSA-P256", NoSuperAdmin: true})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := os.ReadFile(filepath.Join(l.KubeconfigDir, "admin.conf"))
	if err != nil {
		t.Fatal(err)
	}
	sched, err := os.ReadFile(filepath.Join(l.KubeconfigDir, "scheduler.conf"))
	if err != nil {
		t.Fatal(err)
	}
	kc, err := Parse(sched)
	if err != nil {
		t.Fatal(err)
	}
	return admin, pemPair{kc.CertData, kc.KeyData}
}

// Every form kubectl reads gets exactly the new credentials and nothing
// else changes: byte for byte where the credentials can be placed, and as
// read by kubectl's own loader (client-go's clientcmd) in every case. The
// re-serialization, which only some forms need, is proven on all of them.
func TestKubeconfigForms(t *testing.T) {
	kubeadm, pair := kubeadmPair(t)
	for _, form := range kcForms() {
		t.Run(form.name, func(t *testing.T) {
			in := form.make(t, kubeadm)
			kc, err := Parse(in)
			if err != nil {
				t.Fatalf("%v\n%s", err, in)
			}
			if _, err := clientcmd.Load(in); err != nil {
				t.Fatalf("fixture: kubectl cannot read it: %v\n%s", err, in)
			}
			want := generic(t, in)
			setCreds(t, want, kc.UserName, pair.cert, pair.key)

			if form.inPlace {
				// JSON re-serialized is byte-identical too, so prove the
				// byte edit itself places the credentials.
				requirePlaced(t, in, kc.userIndex)
			}
			out, err := kc.WithCredentials(pair.cert, pair.key)
			if err != nil {
				t.Fatalf("%v\n%s", err, in)
			}
			checkForm(t, form, in, out, want, kc, pair, form.inPlace)

			forced, err := rewrite(in, map[int]credentials{kc.userIndex: {pair.cert, pair.key}}, false)
			if err != nil {
				t.Fatalf("re-serialization: %v", err)
			}
			t.Run("re-serialized", func(t *testing.T) {
				// JSON is written back as JSON laid out like the
				// original (the layout of Go's encoder, as the fixture's).
				checkForm(t, form, in, forced, want, kc, pair, form.json)
			})
		})
	}
}

func checkForm(t *testing.T, form kcForm, in, out []byte, want map[string]any, kc *Config, pair pemPair, exact bool) {
	t.Helper()
	if got := generic(t, out); !reflect.DeepEqual(got, want) {
		t.Errorf("parsed result differs from the original with the new credentials:\n%s", out)
	}
	// kubectl reads the same config, but for the new credentials.
	before, err := clientcmd.Load(in)
	if err != nil {
		t.Fatal(err)
	}
	after, err := clientcmd.Load(out)
	if err != nil {
		t.Fatalf("kubectl cannot read the result: %v\n%s", err, out)
	}
	u := after.AuthInfos[kc.UserName]
	if u == nil || !bytes.Equal(u.ClientCertificateData, pair.cert) || !bytes.Equal(u.ClientKeyData, pair.key) {
		t.Fatalf("kubectl does not see the new credentials in:\n%s", out)
	}
	before.AuthInfos[kc.UserName].ClientCertificateData, before.AuthInfos[kc.UserName].ClientKeyData = pair.cert, pair.key
	if !reflect.DeepEqual(before, after) {
		t.Errorf("kubectl reads something else changed")
	}
	if form.json && !json.Valid(out) {
		t.Errorf("JSON came back as something else:\n%s", out)
	}
	if exact {
		// Every byte outside the two values stays.
		expect := in
		for _, r := range [][2][]byte{{kc.CertData, pair.cert}, {kc.KeyData, pair.key}} {
			expect = bytes.ReplaceAll(expect, []byte(base64.StdEncoding.EncodeToString(r[0])), []byte(base64.StdEncoding.EncodeToString(r[1])))
		}
		if !bytes.Equal(out, expect) {
			t.Errorf("bytes outside the credentials changed:\n--- got\n%s\n--- want\n%s", out, expect)
		}
	}
}

func requirePlaced(t *testing.T, in []byte, user int) {
	t.Helper()
	doc, err := parseDoc(in)
	if err != nil {
		t.Fatal(err)
	}
	edits, err := credEdits(doc.Content[0], map[int]credentials{user: {[]byte("c"), []byte("k")}})
	if err != nil {
		t.Fatal(err)
	}
	spans, err := locate(in, edits)
	if err != nil {
		t.Fatalf("the byte edit cannot place the credentials: %v", err)
	}
	creds := map[string]bool{}
	for _, e := range edits {
		creds[e.node.Value] = true
	}
	for _, s := range spans {
		if got := strings.Trim(string(in[s.start:s.end]), `"'`); !creds[got] {
			t.Fatalf("the byte edit would replace %.40q..., not a credential", got)
		}
	}
}

// What can be neither edited in place nor written again faithfully is
// refused, with the reason.
func TestRewriteRefuses(t *testing.T) {
	const head = "contexts: [{context: {user: a}, name: c}]\ncurrent-context: c\n"
	tests := []struct{ name, doc, err string }{
		{"anchored credential read through an alias",
			head + "users:\n- {name: a, user: {client-certificate-data: QUJD, client-key-data: &k REVG}}\n- {name: b, user: {client-certificate-data: QUJD, client-key-data: *k}}\n",
			"line 4: the credential is an anchor"},
		{"block credential in a file of two documents",
			head + "users:\n- name: a\n  user:\n    client-certificate-data: |\n      QUJD\n    client-key-data: REVG\n---\nkind: Other\n",
			"more than one YAML document"},
		{"no such users entry", head + "users: []\n", "users entry 0 not found"},
		{"key in a file", head + "users:\n- {name: a, user: {client-certificate-data: QUJD, client-key: /k}}\n", `users entry 0 ("a") does not embed both`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rewriteCredentials([]byte(tc.doc), map[int]credentials{0: {[]byte("c"), []byte("k")}})
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
		})
	}
}

// Lines and columns count as yaml.v3 counts them: CRLF is one break, a
// lone CR, NEL, LS and PS are breaks too, columns are runes and a byte
// order mark is not counted.
func TestOffsetOf(t *testing.T) {
	tests := []struct {
		raw       string
		line, col int
		want      int // -1: out of range
	}{
		{"a: b\n", 1, 4, 3},
		{"a: b\r\nc: d\r\n", 2, 4, 9},
		{"x\ry\nz", 3, 1, 4},
		{"é: ü\nk: v", 1, 4, 4},
		{"{\"日本\": \"v\"}", 1, 8, 11},
		{"a\u2028b: c", 2, 4, 7},
		{"a\u0085b: c", 2, 4, 6},
		{"\ufeffa: b", 1, 4, 6},
		{"a: b\n", 1, 6, -1},
		{"a: b\n", 3, 1, -1},
		{"a: b\n", 1, 0, -1},
	}
	for _, tc := range tests {
		got, err := offsetOf([]byte(tc.raw), lineStarts([]byte(tc.raw)), tc.line, tc.col)
		if tc.want < 0 {
			if err == nil {
				t.Errorf("%q line %d column %d: %d, want out of range", tc.raw, tc.line, tc.col, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q line %d column %d: %d %v, want %d", tc.raw, tc.line, tc.col, got, err, tc.want)
		}
	}
	// And those are yaml.v3's positions.
	for _, raw := range []string{"é: ü\nk: v", "{\"日本\": \"v\"}", "a: 1\r\nb: v", "\ufeffk: v"} {
		doc, err := parseDoc([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		m := doc.Content[0]
		v := m.Content[len(m.Content)-1]
		off, err := offsetOf([]byte(raw), lineStarts([]byte(raw)), v.Line, v.Column)
		if err != nil || !strings.HasPrefix(strings.Trim(raw[off:], `"}`), v.Value) {
			t.Errorf("%q: value %q at line %d column %d, offset %d %v", raw, v.Value, v.Line, v.Column, off, err)
		}
	}
}
