#!/usr/bin/env bash
# Builds target/deb/midge_<version>_<arch>.deb from a built binary: stages
# the installed tree under target/deb/<arch>/root, then dpkg-deb --build.
# Nothing beyond dpkg is needed, and the recipe is the same for every arch.
#
#   debian/mkdeb.sh amd64 target/release/midge
#   debian/mkdeb.sh armhf target/armv7-unknown-linux-gnueabihf/release/midge
#
# TOOLS (space-separated) names client tools to install as
# /usr/bin/<tool> -> ../sbin/midge: one binary that picks its role from
# argv[0]. Each has its manual page in debian/<tool>.1.
set -euo pipefail
cd "$(dirname "$0")/.."

arch=${1:?usage: debian/mkdeb.sh ARCH BINARY}
bin=${2:?usage: debian/mkdeb.sh ARCH BINARY}
TOOLS=${TOOLS:-}

log() { printf 'debian/mkdeb.sh: %s\n' "$*"; }

[ -x "$bin" ] || { log "no binary at $bin" >&2; exit 1; }

# The package version is the changelog's; its upstream part must be the
# crate's, so a release cannot ship a stale changelog.
version=$(sed -n '1s/^midge (\([^)]*\)).*/\1/p' debian/changelog)
crate=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
if [ -z "$version" ] || [ "${version%-*}" != "$crate" ]; then
    log "debian/changelog says '$version', Cargo.toml says '$crate'" >&2
    exit 1
fi

out=target/deb
R=$out/$arch/root
rm -rf "$R"
mkdir -p "$R/DEBIAN"

install -D -m 0755 "$bin" "$R/usr/sbin/midge"
for tool in $TOOLS; do
    mkdir -p "$R/usr/bin" "$R/usr/share/man/man1"
    ln -s ../sbin/midge "$R/usr/bin/$tool"
    [ -f "debian/$tool.1" ] || { log "no manual page debian/$tool.1" >&2; exit 1; }
    gzip -9n <"debian/$tool.1" >"$R/usr/share/man/man1/$tool.1.gz"
done
install -D -m 0644 etc/midge/midge.conf "$R/etc/midge/midge.conf"
install -D -m 0644 etc/midge/conf.d/README "$R/etc/midge/conf.d/README"
install -D -m 0644 debian/midge.service "$R/lib/systemd/system/midge.service"
install -D -m 0644 debian/copyright "$R/usr/share/doc/midge/copyright"
mkdir -p "$R/usr/share/man/man8" "$R/usr/share/man/man5"
gzip -9n <debian/changelog >"$R/usr/share/doc/midge/changelog.Debian.gz"
gzip -9n <docs/CONFIG.md >"$R/usr/share/doc/midge/CONFIG.md.gz"
gzip -9n <docs/SECURITY.md >"$R/usr/share/doc/midge/SECURITY.md.gz"
gzip -9n <docs/BRIDGE.md >"$R/usr/share/doc/midge/BRIDGE.md.gz"
gzip -9n <docs/TOOLS.md >"$R/usr/share/doc/midge/TOOLS.md.gz"
gzip -9n <docs/MQTT5.md >"$R/usr/share/doc/midge/MQTT5.md.gz"
gzip -9n <debian/midge.8 >"$R/usr/share/man/man8/midge.8.gz"
gzip -9n <debian/midge.conf.5 >"$R/usr/share/man/man5/midge.conf.5.gz"
gzip -9n <docs/TLS.md >"$R/usr/share/doc/midge/TLS.md.gz"
gzip -9n <docs/WEBSOCKETS.md >"$R/usr/share/doc/midge/WEBSOCKETS.md.gz"
gzip -9n <docs/PERSISTENCE.md >"$R/usr/share/doc/midge/PERSISTENCE.md.gz"
gzip -9n <docs/MIGRATING.md >"$R/usr/share/doc/midge/MIGRATING.md.gz"
install -D -m 0644 debian/lintian-overrides "$R/usr/share/lintian/overrides/midge"
install -d -m 0755 "$R/var/lib/midge"
chmod 0644 "$R"/usr/share/doc/midge/* "$R"/usr/share/man/man*/*

install -m 0644 debian/conffiles "$R/DEBIAN/conffiles"
install -m 0755 debian/postinst debian/prerm debian/postrm "$R/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$R" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    debian/control.in >"$R/DEBIAN/control"
(cd "$R" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' |
    LC_ALL=C sort -z | xargs -0 md5sum >DEBIAN/md5sums)
chmod 0644 "$R/DEBIAN/control" "$R/DEBIAN/md5sums"

deb=$out/midge_${version}_${arch}.deb
# Fixed timestamps, so two builds of the same binary give the same package.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(date -d "$(sed -n 's/^ -- .*>  //p' debian/changelog | head -n 1)" +%s)}
find "$R" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
dpkg-deb --root-owner-group -Zxz --build "$R" "$deb" >/dev/null
log "$deb: $(stat -c %s "$deb") bytes ($(stat -c %s "$bin") bytes of binary)"
