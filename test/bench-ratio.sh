#!/usr/bin/env bash
# Reads `go test -bench BenchmarkRenewAll` output and prints, per
# algorithm, pkirenewd's time against kubeadm's.
set -euo pipefail
awk '
/^BenchmarkRenewAll\// {
	split($1, p, "/"); alg = p[2]; tool = p[3]; sub(/-[0-9]+$/, "", tool)
	t[alg, tool] = $3; algs[alg] = 1
}
END {
	printf "\n%-12s %14s %14s %8s\n", "ALGORITHM", "PKIRENEWD", "KUBEADM", "RATIO"
	for (a in algs) {
		printf "%-12s %11.1f ms %11.1f ms %7.2fx\n", a, t[a, "pkirenewd"] / 1e6, t[a, "kubeadm"] / 1e6, t[a, "pkirenewd"] / t[a, "kubeadm"]
	}
}' "$1"
