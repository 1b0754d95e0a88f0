// Package kubeadm_test proves pkirenewd against PKIs made by the real
// kubeadm (built from pinned sources by test/tools/build-k8s.sh) of every
// supported Kubernetes version (test/tools/versions): after `pkirenewd
// renew --force`, that kubeadm's own check-expiration sees every
// certificate renewed, and every certificate keeps its exact identity.
// The real-node, race and benchmark cases use the default version's.
package kubeadm_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/renew"
	"github.com/pkirenewd/pkirenewd/test/testbin"
)

var (
	// kubeadmBin is the default version's kubeadm (PKIRENEWD_KUBEADM): the
	// "default" line of test/tools/versions, the one make e2e runs.
	kubeadmBin   string
	pkirenewdBin string
)

func TestMain(m *testing.M) {
	kubeadmBin = os.Getenv("PKIRENEWD_KUBEADM")
	testbin.Main(m, &pkirenewdBin)
}

func requireKubeadm(t testing.TB) {
	t.Helper()
	if kubeadmBin != "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("PKIRENEWD_KUBEADM is not set: run `make test`, which builds kubeadm")
	}
	t.Skip("PKIRENEWD_KUBEADM not set (`make test` builds kubeadm and sets it)")
}

// defaultKubeadm is the default version's kubeadm.
func defaultKubeadm(t testing.TB) kubeadmVersion {
	t.Helper()
	requireKubeadm(t)
	pinned, err := readPinnedVersions(versionsFile)
	if err != nil {
		t.Fatal(err)
	}
	return kubeadmVersion{version: pinned.def, bin: kubeadmBin}
}

// node is a root file system with /etc/kubernetes made by kubeadm.
type node struct {
	root, cfg string
	// kubeadm is the binary that made it, which also checks it.
	kubeadm kubeadmVersion
}

func (n *node) pki() string   { return filepath.Join(n.root, "etc/kubernetes/pki") }
func (n *node) kube() string  { return filepath.Join(n.root, "etc/kubernetes") }
func (n *node) state() string { return filepath.Join(n.root, "var/lib/pkirenewd") }

// initConfig is the configuration given to kubeadm of the given version.
// kubeadm.k8s.io/v1beta4 exists from v1.31, so every supported version
// reads it; kubernetesVersion must be within kubeadm's own minor.
func initConfig(version string) string {
	return `apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: 192.0.2.10
nodeRegistration:
  name: node1
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: ` + version + `
certificatesDir: /etc/kubernetes/pki
`
}

// kubeadmNode runs `kubeadm init phase certs all` and `kubeconfig all`
// chrooted (--rootfs) into a temp dir, so kubeadm writes exactly where it
// would on a node, and its check-expiration reads from there too.
func kubeadmNode(t testing.TB, clusterCfg string, prepare func(t testing.TB, root string)) *node {
	t.Helper()
	return kubeadmNodeOf(t, defaultKubeadm(t), clusterCfg, prepare)
}

// kubeadmNodeOf is kubeadmNode made by the given version's kubeadm.
func kubeadmNodeOf(t testing.TB, ka kubeadmVersion, clusterCfg string, prepare func(t testing.TB, root string)) *node {
	t.Helper()
	n := &node{root: t.TempDir(), kubeadm: ka}
	if err := os.MkdirAll(n.kube(), 0o755); err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(t, n.root)
	}
	// Issued for half a year; the cluster's configuration then says a
	// year, so a renewal right away must follow it and extend every
	// certificate.
	n.cfg = filepath.Join(n.root, "kubeadm.yaml")
	if err := os.WriteFile(n.cfg, []byte(initConfig(ka.version)+clusterCfg+"certificateValidityPeriod: 4380h0m0s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, phase := range []string{"certs", "kubeconfig"} {
		kubeadm(t, n, "init", "phase", phase, "all", "--config", "/kubeadm.yaml")
	}
	if err := os.WriteFile(n.cfg, []byte(initConfig(ka.version)+clusterCfg+"certificateValidityPeriod: 8760h0m0s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

func kubeadm(t testing.TB, n *node, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(n.kubeadm.bin, append(args, "--rootfs", n.root)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubeadm %s %s: %v\n%s\n%s", n.kubeadm.version, strings.Join(args, " "), err, out, stderr.String())
	}
	return out
}

func pkirenewd(t testing.TB, n *node, args ...string) []byte {
	t.Helper()
	all := append(args, "--config", "/dev/null", "--api-identity", "admin", "--pki-dir", n.pki(), "--kubeconfig-dir", n.kube(), "--state-dir", n.state(), "--kubeadm-config", n.cfg)
	cmd := exec.Command(pkirenewdBin, all...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pkirenewd %s: %v\n%s\n%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return out
}

func inventory(t testing.TB, n *node) map[string]*renew.Item {
	t.Helper()
	inv, err := renew.TakeInventory(renew.Dirs{PKIDir: n.pki(), KubeconfigDir: n.kube()})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]*renew.Item{}
	for _, it := range append(inv.CAs, inv.Certs...) {
		if it.Err != nil || it.Missing {
			t.Fatalf("%s: err=%v missing=%v", it.Name, it.Err, it.Missing)
		}
		m[it.Name] = it
	}
	return m
}

type expirationInfo struct {
	Certificates []struct {
		Name              string    `yaml:"name"`
		ExpirationDate    time.Time `yaml:"expirationDate"`
		CAName            string    `yaml:"caName"`
		ExternallyManaged bool      `yaml:"externallyManaged"`
		Missing           bool      `yaml:"missing"`
	} `yaml:"certificates"`
	CertificateAuthorities []struct {
		Name           string    `yaml:"name"`
		ExpirationDate time.Time `yaml:"expirationDate"`
		Missing        bool      `yaml:"missing"`
	} `yaml:"certificateAuthorities"`
}

func checkExpiration(t testing.TB, n *node) expirationInfo {
	t.Helper()
	var info expirationInfo
	out := kubeadm(t, n, "certs", "check-expiration", "--config", "/kubeadm.yaml", "-o", "yaml")
	if err := yaml.Unmarshal(out, &info); err != nil {
		t.Fatalf("check-expiration output: %v\n%s", err, out)
	}
	return info
}

func keyAlg(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA-P" + strings.TrimPrefix(k.Curve.Params().Name, "P-")
	}
	return fmt.Sprintf("%T", c.PublicKey)
}

// renewCase is one kubeadm cluster configuration the compatibility test
// renews: alg is the key every leaf must have afterwards, items how many
// items pkirenewd renews, and only those kubeadm versions whose minor is
// below beforeMinor (when set) run it.
type renewCase struct {
	name        string
	clusterCfg  string
	prepare     func(t testing.TB, root string)
	alg         string
	items       int
	beforeMinor int
}

func renewCases() []renewCase {
	externalEtcd := func(t testing.TB, root string) {
		// An external etcd's client files, which kubeadm only refers to.
		dir := filepath.Join(root, "etc/etcd-client")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"ca.crt", "client.crt", "client.key"} {
			if err := os.WriteFile(filepath.Join(dir, f), []byte("external\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	return []renewCase{
		{"default RSA", "", nil, "RSA-2048", 12, 0},
		{"ECDSA-P256", "encryptionAlgorithm: ECDSA-P256\n", nil, "ECDSA-P256", 12, 0},
		{"extra certSANs", "apiServer:\n  certSANs: [127.0.0.1, localhost, api.example.test, 2001:db8::10, 198.51.100.7]\netcd:\n  local:\n    serverCertSANs: [etcd.example.test, 198.51.100.8]\n    peerCertSANs: [peer.example.test]\n", nil, "RSA-2048", 12, 0},
		{"external etcd", "etcd:\n  external:\n    endpoints: [https://198.51.100.20:2379]\n    caFile: /etc/etcd-client/ca.crt\n    certFile: /etc/etcd-client/client.crt\n    keyFile: /etc/etcd-client/client.key\n", externalEtcd, "RSA-2048", 8, 0},
		// Up to v1.36 the deprecated PublicKeysECDSA gate, when set, beats
		// encryptionAlgorithm (which the kubeadm-config ConfigMap always
		// carries, defaulted to RSA-2048); v1.37 refuses the gate.
		{"PublicKeysECDSA gate", "encryptionAlgorithm: RSA-2048\nfeatureGates:\n  PublicKeysECDSA: true\n", nil, "ECDSA-P256", 12, 37},
	}
}

// renewKubeadmPKI: a PKI and kubeconfigs made by this kubeadm, renewed by
// pkirenewd; pkirenewd's check agrees with kubeadm's check-expiration
// before, kubeadm's agrees with the files after, every certificate keeps
// its identity with a new key of the cluster's algorithm and lifetime.
func renewKubeadmPKI(t *testing.T, ka kubeadmVersion, tc renewCase) {
	n := kubeadmNodeOf(t, ka, tc.clusterCfg, tc.prepare)
	old := inventory(t, n)
	before := checkExpiration(t, n)

	// pkirenewd's check shows what kubeadm's shows.
	var ours expirationInfo
	if err := yaml.Unmarshal(pkirenewd(t, n, "check", "-o", "yaml"), &ours); err != nil {
		t.Fatal(err)
	}
	compareChecks(t, before, ours)

	out := pkirenewd(t, n, "renew", "--force")
	if got := strings.Count(string(out), "\nrenewed ") + boolInt(strings.HasPrefix(string(out), "renewed ")); got != tc.items {
		t.Fatalf("renewed %d items, want %d:\n%s", got, tc.items, out)
	}
	renewed := inventory(t, n)

	// (a) kubeadm sees every certificate with its new expiry.
	after := checkExpiration(t, n)
	if len(after.Certificates) != len(before.Certificates) {
		t.Fatalf("kubeadm lists %d certificates after, %d before", len(after.Certificates), len(before.Certificates))
	}
	for i, c := range after.Certificates {
		b := before.Certificates[i]
		it := renewed[c.Name]
		switch {
		case c.Missing:
			t.Errorf("%s: kubeadm reports it missing", c.Name)
		case it == nil:
			t.Errorf("%s: kubeadm lists it, pkirenewd does not", c.Name)
		case !c.ExpirationDate.Equal(it.Cert.NotAfter):
			t.Errorf("%s: kubeadm says it expires %v, the file says %v", c.Name, c.ExpirationDate, it.Cert.NotAfter)
		case !c.ExpirationDate.After(b.ExpirationDate):
			t.Errorf("%s: expiry %v not later than before (%v)", c.Name, c.ExpirationDate, b.ExpirationDate)
		}
	}
	// (b) same identity, new key, signed by the CA.
	for name, it := range renewed {
		o := old[name]
		if it.Kind == renew.KindCA {
			if !bytes.Equal(it.Cert.Raw, o.Cert.Raw) {
				t.Errorf("CA %s changed", name)
			}
			continue
		}
		if err := pki.SameIdentity(o.Cert, it.Cert); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if !bytes.Equal(o.Cert.RawSubject, it.Cert.RawSubject) || o.Cert.KeyUsage != it.Cert.KeyUsage {
			t.Errorf("%s: subject or key usage differ", name)
		}
		if bytes.Equal(o.Cert.RawSubjectPublicKeyInfo, it.Cert.RawSubjectPublicKeyInfo) {
			t.Errorf("%s: key not replaced", name)
		}
		if got := it.Cert.NotAfter.Sub(it.Cert.NotBefore); got != 8760*time.Hour+5*time.Minute {
			t.Errorf("%s: lifetime %v, want the cluster's 8760h (+5m backdating)", name, got)
		}
		if got := keyAlg(it.Cert); got != tc.alg {
			t.Errorf("%s: key %s, want %s", name, got, tc.alg)
		}
		ca := renewed[it.CAName]
		pool := x509.NewCertPool()
		pool.AddCert(ca.Cert)
		if _, err := it.Cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s does not verify against %s: %v", name, it.CAName, err)
		}
	}
	// Issued as this version issues it, and kept so (kubeadm's own renewal
	// keeps the subject too).
	if got, want := renewed["apiserver-kubelet-client"].Cert.Subject.Organization, kubeletClientOrg(ka.version); !slices.Equal(got, want) {
		t.Errorf("apiserver-kubelet-client: organization %q, want %q for %s", got, want, ka.version)
	}
	// sa.key and sa.pub are never touched.
	for _, f := range []string{"sa.key", "sa.pub"} {
		if _, err := os.Stat(filepath.Join(n.pki(), f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// kubeletClientOrg is the organization kubeadm puts in the apiserver's
// client certificate for the kubelets: up to v1.35 the kubeadm:cluster-admins
// group (which holds cluster-admin); from v1.36 none, the
// kube-apiserver-kubelet-client user being bound to system:kubelet-api-admin
// by its own ClusterRoleBinding instead.
func kubeletClientOrg(version string) []string {
	if minorOf(version) <= 35 {
		return []string{"kubeadm:cluster-admins"}
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// compareChecks: pkirenewd's check lists what kubeadm's lists, with the same
// dates and CAs (pkirenewd adds kubelet.conf, which kubeadm leaves out).
func compareChecks(t *testing.T, kubeadm, ours expirationInfo) {
	t.Helper()
	idx := map[string]int{}
	for i, c := range ours.Certificates {
		idx[c.Name] = i
	}
	var names []string
	for _, c := range kubeadm.Certificates {
		names = append(names, c.Name)
		i, ok := idx[c.Name]
		if !ok {
			t.Errorf("pkirenewd check lacks %s", c.Name)
			continue
		}
		o := ours.Certificates[i]
		if !o.ExpirationDate.Equal(c.ExpirationDate) || o.CAName != c.CAName || o.ExternallyManaged != c.ExternallyManaged || o.Missing != c.Missing {
			t.Errorf("%s: pkirenewd %+v, kubeadm %+v", c.Name, o, c)
		}
	}
	if !sort.StringsAreSorted(names) {
		t.Logf("kubeadm order: %v", names)
	}
	if len(ours.CertificateAuthorities) != len(kubeadm.CertificateAuthorities) {
		t.Errorf("CAs: pkirenewd %d, kubeadm %d", len(ours.CertificateAuthorities), len(kubeadm.CertificateAuthorities))
	}
	for i := range kubeadm.CertificateAuthorities {
		if i < len(ours.CertificateAuthorities) && (ours.CertificateAuthorities[i].Name != kubeadm.CertificateAuthorities[i].Name ||
			!ours.CertificateAuthorities[i].ExpirationDate.Equal(kubeadm.CertificateAuthorities[i].ExpirationDate)) {
			t.Errorf("CA %d: pkirenewd %+v, kubeadm %+v", i, ours.CertificateAuthorities[i], kubeadm.CertificateAuthorities[i])
		}
	}
}
