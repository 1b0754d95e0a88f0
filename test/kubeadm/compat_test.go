package kubeadm_test

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
)

// TestKubeadmCompatibility runs the compatibility checks against the
// kubeadm of every version pinned in test/tools/versions: PKIs,
// kubeconfigs and manifests made by that kubeadm, renewed by pkirenewd,
// identities kept, and that kubeadm's check-expiration agreeing. One
// subtest per version; with PKIRENEWD_KUBEADM_REPORT set, a line per
// version goes to that file (`make test` prints it).
func TestKubeadmCompatibility(t *testing.T) {
	kas := requireKubeadms(t)
	report := &compatReport{}
	t.Cleanup(func() {
		if err := report.write(os.Getenv("PKIRENEWD_KUBEADM_REPORT")); err != nil {
			t.Error(err)
		}
	})
	for _, ka := range kas {
		t.Run(ka.version, func(t *testing.T) {
			t.Parallel()
			for _, tc := range renewCases() {
				if tc.beforeMinor != 0 && minorOf(ka.version) >= tc.beforeMinor {
					continue
				}
				report.check(t, ka.version, "renew/"+tc.name, func(t *testing.T) { renewKubeadmPKI(t, ka, tc) })
			}
			report.check(t, ka.version, "manifests", func(t *testing.T) { affectedFromKubeadmManifests(t, ka) })
		})
	}
}

// compatReport collects each version's check results.
type compatReport struct {
	mu     sync.Mutex
	checks map[string]map[string]bool // version -> check -> passed
}

// check runs fn as a parallel subtest of t and records whether it passed.
func (r *compatReport) check(t *testing.T, version, name string, fn func(t *testing.T)) {
	t.Run(name, func(t *testing.T) {
		t.Parallel()
		t.Cleanup(func() { r.record(version, name, !t.Failed()) })
		fn(t)
	})
}

func (r *compatReport) record(version, name string, passed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.checks == nil {
		r.checks = map[string]map[string]bool{}
	}
	if r.checks[version] == nil {
		r.checks[version] = map[string]bool{}
	}
	r.checks[version][name] = passed
}

// String is one line per version: PASS or FAIL, how many checks passed,
// and the failed ones by name.
func (r *compatReport) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var versions []string
	for v := range r.checks {
		versions = append(versions, v)
	}
	sort.Slice(versions, func(i, j int) bool { return minorOf(versions[i]) < minorOf(versions[j]) })
	var b strings.Builder
	for _, v := range versions {
		var failed []string
		for name, ok := range r.checks[v] {
			if !ok {
				failed = append(failed, name)
			}
		}
		sort.Strings(failed)
		result := "PASS"
		if len(failed) > 0 {
			result = "FAIL"
		}
		fmt.Fprintf(&b, "kubeadm %s  %s  %d/%d checks", v, result, len(r.checks[v])-len(failed), len(r.checks[v]))
		if len(failed) > 0 {
			fmt.Fprintf(&b, " (failed: %s)", strings.Join(failed, ", "))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func (r *compatReport) write(path string) error {
	if path == "" {
		return nil
	}
	return os.WriteFile(path, []byte(r.String()), 0o644)
}
