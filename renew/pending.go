package renew

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/pkirenewd/pkirenewd/store"
)

// PendingRestart records the restarts a committed renewal still owes. It
// is written before the first component is stopped and shrinks as each
// comes back healthy, so a roll cut short — by a crash, SIGTERM, a lease
// held elsewhere or an unhealthy etcd peer — is finished by the next run
// instead of leaving components on certificates they never loaded.
type PendingRestart struct {
	// Components still to restart, in restart order.
	Components []string `json:"components"`
	// Kubelet: kubelet.conf was renewed and the kubelet not yet restarted.
	Kubelet bool `json:"kubelet,omitempty"`
	// BackupDir holds the files the renewal replaced; a component that
	// does not come back healthy on the new files rolls back to them.
	BackupDir string `json:"backupDir,omitempty"`
	// Recovering: the renewal replaced expired certificates (day 366), so
	// the roll may go ahead without the cluster lease.
	Recovering bool      `json:"recovering,omitempty"`
	Since      time.Time `json:"since"`
}

// Empty reports whether nothing is owed.
func (p *PendingRestart) Empty() bool {
	return p == nil || (len(p.Components) == 0 && !p.Kubelet)
}

// Merge adds what q owes to p, keeping the order of order (components in
// neither stay at the end in their own order). The newer backup wins (a
// restore goes back to the files before the latest renewal only); q
// without one keeps p's.
func (p *PendingRestart) Merge(q *PendingRestart, order func([]string) []string) *PendingRestart {
	if p.Empty() {
		return q
	}
	if q.Empty() {
		return p
	}
	seen := map[string]bool{}
	var all []string
	for _, c := range append(append([]string{}, p.Components...), q.Components...) {
		if !seen[c] {
			seen[c] = true
			all = append(all, c)
		}
	}
	if order != nil {
		all = order(all)
	}
	backup := q.BackupDir
	if backup == "" {
		backup = p.BackupDir
	}
	return &PendingRestart{
		Components: all, Kubelet: p.Kubelet || q.Kubelet, BackupDir: backup,
		Recovering: p.Recovering || q.Recovering, Since: p.Since,
	}
}

// Done returns p without component c.
func (p *PendingRestart) Done(c string) *PendingRestart {
	q := *p
	q.Components = nil
	for _, x := range p.Components {
		if x != c {
			q.Components = append(q.Components, x)
		}
	}
	return &q
}

func pendingPath(stateDir string) string { return filepath.Join(stateDir, "pending-restart.json") }

// LoadPending reads the pending restarts of stateDir; none is (nil, nil).
func LoadPending(stateDir string) (*PendingRestart, error) {
	p := pendingPath(stateDir)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var pr PendingRestart
	if err := json.Unmarshal(data, &pr); err != nil {
		return nil, fmt.Errorf("%s: %w (delete it to drop the owed restarts)", p, err)
	}
	return &pr, nil
}

// SavePending records p atomically; an empty p removes the record.
func SavePending(stateDir string, p *PendingRestart) error {
	path := pendingPath(stateDir)
	if p.Empty() {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return store.SyncDir(stateDir)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return err
	}
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	if err := store.WriteAtomic(path, append(data, '\n'), store.FileMeta{Mode: 0o600, UID: -1, GID: -1}); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
