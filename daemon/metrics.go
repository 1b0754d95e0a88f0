package daemon

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/utils/clock"

	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/writeset"
)

// PromMetrics exports certificates with x509-certificate-exporter's names
// and labels, plus pkirenewd's own counters. It shows no key material:
// only what any TLS client of the component can see.
type PromMetrics struct {
	Registry     *prometheus.Registry
	notAfter     *prometheus.GaugeVec
	notBefore    *prometheus.GaugeVec
	expired      *prometheus.GaugeVec
	renewals     *prometheus.CounterVec
	restarts     *prometheus.CounterVec
	lastSuccess  prometheus.Gauge
	nextRenewal  prometheus.Gauge
	brokenCerts  prometheus.Gauge
	owed         *prometheus.GaugeVec
	transaction  prometheus.Gauge
	stuck        *prometheus.GaugeVec
	certLabelSet []string
	unwritable   *prometheus.GaugeVec
	unseen, held *prometheus.GaugeVec
	// The CAs' renewal and their holders (see CAs).
	caRenewAt, caManual, caOldHolders, caOldDeadline *prometheus.GaugeVec
	// Clock reads the time Observe judges expiry at (default: the real
	// clock; the daemon sets its own).
	Clock clock.PassiveClock
}

func (m *PromMetrics) clock() clock.PassiveClock {
	if m.Clock == nil {
		return clock.RealClock{}
	}
	return m.Clock
}

var _ Metrics = (*PromMetrics)(nil)

// NewPromMetrics registers the metrics in a registry of their own.
func NewPromMetrics() *PromMetrics {
	// x509-certificate-exporter's label schema (v4: the full subject and
	// issuer DNs, embedded_kind and embedded_key for kubeconfigs; v3's
	// labels are a subset), plus cert, kubeadm's name of the item.
	labels := []string{"filepath", "filename", "embedded_kind", "embedded_key",
		"subject_C", "subject_ST", "subject_L", "subject_O", "subject_OU", "subject_CN",
		"issuer_C", "issuer_ST", "issuer_L", "issuer_O", "issuer_OU", "issuer_CN",
		"serial_number", "cert"}
	m := &PromMetrics{
		Registry:     prometheus.NewRegistry(),
		certLabelSet: labels,
		notAfter:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "x509_cert_not_after", Help: "Certificate expiry as a Unix timestamp."}, labels),
		notBefore:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "x509_cert_not_before", Help: "Certificate start of validity as a Unix timestamp."}, labels),
		expired:      prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "x509_cert_expired", Help: "1 when the certificate has expired."}, labels),
		renewals:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pkirenewd_renewals_total", Help: "Renewal transactions by result."}, []string{"result"}),
		restarts:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pkirenewd_restarts_total", Help: "Component restarts by component and result."}, []string{"component", "result"}),
		lastSuccess:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "pkirenewd_last_success_timestamp_seconds", Help: "When the last renewal succeeded."}),
		nextRenewal:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "pkirenewd_next_renewal_timestamp_seconds", Help: "When the next renewal is due (0: none scheduled)."}),
		brokenCerts:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "pkirenewd_broken_certificates", Help: "Items that are missing or cannot be read, parsed or verified."}),
		owed:         prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pkirenewd_stale_components", Help: "1 for each component (or the kubelet) that runs on credentials older than the files on disk, or whose restart a renewal still owes."}, []string{"component"}),
		transaction:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "pkirenewd_transaction_pending", Help: "1 while an interrupted renewal is recorded in the state dir."}),
		stuck:        prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pkirenewd_rotation_stuck", Help: "1 when a certificate its owner rotates (the kubelet's client certificate) is past 90% of its life."}, []string{"cert", "filepath"}),
	}
	m.Registry.MustRegister(m.notAfter, m.notBefore, m.expired, m.renewals, m.restarts, m.lastSuccess, m.nextRenewal, m.brokenCerts, m.owed, m.transaction, m.stuck,
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	m.unwritable = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pkirenewd_unwritable_paths", Help: "1 for each directory pkirenewd may write that it cannot write where it runs (reason: the config key that makes it written)."}, []string{"path", "reason"})
	m.Registry.MustRegister(m.unwritable)
	m.unseen = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pkirenewd_unseen_components", Help: "1 for each component whose credentials could not be observed (the runtime cannot be asked, or answers ambiguously): whether it is stale is unknown."}, []string{"component"})
	m.held = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pkirenewd_held", Help: "1 while a due renewal or owed restart is held because someone else changes the node (reason: kubeadm-upgrade, pod-replacing); a hold is not a failure."}, []string{"reason"})
	m.Registry.MustRegister(m.unseen, m.held)
	m.registerCAs()
	for _, r := range []string{"success", "failure"} {
		m.renewals.WithLabelValues(r)
	}
	return m
}

// Unseen sets the components whose credentials could not be observed.
func (m *PromMetrics) Unseen(components []string) {
	m.unseen.Reset()
	for _, c := range components {
		m.unseen.WithLabelValues(c).Set(1)
	}
}

// Held sets the reason a renewal is held ("": none).
func (m *PromMetrics) Held(reason string) {
	m.held.Reset()
	if reason != "" {
		m.held.WithLabelValues(reason).Set(1)
	}
}

// Owed sets the components that run on old credentials or are owed a
// restart, and whether a transaction is pending.
func (m *PromMetrics) Owed(components []string, transaction bool) {
	m.owed.Reset()
	for _, c := range components {
		m.owed.WithLabelValues(c).Set(1)
	}
	v := 0.0
	if transaction {
		v = 1
	}
	m.transaction.Set(v)
}

// Unwritable sets the directories of the write set that cannot be written
// where the daemon runs; the others are not exported.
func (m *PromMetrics) Unwritable(dirs []writeset.Dir) {
	m.unwritable.Reset()
	for _, d := range dirs {
		m.unwritable.WithLabelValues(d.Path, d.Key).Set(1)
	}
}

// The x509_cert_* series follow x509-certificate-exporter v4.2.0 as it
// reads a kubeadm node (github.com/enix/x509-certificate-exporter,
// pkg/source/kubeconfig/kubeconfig.go, pkg/registry/labels.go and
// collector.go; checked against the real exporter on a kubeadm PKI):
//   - a file: filepath is its path, filename its base name, embedded_kind
//     and embedded_key empty;
//   - a kubeconfig (--watch-kubeconf): one series per clusters entry with
//     certificate-authority-data (embedded_kind "cluster", embedded_key the
//     cluster's name: "kubernetes" with kubeadm) and one per users entry
//     with a client certificate (embedded_kind "user", embedded_key the
//     user's name: "kubernetes-admin", "system:node:node1"); filepath and
//     filename are the kubeconfig's, also for a certificate it points at;
//   - subject_* and issuer_* (C, ST, L, O, OU, CN) hold the first value of
//     each field ("" when absent); serial_number is the serial in decimal;
//   - x509_cert_expired is 1 once now is after NotAfter (as Go's x509
//     verification judges it).
// pkirenewd adds cert, its own name of the item ("<kubeconfig>/cluster"
// for a kubeconfig's cluster CA). The one difference: the client
// certificate the kubelet rotates keeps the file it is in as its filepath
// (as the exporter watching that file reports it), not kubelet.conf's.

// dnLabels sets the six DN labels of x509-certificate-exporter: the first
// value of each field.
func dnLabels(l prometheus.Labels, prefix string, n pkix.Name) {
	for k, v := range map[string][]string{
		"C": n.Country, "ST": n.Province, "L": n.Locality, "O": n.Organization, "OU": n.OrganizationalUnit, "CN": {n.CommonName},
	} {
		l[prefix+k] = ""
		if len(v) > 0 {
			l[prefix+k] = v[0]
		}
	}
}

// certLabels are the labels of one certificate found at path (kind and
// key: where in a kubeconfig), named name by pkirenewd.
func certLabels(path, kind, key, name string, c *x509.Certificate) prometheus.Labels {
	l := prometheus.Labels{
		"filepath": path, "filename": filepath.Base(path), "embedded_kind": kind, "embedded_key": key,
		"serial_number": c.SerialNumber.String(), "cert": name,
	}
	dnLabels(l, "subject_", c.Subject)
	dnLabels(l, "issuer_", c.Issuer)
	return l
}

// setCert sets the three x509_cert_* series of one certificate.
func (m *PromMetrics) setCert(l prometheus.Labels, c *x509.Certificate, now time.Time) {
	m.notAfter.With(l).Set(float64(c.NotAfter.Unix()))
	m.notBefore.With(l).Set(float64(c.NotBefore.Unix()))
	exp := 0.0
	if now.After(c.NotAfter) {
		exp = 1
	}
	m.expired.With(l).Set(exp)
}

// setClusterCA exports a kubeconfig's cluster CA, a holder of the CA
// certificate, at the kubeconfig file (even when its user's certificate
// is the kubelet's rotated file).
func (m *PromMetrics) setClusterCA(it *renew.Item, now time.Time) {
	if it.Kind != renew.KindKubeconfig {
		return
	}
	path := it.KubeconfigPath
	if path == "" {
		path = it.CertPath
	}
	for _, ca := range it.ClusterCA {
		m.setCert(certLabels(path, "cluster", it.ClusterName, it.Name+"/cluster", ca), ca, now)
	}
}

// CAState is what the daemon knows of one CA's renewal, for CAs.
type CAState struct {
	Name string // ca, etcd-ca, front-proxy-ca
	// NotAfter is the CA certificate's end; RenewAt when it is due
	// (NotAfter - caRenewBefore), renewed by the daemon then unless Manual
	// (caRenewal: manual: an operator runs pkirenewd renew).
	NotAfter, RenewAt time.Time
	Manual            bool
	// OldHolders counts the holders that still carry the previous
	// certificate, which ends at OldHoldersDeadline (zero: none).
	OldHolders         int
	OldHoldersDeadline time.Time
}

func (m *PromMetrics) registerCAs() {
	ca := []string{"ca"}
	m.caRenewAt = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pkirenewd_ca_renew_at_timestamp_seconds", Help: "When the CA certificate is due for renewal (its end minus caRenewBefore); past it, it is due."}, ca)
	m.caManual = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pkirenewd_ca_renewal_manual", Help: "1 when the CA is renewed only by an operator (caRenewal: manual), 0 when the daemon renews it when due."}, ca)
	m.caOldHolders = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pkirenewd_ca_old_holders", Help: "Holders (kubeconfigs, copies, ConfigMaps, worker nodes) that still carry the CA's previous certificate."}, ca)
	m.caOldDeadline = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pkirenewd_ca_old_holders_deadline_timestamp_seconds", Help: "When the previous CA certificate the old holders carry ends (0: no old holders)."}, ca)
	m.Registry.MustRegister(m.caRenewAt, m.caManual, m.caOldHolders, m.caOldDeadline)
}

// CAs sets the CAs' renewal and old holders; a CA not listed has no
// series.
func (m *PromMetrics) CAs(cas []CAState) {
	for _, g := range []*prometheus.GaugeVec{m.caRenewAt, m.caManual, m.caOldHolders, m.caOldDeadline} {
		g.Reset()
	}
	for _, c := range cas {
		manual := 0.0
		if c.Manual {
			manual = 1
		}
		deadline := 0.0
		if c.OldHolders > 0 {
			deadline = unixOrZero(c.OldHoldersDeadline)
		}
		m.caRenewAt.WithLabelValues(c.Name).Set(unixOrZero(c.RenewAt))
		m.caManual.WithLabelValues(c.Name).Set(manual)
		m.caOldHolders.WithLabelValues(c.Name).Set(float64(c.OldHolders))
		m.caOldDeadline.WithLabelValues(c.Name).Set(deadline)
	}
}

// Observe implements Metrics.
func (m *PromMetrics) Observe(statuses []renew.Status, next time.Time) {
	m.notAfter.Reset()
	m.notBefore.Reset()
	m.expired.Reset()
	m.stuck.Reset()
	broken := 0
	now := m.clock().Now()
	for _, s := range statuses {
		if s.Err != nil || s.Missing {
			broken++
		}
		m.setClusterCA(s.Item, now)
		if s.Cert == nil {
			continue
		}
		kind, key := "", ""
		if s.Kind == renew.KindKubeconfig && s.RotatedBy == "" {
			kind, key = "user", s.UserName
		}
		m.setCert(certLabels(s.CertPath, kind, key, s.Name, s.Cert), s.Cert, now)
		if s.RotatedBy != "" {
			v := 0.0
			if s.RotationStuck() {
				v = 1
			}
			m.stuck.WithLabelValues(s.Name, s.CertPath).Set(v)
		}
	}
	m.brokenCerts.Set(float64(broken))
	m.CAs(caStates(statuses))
	m.nextRenewal.Set(unixOrZero(next))
}

// unixOrZero is t as a Unix timestamp, 0 for the zero time ("none").
func unixOrZero(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.Unix())
}

// Renewal implements Metrics.
func (m *PromMetrics) Renewal(err error, at time.Time) {
	if err != nil {
		m.renewals.WithLabelValues("failure").Inc()
		return
	}
	m.renewals.WithLabelValues("success").Inc()
	m.lastSuccess.Set(float64(at.Unix()))
}

// Restart implements RestartRecorder.
func (m *PromMetrics) Restart(component string, err error) {
	r := "success"
	if err != nil {
		r = "failure"
	}
	m.restarts.WithLabelValues(component, r).Inc()
}

// Serve exposes /metrics on addr until ctx is done.
func (m *PromMetrics) Serve(ctx context.Context, addr string) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err
		}
	}()
	return ln.Addr(), nil
}

// caStates are the CAs of statuses as the CA gauges show them.
func caStates(statuses []renew.Status) []CAState {
	var out []CAState
	for _, s := range statuses {
		if s.Kind != renew.KindCA || s.Cert == nil {
			continue
		}
		c := CAState{Name: s.Name, NotAfter: s.Cert.NotAfter, RenewAt: s.RenewAt, Manual: s.WarnOnly, OldHolders: len(s.OldHolders)}
		for _, h := range s.OldHolders {
			if c.OldHoldersDeadline.IsZero() || h.Cert.NotAfter.Before(c.OldHoldersDeadline) {
				c.OldHoldersDeadline = h.Cert.NotAfter
			}
		}
		out = append(out, c)
	}
	return out
}
