// Package kubeadmconfig reads the parts of kubeadm's ClusterConfiguration
// that decide what a renewed certificate looks like (the key algorithm,
// the validity, where the PKI is) and keeps the last good copy, so the
// cluster's choices are followed even when neither the file nor the API
// is at hand. kubeadm's format changes with kubeadm's releases, not with
// how pkirenewd renews, so it has a package of its own.
package kubeadmconfig
