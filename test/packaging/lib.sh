# Shared by the package tests that boot a Debian bookworm under a real
# systemd (systemd-nspawn): the tools, the cached rootfs, booting, running a
# command in the container, and the cleanup. The caller sets tag (its
# messages' prefix), cg (its cgroup), name (the machine), work and root
# (mktemp'd dirs), and traps cleanup on EXIT.
#
# The bookworm rootfs (debootstrap minbase + systemd, dbus, rpm) is cached as
# a tarball in ${PKIRENEWD_CACHE:-~/.cache/pkirenewd}/rootfs.

say() { printf '%s: %s\n' "$tag" "$*"; }
fail() { printf '%s: FAIL: %s\n' "$tag" "$*"; exit 1; }

# ensure_rootfs installs what is missing and sets tarball, building the
# rootfs once.
ensure_rootfs() {
	local cache=${PKIRENEWD_CACHE:-$HOME/.cache/pkirenewd}/rootfs
	tarball=$cache/bookworm-minbase-systemd-rpm.tar
	need=()
	command -v systemd-nspawn >/dev/null || need+=(systemd-container)
	command -v debootstrap >/dev/null || need+=(debootstrap)
	command -v setfacl >/dev/null || need+=(acl)
	command -v setfattr >/dev/null || need+=(attr)
	if ((${#need[@]})); then
		say "installing ${need[*]} from Debian"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	fi

	if [[ ! -s $tarball ]]; then
		# Only the sources apt really reads (*.list, *.sources): a fresh Debian has
		# no sources.list, and disabled leftovers may name other archives. The
		# pipeline must not fail under pipefail when a file is missing.
		mirror=$(shopt -s nullglob; cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
			grep -oE '^(URIs:|deb) +https?://[^ ]+' | awk '{print $2}' | grep -v security | head -1 || true)
		mirror=${mirror:-http://deb.debian.org/debian}
		say "debootstrap bookworm from $mirror (once; cached)"
		build=$(mktemp -d /var/tmp/pkr-debootstrap.XXXXXX)
		start=$SECONDS
		debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,rpm bookworm "$build/root" "$mirror" >"$build/log" 2>&1 ||
			{ tail -20 "$build/log"; fail "debootstrap"; }
		mkdir -p "$cache"
		tar -C "$build/root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
		rm -rf "$build"
		say "rootfs built in $((SECONDS - start)) s"
	fi
}

nspawn_pid=
cleanup() {
	set +e
	if [[ -n $nspawn_pid ]] && kill -0 "$nspawn_pid" 2>/dev/null; then
		[[ -n ${pid1:-} ]] && nsenter -t "$pid1" -a systemctl poweroff >/dev/null 2>&1
		for _ in $(seq 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
		kill -9 "$nspawn_pid" 2>/dev/null
		wait "$nspawn_pid" 2>/dev/null
	fi
	# Back to the root cgroups; kill whatever of the container outlived
	# nspawn; then remove our cgroups depth-first.
	for h in systemd unified; do
		[[ -d /sys/fs/cgroup/$h/$cg ]] && echo $$ >"/sys/fs/cgroup/$h/cgroup.procs" 2>/dev/null
	done
	for _ in 1 2 3 4 5; do
		pids=$(find /sys/fs/cgroup/systemd/$cg /sys/fs/cgroup/unified/$cg -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
		[[ -z $pids ]] && break
		kill -9 $pids 2>/dev/null
		sleep 0.3
	done
	for h in systemd unified; do
		[[ -d /sys/fs/cgroup/$h/$cg ]] && find "/sys/fs/cgroup/$h/$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
		[[ -d /sys/fs/cgroup/$h/$cg ]] && echo "nspawn: warning: could not remove /sys/fs/cgroup/$h/$cg" >&2
	done
	for m in $(awk -v r="$root" '$2 ~ "^"r {print $2}' /proc/self/mounts | sort -r); do umount -l "$m" 2>/dev/null; done
	rm -rf --one-file-system "$work"
}

# boot starts the container (extra systemd-nspawn arguments: "$@") and waits
# until its systemd runs; ct then runs a command in it.
boot() {
	# systemd-nspawn --keep-unit runs the container in our own cgroup: make it
	# a private one in both the named systemd and the unified hierarchy (cgroup
	# v1 hybrid here).
	for h in systemd unified; do
		if [[ -d /sys/fs/cgroup/$h ]]; then
			mkdir -p "/sys/fs/cgroup/$h/$cg"
			echo $$ >"/sys/fs/cgroup/$h/$cg/cgroup.procs"
		fi
	done
	start=$SECONDS
	systemd-nspawn -q -D "$root" -M "$name" --boot --register=no --keep-unit --console=read-only "$@" >"$work/console.log" 2>&1 &
	nspawn_pid=$!
	# The container's PID 1 is the child of nspawn in another PID namespace:
	# nspawn first forks an "outer child" in ours, which sets up the mounts and
	# exits; taking that one (a race, seen once) leaves nsenter nothing to enter.
	ourns=$(readlink /proc/self/ns/pid)
	find_pid1() {
		local p
		for p in $(pgrep -P "$nspawn_pid" 2>/dev/null); do
			if [[ $(readlink "/proc/$p/ns/pid" 2>/dev/null) != "$ourns" && -e /proc/$p/ns/pid ]]; then
				echo "$p"
				return 0
			fi
		done
		# Nothing yet is not an error: under set -e a false test as the loop's
		# last command would end the script (CI caught it while the outer child
		# was still alive).
		return 0
	}
	pid1=
	for _ in $(seq 100); do
		pid1=$(find_pid1)
		[[ -n $pid1 ]] && break
		sleep 0.1
	done
	[[ -n $pid1 ]] || { cat "$work/console.log"; fail "no container PID 1"; }
	state=
	for _ in $(seq 150); do
		state=$(ct systemctl is-system-running 2>/dev/null || true)
		[[ $state == running || $state == degraded ]] && break
		sleep 0.2
	done
	[[ $state == running || $state == degraded ]] || { tail -30 "$work/console.log"; fail "systemd did not come up ($state)"; }
	say "container booted ($state) in $((SECONDS - start)) s"
}

ct() { nsenter -t "$pid1" -a "$@"; }
