// Package prometheus_test proves the shipped alerting rules and dashboard
// with the real Prometheus (Debian's prometheus package): promtool checks
// and unit-tests every rule, and a Prometheus scraping `pkirenewd run` on a
// node whose CA is about to expire fires the CA alert through its HTTP API
// while the others stay quiet, and answers every query of the dashboard.
package prometheus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pkirenewd/pkirenewd/renew/renewtest"
	"github.com/pkirenewd/pkirenewd/test/containerdrig"
	"github.com/pkirenewd/pkirenewd/test/testbin"
)

var pkirenewdBin string

func TestMain(m *testing.M) { testbin.Main(m, &pkirenewdBin) }

const rulesFile = "../../packaging/prometheus/pkirenewd-rules.yaml"

func need(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed (Debian's prometheus package)", tool)
		}
		t.Skipf("%s is not installed (apt-get install prometheus)", tool)
	}
	return p
}

func TestRulesCheckAndUnitTests(t *testing.T) {
	promtool := need(t, "promtool")
	if out, err := exec.Command(promtool, "check", "rules", rulesFile).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	cmd := exec.Command(promtool, "test", "rules", "rules_test.yaml")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// The PrometheusRule for prometheus-operator carries exactly the groups of
// the plain rules file.
func TestPrometheusRuleMatchesTheRules(t *testing.T) {
	var plain struct {
		Groups []any `yaml:"groups"`
	}
	var op struct {
		Kind string `yaml:"kind"`
		Spec struct {
			Groups []any `yaml:"groups"`
		} `yaml:"spec"`
	}
	for path, into := range map[string]any{rulesFile: &plain, "../../packaging/prometheus/pkirenewd-prometheusrule.yaml": &op} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(data, into); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	if op.Kind != "PrometheusRule" || len(plain.Groups) == 0 || !reflect.DeepEqual(plain.Groups, op.Spec.Groups) {
		t.Fatal("pkirenewd-prometheusrule.yaml does not carry the groups of pkirenewd-rules.yaml")
	}
}

// A live Prometheus, the shipped rules (with their `for:` set to 0 so the
// test need not wait an hour; the delays are what promtool tests), and
// `pkirenewd run` on a node whose CA expires in 100 days: the CA alert
// fires, the leaf alerts do not, and the dashboard's queries all answer.
func TestAlertsFireInARealPrometheus(t *testing.T) {
	prom := need(t, "prometheus")
	dir := t.TempDir()
	l, err := renewtest.MakePKI(filepath.Join(dir, "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256", CAValidity: 100 * 24 * time.Hour, Validity: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	metricsPort, promPort := containerdrig.FreePort(t), containerdrig.FreePort(t)
	testbin.Start(t, pkirenewdBin, filepath.Join(dir, "pkirenewd.log"), "run", "--config", "/dev/null",
		"--pki-dir", l.PKIDir, "--kubeconfig-dir", l.KubeconfigDir, "--state-dir", filepath.Join(dir, "state"),
		"--manifests-dir", filepath.Join(dir, "kubernetes", "manifests"), "--restart-components=false", "--renew-before", "7d", "--ca-renewal", "manual", "--metrics-address", fmt.Sprintf("127.0.0.1:%d", metricsPort))

	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	immediate := regexp.MustCompile(`(?m)^(\s+)for: .*$`).ReplaceAll(rules, []byte("${1}for: 0s"))
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), immediate, 0o644); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [%s]\nscrape_configs:\n- job_name: pkirenewd\n  static_configs:\n  - targets: ['127.0.0.1:%d']\n", filepath.Join(dir, "rules.yaml"), metricsPort)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", promPort)
	testbin.Start(t, prom, filepath.Join(dir, "prometheus.log"), "--config.file", filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path", filepath.Join(dir, "tsdb"), "--web.listen-address", fmt.Sprintf("127.0.0.1:%d", promPort))

	var firing map[string][]map[string]string
	deadline := time.Now().Add(90 * time.Second)
	for {
		firing, err = alerts(base)
		if err == nil && len(firing["KubeadmCAExpiresSoon"]) > 0 && len(firing["PkirenewdCADue"]) == 3 {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Fatalf("KubeadmCAExpiresSoon and PkirenewdCADue never fired (last: %v, %v)\n%s", firing, err, log)
		}
		time.Sleep(500 * time.Millisecond)
	}
	cas := map[string]bool{}
	for _, a := range firing["KubeadmCAExpiresSoon"] {
		cas[a["cert"]] = true
		if a["instance"] != fmt.Sprintf("127.0.0.1:%d", metricsPort) || a["severity"] != "warning" {
			t.Errorf("alert labels %v", a)
		}
	}
	if !cas["ca"] || !cas["front-proxy-ca"] || !cas["etcd-ca"] {
		t.Errorf("CA alerts for %v, want ca, etcd-ca and front-proxy-ca", cas)
	}
	// caRenewal manual: each CA within caWarnBefore is the operator's to
	// renew, and the alert says so.
	for _, a := range firing["PkirenewdCADue"] {
		if a["renewal"] != "manual" {
			t.Errorf("PkirenewdCADue %v, want renewal=manual", a)
		}
	}
	for _, quiet := range []string{"KubeadmCertificateExpiresSoon", "KubeadmCertificateExpired", "PkirenewdDown", "PkirenewdAbsent", "PkirenewdStaleComponent", "PkirenewdHeld", "PkirenewdUnseenComponent", "PkirenewdTransactionPending", "PkirenewdBrokenCertificates", "KubeletClientRotationStuck", "PkirenewdCAHoldersOld"} {
		if len(firing[quiet]) > 0 {
			t.Errorf("%s fires on a healthy node: %v", quiet, firing[quiet])
		}
	}
	t.Logf("firing: %d CA alerts (%v); every other alert quiet", len(firing["KubeadmCAExpiresSoon"]), cas)
	checkDashboard(t, base)
}

// alerts returns the firing alerts by name, each as its labels.
func alerts(base string) (map[string][]map[string]string, error) {
	var r struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := getJSON(base+"/api/v1/alerts", &r); err != nil {
		return nil, err
	}
	out := map[string][]map[string]string{}
	for _, a := range r.Data.Alerts {
		if a.State == "firing" {
			out[a.Labels["alertname"]] = append(out[a.Labels["alertname"]], a.Labels)
		}
	}
	return out, nil
}

func getJSON(u string, into any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(into)
}

// checkDashboard runs every query of the shipped Grafana dashboard against
// the live Prometheus: each must parse and return data.
func checkDashboard(t *testing.T, base string) {
	t.Helper()
	data, err := os.ReadFile("../../packaging/grafana/pkirenewd-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			expr := strings.NewReplacer("$instance", ".*").Replace(tg.Expr)
			var r struct {
				Status string `json:"status"`
				Data   struct {
					Result []any `json:"result"`
				} `json:"data"`
			}
			if err := getJSON(base+"/api/v1/query?query="+url.QueryEscape(expr), &r); err != nil || r.Status != "success" {
				t.Errorf("panel %q: query %s: %v %s", p.Title, expr, err, r.Status)
				continue
			}
			if len(r.Data.Result) == 0 && !strings.Contains(p.Title, "Renewals") && !strings.Contains(p.Title, "restarts") {
				t.Errorf("panel %q: query %s returns nothing", p.Title, expr)
			}
		}
	}
}
