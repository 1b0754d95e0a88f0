package daemon_test

import (
	"testing"

	"github.com/pkirenewd/pkirenewd/daemon"
	"github.com/pkirenewd/pkirenewd/writeset"
)

// Each directory of the write set that cannot be written is one series;
// a later check that finds it writable again removes it.
func TestUnwritablePaths(t *testing.T) {
	m := daemon.NewPromMetrics()
	series := func() map[string]string {
		families, err := m.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, f := range families {
			if f.GetName() != "pkirenewd_unwritable_paths" {
				continue
			}
			for _, s := range f.GetMetric() {
				l := map[string]string{}
				for _, p := range s.GetLabel() {
					l[p.GetName()] = p.GetValue()
				}
				if s.GetGauge().GetValue() != 1 {
					t.Errorf("%v = %v", l, s.GetGauge().GetValue())
				}
				got[l["path"]] = l["reason"]
			}
		}
		return got
	}
	m.Unwritable([]writeset.Dir{{Path: "/var/lib/kubelet/pki", Key: "kubeletServingCert"}, {Path: "/srv/kube", Key: "adminKubeconfigCopies"}})
	if got := series(); len(got) != 2 || got["/var/lib/kubelet/pki"] != "kubeletServingCert" || got["/srv/kube"] != "adminKubeconfigCopies" {
		t.Fatalf("series %v", got)
	}
	m.Unwritable([]writeset.Dir{{Path: "/srv/kube", Key: "adminKubeconfigCopies"}})
	if got := series(); len(got) != 1 || got["/srv/kube"] == "" {
		t.Fatalf("after a reload: series %v", got)
	}
}
