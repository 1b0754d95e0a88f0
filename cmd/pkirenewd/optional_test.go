package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// check says when the running daemon does not serve its metrics: nothing
// listens, or another process holds the address. Served, it says nothing.
func TestMetricsServed(t *testing.T) {
	pkirenewd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("pkirenewd_renewals_total{result=\"success\"} 1\n"))
	}))
	defer pkirenewd.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("node_load1 0.5\n")) }))
	defer other.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := ln.Addr().String()
	ln.Close()
	for _, tc := range []struct {
		name, addr, want string
	}{
		{"served", pkirenewd.Listener.Addr().String(), ""},
		{"another process holds the address", other.Listener.Addr().String(), "another process holds the address"},
		{"nothing listens", gone, "does not serve its metrics on " + gone},
	} {
		got := metricsServed(context.Background(), tc.addr, 4242)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	saved := daemonPID
	defer func() { daemonPID = saved }()
	daemonPID = func() int { return 0 }
	if got := metricsNote(context.Background(), gone); got != "" {
		t.Errorf("no daemon runs, yet: %q", got)
	}
}
