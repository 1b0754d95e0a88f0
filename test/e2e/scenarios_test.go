//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/cri"
)

// renewableItems are the 12 items pkirenewd renews on a kubeadm node with
// stacked etcd (as its log names them in CERT).
var renewableItems = []string{"apiserver", "apiserver-etcd-client", "apiserver-kubelet-client", "etcd-healthcheck-client",
	"etcd-peer", "etcd-server", "front-proxy-client", "admin.conf", "controller-manager.conf", "kubelet.conf",
	"scheduler.conf", "super-admin.conf"}

// round is one renewal round of pkirenewd's log: what it renewed and the
// components it restarted, in order.
type round struct {
	at       time.Time
	certs    []string
	restarts []restart
}

func (r round) components() []string {
	var out []string
	for _, x := range r.restarts {
		out = append(out, x.component)
	}
	return out
}

// complete says whether the round renewed every renewable item.
func (r round) complete() bool {
	have := map[string]bool{}
	for _, c := range r.certs {
		have[c] = true
	}
	for _, c := range renewableItems {
		if !have[c] {
			return false
		}
	}
	return true
}

func parseRounds(evs []logEvent) []round {
	var out []round
	for _, e := range evs {
		switch {
		case e.Str("msg") == "renewing":
			out = append(out, round{at: e.At, certs: strings.Split(e.Str("CERT"), ",")})
		case e.Str("msg") == "component healthy" && len(out) > 0:
			out[len(out)-1].restarts = append(out[len(out)-1].restarts,
				restart{component: e.Str("COMPONENT"), sandbox: e.Str("SANDBOX"), took: e.Str("TOOK"), at: e.At})
		}
	}
	return out
}

func loggedError(evs []logEvent) error {
	for _, e := range evs {
		if e.Str("level") == "error" || e.Str("level") == "fatal" {
			return fmt.Errorf("pkirenewd logged an error: %v", e.Fields)
		}
	}
	return nil
}

// TestSeveralRenewalRounds is scenario 2: with certificates that are due
// about a minute after they are issued, `pkirenewd run` renews everything
// again and again; the control plane stays healthy through at least three complete
// rounds, each restarting etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler in that order (the kubelet's CrashLoopBackOff is capped at
// 1 s by the harness, crashLoopBackOff.maxContainerRestartPeriod) and the
// kubelet through kubeletRestartCommand.
func TestSeveralRenewalRounds(t *testing.T) {
	const (
		// Lifetime 8 min (kubeadm and pkirenewd backdate 5 min); due
		// 2 min before expiry: 48-60 s after issue (the jitter). A round
		// (lease, four components, the kubelet) takes about 15 s here;
		// at 20 s the rounds ran back to back and the test never saw
		// the daemon idle between them.
		validity    = 3 * time.Minute
		renewBefore = 2 * time.Minute
		wantRounds  = 3
	)
	cp := StartControlPlane(t, Options{Validity: validity})
	ctx := cp.Context()
	oldSerials := leafSerials(t)
	daemonStart := time.Now()
	d := startDaemon(t, cp, "--renew-before", renewBefore.String(), "--validity", validity.String(), "--restart-timeout", "3m",
		"--kubelet-restart-command", cp.KubeletRestartCommand())

	complete := func(rs []round) int {
		n := 0
		for _, r := range rs {
			if r.complete() {
				n++
			}
		}
		return n
	}
	// Between rounds the control plane must be healthy: sample it while
	// waiting, and count the samples taken while no round was running.
	var idleSamples, idleFailures int
	err := cp.Poll(6*time.Minute, time.Second, fmt.Sprintf("%d complete renewal rounds", wantRounds), func(ctx context.Context) error {
		if d.exited() {
			return fmt.Errorf("pkirenewd exited: %v", d.Cmd.ProcessState)
		}
		evs := d.Events()
		if err := loggedError(evs); err != nil {
			return err
		}
		lastRenew, lastScheduled := -1, -1
		for i, e := range evs {
			switch e.Str("msg") {
			case "renewing":
				lastRenew = i
			case "scheduled":
				lastScheduled = i
			}
		}
		if lastScheduled > lastRenew && lastRenew >= 0 {
			herr := cp.Healthy(ctx)
			// A round that began meanwhile voids the sample.
			if len(parseRounds(d.Events())) == len(parseRounds(evs)) {
				idleSamples++
				if herr != nil {
					idleFailures++
					t.Logf("between rounds, not healthy: %v", herr)
				}
			}
		}
		if n := complete(parseRounds(evs)); n < wantRounds {
			return fmt.Errorf("%d complete rounds so far", n)
		}
		if lastScheduled < lastRenew {
			return errors.New("the renewal round has not finished")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.stop(t); err != nil {
		t.Error(err)
	}
	evs := d.Events()
	rounds := parseRounds(evs)
	kubeletRestarts := 0
	for _, e := range evs {
		if e.Str("COMPONENT") == "kubelet" && e.Str("msg") == "kubelet restarted" {
			kubeletRestarts++
		}
	}
	prevEnd := daemonStart
	for i, r := range rounds {
		got := r.components()
		var end time.Time
		if n := len(r.restarts); n > 0 {
			end = r.restarts[n-1].at
		}
		var took []string
		for _, x := range r.restarts {
			took = append(took, x.component+" "+x.took)
		}
		t.Logf("round %d at +%v (%v after the previous round ended): %d items renewed; restarted %s; roll %v",
			i+1, r.at.Sub(daemonStart).Round(time.Millisecond), r.at.Sub(prevEnd).Round(time.Millisecond), len(r.certs),
			strings.Join(took, ", "), end.Sub(r.at).Round(time.Millisecond))
		if !end.IsZero() {
			prevEnd = end
		}
		if want := cri.Order(got); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("round %d restarted %v, not in the order %v", i+1, got, want)
		}
		if r.complete() && strings.Join(got, ",") != strings.Join(Components, ",") {
			t.Errorf("round %d renewed everything but restarted %v, want %v", i+1, got, Components)
		}
		if !r.complete() {
			t.Logf("NOTE: round %d renewed only %v", i+1, r.certs)
		}
	}
	if n := complete(rounds); n < wantRounds {
		t.Errorf("%d complete rounds, want %d", n, wantRounds)
	}
	kubeletRounds := 0
	for _, r := range rounds {
		for _, c := range r.certs {
			if c == "kubelet.conf" {
				kubeletRounds++
			}
		}
	}
	if kubeletRestarts != kubeletRounds || len(cp.KubeletRestarts()) != kubeletRounds {
		t.Errorf("kubelet.conf renewed in %d rounds; pkirenewd restarted the kubelet %d times, the harness %d times",
			kubeletRounds, kubeletRestarts, len(cp.KubeletRestarts()))
	}
	t.Logf("health sampled %d times between rounds, %d failed", idleSamples, idleFailures)
	if idleFailures > 0 {
		t.Errorf("the control plane was unhealthy in %d of %d samples between rounds", idleFailures, idleSamples)
	}

	// Healthy at the end, everything on the last round's certificates.
	if err := cp.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	last := rounds[len(rounds)-1]
	for _, x := range last.restarts {
		p, err := cp.ReadyPod(ctx, x.component)
		if err != nil {
			t.Error(err)
			continue
		}
		if !strings.HasPrefix(p.SandboxID, x.sandbox) {
			t.Errorf("%s runs in sandbox %.13s, pkirenewd saw %s healthy last", x.component, p.SandboxID, x.sandbox)
		}
	}
	for _, x := range []struct{ addr, file string }{
		{"127.0.0.1:6443", filepath.Join(PKIDir, "apiserver.crt")},
		{"127.0.0.1:2379", filepath.Join(PKIDir, "etcd/server.crt")},
	} {
		onDisk, err := cri.SerialOnDisk(x.file)
		if err != nil {
			t.Fatal(err)
		}
		served, err := cri.HTTPProber{}.ServedSerial(ctx, x.addr)
		if err != nil {
			t.Error(err)
		} else if served != onDisk {
			t.Errorf("%s serves serial %s, %s has %s", x.addr, served, x.file, onDisk)
		}
	}
	now := leafSerials(t)
	for k, v := range now {
		if v == oldSerials[k] {
			t.Errorf("%s was never renewed", k)
		}
	}
	createConfigMap(t, cp, "e2e-after-rounds")
	checkKubeletRestarted(t, cp, evs, oldSerials["kubelet.conf"])
}
