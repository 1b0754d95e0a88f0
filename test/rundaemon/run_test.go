// Package rundaemon_test runs the real `pkirenewd run` binary as a process
// against a PKI whose certificates live for under a minute, with a
// NOTIFY_SOCKET listener standing in for systemd, and watches it keep the
// node valid through several renewal rounds.
package rundaemon_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
	"github.com/pkirenewd/pkirenewd/test/containerdrig"
	"github.com/pkirenewd/pkirenewd/test/testbin"
)

var pkirenewdBin string

func TestMain(m *testing.M) { testbin.Main(m, &pkirenewdBin) }

// notifySocket collects sd_notify datagrams.
type notifySocket struct {
	path   string
	conn   *net.UnixConn
	mu     sync.Mutex
	states []string
}

func listenNotify(t *testing.T, dir string) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(dir, "notify.sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n.conn = conn
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.states = append(n.states, strings.Split(string(buf[:k]), "\n")...)
			n.mu.Unlock()
		}
	}()
	return n
}

func (n *notifySocket) has(prefix string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, s := range n.states {
		if strings.HasPrefix(s, prefix) {
			c++
		}
	}
	return c
}

var sampleRE = regexp.MustCompile(`^(\w+)(?:\{(.*)\})? (\S+)$`)

// scrape returns metric name+labels -> value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		m := sampleRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("unparsable metrics line %q", line)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("bad value in %q", line)
		}
		out[m[1]+"{"+m[2]+"}"] = v
	}
	return out
}

func find(metrics map[string]float64, name string, labels ...string) (float64, string, bool) {
	for k, v := range metrics {
		if !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(k, l)
		}
		if ok {
			return v, k, true
		}
	}
	return 0, "", false
}

func TestRunKeepsShortLivedPKIValid(t *testing.T) {
	dir := t.TempDir()
	// Leaves valid for 40 s (plus kubeadm's 5 min backdating); renewed
	// 20 s before expiry: a round every ~20 s.
	l, err := renewtest.MakePKI(filepath.Join(dir, "kubernetes"), renewtest.Options{Algorithm: "ECDSA-P256", Validity: 40 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	notify := listenNotify(t, dir)
	port := containerdrig.FreePort(t)
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	var logs bytes.Buffer
	var logMu sync.Mutex
	cmd := exec.Command(pkirenewdBin, "run", "--config", "/dev/null", "--pki-dir", l.PKIDir, "--kubeconfig-dir", l.KubeconfigDir,
		"--manifests-dir", filepath.Join(dir, "kubernetes"), "--state-dir", state, "--renew-before", "20s", "--validity", "40s",
		"--restart-components=false", "--metrics-address", fmt.Sprintf("127.0.0.1:%d", port), "--log-format", "json", "--log-level", "debug")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.path, "WATCHDOG_USEC=2000000")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			logMu.Lock()
			logs.WriteString(sc.Text() + "\n")
			logMu.Unlock()
		}
	}()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			logMu.Lock()
			t.Logf("daemon log:\n%s", logs.String())
			logMu.Unlock()
		}
	})
	waitFor := func(what string, d time.Duration, cond func() bool) time.Duration {
		t.Helper()
		s := time.Now()
		for time.Since(s) < d {
			if cond() {
				return time.Since(s)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("timed out after %v waiting for %s", d, what)
		return 0
	}
	waitFor("READY=1", 10*time.Second, func() bool { return notify.has("READY=1") > 0 })
	t.Logf("READY after %v", time.Since(start).Round(time.Millisecond))
	waitFor("WATCHDOG=1 twice", 5*time.Second, func() bool { return notify.has("WATCHDOG=1") >= 2 })
	if notify.has("STATUS=") == 0 {
		t.Error("no STATUS= sent")
	}

	// Metrics carry every certificate with x509-certificate-exporter's
	// names and labels.
	m := scrape(t, metricsURL)
	inv, err := renew.TakeInventory(renew.Dirs{PKIDir: l.PKIDir, KubeconfigDir: l.KubeconfigDir})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range append(inv.CAs, inv.Certs...) {
		v, _, ok := find(m, "x509_cert_not_after", `cert="`+it.Name+`"`, `filepath="`+it.CertPath+`"`, `serial_number="`+it.Cert.SerialNumber.String()+`"`, `subject_CN="`+it.Cert.Subject.CommonName+`"`)
		if !ok || int64(v) != it.Cert.NotAfter.Unix() {
			t.Errorf("x509_cert_not_after for %s: %v %v", it.Name, v, ok)
		}
	}
	if v, _, ok := find(m, "pkirenewd_next_renewal_timestamp_seconds"); !ok || v <= float64(time.Now().Unix()-5) {
		t.Errorf("pkirenewd_next_renewal_timestamp_seconds = %v", v)
	}
	for k := range m {
		if strings.Contains(strings.ToLower(k), "private") || strings.Contains(k, "BEGIN") {
			t.Errorf("metric shows key material: %s", k)
		}
	}

	// Three renewal rounds; the PKI stays valid the whole time.
	rounds := func() int {
		v, _, _ := find(scrape(t, metricsURL), "pkirenewd_renewals_total", `result="success"`)
		return int(v)
	}
	deadline := time.Now().Add(150 * time.Second)
	for rounds() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d renewal rounds in 150 s", rounds())
		}
		inv, err := renew.TakeInventory(renew.Dirs{PKIDir: l.PKIDir, KubeconfigDir: l.KubeconfigDir})
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		for _, it := range inv.Certs {
			if it.Err != nil || it.Cert == nil || !now.Before(it.Cert.NotAfter) {
				t.Fatalf("%s invalid during the run: err=%v", it.Name, it.Err)
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("3 renewal rounds after %v", time.Since(start).Round(time.Second))
	if v, _, _ := find(scrape(t, metricsURL), "pkirenewd_renewals_total", `result="failure"`); v != 0 {
		t.Errorf("%v failed renewals", v)
	}

	// An operator replaces apiserver.crt (here: a forced renewal by a
	// second process): the daemon notices within 3 s.
	out, err := exec.Command(pkirenewdBin, "renew", "apiserver", "--force", "--config", "/dev/null", "--pki-dir", l.PKIDir,
		"--kubeconfig-dir", l.KubeconfigDir, "--state-dir", filepath.Join(dir, "manual-state"), "--validity", "40s").CombinedOutput()
	if err != nil {
		t.Fatalf("manual renew: %v\n%s", err, out)
	}
	replaced := time.Now()
	inv, _ = renew.TakeInventory(renew.Dirs{PKIDir: l.PKIDir, KubeconfigDir: l.KubeconfigDir})
	serial := inv.Find("apiserver").Cert.SerialNumber.String()
	waitFor("the daemon to notice the replaced apiserver.crt", 10*time.Second, func() bool {
		_, _, ok := find(scrape(t, metricsURL), "x509_cert_not_after", `cert="apiserver"`, `serial_number="`+serial+`"`)
		return ok
	})
	took := time.Since(replaced)
	t.Logf("external replacement noticed after %v", took.Round(time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("noticed after %v, want within 3 s", took)
	}

	// SIGTERM: a clean exit with STOPPING=1.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit 10 s after SIGTERM")
	}
	if notify.has("STOPPING=1") != 1 {
		t.Error("no STOPPING=1")
	}
	// JSON logs carry the structured fields.
	logMu.Lock()
	defer logMu.Unlock()
	for _, want := range []string{`"CERT":"apiserver"`, `"ACTION":"renew"`, `"NOT_AFTER":`, `"ACTION":"rescan"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %s", want)
		}
	}
}
