package renew

import (
	"bytes"
	"encoding/pem"
	"errors"
	"io/fs"
	"path/filepath"

	"github.com/sirupsen/logrus"
)

// updateAdminCopies follows a renewal of admin.conf to the copy admins
// make of it (`cp /etc/kubernetes/admin.conf ~/.kube/config`): a copy
// that carries the same client certificate as the old admin.conf would
// stop working with it. AdminCopy is updated in place (atomically, owner
// and mode kept, nothing else in it changed); copies matched by
// AdminCopyGlob are only reported. Neither is part of the transaction: a
// failure here is logged and leaves the copy as it was.
func (r *Renewer) updateAdminCopies(p *Plan) {
	var admin *Planned
	for i := range p.Items {
		if p.Items[i].Name == "admin.conf" && p.Items[i].Cert != nil && p.Items[i].Issued != nil {
			admin = &p.Items[i]
		}
	}
	if admin == nil || (r.opts.AdminCopy == "" && r.opts.AdminCopyGlob == "") {
		return
	}
	old := admin.Cert.Raw
	log := r.opts.Log.WithField("CERT", "admin.conf")
	if c := r.opts.AdminCopy; c != "" {
		switch err := updateCopy(c, old, admin.Issued); {
		case errors.Is(err, errNotACopy), errors.Is(err, fs.ErrNotExist):
		case err != nil:
			log.WithField("PATH", c).WithError(err).Warn("could not update the copy of admin.conf: copy the renewed admin.conf there")
		default:
			log.WithFields(logrus.Fields{"PATH": c, "ACTION": "renewed"}).Info("copy of admin.conf updated with the renewed credentials")
		}
	}
	if r.opts.AdminCopyGlob == "" {
		return
	}
	matches, _ := filepath.Glob(r.opts.AdminCopyGlob)
	for _, m := range matches {
		if m == r.opts.AdminCopy {
			continue
		}
		if data, err := readNoFollow(m); err == nil && carries(data, old) {
			log.WithField("PATH", m).Warn("holds the old admin.conf credentials, which the renewal replaced; not touched: copy the renewed admin.conf there")
		}
	}
}

var errNotACopy = errors.New("not a copy of admin.conf")

// readNoFollow reads a copy of admin.conf, which lies outside the managed
// directories: a symlink is not followed and only a bounded regular file is
// read.
func readNoFollow(p string) ([]byte, error) {
	return readRegular(p, false)
}

// carries reports whether a kubeconfig's current user has cert (DER).
func carries(data, cert []byte) bool {
	kc, err := parseKubeconfig(data)
	if err != nil || kc.CertData == nil {
		return false
	}
	b, _ := pem.Decode(kc.CertData)
	return b != nil && bytes.Equal(b.Bytes, cert)
}

func updateCopy(path string, old []byte, issued *Issued) error {
	data, err := readNoFollow(path)
	if err != nil {
		return err
	}
	if !carries(data, old) {
		return errNotACopy
	}
	kc, err := parseKubeconfig(data)
	if err != nil {
		return err
	}
	out, err := kc.withCredentials(issued.CertPEM, issued.KeyPEM)
	if err != nil {
		return err
	}
	meta, err := statMeta(path)
	if err != nil {
		return err
	}
	return writeAtomic(path, out, meta)
}
