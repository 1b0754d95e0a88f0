package main

import (
	"fmt"
	"io"
	"time"

	"github.com/pkirenewd/pkirenewd/renew"
)

// caHolderReport is one file that carries a CA certificate: the
// certificate it carries, and, when that is not the one on disk, the
// deadline by which it must have the new one (the old one's end).
type caHolderReport struct {
	CA       string     `json:"ca" yaml:"ca"`
	Kind     string     `json:"kind" yaml:"kind"`
	Path     string     `json:"path" yaml:"path"`
	Cluster  string     `json:"cluster,omitempty" yaml:"cluster,omitempty"`
	Serial   string     `json:"serial" yaml:"serial"`
	Current  bool       `json:"current" yaml:"current"`
	Deadline *time.Time `json:"deadline,omitempty" yaml:"deadline,omitempty"`
}

func caHolders(inv *renew.Inventory) []caHolderReport {
	var out []caHolderReport
	for _, h := range inv.Holders {
		ca := inv.CA(h.CA)
		r := caHolderReport{CA: h.CA, Kind: h.Kind, Path: h.Path, Cluster: h.Cluster, Serial: renew.CertSerial(h.Cert), Current: h.Current(ca)}
		if !r.Current {
			end := h.Cert.NotAfter.UTC()
			r.Deadline = &end
		}
		out = append(out, r)
	}
	return out
}

func oldHolders(hs []caHolderReport) int {
	n := 0
	for _, h := range hs {
		if !h.Current {
			n++
		}
	}
	return n
}

// printOldHolders lists the holders still on another issue of their CA,
// each with its deadline; the current ones are in -o json/yaml.
func printOldHolders(w io.Writer, hs []caHolderReport) error {
	for _, h := range hs {
		if h.Current {
			continue
		}
		where := h.Path
		if h.Cluster != "" {
			where += " (cluster " + h.Cluster + ")"
		}
		if _, err := fmt.Fprintf(w, "\nOLD CA %s: %s carries serial %s, which ends %s; it must have the CA certificate on disk before then\n",
			h.CA, where, h.Serial, h.Deadline.Format(dateFormat)); err != nil {
			return err
		}
	}
	return nil
}
