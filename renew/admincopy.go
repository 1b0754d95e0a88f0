package renew

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"

	"github.com/pkirenewd/pkirenewd/internal/fsread"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/store"
	"github.com/sirupsen/logrus"
	"gopkg.in/yaml.v3"
)

// updateAdminCopies follows a renewal of admin.conf to the copies admins
// make of it (`cp /etc/kubernetes/admin.conf ~/.kube/config`, or merged
// with other clusters' kubeconfigs): a users entry that carries the same
// client certificate as the old admin.conf would stop working with it.
// Each of AdminCopies is updated in place (atomically, owner and mode
// kept, every such users entry given the new certificate and key, nothing
// else changed); copies matched by AdminCopyGlob are only reported.
// Neither is part of the transaction: a copy that cannot be updated is
// logged with its path and left as it was, and never fails the renewal.
func (r *Renewer) updateAdminCopies(p *Plan) {
	var admin *Planned
	for i := range p.Items {
		if p.Items[i].Name == "admin.conf" && p.Items[i].Cert != nil && p.Items[i].Issued != nil {
			admin = &p.Items[i]
		}
	}
	if admin == nil || (len(r.opts.AdminCopies) == 0 && r.opts.AdminCopyGlob == "") {
		return
	}
	old := admin.Cert.Raw
	log := r.opts.Log.WithField("CERT", "admin.conf")
	configured := map[string]bool{}
	for _, c := range r.opts.AdminCopies {
		if configured[c] {
			continue
		}
		configured[c] = true
		l := log.WithField("PATH", c)
		switch n, err := updateCopy(c, old, admin.Issued); {
		case errors.Is(err, fs.ErrNotExist):
			l.Debug("no copy of admin.conf there")
		case errors.Is(err, errNotACopy):
			l.Debug("does not carry the old admin.conf credentials: left as it is")
		case err != nil:
			l.WithError(err).Warn("could not update the copy of admin.conf: copy the renewed admin.conf there")
		default:
			l.WithFields(logrus.Fields{"ACTION": "renewed", "USERS": n}).Info("copy of admin.conf updated with the renewed credentials")
		}
	}
	if r.opts.AdminCopyGlob == "" {
		return
	}
	matches, _ := filepath.Glob(r.opts.AdminCopyGlob)
	for _, m := range matches {
		if configured[m] {
			continue
		}
		data, err := readNoFollow(m)
		if err != nil {
			continue
		}
		if idx, err := usersCarrying(data, old); err == nil && len(idx) > 0 {
			log.WithField("PATH", m).Warn("holds the old admin.conf credentials, which the renewal replaced; not touched: copy the renewed admin.conf there")
		}
	}
}

var errNotACopy = errors.New("not a copy of admin.conf")

// readNoFollow reads a copy of admin.conf, which lies outside the managed
// directories: a symlink is not followed and only a bounded regular file is
// read.
func readNoFollow(p string) ([]byte, error) {
	return fsread.Regular(p, false)
}

// usersCarrying returns the indexes of the users entries whose embedded
// client certificate is cert (DER), wherever they are in the list: in a
// merged kubeconfig admin.conf's user is often not the current one.
// Entries that do not embed a readable certificate are not ours.
func usersCarrying(data, cert []byte) ([]int, error) {
	doc, err := parseDoc(data)
	if err != nil {
		return nil, err
	}
	list := mapGet(doc.Content[0], "users")
	if list == nil || list.Kind != yaml.SequenceNode {
		return nil, nil
	}
	var idx []int
	for i, e := range list.Content {
		n := mapGet(mapGet(e, "user"), "client-certificate-data")
		if n == nil {
			continue
		}
		certPEM, err := decodeB64(n)
		if err != nil {
			continue
		}
		if b, _ := pem.Decode(certPEM); b != nil && bytes.Equal(b.Bytes, cert) {
			idx = append(idx, i)
		}
	}
	return idx, nil
}

// updateCopy gives every users entry of the copy at path that carries the
// old certificate the issued certificate and key. It returns how many.
func updateCopy(path string, old []byte, issued *pki.Issued) (int, error) {
	data, err := readNoFollow(path)
	if err != nil {
		return 0, err
	}
	idx, err := usersCarrying(data, old)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	if len(idx) == 0 {
		return 0, errNotACopy
	}
	creds := map[int]credentials{}
	for _, i := range idx {
		creds[i] = credentials{CertPEM: issued.CertPEM, KeyPEM: issued.KeyPEM}
	}
	out, err := rewriteCredentials(data, creds)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	// Read back as the next kubectl will: the same entries, now with the
	// renewed certificate.
	if again, err := usersCarrying(out, issued.Cert.Raw); err != nil || !slices.Equal(again, idx) {
		return 0, fmt.Errorf("%s: the rewritten copy does not carry the renewed certificate where the old one was", path)
	}
	meta, err := store.StatMeta(path)
	if err != nil {
		return 0, err
	}
	if err := store.WriteAtomic(path, out, meta); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return len(idx), nil
}
