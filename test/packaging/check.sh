#!/usr/bin/env bash
# Static checks of the unit and the packages (part of `make test`):
# systemd-analyze verify (no warnings) and security (exposure <= 2.2: the
# 0.2 above the rest is CAP_FOWNER/CAP_DAC_READ_SEARCH, which keeping the
# owner, ACLs and xattrs of files owned by others needs),
# lintian (no errors), rpm -qpil --scripts (the expected files and scripts).
set -euo pipefail
cd "$(dirname "$0")/../.."
fail=0
say() { printf 'packaging: %s\n' "$*"; }
bad() { printf 'packaging: FAIL: %s\n' "$*"; fail=1; }

need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v lintian >/dev/null || need+=(lintian)
command -v rpm >/dev/null || need+=(rpm)
if ((${#need[@]})); then
	say "installing ${need[*]} from Debian"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

deb=$(ls -t dist/pkirenewd_*.deb | head -1)
rpm=$(ls -t dist/pkirenewd-*.rpm | head -1)

# verify wants ExecStart to exist: check a copy that points at the build.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#^ExecStart=/usr/bin/pkirenewd#ExecStart=$PWD/dist/stage/pkirenewd#" systemd/pkirenewd.service >"$tmp/pkirenewd.service"
if ! systemd-analyze verify --man=no "$tmp/pkirenewd.service" 2>"$tmp/verify.err"; then
	bad "systemd-analyze verify failed: $(cat "$tmp/verify.err")"
elif [[ -s $tmp/verify.err ]]; then
	bad "systemd-analyze verify warns: $(cat "$tmp/verify.err")"
else
	say "systemd-analyze verify: clean"
fi
exposure=$(systemd-analyze security --offline=yes systemd/pkirenewd.service 2>/dev/null | sed -n 's/.*Overall exposure level for pkirenewd.service: \([0-9.]*\).*/\1/p')
say "systemd-analyze security exposure: $exposure"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 2.2) }' || bad "exposure $exposure > 2.2"

lintian --tag-display-limit 0 "$deb" >"$tmp/lintian.out" 2>&1 || true
grep -v 'running with root privileges' "$tmp/lintian.out" | sed 's/^/packaging: lintian: /' || true
if grep -q '^E:' "$tmp/lintian.out"; then bad "lintian reports errors"; else say "lintian: no errors"; fi

rpm -qpil --scripts "$rpm" >"$tmp/rpm.out" 2>/dev/null
for want in /usr/bin/pkirenewd /usr/lib/systemd/system/pkirenewd.service /etc/pkirenewd/config.yaml \
	/usr/share/man/man8/pkirenewd.8.gz /usr/share/bash-completion/completions/pkirenewd \
	/usr/share/zsh/vendor-completions/_pkirenewd /var/lib/pkirenewd /usr/share/pkirenewd/rbac.yaml \
	'postinstall scriptlet' 'preuninstall scriptlet' 'postuninstall scriptlet' 'enable --now pkirenewd.service'; do
	grep -qF -- "$want" "$tmp/rpm.out" || bad "rpm lacks $want"
done
dpkg-deb -c "$deb" >"$tmp/deb.out"
for want in ./usr/bin/pkirenewd ./lib/systemd/system/pkirenewd.service ./etc/pkirenewd/config.yaml ./usr/share/man/man8/pkirenewd.8.gz \
	./usr/share/doc/pkirenewd/prometheus/pkirenewd-rules.yaml ./usr/share/doc/pkirenewd/grafana/pkirenewd-dashboard.json ./usr/share/pkirenewd/rbac.yaml; do
	grep -qF -- "$want" "$tmp/deb.out" || bad "deb lacks $want"
done
dpkg-deb -I "$deb" conffiles | grep -qx /etc/pkirenewd/config.yaml || bad "config.yaml is not a conffile"
[[ $fail == 0 ]] && say "rpm and deb contents: as expected"
exit $fail
