//! Unix socket listeners (`listener 0 /path`, as in Mosquitto 2) over real
//! sockets: Debian's mosquitto_pub and mosquitto_sub (`--unix`) and paho
//! (`transport="unix"`) exchange messages with TCP clients of the same
//! broker; the listener's own settings apply; the socket file is replaced
//! when stale, has mode 0770 and is removed at exit.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::packets::Connect;
use common::tools::{self, MOSQUITTO_PUB, MOSQUITTO_SUB, TOOL_TIMEOUT};
use common::*;

/// A folder for socket files that the broker can still write once it has
/// dropped root (it removes its socket at exit, as Mosquitto does).
fn socket_dir() -> TempDir {
    let dir = TempDir::new("midge-unix");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod the socket folder");
    dir
}

fn path_text(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// The CONNACK return code an anonymous MQTT 3.1.1 client gets on the
/// Unix socket at `path`.
fn unix_connack(path: &Path) -> u8 {
    let mut s = UnixStream::connect(path).expect("connect to the unix socket");
    s.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
    s.write_all(&Connect::new("anon-unix").build())
        .expect("send CONNECT");
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).expect("read CONNACK");
    assert_eq!(connack[..2], [0x20, 0x02], "not a CONNACK: {connack:?}");
    connack[3]
}

/// Debian's command-line clients reach the broker through `--unix`: what
/// one publishes there reaches a TCP subscriber, and the other way round.
#[test]
fn mosquitto_clients_on_a_unix_socket_talk_with_tcp_clients() {
    tools::require(MOSQUITTO_PUB);
    tools::require(MOSQUITTO_SUB);
    let dir = socket_dir();
    let sock = dir.path().join("mqtt.sock");
    let b = Broker::start(&format!(
        "listener 0 127.0.0.1\nlistener 0 {}\n",
        sock.display()
    ));
    b.wait_for_log(
        &format!("Opening unix listen socket on path {}.", sock.display()),
        TIMEOUT,
    );

    // mosquitto_pub on the Unix socket, a subscriber on TCP.
    let sub = tools::mosquitto_sub(b.port, &["-t", "unix/#", "-v", "-C", "2"]);
    tools::wait_until_subscribed(&b, &sub, "unix/probe");
    let mut pub_cmd = Command::new(MOSQUITTO_PUB);
    pub_cmd.args([
        "--unix",
        path_text(&sock),
        "-t",
        "unix/to-tcp",
        "-q",
        "1",
        "-m",
        "over the socket",
    ]);
    tools::ok(&tools::run(pub_cmd, "mosquitto_pub --unix", TOOL_TIMEOUT));
    sub.stdout
        .wait_from(0, TIMEOUT, |l| l == "unix/to-tcp over the socket")
        .unwrap_or_else(|| panic!("the TCP subscriber got nothing; {}", sub.output_text()));
    b.wait_for_log(
        &format!("New connection from {}:0 on port 0.", sock.display()),
        TIMEOUT,
    );

    // mosquitto_sub on the Unix socket, a publisher on TCP.
    let mut sub_cmd = Command::new(MOSQUITTO_SUB);
    sub_cmd.args(["--unix", path_text(&sock), "-t", "tcp/#", "-v", "-q", "1"]);
    let unix_sub = tools::Proc::spawn(sub_cmd, "mosquitto_sub --unix", false);
    let mut probe = b.client("tcp-prober");
    wait_until("the unix subscriber gets a message", TIMEOUT, || {
        probe.publish("tcp/to-unix", b"over TCP", 0, false, 0);
        unix_sub
            .stdout
            .wait_from(0, std::time::Duration::from_millis(200), |l| {
                l == "tcp/to-unix over TCP"
            })
            .is_some()
    });
}

/// paho-mqtt 2.1's `transport="unix"` works both ways with TCP clients.
#[test]
fn paho_on_a_unix_socket_talks_with_tcp_clients() {
    let dir = socket_dir();
    let sock = dir.path().join("paho.sock");
    let b = Broker::start(&format!(
        "listener 0 127.0.0.1\nlistener 0 {}\n",
        sock.display()
    ));
    let out = tools::run_py("paho_unix.py", &[path_text(&sock), &b.port.to_string()]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "GRANTED [1]",
            "GRANTED [1]",
            "MSG unix/in/1 q1 r0 to unix 1",
            "MSG unix/in/2 q1 r0 to unix 2",
            "MSG unix/in/3 q1 r0 to unix 3",
            "MSG unix/out/1 q1 r0 from unix 1",
            "MSG unix/out/2 q1 r0 from unix 2",
            "MSG unix/out/3 q1 r0 from unix 3",
        ],
        "{out}"
    );
}

/// A Unix socket listener has its own settings, as any listener: with
/// `per_listener_settings`, its `allow_anonymous false` refuses an
/// anonymous client there while the TCP listener takes it, and
/// `mount_point` applies to its clients.
#[test]
fn a_unix_socket_listener_applies_its_own_settings() {
    let dir = socket_dir();
    let closed = dir.path().join("closed.sock");
    let mounted = dir.path().join("mounted.sock");
    let b = Broker::start(&format!(
        "per_listener_settings true\nlistener 0 127.0.0.1\nallow_anonymous true\n\
         listener 0 {}\nallow_anonymous false\n\
         listener 0 {}\nallow_anonymous true\nmount_point local/\n",
        closed.display(),
        mounted.display()
    ));
    assert_eq!(unix_connack(&closed), 5, "anonymous on the closed socket");
    assert_eq!(unix_connack(&mounted), 0, "anonymous on the open socket");
    b.client("anonymous-over-tcp").disconnect();

    let mut sub = b.client("tcp-sub");
    sub.subscribe(1, &[("#", 0)]);
    let mut cmd = Command::new(MOSQUITTO_PUB);
    cmd.args([
        "--unix",
        path_text(&mounted),
        "-t",
        "kitchen/temp",
        "-m",
        "21.5",
    ]);
    tools::ok(&tools::run(cmd, "mosquitto_pub --unix", TOOL_TIMEOUT));
    let p = sub.expect_publish();
    assert_eq!(p.topic, "local/kitchen/temp");
    assert_eq!(p.payload, b"21.5");
}

/// A socket file left by an earlier run does not stop the start-up (it is
/// replaced, as Mosquitto 2.1 does); the new one has mode 0770 and is gone
/// after SIGTERM. A path that is not a socket is refused, and left alone.
#[test]
fn a_stale_socket_is_replaced_and_the_socket_removed_at_exit() {
    let dir = socket_dir();
    let sock: PathBuf = dir.path().join("stale.sock");
    drop(UnixListener::bind(&sock).expect("bind a socket to leave behind"));
    assert!(sock.exists(), "the stale socket file stays");
    let conf = format!("listener 0 127.0.0.1\nlistener 0 {}\n", sock.display());
    let mut b = Broker::start_kind(BrokerKind::Midge, &conf, &[]);
    let meta = std::fs::metadata(&sock).expect("the socket file");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o770);
    assert_eq!(unix_connack(&sock), 0);
    assert!(b.stop(libc::SIGTERM).success());
    assert!(!sock.exists(), "the socket file outlived the broker");

    let file = dir.write("file.sock", "not a socket\n");
    let (_, stderr, _) = Broker::start_expect_fail(&format!(
        "listener 0 127.0.0.1\nallow_anonymous true\nlistener 0 {}\n",
        file.display()
    ));
    assert!(
        stderr.contains(&format!(
            "Error: unable to listen on unix socket {p}: {p} exists and is not a socket.",
            p = file.display()
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("the file"),
        "not a socket\n"
    );
}
