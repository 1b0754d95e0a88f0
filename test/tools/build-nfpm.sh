#!/usr/bin/env bash
# Builds the pinned nfpm (v2.45.2; newer ones need modules the proxy
# refuses) into the cache and prints its path on the last line.
set -euo pipefail
NFPM_VERSION=v2.45.2
cache=${PKIRENEWD_CACHE:-$HOME/.cache/pkirenewd}
bin=$cache/tools/nfpm-$NFPM_VERSION
if [[ ! -x $bin/nfpm ]]; then
	mkdir -p "$bin"
	echo "build-nfpm: building nfpm $NFPM_VERSION" >&2
	(cd "$(mktemp -d)" && GOWORK=off GOFLAGS=-mod=mod GOBIN=$bin CGO_ENABLED=0 go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION") >&2
fi
echo "$bin/nfpm"
