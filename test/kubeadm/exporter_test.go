package kubeadm_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/pkirenewd/pkirenewd/daemon"
	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/test/containerdrig"
	"github.com/pkirenewd/pkirenewd/test/testbin"
)

// exported maps "family{label set}" to the value of each x509_cert_*
// series. A label set lists its non-empty labels in order: Prometheus
// drops an empty label, and x509-certificate-exporter sets every label of
// its schema (secret_*, configmap_*, ...) on every series. pkirenewd's own
// label, cert, is left out.
type exported map[string]float64

var certFamilies = []string{"x509_cert_not_after", "x509_cert_not_before", "x509_cert_expired"}

func (e exported) add(families map[string]*dto.MetricFamily) {
	for _, name := range certFamilies {
		for _, m := range families[name].GetMetric() {
			var kv []string
			for _, l := range m.GetLabel() {
				if l.GetValue() != "" && l.GetName() != "cert" {
					kv = append(kv, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
				}
			}
			sort.Strings(kv)
			e[name+"{"+strings.Join(kv, ",")+"}"] = m.GetGauge().GetValue()
		}
	}
}

// pkirenewdSeries is what pkirenewd's /metrics says of the node.
func pkirenewdSeries(t *testing.T, n *node) exported {
	t.Helper()
	inv, err := renew.TakeInventory(renew.Dirs{PKIDir: n.pki(), KubeconfigDir: n.kube()})
	if err != nil {
		t.Fatal(err)
	}
	var statuses []renew.Status
	for _, it := range append(inv.CAs, inv.Certs...) {
		statuses = append(statuses, renew.Status{Item: it})
	}
	m := daemon.NewPromMetrics()
	m.Observe(statuses, time.Time{})
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}
	e := exported{}
	e.add(byName)
	return e
}

// exporterFacts is the label set x509-certificate-exporter v4.2.0 gives
// the node's files, watched as its Helm chart does for kubeadm (the pki
// directories, the kubeconfigs), written from its source
// (github.com/enix/x509-certificate-exporter: pkg/source/kubeconfig/
// kubeconfig.go, pkg/registry/labels.go and collector.go) and checked
// against the real exporter (TestMetricsMatchTheRealExporter):
//   - every certificate of every PEM file of a watched directory (one
//     level): filepath, filename;
//   - in a kubeconfig, every clusters entry's certificate-authority-data
//     (embedded_kind cluster, embedded_key its name) and every users entry's
//     client-certificate-data or client-certificate file (embedded_kind
//     user, embedded_key its name), all at the kubeconfig's filepath;
//   - the first value of each subject and issuer field, the serial in
//     decimal; expired once now is after NotAfter.
func exporterFacts(t *testing.T, n *node, now time.Time) exported {
	t.Helper()
	e := exported{}
	for _, dir := range []string{n.pki(), filepath.Join(n.pki(), "etcd")} {
		files, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if f.Type().IsRegular() {
				p := filepath.Join(dir, f.Name())
				e.facts(t, readFile(t, p), now, "filepath", p, "filename", f.Name())
			}
		}
	}
	for _, conf := range kubeconfigs(t, n) {
		var kc struct {
			Clusters []struct {
				Name    string            `yaml:"name"`
				Cluster map[string]string `yaml:"cluster"`
			} `yaml:"clusters"`
			Users []struct {
				Name string            `yaml:"name"`
				User map[string]string `yaml:"user"`
			} `yaml:"users"`
		}
		if err := yaml.Unmarshal(readFile(t, conf), &kc); err != nil {
			t.Fatal(err)
		}
		at := []string{"filepath", conf, "filename", filepath.Base(conf)}
		for _, c := range kc.Clusters {
			e.facts(t, embedded(t, conf, c.Cluster["certificate-authority-data"], c.Cluster["certificate-authority"]), now, append(at, "embedded_kind", "cluster", "embedded_key", c.Name)...)
		}
		for _, u := range kc.Users {
			e.facts(t, embedded(t, conf, u.User["client-certificate-data"], u.User["client-certificate"]), now, append(at, "embedded_kind", "user", "embedded_key", u.Name)...)
		}
	}
	return e
}

// kubeconfigs are the kubeconfig files kubeadm wrote.
func kubeconfigs(t *testing.T, n *node) []string {
	t.Helper()
	confs, err := filepath.Glob(filepath.Join(n.kube(), "*.conf"))
	if err != nil || len(confs) == 0 {
		t.Fatalf("no kubeconfigs in %s: %v", n.kube(), err)
	}
	return confs
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// embedded is the PEM a kubeconfig entry holds: base64 data, or a file
// (relative to the kubeconfig's directory).
func embedded(t *testing.T, conf, data, file string) []byte {
	t.Helper()
	switch {
	case data != "":
		b, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			t.Fatal(err)
		}
		return b
	case file != "":
		if !filepath.IsAbs(file) {
			file = filepath.Join(filepath.Dir(conf), file)
		}
		return readFile(t, file)
	}
	return nil
}

// facts adds the series of every certificate in data, at the given labels.
func (e exported) facts(t *testing.T, data []byte, now time.Time, at ...string) {
	t.Helper()
	for b, rest := pem.Decode(data); b != nil; b, rest = pem.Decode(rest) {
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		labels := map[string]string{"serial_number": c.SerialNumber.String()}
		for i := 0; i+1 < len(at); i += 2 {
			labels[at[i]] = at[i+1]
		}
		for prefix, name := range map[string]pkix.Name{"subject_": c.Subject, "issuer_": c.Issuer} {
			for k, v := range map[string][]string{"C": name.Country, "ST": name.Province, "L": name.Locality, "O": name.Organization, "OU": name.OrganizationalUnit, "CN": {name.CommonName}} {
				if len(v) > 0 {
					labels[prefix+k] = v[0]
				}
			}
		}
		var kv []string
		for k, v := range labels {
			if v != "" {
				kv = append(kv, fmt.Sprintf("%s=%q", k, v))
			}
		}
		sort.Strings(kv)
		set := "{" + strings.Join(kv, ",") + "}"
		e["x509_cert_not_after"+set] = float64(c.NotAfter.Unix())
		e["x509_cert_not_before"+set] = float64(c.NotBefore.Unix())
		e["x509_cert_expired"+set] = 0
		if now.After(c.NotAfter) {
			e["x509_cert_expired"+set] = 1
		}
	}
}

// compare requires ours (pkirenewd) to export every series the exporter
// does, with its value, and nothing else.
func compare(t *testing.T, name string, ours exported, against string, theirs exported) {
	t.Helper()
	for k, v := range theirs {
		if got, ok := ours[k]; !ok {
			t.Errorf("%s exports %s %v; %s does not", against, k, v, name)
		} else if got != v {
			t.Errorf("%s: %s is %v, %s says %v", against, k, v, name, got)
		}
	}
	for k := range ours {
		if _, ok := theirs[k]; !ok {
			t.Errorf("%s exports %s; %s does not", name, k, against)
		}
	}
	t.Logf("%d series of %s, all in %s with the same labels and value", len(theirs), against, name)
}

// On a PKI the real kubeadm made, pkirenewd exports exactly the series
// x509-certificate-exporter v4 exports for the same files, label for label
// and value for value (its own cert label aside): the 15 certificates
// and every kubeconfig's cluster CA, embedded_key the user's or the
// cluster's name, so that the exporter's dashboards and alerts work on
// pkirenewd's metrics unchanged.
func TestMetricsMatchTheExporterLabelSet(t *testing.T) {
	n := kubeadmNode(t, "", nil)
	now := time.Now()
	facts := exporterFacts(t, n, now)
	if len(facts) != 3*20 {
		t.Errorf("%d series from the facts, want 60: 3 families of 10 files and 5 kubeconfigs' user and cluster", len(facts))
	}
	compare(t, "pkirenewd", pkirenewdSeries(t, n), "x509-certificate-exporter v4 (the label set of its source)", facts)
}

// The same against the real exporter, when PKIRENEWD_X509_EXPORTER names
// its binary (v4.2.0): the module proxy does not serve
// github.com/enix/x509-certificate-exporter, so `make test` cannot build
// it. It also proves the facts TestMetricsMatchTheExporterLabelSet uses.
func TestMetricsMatchTheRealExporter(t *testing.T) {
	bin := os.Getenv("PKIRENEWD_X509_EXPORTER")
	if bin == "" {
		t.Skip("PKIRENEWD_X509_EXPORTER not set: x509-certificate-exporter is not on the Go module proxy; build v4.2.0 from its source and set it to the binary")
	}
	n := kubeadmNode(t, "", nil)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "exporter.yaml")
	if err := os.WriteFile(cfg, []byte("metrics:\n  exposeNotBefore: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := containerdrig.FreePort(t)
	args := []string{"--config", cfg, "--listen-address", fmt.Sprintf("127.0.0.1:%d", port), "--watch-dir", n.pki(), "--watch-dir", filepath.Join(n.pki(), "etcd")}
	for _, c := range kubeconfigs(t, n) {
		args = append(args, "--watch-kubeconf", c)
	}
	testbin.Start(t, bin, filepath.Join(dir, "exporter.log"), args...)
	theirs := scrapeExporter(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", port), 20)
	compare(t, "pkirenewd", pkirenewdSeries(t, n), "the real x509-certificate-exporter", theirs)
	compare(t, "the facts", exporterFacts(t, n, time.Now()), "the real x509-certificate-exporter", theirs)
}

// scrapeExporter reads the exporter's x509_cert_* series once it has read
// the want certificates.
func scrapeExporter(t *testing.T, url string, want int) exported {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		e, err := scrapeOnce(url)
		if err == nil && len(e) == 3*want {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("the exporter at %s: %d series, %v", url, len(e), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func scrapeOnce(url string) (exported, error) {
	resp, err := http.Get(url) //nolint:noctx // a test's loopback scrape
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, err
	}
	e := exported{}
	e.add(families)
	return e, nil
}
