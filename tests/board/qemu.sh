#!/usr/bin/env bash
# Prints the path of a qemu-system-arm to run the board with, after making it
# ready: Debian bookworm's qemu-system-arm, unpacked (not installed) into
# $BOARD_CACHE/qemu-<version>, and the libraries it links installed.
#
# Unpacked rather than installed because this kind of machine carries
# qemu-utils from bookworm-backports (qemu-img 10), which breaks bookworm's
# qemu-system-common: apt would have to remove or downgrade it.
set -euo pipefail

BOARD_CACHE=${BOARD_CACHE:-/var/cache/midge-board}
export DEBIAN_FRONTEND=noninteractive
log() { printf 'tests/board/qemu.sh: %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }
APT=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)

version() { apt-cache policy qemu-system-arm 2>/dev/null | awk '/Candidate:/ { print $2 }'; }
v=$(version)
if [ -z "$v" ] || [ "$v" = "(none)" ]; then
    as_root "${APT[@]}" update </dev/null >&2
    v=$(version)
fi
[ -n "$v" ] && [ "$v" != "(none)" ] || { log "apt knows no qemu-system-arm"; exit 1; }

dir=$BOARD_CACHE/qemu-${v//[:~+]/_}
wrapper=$dir/qemu-system-arm
if [ ! -x "$wrapper" ]; then
    log "unpacking qemu-system-arm $v into $dir"
    rm -rf "$dir"
    mkdir -p "$dir/debs"
    (cd "$dir/debs" && apt-get -o APT::Sandbox::User=root download \
        "qemu-system-arm=$v" "qemu-system-common=$v" qemu-system-data) </dev/null >&2
    for deb in "$dir"/debs/*.deb; do
        dpkg-deb -x "$deb" "$dir/root"
    done
    # The shared libraries it links, from its own Depends (those that name
    # a library, lib*): plain packages that conflict with nothing.
    libs=$(for deb in "$dir"/debs/qemu-system-arm_*.deb "$dir"/debs/qemu-system-common_*.deb; do
        dpkg-deb -f "$deb" Depends
    done | tr ',|' '\n\n' | sed 's/(.*//; s/^ *//; s/ *$//' | grep '^lib' | sort -u)
    missing=()
    for lib in $libs; do
        dpkg-query -W -f='${db:Status-Status}' "$lib" 2>/dev/null | grep -qx installed || missing+=("$lib")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        if ! as_root "${APT[@]}" install -y --no-install-recommends "${missing[@]}" </dev/null >&2; then
            # Stale lists (a point release replaced a file): refresh, retry once.
            as_root "${APT[@]}" update </dev/null >&2
            as_root "${APT[@]}" install -y --no-install-recommends "${missing[@]}" </dev/null >&2
        fi
    fi
    if ldd "$dir/root/usr/bin/qemu-system-arm" | grep 'not found' >&2; then
        log "qemu-system-arm still misses libraries"
        exit 1
    fi
    rm -rf "$dir/debs"
    cat >"$wrapper.tmp" <<WRAP
#!/bin/sh
exec "$dir/root/usr/bin/qemu-system-arm" -L "$dir/root/usr/share/qemu" "\$@"
WRAP
    chmod 0755 "$wrapper.tmp"
    mv "$wrapper.tmp" "$wrapper"
fi
printf '%s\n' "$wrapper"
