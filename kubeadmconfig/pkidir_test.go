package kubeadmconfig

import "testing"

func TestChoosePKIDir(t *testing.T) {
	const def = "/etc/kubernetes/pki"
	tests := []struct {
		name                        string
		explicit, kubeadm, manifest string
		wantDir, wantSource         string
		wantConflict                bool
	}{
		{"nothing known", "", "", "", def, "default", false},
		{"manifest only", "", "", "/etc/kubernetes/custom-pki", "/etc/kubernetes/custom-pki", "--client-ca-file in m.yaml", false},
		{"kubeadm only", "", "/etc/kubernetes/custom-pki", "", "/etc/kubernetes/custom-pki", "certificatesDir in k.yaml", false},
		{"kubeadm and manifest agree", "", "/srv/pki/", "/srv/pki", "/srv/pki", "certificatesDir in k.yaml", false},
		{"kubeadm wins over manifest, named", "", "/srv/pki", "/etc/kubernetes/pki", "/srv/pki", "certificatesDir in k.yaml", true},
		{"explicit wins over both, named", "/x/pki", "/srv/pki", "/srv/pki", "/x/pki", "pkiDir setting", true},
		{"explicit agrees", "/srv/pki", "", "/srv/pki", "/srv/pki", "pkiDir setting", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ChoosePKIDir(def, tc.explicit, tc.kubeadm, "k.yaml", tc.manifest, "m.yaml")
			if c.Dir != tc.wantDir || c.Source != tc.wantSource || (c.Conflict != "") != tc.wantConflict {
				t.Errorf("got %+v, want dir %s source %q conflict %v", c, tc.wantDir, tc.wantSource, tc.wantConflict)
			}
		})
	}
}

func TestCertificatesDirFromKubeadmConfig(t *testing.T) {
	s, err := Parse([]byte("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\ncertificatesDir: /etc/kubernetes/custom-pki/\n"))
	if err != nil || s.CertificatesDir != "/etc/kubernetes/custom-pki" {
		t.Fatalf("%+v %v", s, err)
	}
	if _, err := Parse([]byte("kind: ClusterConfiguration\ncertificatesDir: pki\n")); err == nil {
		t.Fatal("a relative certificatesDir was accepted")
	}
}
