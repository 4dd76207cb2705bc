#!/usr/bin/env bash
# make conformance: Mosquitto's own broker tests (test/broker in Debian's
# source package of mosquitto) against midge, or against the broker named
# by CONFORMANCE_BROKER (e.g. /usr/sbin/mosquitto, for comparison).
#
#   1. installs what it needs (dpkg-dev, python3 with psutil, openssl,
#      iproute2) with apt-get;
#   2. fetches the source package once, through a private apt configuration
#      under target/conformance/apt (the machine's apt state is untouched),
#      and unpacks it into target/conformance/pkg; later runs reuse it;
#   3. generates the suite's test certificates with its own test/ssl/gen.sh
#      when they are missing or out of date;
#   4. copies the suite into target/conformance/work-<broker>, with the broker under
#      test at src/mosquitto where the suite looks for it;
#   5. runs tests/conformance/runner.py, one test at a time, as the user
#      nobody inside new network, mount and PID namespaces: loopback is the
#      only interface, /tmp is private, and no process outlives the run;
#   6. compares the results with tests/conformance/expected.txt.
#
# Runs as root (or with passwordless sudo), with no standard input.
# Nothing of Mosquitto's source is kept in the repository.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

VERSION=2.0.11-1.2+deb12u2
UPSTREAM=2.0.11
BASE=$ROOT/target/conformance
APT_DIR=$BASE/apt
PKG_DIR=$BASE/pkg
TREE=$PKG_DIR/mosquitto-$UPSTREAM
BROKER=${CONFORMANCE_BROKER:-}
TEST_TIMEOUT=${CONFORMANCE_TIMEOUT:-60}
RUN_USER=nobody
export DEBIAN_FRONTEND=noninteractive

log() { printf 'conformance: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        exec sudo -n --preserve-env=CONFORMANCE_BROKER,CONFORMANCE_TIMEOUT,CONFORMANCE_ONLY,CARGO,PATH \
            bash "$0" "$@"
    fi
    log "needs root (or passwordless sudo): network namespaces and apt-get"
    exit 1
fi

# --- 1. Debian packages --------------------------------------------------
missing=()
command -v dpkg-source >/dev/null 2>&1 || missing+=(dpkg-dev)
[ -x /usr/bin/python3 ] || missing+=(python3)
/usr/bin/python3 -c 'import psutil' >/dev/null 2>&1 || missing+=(python3-psutil)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
{ command -v unshare && command -v setpriv; } >/dev/null 2>&1 || missing+=(util-linux)
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_install() {
        apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" </dev/null
    }
    if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
        apt-get -o DPkg::Lock::Timeout=600 update </dev/null
    fi
    if ! apt_install; then
        apt-get -o DPkg::Lock::Timeout=600 update </dev/null
        apt_install
    fi
fi

# --- 2. The source package, through a private apt configuration -----------
if [ ! -f "$TREE/.conformance-unpacked" ]; then
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$PKG_DIR"
    cat >"$APT_DIR/sources.list" <<'LIST'
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
LIST
    mkdir -p "$APT_DIR/empty"
    APT_OPTS=(
        -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
        -o "Dir::Etc::SourceParts=$APT_DIR/empty"
        -o "Dir::State::Lists=$APT_DIR/lists"
        -o "Dir::Cache=$APT_DIR/cache"
        # The lists and the download land in root's directories under
        # target/, which apt's unprivileged _apt user cannot write.
        -o "APT::Sandbox::User=root"
    )
    dsc=$PKG_DIR/mosquitto_$VERSION.dsc
    if [ ! -f "$dsc" ]; then
        log "fetching the source package mosquitto $VERSION (private apt lists in $APT_DIR)"
        apt-get "${APT_OPTS[@]}" update </dev/null >&2
        (cd "$PKG_DIR" && apt-get "${APT_OPTS[@]}" source --download-only "mosquitto=$VERSION" </dev/null >&2)
    fi
    rm -rf "$TREE"
    (cd "$PKG_DIR" && dpkg-source --no-check -x "$(basename "$dsc")" "mosquitto-$UPSTREAM" >&2)
    touch "$TREE/.conformance-unpacked"
fi

# --- 3. Test certificates --------------------------------------------------
# The source package ships none (Debian removes the generated ones); gen.sh
# makes them, with a signing CA whose CRL is valid for 30 days. The
# certificates meant to be expired (server-expired, client-expired) are
# left out of the check.
certs_fresh() {
    local f
    [ -f "$TREE/test/ssl/all-ca.crt" ] || return 1
    for f in "$TREE"/test/ssl/*.crt; do
        case $f in *-expired.crt) continue ;; esac
        openssl x509 -noout -checkend 86400 -in "$f" >/dev/null 2>&1 || return 1
    done
    for f in "$TREE"/test/ssl/crl*.pem; do
        next=$(openssl crl -noout -nextupdate -in "$f" 2>/dev/null | sed 's/^nextUpdate=//') || return 1
        [ -n "$next" ] || return 1
        [ "$(date -d "$next" +%s)" -gt "$(($(date +%s) + 86400))" ] || return 1
    done
}
if ! certs_fresh; then
    log "generating the test certificates with test/ssl/gen.sh"
    (cd "$TREE/test/ssl" && sh ./gen.sh >gen.log 2>&1) || { cat "$TREE/test/ssl/gen.log" >&2; exit 1; }
    certs_fresh || { log "test/ssl/gen.sh left missing or expired certificates"; exit 1; }
fi

# --- 4. The working copy, the broker at src/mosquitto ----------------------
if [ -z "$BROKER" ]; then
    log "building target/release/midge"
    ${CARGO:-cargo} build --release --locked >&2
    BROKER=$ROOT/target/release/midge
    BROKER_NAME=midge
else
    BROKER_NAME=$(basename "$BROKER")
    if [ ! -x "$BROKER" ] && [ "$BROKER" = /usr/sbin/mosquitto ]; then
        log "installing Debian's mosquitto with tests/setup.sh"
        bash tests/setup.sh </dev/null >&2
    fi
fi
[ -x "$BROKER" ] || { log "no broker at $BROKER"; exit 1; }
WORK=$BASE/work-$BROKER_NAME

rm -rf "$WORK"
mkdir -p "$WORK/tree/src" "$WORK/results"
cp -a "$TREE/test" "$WORK/tree/test"
# Debian's deb-test.patch points the suite at the installed broker; point it
# back at the tree's src/mosquitto, as upstream has it.
sed -i 's#/usr/sbin/mosquitto#../../src/mosquitto#g' "$WORK"/tree/test/*.py "$WORK"/tree/test/broker/*.py
if [ "$BROKER_NAME" = midge ]; then
    # A copy, so that the unprivileged user reads it wherever the checkout is;
    # named mosquitto, which midge treats as the broker (not a tool).
    install -m 755 "$BROKER" "$WORK/tree/src/mosquitto"
    # midge's max_packet_size defaults to Mosquitto 2.1's 2,000,000 bytes,
    # which MQTT 5 CONNACKs carry: the suite's CONNACK helper gets the
    # property as the 2.1 suite's helper has it (docs/CONFORMANCE.md).
    /usr/bin/python3 tests/conformance/connack_2_1.py "$WORK/tree/test/mosq_test.py"
else
    ln -s "$BROKER" "$WORK/tree/src/mosquitto"
fi
cp tests/conformance/runner.py tests/conformance/sitecustomize.py tests/conformance/expected.txt "$WORK/"
chown -R "$RUN_USER:" "$WORK"

# --- 5. The run, in namespaces ---------------------------------------------
log "running test/broker against $BROKER as $RUN_USER, loopback only"
set +e
# unshare: new network namespace (only lo, down until we raise it), new
# mount namespace (private propagation) for a private /tmp, and a new PID
# namespace whose end kills whatever is left in it.
unshare --net --mount --pid --fork --mount-proc --propagation private \
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin WORK="$WORK" RUN_USER="$RUN_USER" \
        BROKER_NAME="$BROKER_NAME" SHOWN_RESULTS="${WORK#"$ROOT"/}/results" TEST_TIMEOUT="$TEST_TIMEOUT" ONLY="${CONFORMANCE_ONLY:-}" \
    bash -euc '
        ip link set lo up
        mount -t tmpfs -o mode=1777,size=256m conformance-tmp /tmp
        mkdir -p /tmp/conformance
        mount --bind "$WORK" /tmp/conformance
        cd /tmp/conformance
        exec setpriv --reuid="$RUN_USER" --regid="$(id -g "$RUN_USER")" --clear-groups \
            --no-new-privs --inh-caps=-all --bounding-set=-all \
            env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 \
            /usr/bin/python3 -u runner.py --tree tree --expected expected.txt \
                --results results --broker "$BROKER_NAME" --shown-results "$SHOWN_RESULTS" --timeout "$TEST_TIMEOUT" ${ONLY:+--only "$ONLY"}
    '
rc=$?
set -e
exit $rc
