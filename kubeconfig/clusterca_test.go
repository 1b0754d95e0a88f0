package kubeconfig

import (
	"bytes"
	"encoding/base64"
	"reflect"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/pkirenewd/pkirenewd/kubeconfig/kubeconfigtest"
)

// caForms are the forms of kcForms, whose credentials take every form
// kubectl reads while the CA stays a plain scalar, and the forms the CA
// itself can take.
func caForms() []kcForm {
	var forms []kcForm
	for _, f := range kcForms() {
		// The CA is a plain one-line scalar in all of them.
		f.inPlace = true
		forms = append(forms, f)
	}
	return append(forms,
		kcForm{"single-quoted CA", func(_ *testing.T, b []byte) []byte { return kubeconfigtest.QuoteCA(b, `'`, `'`) }, true, false},
		kcForm{"double-quoted CA, CRLF", func(_ *testing.T, b []byte) []byte { return kubeconfigtest.CRLF(kubeconfigtest.QuoteCA(b, `"`, `"`)) }, true, false},
		kcForm{"literal block CA", kubeconfigtest.LiteralCA, false, false},
		kcForm{"tagged CA", func(_ *testing.T, b []byte) []byte { return kubeconfigtest.QuoteCA(b, "!!str ", "") }, false, false},
	)
}

// Every form kubectl reads gets exactly the new CA in the cluster that
// held the old one, and nothing else changes: byte for byte where the
// value can be placed, and as kubectl's loader reads it in every case;
// the re-serialization is proven on every form too.
func TestClusterCAForms(t *testing.T) {
	kubeadm, pair := kubeadmPair(t)
	newCA := pair.cert // any PEM will do: the editor does not judge it
	for _, form := range caForms() {
		t.Run(form.name, func(t *testing.T) {
			in := form.make(t, kubeadm)
			before, err := ClusterCAs(in)
			if err != nil || len(before) != 1 || len(before[0].Data) == 0 {
				t.Fatalf("fixture: %v %v\n%s", before, err, in)
			}
			oldCA := before[0].Data
			isOld := func(b []byte) bool { return bytes.Equal(b, oldCA) }
			out, names, err := WithClusterCA(in, newCA, isOld)
			if err != nil {
				t.Fatalf("%v\n%s", err, in)
			}
			if !reflect.DeepEqual(names, []string{before[0].Name}) {
				t.Fatalf("replaced %q, want %q", names, before[0].Name)
			}
			checkCAForm(t, form, in, out, before[0].Name, oldCA, newCA, form.inPlace)

			forced, _, err := withClusterCA(in, newCA, isOld, false)
			if err != nil {
				t.Fatalf("re-serialization: %v", err)
			}
			t.Run("re-serialized", func(t *testing.T) {
				checkCAForm(t, form, in, forced, before[0].Name, oldCA, newCA, form.json)
			})
		})
	}
}

func checkCAForm(t *testing.T, form kcForm, in, out []byte, cluster string, oldCA, newCA []byte, exact bool) {
	t.Helper()
	want := generic(t, in)
	for _, c := range want["clusters"].([]any) {
		e := c.(map[string]any)
		if e["name"] == cluster {
			e["cluster"].(map[string]any)["certificate-authority-data"] = base64.StdEncoding.EncodeToString(newCA)
		}
	}
	if got := generic(t, out); !reflect.DeepEqual(got, want) {
		t.Errorf("parsed result differs from the original with the new CA:\n%s", out)
	}
	kcBefore, err := clientcmd.Load(in)
	if err != nil {
		t.Fatal(err)
	}
	kcAfter, err := clientcmd.Load(out)
	if err != nil {
		t.Fatalf("kubectl cannot read the result: %v\n%s", err, out)
	}
	if c := kcAfter.Clusters[cluster]; c == nil || !bytes.Equal(c.CertificateAuthorityData, newCA) {
		t.Fatalf("kubectl does not see the new CA in:\n%s", out)
	}
	kcBefore.Clusters[cluster].CertificateAuthorityData = newCA
	if !reflect.DeepEqual(kcBefore, kcAfter) {
		t.Errorf("kubectl reads something else changed")
	}
	if exact {
		expect := bytes.ReplaceAll(in, []byte(base64.StdEncoding.EncodeToString(oldCA)), []byte(base64.StdEncoding.EncodeToString(newCA)))
		if !bytes.Equal(out, expect) {
			t.Errorf("bytes outside the CA changed:\n--- got\n%s\n--- want\n%s", out, expect)
		}
	}
}

// Only the entries whose CA the caller names are replaced: another
// cluster's CA, an entry with a CA file and one with nothing stay as
// they were, byte for byte.
func TestWithClusterCALeavesOtherClusters(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString
	in := []byte(`apiVersion: v1
kind: Config
clusters:
- name: a # the cluster of the node
  cluster: {certificate-authority-data: ` + b64([]byte("OLD")) + `, server: https://a:6443}
- name: b
  cluster:
    certificate-authority-data: "` + b64([]byte("OTHER")) + `"
    server: https://b:6443
- name: c
  cluster: {certificate-authority: /etc/kubernetes/pki/ca.crt, server: https://c:6443}
- name: d
  cluster: {server: https://d:6443}
- name: e
  cluster: {certificate-authority-data: '` + b64([]byte("OLD")) + `', server: https://e:6443}
contexts: [{name: x, context: {cluster: a, user: u}}]
current-context: x
users: [{name: u, user: {client-certificate: /p/c.pem, client-key: /p/c.pem}}]
`)
	isOld := func(b []byte) bool { return string(b) == "OLD" }
	out, names, err := WithClusterCA(in, []byte("NEW"), isOld)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(names, []string{"a", "e"}) {
		t.Errorf("replaced %q, want a and e", names)
	}
	want := bytes.ReplaceAll(in, []byte(b64([]byte("OLD"))), []byte(b64([]byte("NEW"))))
	if !bytes.Equal(out, want) {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
	// Nothing to replace: the same bytes.
	same, names, err := WithClusterCA(in, []byte("NEW"), func([]byte) bool { return false })
	if err != nil || names != nil || !bytes.Equal(same, in) {
		t.Errorf("nothing to replace: %q %v, changed: %v", names, err, !bytes.Equal(same, in))
	}
}

func TestWithClusterCARefuses(t *testing.T) {
	tests := []struct{ name, doc, err string }{
		{"CA anchored and read through an alias",
			"clusters:\n- {name: a, cluster: {certificate-authority-data: &ca T0xE, server: s}}\n- {name: b, cluster: {certificate-authority-data: *ca, server: s}}\n",
			`line 2: cluster "a": the CA is an anchor`},
		{"two entries of one name",
			"clusters:\n- {name: a, cluster: {certificate-authority-data: T0xE}}\n- {name: a, cluster: {certificate-authority-data: T0xE}}\n",
			`two clusters entries named "a"`},
		{"block CA in a file of two documents",
			"clusters:\n- name: a\n  cluster:\n    certificate-authority-data: |\n      T0xE\n---\nkind: Other\n",
			"more than one YAML document"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := WithClusterCA([]byte(tc.doc), []byte("NEW"), func(b []byte) bool { return string(b) == "OLD" })
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
		})
	}
}

// ClusterCAs reads kubeadm's cluster-info kubeconfig, which has no
// context and no user (Parse refuses it).
func TestClusterCAsReadsClusterInfo(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte("CA PEM"))
	info := "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: " + b64 + "\n    server: https://192.0.2.10:6443\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {}\nusers: null\n"
	if _, err := Parse([]byte(info)); err == nil {
		t.Fatal("Parse reads cluster-info: the test no longer proves why ClusterCAs exists")
	}
	got, err := ClusterCAs([]byte(info))
	want := []ClusterCA{{Name: "", Server: "https://192.0.2.10:6443", Data: []byte("CA PEM")}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("%+v %v, want %+v", got, err, want)
	}
	if _, err := ClusterCAs([]byte("clusters: [{name: a, cluster: {certificate-authority-data: '!!'}}]")); err == nil || !strings.Contains(err.Error(), `cluster "a" certificate-authority-data`) {
		t.Errorf("bad base64: %v", err)
	}
}
