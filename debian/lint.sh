#!/usr/bin/env bash
# Checks the built packages: lintian with no error and no warning (the one
# override is explained in debian/lintian-overrides), a glibc floor of the
# binaries that matches the `libc6 (>= 2.34)` of debian/control.in, and the
# unit file as systemd parses it.
set -euo pipefail
cd "$(dirname "$0")/.."

GLIBC_FLOOR=2.34
log() { printf 'debian/lint.sh: %s\n' "$*"; }

debs=(target/deb/midge_*_amd64.deb target/deb/midge_*_armhf.deb target/deb/midge_*_arm64.deb)
for d in "${debs[@]}"; do
    [ -f "$d" ] || { log "missing $d: run make deb deb-armhf deb-arm64" >&2; exit 1; }
done

# Running as root makes lintian say so once; that line is not about the
# packages.
rc=0
lintian --fail-on error,warning --display-info --tag-display-limit 0 "${debs[@]}" \
    >target/deb/lintian.log 2>&1 || rc=$?
grep -v 'running with root privileges is not recommended' target/deb/lintian.log || true
if [ "$rc" -ne 0 ]; then
    log "lintian reports errors or warnings (above)" >&2
    exit 1
fi

for d in "${debs[@]}"; do
    dir=$(mktemp -d)
    dpkg-deb -x "$d" "$dir"
    case "$d" in
    *_armhf.deb) objdump=arm-linux-gnueabihf-objdump ;;
    *_arm64.deb) objdump=aarch64-linux-gnu-objdump ;;
    *) objdump=objdump ;;
    esac
    max=$("$objdump" -T "$dir/usr/sbin/midge" | grep -o 'GLIBC_[0-9.]*' |
        sed 's/GLIBC_//' | sort -V | tail -n 1)
    rm -rf "$dir"
    if [ "$(printf '%s\n%s\n' "$max" "$GLIBC_FLOOR" | sort -V | tail -n 1)" != "$GLIBC_FLOOR" ]; then
        log "$d needs glibc $max, above the $GLIBC_FLOOR of its Depends" >&2
        exit 1
    fi
    log "$d: lintian clean, needs glibc >= $max, $(stat -c %s "$d") bytes"
done

# systemd's own parser, where systemd is installed: unknown keys and bad
# values are errors. (Missing programs and targets are expected: the unit
# is checked outside the system it is made for.)
if command -v systemd-analyze >/dev/null; then
    out=$(systemd-analyze verify debian/midge.service 2>&1 || true)
    bad=$(grep -iE 'unknown|invalid|failed to parse|ignoring' <<<"$out" || true)
    if [ -n "$bad" ]; then
        printf '%s\n' "$bad"
        log "systemd-analyze rejects lines of debian/midge.service" >&2
        exit 1
    fi
    log "debian/midge.service: systemd-analyze finds no unknown or invalid setting"
fi
