package cplane

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A member's metrics listener: /health and /livez answer as etcd's do.
func TestGetOKAndEtcdHealthy(t *testing.T) {
	health, code := `{"health":"true","reason":""}`, http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(code)
		_, _ = w.Write([]byte(health))
	}))
	defer srv.Close()
	ctx := context.Background()
	if err := EtcdHealthy(ctx, nil, srv.URL+"/health", time.Second); err != nil {
		t.Errorf("healthy member: %v", err)
	}
	if body, err := GetOK(ctx, nil, srv.URL+"/livez", time.Second); err != nil || !strings.Contains(string(body), "true") {
		t.Errorf("GetOK of a 200: %q, %v", body, err)
	}
	health, code = `{"health":"false","reason":"RAFT NO LEADER"}`, http.StatusServiceUnavailable
	if err := EtcdHealthy(ctx, nil, srv.URL+"/health", time.Second); err == nil {
		t.Error("member without a leader: healthy")
	}
	if _, err := GetOK(ctx, nil, srv.URL+"/livez", time.Second); err == nil || !strings.Contains(err.Error(), "/livez: 503 ") {
		t.Errorf("GetOK of a 503: %v", err)
	}
	srv.Close()
	if err := EtcdHealthy(ctx, nil, srv.URL+"/health", time.Second); err == nil {
		t.Error("member down: healthy")
	}
}

func TestEtcdClientTLSNeedsTheHealthcheckClient(t *testing.T) {
	if _, err := EtcdClientTLS(t.TempDir()); err == nil {
		t.Error("a PKI dir without etcd/healthcheck-client: no error")
	}
}
