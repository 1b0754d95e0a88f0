package kubeconfig

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"

	"github.com/pkirenewd/pkirenewd/internal/fsread"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/store"
	"gopkg.in/yaml.v3"
)

// ErrNotACopy: the file carries no users entry with the old admin.conf
// certificate, so it is not a copy of it and is left alone.
var ErrNotACopy = errors.New("not a copy of admin.conf")

// ReadNoFollow reads a copy of admin.conf, which lies outside the managed
// directories: a symlink is not followed and only a bounded regular file is
// read.
func ReadNoFollow(p string) ([]byte, error) {
	return fsread.Regular(p, false)
}

// UsersCarrying returns the indexes of the users entries whose embedded
// client certificate is cert (DER), wherever they are in the list: in a
// merged kubeconfig admin.conf's user is often not the current one.
// Entries that do not embed a readable certificate are not ours.
func UsersCarrying(data, cert []byte) ([]int, error) {
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

// UpdateCopy gives every users entry of the copy at path that carries the
// old certificate the issued certificate and key. It returns how many.
func UpdateCopy(path string, old []byte, issued *pki.Issued) (int, error) {
	data, err := ReadNoFollow(path)
	if err != nil {
		return 0, err
	}
	idx, err := UsersCarrying(data, old)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	if len(idx) == 0 {
		return 0, ErrNotACopy
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
	if again, err := UsersCarrying(out, issued.Cert.Raw); err != nil || !slices.Equal(again, idx) {
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
