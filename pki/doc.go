// Package pki is the model of a kubeadm node's certificates and keys and
// how they are renewed: it parses and encodes them, generates keys (with
// issuance, because the algorithm is chosen when a certificate is issued),
// issues a replacement that keeps the whole identity of the old
// certificate, and decides when each is due. It reads and writes no files,
// so the rules a renewal follows can be tested without a disk.
package pki
