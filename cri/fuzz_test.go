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
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := cri.ParseManifest("/fuzz.yaml", data)
		if err != nil {
			return
		}
		if m.Component == "" || m.Probe.Port <= 0 || m.Probe.Port > 65535 {
			t.Fatalf("accepted a manifest without a component or probe port: %+v", m)
		}
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
