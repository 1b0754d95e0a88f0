package daemon_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"sort"
	"strings"
	"testing"
	"time"

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
	m.Observe([]renew.Status{{Item: &renew.Item{Name: "admin.conf", Kind: renew.KindKubeconfig, CertPath: "/etc/kubernetes/admin.conf", Cert: cert}}}, time.Time{})
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
		if got["embedded_kind"] != "user" || got["embedded_key"] != "client-certificate-data" || got["subject_O"] != "kubeadm:cluster-admins" ||
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
