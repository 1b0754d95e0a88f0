package systemd

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"
)

// UnderJournal reports whether stderr is connected to the journal
// (JOURNAL_STREAM names it), i.e. the process runs as a systemd service.
func UnderJournal() bool {
	ok, err := journal.StderrIsJournalStream()
	return err == nil && ok && journal.Enabled()
}

// JournalHook sends every entry to the journal with its priority and its
// fields as journal fields (upper case, as journalctl matches them).
type JournalHook struct{}

var _ logrus.Hook = JournalHook{}

// Levels implements logrus.Hook.
func (JournalHook) Levels() []logrus.Level { return logrus.AllLevels }

// Fire implements logrus.Hook.
func (JournalHook) Fire(e *logrus.Entry) error {
	vars := map[string]string{"SYSLOG_IDENTIFIER": "pkirenewd"}
	for k, v := range e.Data {
		name := fieldName(k)
		if name == "" {
			continue
		}
		if err, ok := v.(error); ok {
			vars[name] = err.Error()
			continue
		}
		vars[name] = fmt.Sprint(v)
	}
	msg := e.Message
	if err, ok := e.Data[logrus.ErrorKey].(error); ok {
		msg += ": " + err.Error()
	}
	prio := priority(e.Level)
	// An entry may raise its own priority above what logrus levels
	// express (crit for an expired control plane): field PRIORITY.
	if p, ok := e.Data["PRIORITY"].(int); ok && p >= int(journal.PriEmerg) && p <= int(journal.PriDebug) {
		prio = journal.Priority(p)
		delete(vars, "PRIORITY")
	}
	return journal.Send(msg, prio, vars)
}

// fieldName turns a logrus key into a journal field name: upper case,
// letters, digits and underscores, not starting with an underscore.
func fieldName(k string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(k) {
		switch {
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
			b.WriteRune(r)
		default:
			b.WriteRune('_')
		}
	}
	return strings.TrimLeft(b.String(), "_0123456789")
}

func priority(l logrus.Level) journal.Priority {
	switch l {
	case logrus.PanicLevel:
		return journal.PriEmerg
	case logrus.FatalLevel:
		return journal.PriCrit
	case logrus.ErrorLevel:
		return journal.PriErr
	case logrus.WarnLevel:
		return journal.PriWarning
	case logrus.InfoLevel:
		return journal.PriInfo
	default:
		return journal.PriDebug
	}
}

// SetupLogging points the logger at the journal when running under it
// (format "auto"), at stderr as JSON ("json"), or at stderr as text.
func SetupLogging(log *logrus.Logger, format string, stderr io.Writer) error {
	switch format {
	case "auto", "":
		if stderr == os.Stderr && UnderJournal() {
			log.SetOutput(io.Discard)
			log.AddHook(JournalHook{})
			return nil
		}
		log.SetOutput(stderr)
		log.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	case "json":
		log.SetOutput(stderr)
		log.SetFormatter(&logrus.JSONFormatter{})
	case "text":
		log.SetOutput(stderr)
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	default:
		return fmt.Errorf("--log-format: unknown format %q (auto, text, json)", format)
	}
	return nil
}
