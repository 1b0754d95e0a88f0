package renew

import (
	"errors"
	"io/fs"
	"path/filepath"

	"github.com/pkirenewd/pkirenewd/kubeconfig"
	"github.com/sirupsen/logrus"
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
		switch n, err := kubeconfig.UpdateCopy(c, old, admin.Issued); {
		case errors.Is(err, fs.ErrNotExist):
			l.Debug("no copy of admin.conf there")
		case errors.Is(err, kubeconfig.ErrNotACopy):
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
		data, err := kubeconfig.ReadNoFollow(m)
		if err != nil {
			continue
		}
		if idx, err := kubeconfig.UsersCarrying(data, old); err == nil && len(idx) > 0 {
			log.WithField("PATH", m).Warn("holds the old admin.conf credentials, which the renewal replaced; not touched: copy the renewed admin.conf there")
		}
	}
}
