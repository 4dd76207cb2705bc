#!/bin/sh
# The board's first boot (init=/first-boot.sh, run by tests/board/image.sh):
# debootstrap's second stage, which installs the armhf packages that the
# host could only unpack, then the board's settings, then power off.
# Its last line on the console says whether it got through.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

# The second stage unmounts /proc when it ends: mount it again to power off
# through sysrq (there is no init running to ask).
done_or_fail() {
    mountpoint -q /proc || mount -t proc proc /proc
    sync
    mount -o remount,ro /
    echo "$1"
    echo o >/proc/sysrq-trigger
    sleep 60
}

if ! /debootstrap/debootstrap --second-stage; then
    tail -n 30 /debootstrap/debootstrap.log 2>/dev/null
    done_or_fail "BOARD FIRST BOOT FAILED"
fi

echo board >/etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tboard\n::1\tlocalhost ip6-localhost ip6-loopback\n' >/etc/hosts
printf 'LABEL=board\t/\text4\terrors=remount-ro\t0\t1\n' >/etc/fstab

# root on the serial console without a password: the test drives the board
# through it (the board has no other way in, and listens on no port of its own).
passwd -d root
mkdir -p /etc/systemd/system/serial-getty@ttyAMA0.service.d
cat >/etc/systemd/system/serial-getty@ttyAMA0.service.d/autologin.conf <<'CONF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200 %I vt220
CONF

# The network of qemu's user mode: the guest is always 10.0.2.15.
mkdir -p /etc/systemd/network
cat >/etc/systemd/network/10-board.network <<'CONF'
[Match]
Type=ether

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
LinkLocalAddressing=no
IPv6AcceptRA=no
CONF
systemctl enable systemd-networkd.service

# Memory and task accounting for every service: the test reads the
# brokers' memory.current.
mkdir -p /etc/systemd/system.conf.d
cat >/etc/systemd/system.conf.d/accounting.conf <<'CONF'
[Manager]
DefaultMemoryAccounting=yes
DefaultTasksAccounting=yes
CONF

# The journal in memory only: nothing to write or to flush on the way down.
mkdir -p /etc/systemd/journald.conf.d
printf '[Journal]\nStorage=volatile\n' >/etc/systemd/journald.conf.d/volatile.conf

# Debian's mosquitto stays installed and stopped until a test starts it.
systemctl disable mosquitto.service
# No apt timers (the board has no way out), nothing waiting for the network.
for unit in apt-daily.timer apt-daily-upgrade.timer systemd-networkd-wait-online.service; do
    systemctl mask "$unit" || true
done

apt-get clean
rm -f /first-boot.sh
done_or_fail "BOARD FIRST BOOT DONE"
