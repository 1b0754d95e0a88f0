package cplane

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseVersions(t *testing.T) {
	for _, tc := range []struct {
		name, versions string
		want           []Row
		bad            bool
	}{
		{"default and kubeadm", "# version  build-date  module  set  etcd\nv1.36.3 2026-07-22T18:07:38Z k8s-v1.36 kubeadm -\nv1.37.2 2026-10-27T12:01:04Z k8s default v3.7.3\n",
			[]Row{{"v1.36.3", "kubeadm", "-"}, {"v1.37.2", "default", "v3.7.3"}}, false},
		{"full and default", "v1.36.3 d k8s-v1.36 full v3.6.8\nv1.37.2 d k8s default v3.7.3\n",
			[]Row{{"v1.36.3", "full", "v3.6.8"}, {"v1.37.2", "default", "v3.7.3"}}, false},
		{"no default", "v1.36.3 d k8s-v1.36 full v3.6.8\n", nil, true},
		{"two defaults", "v1.36.3 d k8s-v1.36 default v3.6.8\nv1.37.2 d k8s default v3.7.3\n", nil, true},
		{"four columns", "v1.37.2 d k8s default\n", nil, true},
		{"a comment is no row", "#   set  default\n# v1.37.2 2026-10-27T12:01:04Z k8s default v3.7.3\n", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseVersions([]byte(tc.versions))
			if (err != nil) != tc.bad || !slices.Equal(got, tc.want) {
				t.Errorf("got %v, %v; want %v (error: %v)", got, err, tc.want, tc.bad)
			}
		})
	}
	if !(Row{Set: "default"}).Full() || !(Row{Set: "full"}).Full() || (Row{Set: "kubeadm"}).Full() {
		t.Error("Row.Full: only default and full sets are full")
	}
}

// The real file pins one default version, which is what the suites
// default to, the oldest full set is not newer, and the build script
// refuses a version the file does not list.
func TestPinnedVersionFromTheVersionsFile(t *testing.T) {
	v, err := PinnedVersion()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v, "v1.") {
		t.Errorf("pinned version %q", v)
	}
	oldest, err := OldestFull()
	if err != nil || oldest.Etcd == "-" {
		t.Errorf("oldest full set %v, %v", oldest, err)
	}
	if _, err := Build("v0.0.0", "kubeadm"); err == nil {
		t.Error("Build of a version test/tools/versions does not list: no error")
	}
}

func TestParseImages(t *testing.T) {
	out := "W1206 00:49:24.767277   26815 validation.go:79] WARNING: certificateValidityPeriod: the value 24h0m0s is more than the caCertificateValidityPeriod: 5m0s\n" +
		"registry.k8s.io/kube-apiserver:v1.37.2\nregistry.k8s.io/coredns/coredns:v1.12.4\nregistry.k8s.io/pause:3.10.2\nregistry.k8s.io/etcd:3.7.0-0\n"
	got, err := ParseImages(out)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"kube-apiserver": "registry.k8s.io/kube-apiserver:v1.37.2",
		"coredns":        "registry.k8s.io/coredns/coredns:v1.12.4",
		"pause":          "registry.k8s.io/pause:3.10.2",
		"etcd":           "registry.k8s.io/etcd:3.7.0-0",
	} {
		if got[name] != want {
			t.Errorf("%s: %q, want %q", name, got[name], want)
		}
	}
	for _, bad := range []string{"", "registry.k8s.io/etcd", "registry.k8s.io/:v1"} {
		if _, err := ParseImages(bad); err == nil {
			t.Errorf("ParseImages(%q): no error", bad)
		}
	}
}

func TestClusterTail(t *testing.T) {
	for _, tc := range []struct {
		validity time.Duration
		alg      string
		want     string
	}{
		{0, "", ""},
		{3 * time.Minute, "", "certificateValidityPeriod: 3m0s\n"},
		{0, "ECDSA-P256", "encryptionAlgorithm: ECDSA-P256\n"},
		{time.Hour, "RSA-3072", "certificateValidityPeriod: 1h0m0s\nencryptionAlgorithm: RSA-3072\n"},
	} {
		if got := ClusterTail(tc.validity, tc.alg); got != tc.want {
			t.Errorf("ClusterTail(%v, %q) = %q, want %q", tc.validity, tc.alg, got, tc.want)
		}
	}
}

func TestEtcdHealth(t *testing.T) {
	for _, tc := range []struct {
		body string
		code int
		ok   bool
	}{
		{`{"health":"true","reason":""}`, 200, true},
		{`{"health":"false","reason":"RAFT NO LEADER"}`, 503, false},
		{`{"health":"true"}`, 503, false},
		{`not json`, 200, false},
	} {
		if err := EtcdHealth([]byte(tc.body), tc.code); (err == nil) != tc.ok {
			t.Errorf("EtcdHealth(%s, %d) = %v", tc.body, tc.code, err)
		}
	}
}

func TestCheckImages(t *testing.T) {
	images := map[string]string{"pause": "registry.k8s.io/pause:3.10.2", "etcd": "registry.k8s.io/etcd:3.7.0-0"}
	for _, tc := range []struct {
		name  string
		pause string
		want  map[string]string
		ok    bool
	}{
		{"same", "registry.k8s.io/pause:3.10.2", map[string]string{"etcd": "registry.k8s.io/etcd:3.7.0-0"}, true},
		{"other pause", "registry.k8s.io/pause:3.9", nil, false},
		{"other etcd", "registry.k8s.io/pause:3.10.2", map[string]string{"etcd": "registry.k8s.io/etcd:3.6.0-0"}, false},
		{"not listed", "registry.k8s.io/pause:3.10.2", map[string]string{"kube-apiserver": "registry.k8s.io/kube-apiserver:v1.37.2"}, false},
	} {
		if err := CheckImages(images, tc.pause, tc.want); (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
