#!/usr/bin/env bash
# Installs the amd64 package into a throwaway Debian bookworm root made with
# debootstrap under target/, never into this machine, and checks what a user
# gets: the system user, the state directory, the unit and its enablement,
# the conffiles, a broker that starts as the midge user and serves MQTT on
# loopback, a local config change kept across a reinstall, and a purge that
# removes the state but keeps the user.
#
# Needs root (debootstrap, chroot), the package (make deb), debootstrap
# (make setup) and mosquitto-clients (make test-deps).
set -euo pipefail
cd "$(dirname "$0")/.."

MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
WORK=$PWD/target/deb-install
ROOT=$WORK/root

log() { printf 'debian/install-test.sh: %s\n' "$*"; }
fail() {
    log "FAILED: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap and chroot)"
deb=$(ls target/deb/midge_*_amd64.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || fail "no target/deb/midge_*_amd64.deb: run make deb"
for tool in debootstrap mosquitto_pub mosquitto_sub; do
    command -v "$tool" >/dev/null || fail "$tool is missing: run make setup test-deps"
done

broker_pid=""

# Anything mounted below the root (debootstrap mounts /proc and /sys while
# it works) is unmounted before the tree is removed; if that fails, the
# tree stays rather than risk deleting through a mount.
remove_root() {
    local m
    for m in $(awk -v r="$ROOT" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount "$m" || umount -l "$m" || true
    done
    if awk -v r="$ROOT" 'index($2, r) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
        log "something is still mounted under $ROOT; not removing it" >&2
        return 1
    fi
    rm -rf "$ROOT"
}

cleanup() {
    local rc=$?
    [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
    remove_root || true
    exit "$rc"
}
trap cleanup EXIT

in_root() { chroot "$ROOT" "$@"; }

# --- a fresh bookworm root -----------------------------------------------------

remove_root
mkdir -p "$WORK/cache"
log "debootstrap $SUITE into $ROOT"
t0=$(date +%s)
debootstrap --variant=minbase --include=adduser --cache-dir="$WORK/cache" \
    "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -n 20 "$WORK/debootstrap.log"; fail "debootstrap"; }
log "root ready in $(($(date +%s) - t0)) s"

# --- install ----------------------------------------------------------------

cp "$deb" "$ROOT/tmp/midge.deb"
in_root dpkg -i /tmp/midge.deb || fail "dpkg -i"
in_root dpkg-query -W -f='${Status}\n' midge | grep -qx 'install ok installed' ||
    fail "midge is not installed"

# The system user and group, as Debian's mosquitto has them.
pw=$(in_root getent passwd midge) || fail "no user midge"
IFS=: read -r _ _ uid gid _ home shell <<<"$pw"
[ "$home" = /var/lib/midge ] || fail "home of midge is $home"
[ "$shell" = /usr/sbin/nologin ] || fail "shell of midge is $shell"
[ "$uid" -lt 1000 ] || fail "midge is not a system user (uid $uid)"
in_root getent group midge >/dev/null || fail "no group midge"
[ "$(stat -c '%u:%g %a' "$ROOT/var/lib/midge")" = "$uid:$gid 750" ] ||
    fail "/var/lib/midge is $(stat -c '%u:%g %a' "$ROOT/var/lib/midge")"

# The unit, and its enablement by deb-systemd-helper.
unit=$ROOT/lib/systemd/system/midge.service
for line in Type=notify User=midge 'ExecStartPre=/usr/sbin/midge -t -c /etc/midge/midge.conf' \
    'ExecStart=/usr/sbin/midge -c /etc/midge/midge.conf' 'ExecReload=/bin/kill -HUP $MAINPID' \
    LimitNOFILE=65536 NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes; do
    grep -qxF "$line" "$unit" || fail "the unit has no line '$line'"
done
[ -L "$ROOT/etc/systemd/system/multi-user.target.wants/midge.service" ] ||
    fail "midge.service is not enabled"

# The conffiles dpkg tracks.
conffiles=$(in_root dpkg-query -W -f='${Conffiles}\n' midge)
for f in /etc/midge/midge.conf /etc/midge/conf.d/README; do
    grep -q "^ $f " <<<"$conffiles" || fail "$f is not a conffile: $conffiles"
done
log "installed: user midge ($uid), /var/lib/midge, unit enabled, conffiles registered"

# --- the broker, as the service would run it (without systemd) ---------------

# chroot's --userspec with numbers: no name lookup on either side.
as_midge() { chroot --userspec="$uid:$gid" "$ROOT" "$@"; }

as_midge /usr/sbin/midge -t -c /etc/midge/midge.conf | grep -qx 'configuration ok' ||
    fail "midge -t rejects the installed config"

# The installed config with a local listener in conf.d, as docs/INSTALL.md
# says, on a free port instead of 1883, as the midge user.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# A password file made with the packaged midge_passwd, readable by the
# midge group, as docs/INSTALL.md says.
in_root midge_passwd -c -b /etc/midge/passwd user1 secret || fail "midge_passwd"
in_root chgrp midge /etc/midge/passwd && in_root chmod 0640 /etc/midge/passwd
printf 'listener %s 127.0.0.1\nallow_anonymous false\npassword_file /etc/midge/passwd\n' \
    "$port" >"$ROOT/etc/midge/conf.d/local.conf"
# Starts the installed broker as midge, its log in $1; sets broker_pid and
# returns once it listens on $port with its state loaded.
start_broker() {
    # (chroot itself, not as_midge, so that $! is the broker's pid after exec.)
    chroot --userspec="$uid:$gid" "$ROOT" /usr/sbin/midge -c /etc/midge/midge.conf \
        >"$1" 2>&1 &
    broker_pid=$!
    for _ in $(seq 100); do
        grep -q "Opening ipv4 listen socket on port $port" "$1" && grep -q " running" "$1" && return
        kill -0 "$broker_pid" 2>/dev/null || { cat "$1"; fail "the broker exited"; }
        sleep 0.1
    done
    cat "$1"
    fail "the broker did not listen on port $port"
}
start_broker "$WORK/broker.log"
[ "$(stat -c %u "/proc/$broker_pid")" = "$uid" ] || fail "the broker does not run as uid $uid"

# A retained message, then a subscriber that must get it: Debian's client
# one way, the packaged midge_sub (run inside the root) the other.
mosquitto_pub -h 127.0.0.1 -p "$port" -u user1 -P secret -t install/test -r \
    -m "hello from the package" || fail "mosquitto_pub could not publish"
in_root midge_sub -h 127.0.0.1 -p "$port" -u user1 -P secret -t install/test -C 1 -W 10 \
    >"$WORK/sub.out" || fail "midge_sub got nothing"
[ "$(cat "$WORK/sub.out")" = "hello from the package" ] || fail "midge_sub got '$(cat "$WORK/sub.out")'"
rc=0
in_root midge_pub -h 127.0.0.1 -p "$port" -t install/test -m anonymous 2>/dev/null || rc=$?
[ "$rc" = 5 ] || fail "midge_pub without a password exited with $rc, not 5 (not authorised)"
log "the packaged midge_passwd, midge_sub and midge_pub work against it"
log "broker pid $broker_pid (uid $uid) served a message on 127.0.0.1:$port"
kill -TERM "$broker_pid"
wait "$broker_pid" || fail "the broker did not exit cleanly on SIGTERM"
broker_pid=""

# --- persistence on, as Debian's mosquitto ships it ---------------------------

for line in 'persistence true' 'persistence_location /var/lib/midge/' 'persistence_journal true'; do
    grep -qxF "$line" "$ROOT/etc/midge/midge.conf" || fail "the installed config has no line '$line'"
done
[ -s "$ROOT/var/lib/midge/midge.db" ] || fail "no /var/lib/midge/midge.db after SIGTERM"
[ "$(stat -c %u "$ROOT/var/lib/midge/midge.db")" = "$uid" ] || fail "midge.db is not owned by midge"
# Restarted, it still has the retained message.
start_broker "$WORK/broker2.log"
in_root midge_sub -h 127.0.0.1 -p "$port" -u user1 -P secret -t install/test -C 1 -W 10 \
    >"$WORK/sub2.out" || { cat "$WORK/broker2.log"; fail "after a restart, midge_sub got nothing"; }
[ "$(cat "$WORK/sub2.out")" = "hello from the package" ] ||
    fail "after a restart, midge_sub got '$(cat "$WORK/sub2.out")'"
kill -TERM "$broker_pid"
wait "$broker_pid" || fail "the restarted broker did not exit cleanly on SIGTERM"
broker_pid=""
log "persistence on in /var/lib/midge with the journal: the retained message survived a restart"

# --- a local change survives a reinstall --------------------------------------

echo "max_keepalive 600" >>"$ROOT/etc/midge/midge.conf"
in_root dpkg -i --force-confold /tmp/midge.deb >/dev/null || fail "reinstall"
grep -qx "max_keepalive 600" "$ROOT/etc/midge/midge.conf" || fail "the local config change was lost"
log "reinstall kept the local change to midge.conf"

# --- purge --------------------------------------------------------------------

touch "$ROOT/var/lib/midge/state.db"
# The user's own file in conf.d is theirs to remove; dpkg keeps it.
rm "$ROOT/etc/midge/conf.d/local.conf" "$ROOT/etc/midge/passwd"
in_root dpkg --purge midge || fail "dpkg --purge"
for gone in /usr/sbin/midge /var/lib/midge /etc/midge /lib/systemd/system/midge.service \
    /etc/systemd/system/multi-user.target.wants/midge.service; do
    [ ! -e "$ROOT$gone" ] || fail "$gone is still there after purge"
done
in_root getent passwd midge >/dev/null || fail "purge removed the user midge"
log "purge removed the state, the config and the unit, and kept the user"
log "ok"
