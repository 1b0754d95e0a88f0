package renew

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/pkirenewd/pkirenewd/pki"
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
		{"flow YAML", flowYAML, true, false},
		{"flow YAML, non-ASCII names before the credentials", func(t *testing.T, b []byte) []byte {
			return nonASCII(flowYAML(t, b))
		}, true, false},
		{"compact JSON", func(t *testing.T, b []byte) []byte { return asJSON(t, b, "") }, true, true},
		{"compact JSON, non-ASCII names before the credentials", func(t *testing.T, b []byte) []byte {
			return asJSON(t, nonASCII(b), "")
		}, true, true},
		{"pretty JSON", func(t *testing.T, b []byte) []byte { return asJSON(t, b, "    ") }, true, true},
		{"pretty JSON, CRLF", func(t *testing.T, b []byte) []byte { return crlf(asJSON(t, b, "  ")) }, true, true},
		{"CRLF", func(_ *testing.T, b []byte) []byte { return crlf(b) }, true, false},
		{"comments", withComments, true, false},
		{"single-quoted", func(_ *testing.T, b []byte) []byte { return quoteCreds(b, `'`, `'`) }, true, false},
		{"double-quoted", func(_ *testing.T, b []byte) []byte { return quoteCreds(b, `"`, `"`) }, true, false},
		{"non-ASCII, comments and quotes, CRLF", func(t *testing.T, b []byte) []byte {
			return crlf(quoteCreds(withComments(t, nonASCII(b)), `"`, `"`))
		}, true, false},
		// Forms the byte edit cannot place: written again from the tree.
		{"literal block credential", literalCert, false, false},
		{"tagged credential", func(_ *testing.T, b []byte) []byte { return quoteCreds(b, "!!str ", "") }, false, false},
	}
}

var credLine = regexp.MustCompile(`(client-(?:certificate|key)-data): ([A-Za-z0-9+/=]+)`)

func quoteCreds(b []byte, open, close string) []byte {
	return credLine.ReplaceAll(b, []byte("${1}: "+open+"${2}"+close))
}

func crlf(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")) }

// nonASCII renames the user (and so the context) so that multi-byte
// characters come before the credentials on their line in flow forms.
func nonASCII(b []byte) []byte {
	return bytes.ReplaceAll(b, []byte("kubernetes-admin"), []byte("ädmin-ümlaut-日本"))
}

func withComments(_ *testing.T, b []byte) []byte {
	s := "# admin.conf, copied from the first control-plane node\n" + string(b)
	s = strings.Replace(s, "users:\n", "users:\n# the admin's client certificate, one year\n", 1)
	s = regexp.MustCompile(`(client-certificate-data: \S+)\n`).ReplaceAllString(s, "$1 # kubeadm:cluster-admins\n    # the key follows\n")
	return []byte(s)
}

// flowYAML writes every collection below the top level in flow style:
// users: [{name: a, user: {client-certificate-data: ..., ...}}].
func flowYAML(t *testing.T, b []byte) []byte {
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

// asJSON is `kubectl config view --raw -o json` (indent "    "), or
// piped through `jq -c .` (indent "").
func asJSON(t *testing.T, b []byte, indent string) []byte {
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

// literalCert writes the certificate as a literal block wrapped at 64
// columns, which kubectl reads (its base64 skips line breaks).
func literalCert(t *testing.T, b []byte) []byte {
	m := credLine.FindSubmatch(b)
	if m == nil || string(m[1]) != "client-certificate-data" {
		t.Fatal("fixture: no certificate line")
	}
	v := string(m[2])
	var lines []string
	for len(v) > 64 {
		lines, v = append(lines, v[:64]), v[64:]
	}
	lines = append(lines, v)
	return bytes.Replace(b, m[0], []byte("client-certificate-data: |\n      "+strings.Join(lines, "\n      ")), 1)
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
	kc, err := parseKubeconfig(sched)
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
			kc, err := parseKubeconfig(in)
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
			out, err := kc.withCredentials(pair.cert, pair.key)
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

func checkForm(t *testing.T, form kcForm, in, out []byte, want map[string]any, kc *kubeconfig, pair pemPair, exact bool) {
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

// A whole renewal of a PKI whose admin.conf is compact JSON and whose
// controller-manager.conf is flow YAML, with non-ASCII names, renews
// everything and leaves each file in its form. Before, the second
// credential of the one-line JSON was looked for at a column the first
// replacement had moved, and the all-or-nothing plan renewed nothing.
func TestRenewKubeconfigForms(t *testing.T) {
	root := t.TempDir()
	l, err := renewtest.MakePKI(filepath.Join(root, "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256"})
	if err != nil {
		t.Fatal(err)
	}
	forms := map[string]func(t *testing.T, b []byte) []byte{
		"admin.conf":              func(t *testing.T, b []byte) []byte { return asJSON(t, nonASCII(b), "") },
		"controller-manager.conf": flowYAML,
		"scheduler.conf":          func(t *testing.T, b []byte) []byte { return asJSON(t, b, "    ") },
	}
	before := map[string][]byte{}
	for name, form := range forms {
		p := filepath.Join(l.KubeconfigDir, name)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		before[name] = form(t, b)
		if err := os.WriteFile(p, before[name], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := New(Options{
		Dirs:     Dirs{PKIDir: l.PKIDir, KubeconfigDir: l.KubeconfigDir},
		StateDir: filepath.Join(root, "state"),
		Policy:   pki.Policy{RenewBefore: 90 * 24 * time.Hour, NodeName: "node1"},
		Validity: 365 * 24 * time.Hour,
	})
	inv, _, err := r.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	plan, err := r.Plan(inv, Selection{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Apply(plan); err != nil {
		t.Fatal(err)
	}
	if len(plan.Items) != 12 {
		t.Fatalf("renewed %d items, want 12", len(plan.Items))
	}
	for name := range forms {
		after, err := os.ReadFile(filepath.Join(l.KubeconfigDir, name))
		if err != nil {
			t.Fatal(err)
		}
		old, _ := parseKubeconfig(before[name])
		kc, err := parseKubeconfig(after)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var issued *Planned
		for i := range plan.Items {
			if plan.Items[i].Name == name {
				issued = &plan.Items[i]
			}
		}
		if issued == nil || !bytes.Equal(kc.CertData, issued.Issued.CertPEM) || !bytes.Equal(kc.KeyData, issued.Issued.KeyPEM) {
			t.Fatalf("%s does not carry the renewed credentials", name)
		}
		// The same file but for the two values, in its own form.
		want := bytes.Replace(before[name], []byte(base64.StdEncoding.EncodeToString(old.CertData)), []byte(base64.StdEncoding.EncodeToString(kc.CertData)), 1)
		want = bytes.Replace(want, []byte(base64.StdEncoding.EncodeToString(old.KeyData)), []byte(base64.StdEncoding.EncodeToString(kc.KeyData)), 1)
		if !bytes.Equal(after, want) {
			t.Errorf("%s changed outside its credentials:\n%s", name, after)
		}
	}
	_, statuses, err := r.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range statuses {
		if s.Err != nil || s.Missing {
			t.Errorf("%s after the renewal: err=%v missing=%v", s.Name, s.Err, s.Missing)
		}
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
