package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/cri"
	"github.com/pkirenewd/pkirenewd/cri/critest"
	"github.com/pkirenewd/pkirenewd/reconcile"
)

// What check and the daemon see of the running components, over the whole
// matrix: the runtime reachable, unreachable or ambiguous about one
// component; restarts on or off; every component fresh, one stale or all
// stale. Whatever is stale is seen stale, whatever cannot be seen is named
// unseen, and the two together are never empty when anything is stale:
// "cannot tell" is never "fine".
func TestObservationMatrix(t *testing.T) {
	all := []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
	for _, runtime := range []string{"reachable", "unreachable", "ambiguous"} {
		for _, restarts := range []bool{true, false} {
			for _, stale := range []string{"fresh", "one stale", "all stale"} {
				name := fmt.Sprintf("%s/restarts %v/%s", runtime, restarts, stale)
				t.Run(name, func(t *testing.T) {
					n := newTestNode(t, 0, time.Time{})
					// The files were written just now: a pod started
					// before that runs on older credentials.
					started := map[string]time.Time{}
					for _, c := range all {
						started[c] = time.Now().Add(time.Hour)
					}
					switch stale {
					case "one stale":
						started["kube-scheduler"] = time.Now().Add(-time.Hour)
					case "all stale":
						for _, c := range all {
							started[c] = time.Now().Add(-time.Hour)
						}
					}
					rebuildPods(n, started)
					if runtime == "ambiguous" {
						n.rt.AddStaticPod("kube-scheduler") // a second Ready sandbox
					}
					e := n.engine(t)
					e.RestartPolicy = cri.PolicyAll
					connect := e.Connect
					if runtime == "unreachable" {
						connect = func(context.Context) (*cri.Restarter, func(), error) {
							return nil, nil, errors.New("dial unix /run/containerd/containerd.sock: connect: connection refused")
						}
					}
					e.Connect, e.ConnectToLook = connect, nil
					if !restarts {
						e.Connect, e.ConnectToLook = nil, connect
					}
					obs := e.Observe(context.Background())

					var wantStale, wantUnseen []string
					for _, c := range all {
						switch {
						case runtime == "unreachable", runtime == "ambiguous" && c == "kube-scheduler":
							wantUnseen = append(wantUnseen, c)
						case started[c].Before(time.Now()):
							wantStale = append(wantStale, c)
						}
					}
					var gotStale, gotUnseen []string
					for _, s := range obs.Stale {
						gotStale = append(gotStale, s.Component)
					}
					for _, u := range obs.Unseen {
						gotUnseen = append(gotUnseen, u.Component)
						if u.Err == nil || u.Err.Error() == "" {
							t.Errorf("%s unseen without a reason", u.Component)
						}
					}
					sort.Strings(gotStale)
					if strings.Join(gotStale, ",") != strings.Join(wantStale, ",") || strings.Join(gotUnseen, ",") != strings.Join(wantUnseen, ",") {
						t.Errorf("stale %v unseen %v, want stale %v unseen %v (%v)", gotStale, gotUnseen, wantStale, wantUnseen, reconcile.Blind(obs.Unseen))
					}
					if stale != "fresh" && len(obs.Stale)+len(obs.Unseen) == 0 {
						t.Error("something is stale and the observation says nothing")
					}
					look := e.Look()
					if restarts && len(look.Stale) > 0 || !restarts && len(look.Owed) > 0 {
						t.Errorf("restarts %v: owed %v, reported only %v", restarts, look.Owed, look.Stale)
					}
				})
			}
		}
	}
}

// rebuildPods replaces the node's pods with ones started at the given
// times.
func rebuildPods(n *testNode, started map[string]time.Time) {
	n.rt = critest.NewRuntime()
	n.prober.rt = n.rt
	for _, c := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		at := started[c]
		n.rt.Now = func() time.Time { return at }
		n.rt.AddStaticPod(c)
	}
}
