#!/usr/bin/env bash
# Installs what `make board-test` needs on the host, besides `make test-deps`
# (mosquitto-clients, .venv with paho) and the armhf package (`make
# deb-armhf`): debootstrap, cpio, kmod (depmod), e2fsprogs (mke2fs -d) and
# openssl for the image and the certificates, and the emulator
# (tests/board/qemu.sh). Idempotent; root or passwordless sudo.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DEBIAN_FRONTEND=noninteractive
log() { printf 'tests/board/setup.sh: %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }
APT=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)

missing=()
for pair in debootstrap:debootstrap cpio:cpio depmod:kmod mke2fs:e2fsprogs openssl:openssl; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    if ! as_root "${APT[@]}" install -y --no-install-recommends "${missing[@]}" </dev/null; then
        as_root "${APT[@]}" update </dev/null
        as_root "${APT[@]}" install -y --no-install-recommends "${missing[@]}" </dev/null
    fi
fi
qemu=$(bash tests/board/qemu.sh)
log "ready: $(debootstrap --version 2>/dev/null | head -n 1), $("$qemu" --version | head -n 1)"
