package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/pkirenewd/pkirenewd/casync"

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

// workerReport is a worker node's report of its cluster CA (casync): the
// fingerprint it reported, and whether that is the CA on disk.
type workerReport struct {
	Node     string `json:"node" yaml:"node"`
	Reported string `json:"reported,omitempty" yaml:"reported,omitempty"`
	Current  bool   `json:"current" yaml:"current"`
}

// workerReports asks the API which CA each worker reported (nil when the
// API cannot be asked: said at debug, as the lease's own errors are
// what the operator sees).
func workerReports(ctx context.Context, o *options, inv *renew.Inventory) []workerReport {
	ca := inv.CA("ca")
	b, err := caBoard(o.cfg)
	if ca == nil || ca.Cert == nil || b == nil || err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	nodes, err := b.WorkerCAs(ctx, casync.AnnotationCA)
	if err != nil {
		o.log.WithError(err).Debug("the worker nodes' CA reports could not be read")
		return nil
	}
	want := casync.Fingerprint(ca.Cert)
	out := make([]workerReport, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, workerReport{Node: n.Node, Reported: n.Reported, Current: n.Reported == want})
	}
	return out
}

// printWorkers lists the workers that reported another CA (old holders,
// check exits 1) and says how many never reported (no `ca sync` there:
// they must be brought along by hand before the old CA ends).
func printWorkers(w io.Writer, ws []workerReport) error {
	silent := 0
	for _, r := range ws {
		switch {
		case r.Reported == "":
			silent++
		case !r.Current:
			if _, err := fmt.Fprintf(w, "\nOLD CA ca: worker node %s reports CA %s, not the one on disk: run `pkirenewd ca sync` there (or enable pkirenewd-ca-sync.timer)\n", r.Node, r.Reported); err != nil {
				return err
			}
		}
	}
	if silent > 0 {
		_, err := fmt.Fprintf(w, "\nNOTE %d worker node(s) never reported their CA (pkirenewd ca sync not run there): after a CA renewal, bring their ca.crt and kubelet.conf along\n", silent)
		return err
	}
	return nil
}

func oldWorkers(ws []workerReport) int {
	n := 0
	for _, r := range ws {
		if r.Reported != "" && !r.Current {
			n++
		}
	}
	return n
}
