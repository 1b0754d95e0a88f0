package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// metricsNote says whether the running daemon serves its metrics where
// the configuration puts them: a daemon that could not bind the address
// runs on and renews (metrics are optional), but that must be seen here
// too, not only in its journal. "" when it does, when no daemon runs under
// systemd, or when metrics are off.
func metricsNote(ctx context.Context, addr string) string {
	if addr == "" {
		return ""
	}
	pid := daemonPID()
	if pid == 0 {
		return ""
	}
	return metricsServed(ctx, addr, pid)
}

// metricsServed asks addr for pkirenewd's metrics on behalf of the daemon
// pid; "" when they answer.
func metricsServed(ctx context.Context, addr string, pid int) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("metricsAddress %q: %v", addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, port) + "/metrics"
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Sprintf("the daemon (pid %d) does not serve its metrics on %s (%v): it renews all the same; journalctl -u pkirenewd says why (another process on the address?)", pid, addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "pkirenewd_renewals_total") {
		return fmt.Sprintf("%s answers, but not with pkirenewd's metrics (HTTP %d): another process holds the address, so the daemon (pid %d) serves none; it renews all the same", url, resp.StatusCode, pid)
	}
	return ""
}
