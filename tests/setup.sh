#!/usr/bin/env bash
# Installs what the integration tests need, then gets out of the way:
#   - Debian's mosquitto (the reference broker for comparison tests) and
#     mosquitto-clients (mosquitto_pub/mosquitto_sub), without letting the
#     package start a system mosquitto on port 1883;
#   - Debian's chromium, and nodejs with npm, for the browser test of
#     tests/websockets.rs (it installs the `mqtt` npm package into target/);
#   - .venv with paho-mqtt 2.1.0, for the Python client tests, and
#     python-ecdsa 0.19.1, for the signed-message interop tests.
#
# Idempotent: a second run installs nothing. Runs as root (or with
# passwordless sudo) on Debian 12, with no standard input (CI=true).
# `make test` runs it before `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

PAHO_VERSION=2.1.0
ECDSA_VERSION=0.19.1
PYTHON=${PYTHON:-python3}
export DEBIAN_FRONTEND=noninteractive

log() { printf 'tests/setup.sh: %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        log "need root (or sudo) to run: $*" >&2
        return 1
    fi
}

# --- Debian packages -------------------------------------------------------

missing=()
[ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
{ [ -x /usr/bin/mosquitto_pub ] && [ -x /usr/bin/mosquitto_sub ]; } || missing+=(mosquitto-clients)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    # Keep the package from starting its service: invoke-rc.d and
    # deb-systemd-invoke ask /usr/sbin/policy-rc.d, and 101 means "no".
    policy=/usr/sbin/policy-rc.d
    backup=""
    if [ -e "$policy" ]; then
        backup=$(mktemp)
        as_root cp -p "$policy" "$backup"
    fi
    restore_policy() {
        if [ -n "$backup" ]; then
            as_root mv -f "$backup" "$policy"
        else
            as_root rm -f "$policy"
        fi
    }
    trap restore_policy EXIT
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"

    apt_install() {
        as_root apt-get install -y --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${missing[@]}" </dev/null
    }
    # Update the package lists only when they do not know the packages, or
    # when they are stale (the install fails on a file that moved).
    if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
        as_root apt-get update </dev/null
    fi
    if ! apt_install; then
        as_root apt-get update </dev/null
        apt_install
    fi

    restore_policy
    trap - EXIT

    # If a mosquitto daemon was started anyway (a service manager that
    # ignores policy-rc.d), stop it: it would hold port 1883.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        as_root systemctl stop mosquitto.service >/dev/null 2>&1 || true
        as_root systemctl disable mosquitto.service >/dev/null 2>&1 || true
    fi
    pidfile=/run/mosquitto/mosquitto.pid
    if [ -s "$pidfile" ]; then
        pid=$(cat "$pidfile")
        if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = mosquitto ]; then
            log "stopping the mosquitto daemon the package started (pid $pid)"
            as_root kill "$pid" || true
        fi
    fi
fi

for tool in /usr/sbin/mosquitto /usr/bin/mosquitto_pub /usr/bin/mosquitto_sub /usr/bin/chromium; do
    if [ ! -x "$tool" ]; then
        log "$tool is still missing after the install" >&2
        exit 1
    fi
done

# --- Python venv with paho-mqtt ----------------------------------------------

venv_ok() {
    [ -x .venv/bin/python ] &&
        .venv/bin/python -c "import sys, paho.mqtt, ecdsa; sys.exit(paho.mqtt.__version__ != '$PAHO_VERSION' or ecdsa.__version__ != '$ECDSA_VERSION')" \
            >/dev/null 2>&1
}

if ! venv_ok; then
    if [ ! -x .venv/bin/python ]; then
        log "creating .venv with $("$PYTHON" --version 2>&1)"
        rm -rf .venv
        "$PYTHON" -m venv .venv
    fi
    log "installing paho-mqtt==$PAHO_VERSION and ecdsa==$ECDSA_VERSION into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        --no-input "paho-mqtt==$PAHO_VERSION" "ecdsa==$ECDSA_VERSION"
    if ! venv_ok; then
        log ".venv does not import paho-mqtt $PAHO_VERSION and ecdsa $ECDSA_VERSION after the install" >&2
        exit 1
    fi
fi

if ! command -v npm >/dev/null 2>&1; then
    log "npm is still missing after the install" >&2
    exit 1
fi

log "ready: $(/usr/sbin/mosquitto -h 2>/dev/null | head -n 1 || true); $(/usr/bin/chromium --version 2>/dev/null | head -n 1 || true); paho-mqtt $PAHO_VERSION and ecdsa $ECDSA_VERSION in .venv"
