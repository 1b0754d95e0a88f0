package casync_test

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"strings"
	"testing"
	"time"

	"github.com/pkirenewd/pkirenewd/casync"
	"github.com/pkirenewd/pkirenewd/casync/casynctest"
)

func TestAccept(t *testing.T) {
	end := time.Now().Add(30 * 24 * time.Hour)
	local, key := casynctest.NewCA(t, end)
	later := end.Add(10 * 365 * 24 * time.Hour)
	otherCA, otherKey := casynctest.NewCA(t, later)

	renamed := casynctest.Template(local, later)
	renamed.RawSubject, _ = asn1.Marshal(pkix.Name{CommonName: "kubernetes-2"}.ToRDNSequence())
	newSKI := casynctest.Template(local, later)
	newSKI.SubjectKeyId = []byte{9, 9}
	leaf := casynctest.Template(local, later)
	leaf.IsCA, leaf.BasicConstraintsValid, leaf.KeyUsage = false, false, x509.KeyUsageDigitalSignature
	// The trusted key in a certificate signed by another CA's key.
	notSelf := casynctest.Template(local, later)

	tests := []struct {
		name      string
		published *x509.Certificate
		err       string // "": accepted
	}{
		{"the same certificate: current", local, ""},
		{"re-issued with the same key, ending later", casynctest.Reissue(t, local, key, later), ""},
		{"another key, same subject and SKI", casynctest.Forge(t, local, later), "another public key"},
		{"another CA altogether", otherCA, "another public key"},
		{"same key, another subject", casynctest.Sign(t, renamed, renamed, key.Public(), key), "another subject (CN=kubernetes-2, was CN=kubernetes)"},
		{"same key, another SKI", casynctest.Sign(t, newSKI, newSKI, key.Public(), key), "another SubjectKeyId (0909, was 01020304)"},
		{"same key, not a CA", casynctest.Sign(t, leaf, leaf, key.Public(), key), "not a CA"},
		{"the trusted key signed by another", casynctest.Sign(t, notSelf, otherCA, key.Public(), otherKey), "not self-signed"},
		{"ending earlier", casynctest.Reissue(t, local, key, end.Add(-time.Hour)), "not after the old one"},
	}
	// Ending at the same instant (two control-plane nodes renewed in one
	// second): the issue whose bytes sort higher is the later one, on
	// every node alike.
	same := casynctest.Reissue(t, local, key, end)
	if err := casync.Accept(local, same); (err == nil) != (bytes.Compare(same.Raw, local.Raw) > 0) {
		t.Errorf("an issue ending at the same instant: %v", err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := casync.Accept(local, tc.published)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want %q", err, tc.err)
			}
		})
	}
}

func TestVerifyTime(t *testing.T) {
	end := time.Date(2036, 5, 1, 12, 0, 0, 0, time.UTC)
	ca, _ := casynctest.NewCA(t, end)
	tests := []struct {
		name      string
		now, want time.Time
	}{
		{"valid: now", end.Add(-time.Hour), end.Add(-time.Hour)},
		{"a second before the end: now", end.Add(-time.Second), end.Add(-time.Second)},
		{"at the end: just before it", end, end.Add(-time.Second)},
		{"expired a year ago: just before the end", end.Add(365 * 24 * time.Hour), end.Add(-time.Second)},
	}
	for _, tc := range tests {
		if got := casync.VerifyTime(ca, tc.now); !got.Equal(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestReportedCA(t *testing.T) {
	ca, _ := casynctest.NewCA(t, time.Now().Add(time.Hour))
	fp := casync.Fingerprint(ca)
	if len(fp) != 64 || strings.ToLower(fp) != fp {
		t.Errorf("fingerprint %q: want 64 lower-case hex digits", fp)
	}
	if got := casync.ReportedCA(map[string]string{casync.AnnotationCA: fp, "other": "x"}); got != fp {
		t.Errorf("ReportedCA = %q", got)
	}
	if got := casync.ReportedCA(nil); got != "" {
		t.Errorf("no annotations: %q", got)
	}
}
