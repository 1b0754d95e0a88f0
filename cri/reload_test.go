package cri_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/cri"
)

const pki = "/etc/kubernetes/pki/"

// changesOf is a renewal of the named files whose old certificates had
// left time to go.
func changesOf(left time.Duration, now time.Time, paths ...string) []cri.Change {
	var out []cri.Change
	for _, p := range paths {
		out = append(out, cri.Change{Path: p, OldNotAfter: now.Add(left)})
	}
	return out
}

// all12 are the files of a full kubeadm renewal (certificates and keys,
// and the four kubeconfigs of the control plane).
var all12 = []string{
	pki + "apiserver.crt", pki + "apiserver.key",
	pki + "apiserver-kubelet-client.crt", pki + "apiserver-kubelet-client.key",
	pki + "apiserver-etcd-client.crt", pki + "apiserver-etcd-client.key",
	pki + "front-proxy-client.crt", pki + "front-proxy-client.key",
	pki + "etcd/server.crt", pki + "etcd/server.key",
	pki + "etcd/peer.crt", pki + "etcd/peer.key",
	pki + "etcd/healthcheck-client.crt", pki + "etcd/healthcheck-client.key",
	"/etc/kubernetes/admin.conf", "/etc/kubernetes/super-admin.conf",
	"/etc/kubernetes/controller-manager.conf", "/etc/kubernetes/scheduler.conf",
}

func TestPlanRestarts(t *testing.T) {
	now := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	ms, err := cri.LoadManifests(manifestsDir(t, map[string]string{"kube-vip.yaml": fixture(t, "kube-vip.yaml")}))
	if err != nil {
		t.Fatal(err)
	}
	checks := func(cs ...string) []cri.ReloadCheck {
		var out []cri.ReloadCheck
		for _, c := range cs {
			switch c {
			case "apiserver":
				out = append(out, cri.ReloadCheck{Component: "kube-apiserver", File: pki + "apiserver.crt", Addr: "192.0.2.10:6443", Within: time.Minute})
			case "etcd-server":
				out = append(out, cri.ReloadCheck{Component: "etcd", File: pki + "etcd/server.crt", Addr: "127.0.0.1:2379"})
			case "etcd-peer":
				out = append(out, cri.ReloadCheck{Component: "etcd", File: pki + "etcd/peer.crt", Addr: "192.0.2.10:2380"})
			}
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		policy  string
		changes []cri.Change
		restart []string
		checks  []cri.ReloadCheck
	}{
		{"all: everything that uses a file", cri.PolicyAll, changesOf(30*24*time.Hour, now, all12...),
			[]string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-vip"}, nil},
		{"needed: only what reads its files at start", cri.PolicyNeeded, changesOf(30*24*time.Hour, now, all12...),
			[]string{"kube-controller-manager", "kube-scheduler", "kube-vip"}, checks("etcd-server", "etcd-peer", "apiserver")},
		{"needed: the apiserver's serving certificate alone", cri.PolicyNeeded, changesOf(30*24*time.Hour, now, pki+"apiserver.crt", pki+"apiserver.key"),
			nil, checks("apiserver")},
		{"needed: the etcd client certificate reloads at every handshake even when expired", cri.PolicyNeeded,
			changesOf(-time.Hour, now, pki+"apiserver-etcd-client.crt", pki+"apiserver-etcd-client.key"), nil, nil},
		{"needed: the healthcheck client is read by no pod", cri.PolicyNeeded,
			changesOf(time.Hour, now, pki+"etcd/healthcheck-client.crt", pki+"etcd/healthcheck-client.key"), nil, nil},
		{"needed: an expired kubelet client certificate restarts the apiserver (5 minutes re-read)", cri.PolicyNeeded,
			changesOf(-time.Hour, now, pki+"apiserver-kubelet-client.crt", pki+"apiserver-kubelet-client.key"), []string{"kube-apiserver"}, nil},
		{"needed: 4 minutes left on the kubelet client certificate is too little", cri.PolicyNeeded,
			changesOf(4*time.Minute, now, pki+"apiserver-kubelet-client.crt"), []string{"kube-apiserver"}, nil},
		{"needed: 7 minutes left is enough", cri.PolicyNeeded,
			changesOf(7*time.Minute, now, pki+"apiserver-kubelet-client.crt"), nil, nil},
		{"needed: day 366 restarts the apiserver for its kubelet client certificate but not etcd", cri.PolicyNeeded, changesOf(-time.Hour, now, all12...),
			[]string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-vip"}, checks("etcd-server", "etcd-peer")},
		{"needed: day 366 without the kubelet client certificate: the apiserver's reload is watched", cri.PolicyNeeded,
			changesOf(-time.Hour, now, pki+"apiserver.crt", pki+"apiserver.key", pki+"apiserver-etcd-client.crt", pki+"apiserver-etcd-client.key"),
			nil, checks("apiserver")},
		{"needed: a foreign pod mounting admin.conf is restarted", cri.PolicyNeeded, changesOf(time.Hour, now, "/etc/kubernetes/admin.conf"),
			[]string{"kube-vip"}, nil},
		// A same-key CA renewal: the old CA stays good until it ends, so
		// what reads a CA only at start is restarted before then.
		{"needed: the cluster CA: the apiserver re-reads its client CA, kcm reads --root-ca-file only at start", cri.PolicyNeeded,
			changesOf(300*24*time.Hour, now, pki+"ca.crt"), []string{"kube-controller-manager"}, nil},
		{"needed: the etcd CA: etcd's trusted CAs and the apiserver's --etcd-cafile are read at start", cri.PolicyNeeded,
			changesOf(300*24*time.Hour, now, pki+"etcd/ca.crt"), []string{"etcd", "kube-apiserver"}, nil},
		{"needed: the front-proxy CA: the apiserver re-reads it, kcm reads it at start", cri.PolicyNeeded,
			changesOf(300*24*time.Hour, now, pki+"front-proxy-ca.crt"), []string{"kube-controller-manager"}, nil},
		{"nothing changed", cri.PolicyNeeded, nil, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ms.PlanRestarts(tc.changes, tc.policy, now)
			if len(got.Restart)+len(tc.restart) > 0 && !reflect.DeepEqual(got.Restart, tc.restart) {
				t.Errorf("restart = %v, want %v (reasons %v)", got.Restart, tc.restart, got.Reasons)
			}
			if !reflect.DeepEqual(got.Checks, tc.checks) {
				t.Errorf("checks = %+v, want %+v", got.Checks, tc.checks)
			}
			for _, c := range got.Restart {
				if tc.policy == cri.PolicyNeeded && got.Reasons[c] == "" {
					t.Errorf("no reason given for restarting %s", c)
				}
			}
		})
	}
}

func TestHowPickedUpOtherForms(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    cri.Manifest
		file string
		want cri.Pickup
	}{
		{"flag and value apart", cri.Manifest{Component: "kube-apiserver", Args: []string{"kube-apiserver", "--etcd-certfile", pki + "apiserver-etcd-client.crt"}},
			pki + "apiserver-etcd-client.crt", cri.Pickup{Reads: true, Reload: true}},
		{"also named by a flag read at start", cri.Manifest{Component: "kube-apiserver", Args: []string{"--etcd-certfile=" + pki + "x.crt", "--etcd-cafile=" + pki + "x.crt"}},
			pki + "x.crt", cri.Pickup{Reads: true}},
		{"a positional path", cri.Manifest{Component: "etcd", Args: []string{"etcd", pki + "etcd/server.crt"}},
			pki + "etcd/server.crt", cri.Pickup{Reads: true}},
		{"a component not in the table", cri.Manifest{Component: "kube-controller-manager", Args: []string{"--kubeconfig=/etc/kubernetes/controller-manager.conf"}},
			"/etc/kubernetes/controller-manager.conf", cri.Pickup{Reads: true}},
		{"a file in a directory it mounts but names nowhere", cri.Manifest{Component: "etcd", HostPaths: []string{pki + "etcd"}},
			pki + "etcd/healthcheck-client.crt", cri.Pickup{}},
		{"a foreign pod's mounted directory", cri.Manifest{Component: "haproxy", HostPaths: []string{pki + "etcd"}},
			pki + "etcd/server.crt", cri.Pickup{Reads: true}},
		{"etcd served on its first https URL when none is loopback", cri.Manifest{Component: "etcd", Args: []string{"--cert-file=" + pki + "s.crt", "--listen-client-urls=http://127.0.0.1:2379,https://192.0.2.1:2379"}},
			pki + "s.crt", cri.Pickup{Reads: true, Reload: true, Served: true, Addr: "192.0.2.1:2379"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.m
			if got := cri.HowPickedUp(&m, tc.file); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// Every row of the reload table names its source, and no flag is listed
// twice for a component.
func TestReloadTableRows(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range cri.Reloads() {
		if r.Source == "" || len(r.Flags) == 0 {
			t.Errorf("row %+v has no source or no flags", r)
		}
		for _, f := range r.Flags {
			if seen[r.Component+" "+f] {
				t.Errorf("%s --%s listed twice", r.Component, f)
			}
			seen[r.Component+" "+f] = true
		}
	}
}
