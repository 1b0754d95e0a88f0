package main

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/renew"
)

// check exits 0 only for what it saw and found fine: a component seen
// stale or not seen at all, whatever the reason, is at least 1.
func TestCheckCode(t *testing.T) {
	now := time.Now()
	ok := []renew.Status{{Item: &renew.Item{Name: "apiserver", Kind: renew.KindCert, Cert: &x509.Certificate{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(300 * 24 * time.Hour)}},
		RenewAt: now.Add(200 * 24 * time.Hour), State: pki.StateOK}}
	expired := []renew.Status{{Item: &renew.Item{Name: "apiserver", Kind: renew.KindCert, Cert: &x509.Certificate{NotBefore: now.Add(-400 * 24 * time.Hour), NotAfter: now.Add(-time.Hour)}},
		RenewAt: now.Add(-90 * 24 * time.Hour), State: pki.StateExpired}}
	for _, tc := range []struct {
		name     string
		statuses []renew.Status
		rep      report
		want     int
	}{
		{"all seen, all fine", ok, report{}, checkOK},
		{"one component stale", ok, report{StaleComponents: []staleComponent{{Component: "kube-scheduler"}}}, checkDue},
		{"one component unseen", ok, report{UnseenComponents: []unseenComponent{{Component: "kube-scheduler", Reason: "2 ready pod sandboxes"}}}, checkDue},
		{"every component unseen", ok, report{UnseenComponents: []unseenComponent{{Component: "etcd"}, {Component: "kube-apiserver"}, {Component: "kube-controller-manager"}, {Component: "kube-scheduler"}}}, checkDue},
		{"restarts owed", ok, report{PendingRestarts: []string{"kube-apiserver"}}, checkDue},
		{"held by an upgrade", ok, report{Holds: []holdReport{{Reason: "kubeadm-upgrade"}}}, checkDue},
		{"a directory that cannot be written", ok, report{Unwritable: []string{"/var/lib/kubelet/pki"}}, checkDue},
		{"the kubelet serves an old certificate", ok, report{KubeletServing: &kubeletServingReport{Stale: true}}, checkDue},
		{"an interrupted renewal", ok, report{TransactionPending: true}, checkDue},
		{"expired and unseen", expired, report{UnseenComponents: []unseenComponent{{Component: "etcd"}}}, checkBroken},
	} {
		if got := checkCode(tc.statuses, tc.rep); got != tc.want {
			t.Errorf("%s: exit %d, want %d", tc.name, got, tc.want)
		}
	}
}
