package kubeconfig

import (
	"bytes"
	"fmt"
	"slices"

	"gopkg.in/yaml.v3"
)

// ClusterCA is one clusters entry of a kubeconfig and the CA it embeds.
type ClusterCA struct {
	// Name is the entry's name ("" in kubeadm's cluster-info).
	Name   string
	Server string
	// Data is certificate-authority-data decoded (PEM), nil when the
	// entry has none (a certificate-authority file, or nothing).
	Data []byte
}

// ClusterCAs lists every clusters entry, in order, with the CA it embeds.
// Unlike Parse it needs no context and no user: the kubeconfig kubeadm
// publishes in kube-public/cluster-info has neither.
func ClusterCAs(raw []byte) ([]ClusterCA, error) {
	doc, err := parseDoc(raw)
	if err != nil {
		return nil, err
	}
	list := mapGet(doc.Content[0], "clusters")
	if list == nil || list.Kind != yaml.SequenceNode {
		return nil, nil
	}
	out := make([]ClusterCA, 0, len(list.Content))
	for _, e := range list.Content {
		cl := mapGet(e, "cluster")
		c := ClusterCA{Name: scalar(mapGet(e, "name")), Server: scalar(mapGet(cl, "server"))}
		if n := mapGet(cl, "certificate-authority-data"); n != nil {
			if c.Data, err = decodeB64(n); err != nil {
				return nil, fmt.Errorf("cluster %q certificate-authority-data: %w", c.Name, err)
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// WithClusterCA returns raw with the certificate-authority-data of every
// clusters entry for which replace(its decoded data) is true set to data,
// and the names of those entries. Entries with no embedded CA, or one
// that does not decode, are left alone, as is every other byte where the
// value can be swapped in place (see rewriteCredentials: the same rules,
// and the result is parsed back and must read as raw but for the new CA).
// No entry to replace returns raw itself.
func WithClusterCA(raw, data []byte, replace func(current []byte) bool) ([]byte, []string, error) {
	return withClusterCA(raw, data, replace, true)
}

func withClusterCA(raw, data []byte, replace func(current []byte) bool, inPlace bool) ([]byte, []string, error) {
	doc, err := parseDoc(raw)
	if err != nil {
		return nil, nil, err
	}
	edits, names, err := caEdits(doc.Content[0], data, replace)
	if err != nil || len(edits) == 0 {
		return raw, nil, err
	}
	out, err := applyEdits(raw, doc, edits, inPlace)
	if err != nil {
		return nil, nil, err
	}
	// Read the result back as a reader of the file will.
	after, err := ClusterCAs(out)
	if err != nil {
		return nil, nil, fmt.Errorf("rewritten kubeconfig does not parse: %w", err)
	}
	for _, c := range after {
		if slices.Contains(names, c.Name) && !bytes.Equal(c.Data, data) {
			return nil, nil, fmt.Errorf("rewritten kubeconfig: cluster %q does not carry the new CA", c.Name)
		}
	}
	return out, names, nil
}

// caEdits finds the certificate-authority-data scalars to replace.
func caEdits(root *yaml.Node, data []byte, replace func([]byte) bool) ([]b64Edit, []string, error) {
	list := mapGet(root, "clusters")
	if list == nil || list.Kind != yaml.SequenceNode {
		return nil, nil, nil
	}
	aliased := aliasTargets(root)
	var edits []b64Edit
	var names []string
	for _, e := range list.Content {
		n := mapGet(mapGet(e, "cluster"), "certificate-authority-data")
		if n == nil || n.Kind != yaml.ScalarNode {
			continue
		}
		cur, err := decodeB64(n)
		if err != nil || !replace(cur) {
			continue
		}
		name := scalar(mapGet(e, "name"))
		if aliased[n] {
			// Changing it would change what the aliases read too.
			return nil, nil, fmt.Errorf("line %d: cluster %q: the CA is an anchor that aliases elsewhere refer to", n.Line, name)
		}
		if slices.Contains(names, name) {
			return nil, nil, fmt.Errorf("two clusters entries named %q", name)
		}
		edits = append(edits, b64Edit{n, data})
		names = append(names, name)
	}
	return edits, names, nil
}
