#!/usr/bin/env bash
# Installs the amd64 package into a throwaway Debian bookworm root made with
# debootstrap under target/, never into this machine, and checks what a user
# gets: the system user, the state directory, the unit and its enablement,
# the conffiles, a broker that starts as the midge user and serves MQTT on
# loopback, a local config change kept across a reinstall, and a purge that
# removes the state but keeps the user. Then the switch of docs/MIGRATING.md:
# Debian's mosquitto set up as the common how-tos do (password file, ACL,
# TLS listener, persistence), replaced by midge with the guide's own
# commands, and back.
#
# Needs root (debootstrap, chroot), the package (make deb), debootstrap
# (make setup) and mosquitto-clients (make test-deps); the root fetches
# mosquitto, openssl and sudo from MIRROR.
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
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
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

# --- from Mosquitto to midge and back, as docs/MIGRATING.md says --------------

# Debian's mosquitto in the root; policy-rc.d keeps its init script from
# starting it on the machine's port 1883.
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
mount -t proc proc "$ROOT/proc"
{ in_root apt-get -q update && in_root env DEBIAN_FRONTEND=noninteractive apt-get -q -y \
    install --no-install-recommends mosquitto openssl sudo; } >"$WORK/apt.log" 2>&1 ||
    { tail -n 20 "$WORK/apt.log"; fail "apt-get install mosquitto in the root"; }
log "installed $(in_root dpkg-query -W -f='mosquitto ${Version}' mosquitto) in the root"

# Set up as the seed how-tos do: a password file made with mosquitto_passwd,
# no anonymous clients, an ACL file, their own CA and a TLS listener; the
# listeners on free loopback ports instead of 1883 and 8883.
port=$(free_port)
tls_port=$(free_port)
grep -qx 'persistence true' "$ROOT/etc/mosquitto/mosquitto.conf" ||
    fail "Debian's mosquitto.conf has no 'persistence true'"
in_root mosquitto_passwd -c -b /etc/mosquitto/mqttpass sensor sensorpw || fail "mosquitto_passwd -c"
in_root mosquitto_passwd -b /etc/mosquitto/mqttpass viewer viewerpw || fail "mosquitto_passwd"
cat >"$ROOT/etc/mosquitto/mqtt_acl" <<'ACL'
# Clients without a user name (refused here: allow_anonymous false).
topic read #

user sensor
topic write sensors/#
topic read status/#

user viewer
topic read #

pattern readwrite user/%u/#
pattern readwrite pub/playground/#
ACL
in_root sh -ec 'cd /etc/mosquitto/certs
    openssl req -new -x509 -days 1999 -extensions v3_ca -nodes -subj "/CN=Test CA" \
        -keyout ca.key -out ca.crt
    openssl genrsa -out server.key 2048
    openssl req -out server.csr -key server.key -new -subj "/CN=localhost"
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out server.crt -days 365' >"$WORK/openssl.log" 2>&1 ||
    { cat "$WORK/openssl.log"; fail "openssl"; }
# Mosquitto loads the key after it dropped to its user: the key is its own.
in_root chown mosquitto:mosquitto /etc/mosquitto/certs/server.key
log "mosquitto_passwd wrote mqttpass $(in_root stat -c '%U:%G %a' /etc/mosquitto/mqttpass); server.key is $(in_root stat -c '%U:%G %a' /etc/mosquitto/certs/server.key)"
# One seed names its files in conf.d, the other adds its listeners to the
# end of mosquitto.conf, after include_dir.
printf 'allow_anonymous false\npassword_file /etc/mosquitto/mqttpass\nacl_file /etc/mosquitto/mqtt_acl\n' \
    >"$ROOT/etc/mosquitto/conf.d/auth.conf"
cat >>"$ROOT/etc/mosquitto/mosquitto.conf" <<CONF
listener $port 127.0.0.1
listener $tls_port 127.0.0.1
cafile /etc/mosquitto/certs/ca.crt
keyfile /etc/mosquitto/certs/server.key
certfile /etc/mosquitto/certs/server.crt
CONF

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
mosquitto_uid=$(in_root id -u mosquitto)
# Starts Mosquitto as its unit does (as root, with the unit's directories;
# it drops to the user mosquitto itself) and returns once both ports listen
# and it runs as mosquitto. Its log is /var/log/mosquitto/mosquitto.log.
start_mosquitto() {
    in_root install -d -m 0740 -o mosquitto /var/log/mosquitto /run/mosquitto
    chroot "$ROOT" /usr/sbin/mosquitto -c /etc/mosquitto/mosquitto.conf >"$WORK/mosquitto.out" 2>&1 &
    broker_pid=$!
    for _ in $(seq 100); do
        if port_open "$port" && port_open "$tls_port" &&
            [ "$(stat -c %u "/proc/$broker_pid")" = "$mosquitto_uid" ]; then
            return
        fi
        kill -0 "$broker_pid" 2>/dev/null ||
            { cat "$WORK/mosquitto.out" "$ROOT/var/log/mosquitto/mosquitto.log"; fail "mosquitto exited"; }
        sleep 0.1
    done
    cat "$ROOT/var/log/mosquitto/mosquitto.log"
    fail "mosquitto did not listen on ports $port and $tls_port as the user mosquitto"
}
stop_broker() {
    kill -TERM "$broker_pid"
    wait "$broker_pid" || fail "$1 did not exit cleanly on SIGTERM"
    broker_pid=""
}
# Every retained message a '#' subscriber gets, sorted, one "topic payload"
# a line, in $1.
retained() {
    local rc=0
    mosquitto_sub -h 127.0.0.1 -p "$port" -u viewer -P viewerpw -t '#' -v --retained-only -W 3 \
        >"$1.tmp" 2>"$1.err" || rc=$?
    [ "$rc" = 0 ] || [ "$rc" = 27 ] ||
        fail "mosquitto_sub for the retained messages exited with $rc: $(cat "$1.err")"
    sort "$1.tmp" >"$1"
    rm "$1.tmp" "$1.err"
}
# What each broker must show: no anonymous client or wrong password, the
# ACL (sensor may only read status/#, viewer may write nowhere but its own
# tree), and the TLS listener with the CA. $1 names the broker.
check_auth_acl_tls() {
    local out rc=0
    out=$(mosquitto_pub -h 127.0.0.1 -p "$port" -t status/x -m anonymous 2>&1) || rc=$?
    [ "$rc" != 0 ] && grep -q 'not authorised' <<<"$out" ||
        fail "$1 let an anonymous client publish (exit $rc: $out)"
    rc=0
    out=$(mosquitto_pub -h 127.0.0.1 -p "$port" -u sensor -P wrong -t status/x -m x 2>&1) || rc=$?
    [ "$rc" != 0 ] && grep -q 'not authorised' <<<"$out" ||
        fail "$1 took a wrong password (exit $rc: $out)"
    mosquitto_pub -h 127.0.0.1 -p "$port" -u sensor -P sensorpw -q 1 -r -t "status/$1" -m denied
    mosquitto_pub -h 127.0.0.1 -p "$port" -u viewer -P viewerpw -q 1 -r -t sensors/room1 -m denied
    mosquitto_sub -h localhost -p "$tls_port" --cafile "$ROOT/etc/mosquitto/certs/ca.crt" \
        -u viewer -P viewerpw -t sensors/room2 -C 1 -W 10 >"$WORK/tls.out" ||
        fail "$1: mosquitto_sub over TLS with --cafile got nothing"
    [ "$(cat "$WORK/tls.out")" = "reading 2" ] || fail "$1: over TLS, sensors/room2 is '$(cat "$WORK/tls.out")'"
}

start_mosquitto
for i in $(seq 10); do
    mosquitto_pub -h 127.0.0.1 -p "$port" -u sensor -P sensorpw -q 1 -r -t "sensors/room$i" -m "reading $i"
done
mosquitto_pub -h 127.0.0.1 -p "$port" -u viewer -P viewerpw -q 1 -r -t user/viewer/note -m "viewer's own"
mosquitto_pub -h 127.0.0.1 -p "$port" -u sensor -P sensorpw -q 1 -r -t pub/playground/hello -m playground
# A persistent session (clean session off) with a message queued while it
# is away.
watcher() { mosquitto_sub -h 127.0.0.1 -p "$port" -u viewer -P viewerpw -c -i watcher -q 1 -t sensors/alarm "$@"; }
watcher -E || fail "the persistent subscriber could not subscribe"
mosquitto_pub -h 127.0.0.1 -p "$port" -u sensor -P sensorpw -q 1 -t sensors/alarm -m "queued while away"
check_auth_acl_tls mosquitto
retained "$WORK/retained.mosquitto"
n=$(wc -l <"$WORK/retained.mosquitto")
[ "$n" = 12 ] || { cat "$WORK/retained.mosquitto"; fail "Mosquitto holds $n retained messages, not 12"; }
grep -qx 'sensors/room1 reading 1' "$WORK/retained.mosquitto" || fail "Mosquitto let viewer write sensors/room1"
stop_broker mosquitto
db=$ROOT/var/lib/mosquitto/mosquitto.db
[ -s "$db" ] || fail "Mosquitto wrote no $db"
sum=$(sha256sum <"$db")
log "Mosquitto (port $port, TLS $tls_port): $n retained messages, passwords, ACL and TLS work; it wrote mosquitto.db (mode $(stat -c %a "$db"), sha256 ${sum%% *})"

# The switch: Mosquitto is stopped (step 1); midge installed with apt
# (step 2); then steps 3 to 5 and the check of step 6, each block of the
# guide marked for this test run as it stands.
in_root sh -c 'cd /tmp && apt-get -q -y install ./midge.deb' >"$WORK/apt-midge.log" 2>&1 ||
    { tail -n 20 "$WORK/apt-midge.log"; fail "apt install ./midge.deb"; }
rm -f "$WORK"/guide-*.sh
awk -v dir="$WORK" '
    /^<!-- install-test -->$/ { marked = 1; next }
    marked && /^```sh$/ { out = sprintf("%s/guide-%d.sh", dir, ++n); marked = 0; next }
    out && /^```$/ { close(out); out = ""; next }
    out { print > out }' docs/MIGRATING.md
blocks=$(ls "$WORK"/guide-*.sh 2>/dev/null | wc -l)
[ "$blocks" = 4 ] || fail "docs/MIGRATING.md has $blocks blocks marked install-test, not 4"
for i in $(seq "$blocks"); do
    cp "$WORK/guide-$i.sh" "$ROOT/tmp/guide.sh"
    in_root sh -e /tmp/guide.sh >"$WORK/guide-$i.out" 2>&1 ||
        { cat "$WORK/guide-$i.sh" "$WORK/guide-$i.out"; fail "the guide's block $i failed"; }
done
grep -qx 'configuration ok' "$WORK/guide-$blocks.out" || fail "the guide's check: $(cat "$WORK/guide-$blocks.out")"
log "the guide's $blocks blocks ran; midge -t as the user midge: configuration ok"

start_broker "$WORK/broker-migrated.log"
grep -q "Restored 12 retained message(s) and 1 persistent session(s)" "$WORK/broker-migrated.log" ||
    { cat "$WORK/broker-migrated.log"; fail "midge did not restore Mosquitto's 12 retained messages and the session"; }
[ "$(watcher -C 1 -W 10)" = "queued while away" ] || fail "midge did not deliver the session's queued message"
log "midge: $(grep -o 'Restored [^.]*' "$WORK/broker-migrated.log"); the session's queued message arrived"
check_auth_acl_tls midge
retained "$WORK/retained.midge"
diff "$WORK/retained.mosquitto" "$WORK/retained.midge" ||
    fail "midge's retained messages differ from Mosquitto's"
log "midge (port $port, TLS $tls_port): $(wc -l <"$WORK/retained.midge") retained messages, the same as Mosquitto's; passwords, ACL and TLS work"
mosquitto_pub -h 127.0.0.1 -p "$port" -u sensor -P sensorpw -q 1 -r -t sensors/under-midge -m new
stop_broker midge
[ "$(sha256sum <"$db")" = "$sum" ] || fail "midge changed Mosquitto's $db"
[ "$(sha256sum <"$ROOT/var/lib/midge/mosquitto.db")" = "$sum" ] || fail "midge changed its copy of mosquitto.db"
[ -s "$ROOT/var/lib/midge/mosquitto.db.midge" ] || fail "midge saved no /var/lib/midge/mosquitto.db.midge"
log "mosquitto.db untouched (sha256 ${sum%% *}, and its copy); midge saved mosquitto.db.midge"

# The way back: Mosquitto on its own files, with what it had.
start_mosquitto
retained "$WORK/retained.back"
diff "$WORK/retained.mosquitto" "$WORK/retained.back" ||
    fail "back on Mosquitto, the retained messages differ from before the switch"
stop_broker mosquitto
log "back on Mosquitto: $(wc -l <"$WORK/retained.back") retained messages, as before the switch (not sensors/under-midge)"
log "ok"
