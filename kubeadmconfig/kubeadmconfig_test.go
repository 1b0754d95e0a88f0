package kubeadmconfig

import (
	"strings"
	"testing"
)

// kubeadm v1.34 to v1.36 let the deprecated PublicKeysECDSA feature gate
// override encryptionAlgorithm (kubeadm's ClusterConfiguration.EncryptionAlgorithmType).
func TestParseKubeadmConfigPublicKeysECDSA(t *testing.T) {
	const head = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n"
	tests := []struct {
		name, cfg, want string
		bad             bool
	}{
		{"gate on over the defaulted field", "encryptionAlgorithm: RSA-2048\nfeatureGates:\n  PublicKeysECDSA: true\n", "ECDSA-P256", false},
		{"gate off over an ECDSA field", "encryptionAlgorithm: ECDSA-P384\nfeatureGates:\n  PublicKeysECDSA: false\n", "RSA-2048", false},
		{"gate alone in v1beta3", "featureGates:\n  PublicKeysECDSA: true\n", "ECDSA-P256", false},
		{"other gates only", "encryptionAlgorithm: RSA-4096\nfeatureGates:\n  RootlessControlPlane: true\n", "RSA-4096", false},
		{"gate null", "encryptionAlgorithm: RSA-3072\nfeatureGates:\n  PublicKeysECDSA:\n", "RSA-3072", false},
		{"no gates", "", "", false},
		{"gate not a boolean", "featureGates:\n  PublicKeysECDSA: \"yes\"\n", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse([]byte(head + tc.cfg))
			if tc.bad {
				if err == nil || !strings.Contains(err.Error(), "PublicKeysECDSA") {
					t.Fatalf("got %+v, %v; want an error naming the gate", s, err)
				}
				return
			}
			if err != nil || s.EncryptionAlgorithm != tc.want {
				t.Fatalf("got %q, %v; want %q", s.EncryptionAlgorithm, err, tc.want)
			}
		})
	}
}
