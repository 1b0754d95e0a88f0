package kubeadmconfig

import (
	"testing"
)

func FuzzParseKubeadmConfig(f *testing.F) {
	f.Add([]byte("kind: ClusterConfiguration\nencryptionAlgorithm: ECDSA-P256\ncertificateValidityPeriod: 8760h\n"))
	f.Add([]byte("kind: ConfigMap\ndata:\n  ClusterConfiguration: |\n    kind: ClusterConfiguration\n"))
	f.Add([]byte("---\n---\nkind: InitConfiguration\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err == nil && s.CertificateValidityPeriod < 0 {
			t.Fatal("negative validity accepted")
		}
	})
}
