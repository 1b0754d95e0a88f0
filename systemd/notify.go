// Package systemd is pkirenewd's glue to systemd: sd_notify for Type=notify
// (READY, STATUS, WATCHDOG, RELOADING, STOPPING) and structured logging into
// the journal, so `journalctl -u pkirenewd CERT=apiserver` works.
package systemd

import (
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sirupsen/logrus"
)

// Notifier sends sd_notify states. Outside systemd (no NOTIFY_SOCKET) it
// sends nothing and says nothing.
type Notifier struct {
	Log logrus.FieldLogger
}

// Notify sends the states in one datagram.
func (n Notifier) Notify(states ...string) {
	if len(states) == 0 {
		return
	}
	if ok, err := daemon.SdNotify(false, strings.Join(states, "\n")); err != nil && !ok && n.Log != nil {
		n.Log.WithError(err).Debug("sd_notify failed")
	}
}

// WatchdogInterval is half of the service's WatchdogSec, or zero when the
// watchdog is off (or not under systemd).
func WatchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0
	}
	return d / 2
}
