// Package kubeconfig reads the client credentials a kubeconfig embeds and
// replaces them in every form kubectl reads (block or flow YAML, JSON,
// CRLF, comments, quotes), changing no other byte where it can and
// nothing kubectl reads where it cannot; and it follows a renewal of
// admin.conf to the copies admins make of it. It is kept apart from the
// renewer because its rules are YAML's and kubectl's, not the PKI's.
package kubeconfig
