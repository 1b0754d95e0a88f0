package kubeconfig

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// credentials are the PEM certificate and key to embed in one users entry.
type credentials struct {
	CertPEM, KeyPEM []byte
}

// b64Edit is one base64 scalar (a credential, a cluster's CA) to replace
// with the base64 of data.
type b64Edit struct {
	node *yaml.Node
	data []byte
}

// span is a byte range of the original text and what to put there.
type span struct {
	start, end int
	text       string
}

// rewriteCredentials returns raw with the embedded client certificate and
// key of the users entries at the given indexes replaced, and nothing else
// changed.
//
// The credential scalars are replaced byte for byte where their place in
// the text can be found exactly: every other byte (comments, ordering,
// quoting, line endings, the JSON or YAML layout) stays as the admin or
// kubeadm wrote it. Where it cannot (a block scalar, a tag or anchor before
// the value, an encoding yaml.v3 converts), the document is written again
// from its parsed tree instead. Either way the result is parsed back and
// must read exactly as the original, but for the new credentials.
func rewriteCredentials(raw []byte, users map[int]credentials) ([]byte, error) {
	return rewrite(raw, users, true)
}

// rewrite is rewriteCredentials; without inPlace it always writes the
// document again, so tests can prove that path on every form.
func rewrite(raw []byte, users map[int]credentials, inPlace bool) ([]byte, error) {
	doc, err := parseDoc(raw)
	if err != nil {
		return nil, err
	}
	edits, err := credEdits(doc.Content[0], users)
	if err != nil {
		return nil, err
	}
	return applyEdits(raw, doc, edits, inPlace)
}

// applyEdits replaces each edit's scalar in raw, the document parsed from
// it: in place when every scalar can be placed and the result reads as
// doc with the new values, else by writing doc again. Whatever is
// returned has been parsed back and reads exactly so.
func applyEdits(raw []byte, doc *yaml.Node, edits []b64Edit, inPlace bool) ([]byte, error) {
	spans, placeErr := locate(raw, edits)
	// From here doc is the tree the result must parse to.
	for _, e := range edits {
		e.node.Value = base64.StdEncoding.EncodeToString(e.data)
		if e.node.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
			e.node.Style = 0 // one line now, as kubeadm writes it
		}
	}
	if inPlace && placeErr == nil {
		out := splice(raw, spans)
		if sameDoc(out, doc) == nil {
			return out, nil
		}
	}
	out, err := reserialize(raw, doc)
	if err != nil {
		return nil, fmt.Errorf("the values cannot be replaced in place and the file cannot be written again: %w", err)
	}
	if err := sameDoc(out, doc); err != nil {
		return nil, fmt.Errorf("re-serialized kubeconfig does not read as the original: %w", err)
	}
	return out, nil
}

func parseDoc(raw []byte) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("not a kubeconfig: expected a YAML mapping")
	}
	return &doc, nil
}

// credEdits finds the two credential scalars of each users entry, in
// index order so that errors and edits do not depend on map order.
func credEdits(root *yaml.Node, users map[int]credentials) ([]b64Edit, error) {
	list := mapGet(root, "users")
	idx := make([]int, 0, len(users))
	for i := range users {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	aliased := aliasTargets(root)
	var edits []b64Edit
	for _, i := range idx {
		if list == nil || list.Kind != yaml.SequenceNode || i < 0 || i >= len(list.Content) {
			return nil, fmt.Errorf("users entry %d not found", i)
		}
		u := mapGet(list.Content[i], "user")
		cert, key := mapGet(u, "client-certificate-data"), mapGet(u, "client-key-data")
		if cert == nil || key == nil || cert.Kind != yaml.ScalarNode || key.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("users entry %d (%q) does not embed both client-certificate-data and client-key-data", i, scalar(mapGet(list.Content[i], "name")))
		}
		for _, n := range []*yaml.Node{cert, key} {
			if aliased[n] {
				// Changing it would change what the aliases read too,
				// such as another user's key.
				return nil, fmt.Errorf("line %d: the credential is an anchor that aliases elsewhere refer to", n.Line)
			}
		}
		edits = append(edits, b64Edit{cert, users[i].CertPEM}, b64Edit{key, users[i].KeyPEM})
	}
	return edits, nil
}

// aliasTargets returns the nodes that aliases in the tree refer to.
func aliasTargets(n *yaml.Node) map[*yaml.Node]bool {
	t := map[*yaml.Node]bool{}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.AliasNode {
			t[n.Alias] = true
			return
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(n)
	return t
}

// locate finds each edited scalar's bytes in raw. It works on byte
// offsets in the original text, so one replacement cannot move another
// (several may share a line, as in one-line JSON).
func locate(raw []byte, edits []b64Edit) ([]span, error) {
	starts := lineStarts(raw)
	spans := make([]span, 0, len(edits))
	for _, e := range edits {
		off, err := offsetOf(raw, starts, e.node.Line, e.node.Column)
		if err != nil {
			return nil, err
		}
		end, err := scalarEnd(raw, off, e.node)
		if err != nil {
			return nil, err
		}
		spans = append(spans, span{off, end, quoteLike(e.node.Style, base64.StdEncoding.EncodeToString(e.data))})
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].start < spans[j].start })
	for i := 1; i < len(spans); i++ {
		if spans[i].start < spans[i-1].end {
			return nil, errors.New("edited scalars overlap")
		}
	}
	return spans, nil
}

// yamlBreaks are what yaml.v3 counts as line breaks ("\r\n" is one).
const yamlBreaks = "\r\n\u0085\u2028\u2029"

// lineStarts returns the byte offset at which each line begins, counting
// lines as yaml.v3 does. Line 1 begins after a UTF-8 byte order mark,
// which yaml.v3 does not count.
func lineStarts(raw []byte) []int {
	base := 0
	if bytes.HasPrefix(raw, []byte("\ufeff")) {
		base = 3
	}
	starts := []int{base}
	for i := base; i < len(raw); {
		r, w := utf8.DecodeRune(raw[i:])
		switch {
		case r == '\r' && i+1 < len(raw) && raw[i+1] == '\n':
			w = 2
			fallthrough
		case strings.ContainsRune(yamlBreaks, r):
			starts = append(starts, i+w)
		}
		i += w
	}
	return starts
}

// offsetOf turns yaml.v3's 1-based line and column, which counts runes,
// into a byte offset.
func offsetOf(raw []byte, starts []int, line, col int) (int, error) {
	if line < 1 || line > len(starts) || col < 1 {
		return 0, fmt.Errorf("line %d column %d: out of range", line, col)
	}
	off := starts[line-1]
	for c := 1; c < col; c++ {
		r, w := utf8.DecodeRune(raw[off:])
		if w == 0 || strings.ContainsRune(yamlBreaks, r) {
			return 0, fmt.Errorf("line %d column %d: out of range", line, col)
		}
		off += w
	}
	return off, nil
}

// scalarEnd returns where the one-line scalar n that starts at off ends.
// Plain and quoted scalars on one line are the only ones whose text can be
// swapped for another base64 string; anything else is an error here.
func scalarEnd(raw []byte, off int, n *yaml.Node) (int, error) {
	bad := fmt.Errorf("line %d: the value is not a one-line scalar", n.Line)
	end := -1
	switch n.Style {
	case 0:
		if bytes.HasPrefix(raw[off:], []byte(n.Value)) {
			end = off + len(n.Value)
		}
	case yaml.DoubleQuotedStyle:
		end = quotedEnd(raw, off, '"', func(i int) int {
			if raw[i] == '\\' {
				return 2 // an escape: the next byte cannot close
			}
			return 1
		})
	case yaml.SingleQuotedStyle:
		end = quotedEnd(raw, off, '\'', func(i int) int {
			if raw[i] == '\'' && i+1 < len(raw) && raw[i+1] == '\'' {
				return 2 // '' is a quote inside
			}
			return 1
		})
	}
	if end < 0 || bytes.ContainsAny(raw[off:end], yamlBreaks) {
		return 0, bad
	}
	return end, nil
}

// quotedEnd returns the offset after the quote that closes the scalar
// opened at off, or -1; step says how far one character reaches.
func quotedEnd(raw []byte, off int, q byte, step func(i int) int) int {
	if off >= len(raw) || raw[off] != q {
		return -1
	}
	for i := off + 1; i < len(raw); {
		if s := step(i); s > 1 {
			i += s
			continue
		}
		if raw[i] == q {
			return i + 1
		}
		i++
	}
	return -1
}

// quoteLike writes v in the quoting the old value had. Base64 needs no
// escape in any of them.
func quoteLike(style yaml.Style, v string) string {
	switch style {
	case yaml.DoubleQuotedStyle:
		return `"` + v + `"`
	case yaml.SingleQuotedStyle:
		return `'` + v + `'`
	}
	return v
}

// splice applies sorted, non-overlapping spans, last first, so that no
// replacement moves the place of another.
func splice(raw []byte, spans []span) []byte {
	out := append([]byte(nil), raw...)
	for i := len(spans) - 1; i >= 0; i-- {
		s := spans[i]
		out = append(out[:s.start], append([]byte(s.text), out[s.end:]...)...)
	}
	return out
}

// sameDoc reports how out, parsed, differs from want (nil: not at all).
func sameDoc(out []byte, want *yaml.Node) error {
	got, err := parseDoc(out)
	if err != nil {
		return err
	}
	return equalNode(got.Content[0], want.Content[0], "")
}

// equalNode compares what a reader sees: kinds, resolved tags, values,
// anchors and order; not styles, positions or comments. Aliases compare
// by name, so a document full of aliases costs no more than its size.
func equalNode(a, b *yaml.Node, path string) error {
	switch {
	case a.Kind != b.Kind:
		return fmt.Errorf("%s: kind changed", pathOr(path))
	case a.Anchor != b.Anchor:
		return fmt.Errorf("%s: anchor changed", pathOr(path))
	case a.Kind == yaml.ScalarNode && (a.ShortTag() != b.ShortTag() || a.Value != b.Value):
		return fmt.Errorf("%s: value changed", pathOr(path))
	case a.Kind == yaml.AliasNode && a.Value != b.Value:
		return fmt.Errorf("%s: alias changed", pathOr(path))
	case len(a.Content) != len(b.Content):
		return fmt.Errorf("%s: number of entries changed", pathOr(path))
	}
	for i := range a.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		if a.Kind == yaml.MappingNode && i%2 == 1 {
			p = path + "." + a.Content[i-1].Value
		}
		if err := equalNode(a.Content[i], b.Content[i], p); err != nil {
			return err
		}
	}
	return nil
}

func pathOr(p string) string {
	if p == "" {
		return "document"
	}
	return p
}

// multiDoc reports whether raw holds more than one YAML document.
func multiDoc(raw []byte) bool {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	var n yaml.Node
	if dec.Decode(&n) != nil {
		return false
	}
	return dec.Decode(&n) != io.EOF
}

// reserialize writes the document again from its tree. JSON stays JSON:
// whoever keeps a kubeconfig as JSON (`kubectl config view -o json`,
// tools that write it with a JSON library) reads or diffs it as JSON, and
// the tree of a JSON file always has a JSON form. YAML is written by
// yaml.v3 with kubeadm's two-space indent; comments it keeps on the nodes
// are written again, the layout around them may change.
func reserialize(raw []byte, doc *yaml.Node) ([]byte, error) {
	if multiDoc(raw) {
		// Only the first document is parsed; writing it alone would drop
		// the others.
		return nil, errors.New("more than one YAML document")
	}
	crlf := bytes.Contains(raw, []byte("\r\n"))
	var buf bytes.Buffer
	if json.Valid(raw) {
		if err := writeJSON(&buf, doc.Content[0]); err != nil {
			return nil, err
		}
		return layoutLike(raw, buf.Bytes(), crlf), nil
	}
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return withCRLF(buf.Bytes(), crlf), nil
}

// withCRLF turns the line breaks of text the encoders wrote into the
// original's "\r\n" when it had them.
func withCRLF(b []byte, crlf bool) []byte {
	if !crlf {
		return b
	}
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}

// writeJSON writes a tree parsed from JSON back as compact JSON.
func writeJSON(b *bytes.Buffer, n *yaml.Node) error {
	switch n.Kind {
	case yaml.MappingNode:
		b.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			if n.Content[i].Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: a key that is not a string", n.Content[i].Line)
			}
			writeJSONString(b, n.Content[i].Value)
			b.WriteByte(':')
			if err := writeJSON(b, n.Content[i+1]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case yaml.SequenceNode:
		b.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeJSON(b, c); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case yaml.ScalarNode:
		if n.ShortTag() == "!!str" {
			writeJSONString(b, n.Value)
			return nil
		}
		// Numbers, true, false and null keep their JSON text.
		if !json.Valid([]byte(n.Value)) {
			return fmt.Errorf("line %d: %q has no JSON form", n.Line, n.Value)
		}
		b.WriteString(n.Value)
	default:
		return fmt.Errorf("line %d: no JSON form", n.Line)
	}
	return nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	b.Truncate(b.Len() - 1)
}

// layoutLike lays compact JSON out as the original was: on one line, or
// indented with the original's indent, with the same text around it.
func layoutLike(orig, compact []byte, crlf bool) []byte {
	body := bytes.TrimSpace(orig)
	lead := orig[:bytes.Index(orig, body)]
	trail := orig[len(lead)+len(body):]
	out := append([]byte(nil), lead...)
	if i := bytes.IndexByte(body, '\n'); i >= 0 {
		next := body[i+1:]
		indent := next[:len(next)-len(bytes.TrimLeft(next, " \t"))]
		if len(indent) == 0 {
			indent = []byte("  ")
		}
		var buf bytes.Buffer
		_ = json.Indent(&buf, compact, "", string(indent)) // compact is valid JSON
		compact = withCRLF(buf.Bytes(), crlf)
	}
	out = append(out, compact...)
	return append(out, trail...)
}
