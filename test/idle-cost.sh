#!/usr/bin/env bash
# Measures what `pkirenewd run` costs while idle on a stock PKI (a year of
# validity, nothing due): CPU seconds and memory after SECONDS (default 60),
# with the metrics listener on and the file watch active.
set -euo pipefail
bin=${1:-bin/pkirenewd}
secs=${2:-60}
dir=$(mktemp -d /tmp/pkirenewd-idle.XXXXXX)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
go run ./test/pkigen "$dir/kubernetes" >/dev/null
"$bin" run --config /dev/null --pki-dir "$dir/kubernetes/pki" --kubeconfig-dir "$dir/kubernetes" \
	--manifests-dir "$dir/kubernetes" --state-dir "$dir/state" --restart-components=false \
	--metrics-address 127.0.0.1:0 --log-level warn &
pid=$!
sleep 2 # start-up (first inventory) is not idle time
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
t0=$(ticks)
sleep "$secs"
t1=$(ticks)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN {printf "%.3f", (b - a) / hz}')
per_hour=$(awk -v c="$cpu" -v s="$secs" 'BEGIN {printf "%.3f", c * 3600 / s}')
echo "idle ${secs}s: CPU ${cpu} s (${per_hour} CPU-s/hour), RSS $((rss / 1024)) MiB (peak $((hwm / 1024)) MiB)"
