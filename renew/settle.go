package renew

import (
	"bytes"
	"fmt"
	"time"

	"github.com/pkirenewd/pkirenewd/internal/fsread"
	"github.com/pkirenewd/pkirenewd/kubeconfig"
	"github.com/pkirenewd/pkirenewd/pki"
	"github.com/pkirenewd/pkirenewd/store"
	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"
)

// pairOK reports whether the files of a renewed item hold a matching
// certificate and key: the .crt/.key pair, or a kubeconfig's embedded one.
func pairOK(it *Planned) error {
	if it.KeyPath == "" {
		data, err := fsread.Regular(it.CertPath, true)
		if err != nil {
			return err
		}
		kc, err := kubeconfig.Parse(data)
		if err != nil {
			return fmt.Errorf("%s: %w", it.CertPath, err)
		}
		if kc.CertData == nil {
			return nil // credentials in files: not ours to check here
		}
		return matching(kc.CertData, kc.KeyData, it.CertPath)
	}
	c, err := fsread.Regular(it.CertPath, true)
	if err != nil {
		return err
	}
	k, err := fsread.Regular(it.KeyPath, true)
	if err != nil {
		return err
	}
	return matching(c, k, it.CertPath)
}

func matching(certPEM, keyPEM []byte, name string) error {
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		return fmt.Errorf("%s: key: %w", name, err)
	}
	if !pki.KeyMatches(cert, key.Signer) {
		return fmt.Errorf("%s: certificate and key do not match", name)
	}
	return nil
}

// settle checks, after the commit, that every renewed pair on disk
// matches. Another writer that raced past the commit's check (kubeadm
// writes the key, then the certificate, in place) can leave our
// certificate with its key or the reverse. Such a writer finishes within
// moments, so a mismatch is looked at again a few times; one that stays
// is repaired by writing our pair again, whole. The pair on disk is then
// always one writer's, never a mix.
func (r *Renewer) settle(p *Plan) error {
	sleep := r.opts.Sleep
	if sleep == nil {
		sleep = clock.RealClock{}.Sleep
	}
	for i := range p.Items {
		it := &p.Items[i]
		err := pairOK(it)
		for try := 0; err != nil && try < 5; try++ {
			sleep(100 * time.Millisecond)
			err = pairOK(it)
		}
		if err == nil {
			continue
		}
		r.opts.Log.WithFields(logrus.Fields{"CERT": it.Name, "PATH": it.CertPath, "ACTION": "repair"}).WithError(err).
			Warn("another writer interleaved with this renewal: writing this renewal's pair again")
		for _, c := range it.Changes {
			cur, rerr := fsread.Regular(c.Path, true)
			if rerr == nil && bytes.Equal(cur, c.Data) {
				continue
			}
			meta, merr := store.StatMeta(c.Path)
			if merr != nil {
				return merr
			}
			if werr := store.WriteAtomic(c.Path, c.Data, meta); werr != nil {
				return fmt.Errorf("repairing %s: %w", c.Path, werr)
			}
		}
		if err := pairOK(it); err != nil {
			return fmt.Errorf("%s: still mismatched after the repair: %w", it.Name, err)
		}
	}
	return nil
}
