package kubeadm_test

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// versionsFile pins the Kubernetes versions pkirenewd is tested against.
const versionsFile = "../tools/versions"

// pinnedVersions is test/tools/versions: every version, oldest first, and
// the "default" one (whose kubeadm is PKIRENEWD_KUBEADM).
type pinnedVersions struct {
	list []string
	def  string
}

var versionRE = regexp.MustCompile(`^v1\.([0-9]+)\.([0-9]+)$`)

func readPinnedVersions(path string) (pinnedVersions, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return pinnedVersions{}, err
	}
	p, err := parsePinnedVersions(string(data))
	if err != nil {
		return p, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// parsePinnedVersions reads the version and set columns of
// test/tools/versions (test/tools/build-k8s.sh reads it too).
func parsePinnedVersions(data string) (pinnedVersions, error) {
	var p pinnedVersions
	for i, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) != 5 || !versionRE.MatchString(f[0]) || (f[3] != "default" && f[3] != "full" && f[3] != "kubeadm") {
			return p, fmt.Errorf("line %d: want VERSION BUILD-DATE MODULE default|full|kubeadm ETCD, got %q", i+1, line)
		}
		if n := len(p.list); n > 0 && minorOf(p.list[n-1]) >= minorOf(f[0]) {
			return p, fmt.Errorf("line %d: %s does not follow %s: one version a minor, oldest first", i+1, f[0], p.list[n-1])
		}
		if f[3] == "default" {
			if p.def != "" {
				return p, fmt.Errorf("line %d: a second default version (%s after %s)", i+1, f[0], p.def)
			}
			p.def = f[0]
		}
		p.list = append(p.list, f[0])
	}
	if p.def == "" {
		return p, fmt.Errorf("no default version")
	}
	return p, nil
}

// minorOf returns the minor of a v1.MINOR.PATCH version, or -1.
func minorOf(version string) int {
	m := versionRE.FindStringSubmatch(version)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// kubeadmVersion is one Kubernetes version's kubeadm binary.
type kubeadmVersion struct {
	version, bin string
}

// parseKubeadms reads PKIRENEWD_KUBEADMS: VERSION=PATH pairs separated by
// white space, as `test/tools/build-k8s.sh --range` prints them. Every
// pinned version must be there, and nothing else, so that a version added
// to test/tools/versions cannot go untested; the result is oldest first.
func parseKubeadms(env string, pinned pinnedVersions) ([]kubeadmVersion, error) {
	got := map[string]string{}
	for _, pair := range strings.Fields(env) {
		v, bin, ok := strings.Cut(pair, "=")
		switch {
		case !ok || bin == "":
			return nil, fmt.Errorf("PKIRENEWD_KUBEADMS: %q is not VERSION=PATH", pair)
		case !slices.Contains(pinned.list, v):
			return nil, fmt.Errorf("PKIRENEWD_KUBEADMS: %s is not in %s", v, versionsFile)
		case got[v] != "":
			return nil, fmt.Errorf("PKIRENEWD_KUBEADMS: %s given twice", v)
		}
		got[v] = bin
	}
	var out []kubeadmVersion
	for _, v := range pinned.list {
		if got[v] == "" {
			return nil, fmt.Errorf("PKIRENEWD_KUBEADMS lacks %s (pinned in %s)", v, versionsFile)
		}
		out = append(out, kubeadmVersion{version: v, bin: got[v]})
	}
	return out, nil
}

// requireKubeadms returns the kubeadm of every pinned version, or skips
// (fails under CI) when PKIRENEWD_KUBEADMS is not set.
func requireKubeadms(t *testing.T) []kubeadmVersion {
	t.Helper()
	env := os.Getenv("PKIRENEWD_KUBEADMS")
	if env == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("PKIRENEWD_KUBEADMS is not set: run `make test`, which builds kubeadm of every version")
		}
		t.Skip("PKIRENEWD_KUBEADMS not set (`make test` builds kubeadm of every version and sets it)")
	}
	pinned, err := readPinnedVersions(versionsFile)
	if err != nil {
		t.Fatal(err)
	}
	kas, err := parseKubeadms(env, pinned)
	if err != nil {
		t.Fatal(err)
	}
	// Each binary is the version it is paired with.
	for _, ka := range kas {
		out, err := exec.Command(ka.bin, "version", "-o", "short").Output()
		if got := strings.TrimSpace(string(out)); err != nil || got != ka.version {
			t.Fatalf("PKIRENEWD_KUBEADMS: %s says it is %q (%v), not %s", ka.bin, got, err, ka.version)
		}
	}
	return kas
}

func TestPinnedVersionsFile(t *testing.T) {
	p, err := readPinnedVersions(versionsFile)
	if err != nil {
		t.Fatal(err)
	}
	// The supported range is every minor from the oldest to the newest.
	for i, v := range p.list {
		if want := minorOf(p.list[0]) + i; minorOf(v) != want {
			t.Errorf("%s: minor %d, want %d (no minor skipped)", v, minorOf(v), want)
		}
	}
	if p.def != p.list[len(p.list)-1] {
		t.Errorf("the default version %s is not the newest (%s)", p.def, p.list[len(p.list)-1])
	}
}

func TestParsePinnedVersions(t *testing.T) {
	tests := []struct {
		name, data string
		want       []string
		bad        string
	}{
		{"two", "# c\nv1.1.2 2026-01-01T00:00:00Z k8s-v1.1 kubeadm -\n\nv1.2.0 2026-02-01T00:00:00Z k8s default v3.7.3\n", []string{"v1.1.2", "v1.2.0"}, ""},
		{"full and default", "v1.1.2 d m full v3.6.8\nv1.2.0 d m default v3.7.3\n", []string{"v1.1.2", "v1.2.0"}, ""},
		{"no default", "v1.1.2 d m full v3.6.8\n", nil, "no default version"},
		{"two defaults", "v1.1.2 d m default e\nv1.2.2 d m default e\n", nil, "second default"},
		{"newest first", "v1.2.2 d m default e\nv1.1.2 d m kubeadm -\n", nil, "oldest first"},
		{"two patches of a minor", "v1.2.1 d m kubeadm -\nv1.2.2 d m default e\n", nil, "one version a minor"},
		{"missing column", "v1.2.2 d m default\n", nil, "line 1"},
		{"bad version", "1.2.2 d m default e\n", nil, "line 1"},
		{"bad set", "v1.2.2 d m all e\n", nil, "line 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parsePinnedVersions(tc.data)
			if tc.bad != "" {
				if err == nil || !strings.Contains(err.Error(), tc.bad) {
					t.Fatalf("got %v, %v; want an error with %q", p, err, tc.bad)
				}
				return
			}
			if err != nil || !slices.Equal(p.list, tc.want) {
				t.Fatalf("got %v, %v; want %v", p.list, err, tc.want)
			}
		})
	}
}

func TestParseKubeadms(t *testing.T) {
	pinned := pinnedVersions{list: []string{"v1.1.2", "v1.2.0"}, def: "v1.2.0"}
	want := []kubeadmVersion{{"v1.1.2", "/a/kubeadm"}, {"v1.2.0", "/b/kubeadm"}}
	tests := []struct {
		name, env string
		bad       string
	}{
		{"in order", "v1.1.2=/a/kubeadm v1.2.0=/b/kubeadm", ""},
		{"any order and white space", " v1.2.0=/b/kubeadm\n\tv1.1.2=/a/kubeadm ", ""},
		{"one missing", "v1.2.0=/b/kubeadm", "lacks v1.1.2"},
		{"not pinned", "v1.1.2=/a/kubeadm v1.2.0=/b/kubeadm v1.3.0=/c/kubeadm", "v1.3.0 is not in"},
		{"twice", "v1.1.2=/a/kubeadm v1.1.2=/a/kubeadm v1.2.0=/b/kubeadm", "given twice"},
		{"no path", "v1.1.2= v1.2.0=/b/kubeadm", "not VERSION=PATH"},
		{"no pair", "/a/kubeadm", "not VERSION=PATH"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseKubeadms(tc.env, pinned)
			if tc.bad != "" {
				if err == nil || !strings.Contains(err.Error(), tc.bad) {
					t.Fatalf("got %v, %v; want an error with %q", got, err, tc.bad)
				}
				return
			}
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("got %v, %v; want %v", got, err, want)
			}
		})
	}
}
