package cri_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/pkirenewd/pkirenewd/cri"
)

func FuzzParseManifest(f *testing.F) {
	files, _ := filepath.Glob("testdata/kubeadm-v1.37.2/*.yaml")
	for _, p := range files {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("kind: Pod\nmetadata: {name: x}\nspec: {containers: [{livenessProbe: {httpGet: {port: p}}, ports: [{name: p, containerPort: 1}]}]}\n"))
	foreign, _ := filepath.Glob("testdata/foreign/*.yaml")
	for _, p := range foreign {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := cri.ParseManifest("/fuzz.yaml", data)
		if m == nil {
			return
		}
		if m.Component == "" || m.Probe.Port < 0 || m.Probe.Port > 65535 || (err != nil && m.HasProbe()) {
			t.Fatalf("a manifest without a component, with a bad probe port, or with a probe despite %v: %+v", err, m)
		}
		ms := cri.Manifests{Usable: []*cri.Manifest{m}, Problems: []cri.Problem{{Path: "/x.yaml", Component: m.Component, Partial: m, Err: err}}}
		_ = ms.ForChange([]string{"/etc/kubernetes/admin.conf"})
		_ = cri.Affected([]*cri.Manifest{m}, []string{"/etc/kubernetes/pki/apiserver.crt"})
	})
}

func FuzzCrictlYAML(f *testing.F) {
	f.Add([]byte("runtime-endpoint: unix:///run/containerd/containerd.sock\n"))
	f.Add([]byte("runtime-endpoint: [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "crictl.yaml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _ = cri.ResolveEndpoint("", p)
	})
}
