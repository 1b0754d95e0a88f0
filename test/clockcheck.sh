#!/usr/bin/env bash
# One clock: outside main (cmd/) and the tests, time is read and waited on
# through k8s.io/utils/clock, injected, so that a test can move every part
# of the program to the same instant (day 366, a CA ending in ten minutes)
# with a fake clock. A direct call of the time package's clock is refused
# unless its line says why with a `// clock:` comment.
set -euo pipefail
cd "$(dirname "$0")/.."
pattern='time\.(Now|Since|Until|Sleep|After|AfterFunc|NewTimer|NewTicker|Tick)\b'
bad=$(git ls-files '*.go' | grep -v '_test\.go$' | grep -v -E '^(cmd/|test/)|(^|/)[a-z]+test/' |
	xargs grep -n -E "$pattern" | grep -v '// clock:' || true)
if [[ -n $bad ]]; then
	echo "clockcheck: read the injected clock (k8s.io/utils/clock), or say why not with a '// clock:' comment:"
	echo "$bad"
	exit 1
fi
