#!/usr/bin/env bash
# Install containerd and runc from Debian if either is missing (idempotent;
# silent when both are already installed). Needs root when it installs.
set -euo pipefail

missing=()
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v ctr >/dev/null 2>&1 || missing+=(containerd)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "ensure-containerd: need root to install ${missing[*]}" >&2
	exit 1
fi
echo "ensure-containerd: installing containerd runc from Debian" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends containerd runc >/dev/null
command -v containerd >/dev/null && command -v runc >/dev/null && command -v ctr >/dev/null
