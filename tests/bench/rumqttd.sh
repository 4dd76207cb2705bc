#!/bin/sh
# Builds rumqttd, the third broker of `make bench`, once: the crate at a
# pinned version from crates.io, into a cache outside the tree.
#
#   tests/bench/rumqttd.sh VERSION ROOT
#
# leaves ROOT/bin/rumqttd. Nothing of rumqttd is kept in midge's tree.
#
# `cargo install rumqttd --locked` no longer builds with current Rust: the
# crate's lock file pins metrics 0.22.1, whose recorder extends a borrowed
# trait object's lifetime through a raw pointer cast, which the compiler
# now rejects (error E0521, rust-lang/rust#141402; seen with Rust 1.95). So
# the crate is fetched, unpacked, that one dependency moved to 0.22.4
# (which no longer casts; ahash and zerocopy follow), and the result built
# with --locked from there.
set -eu

version=$1
root=$2
cargo=${CARGO:-cargo}

if [ -x "$root/bin/rumqttd" ]; then
	exit 0
fi

work=$(dirname "$root")/build-rumqttd-$version
rm -rf "$work"
mkdir -p "$work/fetch/src"

# A throwaway package that depends on the pinned version: `cargo fetch`
# downloads the .crate file the ordinary way.
cat >"$work/fetch/Cargo.toml" <<EOF
[package]
name = "fetch-rumqttd"
version = "0.0.0"
edition = "2021"

[dependencies]
rumqttd = "=$version"
EOF
: >"$work/fetch/src/lib.rs"
(cd "$work/fetch" && "$cargo" fetch --quiet)

cargo_home=${CARGO_HOME:-$HOME/.cargo}
crate=$(ls "$cargo_home"/registry/cache/*/rumqttd-"$version".crate | head -n 1)
tar -xzf "$crate" -C "$work"

cd "$work/rumqttd-$version"
"$cargo" update --quiet -p metrics --precise 0.22.4
"$cargo" install --locked --path . --root "$root"
rm -rf "$work"
