package cplane

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// Both rigs' configurations parse as the two documents kubeadm reads, with
// every field where kubeadm's v1beta4 schema has it.
func TestInitConfigYAML(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  InitConfig
		want []string // "path=value" of the decoded documents
		not  []string // keys absent
	}{
		{"single node", InitConfig{AdvertiseAddress: "192.0.2.10", BindPort: 6443, NodeName: "node1", KubernetesVersion: "v1.37.2",
			CertificatesDir: "/etc/kubernetes/pki", CertSANs: []string{"127.0.0.1", "localhost"}, EtcdDataDir: "/tmp/x/etcd"},
			[]string{"0.localAPIEndpoint.advertiseAddress=192.0.2.10", "0.localAPIEndpoint.bindPort=6443", "0.nodeRegistration.name=node1",
				"1.kubernetesVersion=v1.37.2", "1.certificatesDir=/etc/kubernetes/pki", "1.apiServer.certSANs=[127.0.0.1 localhost]",
				"1.etcd.local.dataDir=/tmp/x/etcd"},
			[]string{"controlPlaneEndpoint", "certificateValidityPeriod", "encryptionAlgorithm"}},
		{"ha member", InitConfig{AdvertiseAddress: "203.0.113.11", BindPort: 40001, NodeName: "node2", KubernetesVersion: "v1.36.3",
			CertificatesDir: "/tmp/h/pki", ControlPlaneEndpoint: "127.0.0.1:40001", CertSANs: []string{"127.0.0.1", "127.0.0.12"},
			EtcdDataDir: "/tmp/h/etcd", EtcdCertSANs: []string{"127.0.0.12"},
			EtcdArgs: [][2]string{{"initial-cluster", "node1=https://127.0.0.11:2380,node2=https://127.0.0.12:2380"}, {"initial-cluster-state", "new"}},
			Validity: 3 * time.Minute, EncryptionAlgorithm: "ECDSA-P256"},
			[]string{"1.controlPlaneEndpoint=127.0.0.1:40001", "1.etcd.local.serverCertSANs=[127.0.0.12]", "1.etcd.local.peerCertSANs=[127.0.0.12]",
				"1.etcd.local.extraArgs=[map[name:initial-cluster value:node1=https://127.0.0.11:2380,node2=https://127.0.0.12:2380] map[name:initial-cluster-state value:new]]",
				"1.certificateValidityPeriod=3m0s", "1.encryptionAlgorithm=ECDSA-P256"},
			nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			docs := strings.Split(tc.cfg.YAML(), "\n---\n")
			if len(docs) != 2 {
				t.Fatalf("%d documents", len(docs))
			}
			var parsed [2]map[string]any
			for i, d := range docs {
				if err := yaml.Unmarshal([]byte(d), &parsed[i]); err != nil {
					t.Fatalf("document %d: %v\n%s", i, err, d)
				}
			}
			if parsed[0]["kind"] != "InitConfiguration" || parsed[1]["kind"] != "ClusterConfiguration" {
				t.Errorf("kinds %v, %v", parsed[0]["kind"], parsed[1]["kind"])
			}
			for _, w := range tc.want {
				path, want, _ := strings.Cut(w, "=")
				doc, keys, _ := strings.Cut(path, ".")
				var v any = parsed[map[string]int{"0": 0, "1": 1}[doc]]
				for _, k := range strings.Split(keys, ".") {
					m, _ := v.(map[string]any)
					v = m[k]
				}
				if got := fmt.Sprint(v); got != want {
					t.Errorf("%s = %s, want %s", path, got, want)
				}
			}
			for _, k := range tc.not {
				if _, ok := parsed[1][k]; ok {
					t.Errorf("%s set", k)
				}
			}
		})
	}
}
