package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{"90d", 90 * Day, false},
		{"1d12h", 36 * time.Hour, false},
		{"0.5d", 12 * time.Hour, false},
		{"2160h", 90 * Day, false},
		{"30m", 30 * time.Minute, false},
		{"1h30m", 90 * time.Minute, false},
		{"", 0, true},
		{"d", 0, true},
		{"-1d", 0, true},
		{"ninety days", 0, true},
		{"90", 0, true},
		{"1dd", 0, true},
	}
	for _, tc := range tests {
		got, err := ParseDuration(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, err=%v", tc.in, got, err, tc.want, tc.err)
		}
	}
	for _, d := range []time.Duration{90 * Day, 365 * Day, 36 * time.Hour, time.Minute} {
		back, err := ParseDuration(FormatDuration(d))
		if err != nil || back != d {
			t.Errorf("round trip of %v via %q: %v %v", d, FormatDuration(d), back, err)
		}
	}
}

func TestParse(t *testing.T) {
	def := Defaults()
	tests := []struct {
		name, doc string
		check     func(Config) bool
		err       string
	}{
		{"empty", "", func(c Config) bool { return reflect.DeepEqual(c, def) }, ""},
		{"comments only", "# nothing\n", func(c Config) bool { return reflect.DeepEqual(c, def) }, ""},
		{"null value keeps default", "renewBefore:\n", func(c Config) bool { return c.RenewBefore == def.RenewBefore }, ""},
		{"all keys", "pkiDir: /p\nkubeconfigDir: /k\nmanifestsDir: /m\nstateDir: /s\nkubeadmConfig: /c.yaml\nrenewBefore: 30d\nvalidity: 180d\ncaWarnBefore: 1y\n",
			nil, `caWarnBefore: invalid duration "1y"`},
		{"valid", "pkiDir: /p\nrenewBefore: 30d\nvalidity: 4320h\nnodeName: cp-1\n", func(c Config) bool {
			return c.PKIDir == "/p" && c.RenewBefore == 30*Day && c.Validity == 180*Day && c.ValiditySet && c.NodeName == "cp-1"
		}, ""},
		{"unknown key", "pkiDir: /p\nrenewbefore: 30d\n", nil, `line 2: unknown key "renewbefore"`},
		{"kubelet serving cert monitored", "kubeletServingCert: monitor\nkubeletCertDir: /srv/kubelet/pki/\n", func(c Config) bool {
			return c.KubeletServingCert == KubeletServingMonitor && c.KubeletCertDir == "/srv/kubelet/pki" && def.KubeletServingCert == KubeletServingRenew
		}, ""},
		{"kubelet serving cert misspelt", "kubeletServingCert: renewed\n", nil, `line 1: kubeletServingCert: "renewed" is not renew or monitor`},
		{"bad duration", "renewBefore: soon\n", nil, `line 1: renewBefore: invalid duration "soon"`},
		{"negative duration", "validity: -5d\n", nil, "validity"},
		{"zero duration", "renewBefore: 0s\n", nil, "renewBefore"},
		{"relative path", "stateDir: var/lib\n", nil, `stateDir: "var/lib" is not an absolute path`},
		{"duplicate key", "pkiDir: /a\npkiDir: /b\n", nil, `line 2: key "pkiDir" given twice`},
		{"not a mapping", "- pkiDir\n", nil, "expected a mapping"},
		{"nested value", "pkiDir:\n  a: b\n", nil, "pkiDir: expected a single value"},
		{"two documents", "pkiDir: /a\n---\npkiDir: /b\n", nil, "more than one YAML document"},
		{"not YAML", "pkiDir: [\n", nil, "config test.yaml"},
		{"copies as a list", "adminKubeconfigCopies:\n- /root/.kube/merged\n- /srv/ops//kubeconfig\n", func(c Config) bool {
			return reflect.DeepEqual(c.AdminKubeconfigCopies, []string{"/root/.kube/merged", "/srv/ops/kubeconfig"}) &&
				reflect.DeepEqual(c.AdminCopies(), []string{"/root/.kube/config", "/root/.kube/merged", "/srv/ops/kubeconfig"})
		}, ""},
		{"copies as a flow list", "adminKubeconfigCopies: [/a, /b]\n", func(c Config) bool {
			return reflect.DeepEqual(c.AdminKubeconfigCopies, []string{"/a", "/b"})
		}, ""},
		{"copies as one value", "adminKubeconfigCopies: /a,/b\n", func(c Config) bool {
			return reflect.DeepEqual(c.AdminKubeconfigCopies, []string{"/a", "/b"})
		}, ""},
		{"the single copy alone, off", "adminKubeconfigCopy: \"\"\nadminKubeconfigCopies: [/root/.kube/config, /a]\n", func(c Config) bool {
			return reflect.DeepEqual(c.AdminCopies(), []string{"/root/.kube/config", "/a"})
		}, ""},
		{"no copies", "adminKubeconfigCopy: \"\"\n", func(c Config) bool { return c.AdminCopies() == nil }, ""},
		{"relative copy", "adminKubeconfigCopies: [/a, kube/config]\n", nil, `line 1: adminKubeconfigCopies: "kube/config" is not an absolute path`},
		{"nested copy", "adminKubeconfigCopies:\n- {path: /a}\n", nil, "line 2: adminKubeconfigCopies: expected a list of single values"},
		{"list for a single value", "pkiDir: [/a]\n", nil, "pkiDir: expected a single value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("test.yaml", []byte(tc.doc), def)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want it to contain %q", err, tc.err)
				}
				if !strings.Contains(err.Error(), "test.yaml") {
					t.Errorf("error does not name the file: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Fatalf("unexpected config %+v", c)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.yaml")
	if c, err := Load(missing, false); err != nil || !reflect.DeepEqual(c, Defaults()) {
		t.Fatalf("implicit missing config: %+v %v", c, err)
	}
	if _, err := Load(missing, true); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("explicit missing config: %v", err)
	}
	p := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(p, []byte("renewBefore: 60d\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, true)
	if err != nil || c.RenewBefore != 60*Day || c.PKIDir != "/etc/kubernetes/pki" {
		t.Fatalf("%+v %v", c, err)
	}
}

func TestValidate(t *testing.T) {
	c := Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.StateDir = c.PKIDir
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "stateDir") {
		t.Fatalf("stateDir == pkiDir: %v", err)
	}
	c = Defaults()
	c.ManifestsDir = ""
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "manifestsDir") {
		t.Fatalf("empty manifestsDir: %v", err)
	}
	c = Defaults()
	c.LeaseDuration = 2 * time.Nanosecond
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "leaseDuration") {
		t.Fatalf("leaseDuration 2ns: %v", err)
	}
	c.Lease = "" // no coordination: the duration does not matter
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestKeysHaveKebabFlags(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range Keys() {
		if k.Flag == "" || strings.ToLower(k.Flag) != k.Flag || strings.Contains(k.Flag, "_") || seen[k.Flag] {
			t.Errorf("key %s has bad or duplicate flag %q", k.Name, k.Flag)
		}
		seen[k.Flag] = true
		d := Defaults()
		if err := k.Set(&d, k.Get(&d)); err != nil && k.Get(&d) != "" {
			t.Errorf("key %s does not round-trip its default %q: %v", k.Name, k.Get(&d), err)
		}
	}
}
