#!/usr/bin/env bash
# Installs what the ARM builds, the qemu tests and the packages need, from
# Debian's own archive (no rustup targets, no Docker):
#   - Debian's Rust (rustc-web, cargo-web: /usr/bin/rustc, /usr/bin/cargo)
#     at exactly the version pinned in cross/toolchain.env, never "the
#     newest": the build must not depend on when apt-get update last ran;
#   - the armhf and arm64 standard libraries (libstd-rust-web-dev:armhf,
#     :arm64) of that same version, unpacked into .cross/sysroot and
#     .cross/sysroot-arm64, so no foreign library is installed on the
#     machine;
#   - gcc-arm-linux-gnueabihf and libc6-dev-armhf-cross, gcc-aarch64-linux-gnu
#     and libc6-dev-arm64-cross (linkers, C compilers, and the glibc the
#     binaries link against: /usr/arm-linux-gnueabihf, /usr/aarch64-linux-gnu),
#     qemu-user (qemu-arm, qemu-aarch64), lintian, debootstrap.
#
# Idempotent: a second run checks and installs nothing. Runs as root (or
# with passwordless sudo) on Debian 12, with no standard input (CI=true).
# `make setup` runs it; `make test` runs `make setup`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian architecture -> Rust target, and where its std is unpacked.
ARCHES=(armhf arm64)
declare -A TRIPLE=([armhf]=armv7-unknown-linux-gnueabihf [arm64]=aarch64-unknown-linux-gnu)
declare -A SYSROOT=([armhf]=.cross/sysroot [arm64]=.cross/sysroot-arm64)
export DEBIAN_FRONTEND=noninteractive

log() { printf 'cross/setup.sh: %s\n' "$*"; }

# apt-get and dpkg need root: sudo when not root (it must not ask).
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo -n)
fi
as_root() { "${SUDO[@]}" "$@"; }

# Another apt-get may hold the dpkg lock for a while: wait instead of failing.
APT=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)

# The pinned versions (DEB_RUST_VERSION).
. cross/toolchain.env
V=$DEB_RUST_VERSION

# Whether apt's lists know this exact version of a package.
known() {
    apt-cache madison "$1" 2>/dev/null | awk -F'|' '{ gsub(/ /, "", $2); print $2 }' | grep -qxF "$2"
}

installed() {
    dpkg-query -W -f='${db:Status-Status} ${Version}' "$1" 2>/dev/null || true
}

# apt-get update, tolerating failures of armhf and arm64 indexes only: a
# mirror may not carry them for every suite, and the amd64 lists are what
# the machine needs. Any other failure stops the script.
apt_update() {
    local out
    out=$(mktemp)
    if as_root "${APT[@]}" update </dev/null >"$out" 2>&1; then
        rm -f "$out"
        return 0
    fi
    cat "$out"
    local bad
    bad=$(grep -E '^(E|W): (Failed to fetch|Some index files failed)' "$out" |
        grep -v -e 'binary-armhf' -e 'binary-arm64' -e 'Some index files failed' || true)
    if ! grep -q -e 'binary-armhf' -e 'binary-arm64' "$out" || [ -n "$bad" ]; then
        rm -f "$out"
        log "apt-get update failed for more than the armhf and arm64 indexes" >&2
        return 1
    fi
    rm -f "$out"
    log "apt-get update: an armhf or arm64 index failed to download; the amd64 lists are fine, going on"
}

sysroot_ok() {
    local arch=$1 v=$2
    [ -f "${SYSROOT[$arch]}/VERSION" ] && [ "$(cat "${SYSROOT[$arch]}/VERSION")" = "$v" ]
}

have_all() {
    local v=$1
    [ "$(installed rustc-web)" = "installed $v" ] &&
        [ "$(installed cargo-web)" = "installed $v" ] &&
        [ "$(installed libstd-rust-web-dev)" = "installed $v" ] &&
        sysroot_ok armhf "$v" && sysroot_ok arm64 "$v" &&
        command -v arm-linux-gnueabihf-gcc >/dev/null &&
        [ -f /usr/arm-linux-gnueabihf/lib/Scrt1.o ] &&
        command -v aarch64-linux-gnu-gcc >/dev/null &&
        [ -f /usr/aarch64-linux-gnu/lib/Scrt1.o ] &&
        command -v qemu-arm >/dev/null &&
        command -v qemu-aarch64 >/dev/null &&
        command -v lintian >/dev/null &&
        command -v debootstrap >/dev/null
}

# --- the foreign architectures and the version of their Rust std -----------

for arch in "${ARCHES[@]}"; do
    if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
        log "adding the $arch architecture to dpkg"
        as_root dpkg --add-architecture "$arch"
    fi
done

if have_all "$V"; then
    log "ready: rustc $V with the armhf and arm64 std in .cross/, $(arm-linux-gnueabihf-gcc -dumpversion) cross gcc, qemu-arm, qemu-aarch64, lintian, debootstrap"
    exit 0
fi

if ! known rustc-web "$V" || ! known libstd-rust-web-dev:armhf "$V" ||
    ! known libstd-rust-web-dev:arm64 "$V"; then
    apt_update
    for p in rustc-web cargo-web libstd-rust-web-dev libstd-rust-web-dev:armhf libstd-rust-web-dev:arm64; do
        if ! known "$p" "$V"; then
            log "apt knows no $p at the pinned version $V (cross/toolchain.env) after apt-get update; it knows: $(apt-cache madison "$p" 2>/dev/null | awk -F'|' '{ gsub(/ /, "", $2); printf "%s ", $2 }')" >&2
            exit 1
        fi
    done
fi
log "Debian's Rust, pinned: $V"

# --- packages on the machine (amd64 only) ------------------------------------

pkgs=(rustc-web="$V" cargo-web="$V" libstd-rust-web-dev="$V"
    gcc-arm-linux-gnueabihf libc6-dev-armhf-cross gcc-aarch64-linux-gnu libc6-dev-arm64-cross
    qemu-user lintian debootstrap)
apt_install() {
    # --allow-downgrades: a newer rustc-web installed by hand or by an
    # upgrade goes back to the pinned one.
    as_root "${APT[@]}" install -y --no-install-recommends --allow-downgrades "${pkgs[@]}" </dev/null
}
if ! apt_install; then
    # Stale lists (a point release replaced a file): refresh and retry once.
    apt_update
    apt_install
fi

# --- the armhf and arm64 std, unpacked (not installed) -----------------------

for arch in "${ARCHES[@]}"; do
    root=${SYSROOT[$arch]}
    triple=${TRIPLE[$arch]}
    if sysroot_ok "$arch" "$V"; then
        continue
    fi
    log "unpacking libstd-rust-web-dev:$arch $V into $root"
    rm -rf .cross/download "$root"
    mkdir -p .cross/download
    (cd .cross/download && apt-get download "libstd-rust-web-dev:$arch=$V" </dev/null)
    dpkg-deb -x .cross/download/libstd-rust-web-dev_*_"$arch".deb "$root"
    rm -rf .cross/download
    if ! ls "$root/usr/lib/rustlib/$triple/lib/"libstd-*.rlib >/dev/null 2>&1; then
        log "no libstd rlib under $root/usr/lib/rustlib/$triple/lib" >&2
        exit 1
    fi
    printf '%s\n' "$V" >"$root/VERSION"
done

if ! have_all "$V"; then
    log "something is still missing after the install" >&2
    exit 1
fi
log "ready: $(/usr/bin/rustc --version), armhf and arm64 std in .cross/, $(arm-linux-gnueabihf-gcc -dumpversion) cross gcc, qemu-arm, qemu-aarch64, lintian, debootstrap"
