#!/usr/bin/env bash
# Builds the emulated armv7 board that `make board-test` boots: Debian
# bookworm armhf with systemd, on Debian's armmp kernel, for qemu-system-arm's
# `virt` machine. Prints the directory that holds it:
#
#   vmlinuz      the kernel of linux-image-<version>-armmp
#   initrd.img   busybox and the kernel's virtio modules: mounts the root
#   rootfs.img   the root filesystem (ext4, raw), never written by a test:
#                each run boots a copy-on-write overlay of it
#
# The board lives in $BOARD_CACHE/<hash of this recipe>, outside the clone,
# so that later runs on the same machine reuse it; a change to this file or
# to tests/board/first-boot.sh makes a new one. A build (about 18 minutes
# on 2 busy cores) is debootstrap --foreign on the host, then, as this
# machine has no binfmt_misc to run armhf programs, the second stage inside
# the emulated board on its first boot (tests/board/first-boot.sh), which
# powers it off when done: nearly all of the time.
#
# Needs root, debootstrap, e2fsprogs (mke2fs -d) and the emulator of
# tests/board/qemu.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
BOARD_CACHE=${BOARD_CACHE:-/var/cache/midge-board}
# What the board carries besides Debian's minbase: systemd as init, udev to
# load the modules of its devices, the packaged broker's dependency adduser,
# and Debian's mosquitto for the memory comparison (installed, not enabled).
INCLUDE=systemd-sysv,udev,kmod,adduser,procps,iproute2,mosquitto
# The root filesystem's size: a sparse file, about 400 MB of it used.
ROOTFS_SIZE=2G

log() { printf 'tests/board/image.sh: %s\n' "$*" >&2; }
fail() {
    log "FAILED: $*"
    exit 1
}

key=$(cat tests/board/image.sh tests/board/first-boot.sh | sha256sum | cut -c1-16)
dir=$BOARD_CACHE/$key
if [ -f "$dir/READY" ]; then
    printf '%s\n' "$dir"
    exit 0
fi
# --cached: only say where a built board is; exit 3 if there is none.
[ "${1:-}" = --cached ] && exit 3

[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap)"
for tool in debootstrap mke2fs dpkg-deb depmod; do
    command -v "$tool" >/dev/null || fail "$tool is missing: run make board-deps"
done
QEMU=$(bash tests/board/qemu.sh)

t0=$(date +%s)
work=$BOARD_CACHE/build-$key
rm -rf "$work"
mkdir -p "$work"
root=$work/root

# --- the kernel and busybox, from a private apt for armhf ---------------------
#
# Its own sources, lists and cache under $work: the machine's apt state is
# not touched, and the machine need not know armhf.
apt_dir=$work/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/debs"
printf 'deb [arch=armhf] %s %s main\n' "$MIRROR" "$SUITE" >"$apt_dir/sources.list"
: >"$apt_dir/status"
APT_OPTS=(-o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent
    -o Dir::State::Lists="$apt_dir/lists" -o Dir::State::status="$apt_dir/status"
    -o Dir::Cache="$apt_dir" -o Dir::Cache::archives="$apt_dir/archives"
    -o APT::Architecture=armhf -o APT::Architectures::=armhf
    -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
log "fetching the armhf package lists of $SUITE"
apt-get "${APT_OPTS[@]}" update >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "apt-get update (armhf)"; }
kpkg=$(apt-cache "${APT_OPTS[@]}" depends linux-image-armmp 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
[ -n "$kpkg" ] || fail "no linux-image-*-armmp behind linux-image-armmp"
log "kernel package: $kpkg"
(cd "$apt_dir/debs" && apt-get "${APT_OPTS[@]}" download "$kpkg" busybox-static) >>"$work/apt.log" 2>&1 ||
    { cat "$work/apt.log"; fail "apt-get download $kpkg busybox-static"; }
kernel=$work/kernel
dpkg-deb -x "$apt_dir"/debs/linux-image-*_armhf.deb "$kernel"
dpkg-deb -x "$apt_dir"/debs/busybox-static_*_armhf.deb "$work/busybox"
kver=$(ls "$kernel/lib/modules")
depmod -b "$kernel" "$kver"

# --- the root filesystem, first stage ----------------------------------------

log "debootstrap --foreign --arch armhf $SUITE (with $INCLUDE)"
debootstrap --foreign --arch=armhf --variant=minbase --include="$INCLUDE" \
    "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 20 "$work/debootstrap.log"; fail "debootstrap --foreign"; }
# The kernel's modules, for udev on the board (virtio-rng and the like);
# the kernel package itself is not installed (it would build an initramfs
# under emulation, and the board boots the host's copy of the kernel).
mkdir -p "$root/lib/modules"
cp -a "$kernel/lib/modules/$kver" "$root/lib/modules/"
install -m 0755 tests/board/first-boot.sh "$root/first-boot.sh"

# --- the initrd: load the virtio modules, mount the root, switch to it --------

ird=$work/initrd
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,modules}
cp "$work/busybox/bin/busybox" "$ird/bin/busybox"
for applet in sh mount umount insmod switch_root sleep cat grep; do
    ln -s busybox "$ird/bin/$applet"
done
# Each wanted module after the modules it needs, as modules.dep lists them.
order=()
add_module() {
    local path=$1 dep
    for dep in $(awk -v m="$path:" '$1 == m { $1 = ""; print }' "$kernel/lib/modules/$kver/modules.dep"); do
        add_module "$dep"
    done
    case " ${order[*]} " in *" $path "*) ;; *) order+=("$path") ;; esac
}
# crc32c_generic: ext4 asks for crc32c at mount time (no modules.dep entry).
for name in virtio_mmio virtio_blk virtio_net crc32c_generic ext4; do
    path=$(awk -F: -v n="/$name.ko" 'index($1, n) && substr($1, length($1) - length(n) + 1) == n { print $1; exit }' \
        "$kernel/lib/modules/$kver/modules.dep")
    # Not in modules.dep: built into this kernel.
    [ -n "$path" ] && add_module "$path"
done
: >"$ird/modules/order"
for path in "${order[@]}"; do
    cp "$kernel/lib/modules/$kver/$path" "$ird/modules/"
    printf '%s\n' "$(basename "$path")" >>"$ird/modules/order"
done
cat >"$ird/init" <<'INIT'
#!/bin/sh
# The board's initrd: the virtio modules, then the ext4 root, then its
# init (the one named by init= on the kernel's command line, or systemd).
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod "/modules/$m"; done
init=/sbin/init
for arg in $(cat /proc/cmdline); do
    case "$arg" in init=*) init=${arg#init=} ;; esac
done
# The root is the ext4 disk (a test may attach a second disk, and
# virtio-mmio disks may come up in either order).
for _ in $(seq 20); do
    for dev in /dev/vda /dev/vdb; do
        [ -b "$dev" ] && mount -t ext4 -o rw "$dev" /newroot 2>/dev/null && break 2
    done
    sleep 0.5
done
if ! grep -q ' /newroot ' /proc/mounts; then
    echo "initrd: cannot mount the root disk"
    echo o >/proc/sysrq-trigger
    sleep 60
fi
umount /sys /proc
mount --move /dev /newroot/dev
exec switch_root /newroot "$init"
INIT
chmod 0755 "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -9n) >"$work/initrd.img"
cp "$kernel/boot/vmlinuz-$kver" "$work/vmlinuz"

# --- the image, and the second stage on the board's first boot ---------------

log "making the ext4 image ($ROOTFS_SIZE, sparse)"
rm -f "$work/rootfs.img"
mke2fs -q -t ext4 -L board -d "$root" "$work/rootfs.img" "$ROOTFS_SIZE" ||
    fail "mke2fs -d"
log "first boot: debootstrap --second-stage on the board (qemu-system-arm, emulated)"
t1=$(date +%s)
# -no-reboot: the first boot's power-off (or a panic) ends qemu. It runs in
# the background so that this script, stopped, stops it too.
nice -n 10 "$QEMU" -machine virt -cpu cortex-a15 -smp 2 -m 256 -accel tcg,tb-size=256 -nographic -no-reboot \
    -kernel "$work/vmlinuz" -initrd "$work/initrd.img" \
    -append "console=ttyAMA0 rw init=/first-boot.sh panic=10" \
    -drive if=none,id=hd,format=raw,file="$work/rootfs.img" -device virtio-blk-device,drive=hd \
    -netdev user,id=net,restrict=on -device virtio-net-device,netdev=net \
    </dev/null >"$work/first-boot.log" 2>&1 &
qemu_pid=$!
trap 'kill "$qemu_pid" 2>/dev/null || true' EXIT
# At most an hour: a board that hangs is stopped, and the build fails.
for _ in $(seq 3600); do
    kill -0 "$qemu_pid" 2>/dev/null || break
    sleep 1
done
kill "$qemu_pid" 2>/dev/null || true
wait "$qemu_pid" 2>/dev/null || true
trap - EXIT
grep -q 'BOARD FIRST BOOT DONE' "$work/first-boot.log" ||
    { tail -n 40 "$work/first-boot.log"; fail "the first boot did not finish (log: $work/first-boot.log)"; }
log "second stage took $(($(date +%s) - t1)) s"

rm -rf "$dir"
mkdir -p "$dir"
mv "$work/vmlinuz" "$work/initrd.img" "$work/rootfs.img" "$work/first-boot.log" "$dir/"
printf '%s\n' "$kver" >"$dir/KERNEL"
rm -rf "$work"
printf 'built in %s s\n' "$(($(date +%s) - t0))" >"$dir/READY"
# Boards of older recipes go: each is a few hundred megabytes.
for old in "$BOARD_CACHE"/????????????????; do
    [ "$old" = "$dir" ] || rm -rf "$old"
done
log "board ready in $dir, built in $(($(date +%s) - t0)) s"
printf '%s\n' "$dir"
