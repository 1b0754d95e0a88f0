package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdGuard lists the members through the local etcd with kubeadm's
// healthcheck client certificate and asks each other member for its
// status directly.
type EtcdGuard struct {
	// Endpoint is the local member's client URL (https://127.0.0.1:2379).
	Endpoint string
	// CAFile, CertFile, KeyFile: etcd/ca.crt, etcd/healthcheck-client.{crt,key}.
	CAFile, CertFile, KeyFile string
}

var _ Guard = (*EtcdGuard)(nil)

// Member is one etcd member as the guard judged it.
type Member struct {
	Name     string
	ID       uint64
	URLs     []string
	Learner  bool
	Err      error // nil: healthy
	IsLeader bool
}

// Unhealthy picks the members other than self that would make restarting
// self unsafe: any voting member that did not answer or has no leader.
// Learners do not vote, so they never block.
func Unhealthy(members []Member, self uint64) []Member {
	var bad []Member
	for _, m := range members {
		if m.ID == self || m.Learner {
			continue
		}
		if m.Err != nil {
			bad = append(bad, m)
		}
	}
	sort.Slice(bad, func(i, j int) bool { return bad[i].Name < bad[j].Name })
	return bad
}

func (g *EtcdGuard) tls() (*tls.Config, error) {
	ca, err := os.ReadFile(g.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%s: no certificate", g.CAFile)
	}
	pair, err := tls.LoadX509KeyPair(g.CertFile, g.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", g.CertFile, err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// Members lists the cluster through the local member and checks each
// member's status. It returns the local member's ID.
func (g *EtcdGuard) Members(ctx context.Context) ([]Member, uint64, error) {
	tc, err := g.tls()
	if err != nil {
		return nil, 0, fmt.Errorf("etcd client credentials: %w", err)
	}
	deadline, ok := ctx.Deadline()
	dial := 5 * time.Second
	if ok {
		// The context's deadline is on the real clock, whatever
		// clock the caller runs on.
		dial = time.Until(deadline) // clock: see above
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{g.Endpoint}, TLS: tc, DialTimeout: dial, Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, 0, fmt.Errorf("etcd %s: %w", g.Endpoint, err)
	}
	defer cli.Close()
	list, err := cli.MemberList(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("listing etcd members through %s: %w", g.Endpoint, err)
	}
	self := list.Header.MemberId
	var out []Member
	for _, m := range list.Members {
		mem := Member{Name: m.Name, ID: m.ID, URLs: m.ClientURLs, Learner: m.IsLearner}
		if mem.Name == "" {
			mem.Name = fmt.Sprintf("%x (not started)", m.ID)
		}
		mem.Err = memberStatus(ctx, cli, m.ClientURLs, m.ID)
		out = append(out, mem)
	}
	return out, self, nil
}

func memberStatus(ctx context.Context, cli *clientv3.Client, urls []string, id uint64) error {
	if len(urls) == 0 {
		return errors.New("has not started (no client URL)")
	}
	var errs []string
	for _, u := range urls {
		st, err := cli.Status(ctx, u)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", u, err))
			continue
		}
		if st.Leader == 0 {
			return fmt.Errorf("%s: no leader", u)
		}
		if len(st.Errors) > 0 {
			return fmt.Errorf("%s: %s", u, strings.Join(st.Errors, "; "))
		}
		return nil
	}
	return errors.New(strings.Join(errs, "; "))
}

// OthersHealthy implements Guard.
func (g *EtcdGuard) OthersHealthy(ctx context.Context) error {
	members, self, err := g.Members(ctx)
	if err != nil {
		return err
	}
	bad := Unhealthy(members, self)
	if len(bad) == 0 {
		return nil
	}
	var parts []string
	for _, m := range bad {
		parts = append(parts, fmt.Sprintf("member %s is unhealthy (%v)", m.Name, m.Err))
	}
	return errors.New(strings.Join(parts, "; "))
}
