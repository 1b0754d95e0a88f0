package cri

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"

	"github.com/pkirenewd/pkirenewd/internal/fsread"
)

// Prober checks a component's health and the certificate it serves.
type Prober interface {
	// Probe performs one check; the string is the answer, for logs.
	Probe(ctx context.Context, p Probe) (string, error)
	// ServedSerial is the serial (hex) of the certificate served at addr.
	ServedSerial(ctx context.Context, addr string) (string, error)
}

// HTTPProber probes like the kubelet: HTTP(S) GET, certificate not
// verified, 2xx/3xx is healthy.
type HTTPProber struct {
	Timeout time.Duration
}

var _ Prober = HTTPProber{}

func (h HTTPProber) timeout() time.Duration {
	if h.Timeout > 0 {
		return h.Timeout
	}
	return 3 * time.Second
}

// Probe implements Prober.
func (h HTTPProber) Probe(ctx context.Context, p Probe) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout())
	defer cancel()
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true} //nolint:gosec // kubelet probes do not verify either
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL(), nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	answer := fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return answer, fmt.Errorf("%s answered %s", p.URL(), answer)
	}
	return answer, nil
}

// ServedSerial implements Prober. The serial is read in the middle of the
// handshake, so servers that demand a client certificate (etcd) show it
// too without one.
func (h HTTPProber) ServedSerial(ctx context.Context, addr string) (string, error) {
	var serial string
	cfg := &tls.Config{
		InsecureSkipVerify: true, //nolint:gosec // only the serial is read
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) > 0 {
				if c, err := x509.ParseCertificate(raw[0]); err == nil {
					serial = c.SerialNumber.Text(16)
				}
			}
			return nil
		},
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: h.timeout()}, Config: cfg}
	ctx, cancel := context.WithTimeout(ctx, h.timeout())
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if conn != nil {
		conn.Close()
	}
	if serial != "" {
		return serial, nil
	}
	if err == nil {
		err = errors.New("no certificate served")
	}
	return "", fmt.Errorf("TLS to %s: %w", addr, err)
}

// SerialOnDisk reads the serial (hex) of the first certificate in a file.
func SerialOnDisk(path string) (string, error) {
	data, err := fsread.Regular(path, true)
	if err != nil {
		return "", err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return "", fmt.Errorf("%s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return c.SerialNumber.Text(16), nil
}

// Restarter performs health-checked restarts of static pods.
type Restarter struct {
	Runtime Runtime
	Prober  Prober
	Clock   clock.Clock
	Log     logrus.FieldLogger
	// Timeout bounds one component's restart, from StopPodSandbox to
	// healthy. The kubelet's CrashLoopBackOff can delay a recreated
	// container by up to 5 minutes, so the default is 6 minutes.
	Timeout time.Duration
	// PollInterval between checks (default 250ms).
	PollInterval time.Duration
	// RemoveRetry is how long a failing RemovePodSandbox is retried: the
	// kubelet sometimes races to start a container in the stopped sandbox
	// ("container is in starting state"). Default 10s.
	RemoveRetry time.Duration
	// AppearWait is how long a component with no ready sandbox is given
	// to get one from the kubelet before that is an error. Default 30s.
	AppearWait time.Duration
	// SerialOnDisk reads the serial of a certificate file (default
	// SerialOnDisk); a test can fake it.
	SerialOnDisk func(path string) (string, error)
	// Node is the kubelet's node name. The kubelet names a static pod
	// "<name>-<node>"; where several nodes' pods share one runtime (a
	// test rig, or kubelets sharing a containerd) that tells ours apart.
	// Empty, or no pod of that name: the component label alone.
	Node string
	// Gate, when set, is asked before each component of a roll is
	// restarted (the cluster lease, the etcd quorum guard); an error
	// stops the roll there without touching that component.
	Gate func(ctx context.Context, component string) error
	// Restarted, when set, is told of each component of a roll that came
	// back healthy (the record of owed restarts shrinks).
	Restarted func(component string)
	// Heartbeat, when set, is called while waiting, so a supervisor can
	// tell a long wait from a hang (the systemd watchdog).
	Heartbeat func()
	// RunningFor is how long the new container of a pod without an HTTP
	// probe (kube-vip, keepalived) must run, as the same container with
	// the same restart count, to count as healthy: what the kubelet itself
	// knows of such a pod. Default 10s.
	RunningFor time.Duration
	// Step, when set, is told of each step of a restart ("stopped:etcd",
	// "removed:etcd", "healthy:etcd"): the failpoints build kills the
	// process there to prove a roll cut short anywhere is finished.
	Step func(step string)
}

func (r *Restarter) step(s string) {
	if r.Step != nil {
		r.Step(s)
	}
}

// Result is the outcome of one component's restart.
type Result struct {
	Component  string
	OldSandbox string
	NewSandbox string
	// Took is from StopPodSandbox to healthy.
	Took time.Duration
	// LastProbe is the last health answer (or error) seen.
	LastProbe string
	// Serial is the serial the component serves, when it can be seen.
	Serial string
	Err    error
}

func (r *Restarter) defaults() {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.Timeout == 0 {
		r.Timeout = 6 * time.Minute
	}
	if r.PollInterval == 0 {
		r.PollInterval = 250 * time.Millisecond
	}
	if r.AppearWait == 0 {
		r.AppearWait = 30 * time.Second
	}
	if r.RemoveRetry == 0 {
		r.RemoveRetry = 10 * time.Second
	}
	if r.SerialOnDisk == nil {
		r.SerialOnDisk = SerialOnDisk
	}
	if r.RunningFor == 0 {
		r.RunningFor = 10 * time.Second
	}
	if r.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		r.Log = l
	}
}

// ErrNoReadySandbox: the component has no ready pod sandbox.
var ErrNoReadySandbox = errors.New("no ready pod sandbox")

// staticPodLabels select a control-plane static pod as the kubelet labels it.
func staticPodLabels(component string) map[string]string {
	return map[string]string{"io.kubernetes.pod.namespace": "kube-system", "component": component}
}

// FindStaticPod returns the one ready static pod sandbox of component on
// this node. None, several, or one not made from a manifest file is an
// error: a restart must never guess.
func FindStaticPod(ctx context.Context, rt Runtime, component string) (Sandbox, error) {
	return FindStaticPodOn(ctx, rt, component, "")
}

// FindStaticPodOn is FindStaticPod preferring the pod the kubelet of node
// made ("<component>-<node>"); with no such pod, the label alone decides.
func FindStaticPodOn(ctx context.Context, rt Runtime, component, node string) (Sandbox, error) {
	all, err := sandboxesOf(ctx, rt, component, node, false)
	if err != nil {
		return Sandbox{}, fmt.Errorf("%s: %w", component, err)
	}
	var ready []Sandbox
	for _, s := range all {
		if s.Ready {
			ready = append(ready, s)
		}
	}
	switch len(ready) {
	case 0:
		return Sandbox{}, fmt.Errorf("%s: %w in kube-system with label component=%s", component, ErrNoReadySandbox, component)
	case 1:
	default:
		ids := make([]string, len(ready))
		for i, s := range ready {
			ids[i] = short(s.ID)
		}
		return Sandbox{}, fmt.Errorf("%s: %d ready pod sandboxes (%s): refusing to guess which to restart", component, len(ready), strings.Join(ids, ", "))
	}
	if src := ready[0].Annotations["kubernetes.io/config.source"]; src != "file" {
		return Sandbox{}, fmt.Errorf("%s: sandbox %s is not a static pod (kubernetes.io/config.source=%q)", component, short(ready[0].ID), src)
	}
	return ready[0], nil
}

// sandboxesOf lists the component's sandboxes, narrowed to the node's pod
// name when the node has any.
// strict: no fallback (after our pod was seen under its name, another
// node's pod must never pass for its replacement).
func sandboxesOf(ctx context.Context, rt Runtime, component, node string, strict bool) ([]Sandbox, error) {
	all, err := rt.PodSandboxes(ctx, staticPodLabels(component))
	if err != nil || node == "" {
		return all, err
	}
	var mine []Sandbox
	for _, s := range all {
		if named(s, component, node) {
			mine = append(mine, s)
		}
	}
	if len(mine) == 0 && !strict {
		return all, nil
	}
	return mine, nil
}

// stoppedSandbox finds the newest not-ready static sandbox of the
// component, when it has no ready one.
func (r *Restarter) stoppedSandbox(ctx context.Context, component string) (Sandbox, bool) {
	all, err := sandboxesOf(ctx, r.Runtime, component, r.Node, false)
	if err != nil {
		return Sandbox{}, false
	}
	var newest Sandbox
	for _, s := range all {
		if s.Ready {
			return Sandbox{}, false
		}
		if s.Annotations["kubernetes.io/config.source"] == "file" && (newest.ID == "" || s.CreatedAt.After(newest.CreatedAt)) {
			newest = s
		}
	}
	return newest, newest.ID != ""
}

func named(s Sandbox, component, node string) bool {
	return s.Labels["io.kubernetes.pod.name"] == component+"-"+node
}

func short(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}

// Restart stops and removes the component's static pod sandbox, waits for
// the kubelet to make a new one with a running container, then waits until
// the manifest's probe answers and, where visible, the served certificate
// is the one on disk.
func (r *Restarter) Restart(ctx context.Context, m *Manifest) Result {
	r.defaults()
	res := Result{Component: m.Component}
	log := r.Log.WithField("COMPONENT", m.Component)
	old, err := FindStaticPodOn(ctx, r.Runtime, m.Component, r.Node)
	// No ready sandbox: the kubelet may be between two (a restart cut
	// short by a crash, or its own): give it its reaction time.
	for appear := r.Clock.Now().Add(r.AppearWait); errors.Is(err, ErrNoReadySandbox) && r.Clock.Now().Before(appear); {
		if _, ok := r.stoppedSandbox(ctx, m.Component); ok {
			break
		}
		if perr := r.pause(ctx, appear); perr != nil {
			break
		}
		old, err = FindStaticPodOn(ctx, r.Runtime, m.Component, r.Node)
	}
	stopped := false
	if errors.Is(err, ErrNoReadySandbox) {
		// Its sandbox is stopped but still there: a restart was cut
		// short (pkirenewd killed after StopPodSandbox) or the kubelet
		// is recreating it. The kubelet's next sandbox reads the files
		// on disk, so waiting for it and checking it is the restart.
		if sb, ok := r.stoppedSandbox(ctx, m.Component); ok {
			old, err, stopped = sb, nil, true
			log.WithFields(logrus.Fields{"ACTION": "restart", "SANDBOX": short(old.ID)}).Warn("the static pod is already stopped (an interrupted restart?): waiting for the kubelet's new one")
		}
	}
	if err != nil {
		res.Err = err
		return res
	}
	res.OldSandbox = old.ID
	start := r.Clock.Now()
	deadline := start.Add(r.Timeout)
	if !stopped {
		log.WithFields(logrus.Fields{"ACTION": "restart", "SANDBOX": short(old.ID)}).Info("stopping static pod")
		if err := r.Runtime.StopPodSandbox(ctx, old.ID); err != nil {
			res.Err = fmt.Errorf("%s: StopPodSandbox %s: %w", m.Component, short(old.ID), err)
			return res
		}
		r.step("stopped:" + m.Component)
	}
	if err := r.remove(ctx, old.ID); err != nil {
		res.Err = fmt.Errorf("%s: RemovePodSandbox %s: %w", m.Component, short(old.ID), err)
		return res
	}
	r.step("removed:" + m.Component)

	// The kubelet notices the missing sandbox and makes a new one.
	for {
		if id, ok := r.newRunning(ctx, m.Component, old); ok {
			res.NewSandbox = id
			break
		}
		if err := r.pause(ctx, deadline); err != nil {
			res.Err = fmt.Errorf("%s: no new running pod %s after the restart: %w", m.Component, r.Timeout, err)
			return res
		}
	}
	log.WithFields(logrus.Fields{"SANDBOX": short(res.NewSandbox)}).Debug("new sandbox running")

	if err := r.healthy(ctx, m, &res, deadline); err != nil {
		res.Err = err
		return res
	}
	res.Took = r.Clock.Since(start)
	r.step("healthy:" + m.Component)
	log.WithFields(logrus.Fields{"ACTION": "restarted", "SANDBOX": short(res.NewSandbox), "TOOK": res.Took.Round(time.Millisecond).String(), "SERIAL": res.Serial}).Info("component healthy")
	return res
}

// healthy waits until the restarted component is healthy: its probe
// answers and it serves the certificate on disk where that is visible, or,
// with no HTTP probe, its new container stays up for RunningFor.
func (r *Restarter) healthy(ctx context.Context, m *Manifest, res *Result, deadline time.Time) error {
	if !m.HasProbe() {
		r.Log.WithFields(logrus.Fields{"COMPONENT": m.Component, "MANIFEST": m.Path}).
			Infof("no HTTP probe in %s: healthy = running for %s without a restart", m.Path, r.RunningFor)
		return r.steady(ctx, m, res, deadline)
	}
	for {
		if r.probeOnce(ctx, m, res) {
			return nil
		}
		if err := r.pause(ctx, deadline); err != nil {
			return fmt.Errorf("%s: not healthy %s after the restart (last probe of %s: %s): %w", m.Component, r.Timeout, m.Probe.URL(), res.LastProbe, err)
		}
	}
}

// probeOnce probes the component and checks the served serial; the
// answer (or what is wrong) goes to res.LastProbe.
func (r *Restarter) probeOnce(ctx context.Context, m *Manifest, res *Result) bool {
	answer, err := r.Prober.Probe(ctx, m.Probe)
	if err != nil {
		res.LastProbe = err.Error()
		return false
	}
	res.LastProbe = answer
	if m.ServingCert == "" {
		return true
	}
	want, werr := r.SerialOnDisk(m.ServingCert)
	got, gerr := r.Prober.ServedSerial(ctx, m.ServingAddr)
	switch {
	case werr != nil:
		res.LastProbe = werr.Error()
	case gerr != nil:
		res.LastProbe = gerr.Error()
	case got == want:
		res.Serial = got
		return true
	default:
		res.LastProbe = fmt.Sprintf("%s serves serial %s, %s has %s", m.ServingAddr, got, m.ServingCert, want)
	}
	return false
}

// steady waits until the new sandbox's running containers have stayed the
// same (IDs and restart counts) for RunningFor. A container that exits is
// replaced by the kubelet with a new ID and attempt, which starts the wait
// over: a pod in a crash loop never passes.
func (r *Restarter) steady(ctx context.Context, m *Manifest, res *Result, deadline time.Time) error {
	var seen string
	var since time.Time
	for {
		now := r.Clock.Now()
		cs, err := r.Runtime.Containers(ctx, res.NewSandbox)
		key := runningKey(cs)
		switch {
		case err != nil:
			res.LastProbe, seen = err.Error(), ""
		case key == "":
			res.LastProbe, seen = "no running container in sandbox "+short(res.NewSandbox), ""
		case key != seen:
			if seen != "" {
				res.LastProbe = fmt.Sprintf("container restarted (%s, was %s)", key, seen)
			}
			seen, since = key, now
		case now.Sub(since) >= r.RunningFor:
			res.LastProbe = fmt.Sprintf("running for %s without a restart (%s)", now.Sub(since).Round(time.Millisecond), key)
			return nil
		}
		if err := r.pause(ctx, deadline); err != nil {
			return fmt.Errorf("%s: not running for %s without a restart within %s after the restart (%s): %w", m.Component, r.RunningFor, r.Timeout, res.LastProbe, err)
		}
	}
}

// runningKey identifies a sandbox's running containers and their restart
// counts ("" when none runs).
func runningKey(cs []Container) string {
	var parts []string
	for _, c := range cs {
		if c.Running {
			parts = append(parts, fmt.Sprintf("%s %s attempt %d", c.Name, c.ID, c.Attempt))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

var errTimeout = errors.New("timed out")

// pause waits one poll interval, or fails once the deadline has passed or
// the context is done.
func (r *Restarter) pause(ctx context.Context, deadline time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !r.Clock.Now().Before(deadline) {
		return errTimeout
	}
	if r.Heartbeat != nil {
		r.Heartbeat()
	}
	r.Clock.Sleep(r.PollInterval)
	return ctx.Err()
}

func (r *Restarter) remove(ctx context.Context, id string) error {
	deadline := r.Clock.Now().Add(r.RemoveRetry)
	for {
		err := r.Runtime.RemovePodSandbox(ctx, id)
		if err == nil {
			return nil
		}
		r.Log.WithError(err).WithField("SANDBOX", short(id)).Debug("RemovePodSandbox failed; retrying")
		if perr := r.pause(ctx, deadline); perr != nil {
			return err
		}
	}
}

// newRunning finds a ready sandbox of component other than old with a
// running container.
func (r *Restarter) newRunning(ctx context.Context, component string, old Sandbox) (string, bool) {
	strict := r.Node != "" && named(old, component, r.Node)
	sbs, err := sandboxesOf(ctx, r.Runtime, component, r.Node, strict)
	if err != nil {
		r.Log.WithError(err).Debug("listing sandboxes")
		return "", false
	}
	for _, s := range sbs {
		if !s.Ready || s.ID == old.ID {
			continue
		}
		cs, err := r.Runtime.Containers(ctx, s.ID)
		if err != nil {
			continue
		}
		for _, c := range cs {
			if c.Running {
				return s.ID, true
			}
		}
	}
	return "", false
}

// ErrNoRollback is what a restore returns when it chose not to go back
// (the previous files are no better): the roll stops without a retry.
var ErrNoRollback = errors.New("not rolled back: the previous files are no better than the renewed ones")

// RollError is a rolling restart that stopped at a component.
type RollError struct {
	Component string
	LastProbe string
	Err       error
	// Retried is the result of restarting the failed component again
	// after the previous files were restored (nil without a restore).
	Retried *Result
	// Gated: the Gate refused the component; it was not touched.
	Gated bool
}

func (e *RollError) Error() string { return e.Err.Error() }
func (e *RollError) Unwrap() error { return e.Err }

// Roll restarts the components one at a time in order. The first one that
// does not come back healthy stops the roll: the later ones are not
// touched, restore (when given) puts the previous files back, and the
// failed component is restarted once more so it runs on them.
func (r *Restarter) Roll(ctx context.Context, ms []*Manifest, restore func() error) ([]Result, error) {
	r.defaults()
	var results []Result
	for _, m := range ms {
		// A stop request (SIGTERM) ends the roll between components;
		// the component in hand is always finished.
		if err := ctx.Err(); err != nil {
			return results, fmt.Errorf("rolling restart stopped before %s: %w", m.Component, err)
		}
		if r.Gate != nil {
			if err := r.Gate(ctx, m.Component); err != nil {
				return results, &RollError{Component: m.Component, Err: fmt.Errorf("%s not restarted: %w", m.Component, err), Gated: true}
			}
		}
		res := r.Restart(context.WithoutCancel(ctx), m)
		results = append(results, res)
		if res.Err == nil {
			if r.Restarted != nil {
				r.Restarted(m.Component)
			}
			continue
		}
		r.Log.WithFields(logrus.Fields{"COMPONENT": m.Component, "ACTION": "restart-failed", "LAST_PROBE": res.LastProbe}).
			WithError(res.Err).Error("component did not come back healthy: stopping the rolling restart")
		rerr := &RollError{Component: m.Component, LastProbe: res.LastProbe, Err: res.Err}
		if restore == nil || res.OldSandbox == "" {
			return results, rerr
		}
		if err := restore(); errors.Is(err, ErrNoRollback) {
			rerr.Err = fmt.Errorf("%w; %v", res.Err, err)
			return results, rerr
		} else if err != nil {
			rerr.Err = fmt.Errorf("%w; restoring the previous files also failed: %v", res.Err, err)
			return results, rerr
		}
		r.Log.WithFields(logrus.Fields{"COMPONENT": m.Component, "ACTION": "rollback"}).Warn("previous files restored; restarting the component on them")
		again := r.Restart(context.WithoutCancel(ctx), m)
		rerr.Retried = &again
		results = append(results, again)
		return results, rerr
	}
	return results, nil
}
