package cplane

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPollStopsAtFirstSuccess(t *testing.T) {
	tries := 0
	err := Poller{Ctx: context.Background()}.Poll(time.Minute, time.Millisecond, "x", func(context.Context) error {
		if tries++; tries < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || tries != 3 {
		t.Errorf("err %v after %d tries, want nil after 3", err, tries)
	}
}

func TestPollNamesTheCauseAndTheLastError(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("interrupted by interrupt"))
	err := Poller{Ctx: ctx}.Poll(time.Minute, time.Millisecond, "etcd healthy", func(context.Context) error { return errors.New("refused") })
	if err == nil || !strings.Contains(err.Error(), "etcd healthy: interrupted by interrupt") {
		t.Errorf("cancelled: %v", err)
	}

	err = Poller{Ctx: context.Background()}.Poll(time.Nanosecond, time.Hour, "readyz", func(context.Context) error { return errors.New("503") })
	if err == nil || !strings.Contains(err.Error(), "readyz: not within 1ns") {
		t.Errorf("timeout: %v", err)
	}
}

func TestPollGivesUpWhenAChildIsGone(t *testing.T) {
	tries := 0
	gone := errors.New("the kubelet exited")
	err := Poller{Ctx: context.Background(), Gone: func() error {
		if tries > 1 {
			return gone
		}
		return nil
	}}.Poll(time.Minute, time.Millisecond, "pods", func(context.Context) error { tries++; return errors.New("no pod") })
	if !errors.Is(err, gone) || tries != 2 {
		t.Errorf("err %v after %d tries, want the kubelet's exit after 2", err, tries)
	}
}
