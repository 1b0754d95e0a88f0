package cluster_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"

	"github.com/pkirenewd/pkirenewd/cluster"
)

// apiserver is the Lease endpoint of a kube-apiserver, on the wire: JSON
// bodies, resourceVersion conflicts, Status errors.
type apiserver struct {
	mu    sync.Mutex
	lease map[string]any
	rv    int
	paths []string
}

func (a *apiserver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.paths = append(a.paths, r.Method+" "+r.URL.Path)
	const base = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"
	status := func(code int, reason string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":%q,"code":%d}`, reason, code)
	}
	write := func(code int) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(a.lease)
	}
	body := func() map[string]any {
		var m map[string]any
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &m)
		return m
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == base+"/pkirenewd":
		if a.lease == nil {
			status(404, "NotFound")
			return
		}
		write(200)
	case r.Method == http.MethodPost && r.URL.Path == base:
		if a.lease != nil {
			status(409, "AlreadyExists")
			return
		}
		a.lease = body()
		a.rv++
		a.lease["metadata"].(map[string]any)["resourceVersion"] = fmt.Sprint(a.rv)
		write(201)
	case r.Method == http.MethodPut && r.URL.Path == base+"/pkirenewd":
		m := body()
		if m["metadata"].(map[string]any)["resourceVersion"] != a.lease["metadata"].(map[string]any)["resourceVersion"] {
			status(409, "Conflict")
			return
		}
		a.lease = m
		a.rv++
		a.lease["metadata"].(map[string]any)["resourceVersion"] = fmt.Sprint(a.rv)
		write(200)
	default:
		status(404, "NotFound")
	}
}

// The lease client speaks the apiserver's REST API with admin.conf's
// credentials and server (or the local apiserver's address instead).
func TestLeaseOverHTTP(t *testing.T) {
	api := &apiserver{}
	srv := httptest.NewTLSServer(api)
	defer srv.Close()
	ca := base64.StdEncoding.EncodeToString(pemCert(srv.Certificate().Raw))
	kc := filepath.Join(t.TempDir(), "admin.conf")
	conf := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: %s
    server: https://lb.invalid:6443
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: kubernetes-admin
  name: kubernetes-admin@kubernetes
current-context: kubernetes-admin@kubernetes
users:
- name: kubernetes-admin
  user:
    token: not-a-secret
`, ca)
	if err := os.WriteFile(kc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := cluster.NewLease(cluster.LeaseConfig{Kubeconfig: kc, Server: srv.URL, Lease: "kube-system/pkirenewd",
		Identity: "node1", Duration: time.Minute, Timeout: 5 * time.Second}, clock.RealClock{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if ok, _, err := l.TryAcquire(ctx); !ok || err != nil {
		t.Fatalf("create: %v %v", ok, err)
	}
	if err := l.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	other := *l
	other.Identity = "node2"
	if ok, h, err := other.TryAcquire(ctx); ok || err != nil || h.Identity != "node1" {
		t.Fatalf("node2 took a held lease: %v %+v %v", ok, h, err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _, err := other.TryAcquire(ctx); !ok || err != nil {
		t.Fatalf("node2 after the release: %v %v", ok, err)
	}
	spec := api.lease["spec"].(map[string]any)
	if spec["holderIdentity"] != "node2" || spec["leaseDurationSeconds"] != float64(60) || spec["leaseTransitions"] != float64(1) {
		t.Errorf("lease on the server: %v", spec)
	}
	want := "GET /apis/coordination.k8s.io/v1/namespaces/kube-system/leases/pkirenewd POST /apis/coordination.k8s.io/v1/namespaces/kube-system/leases"
	if got := strings.Join(api.paths[:2], " "); got != want {
		t.Errorf("requests %q, want %q", got, want)
	}
	// An unreachable API is an error, not "held by someone".
	srv.Close()
	if ok, _, err := other.TryAcquire(ctx); ok || err == nil {
		t.Fatalf("unreachable API: %v %v", ok, err)
	}
	// A malformed kubeconfig names the file.
	if err := os.WriteFile(kc, []byte("clusters: ["), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.NewLease(cluster.LeaseConfig{Kubeconfig: kc, Lease: "kube-system/pkirenewd"}, clock.RealClock{}); err == nil || !strings.Contains(err.Error(), kc) {
		t.Errorf("malformed kubeconfig: %v", err)
	}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// The lease is renewed through the local apiserver, which is the component
// being restarted; while it is down, through the kubeconfig's own server
// (the load balancer), so a slow apiserver cannot let the lease lapse.
func TestLeaseFailsOverToTheKubeconfigServer(t *testing.T) {
	api := &apiserver{}
	lb := httptest.NewTLSServer(api)
	defer lb.Close()
	local := httptest.NewTLSServer(api)
	localURL := local.URL
	kc := filepath.Join(t.TempDir(), "admin.conf")
	conf := fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    insecure-skip-tls-verify: true\n    server: %s\n  name: k\ncontexts:\n- context: {cluster: k, user: u}\n  name: c\ncurrent-context: c\nusers:\n- name: u\n  user: {token: not-a-secret}\n", lb.URL)
	if err := os.WriteFile(kc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := cluster.NewLease(cluster.LeaseConfig{Kubeconfig: kc, Server: localURL, Lease: "kube-system/pkirenewd",
		Identity: "node1", Duration: time.Minute, Timeout: 2 * time.Second}, clock.RealClock{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if ok, _, err := l.TryAcquire(ctx); !ok || err != nil {
		t.Fatalf("through the local apiserver: %v %v", ok, err)
	}
	local.Close() // the local apiserver is being restarted
	before := len(api.paths)
	if err := l.Renew(ctx); err != nil {
		t.Fatalf("renewal with the local apiserver down: %v", err)
	}
	if len(api.paths) == before {
		t.Fatal("the renewal reached no server")
	}
	// An answer of the API is final: a conflict is not retried elsewhere.
	other := *l
	other.Identity = "node2"
	if ok, h, err := other.TryAcquire(ctx); ok || err != nil || h.Identity != "node1" {
		t.Fatalf("node2 through the load balancer: %v %+v %v", ok, h, err)
	}
}
