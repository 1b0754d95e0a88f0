#!/usr/bin/env bash
# govulncheck offline, against the snapshot of the Go vulnerability database
# in test/vulndb (the database's server is out of reach here and in CI).
#   1. every module of the build list must be covered by the snapshot, or a
#      new dependency would go unchecked: cut it again (see test/vulndb/README.md);
#   2. govulncheck over ./... must find nothing that pkirenewd calls;
#   3. a canary: the same run with one planted entry on a function pkirenewd
#      does call (logrus.New) must report it, so a govulncheck that silently
#      reads nothing cannot pass step 2.
# Usage: test/vulncheck.sh GOVULNCHECK
set -euo pipefail
cd "$(dirname "$0")/.."
gvc=${1:?usage: test/vulncheck.sh path/to/govulncheck}
db=test/vulndb

missing=$(comm -23 <(go list -m -f '{{.Path}}' all | sort -u) <(sort -u "$db/MODULES"))
if [[ -n $missing ]]; then
	echo "vulncheck: the snapshot in $db was not cut for these modules of the build list:" >&2
	sed 's/^/  /' <<<"$missing" >&2
	echo "vulncheck: cut it again as test/vulndb/README.md says" >&2
	exit 1
fi

echo "vulncheck: $(ls "$db"/GO-*.json | wc -l) entries, snapshot $(sed -n 's/^commit: //p' "$db/README.md")"
"$gvc" -db "file://$PWD/$db" ./...

canary=$(mktemp -d)
trap 'rm -rf "$canary"' EXIT
cp "$db"/GO-*.json "$canary"/
cat >"$canary/GO-0000-0001.json" <<'EOF'
{"schema_version":"1.3.1","id":"GO-0000-0001","modified":"2026-01-01T00:00:00Z",
 "published":"2026-01-01T00:00:00Z","summary":"pkirenewd vulncheck canary",
 "details":"Planted by test/vulncheck.sh; never a real vulnerability.",
 "database_specific":{"url":"https://example.invalid/GO-0000-0001"},
 "affected":[{"package":{"name":"github.com/sirupsen/logrus","ecosystem":"Go"},
  "ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"99.0.0"}]}],
  "ecosystem_specific":{"imports":[{"path":"github.com/sirupsen/logrus","symbols":["New"]}]}}]}
EOF
set +e
out=$("$gvc" -db "file://$canary" ./... 2>&1)
rc=$?
set -e
if [[ $rc -ne 3 || $out != *GO-0000-0001* ]]; then
	echo "vulncheck: canary not reported (exit $rc): govulncheck did not read the snapshot" >&2
	echo "$out" >&2
	exit 1
fi
echo "vulncheck: canary reported, as it must be"
