"""The armhf package on an emulated armv7 board (`make board-test`).

Boots the board of tests/board/image.sh under qemu-system-arm (virt,
Cortex-A15, 256 MB), copies in the armhf .deb and the files of the users'
walkthroughs on a second, read-only disk, and drives the board's root shell
over its serial console (the board listens on no port of its own). The
brokers' ports are forwarded to ephemeral ports of 127.0.0.1, where the
host's mosquitto clients and paho reach them.

Prints one line per check, `ok - ...` or `FAIL - ...`, then
`N passed, M failed`; exits 1 if any failed.

usage: board.py IMAGE_DIR DEB   (run by tests/board/run.sh)
"""

import base64
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

import paho.mqtt.client as mqtt

QEMU = os.environ["BOARD_QEMU"]
ROOT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED_004_ACL = os.path.join(ROOT_DIR, "tests", "fixtures", "seed004.acl")
# Emulated time: everything on the board is some 20 to 50 times slower than
# on real hardware, so waits are long and tied to the board's answers.
BOOT_TIMEOUT = 600
CMD_TIMEOUT = 180
# The clients of the memory measurement, and the board's settling time.
CLIENT_STEPS = (100, 1000)
SETTLE = 10

passed = 0
failed = 0


def check(ok, what, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("ok - " + what, flush=True)
    else:
        failed += 1
        print("FAIL - " + what + (": " + detail if detail else ""), flush=True)
    return ok


class Stop(Exception):
    """A failure after which the later checks cannot run."""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent():
    """In the child before exec: the kernel kills it when this driver dies,
    even by SIGKILL, so no emulator outlives the test."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# --- the board ---------------------------------------------------------------


class Board:
    """qemu-system-arm and the root shell on its serial console.

    `sh(cmd)` runs cmd with bash on the board and returns (status, output),
    the output between two markers that the command line itself cannot
    produce (the terminal's echo is off, and the end marker's status is
    expanded by the board's shell).
    """

    def __init__(self, image, files_tar, ports, log_path):
        self.ports = ports  # board port -> host port on 127.0.0.1
        fwd = ",".join("hostfwd=tcp:127.0.0.1:%d-:%d" % (h, g) for g, h in ports.items())
        self.log = open(log_path, "ab")
        self.buf = b""
        self.lock = threading.Condition()
        self.n = 0
        args = [
            "nice", "-n", "10", QEMU,
            "-machine", "virt", "-cpu", "cortex-a15", "-smp", "2", "-m", "256",
            # The translated code's cache: qemu's default is 1 GiB.
            "-accel", "tcg,tb-size=256",
            "-display", "none", "-monitor", "none", "-serial", "stdio",
            # The disk is the cached image; what the board writes goes to a
            # temporary file of qemu's, kept across the board's reboots.
            "-snapshot",
            "-kernel", os.path.join(image, "vmlinuz"),
            "-initrd", os.path.join(image, "initrd.img"),
            "-append", "console=ttyAMA0 rw quiet",
            "-drive", "if=none,id=hd,format=raw,file=" + os.path.join(image, "rootfs.img"),
            "-device", "virtio-blk-device,drive=hd",
            "-drive", "if=none,id=files,format=raw,readonly=on,file=" + files_tar,
            "-device", "virtio-blk-device,drive=files,serial=files",
            "-netdev", "user,id=net,restrict=on," + fwd,
            "-device", "virtio-net-device,netdev=net",
            "-device", "virtio-rng-device",
        ]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            start_new_session=True, preexec_fn=die_with_parent,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            data = self.proc.stdout.read1(65536)
            if not data:
                break
            self.log.write(data)
            self.log.flush()
            with self.lock:
                self.buf += data
                self.lock.notify_all()
        with self.lock:
            self.lock.notify_all()

    def expect(self, pattern, timeout):
        """Waits for pattern (bytes regex) in the console; returns the match
        and drops the console's text up to its end."""
        rx = re.compile(pattern, re.S)
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                m = rx.search(self.buf)
                if m:
                    self.buf = self.buf[m.end():]
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self.lock.wait(min(left, 1.0))

    def send(self, text):
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def login(self):
        """Waits for the root shell of the board's autologin, sets it up."""
        t0 = time.monotonic()
        if not self.expect(rb"root@board:[^\n]*# ", BOOT_TIMEOUT):
            raise Stop("no root shell on the console within %d s" % BOOT_TIMEOUT)
        self.send("stty -echo; dmesg -n 1; PS1='\\n'\n")
        status, _ = self.sh("true")
        if status != 0:
            raise Stop("the console does not answer")
        return time.monotonic() - t0

    def sh(self, cmd, timeout=CMD_TIMEOUT):
        self.n += 1
        n = self.n
        b64 = base64.b64encode(cmd.encode()).decode()
        self.send("echo :B%d:; bash -c \"$(echo %s | base64 -d)\" </dev/null 2>&1; echo :E%d:$?:\n" % (n, b64, n))
        m = self.expect(rb"\n:B%d:\r?\n(.*?)\r?\n?:E%d:(\d+):" % (n, n), timeout)
        if not m:
            raise Stop("the board did not finish within %d s: %s" % (timeout, cmd))
        return int(m.group(2)), m.group(1).decode(errors="replace").replace("\r\n", "\n").strip("\n")

    def ok(self, cmd, timeout=CMD_TIMEOUT):
        """Output of cmd, which must succeed."""
        status, out = self.sh(cmd, timeout)
        if status != 0:
            raise Stop("'%s' exited %d: %s" % (cmd, status, out[-2000:]))
        return out

    def reboot(self):
        self.send("systemctl reboot\n")
        return self.login()

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.log.close()


# --- host-side clients -------------------------------------------------------


def run(args, timeout=60, stdin=None):
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout)


class Sub:
    """A host mosquitto_sub, its lines gathered; killed by stop()."""

    def __init__(self, args):
        self.lines = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(["mosquitto_sub"] + args, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_for(self, line, timeout=30):
        deadline = time.monotonic() + timeout
        with self.cond:
            while line not in self.lines:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def wait_subscribed(sub, port, probe, extra=()):
    """Publishes probe messages until sub prints one: then it is subscribed."""
    for _ in range(30):
        run(["mosquitto_pub", "-h", "localhost", "-p", str(port), "-t", probe, "-m", "probe"] + list(extra))
        if sub.wait_for(probe + " probe", 2):
            return True
    return False


def paho_round_trip(port, topic, user=None, password=None, cafile=None):
    """paho connects, subscribes to topic, publishes to it at QoS 1 and
    returns the payload it got back (None if nothing came)."""
    got = []
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="board-paho-%d" % port)
    if user:
        c.username_pw_set(user, password)
    if cafile:
        c.tls_set(ca_certs=cafile)
    subscribed = threading.Event()
    c.on_subscribe = lambda *a: subscribed.set()

    def on_message(_c, _u, msg):
        got.append(msg.payload.decode())
        done.set()

    c.on_message = on_message
    c.connect("localhost", port, 60)
    c.loop_start()
    try:
        c.subscribe(topic, 1)
        if not subscribed.wait(30):
            return None
        c.publish(topic, "hello from paho", 1)
        done.wait(30)
    finally:
        c.disconnect()
        c.loop_stop()
    return got[0] if got else None


def idle_clients(port, first, count, sockets):
    """count MQTT 3.1.1 clients, each subscribed to a topic of its own and
    then idle, appended to sockets; returns how many got their SUBACK.

    CONNECT and SUBSCRIBE go out together, in batches of 50, before the
    acknowledgements are read: the board answers in its own time."""
    acked = 0
    for start in range(first, first + count, 50):
        batch = []
        for i in range(start, min(start + 50, first + count)):
            cid = ("idle-%d" % i).encode()
            topic = ("board/idle/%d" % i).encode()
            var = b"\x00\x04MQTT\x04\x02\x02\x58" + len(cid).to_bytes(2, "big") + cid
            connect = b"\x10" + bytes([len(var)]) + var
            body = b"\x00\x01" + len(topic).to_bytes(2, "big") + topic + b"\x00"
            subscribe = b"\x82" + bytes([len(body)]) + body
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            s.sendall(connect + subscribe)
            batch.append(s)
            sockets.append(s)
        for s in batch:
            want, got = 4 + 5, b""  # CONNACK, SUBACK
            try:
                while len(got) < want:
                    data = s.recv(want - len(got))
                    if not data:
                        break
                    got += data
            except OSError:
                pass
            if len(got) == want and got[0] == 0x20 and got[3] == 0 and got[4] == 0x90 and got[8] == 0:
                acked += 1
    return acked


# --- the walkthroughs' files -----------------------------------------------------


def make_files(d, deb):
    """The board's second disk: the package, seed 003's certificates (made
    with openssl as the walkthrough does, the server's naming localhost and
    127.0.0.1), seed 004's password and ACL files, the brokers' configs."""
    files = os.path.join(d, "files")
    os.makedirs(files)
    shutil.copy(deb, os.path.join(files, "midge.deb"))

    def openssl(*args):
        r = run(["openssl"] + list(args))
        if r.returncode != 0:
            raise Stop("openssl %s: %s" % (" ".join(args), r.stderr))

    p = "pass:board-test"
    subj = "/C=JP/ST=Tokyo/L=Tokyo/O=FicusOnline/OU=Development/CN="
    os.chdir(files)
    openssl("genrsa", "-des3", "-passout", p, "-out", "mqtt_ca.key", "2048")
    openssl("req", "-new", "-x509", "-days", "3650", "-key", "mqtt_ca.key", "-passin", p,
            "-subj", subj + "Board CA", "-out", "mqtt_ca.crt")
    openssl("genrsa", "-out", "mqtt_srv.key", "2048")
    openssl("req", "-new", "-out", "mqtt_srv.csr", "-key", "mqtt_srv.key", "-subj", subj + "localhost")
    with open("san.ext", "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "mqtt_srv.csr", "-CA", "mqtt_ca.crt", "-CAkey", "mqtt_ca.key",
            "-passin", p, "-CAcreateserial", "-out", "mqtt_srv.crt", "-days", "3650",
            "-extfile", "san.ext")
    # mosquitto_passwd -c as the seed says (-b: no prompt).
    for i, (user, pw) in enumerate((("testuser", "test-secret"), ("x", "x-secret"))):
        r = run(["mosquitto_passwd"] + (["-c"] if i == 0 else []) + ["-b", "passwd", user, pw])
        if r.returncode != 0:
            raise Stop("mosquitto_passwd: " + r.stderr)
    # Seed 004's ACL, with the `user x` section of tests/auth.rs.
    with open(SEED_004_ACL) as f:
        acl = f.read()
    with open("acl", "w") as f:
        f.write(acl + "\nuser x\ntopic x/#\n")
    tls = "cafile /etc/midge/certs/mqtt_ca.crt\ncertfile /etc/midge/certs/mqtt_srv.crt\n" \
          "keyfile /etc/midge/certs/mqtt_srv.key\n"
    with open("seeds.conf", "w") as f:
        f.write("# seed 004: plain 1883 and TLS 1884; seed 003: TLS 8883\n"
                "listener 1883\nlistener 1884\n" + tls + "listener 8883\n" + tls +
                "allow_anonymous true\npassword_file /etc/midge/passwd\nacl_file /etc/midge/acl\n")
    with open("memory.conf", "w") as f:
        f.write("listener 1883\nallow_anonymous true\n")
    os.chdir(d)
    tar = os.path.join(d, "files.tar")
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as t:
        t.add(files, arcname=".")
    return files, tar


# --- the checks ----------------------------------------------------------------


def memory(b, unit):
    """memory.current of unit's cgroup on the board, in bytes; prints what
    memory.stat says it is made of."""
    cg = "/sys/fs/cgroup/system.slice/" + unit
    stat = dict(line.split() for line in b.ok("cat %s/memory.stat" % cg).splitlines())
    print("#   memory.stat: " + ", ".join("%s %d KiB" % (k, int(stat.get(k, 0)) // 1024)
                                      for k in ("anon", "file", "kernel_stack", "pagetables", "sock", "slab")),
          flush=True)
    return int(b.ok("cat %s/memory.current" % cg))


def measure(b, unit, port):
    """memory.current empty and with each number of CLIENT_STEPS idle
    subscribed clients; returns {clients: bytes}, or None."""
    figures = {}
    time.sleep(SETTLE)
    figures[0] = memory(b, unit)
    print("# %s empty: memory.current %d bytes" % (unit, figures[0]), flush=True)
    sockets = []
    acked = 0
    try:
        for n in CLIENT_STEPS:
            acked += idle_clients(port, len(sockets), n - len(sockets), sockets)
            if not check(acked == n, "%s: %d idle clients through the forwarded port, each subscribed" %
                         (unit, n), "%d got their SUBACK" % acked):
                break
            time.sleep(SETTLE)
            figures[n] = memory(b, unit)
            tasks = b.ok("cat /sys/fs/cgroup/system.slice/%s/pids.current" % unit)
            print("# %s with %d clients: memory.current %d bytes, %s tasks" % (unit, n, figures[n], tasks),
                  flush=True)
    finally:
        for s in sockets:
            s.close()
    return figures


def scenario(b, files):
    ports = b.ports
    t = b.login()
    check(True, "the board boots to a root shell on its serial console (%.0f s)" % t)
    uname = b.ok("uname -m")
    mem = b.ok("awk '/MemTotal/ { print $2 }' /proc/meminfo")
    print("# board: uname -m %s, kernel %s, MemTotal %s kB, %s" %
          (uname, b.ok("uname -r"), mem, b.ok(". /etc/os-release && echo $PRETTY_NAME")), flush=True)
    check(uname == "armv7l", "uname -m on the board is armv7l", uname)
    check(b.ok("stat -fc %T /sys/fs/cgroup") == "cgroup2fs", "the board runs systemd on cgroup v2")

    # The package.
    b.ok("mkdir -p /root/files && tar -xf /dev/disk/by-id/virtio-files -C /root/files")
    status, out = b.sh("dpkg -i /root/files/midge.deb", 600)
    if not check(status == 0, "dpkg -i midge_*_armhf.deb on the board", out[-1500:]):
        raise Stop("the package did not install")
    pw = b.ok("getent passwd midge || true")
    f = pw.split(":")
    check(len(f) == 7 and int(f[2]) < 1000 and f[5] == "/var/lib/midge" and f[6] == "/usr/sbin/nologin",
          "the system user midge exists (home /var/lib/midge, no login shell)", pw)
    conffiles = b.ok("dpkg-query -W -f='${Conffiles}' midge")
    check(" /etc/midge/midge.conf " in conffiles and b.sh("test -s /etc/midge/midge.conf")[0] == 0,
          "the conffile /etc/midge/midge.conf is in place and registered", conffiles)
    b.ok("systemctl start midge")
    show = b.ok("systemctl show -p Type -p ActiveState -p SubState -p MainPID midge")
    check("Type=notify" in show and "ActiveState=active" in show and "SubState=running" in show,
          "systemctl start midge: active (running), Type=notify", show.replace("\n", " "))
    check(b.ok("systemctl is-enabled midge") == "enabled", "midge.service is enabled by the package")

    # The walkthroughs' configuration, as docs/INSTALL.md puts it.
    b.ok("install -d -m 0755 /etc/midge/certs && cd /root/files && "
         "install -m 0644 mqtt_ca.crt mqtt_srv.crt /etc/midge/certs/ && "
         "install -m 0640 -g midge mqtt_srv.key /etc/midge/certs/ && "
         "install -m 0640 -g midge passwd acl /etc/midge/ && "
         "install -m 0644 seeds.conf /etc/midge/conf.d/seeds.conf")
    status, out = b.sh("runuser -u midge -- midge -t -c /etc/midge/midge.conf")
    check(status == 0, "midge -t accepts the seeds' configuration", out)
    b.ok("systemctl restart midge")
    pid = b.ok("systemctl show -p MainPID --value midge")
    b.ok("systemctl reload midge && sleep 5")
    show = b.ok("systemctl show -p ActiveState -p SubState -p MainPID midge")
    check("ActiveState=active" in show and "SubState=running" in show and "MainPID=%s" % pid in show,
          "systemctl reload midge (SIGHUP) keeps it running, same MainPID %s" % pid, show.replace("\n", " "))

    walkthroughs(b, files, ports)

    # Persistence across a reboot of the board.
    r = run(["mosquitto_pub", "-h", "localhost", "-p", str(ports[1883]), "-u", "x", "-P", "x-secret",
             "-t", "x/kept", "-m", "before the reboot", "-r", "-q", "1"])
    check(r.returncode == 0, "a retained message published before the reboot", r.stderr)
    t = b.reboot()
    show = b.ok("systemctl show -p ActiveState -p SubState midge")
    check("ActiveState=active" in show and "SubState=running" in show,
          "after a reboot of the board (%.0f s) midge is active (running)" % t, show.replace("\n", " "))
    r = run(["mosquitto_sub", "-h", "localhost", "-p", str(ports[1883]), "-t", "x/kept", "-C", "1", "-W", "60"],
            timeout=90)
    check(r.stdout.strip() == "before the reboot", "the retained message is there after the reboot",
          repr(r.stdout + r.stderr))

    # Memory on the board's kernel: midge, then Debian's mosquitto.
    figures = {}
    b.ok("cp /root/files/memory.conf /etc/midge/conf.d/seeds.conf")
    # 1,000 clients are 1,000 threads: above the unit's TasksMax=1024 less
    # the 64 midge keeps in reserve.
    b.ok("mkdir -p /etc/systemd/system/midge.service.d && "
         "printf '[Service]\\nTasksMax=4096\\n' >/etc/systemd/system/midge.service.d/tasks.conf && "
         "systemctl daemon-reload && systemctl restart midge")
    figures["midge"] = measure(b, "midge.service", ports[1883])
    b.ok("systemctl stop midge")
    b.ok("cp /root/files/memory.conf /etc/mosquitto/conf.d/board.conf && "
         "mkdir -p /etc/systemd/system/mosquitto.service.d && "
         "printf '[Service]\\nLimitNOFILE=65536\\n' >/etc/systemd/system/mosquitto.service.d/files.conf && "
         "systemctl daemon-reload && systemctl start mosquitto")
    version = b.ok("dpkg-query -W -f='${Version}' mosquitto")
    figures["mosquitto"] = measure(b, "mosquitto.service", ports[1883])
    b.ok("systemctl stop mosquitto")
    table(figures, uname, version)

    # Purge: what the package installed goes, what the administrator added
    # to /etc/midge (the walkthroughs' password, ACL and certificate files)
    # stays, as dpkg does with every file it does not know.
    b.ok("rm -f /etc/midge/conf.d/seeds.conf; rm -rf /etc/systemd/system/midge.service.d; "
         "systemctl daemon-reload; systemctl start midge")
    status, out = b.sh("apt-get purge -y midge", 600)
    check(status == 0, "apt-get purge midge (running)", out[-1500:])
    left = b.ok("for p in /usr/sbin/midge /usr/bin/midge_sub /lib/systemd/system/midge.service "
                "/etc/midge/midge.conf /etc/midge/conf.d /var/lib/midge "
                "/etc/systemd/system/multi-user.target.wants/midge.service; do [ -e $p ] && echo $p; done; "
                "dpkg-query -W -f='${db:Status-Status}' midge 2>/dev/null; echo; pgrep -x midge; true")
    check(left.strip() in ("", "not-installed"),
          "the purge leaves no file of the package, no state, no process", left)
    added = b.ok("find /etc/midge -type f 2>/dev/null | sort")
    check(added.split() == ["/etc/midge/acl", "/etc/midge/certs/mqtt_ca.crt", "/etc/midge/certs/mqtt_srv.crt",
                            "/etc/midge/certs/mqtt_srv.key", "/etc/midge/passwd"],
          "the purge keeps only the files the administrator added to /etc/midge", added)
    check(b.sh("systemctl cat midge.service")[0] != 0, "systemd knows no midge.service after the purge")
    check(b.sh("getent passwd midge")[0] == 0,
          "the midge user stays after the purge, as the package documents (Debian keeps system users)")


def walkthroughs(b, files, ports):
    ca = os.path.join(files, "mqtt_ca.crt")
    p1883, p1884, p8883 = ports[1883], ports[1884], ports[8883]
    subs = []
    try:
        # Seed 004, plain: mosquitto_sub -v -t '#' (anonymous: `topic read #`).
        sub = Sub(["-h", "localhost", "-p", str(p1883), "-v", "-t", "#"])
        subs.append(sub)
        probe_auth = ["-u", "testuser", "-P", "test-secret"]
        ready = wait_subscribed(sub, p1883, "user/testuser/probe", probe_auth)
        check(ready, "seed 004: mosquitto_sub -v -t '#' on port 1883 (anonymous, ACL `topic read #`)")
        r = run(["mosquitto_pub", "-h", "localhost", "-p", str(p1883), "-t", "user/testuser/test1",
                 "-m", "Hello World"] + probe_auth)
        check(r.returncode == 0 and sub.wait_for("user/testuser/test1 Hello World"),
              "seed 004: testuser (password file of mosquitto_passwd -c) publishes to user/testuser/test1; "
              "'#' sees it", r.stderr)
        r = run(["mosquitto_pub", "-h", "localhost", "-p", str(p1883), "-t", "user/testuser/test1",
                 "-m", "bad", "-u", "testuser", "-P", "wrong"])
        check(r.returncode != 0, "seed 004: a wrong password is refused", r.stderr)
        run(["mosquitto_pub", "-h", "localhost", "-p", str(p1883), "-t", "user/other/test1", "-m", "denied"]
            + probe_auth)
        run(["mosquitto_pub", "-h", "localhost", "-p", str(p1883), "-t", "user/testuser/after", "-m", "after"]
            + probe_auth)
        sub.wait_for("user/testuser/after after")
        check("user/other/test1 denied" not in sub.lines,
              "seed 004: pattern readwrite user/%u/#: testuser's publish to user/other/ is dropped")
        # Seed 004, TLS on 1884: mosquitto_pub -l as user x (`user x`, topic x/#).
        r = run(["mosquitto_pub", "-h", "localhost", "-p", str(p1884), "--cafile", ca, "-u", "x",
                 "-P", "x-secret", "-t", "x/log", "-l"], stdin="first line\nsecond line\n")
        check(r.returncode == 0 and sub.wait_for("x/log first line") and sub.wait_for("x/log second line"),
              "seed 004: mosquitto_pub -l over TLS on port 1884 (--cafile): each line arrives", r.stderr)
        sub2 = Sub(["-h", "localhost", "-p", str(p1884), "--cafile", ca, "-v", "-t", "#"])
        subs.append(sub2)
        check(wait_subscribed(sub2, p1883, "user/testuser/probe2", probe_auth),
              "seed 004: mosquitto_sub -v -t '#' over TLS on port 1884 sees what comes in on 1883")
        got = paho_round_trip(p1883, "x/paho", "x", "x-secret")
        check(got == "hello from paho", "seed 004: paho as user x on port 1883, QoS 1 round trip", repr(got))

        # Seed 003: TLS on 8883 with its own CA, --cafile.
        r = run(["mosquitto_pub", "-h", "localhost", "-p", str(p8883), "--cafile", ca, "-u", "x", "-P", "x-secret",
                 "-t", "x/seed003", "-m", "hello over tls", "-r", "-q", "1"])
        check(r.returncode == 0, "seed 003: mosquitto_pub --cafile mqtt_ca.crt on port 8883", r.stderr)
        r = run(["mosquitto_sub", "-h", "localhost", "-p", str(p8883), "--cafile", ca, "-t", "x/seed003",
                 "-C", "1", "-W", "60"], timeout=90)
        check(r.stdout.strip() == "hello over tls", "seed 003: mosquitto_sub --cafile on port 8883 gets it",
              repr(r.stdout + r.stderr))
        r = run(["mosquitto_sub", "-h", "localhost", "-p", str(p8883), "-t", "x/seed003", "-C", "1", "-W", "30",
                 "--cafile", "/etc/ssl/certs/ca-certificates.crt"], timeout=60)
        check(r.returncode != 0 and r.stdout.strip() == "",
              "seed 003: a client that does not trust the board's CA is refused", repr(r.stdout))
        got = paho_round_trip(p8883, "x/paho-tls", "x", "x-secret", cafile=ca)
        check(got == "hello from paho", "seed 003: paho with tls_set(ca_certs=mqtt_ca.crt) on port 8883",
              repr(got))
        try:
            ctx = ssl.create_default_context(cafile=ca)
            with socket.create_connection(("127.0.0.1", p8883), timeout=60) as s:
                with ctx.wrap_socket(s, server_hostname="127.0.0.1") as tls:
                    version = tls.version()
            check(True, "seed 003: the server certificate names 127.0.0.1 too (%s)" % version)
        except (OSError, ssl.SSLError) as e:
            check(False, "seed 003: the server certificate names 127.0.0.1 too", str(e))
    finally:
        for s in subs:
            s.stop()
    log = b.ok("journalctl -u midge --no-pager -o cat | tail -n 400")
    check("Opening ipv4 listen socket on port 8883." in log,
          "the journal has midge's listener lines (Mosquitto's format)")


def table(figures, uname, version):
    print("# memory.current of the service's cgroup on the board (uname -m %s):" % uname)
    print("# %-26s %12s %12s %12s %14s %14s" % ("broker", "empty", "100 clients", "1,000 clients",
                                                "per client 100", "per client 1k"))
    for name, f in (("midge", figures["midge"]), ("mosquitto " + version, figures["mosquitto"])):
        def kib(n):
            return "%.0f KiB" % (f[n] / 1024) if n in f else "-"

        def per(n):
            return "%.1f KiB" % ((f[n] - f[0]) / n / 1024) if n in f else "-"

        print("# %-26s %12s %12s %12s %14s %14s" % (name, kib(0), kib(100), kib(1000), per(100), per(1000)),
              flush=True)


def main():
    image, deb = sys.argv[1], sys.argv[2]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    work = tempfile.mkdtemp(prefix="midge-board-")
    board = None

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    t0 = time.monotonic()
    try:
        files, tar = make_files(work, deb)
        ports = {p: free_port() for p in (1883, 1884, 8883)}
        log = os.environ.get("BOARD_LOG", os.path.join(work, "console.log"))
        print("# board console: %s" % log, flush=True)
        board = Board(image, tar, ports, log)
        scenario(board, files)
    except Stop as e:
        check(False, "the board run stopped", str(e))
    except Exception as e:  # noqa: BLE001 - any error is a failed run, reported
        check(False, "the board run stopped", "%s: %s" % (type(e).__name__, e))
    finally:
        if board:
            board.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("# board test: %.0f s" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
