package systemd

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// Running reports whether systemd is the init system (sd_booted).
func Running() bool {
	st, err := os.Stat("/run/systemd/system")
	return err == nil && st.IsDir()
}

// RestartUnit restarts a unit through systemd's D-Bus API and waits until
// the job is done and the unit is active again (or ctx ends).
func RestartUnit(ctx context.Context, unit string) error {
	conn, err := sddbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return fmt.Errorf("systemd D-Bus: %w", err)
	}
	defer conn.Close()
	done := make(chan string, 1)
	if _, err := conn.RestartUnitContext(ctx, unit, "replace", done); err != nil {
		return fmt.Errorf("restart %s: %w", unit, err)
	}
	select {
	case result := <-done:
		if result != "done" {
			return fmt.Errorf("restart %s: job %s", unit, result)
		}
	case <-ctx.Done():
		return fmt.Errorf("restart %s: %w", unit, ctx.Err())
	}
	for {
		p, err := conn.GetUnitPropertyContext(ctx, unit, "ActiveState")
		if err != nil {
			return fmt.Errorf("%s state: %w", unit, err)
		}
		state := strings.Trim(p.Value.String(), `"`)
		switch state {
		case "active":
			return nil
		case "failed", "inactive":
			return fmt.Errorf("%s is %s after the restart", unit, state)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not active (%s): %w", unit, state, ctx.Err())
		case <-time.After(200 * time.Millisecond): // clock: systemd's job runs on the real clock; this only paces the questions
		}
	}
}

// MainPID is the main process of a unit; 0 when it does not run.
func MainPID(ctx context.Context, unit string) (int, error) {
	conn, err := sddbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return 0, fmt.Errorf("systemd D-Bus: %w", err)
	}
	defer conn.Close()
	p, err := conn.GetServicePropertyContext(ctx, unit, "MainPID")
	if err != nil {
		return 0, fmt.Errorf("%s MainPID: %w", unit, err)
	}
	pid, ok := p.Value.Value().(uint32)
	if !ok {
		return 0, fmt.Errorf("%s MainPID: unexpected %s", unit, p.Value)
	}
	return int(pid), nil
}
