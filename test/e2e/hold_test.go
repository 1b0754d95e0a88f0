//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/test/containerdrig"
	"github.com/pkirenewd/pkirenewd/test/cplane"
)

// TestKubeadmUpgradeHoldsADueRenewal: a renewal due while the real
// `kubeadm upgrade apply` upgrades the node is held, not failed. The leaf
// is kubelet.conf, the one kubeadm's upgrade does not renew, renewed by
// kubeadm beforehand with a two-minute life so that it is due at once. Once
// kubeadm has begun (its staging directory exists), `pkirenewd run` with
// restarts off is started: it says it is held at Info, logs no "renewal
// failed", counts no failure, writes nothing while kubeadm runs, and
// renews within a minute of kubeadm's exit.
func TestKubeadmUpgradeHoldsADueRenewal(t *testing.T) {
	from, to, err := upgradePair()
	if err != nil {
		t.Fatal(err)
	}
	cp := StartControlPlane(t, Options{KubernetesVersion: from.Version})
	toBin, err := cplane.Build(to.Version, "all")
	if err != nil {
		t.Fatal(err)
	}
	toKubeadm := cp.prepareUpgrade(to.Version, toBin)
	// kubelet.conf made anew by kubeadm with a two-minute life (five
	// minutes backdated): past two thirds of it at once, so due.
	short := filepath.Join(cp.Dir, "kubeadm-short.yaml")
	shortCfg := cp.initConfig()
	shortCfg.Validity = 2 * time.Minute
	if err := os.WriteFile(short, []byte(shortCfg.YAML()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(KubernetesDir, "kubelet.conf")); err != nil {
		t.Fatal(err)
	}
	cp.kubeadm(nil, "init", "phase", "kubeconfig", "kubelet", "--config", short)
	due := leafSerials(t)["kubelet.conf"]

	var held *heldDaemon
	start := time.Now()
	out, err := upgradeApply(cp, toKubeadm, to.Version, func() { held = startHeldDaemon(t, cp) })
	end := time.Now()
	if err != nil {
		t.Fatalf("kubeadm upgrade apply: %v\n%s", err, out)
	}
	if held == nil {
		t.Fatal("kubeadm's staging directory was never seen")
	}
	t.Logf("timeline: kubeadm upgrade apply %s -> %s ran %v; the held daemon started %v in", from.Version, to.Version,
		end.Sub(start).Round(time.Millisecond), held.started.Sub(start).Round(100*time.Millisecond))
	held.verify(t, end)
	if now := leafSerials(t)["kubelet.conf"]; now == due {
		t.Error("kubelet.conf was not renewed after the upgrade")
	}
	// The kubelet takes up its renewed kubelet.conf (restarts were off).
	cp.RestartKubelet()
	if err := cp.WaitHealthy(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
}

// heldDaemon is `pkirenewd run` with restarts off, started while kubeadm
// upgrades the node.
type heldDaemon struct {
	*daemon
	metrics string
	started time.Time
}

func startHeldDaemon(t *testing.T, cp *ControlPlane) *heldDaemon {
	addr := fmt.Sprintf("127.0.0.1:%d", containerdrig.FreePort(t))
	h := &heldDaemon{metrics: addr, started: time.Now()}
	h.daemon = startPkirenewd(t, cp, "pkirenewd-held.log", "run", "--restart-components=false", "--metrics-address", addr)
	return h
}

// verify: held while kubeadm ran (said at Info, never "renewal failed",
// nothing written), renewed within a minute of kubeadm's end, and the
// failure counter still 0.
func (h *heldDaemon) verify(t *testing.T, kubeadmEnd time.Time) {
	t.Helper()
	var renewed time.Time
	for deadline := time.Now().Add(90 * time.Second); renewed.IsZero() && time.Now().Before(deadline) && !h.exited(); time.Sleep(100 * time.Millisecond) {
		for _, e := range h.Events() {
			if e.Str("msg") == "certificate renewed" {
				renewed = e.At
				break
			}
		}
	}
	holds := 0
	for _, e := range h.Events() {
		switch {
		case e.Str("ACTION") == "hold" && e.Str("level") == "info":
			holds++
			t.Logf("timeline: %+8v held daemon: %s", e.At.Sub(kubeadmEnd).Round(100*time.Millisecond), e.Str("msg"))
		case e.Str("msg") == "renewal failed":
			t.Errorf("held daemon: renewal failed %v after its start: %s", e.At.Sub(h.started).Round(100*time.Millisecond), e.Str("error"))
		case e.Str("msg") == "certificate renewed" && e.At.Before(kubeadmEnd):
			t.Errorf("held daemon wrote %s while kubeadm upgraded the node", e.Str("CERT"))
		case e.Str("level") == "error":
			t.Logf("held daemon: %s %s", e.Str("msg"), e.Str("error"))
		}
	}
	// Said when it starts and when its reason changes (kubeadm's
	// staging, then a pod being replaced), not at every 10-s look.
	if holds == 0 || holds > 3 {
		t.Errorf("the held daemon said it was held %d times, want once per reason", holds)
	}
	switch {
	case renewed.IsZero():
		t.Error("the held daemon did not renew within 90 s of kubeadm's end (log: pkirenewd-held.log)")
	case renewed.Sub(kubeadmEnd) > time.Minute:
		t.Errorf("the held daemon renewed %v after kubeadm's end, want within 60 s", renewed.Sub(kubeadmEnd))
	default:
		t.Logf("MEASURED the held renewal was written %v after kubeadm's exit", renewed.Sub(kubeadmEnd).Round(100*time.Millisecond))
	}
	body, err := httpGet("http://" + h.metrics + "/metrics")
	switch {
	case err != nil:
		t.Errorf("held daemon metrics: %v", err)
	case !strings.Contains(body, `pkirenewd_renewals_total{result="failure"} 0`) || !strings.Contains(body, `pkirenewd_renewals_total{result="success"} 1`):
		t.Errorf("held daemon: renewals counted\n%s", grepLines(body, "pkirenewd_renewals_total"))
	}
	if err := h.stop(t); err != nil {
		t.Error(err)
	}
}

func httpGet(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func grepLines(s, part string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, part) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
