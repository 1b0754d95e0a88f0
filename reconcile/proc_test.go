package reconcile

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestStartTicks(t *testing.T) {
	for _, tc := range []struct {
		stat string
		want uint64
		ok   bool
	}{
		{"1234 (kubelet) S 1 1234 1234 0 -1 4194560 1 0 0 0 5 3 0 0 20 0 30 0 98765 1000 10", 98765, true},
		{"1234 (odd) name) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 1 2", 4242, true},
		{"garbage", 0, false},
		{"1 (x) S 1 2", 0, false},
	} {
		got, err := startTicks(tc.stat)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%q: %d %v, want %d ok=%v", tc.stat, got, err, tc.want, tc.ok)
		}
	}
}

// This test process is found by its command name and its start time lies
// between the test binary's start and now (plus the slack).
func TestProcessStartFindsARealProcess(t *testing.T) {
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Skip("no /proc")
	}
	all := func([]string) bool { return true }
	started, ok, err := processStart("/proc", strings.TrimSpace(string(comm)), all, time.Now)
	if err != nil || !ok {
		t.Fatalf("%v %v", ok, err)
	}
	if d := time.Since(started); d > time.Minute || d < -2*kubeletStartSlack {
		t.Errorf("started %v ago", d)
	}
	if _, ok, _ := processStart("/proc", "no-such-process-name", all, time.Now); ok {
		t.Error("found a process that does not exist")
	}
	none := func([]string) bool { return false }
	if _, ok, _ := processStart("/proc", strings.TrimSpace(string(comm)), none, time.Now); ok {
		t.Error("a process whose arguments do not match was taken")
	}
}

func TestFlagNames(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"kubelet", "--kubeconfig=/etc/kubernetes/kubelet.conf", "--config=/var/lib/kubelet/config.yaml"}, true},
		{[]string{"kubelet", "--kubeconfig", "/etc/kubernetes/kubelet.conf"}, true},
		{[]string{"kubelet", "--kubeconfig=/other/kubelet.conf"}, false},
		{[]string{"kubelet", "--kubeconfig"}, false},
		{[]string{"kubelet"}, false},
	} {
		if got := flagNames(tc.args, "kubeconfig", "/etc/kubernetes/kubelet.conf"); got != tc.want {
			t.Errorf("%v: %v", tc.args, got)
		}
	}
}
