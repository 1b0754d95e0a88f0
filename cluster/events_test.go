package cluster_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/cluster"
)

// eventsAPI is the events.k8s.io/v1 create endpoint of a kube-apiserver.
type eventsAPI struct {
	mu     sync.Mutex
	events []map[string]any
	delay  time.Duration
}

func (a *eventsAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	time.Sleep(a.delay)
	if r.Method != http.MethodPost || r.URL.Path != "/apis/events.k8s.io/v1/namespaces/kube-system/events" {
		w.WriteHeader(404)
		return
	}
	var ev map[string]any
	b, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(b, &ev)
	a.mu.Lock()
	a.events = append(a.events, ev)
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(201)
	_, _ = w.Write(b)
}

func (a *eventsAPI) posted() []map[string]any {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]map[string]any{}, a.events...)
}

func eventKubeconfig(t *testing.T, server string) string {
	t.Helper()
	kc := filepath.Join(t.TempDir(), "admin.conf")
	conf := fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    insecure-skip-tls-verify: true\n    server: %s\n  name: k\ncontexts:\n- context: {cluster: k, user: u}\n  name: c\ncurrent-context: c\nusers:\n- name: u\n  user: {token: not-a-secret}\n", server)
	if err := os.WriteFile(kc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return kc
}

// Events reach the API as events.k8s.io/v1 Events about the Node, from the
// pkirenewd controller, with their reason, action, note and type.
func TestEventsArePosted(t *testing.T) {
	api := &eventsAPI{}
	srv := httptest.NewTLSServer(api)
	defer srv.Close()
	s := &cluster.EventSink{Config: cluster.LeaseConfig{Kubeconfig: eventKubeconfig(t, srv.URL), Timeout: 5 * time.Second}, Node: "cp1"}
	s.Event("CertificatesRenewed", "Renew", "renewed apiserver, admin.conf", false)
	s.Event("RenewalFailed", "Renew", "kube-scheduler: not healthy", true)
	s.Flush(5 * time.Second)
	evs := api.posted()
	if len(evs) != 2 {
		t.Fatalf("%d events posted", len(evs))
	}
	ev := evs[0]
	regarding, _ := ev["regarding"].(map[string]any)
	if ev["reason"] != "CertificatesRenewed" || ev["action"] != "Renew" || ev["type"] != "Normal" || ev["reportingController"] != "pkirenewd" ||
		ev["reportingInstance"] != "pkirenewd-cp1" || regarding["kind"] != "Node" || regarding["name"] != "cp1" || ev["eventTime"] == nil {
		t.Errorf("event %v", ev)
	}
	if evs[1]["type"] != "Warning" || evs[1]["note"] != "kube-scheduler: not healthy" {
		t.Errorf("event %v", evs[1])
	}
}

// Posting never blocks the caller, even when the API hangs, and a flood is
// cut by the rate limit.
func TestEventsNeverBlock(t *testing.T) {
	api := &eventsAPI{delay: 2 * time.Second}
	srv := httptest.NewTLSServer(api)
	defer srv.Close()
	s := &cluster.EventSink{Config: cluster.LeaseConfig{Kubeconfig: eventKubeconfig(t, srv.URL), Timeout: 5 * time.Second}, Node: "cp1"}
	start := time.Now()
	for i := 0; i < 200; i++ {
		s.Event("RenewalFailed", "Renew", fmt.Sprintf("attempt %d", i), true)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("200 events took %v to queue: posting blocked the caller", d)
	}
	if s.Dropped() < 100 {
		t.Errorf("only %d of 200 events dropped: no rate limit", s.Dropped())
	}
	// An unreachable API: still no blocking, no panic.
	dead := &cluster.EventSink{Config: cluster.LeaseConfig{Kubeconfig: eventKubeconfig(t, "https://127.0.0.1:1"), Timeout: time.Second}, Node: "cp1"}
	dead.Event("CertificatesRenewed", "Renew", "x", false)
	var nilSink *cluster.EventSink
	nilSink.Event("CertificatesRenewed", "Renew", "x", false)
}
