#!/usr/bin/env bash
# Installs the .deb into a Debian bookworm booted under a real systemd
# (systemd-nspawn) and proves the unit works there: active with Type=notify
# honoured, no restarts, structured journal fields, reload, a config edit
# taking effect, remove stops it, purge removes its state.
#
#   bash test/packaging/nspawn.sh dist/pkirenewd_*.deb [RPM UPGRADE_RPM]
#
# With the two .rpm files, the same container then installs the first with
# rpm (Debian's rpm, --nodeps: its database is empty): the scriptlets enable
# and start the unit under the real systemd, an upgrade to the second
# restarts it, an erase stops and disables it and keeps the state.
#
# The bookworm rootfs (debootstrap minbase + systemd, dbus, rpm) is cached as
# a tarball in ${PKIRENEWD_CACHE:-~/.cache/pkirenewd}/rootfs.
set -euo pipefail
# set -e alone would end the script without a word: say where.
trap 'rc=$?; printf "nspawn: FAIL: line %s exited %s\n" "$LINENO" "$rc" >&2' ERR
deb=$(readlink -f "$1")
rpm=${2:+$(readlink -f "$2")}
rpm2=${3:+$(readlink -f "$3")}
cd "$(dirname "$0")/../.."
tag=nspawn
# shellcheck source=test/packaging/lib.sh
. test/packaging/lib.sh

ensure_rootfs

work=$(mktemp -d /var/tmp/pkr-nspawn.XXXXXX)
root=$work/root
name=pkr-$$
cg=pkr-nspawn-$$
nspawn_pid=
trap cleanup EXIT

mkdir -p "$root"
tar -C "$root" -xf "$tarball"
# A node to look after: a kubeadm-shaped PKI issued 300 days ago (so due),
# an empty manifests dir, and no container runtime (the kubelet's pair and
# a stand-in kubelet below).
go run ./test/pkigen -age 7200h -node-name "$name" "$root/etc/kubernetes" >/dev/null
apiserver_before=$(sha256sum "$root/etc/kubernetes/pki/apiserver.crt")
mkdir -p "$root/etc/kubernetes/manifests"
# The admin's copy of admin.conf (ProtectHome=read-only, /root/.kube
# writable) and another user's copy (reported, never written).
mkdir -p "$root/root/.kube" "$root/home/alice/.kube"
cp "$root/etc/kubernetes/admin.conf" "$root/root/.kube/config"
cp "$root/etc/kubernetes/admin.conf" "$root/home/alice/.kube/config"
# What real nodes carry, to be kept under the unit's capability set: a key
# owned by another user (0600, so only CAP_DAC_READ_SEARCH reads it), a key
# with a POSIX ACL, an extended attribute, and alice's copy readable by
# alice alone.
chown 1000:1000 "$root/etc/kubernetes/pki/front-proxy-client.key"
setfacl -m u:65534:r "$root/etc/kubernetes/pki/apiserver.key"
setfattr -n user.pkirenewd-test -v kept "$root/etc/kubernetes/pki/apiserver.crt"
acl_before=$(getfacl -cn "$root/etc/kubernetes/pki/apiserver.key")
mode_before=$(stat -c %A "$root/etc/kubernetes/pki/apiserver.key")
chown 1000:1000 "$root/home/alice/.kube/config"
chmod 0600 "$root/home/alice/.kube/config"
alice_before=$(sha256sum "$root/home/alice/.kube/config")
# The kubelet's side of a stock kubeadm node: its configuration as kubeadm
# writes it (no tlsCertFile, no serverTLSBootstrap: it serves the
# self-signed pair of its cert dir), that pair made at its first start with
# a one-year life, 300 days ago like the rest (so due with the kubeadm set),
# and, the container having no runtime to run a kubelet, a stand-in
# kubelet.service that serves the pair (read again at every handshake, as
# kubelet v1.37 does) and answers healthz.
CGO_ENABLED=0 go build -o "$root/usr/local/bin/kubelet" ./test/packaging/kubeletstub
"$root/usr/local/bin/kubelet" -make "$name" -age 7200h -cert-dir "$root/var/lib/kubelet/pki"
cp test/packaging/kubeadm-kubelet-config.yaml "$root/var/lib/kubelet/config.yaml"
printf '[Unit]\nDescription=kubelet stand-in\n[Service]\nExecStart=/usr/local/bin/kubelet --config=/var/lib/kubelet/config.yaml --cert-dir=/var/lib/kubelet/pki\n[Install]\nWantedBy=multi-user.target\n' >"$root/etc/systemd/system/kubelet.service"
ln -s ../kubelet.service "$root/etc/systemd/system/multi-user.target.wants/kubelet.service"
kubelet_before=$(sha256sum "$root/var/lib/kubelet/pki/kubelet.crt")
# As pkirenewd prints a serial: lower-case hex, no leading zeros.
kubelet_serial_before=$(openssl x509 -in "$root/var/lib/kubelet/pki/kubelet.crt" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f' | sed 's/^0*//')
cp "$deb" "$root/root/pkirenewd.deb"
[[ -z $rpm ]] || cp "$rpm" "$root/root/pkirenewd.rpm"
[[ -z $rpm2 ]] || cp "$rpm2" "$root/root/pkirenewd-upgrade.rpm"

# --private-network: the container needs no network (the packages are copied
# in), and its pkirenewd's metrics listener (127.0.0.1:9795) must not meet
# anything on the host's loopback (two package tests at once did).
boot --private-network

ct env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /root/pkirenewd.deb >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "apt install"; }
say "installed with apt"
for _ in $(seq 50); do
	[[ $(ct systemctl is-active pkirenewd 2>/dev/null) == active ]] && break
	sleep 0.2
done
show() { ct systemctl show pkirenewd -p "$1" --value; }
[[ $(show ActiveState) == active ]] || { ct journalctl -u pkirenewd --no-pager | tail -20; fail "pkirenewd is $(show ActiveState)"; }
[[ $(show Type) == notify ]] || fail "Type=$(show Type)"
[[ $(show NRestarts) == 0 ]] || fail "NRestarts=$(show NRestarts)"
[[ $(ct systemctl is-enabled pkirenewd) == enabled ]] || fail "not enabled"
# The first renewal attempt may still be under way ("renewing ...").
for _ in $(seq 50); do
	status=$(show StatusText)
	[[ $status == *"renewal failed"* ]] && break
	sleep 0.2
done
[[ $status == *"renewal failed"* ]] || fail "StatusText=$status"
say "active (Type=notify, READY seen), enabled, 0 restarts: \"$status\""
# Due, but no container runtime to restart anything with: nothing written.
for _ in $(seq 50); do
	ct journalctl -u pkirenewd --no-pager -o cat | grep -q "renewal failed" && break
	sleep 0.2
done
ct journalctl -u pkirenewd --no-pager -o cat | grep -q "container runtime" || fail "no runtime error logged"
[[ $(sha256sum "$root/etc/kubernetes/pki/apiserver.crt") == "$apiserver_before" ]] || fail "files written without a runtime"
# The kubelet's serving pair needs no static pod restarted: nothing
# unrelated may stop it, so it is renewed alone, and served.
for _ in $(seq 50); do
	[[ $(sha256sum "$root/var/lib/kubelet/pki/kubelet.crt") != "$kubelet_before" ]] && break
	sleep 0.2
done
[[ $(sha256sum "$root/var/lib/kubelet/pki/kubelet.crt") != "$kubelet_before" ]] || fail "kubelet.crt not renewed alone without a runtime"
ct journalctl -u pkirenewd --no-pager -o cat | grep -q "only the kubelet's serving pair" || fail "the serving pair's renewal alone not logged"
# check exits 1 while something is due: only its report is wanted here.
serial() { { ct /usr/bin/pkirenewd check -o json 2>/dev/null || true; } | sed -n "s/.*\"$1\": \"\([0-9a-f]*\)\".*/\1/p"; }
kubelet_serial=$(serial fileSerial)
[[ -n $kubelet_serial && $kubelet_serial != "$kubelet_serial_before" ]] || fail "kubelet.crt's serial $kubelet_serial_before -> $kubelet_serial"
for _ in $(seq 50); do
	[[ $(serial servedSerial) == "$kubelet_serial" ]] && break
	sleep 0.2
done
[[ $(serial servedSerial) == "$kubelet_serial" ]] || fail "the kubelet does not serve the kubelet.crt renewed alone"
say "due, no container runtime: the kubeadm set waits (the error logged, nothing of it written); the kubelet's serving pair renewed alone (serial $kubelet_serial_before -> $kubelet_serial) and served"

ct journalctl -u pkirenewd -o json --no-pager >"$work/journal.json"
for field in '"CERT":"apiserver"' '"NOT_AFTER":' '"RENEW_AT":' '"PATH":"/etc/kubernetes/pki/apiserver.crt"' '"PRIORITY":"6"' '"SYSLOG_IDENTIFIER":"pkirenewd"'; do
	grep -qF "$field" "$work/journal.json" || fail "journal lacks $field"
done
ct journalctl -u pkirenewd CERT=apiserver --no-pager -o cat | grep -q . || fail "journalctl CERT=apiserver finds nothing"
say "journal carries the structured fields (journalctl -u pkirenewd CERT=apiserver works)"

reload() {
	ct systemctl reload pkirenewd || {
		ct systemctl status pkirenewd --no-pager -l | tail -20
		fail "systemctl reload"
	}
	sleep 1
}
reload
ct journalctl -u pkirenewd --no-pager -o cat | grep -q "configuration reloaded" || fail "reload not logged"
[[ $(show ActiveState) == active && $(show NRestarts) == 0 ]] || fail "not active after reload"
# A config edit: renew files only (no runtime here). The reload takes it,
# the renewal goes through under the hardened unit (ProtectSystem=strict,
# ReadWritePaths), and the node is fine again.
echo "restartComponents: false" >>"$root/etc/pkirenewd/config.yaml"
reload
after=
for _ in $(seq 50); do
	after=$(show StatusText)
	[[ $after == "14/14 certs ok"* ]] && break
	sleep 0.2
done
[[ $after == "14/14 certs ok"* ]] || { ct journalctl -u pkirenewd --no-pager -o cat | tail; fail "config edit had no effect: \"$after\""; }
[[ $(sha256sum "$root/etc/kubernetes/pki/apiserver.crt") != "$apiserver_before" ]] || fail "apiserver.crt not renewed"
ls "$root"/var/lib/pkirenewd/backups/*/MANIFEST >/dev/null || fail "no backup in /var/lib/pkirenewd"
[[ $(stat -c %a "$root/etc/kubernetes/pki/apiserver-kubelet-client.key") == 600 ]] || fail "key mode changed"
ct /usr/bin/pkirenewd check >/dev/null || fail "pkirenewd check after the renewal"
cmp -s "$root/root/.kube/config" "$root/etc/kubernetes/admin.conf" || fail "/root/.kube/config not updated with admin.conf"
[[ $(sha256sum "$root/home/alice/.kube/config") == "$alice_before" ]] || fail "another user's copy of admin.conf was written"
ct journalctl -u pkirenewd --no-pager -o cat | grep -q "holds the old admin.conf credentials" || fail "alice's old copy not reported"
[[ $(stat -c %u:%g:%a "$root/etc/kubernetes/pki/front-proxy-client.key") == 1000:1000:600 ]] || fail "front-proxy-client.key lost its owner or mode: $(stat -c %u:%g:%a "$root/etc/kubernetes/pki/front-proxy-client.key")"
[[ $(getfacl -cn "$root/etc/kubernetes/pki/apiserver.key") == "$acl_before" ]] || fail "apiserver.key's ACL changed: $(getfacl -cn "$root/etc/kubernetes/pki/apiserver.key")"
[[ $(stat -c %A "$root/etc/kubernetes/pki/apiserver.key") == "$mode_before" ]] || fail "apiserver.key's mode changed"
[[ $(getfattr --absolute-names --only-values -n user.pkirenewd-test "$root/etc/kubernetes/pki/apiserver.crt" 2>/dev/null) == kept ]] || fail "apiserver.crt lost its user.* attribute"
# The kubelet's serving pair, in /var/lib/kubelet/pki (the unit's write set),
# renewed above, is still the one served.
[[ $(serial fileSerial) == "$kubelet_serial" && $(serial servedSerial) == "$kubelet_serial" ]] || fail "the kubelet does not serve the renewed kubelet.crt"
! ct journalctl -u pkirenewd -p err --no-pager -o cat | grep -q "read-only file system" || fail "a read-only directory under the shipped unit"
say "kubelet.crt renewed in /var/lib/kubelet/pki under the shipped unit (serial $kubelet_serial_before -> $kubelet_serial) and served"
say "reload logged; config edit took effect; 14 certificates (the API identity among them) renewed under the hardened unit: \"$after\"; /root/.kube/config followed admin.conf, /home/alice's copy (0600, hers) reported; another owner, an ACL and an xattr kept"

# A directory the configuration writes and the unit does not list: the
# reload says so at once, at Error, with the drop-in that fixes it; check,
# run outside the sandbox, sees it inside. The fix, run as printed, works.
mkdir -p "$root/srv/kube"
cp "$root/etc/kubernetes/admin.conf" "$root/srv/kube/config"
echo "adminKubeconfigCopies: [/srv/kube/config]" >>"$root/etc/pkirenewd/config.yaml"
reload
line=
for _ in $(seq 25); do
	line=$(ct journalctl -u pkirenewd -p err --no-pager -o cat | grep -F "/srv/kube: read-only file system" | tail -1 || true)
	[[ -n $line ]] && break
	sleep 0.2
done
[[ $line == *"ReadWritePaths=/srv/kube"* ]] || fail "no Error line with the drop-in for /srv/kube: $line"
rc=0
ct /usr/bin/pkirenewd check >"$work/check.out" 2>/dev/null || rc=$?
[[ $rc -ge 1 ]] && grep -q "^UNWRITABLE in pkirenewd.service (pid [0-9]*): /srv/kube" "$work/check.out" || fail "check (exit $rc) does not report /srv/kube: $(grep UNWRITABLE "$work/check.out")"
fix=${line#*drop-in: }
fix=${fix%% (if the file system*}
ct sh -c "$fix" || fail "the printed fix failed: $fix"
for _ in $(seq 50); do
	[[ $(show ActiveState) == active ]] && break
	sleep 0.2
done
ct /usr/bin/pkirenewd check >/dev/null || fail "check after the drop-in: $(ct /usr/bin/pkirenewd check 2>&1 | grep UNWRITABLE)"
say "an unlisted directory (/srv/kube) reported at the reload with its fix and by check (exit $rc); the printed drop-in fixed it"

ct env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q pkirenewd >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "apt remove"; }
[[ $(ct systemctl is-active pkirenewd 2>/dev/null || true) != active ]] || fail "still active after apt remove"
[[ -d $root/var/lib/pkirenewd ]] || fail "state removed by apt remove"
ct env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q pkirenewd >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "apt purge"; }
[[ ! -e $root/var/lib/pkirenewd ]] || fail "state kept after apt purge"
say "apt remove stopped it and kept its state; apt purge removed the state"

if [[ -n $rpm && -n $rpm2 ]]; then
	ct rpm -i --nodeps /root/pkirenewd.rpm >"$work/rpm.log" 2>&1 || { cat "$work/rpm.log"; fail "rpm -i"; }
	for _ in $(seq 50); do
		[[ $(ct systemctl is-active pkirenewd 2>/dev/null) == active ]] && break
		sleep 0.2
	done
	[[ $(show ActiveState) == active ]] || { ct journalctl -u pkirenewd --no-pager | tail -20; fail "after rpm -i pkirenewd is $(show ActiveState)"; }
	[[ $(ct systemctl is-enabled pkirenewd) == enabled ]] || fail "rpm -i: not enabled"
	pid_before=$(show MainPID)
	say "rpm -i: the scriptlet enabled and started it (MainPID $pid_before)"
	ct rpm -U --nodeps /root/pkirenewd-upgrade.rpm >"$work/rpm.log" 2>&1 || { cat "$work/rpm.log"; fail "rpm -U"; }
	for _ in $(seq 50); do
		[[ $(show ActiveState) == active && $(show MainPID) != "$pid_before" && $(show MainPID) != 0 ]] && break
		sleep 0.2
	done
	[[ $(show ActiveState) == active ]] || fail "after rpm -U pkirenewd is $(show ActiveState)"
	[[ $(show MainPID) != "$pid_before" ]] || fail "rpm -U did not restart it (MainPID still $pid_before)"
	ct rpm -q pkirenewd | grep -q '\.1-' || fail "rpm -U: $(ct rpm -q pkirenewd) is not the upgrade"
	say "rpm -U: upgraded to $(ct rpm -q pkirenewd) and restarted (MainPID $pid_before -> $(show MainPID))"
	ct rpm -e pkirenewd >"$work/rpm.log" 2>&1 || { cat "$work/rpm.log"; fail "rpm -e"; }
	[[ $(ct systemctl is-active pkirenewd 2>/dev/null || true) != active ]] || fail "still active after rpm -e"
	[[ $(ct systemctl is-enabled pkirenewd 2>/dev/null || true) != enabled ]] || fail "still enabled after rpm -e"
	[[ -d $root/var/lib/pkirenewd ]] || fail "rpm -e removed the state (backups of keys are the operator's to delete)"
	say "rpm -e: stopped and disabled it, kept the state"
fi
say "PASS in $((SECONDS - start)) s"
