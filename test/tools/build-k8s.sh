#!/usr/bin/env bash
# Build pinned Kubernetes (and etcd) binaries from the Go module proxy, cached
# outside the repository.
#
#   bash test/tools/build-k8s.sh [--version VERSION] [COMPONENT...]
#   bash test/tools/build-k8s.sh --range
#   bash test/tools/build-k8s.sh --full
#   bash test/tools/build-k8s.sh --list
#
# COMPONENT is any of: kubeadm kubelet kube-apiserver kube-controller-manager
# kube-scheduler etcd, or "all". Default: kubeadm. The versions are the lines
# of test/tools/versions; VERSION defaults to its "default" one (v1.37.2).
# The whole control plane (and that row's etcd) is built only for the rows
# whose set is "full" or "default"; the others build kubeadm only.
#
# Binaries go to ${PKIRENEWD_CACHE:-$HOME/.cache/pkirenewd}/bin/k8s-VERSION/
# (etcd to .../bin/etcd-ETCDVERSION/etcd, symlinked as k8s-VERSION/etcd). A binary
# already in the cache is not rebuilt (PKIRENEWD_REBUILD=1 forces a rebuild).
# Progress goes to stderr; the last stdout line is the k8s bin dir, so
#
#   BIN=$(bash test/tools/build-k8s.sh kubeadm | tail -1)
#   "$BIN/kubeadm" version -o short
#
# --range builds kubeadm of every version and prints, as its last line,
# VERSION=PATH pairs (oldest first, space-separated), as test/kubeadm reads
# them from PKIRENEWD_KUBEADMS. --full builds "all" of every full set (make
# e2e runs a control plane of each) and prints their bin dirs, one a line.
# --list prints the versions, one a line.
#
# The modules are test/tools/k8s* (one per version, see test/tools/versions)
# and test/tools/etcd-ETCDVERSION (one per etcd release). GOPROXY, GOCACHE, GOMODCACHE and GOFLAGS from the
# environment are used as they are.
set -euo pipefail

K8S_COMPONENTS=(kubeadm kubelet kube-apiserver kube-controller-manager kube-scheduler)

log() { printf 'build-k8s: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
	sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${PKIRENEWD_CACHE:-${HOME:?HOME or PKIRENEWD_CACHE must be set}/.cache/pkirenewd}
rebuild=${PKIRENEWD_REBUILD:-0}

# versions prints the rows of test/tools/versions (comments and blank lines
# dropped), checking each: five fields, a v1.MINOR.PATCH version, an RFC 3339
# UTC time, an existing module dir, a set of "default", "full" or "kubeadm",
# and an etcd release with its module dir (full sets) or "-" (kubeadm only).
versions() {
	local f=$here/versions v d m set e rest defaults=0
	while read -r v d m set e rest; do
		[[ -z $v || $v == \#* ]] && continue
		[[ $v =~ ^v1\.[0-9]+\.[0-9]+$ && $d =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z$ &&
			-f $here/$m/go.mod && -z $rest ]] || die "$f: bad line: $v $d $m $set $e $rest"
		case $set in
		default | full)
			[[ $e =~ ^v3\.[0-9]+\.[0-9]+$ && -f $here/etcd-$e/go.mod ]] ||
				die "$f: $v: etcd $e has no module test/tools/etcd-$e"
			;;
		kubeadm) [[ $e == - ]] || die "$f: $v: a kubeadm-only row has etcd \"-\", not $e" ;;
		*) die "$f: $v: set $set is none of default, full, kubeadm" ;;
		esac
		[[ $set == default ]] && defaults=$((defaults + 1))
		printf '%s %s %s %s %s\n' "$v" "$d" "$m" "$set" "$e"
	done <"$f"
	[[ $defaults == 1 ]] || die "$f: $defaults lines with set \"default\", want exactly one"
}
version_rows=$(versions)

# select_version VERSION sets K8S_VERSION, K8S_BUILD_DATE, K8S_MODULE,
# K8S_SET and ETCD_VERSION from its row; an empty VERSION selects the
# "default" one.
select_version() {
	local v d m set e
	while read -r v d m set e; do
		if [[ $v == "$1" || (-z $1 && $set == default) ]]; then
			K8S_VERSION=$v K8S_BUILD_DATE=$d K8S_MODULE=$here/$m K8S_SET=$set ETCD_VERSION=$e
			return
		fi
	done <<<"$version_rows"
	die "Kubernetes $1 is not in $here/versions"
}

command -v go >/dev/null 2>&1 || die "go is not on PATH"

version=
case ${1:-} in
--list)
	cut -d' ' -f1 <<<"$version_rows"
	exit 0
	;;
--range)
	[[ $# -eq 1 ]] || die "--range takes no components (it builds kubeadm of every version)"
	pairs=()
	for v in $(cut -d' ' -f1 <<<"$version_rows"); do
		pairs+=("$v=$(bash "${BASH_SOURCE[0]}" --version "$v" kubeadm | tail -1)/kubeadm")
	done
	printf '%s\n' "${pairs[*]}"
	exit 0
	;;
--full)
	[[ $# -eq 1 ]] || die "--full takes no components (it builds all of every full set)"
	while read -r v d m set e; do
		if [[ $set == full || $set == default ]]; then
			bash "${BASH_SOURCE[0]}" --version "$v" all | tail -1
		fi
	done <<<"$version_rows"
	exit 0
	;;
--version)
	[[ $# -ge 2 ]] || die "--version needs a version"
	version=$2
	shift 2
	;;
esac
select_version "$version"
k8s_bin=$cache/bin/k8s-$K8S_VERSION
etcd_bin=$cache/bin/etcd-$ETCD_VERSION

if [[ $# -eq 0 ]]; then
	set -- kubeadm
fi

want_k8s=()
want_etcd=0
for c in "$@"; do
	if [[ $K8S_SET == kubeadm && $c != kubeadm && $c != -h && $c != --help ]]; then
		die "only kubeadm is built for $K8S_VERSION (test/tools/versions); asked for $c"
	fi
	case $c in
	-h | --help)
		usage
		exit 0
		;;
	all)
		want_k8s+=("${K8S_COMPONENTS[@]}")
		want_etcd=1
		;;
	etcd) want_etcd=1 ;;
	kubeadm | kubelet | kube-apiserver | kube-controller-manager | kube-scheduler)
		want_k8s+=("$c")
		;;
	*) usage; die "unknown component: $c" ;;
	esac
done

# missing_k8s: requested k8s components not yet in the cache (deduplicated).
missing_k8s=()
need_etcd=0
compute_missing() {
	missing_k8s=()
	need_etcd=0
	local c m seen
	for c in ${want_k8s[@]+"${want_k8s[@]}"}; do
		seen=0
		for m in ${missing_k8s[@]+"${missing_k8s[@]}"}; do
			[[ $m == "$c" ]] && seen=1
		done
		if [[ $seen == 0 && ($rebuild == 1 || ! -x $k8s_bin/$c) ]]; then
			missing_k8s+=("$c")
		fi
	done
	if [[ $want_etcd == 1 && ($rebuild == 1 || ! -x $etcd_bin/etcd) ]]; then
		need_etcd=1
	fi
}

# go_build MODULE_DIR OUT LDFLAGS PKG... builds static binaries; OUT is passed to
# -o (a directory ending in "/" for several packages).
go_build() {
	local dir=$1 out=$2 ldflags=$3
	shift 3
	(
		cd "$dir"
		# GOWORK=off: never pick up a go.work of the enclosing repository.
		# -mod=mod: tolerate a go.sum that misses an entry (downloads it).
		# -buildvcs=false: the module sits in pkirenewd's git tree; its VCS state
		# must not change (or break) these builds.
		CGO_ENABLED=0 GOWORK=off go build -mod=mod -buildvcs=false -trimpath \
			-ldflags "$ldflags" -o "$out" "$@"
	) >&2
}

tmpdirs=()
cleanup() {
	local d
	for d in ${tmpdirs[@]+"${tmpdirs[@]}"}; do
		rm -rf -- "$d"
	done
}
trap cleanup EXIT

build_k8s() {
	local v=${K8S_VERSION#v} ldflags pkgs=() c tmp start
	local major=${v%%.*} minor
	minor=${v#*.}
	minor=${minor%%.*}
	ldflags="-s -w"
	local p
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $p.gitVersion=$K8S_VERSION"
		ldflags+=" -X $p.gitMajor=$major"
		ldflags+=" -X $p.gitMinor=$minor"
		ldflags+=" -X $p.gitCommit="
		ldflags+=" -X $p.gitTreeState=clean"
		ldflags+=" -X $p.buildDate=$K8S_BUILD_DATE"
	done
	for c in "${missing_k8s[@]}"; do
		pkgs+=("k8s.io/kubernetes/cmd/$c")
	done
	mkdir -p "$k8s_bin"
	tmp=$(mktemp -d "$k8s_bin/.build.XXXXXX")
	tmpdirs+=("$tmp")
	log "building ${missing_k8s[*]} $K8S_VERSION (cold: several minutes per binary on 2 cores)"
	start=$SECONDS
	go_build "$K8S_MODULE" "$tmp/" "$ldflags" "${pkgs[@]}"
	for c in "${missing_k8s[@]}"; do
		mv -f -- "$tmp/$c" "$k8s_bin/$c"
	done
	log "built ${missing_k8s[*]} in $((SECONDS - start)) s"
}

build_etcd() {
	local tmp start
	mkdir -p "$etcd_bin"
	tmp=$(mktemp -d "$etcd_bin/.build.XXXXXX")
	tmpdirs+=("$tmp")
	log "building etcd $ETCD_VERSION"
	start=$SECONDS
	go_build "$here/etcd-$ETCD_VERSION" "$tmp/etcd" "-s -w" go.etcd.io/etcd/server/v3
	mv -f -- "$tmp/etcd" "$etcd_bin/etcd"
	log "built etcd in $((SECONDS - start)) s"
}

compute_missing
if [[ ${#missing_k8s[@]} -gt 0 || $need_etcd == 1 ]]; then
	mkdir -p "$cache/bin"
	# Serialise concurrent builders (e.g. parallel test packages); re-check
	# afterwards because another builder may have finished the work.
	if command -v flock >/dev/null 2>&1; then
		exec 9>"$cache/bin/.build.lock"
		if ! flock -n 9; then
			log "waiting for another build-k8s.sh to finish"
			flock 9
		fi
		compute_missing
	fi
	if [[ ${#missing_k8s[@]} -gt 0 ]]; then
		build_k8s
	fi
	if [[ $need_etcd == 1 ]]; then
		build_etcd
	fi
	rebuild=0
fi

mkdir -p "$k8s_bin"
if [[ $want_etcd == 1 && ! -L $k8s_bin/etcd ]]; then
	ln -sfn "../etcd-$ETCD_VERSION/etcd" "$k8s_bin/etcd"
fi
for c in ${want_k8s[@]+"${want_k8s[@]}"}; do
	log "$k8s_bin/$c"
done
if [[ $want_etcd == 1 ]]; then
	log "$etcd_bin/etcd (also $k8s_bin/etcd)"
fi
printf '%s\n' "$k8s_bin"
