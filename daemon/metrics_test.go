package daemon_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/pkirenewd/pkirenewd/daemon"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/renew"
)

// The certificate series carry x509-certificate-exporter v4's label schema
// (v3's is a subset), so its dashboards and alerts work on pkirenewd's
// endpoint; a kubeconfig's embedded certificate says where it sits.
func TestCertificateLabelsMatchTheExporter(t *testing.T) {
	m := daemon.NewPromMetrics()
	cert := &x509.Certificate{
		SerialNumber: big.NewInt(42), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		Subject: pkix.Name{CommonName: "kubernetes-admin", Organization: []string{"kubeadm:cluster-admins"}},
		Issuer:  pkix.Name{CommonName: "kubernetes"},
	}
	m.Observe([]renew.Status{{Item: &renew.Item{Name: "admin.conf", Kind: renew.KindKubeconfig, CertPath: "/etc/kubernetes/admin.conf", Cert: cert, UserName: "kubernetes-admin"}}}, time.Time{})
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "x509_cert_not_after" {
			continue
		}
		got := map[string]string{}
		var names []string
		for _, l := range f.GetMetric()[0].GetLabel() {
			got[l.GetName()] = l.GetValue()
			names = append(names, l.GetName())
		}
		sort.Strings(names)
		want := "cert embedded_key embedded_kind filename filepath issuer_C issuer_CN issuer_L issuer_O issuer_OU issuer_ST serial_number subject_C subject_CN subject_L subject_O subject_OU subject_ST"
		if strings.Join(names, " ") != want {
			t.Errorf("labels %v\nwant    %s", names, want)
		}
		if got["embedded_kind"] != "user" || got["embedded_key"] != "kubernetes-admin" || got["subject_O"] != "kubeadm:cluster-admins" ||
			got["issuer_CN"] != "kubernetes" || got["serial_number"] != "42" || got["filename"] != "admin.conf" {
			t.Errorf("values %v", got)
		}
		return
	}
	t.Fatal("no x509_cert_not_after series")
}

// The kubelet's serving certificate is exported like the others, whoever
// renews it; one the kubelet rotates (serverTLSBootstrap) also has its
// rotation judged.
func TestKubeletServingCertExported(t *testing.T) {
	m := daemon.NewPromMetrics()
	now := time.Now()
	cert := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: now.Add(-364 * 24 * time.Hour), NotAfter: now.Add(24 * time.Hour),
		Subject: pkix.Name{CommonName: "system:node:node-1"}, Issuer: pkix.Name{CommonName: "kubernetes"}}
	self := &x509.Certificate{SerialNumber: big.NewInt(8), NotBefore: now, NotAfter: now.Add(365 * 24 * time.Hour), Subject: pkix.Name{CommonName: "node-1@1"}}
	m.Observe([]renew.Status{
		{Item: &renew.Item{Name: renew.KubeletServingName, Kind: renew.KindCert, CertPath: "/var/lib/kubelet/pki/kubelet-server-current.pem", Cert: cert, RotatedBy: "kubelet"}, State: pki.StateDue},
	}, time.Time{})
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "cert" && l.GetValue() == renew.KubeletServingName {
					seen[f.GetName()] = true
					if f.GetName() == "pkirenewd_rotation_stuck" && s.GetGauge().GetValue() != 1 {
						t.Errorf("rotation stuck %v, want 1", s.GetGauge().GetValue())
					}
				}
			}
		}
	}
	if !seen["x509_cert_not_after"] || !seen["pkirenewd_rotation_stuck"] {
		t.Errorf("series for kubelet-serving: %v", seen)
	}
	m.Observe([]renew.Status{{Item: &renew.Item{Name: renew.KubeletServingName, Kind: renew.KindCert, CertPath: "/var/lib/kubelet/pki/kubelet.crt", Cert: self}}}, time.Time{})
	families, err = m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "x509_cert_not_after" && len(f.GetMetric()) != 1 {
			t.Errorf("self-signed: %d x509_cert_not_after series, want 1", len(f.GetMetric()))
		}
	}
}

// allSeries gathers one family as label sets (cert label included) and values.
func allSeries(t *testing.T, m *daemon.PromMetrics, family string) map[string]float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != family {
			continue
		}
		for _, s := range f.GetMetric() {
			var kv []string
			for _, l := range s.GetLabel() {
				if l.GetValue() != "" {
					kv = append(kv, l.GetName()+"="+l.GetValue())
				}
			}
			out[strings.Join(kv, ",")] = s.GetGauge().GetValue()
		}
	}
	return out
}

// A kubeconfig's cluster CA is a series of its own at the kubeconfig file,
// as the exporter reports it, even when the user's certificate is the
// kubelet's rotated file; the user series is named by the user; a
// certificate is expired only after its NotAfter, as the exporter and
// Go's verification judge it.
func TestKubeconfigClusterCASeries(t *testing.T) {
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	m := daemon.NewPromMetrics()
	m.Clock = clocktesting.NewFakePassiveClock(now)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: now.AddDate(-10, 0, 0), NotAfter: now,
		Subject: pkix.Name{CommonName: "kubernetes"}, Issuer: pkix.Name{CommonName: "kubernetes"}}
	pem := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: now.AddDate(0, -1, 0), NotAfter: now.Add(-time.Second),
		Subject: pkix.Name{CommonName: "system:node:node1", Organization: []string{"system:nodes", "second"}}, Issuer: pkix.Name{CommonName: "kubernetes"}}
	m.Observe([]renew.Status{{Item: &renew.Item{Name: "kubelet.conf", Kind: renew.KindKubeconfig, RotatedBy: "kubelet",
		CertPath: "/var/lib/kubelet/pki/kubelet-client-current.pem", KubeconfigPath: "/etc/kubernetes/kubelet.conf", Cert: pem,
		UserName: "system:node:node1", ClusterName: "kubernetes", ClusterCA: []*x509.Certificate{ca}}}}, time.Time{})
	want := map[string]float64{
		"cert=kubelet.conf/cluster,embedded_key=kubernetes,embedded_kind=cluster,filename=kubelet.conf,filepath=/etc/kubernetes/kubelet.conf,issuer_CN=kubernetes,serial_number=1,subject_CN=kubernetes":          0,
		"cert=kubelet.conf,filename=kubelet-client-current.pem,filepath=/var/lib/kubelet/pki/kubelet-client-current.pem,issuer_CN=kubernetes,serial_number=2,subject_CN=system:node:node1,subject_O=system:nodes": 1,
	}
	if got := allSeries(t, m, "x509_cert_expired"); !reflect.DeepEqual(got, want) {
		t.Errorf("x509_cert_expired\n got %v\nwant %v", got, want)
	}
	if got := allSeries(t, m, "x509_cert_not_after"); len(got) != 2 {
		t.Errorf("x509_cert_not_after: %v", got)
	}
}

// CAs exports each CA's renewal time, mode and old holders; the deadline
// is 0 when no holder is old, and a CA no longer listed disappears.
func TestCAStateSeries(t *testing.T) {
	m := daemon.NewPromMetrics()
	end := time.Date(2036, 5, 1, 0, 0, 0, 0, time.UTC)
	m.CAs([]daemon.CAState{
		{Name: "ca", NotAfter: end, RenewAt: end.AddDate(-1, 0, 0), OldHolders: 2, OldHoldersDeadline: end.AddDate(-10, 0, 0)},
		{Name: "etcd-ca", NotAfter: end, RenewAt: end.AddDate(-1, 0, 0), Manual: true, OldHoldersDeadline: end},
	})
	for family, want := range map[string]map[string]float64{
		"pkirenewd_ca_renew_at_timestamp_seconds":             {"ca=ca": float64(end.AddDate(-1, 0, 0).Unix()), "ca=etcd-ca": float64(end.AddDate(-1, 0, 0).Unix())},
		"pkirenewd_ca_renewal_manual":                         {"ca=ca": 0, "ca=etcd-ca": 1},
		"pkirenewd_ca_old_holders":                            {"ca=ca": 2, "ca=etcd-ca": 0},
		"pkirenewd_ca_old_holders_deadline_timestamp_seconds": {"ca=ca": float64(end.AddDate(-10, 0, 0).Unix()), "ca=etcd-ca": 0},
	} {
		if got := allSeries(t, m, family); !reflect.DeepEqual(got, want) {
			t.Errorf("%s\n got %v\nwant %v", family, got, want)
		}
	}
	m.CAs([]daemon.CAState{{Name: "ca", RenewAt: end}})
	if got := allSeries(t, m, "pkirenewd_ca_old_holders"); len(got) != 1 {
		t.Errorf("after etcd-ca left: %v", got)
	}
}
