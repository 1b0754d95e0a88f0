package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestWorkersInCheck(t *testing.T) {
	for _, tc := range []struct {
		name    string
		workers []workerReport
		old     int
		want    []string
	}{
		{"none", nil, 0, nil},
		{"all current", []workerReport{{Node: "w1", Reported: "aa", Current: true}}, 0, nil},
		{"one on the old CA", []workerReport{{Node: "w1", Reported: "aa", Current: true}, {Node: "w2", Reported: "bb"}}, 1,
			[]string{"OLD CA ca: worker node w2 reports CA bb"}},
		{"two never reported", []workerReport{{Node: "w1"}, {Node: "w2"}}, 0, []string{"NOTE 2 worker node(s) never reported"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := printWorkers(&b, tc.workers); err != nil {
				t.Fatal(err)
			}
			if got := oldWorkers(tc.workers); got != tc.old {
				t.Errorf("old workers %d, want %d", got, tc.old)
			}
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, b.String())
				}
			}
			if tc.want == nil && b.Len() > 0 {
				t.Errorf("output %q, want none", b.String())
			}
		})
	}
}
