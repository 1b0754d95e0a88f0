package reconcile

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/pkirenewd/pkirenewd/cri"
)

// reloadGrace is added to a reload's bound: the component's own timer and
// the moment pkirenewd looks are not in step.
const reloadGrace = 15 * time.Second

// UsesUnder is Uses under a restart policy. Under cri.PolicyNeeded a
// component is stale only for the files it cannot reload, and the
// certificates it reloads and serves are returned to be compared with
// what it serves.
func UsesUnder(ms cri.Manifests, files []string, kubeletConf, policy string) (map[string][]string, []cri.ReloadCheck) {
	if policy != cri.PolicyNeeded {
		return Uses(ms, files, kubeletConf), nil
	}
	out := map[string][]string{}
	var served []cri.ReloadCheck
	for _, m := range ms.Usable {
		for _, f := range files {
			p := cri.HowPickedUp(m, f)
			switch {
			case p.Reads && !p.Reload:
				out[m.Component] = append(out[m.Component], f)
			case p.Reload && p.Addr != "":
				served = append(served, cri.ReloadCheck{Component: m.Component, File: f, Addr: p.Addr, Within: p.Within})
			}
		}
	}
	if kubeletConf != "" {
		out[Kubelet] = []string{kubeletConf}
	}
	return out, served
}

// notReloaded compares what running components serve with their files: a
// component that still serves an older certificate than its file, longer
// after the change than it may take to re-read it, is stale. A component
// that does not run or answer is not judged here (the kubelet starts it on
// the files as they are).
func (o Observer) notReloaded(ctx context.Context, checks []cri.ReloadCheck, now time.Time) ([]StaleComponent, error) {
	var files []string
	for _, c := range checks {
		files = append(files, c.File)
	}
	changed := o.changedTimes(files)
	prober := o.Prober
	if prober == nil {
		prober = cri.HTTPProber{}
	}
	var out []StaleComponent
	unseen := map[string]error{}
	for _, c := range checks {
		ch, ok := changed[c.File]
		if !ok {
			continue
		}
		r, running, err := o.running(ctx, c.Component, nil)
		if err != nil {
			unseen[c.Component] = err
			continue
		}
		if !running {
			continue
		}
		want, err := cri.SerialOnDisk(c.File)
		if err != nil {
			continue // the inventory reports a broken file
		}
		// A second is plenty on the node itself; an apiserver that hangs
		// (day 366) must not delay the renewal that heals it.
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		got, err := prober.ServedSerial(sctx, c.Addr)
		cancel()
		if err != nil || got == want {
			continue
		}
		if at := ch.Add(c.Within + reloadGrace); now.Before(at) {
			// It may still be reloading: judged once its time is up.
			if o.lookAgain != nil && (o.lookAgain.IsZero() || at.Before(*o.lookAgain)) {
				*o.lookAgain = at
			}
			continue
		}
		out = append(out, StaleComponent{Component: c.Component, StartedAt: r.StartedAt, File: c.File, Changed: ch,
			Reason: fmt.Sprintf("serves serial %s on %s, %s holds %s (changed %s ago): it did not reload it", got, c.Addr, c.File, want, now.Sub(ch).Round(time.Second))})
	}
	return out, blindErr(unseen)
}

// MemoryCert is a certificate a component makes for itself at start and
// keeps in memory: only a restart renews it.
type MemoryCert struct {
	Name string
	Life time.Duration
}

// year is the life client-go's certutil gives a self-signed certificate.
const year = 365 * 24 * time.Hour

// MemoryCerts lists the in-memory certificates of a kubeadm component.
// kube-apiserver's loopback certificate: 1 year up to v1.32, 3 years and a
// day from v1.33 (k8s.io/apiserver pkg/server/options/serving_with_loopback.go
// maxAge); an unknown version is taken as the shorter. kube-controller-
// manager's and kube-scheduler's self-signed serving certificate when they
// are given no --tls-cert-file (kubeadm gives none): 1 year, from an hour
// before start (MaybeDefaultWithSelfSignedCerts → certutil).
func MemoryCerts(m *cri.Manifest) []MemoryCert {
	var out []MemoryCert
	switch m.Component {
	case "kube-apiserver":
		life := year
		if minor, ok := imageMinor(m.Image); ok && minor >= 33 {
			life = (3*365 + 1) * 24 * time.Hour
		}
		out = append(out, MemoryCert{Name: "loopback certificate", Life: life})
	case "kube-controller-manager", "kube-scheduler":
		if m.Flag("tls-cert-file") == "" && m.Flag("cert-dir") == "" {
			out = append(out, MemoryCert{Name: "self-signed serving certificate", Life: year - time.Hour})
		}
	}
	return out
}

// imageMinor reads the minor version from an image tag such as
// registry.k8s.io/kube-apiserver:v1.37.2 (a digest after @ is ignored).
func imageMinor(image string) (int, bool) {
	image, _, _ = strings.Cut(image, "@")
	i := strings.LastIndex(image, ":")
	if i < 0 || strings.Contains(image[i:], "/") {
		return 0, false
	}
	parts := strings.Split(strings.TrimPrefix(image[i+1:], "v"), ".")
	if len(parts) < 2 || parts[0] != "1" {
		return 0, false
	}
	minor, err := strconv.Atoi(parts[1])
	return minor, err == nil
}

// MemoryDue decides whether a component that started at started must be
// restarted for an in-memory certificate of life: when less than margin
// is left of it. It returns when the certificate ends.
func MemoryDue(started time.Time, life, margin time.Duration, now time.Time) (time.Time, bool) {
	ends := started.Add(life)
	return ends, ends.Sub(now) < margin
}

// inMemory observes the running components whose in-memory certificates
// are near their end. assume, when positive, replaces every life (a test
// setting).
func (o Observer) inMemory(ctx context.Context, ms cri.Manifests, margin, assume time.Duration, now time.Time) ([]StaleComponent, error) {
	var out []StaleComponent
	unseen := map[string]error{}
	for _, m := range ms.Usable {
		certs := MemoryCerts(m)
		if len(certs) == 0 {
			continue
		}
		r, running, err := o.running(ctx, m.Component, nil)
		if err != nil {
			unseen[m.Component] = err
			continue
		}
		if !running {
			continue
		}
		for _, c := range certs {
			if assume > 0 {
				c.Life = assume
			}
			ends, due := MemoryDue(r.StartedAt, c.Life, margin, now)
			if !due {
				continue
			}
			out = append(out, StaleComponent{Component: m.Component, StartedAt: r.StartedAt,
				Reason: fmt.Sprintf("running %s, %s ends in %s (%s): restart planned", days(now.Sub(r.StartedAt)), c.Name, days(ends.Sub(now)), ends.UTC().Format(time.RFC3339))})
			break
		}
	}
	return out, blindErr(unseen)
}

// days prints a duration in whole days, or finer when under two days.
func days(d time.Duration) string {
	if d < 48*time.Hour && d > -48*time.Hour {
		return d.Round(time.Second).String()
	}
	return fmt.Sprintf("%d d", int(d.Hours()/24))
}

// mergeStale keeps one entry per component, the first found (the order of
// the lists says which reason matters most).
func mergeStale(lists ...[]StaleComponent) []StaleComponent {
	seen := map[string]bool{}
	var out []StaleComponent
	for _, l := range lists {
		for _, s := range l {
			if !seen[s.Component] {
				seen[s.Component] = true
				out = append(out, s)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Component < out[j].Component })
	return out
}

// awaitReloads watches the components that take up their renewed
// certificates by themselves, and returns those that did not within their
// bound (or do not run: a restart gets them out of the kubelet's back-off),
// which are then restarted instead.
func (e *NodeEngine) awaitReloads(ctx context.Context, rst *cri.Restarter, checks []cri.ReloadCheck) []string {
	var late []string
	for _, c := range checks {
		if contains(late, c.Component) {
			continue
		}
		log := e.Log.WithFields(logrus.Fields{"COMPONENT": c.Component, "PATH": c.File, "ADDRESS": c.Addr})
		start := e.clock().Now()
		serial, err := e.awaitReload(ctx, rst, c)
		if err != nil {
			log.WithError(err).Warnf("%s did not take up the renewed %s by itself: restarting it instead", c.Component, c.File)
			late = append(late, c.Component)
			continue
		}
		log.WithField("SERIAL", serial).Infof("%s serves the renewed %s (serial %s) after %s: no restart needed", c.Component, c.File, serial, e.clock().Since(start).Round(time.Millisecond))
	}
	return late
}

// awaitReload waits until c's component serves the certificate in c.File,
// at most c.Within and a grace.
func (e *NodeEngine) awaitReload(ctx context.Context, rst *cri.Restarter, c cri.ReloadCheck) (string, error) {
	obs := Observer{Runtime: rst.Runtime, Node: rst.Node}
	if _, running, err := obs.running(ctx, c.Component, nil); err != nil || !running {
		if err == nil {
			err = errors.New("it is not running")
		}
		return "", err
	}
	want, err := cri.SerialOnDisk(c.File)
	if err != nil {
		return "", err
	}
	bound := c.Within + reloadGrace
	if e.ReloadBound > 0 {
		bound = e.ReloadBound
	}
	var got string
	var last error
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, bound, true, func(ctx context.Context) (bool, error) {
		if e.Heartbeat != nil {
			e.Heartbeat()
		}
		got, last = rst.Prober.ServedSerial(ctx, c.Addr)
		return last == nil && got == want, nil
	})
	if err != nil {
		if last != nil {
			return "", fmt.Errorf("within %s: %w", bound, last)
		}
		return "", fmt.Errorf("still serves serial %s after %s, the file holds %s", got, bound, want)
	}
	return got, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
