#!/usr/bin/env bash
# The .deb under its own unit, with the stock configuration, on a complete
# node: the real control plane test/e2e brings up (kubelet, etcd, apiserver,
# controller-manager, scheduler on containerd). The container shares the
# host's network and sees what pkirenewd installed on that node sees: its
# /etc/kubernetes, the kubelet's configuration and cert dir, and the
# containerd socket. Its kubelet.service is a shim whose restart restarts
# the rig's kubelet (through the rig's trigger file), so a kubelet restart
# goes through systemd's D-Bus from inside the hardened unit.
#
#   bash test/packaging/nspawn-node.sh DEB
#
# Environment (all required): NODE_KUBELET_CONFIG, NODE_KUBELET_PKI,
# NODE_CRI_SOCK (the rig's containerd socket), NODE_RIG_DIR (where the rig
# watches for restart-kubelet), NODE_LOG_DIR (the container's journal goes
# there); NODE_SCENARIO, one of:
#   stock           (default) nothing in the way
#   busy-metrics    the caller holds 127.0.0.1:9795: the unit renews all the
#                   same and says it cannot serve its metrics
#   ro-kubelet-pki  the kubelet's cert dir is read-only in the container:
#                   kubelet.crt is held and named, the rest renewed
#   lock-held       an operator's `pkirenewd restart` holds the lock when
#                   the unit starts: READY at once, "waiting for pid N",
#                   then the renewal
#   day366          as stock; every leaf has expired (the caller times
#                   /readyz): the unit's start and its journal are printed
#                   on the monotonic clock for the caller's breakdown It waits until the unit has renewed what is due and `pkirenewd
# check` exits 0, then prints what it measured (lines "nspawn-node: ..."):
# the caller asserts the rest from outside (serials, sandboxes, the serial
# served).
set -euo pipefail
trap 'rc=$?; printf "nspawn-node: FAIL: line %s exited %s\n" "$LINENO" "$rc" >&2' ERR
deb=$(readlink -f "$1")
cd "$(dirname "$0")/../.."
scenario=${NODE_SCENARIO:-stock}
tag="nspawn-node ($scenario)"
# shellcheck source=test/packaging/lib.sh
. test/packaging/lib.sh
for v in NODE_KUBELET_CONFIG NODE_KUBELET_PKI NODE_CRI_SOCK NODE_RIG_DIR NODE_LOG_DIR; do
	[[ -n ${!v:-} ]] || fail "$v is not set"
done

ensure_rootfs
work=$(mktemp -d /var/tmp/pkr-node.XXXXXX)
root=$work/root
name=pkr-node-$$
cg=pkr-node-$$
nspawn_pid=
trap 'journal; cleanup' EXIT
journal() { [[ -n ${pid1:-} ]] && ct journalctl --no-pager -o short-precise >"$NODE_LOG_DIR/container-journal.log" 2>&1 || true; }

mkdir -p "$root"
tar -C "$root" -xf "$tarball"
mkdir -p "$root/etc/kubernetes" "$root/var/lib/kubelet/pki" "$root/rig" "$root/root/.kube"
# The admin's copy of admin.conf, as kubeadm's output tells one to make it.
cp /etc/kubernetes/admin.conf "$root/root/.kube/config"
# kubelet.service: a shim whose restart restarts the rig's kubelet; its
# first start (the boot) does nothing.
cat >"$root/etc/systemd/system/kubelet.service" <<'UNIT'
[Unit]
Description=kubelet (the e2e rig's, restarted through its trigger file)
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'if [ -e /run/kubelet-shim-started ]; then touch /rig/restart-kubelet; i=0; while [ -e /rig/restart-kubelet ]; do i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.1; done; fi; touch /run/kubelet-shim-started'
[Install]
WantedBy=multi-user.target
UNIT
ln -s ../kubelet.service "$root/etc/systemd/system/multi-user.target.wants/kubelet.service"
cp "$deb" "$root/root/pkirenewd.deb"
pki_bind=--bind="$NODE_KUBELET_PKI":/var/lib/kubelet/pki
[[ $scenario == ro-kubelet-pki ]] && pki_bind=--bind-ro="$NODE_KUBELET_PKI":/var/lib/kubelet/pki
# lock-held: installed without being started (Debian's policy-rc.d), so the
# operator's restart can take the lock first.
[[ $scenario == lock-held ]] && printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod +x "$root/usr/sbin/policy-rc.d"

# No --private-network: the apiserver, etcd and the kubelet's healthz are
# on the host's addresses, as on the node itself.
boot --bind=/etc/kubernetes "$pki_bind" --bind-ro="$NODE_KUBELET_CONFIG":/var/lib/kubelet/config.yaml \
	--bind="$NODE_CRI_SOCK":/run/containerd/containerd.sock --bind="$NODE_RIG_DIR":/rig
kubelet_entered=$(ct systemctl show kubelet -p ActiveEnterTimestampMonotonic --value)

installed=$SECONDS
ct env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /root/pkirenewd.deb >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "apt install"; }
say "installed with apt (stock config: $(ct sh -c 'grep -vc "^ *#\|^ *$" /etc/pkirenewd/config.yaml || true') setting lines)"
show() { ct systemctl show pkirenewd -p "$1" --value; }
if [[ $scenario == lock-held ]]; then
	rm "$root/usr/sbin/policy-rc.d"
	[[ $(show ActiveState) == inactive ]] || fail "started despite policy-rc.d: $(show ActiveState)"
	ct sh -c '/usr/bin/pkirenewd restart >/root/restart.log 2>&1 &'
	for _ in $(seq 100); do
		ct sh -c 'test -s /var/lib/pkirenewd/lock' && break
		sleep 0.1
	done
	holder=$(ct cat /var/lib/pkirenewd/lock)
	[[ -n $holder ]] || fail "the operator's pkirenewd restart never held the lock"
	t=$SECONDS
	ct systemctl start pkirenewd || fail "systemctl start pkirenewd while pid $holder holds the lock"
	say "systemctl start returned in $((SECONDS - t)) s while the operator's restart (pid $holder) held the lock: \"$(show StatusText)\""
	[[ $(show StatusText) == *"waiting for pid $holder"* ]] || fail "StatusText does not say whom it waits for"
fi
ok=
for _ in $(seq 240); do
	case $scenario in
	ro-kubelet-pki)
		# Everything but kubelet.crt: 13 of 14 (the 13 and the API identity).
		[[ $(show StatusText) == "13/14 certs ok"* ]] && ok=1 && break
		;;
	*)
		ct /usr/bin/pkirenewd check >"$work/check.out" 2>&1 && ok=1 && break
		;;
	esac
	sleep 1
done
took=$((SECONDS - installed))
[[ -n $ok ]] || { cat "$work/check.out" 2>/dev/null; ct journalctl -u pkirenewd --no-pager -o cat | tail -30; fail "not renewed within 240 s of the install: \"$(show StatusText)\""; }
say "renewed ${took} s after the install: \"$(show StatusText)\""
if [[ $scenario == day366 ]]; then
	# The host's CLOCK_MONOTONIC, in microseconds: the caller lines it up
	# with its own /readyz samples.
	say "unit started at monotonic $(show ExecMainStartTimestampMonotonic) us"
	ct journalctl -u pkirenewd --no-pager -o json --output-fields=MESSAGE,COMPONENT,CERT,__MONOTONIC_TIMESTAMP | sed 's/^/nspawn-node: journal /'
fi
[[ $(show ActiveState) == active ]] || fail "pkirenewd is $(show ActiveState)"
[[ $(show NRestarts) == 0 ]] || fail "NRestarts=$(show NRestarts)"
say "NRestarts=0"
# The kubelet is restarted last in the round, and check cannot see it
# from the container (its process is the host's): wait for the unit.
for _ in $(seq 120); do
	[[ $(ct systemctl show kubelet -p ActiveEnterTimestampMonotonic --value) != "$kubelet_entered" ]] && break
	sleep 0.5
done
[[ $(ct systemctl show kubelet -p ActiveEnterTimestampMonotonic --value) != "$kubelet_entered" ]] ||
	fail "kubelet.service was not restarted (ActiveEnterTimestamp did not move)"
say "kubelet.service restarted through D-Bus from inside the unit (ActiveEnterTimestamp moved)"
case $scenario in
ro-kubelet-pki)
	code=0
	ct /usr/bin/pkirenewd check >"$work/check.out" 2>&1 || code=$?
	[[ $code == 1 ]] && grep -q "kubelet-serving" "$work/check.out" && grep -q "/var/lib/kubelet/pki" "$work/check.out" ||
		{ cat "$work/check.out"; fail "check: exit $code, want 1 naming kubelet.crt held in /var/lib/kubelet/pki"; }
	ct journalctl -u pkirenewd -p err --no-pager -o cat | grep -q "ReadWritePaths=/var/lib/kubelet/pki" ||
		fail "no Error line with the drop-in for /var/lib/kubelet/pki"
	say "kubelet.crt held (read-only /var/lib/kubelet/pki), named with its drop-in; check exits 1; the rest renewed"
	;;
*)
	if ct journalctl -u pkirenewd --no-pager -o cat | grep -E "renewal failed|read-only file system|not writable"; then
		fail "the journal above says a renewal failed"
	fi
	;;
esac
if [[ $scenario == busy-metrics ]]; then
	# check may be clean while the daemon still finishes its round
	# (STATUS=renewing ...): the status after it says the rest.
	for _ in $(seq 60); do
		[[ $(show StatusText) == *"metrics not served on 127.0.0.1:9795"* ]] && break
		sleep 0.5
	done
	[[ $(show StatusText) == *"metrics not served on 127.0.0.1:9795"* ]] || fail "StatusText does not say the metrics are not served: \"$(show StatusText)\""
	ct journalctl -u pkirenewd -p warning --no-pager -o cat | grep -q "127.0.0.1:9795" || fail "no Warning names 127.0.0.1:9795"
	ct /usr/bin/pkirenewd check | grep -q "NOTE metrics" || fail "check does not say the metrics are not served"
	say "127.0.0.1:9795 taken: a Warning names it, STATUS and check say so, the renewal went through"
fi
if [[ $scenario == lock-held ]]; then
	ct cat /root/restart.log | tail -5 | sed 's/^/nspawn-node:   restart: /'
fi
ct journalctl -u pkirenewd --no-pager -o cat | grep -E "certificate renewed|restarted|healthy|serves" | sed 's/^/nspawn-node:   /' | head -40
