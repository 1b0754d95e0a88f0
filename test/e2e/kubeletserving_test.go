//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/reconcile"
	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/renew/renewtest"
)

// kubeletServingCerts reads the kubelet's kubelet.crt: the leaf, then
// what else the file holds.
func kubeletServingCerts(t *testing.T, p string) []*x509.Certificate {
	t.Helper()
	certs, err := renewtest.ReadCerts(p)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

// checkKubeletServing runs `pkirenewd check -o json` against the rig's
// kubelet and returns the kubelet-serving item and the served serial
// comparison.
func checkKubeletServing(t *testing.T, cp *ControlPlane) (item map[string]any, serving map[string]any) {
	t.Helper()
	_, out := checkNode(cp, "-o", "json", "--kubelet-config", cp.kubeletConfigPath(), "--log-level", "error")
	var rep struct {
		Certificates   []map[string]any `json:"certificates"`
		KubeletServing map[string]any   `json:"kubeletServing"`
	}
	// checkNode returns stdout and stderr together; the JSON is the
	// first document.
	if err := json.NewDecoder(strings.NewReader(out[strings.Index(out, "{"):])).Decode(&rep); err != nil {
		t.Fatalf("check -o json: %v\n%s", err, out)
	}
	for _, c := range rep.Certificates {
		if c["name"] == renew.KubeletServingName {
			item = c
		}
	}
	if item == nil {
		t.Fatalf("check does not list %s:\n%s", renew.KubeletServingName, out)
	}
	return item, rep.KubeletServing
}

var tookRE = regexp.MustCompile(`TOOK=(\S+)`)

// renewServing runs `pkirenewd renew kubelet-serving --restart` against
// the rig's kubelet and checks the renewed file against old (the shape,
// the identity, a new key and serial, a year) and the serial served on
// 10250. It returns how the kubelet came to serve it (pkirenewd's log),
// how many times the kubelet was restarted, and the new serial.
func renewServing(t *testing.T, cp *ControlPlane, crt string, old []*x509.Certificate) (how string, restarted int, want string) {
	t.Helper()
	restartsBefore := len(cp.KubeletRestarts())
	args := []string{"renew", renew.KubeletServingName, "--restart", "--log-level", "debug", "--config", "/dev/null",
		"--pki-dir", PKIDir, "--kubeconfig-dir", KubernetesDir, "--manifests-dir", ManifestsDir,
		"--state-dir", t.TempDir(), "--cri-endpoint", cp.Rig.Endpoint(), "--node-name", cp.Opts.NodeName,
		"--admin-kubeconfig-copy", "", "--metrics-address", "", "--lease", "",
		"--kubelet-config", cp.kubeletConfigPath(), "--kubelet-restart-command", cp.KubeletRestartCommand()}
	cmd := exec.CommandContext(cp.Context(), pkirenewdBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	_ = os.WriteFile(filepath.Join(cp.LogDir, fmt.Sprintf("pkirenewd-renew-kubelet-serving-%d.log", start.Unix())), append(stdout.Bytes(), stderr.Bytes()...), 0o644)
	if err != nil {
		t.Fatalf("pkirenewd renew %s: %v\n%s\n%s", renew.KubeletServingName, err, stdout.String(), stderr.String())
	}

	got := kubeletServingCerts(t, crt)
	if len(got) != 2 || !got[1].IsCA || got[0].CheckSignatureFrom(got[1]) != nil {
		t.Fatalf("renewed %s: %d certificates, not the leaf and its CA", crt, len(got))
	}
	if err := pki.SameIdentity(old[0], got[0]); err != nil {
		t.Error(err)
	}
	if !bytes.Equal(got[1].RawSubject, old[1].RawSubject) {
		t.Errorf("CA subject %q, want %q", got[1].Subject, old[1].Subject)
	}
	if got[0].SerialNumber.Cmp(old[0].SerialNumber) == 0 || bytes.Equal(got[0].RawSubjectPublicKeyInfo, old[0].RawSubjectPublicKeyInfo) {
		t.Error("same serial or key as before")
	}
	if life := time.Until(got[0].NotAfter); life < 364*24*time.Hour || life > 366*24*time.Hour {
		t.Errorf("renewed for %v, want a year", life)
	}
	want = renew.CertSerial(got[0])
	addr := kubeletAddr(t, cp)
	if served, err := (cri.HTTPProber{}).ServedSerial(cp.Context(), addr); err != nil || served != want {
		t.Fatalf("after: %s serves %q (%v), the renewed file has %s", addr, served, err, want)
	}
	for _, line := range strings.Split(stderr.String(), "\n") {
		if !strings.Contains(line, "COMPONENT=kubelet") {
			continue
		}
		switch {
		case strings.Contains(line, "ACTION=reloaded"):
			how = "reloaded by the kubelet itself"
			if m := tookRE.FindStringSubmatch(line); m != nil {
				how += " " + m[1] + " after pkirenewd wrote it"
			}
		case strings.Contains(line, "ACTION=restarted"):
			how = "served after pkirenewd restarted the kubelet"
			if m := tookRE.FindStringSubmatch(line); m != nil {
				how += ", " + m[1] + " from the restart to the new serial"
			}
		}
	}
	if how == "" {
		t.Fatalf("pkirenewd did not log how the kubelet came to serve the renewed certificate:\n%s", stderr.String())
	}
	restarted = len(cp.KubeletRestarts()) - restartsBefore
	t.Logf("MEASURED kubelet v1.37.2: the renewed serving certificate was %s; kubelet restarts: %d; the renew command took %v",
		how, restarted, took.Round(time.Millisecond))
	return how, restarted, want
}

// kubeletAddr is where the rig's kubelet serves (its address and port),
// as pkirenewd reads them from the kubelet's configuration.
func kubeletAddr(t *testing.T, cp *ControlPlane) string {
	t.Helper()
	s, ok, err := reconcile.LocateKubeletServing(cp.kubeletConfigPath(), "", true)
	if err != nil || !ok {
		t.Fatalf("the rig's kubelet configuration: %v", err)
	}
	return s.Addr
}

// servesSerial waits (up to 2 minutes) until the kubelet serves want.
func servesSerial(t *testing.T, cp *ControlPlane, want string) error {
	addr := kubeletAddr(t, cp)
	return cp.Poll(2*time.Minute, 500*time.Millisecond, "the kubelet serving serial "+want+" on "+addr, func(ctx context.Context) error {
		served, err := (cri.HTTPProber{}).ServedSerial(ctx, addr)
		if err == nil && served != want {
			return fmt.Errorf("serves %s", served)
		}
		return err
	})
}

// TestKubeletServingCertRenewedAndServed: the real kubelet v1.37.2
// generated its self-signed serving certificate in --cert-dir at its first
// start. pkirenewd lists it, renews it in place (the kubelet's shape, the
// identity kept, a new key, a year), and the kubelet then serves the new
// serial on 10250, reloaded by itself (ReloadKubeletServerCertificateFile,
// on by default). Then the same with that feature gate turned off: the
// kubelet keeps serving the old pair, so pkirenewd restarts it. Which
// happened, and how long it took, is logged for the README.
func TestKubeletServingCertRenewedAndServed(t *testing.T) {
	cp := StartControlPlane(t, Options{})
	ctx := cp.Context()
	crt := filepath.Join(cp.KubeletRoot, "pki", "kubelet.crt")
	old := kubeletServingCerts(t, crt)
	if len(old) != 2 || !old[1].IsCA || old[0].CheckSignatureFrom(old[1]) != nil {
		t.Fatalf("the kubelet's %s: %d certificates, want its leaf and the CA that signed it", crt, len(old))
	}
	t.Logf("the kubelet made %s: leaf %q (DNS %v, IP %v, serial %s, until %s), CA %q", crt, old[0].Subject, old[0].DNSNames, old[0].IPAddresses,
		renew.CertSerial(old[0]), old[0].NotAfter.UTC().Format(time.RFC3339), old[1].Subject)
	// On the address and port of the rig's kubelet configuration (the
	// rig binds it to its own interface, not the loopback).
	if err := servesSerial(t, cp, renew.CertSerial(old[0])); err != nil {
		t.Fatalf("before: %v", err)
	}
	item, serving := checkKubeletServing(t, cp)
	if item["state"] != "ok" || item["path"] != crt || serving == nil || serving["stale"] != false {
		t.Fatalf("check before the renewal: %v, kubeletServing %v", item, serving)
	}

	how, restarted, want := renewServing(t, cp, crt, old)
	if !strings.HasPrefix(how, "reloaded") || restarted != 0 {
		t.Errorf("the kubelet v1.37.2 with its default feature gates: %s, %d restarts; want reloaded without a restart", how, restarted)
	}
	item, serving = checkKubeletServing(t, cp)
	if item["state"] != "ok" || serving == nil || serving["stale"] != false || serving["servedSerial"] != want {
		t.Errorf("check after the renewal: %v, kubeletServing %v", item, serving)
	}

	// A kubelet that does not reload (the feature gate off) is restarted.
	cfg, err := os.ReadFile(cp.kubeletConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	// Into the rig's featureGates map (a second one is a duplicate key).
	gated := strings.Replace(string(cfg), "\nfeatureGates:\n", "\nfeatureGates:\n  ReloadKubeletServerCertificateFile: false\n", 1)
	if gated == string(cfg) {
		t.Fatal("the rig's kubelet configuration has no featureGates map")
	}
	cfg = []byte(gated)
	if err := os.WriteFile(cp.kubeletConfigPath(), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	cp.RestartKubelet()
	if err := servesSerial(t, cp, want); err != nil {
		t.Fatal(err)
	}
	how, restarted, _ = renewServing(t, cp, crt, kubeletServingCerts(t, crt))
	if !strings.HasPrefix(how, "served after pkirenewd restarted") || restarted != 1 {
		t.Errorf("the feature gate off: %s, %d restarts; want one restart by pkirenewd", how, restarted)
	}
	if err := cp.Healthy(ctx); err != nil {
		t.Error(err)
	}
	kubeletNotRestartedOnAnExpiredClient(t, cp)
}

// kubeletNotRestartedOnAnExpiredClient: kubelet.conf points at the
// kubelet's rotated client certificate, as on a node after its TLS
// bootstrap, and that has expired (the running kubelet still works on what
// it loaded). A serving-certificate renewal the kubelet does not reload
// would restart it — but a restarted kubelet could not authenticate, and
// this node has no bootstrap-kubelet.conf: pkirenewd leaves it running,
// says why, and check exits 2.
func kubeletNotRestartedOnAnExpiredClient(t *testing.T, cp *ControlPlane) {
	conf := filepath.Join(KubernetesDir, "kubelet.conf")
	orig, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	clientPEM := filepath.Join(cp.KubeletRoot, "pki", "kubelet-client-current.pem")
	writeExpiredKubeletClient(t, clientPEM, cp.Opts.NodeName)
	var lines []string
	for _, l := range strings.Split(string(orig), "\n") {
		switch {
		case strings.HasPrefix(strings.TrimSpace(l), "client-certificate-data:"):
			l = strings.Replace(l, strings.TrimSpace(l), "client-certificate: "+clientPEM, 1)
		case strings.HasPrefix(strings.TrimSpace(l), "client-key-data:"):
			l = strings.Replace(l, strings.TrimSpace(l), "client-key: "+clientPEM, 1)
		}
		lines = append(lines, l)
	}
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = os.WriteFile(conf, orig, 0o600) }()

	restartsBefore := len(cp.KubeletRestarts())
	args := []string{"renew", renew.KubeletServingName, "--restart", "--config", "/dev/null",
		"--pki-dir", PKIDir, "--kubeconfig-dir", KubernetesDir, "--manifests-dir", ManifestsDir,
		"--state-dir", t.TempDir(), "--cri-endpoint", cp.Rig.Endpoint(), "--node-name", cp.Opts.NodeName,
		"--admin-kubeconfig-copy", "", "--metrics-address", "", "--lease", "",
		"--kubelet-config", cp.kubeletConfigPath(), "--kubelet-restart-command", cp.KubeletRestartCommand()}
	out, err := exec.CommandContext(cp.Context(), pkirenewdBin, args...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "NOT RESTARTING THE KUBELET") || !strings.Contains(string(out), "expired") {
		t.Errorf("renew with an expired kubelet client certificate: %v\n%s", err, out)
	}
	if n := len(cp.KubeletRestarts()) - restartsBefore; n != 0 || !cp.KubeletRunning() {
		t.Errorf("the kubelet was restarted %d times (running: %v)", n, cp.KubeletRunning())
	}
	if code, out := checkNode(cp, "--state-dir", t.TempDir()); code != 2 || !strings.Contains(out, "kubelet.conf") {
		t.Errorf("check with the kubelet's client certificate expired: exit %d, want 2\n%s", code, out)
	}
	t.Logf("an expired kubelet client certificate: the kubelet left running; %s", lastLine(string(out)))
}

// writeExpiredKubeletClient writes, as the kubelet keeps its rotated
// client certificate, a system:node certificate signed by the cluster CA
// that expired an hour ago, and its key.
func writeExpiredKubeletClient(t *testing.T, path, node string) {
	t.Helper()
	ca, err := tls.LoadX509KeyPair(filepath.Join(PKIDir, "ca.crt"), filepath.Join(PKIDir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:   pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}},
		NotBefore: time.Now().Add(-400 * 24 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	data := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})...)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
