#!/usr/bin/env bash
# make demo: a throwaway kubeadm-shaped PKI whose leaf certificates were
# issued 340 days ago (25 days left), checked, renewed and checked again.
# Nothing outside a temp dir is touched.
set -euo pipefail
bin=${1:-bin/pkirenewd}
demo=$(mktemp -d /tmp/pkirenewd-demo.XXXXXX)
trap 'rm -rf "$demo"' EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# Its own (empty) manifests dir: the host's /etc/kubernetes is not the demo's.
flags=(--config "$demo/config.yaml" --pki-dir "$demo/kubernetes/pki" --kubeconfig-dir "$demo/kubernetes" --state-dir "$demo/state"
	--manifests-dir "$demo/kubernetes/manifests")
: >"$demo/config.yaml" # an empty config: every value is its default

say "A kubeadm-shaped PKI in $demo/kubernetes, leaf certificates issued 340 days ago"
go run ./test/pkigen -age 8160h "$demo/kubernetes"

say "pkirenewd check  (exit 1: something is due)"
set +e
"$bin" check "${flags[@]}"
echo "exit status: $?"
set -e

say "pkirenewd renew --dry-run"
"$bin" renew --dry-run "${flags[@]}"

say "pkirenewd renew"
"$bin" renew "${flags[@]}" 2>/dev/null

say "pkirenewd check  (exit 0: all fine)"
"$bin" check "${flags[@]}"
echo "exit status: $?"

say "The identity is kept: apiserver before (backup) and after"
backup=$(ls -d "$demo"/state/backups/*/)
for f in "$backup"/*-apiserver.crt "$demo/kubernetes/pki/apiserver.crt"; do
	openssl x509 -in "$f" -noout -subject -serial -enddate -ext subjectAltName 2>/dev/null || true
	echo
done

say "Backups of the previous files"
cat "$backup/MANIFEST"

if [ "$(id -u)" = 0 ] && command -v containerd >/dev/null 2>&1; then
	say "The restart step, on a throwaway containerd (stand-in components, kubelet stand-in)"
	go test -count=1 -run TestRenewRestartOnRealContainerd -v ./test/restart/ 2>&1 |
		grep -E '^\s+(Restarting|restarted|FAILED|All [0-9]|The previous)|--- (PASS|FAIL)' | sed 's/^ *//'
else
	say "No containerd here (or not root): skipping the restart step (make containerd installs it)"
fi
