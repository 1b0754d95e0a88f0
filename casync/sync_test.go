package casync_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/casync"
	"github.com/pkirenewd/pkirenewd/casync/casynctest"
)

// The apiserver is verified against the local CA certificate alone, at
// VerifyTime: a worker whose CA certificate has already ended still
// fetches from the same key's apiserver (where plain verification at now
// fails), and an apiserver under another CA is never believed.
func TestFetchVerifiesAgainstTheLocalCA(t *testing.T) {
	now := time.Now()
	valid, validKey := casynctest.NewCA(t, now.Add(24*time.Hour))
	expired, expiredKey := casynctest.NewCA(t, now.Add(-time.Hour))
	stranger, strangerKey := casynctest.NewCA(t, now.Add(24*time.Hour))
	clock := func() time.Time { return now }

	for _, tc := range []struct {
		name        string
		local       *x509.Certificate
		signer      *x509.Certificate
		key         any
		err, nowErr string // "": fetched
	}{
		{"the local CA is valid", valid, valid, validKey, "", ""},
		{"the local CA ended an hour ago", expired, expired, expiredKey, "", "certificate has expired or is not yet valid"},
		{"the apiserver is under another CA", valid, stranger, strangerKey, "certificate signed by unknown authority", "certificate signed by unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := casynctest.StartAPIServer(t, tc.signer, signer(tc.key), now.Add(24*time.Hour))
			api.Publish(casynctest.ClusterInfo(api.URL, tc.signer))
			got, err := casync.FetchClusterInfo(context.Background(), api.URL, tc.local, clock)
			check(t, "at VerifyTime", err, tc.err)
			if err == nil && !bytes.Contains(got, []byte("certificate-authority-data")) {
				t.Errorf("not cluster-info's kubeconfig:\n%s", got)
			}
			// Go's verification at now is what VerifyTime relaxes: the
			// case is real.
			_, err = fetchAtNow(t, api.URL, tc.local)
			check(t, "at now (plain Go)", err, tc.nowErr)
		})
	}
}

func check(t *testing.T, what string, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("%s: %v", what, err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Errorf("%s: error %v, want %q", what, err, want)
	}
}

type worker struct {
	api            *casynctest.APIServer
	ca             *x509.Certificate
	key            any
	caPath, kcPath string
	state          string
	restarts       int
	restartErr     error
}

func newWorker(t *testing.T, caEnd time.Time) *worker {
	ca, key := casynctest.NewCA(t, caEnd)
	w := &worker{ca: ca, key: key, state: filepath.Join(t.TempDir(), "state")}
	w.api = casynctest.StartAPIServer(t, ca, key, time.Now().Add(24*time.Hour))
	w.caPath, w.kcPath = casynctest.Worker(t, t.TempDir(), w.api.URL, ca, key, "w1")
	return w
}

func (w *worker) syncer(dry bool) *casync.Syncer {
	return &casync.Syncer{
		CACertPath: w.caPath, KubeconfigPath: w.kcPath, StateDir: w.state, DryRun: dry,
		Fetch: func(ctx context.Context, server string, local *x509.Certificate) ([]byte, error) {
			return casync.FetchClusterInfo(ctx, server, local, time.Now)
		},
		RestartKubelet: func(context.Context) error { w.restarts++; return w.restartErr },
		KubeletHealthy: func(context.Context) error { return nil },
		Report: func(ctx context.Context, fp string) (string, error) {
			return casync.ReportNode(ctx, w.kcPath, "", fp)
		},
	}
}

func (w *worker) files(t *testing.T) (ca, kc []byte) {
	t.Helper()
	ca, err := os.ReadFile(w.caPath)
	if err != nil {
		t.Fatal(err)
	}
	kc, err = os.ReadFile(w.kcPath)
	if err != nil {
		t.Fatal(err)
	}
	return ca, kc
}

func TestSyncWritesRestartsAndReports(t *testing.T) {
	w := newWorker(t, time.Now().Add(30*24*time.Hour))
	renewed := casynctest.Reissue(t, w.ca, signer(w.key), w.ca.NotAfter.AddDate(10, 0, 0))
	w.api.Publish(casynctest.ClusterInfo(w.api.URL, renewed))
	oldCA, oldKC := w.files(t)

	res, err := w.syncer(false).Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	newCA, newKC := w.files(t)
	if !bytes.Equal(newCA, casynctest.PEM(renewed)) {
		t.Errorf("ca.crt:\n%s", newCA)
	}
	if want := replaceB64(oldKC, oldCA, casynctest.PEM(renewed)); !bytes.Equal(newKC, want) {
		t.Errorf("kubelet.conf: more than the CA changed:\n%s", newKC)
	}
	if res.BackupDir == "" || w.restarts != 1 || !res.Restarted || res.Node != "w1" {
		t.Errorf("result %+v, %d restarts", res, w.restarts)
	}
	backup, _ := os.ReadFile(filepath.Join(res.BackupDir, "00-ca.crt"))
	if !bytes.Equal(backup, oldCA) {
		t.Errorf("backup of ca.crt: %q", backup)
	}
	p := w.api.Received()
	if len(p) != 1 || p[0].Node != "w1" || p[0].User != "system:node:w1" || p[0].Annotations[casync.AnnotationCA] != casync.Fingerprint(renewed) {
		t.Fatalf("patches %+v", p)
	}

	// Again: current, nothing written, no restart, reported again.
	res, err = w.syncer(false).Sync(context.Background())
	if err != nil || !res.Plan.Current() || res.BackupDir != "" || res.Restarted || w.restarts != 1 {
		t.Fatalf("second sync: %+v %v, %d restarts", res, err, w.restarts)
	}
	if len(w.api.Received()) != 2 {
		t.Errorf("not reported when current")
	}
}

// A refusal writes nothing: no file, no backup, no restart, no report.
func TestSyncRefusalWritesNothing(t *testing.T) {
	w := newWorker(t, time.Now().Add(30*24*time.Hour))
	for _, tc := range []struct {
		name, err string
		publish   []byte
	}{
		{"another key", "refused, nothing written: the published CA certificate has another public key", casynctest.ClusterInfo(w.api.URL, casynctest.Forge(t, w.ca, w.ca.NotAfter.AddDate(10, 0, 0)))},
		{"an older issue", "not after the old one", casynctest.ClusterInfo(w.api.URL, casynctest.Reissue(t, w.ca, signer(w.key), w.ca.NotAfter.Add(-time.Hour)))},
		{"no cluster-info", "404 Not Found", nil},
		{"two clusters", "cluster-info: 2 clusters", bytes.Replace(casynctest.ClusterInfo(w.api.URL, w.ca), []byte("contexts: null"), []byte("- {name: b, cluster: {server: x}}\ncontexts: null"), 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w.api.Publish(tc.publish)
			ca, kc := w.files(t)
			res, err := w.syncer(false).Sync(context.Background())
			check(t, "sync", err, tc.err)
			if res != nil {
				t.Errorf("result %+v", res)
			}
			ca2, kc2 := w.files(t)
			backups, _ := os.ReadDir(filepath.Join(w.state, "backups"))
			if !bytes.Equal(ca, ca2) || !bytes.Equal(kc, kc2) || len(backups) != 0 || w.restarts != 0 || len(w.api.Received()) != 0 {
				t.Errorf("something was done: files same %v %v, %d backups, %d restarts, %d reports", bytes.Equal(ca, ca2), bytes.Equal(kc, kc2), len(backups), w.restarts, len(w.api.Received()))
			}
		})
	}
}

func TestSyncDryRun(t *testing.T) {
	w := newWorker(t, time.Now().Add(30*24*time.Hour))
	renewed := casynctest.Reissue(t, w.ca, signer(w.key), w.ca.NotAfter.AddDate(10, 0, 0))
	w.api.Publish(casynctest.ClusterInfo(w.api.URL, renewed))
	ca, kc := w.files(t)
	res, err := w.syncer(true).Sync(context.Background())
	if err != nil || res.Plan.Current() || len(res.Plan.Changes) != 2 || len(res.Plan.Clusters) != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	ca2, kc2 := w.files(t)
	if _, err := os.Stat(w.state); !errors.Is(err, os.ErrNotExist) || !bytes.Equal(ca, ca2) || !bytes.Equal(kc, kc2) || w.restarts != 0 || len(w.api.Received()) != 0 {
		t.Errorf("dry run did something (state dir: %v)", err)
	}
}

// A kubelet that could not be restarted after the write is restarted by
// the next run, although the files are current by then.
func TestSyncOwesTheRestartUntilDone(t *testing.T) {
	w := newWorker(t, time.Now().Add(30*24*time.Hour))
	renewed := casynctest.Reissue(t, w.ca, signer(w.key), w.ca.NotAfter.AddDate(10, 0, 0))
	w.api.Publish(casynctest.ClusterInfo(w.api.URL, renewed))
	w.restartErr = errors.New("unit kubelet.service failed")
	_, err := w.syncer(false).Sync(context.Background())
	check(t, "first", err, "the CA certificate was written but restarting the kubelet failed: unit kubelet.service failed")
	if len(w.api.Received()) != 0 {
		t.Error("reported before the kubelet runs on the new CA")
	}
	w.restartErr = nil
	res, err := w.syncer(false).Sync(context.Background())
	if err != nil || !res.Plan.Current() || !res.Restarted || w.restarts != 2 || res.Node != "w1" {
		t.Fatalf("second: %+v %v, %d restarts", res, err, w.restarts)
	}
	res, err = w.syncer(false).Sync(context.Background())
	if err != nil || res.Restarted || w.restarts != 2 {
		t.Fatalf("third: %+v %v, %d restarts", res, err, w.restarts)
	}
}

func signer(k any) crypto.Signer { return k.(crypto.Signer) }

// replaceB64 is kc with the base64 of old replaced by that of new.
func replaceB64(kc, old, new []byte) []byte {
	b64 := base64.StdEncoding.EncodeToString
	return bytes.ReplaceAll(kc, []byte(b64(old)), []byte(b64(new)))
}

// fetchAtNow is a GET of cluster-info verified by Go at the real now,
// against local alone.
func fetchAtNow(t *testing.T, server string, local *x509.Certificate) ([]byte, error) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(local)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := c.Get(server + casync.ClusterInfoPath)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}
