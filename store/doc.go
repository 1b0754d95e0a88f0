// Package store is the crash-safe file store: it replaces a set of files
// as one transaction (journal, staged files beside their targets, backups),
// checks first that every file can be replaced (preflight: room, immutable
// or append-only flags, mounts), keeps what the files were (owner, mode,
// ACL, extended attributes), finishes or undoes an interrupted transaction,
// and serializes pkirenewd processes with a lock. It knows nothing of
// certificates: a renewal today, and the CA transaction to come, hand it
// paths and bytes, so what it promises can be read and tested on its own.
package store

// Transactions is all a writer of the PKI needs of the store, and all the
// renewer uses: commit a set of changes, finish or undo what a crash
// interrupted, clean up staged files left behind, and put a backup back.
// *Store implements it; the CA transaction of the next issue can use it too.
type Transactions interface {
	// Commit replaces every file of changes, or none.
	Commit(changes []Change) (*Result, error)
	// Recover rolls an interrupted transaction forward or back.
	Recover() (Recovery, string, error)
	// RemoveStrays removes staged files no journal accounts for.
	RemoveStrays() ([]string, error)
	// Restore puts back the files of a finished transaction from its backup.
	Restore(backupDir string) (*Result, error)
	// Create writes a file that does not exist yet, whole or not at all.
	Create(path string, data []byte) error
}

var _ Transactions = (*Store)(nil)
