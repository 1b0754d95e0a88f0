package reconcile

import (
	"reflect"
	"testing"
	"time"
)

func TestStale(t *testing.T) {
	t0 := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	uses := map[string][]string{
		"kube-controller-manager": {"/etc/kubernetes/controller-manager.conf", "/etc/kubernetes/pki/ca.crt"},
		"kube-scheduler":          {"/etc/kubernetes/scheduler.conf"},
		"kubelet":                 {"/etc/kubernetes/kubelet.conf"},
	}
	tests := []struct {
		name    string
		running []Running
		changed map[string]time.Time
		want    []StaleComponent
	}{
		{"files older than every start", []Running{{"kube-scheduler", "c1", at(time.Hour)}},
			map[string]time.Time{"/etc/kubernetes/scheduler.conf": at(0)}, nil},
		{"renewed after the start (kubeadm certs renew, no restart)", []Running{{"kube-scheduler", "c1", at(0)}},
			map[string]time.Time{"/etc/kubernetes/scheduler.conf": at(time.Hour)},
			[]StaleComponent{{"kube-scheduler", at(0), "/etc/kubernetes/scheduler.conf", at(time.Hour), ""}}},
		{"the newest file is named", []Running{{"kube-controller-manager", "c2", at(0)}},
			map[string]time.Time{"/etc/kubernetes/controller-manager.conf": at(time.Hour), "/etc/kubernetes/pki/ca.crt": at(2 * time.Hour)},
			[]StaleComponent{{"kube-controller-manager", at(0), "/etc/kubernetes/pki/ca.crt", at(2 * time.Hour), ""}}},
		{"changed at the very instant of the start is not after it", []Running{{"kube-scheduler", "c1", at(0)}},
			map[string]time.Time{"/etc/kubernetes/scheduler.conf": at(0)}, nil},
		{"a component using no changed file", []Running{{"etcd", "c3", at(0)}},
			map[string]time.Time{"/etc/kubernetes/scheduler.conf": at(time.Hour)}, nil},
		{"the kubelet, started before its kubelet.conf changed", []Running{{"kubelet", "", at(0)}, {"kube-scheduler", "c1", at(3 * time.Hour)}},
			map[string]time.Time{"/etc/kubernetes/kubelet.conf": at(time.Hour), "/etc/kubernetes/scheduler.conf": at(time.Hour)},
			[]StaleComponent{{"kubelet", at(0), "/etc/kubernetes/kubelet.conf", at(time.Hour), ""}}},
		{"sorted by name", []Running{{"kube-scheduler", "c1", at(0)}, {"kube-controller-manager", "c2", at(0)}},
			map[string]time.Time{"/etc/kubernetes/scheduler.conf": at(time.Hour), "/etc/kubernetes/controller-manager.conf": at(time.Hour)},
			[]StaleComponent{{"kube-controller-manager", at(0), "/etc/kubernetes/controller-manager.conf", at(time.Hour), ""}, {"kube-scheduler", at(0), "/etc/kubernetes/scheduler.conf", at(time.Hour), ""}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Stale(uses, tc.running, tc.changed); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}
