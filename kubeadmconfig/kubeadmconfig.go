package kubeadmconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pkirenewd/pkirenewd/store"
	"gopkg.in/yaml.v3"
)

// ClusterSettings are the parts of kubeadm's ClusterConfiguration that
// decide what a renewed certificate looks like.
type ClusterSettings struct {
	// EncryptionAlgorithm as kubeadm spells it (RSA-2048, ECDSA-P256 ...);
	// empty means "keep the existing key's type and size".
	EncryptionAlgorithm string
	// CertificateValidityPeriod; zero means not set.
	CertificateValidityPeriod time.Duration
	// CertificatesDir is where kubeadm keeps the PKI; empty means not set.
	CertificatesDir string
}

// Algorithms kubeadm accepts for encryptionAlgorithm.
var algorithms = map[string]bool{
	"RSA-2048": true, "RSA-3072": true, "RSA-4096": true,
	"ECDSA-P256": true, "ECDSA-P384": true,
}

// Parse finds the ClusterConfiguration in a kubeadm config file.
// It accepts the multi-document file given to `kubeadm init --config` and
// the kubeadm-config ConfigMap as `kubectl get -o yaml` prints it, because
// those are the two forms an operator has at hand.
func Parse(data []byte) (ClusterSettings, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return ClusterSettings{}, errors.New("no ClusterConfiguration found")
		}
		if err != nil {
			return ClusterSettings{}, fmt.Errorf("parse YAML: %w", err)
		}
		kind, _ := doc["kind"].(string)
		switch kind {
		case "ClusterConfiguration":
			return clusterSettingsFrom(doc)
		case "ConfigMap":
			d, _ := doc["data"].(map[string]any)
			inner, ok := d["ClusterConfiguration"].(string)
			if !ok {
				continue
			}
			return Parse([]byte(inner))
		}
	}
}

func clusterSettingsFrom(doc map[string]any) (ClusterSettings, error) {
	var s ClusterSettings
	if v, ok := doc["certificatesDir"]; ok && v != nil {
		dir, ok := v.(string)
		if !ok || !filepath.IsAbs(dir) {
			return s, fmt.Errorf("certificatesDir: expected an absolute path, got %v", v)
		}
		s.CertificatesDir = filepath.Clean(dir)
	}
	if v, ok := doc["encryptionAlgorithm"]; ok && v != nil {
		alg, ok := v.(string)
		if !ok {
			return s, fmt.Errorf("encryptionAlgorithm: expected a string, got %v", v)
		}
		alg = strings.ToUpper(alg)
		if alg == "ECDSA" { // v1beta3's only EC spelling meant P-256
			alg = "ECDSA-P256"
		}
		if !algorithms[alg] {
			return s, fmt.Errorf("encryptionAlgorithm: unsupported value %q", v)
		}
		s.EncryptionAlgorithm = alg
	}
	if alg, err := publicKeysECDSAGate(doc); err != nil {
		return s, err
	} else if alg != "" {
		s.EncryptionAlgorithm = alg
	}
	if v, ok := doc["certificateValidityPeriod"]; ok && v != nil {
		str, ok := v.(string)
		if !ok {
			return s, fmt.Errorf("certificateValidityPeriod: expected a duration string, got %v", v)
		}
		d, err := time.ParseDuration(str)
		if err != nil || d <= 0 {
			return s, fmt.Errorf("certificateValidityPeriod: invalid duration %q", str)
		}
		s.CertificateValidityPeriod = d
	}
	return s, nil
}

// publicKeysECDSAGate returns the algorithm the deprecated PublicKeysECDSA
// feature gate chooses, or "" when the gate is not set. kubeadm v1.36 and
// older let the gate, when set either way, decide over encryptionAlgorithm
// (true: ECDSA-P256, false: RSA-2048): a cluster made with it has ECDSA keys
// while its kubeadm-config ConfigMap says `encryptionAlgorithm: RSA-2048`
// (the v1beta4 default kubeadm fills in), and following that field alone
// would change every key's type. kubeadm v1.37 dropped the gate and refuses
// a configuration that sets it, so it only appears on older clusters.
func publicKeysECDSAGate(doc map[string]any) (string, error) {
	gates, ok := doc["featureGates"].(map[string]any)
	if !ok {
		return "", nil
	}
	v, ok := gates["PublicKeysECDSA"]
	if !ok || v == nil {
		return "", nil
	}
	switch v {
	case true:
		return "ECDSA-P256", nil
	case false:
		return "RSA-2048", nil
	}
	return "", fmt.Errorf("featureGates.PublicKeysECDSA: expected true or false, got %v", v)
}

// cachedKubeadmConfig is where the last good kubeadm configuration is kept,
// so the cluster's algorithm and validity are followed even when neither
// the file nor the API is at hand (kubeadm falls back to its defaults then).
const cachedKubeadmConfig = "kubeadm-config.yaml"

// LoadClusterSettings reads the kubeadm configuration from path, or, when
// path is empty, from the copy cached in stateDir. A configuration read
// from path is cached when cache is set. It returns where the settings came
// from ("" when there were none).
func LoadClusterSettings(path, stateDir string, cache bool) (ClusterSettings, string, error) {
	src := path
	if src == "" {
		src = filepath.Join(stateDir, cachedKubeadmConfig)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		if path == "" && errors.Is(err, fs.ErrNotExist) {
			return ClusterSettings{}, "", nil
		}
		return ClusterSettings{}, "", fmt.Errorf("kubeadm config %s: %w", src, err)
	}
	s, err := Parse(data)
	if err != nil {
		return ClusterSettings{}, "", fmt.Errorf("kubeadm config %s: %w", src, err)
	}
	if path != "" && cache {
		if err := os.MkdirAll(stateDir, 0o700); err != nil {
			return s, src, fmt.Errorf("cache kubeadm config: %w", err)
		}
		if err := store.WriteAtomic(filepath.Join(stateDir, cachedKubeadmConfig), data, store.FileMeta{Mode: 0o600, UID: -1, GID: -1}); err != nil {
			return s, src, fmt.Errorf("cache kubeadm config: %w", err)
		}
	}
	return s, src, nil
}

// PKIDirChoice is where the PKI was found and why.
type PKIDirChoice struct {
	Dir, Source string
	// Conflict, when set, says that another source names another place.
	Conflict string
}

// ChoosePKIDir decides where the node's PKI is: the directory the user set
// explicitly, else the kubeadm configuration's certificatesDir (what
// kubeadm itself writes to), else the directory of the kube-apiserver
// manifest's --client-ca-file (what the running control plane reads),
// else the default. Any source that disagrees with the one used is named,
// because a renewal of the wrong directory leaves the components on the
// old certificates.
func ChoosePKIDir(def string, explicit string, kubeadm, kubeadmSrc, manifest, manifestSrc string) PKIDirChoice {
	type cand struct{ dir, src string }
	var cands []cand
	if explicit != "" {
		cands = append(cands, cand{explicit, "pkiDir setting"})
	}
	if kubeadm != "" {
		cands = append(cands, cand{kubeadm, "certificatesDir in " + kubeadmSrc})
	}
	if manifest != "" {
		cands = append(cands, cand{manifest, "--client-ca-file in " + manifestSrc})
	}
	if len(cands) == 0 {
		return PKIDirChoice{Dir: def, Source: "default"}
	}
	c := PKIDirChoice{Dir: filepath.Clean(cands[0].dir), Source: cands[0].src}
	var others []string
	for _, o := range cands[1:] {
		if filepath.Clean(o.dir) != c.Dir {
			others = append(others, fmt.Sprintf("%s says %s", o.src, o.dir))
		}
	}
	if len(others) > 0 {
		c.Conflict = strings.Join(others, "; ")
	}
	return c
}
