package reconcile

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestKubeletHealthzURL(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content string
		url           string
		ok, err       bool
	}{
		{"kubeadm's defaults", "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n", "http://127.0.0.1:10248/healthz", true, false},
		{"own port and address", "kind: KubeletConfiguration\nhealthzBindAddress: 127.0.0.2\nhealthzPort: 11248\n", "http://127.0.0.2:11248/healthz", true, false},
		{"all addresses", "kind: KubeletConfiguration\nhealthzBindAddress: 0.0.0.0\n", "http://127.0.0.1:10248/healthz", true, false},
		{"turned off", "kind: KubeletConfiguration\nhealthzPort: 0\n", "", false, false},
		{"a key twice, as the kubelet reads it: the last wins", "kind: KubeletConfiguration\nhealthzPort: 1\nfeatureGates:\n  A: true\nhealthzPort: 11248\nfeatureGates:\n  B: true\n", "http://127.0.0.1:11248/healthz", true, false},
		{"not a kubelet configuration", "kind: Pod\n", "", false, true},
		{"garbage", "{{{", "", false, true},
	} {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		url, ok, err := KubeletHealthzURL(p)
		if url != tc.url || ok != tc.ok || (err != nil) != tc.err {
			t.Errorf("%s: %q %v %v", tc.name, url, ok, err)
		}
	}
	if _, ok, err := KubeletHealthzURL(filepath.Join(dir, "absent")); ok || err != nil {
		t.Errorf("no file: %v %v", ok, err)
	}
}

func TestKubeletAlive(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer ok.Close()
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "[-]syncloop failed", 500) }))
	defer sick.Close()
	if err := KubeletAlive(context.Background(), ok.URL+"/healthz"); err != nil {
		t.Error(err)
	}
	if err := KubeletAlive(context.Background(), sick.URL+"/healthz"); err == nil {
		t.Error("a failing healthz passed")
	}
	gone := httptest.NewServer(http.NotFoundHandler())
	url := gone.URL
	gone.Close()
	if err := KubeletAlive(context.Background(), url+"/healthz"); err == nil {
		t.Error("a stopped kubelet passed")
	}
}
