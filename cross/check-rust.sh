#!/usr/bin/env bash
# Refuses a Rust toolchain that is not the one midge claims to build with:
# the compiler, rustdoc and cargo given must all be the upstream version of
# the Debian package pinned in cross/toolchain.env, and that version must be
# Cargo.toml's rust-version. `make msrv` and `make armv7` run it first, so a
# drift (an upgraded rustc-web, a rustup compiler on the path) can never
# pass silently.
#
#   cross/check-rust.sh RUSTC RUSTDOC CARGO
set -euo pipefail
cd "$(dirname "$0")/.."

rustc=${1:?usage: cross/check-rust.sh RUSTC RUSTDOC CARGO}
rustdoc=${2:?usage: cross/check-rust.sh RUSTC RUSTDOC CARGO}
cargo=${3:?usage: cross/check-rust.sh RUSTC RUSTDOC CARGO}

. cross/toolchain.env
pinned=${DEB_RUST_VERSION%%+*}       # 1.85.0+dfsg3-1~deb12u3 -> 1.85.0
msrv=$(sed -n 's/^rust-version *= *"\([^"]*\)".*/\1/p' Cargo.toml)

fail() {
    printf 'cross/check-rust.sh: %s\n' "$*" >&2
    exit 1
}

[ -n "$msrv" ] || fail "Cargo.toml has no rust-version"
# rust-version "1.85" names 1.85.x; "1.85.0" names exactly that.
case "$pinned." in
    "$msrv".*) ;;
    *) fail "cross/toolchain.env pins Rust $pinned ($DEB_RUST_VERSION), but Cargo.toml's rust-version is $msrv: keep the two in step" ;;
esac

for tool in "$rustc" "$rustdoc" "$cargo"; do
    out=$("$tool" --version 2>/dev/null) || fail "$tool does not run: run 'make setup' (it installs Debian's Rust $DEB_RUST_VERSION)"
    have=$(printf '%s\n' "$out" | awk '{ print $2 }')
    if [ "$have" != "$pinned" ]; then
        fail "$tool is '$out', not Rust $pinned: Cargo.toml's rust-version is $msrv and cross/toolchain.env pins Debian's $DEB_RUST_VERSION. Run 'make setup' to install the pinned version, or change both files together."
    fi
done
printf 'cross/check-rust.sh: %s, %s and %s are Rust %s (rust-version %s, Debian %s)\n' \
    "$rustc" "$rustdoc" "$cargo" "$pinned" "$msrv" "$DEB_RUST_VERSION"
