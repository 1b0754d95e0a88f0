#!/usr/bin/env bash
# Generate the Go module that pins one Kubernetes version's build:
#
#   bash test/tools/gen-k8s-module.sh VERSION DIR [SET]   # e.g. v1.35.4 test/tools/k8s-v1.35
#
# SET is "kubeadm" (the default: kubeadm only) or "full" (kubeadm, the kubelet
# and the three control-plane components), as in test/tools/versions.
#
# DIR/go.mod requires k8s.io/kubernetes@VERSION and replaces every staging
# module it requires at v0.0.0 (k8s.io/api, client-go, ...) by the published
# release of the same patch (v0.MINOR.PATCH), as Kubernetes' own build
# replaces them by its ./staging tree. Its go and godebug lines are
# Kubernetes' own, so the binary gets the GODEBUG defaults that release was
# built with. DIR/tools.go imports the main packages of SET so that
# `go mod tidy` keeps their dependencies. Needs the Go module proxy (GOPROXY as it is); the result
# is committed, and test/tools/build-k8s.sh only reads it.
set -euo pipefail

die() { printf 'gen-k8s-module: error: %s\n' "$*" >&2; exit 1; }

[[ $# -eq 2 || $# -eq 3 ]] || die "usage: gen-k8s-module.sh VERSION DIR [kubeadm|full]"
version=$1 dir=$2 set=${3:-kubeadm}
case $set in
kubeadm) mains=(kubeadm) ;;
full) mains=(kube-apiserver kube-controller-manager kube-scheduler kubeadm kubelet) ;;
*) die "set $set is neither kubeadm nor full" ;;
esac
[[ $version =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "version $version is not v1.MINOR.PATCH"
staging=v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}

# The downloaded go.mod of k8s.io/kubernetes@VERSION (the module cache's copy).
kmod=$(GOWORK=off GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$version" |
	sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[[ -f $kmod ]] || die "no go.mod for k8s.io/kubernetes@$version from the module proxy"

mkdir -p "$dir"
{
	printf 'module pkirenewd.test/tools/%s\n\n' "$(basename "$dir")"
	grep -E '^(go|godebug) ' "$kmod"
	printf '\nrequire k8s.io/kubernetes %s\n\n' "$version"
	printf '// k8s.io/kubernetes requires its staging modules at v0.0.0 (its own build\n'
	printf '// replaces them by ./staging/src/...): pin each to the release of the same patch.\n'
	printf 'replace (\n'
	awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$kmod" | sort -u |
		while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$staging"; done
	printf ')\n'
} >"$dir/go.mod"
{
	printf '//go:build tools\n\n'
	printf '// Package tools pins the Kubernetes %s main packages that\n' "$version"
	printf '// test/tools/build-k8s.sh builds (set "%s"). It is never compiled into\n' "$set"
	printf '// pkirenewd; it exists so that `go mod tidy` keeps their dependencies in\n'
	printf '// go.mod and go.sum.\n'
	printf 'package tools\n\nimport (\n'
	for m in "${mains[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$m"; done
	printf ')\n'
} >"$dir/tools.go"
(cd "$dir" && GOWORK=off go mod tidy)
printf '%s\n' "$dir"
