//! midge as a system service: the readiness protocol of systemd's
//! `Type=notify` units, the open-file limit it raises for itself, and the
//! example config the package installs as /etc/midge/midge.conf.

mod common;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;

use common::broker::run_midge_output;
use common::{Broker, Launch, TIMEOUT, TempDir};

/// The next datagram on `sock`, as text; panics after TIMEOUT.
fn recv_state(sock: &UnixDatagram, what: &str) -> String {
    sock.set_read_timeout(Some(TIMEOUT)).expect("set timeout");
    let mut buf = [0u8; 256];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no {what} datagram on NOTIFY_SOCKET: {e}"));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Starts midge with `NOTIFY_SOCKET=name`, where `sock` listens, and checks
/// the whole exchange: READY=1 while the port answers MQTT, nothing more
/// until SIGTERM, then STOPPING=1 and a clean exit.
fn ready_then_stopping(sock: &UnixDatagram, name: &str) {
    let mut b = Broker::start_launch(
        "",
        &Launch {
            env: &[("NOTIFY_SOCKET", name)],
            ..Launch::default()
        },
    );
    assert_eq!(recv_state(sock, "READY=1"), "READY=1");
    // Ready means ready: a client gets its CONNACK now.
    let _client = b.client("after-ready");
    sock.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 64];
    assert!(
        sock.recv(&mut buf).is_err(),
        "a second datagram came before any signal"
    );
    sock.set_nonblocking(false).expect("blocking");

    let status = b.stop(libc::SIGTERM);
    assert_eq!(recv_state(sock, "STOPPING=1"), "STOPPING=1");
    assert!(status.success(), "midge exited with {status} after SIGTERM");
}

#[test]
fn notify_socket_path_gets_ready_and_stopping() {
    let dir = TempDir::new("midge-notify");
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    ready_then_stopping(&sock, path.to_str().expect("utf-8 temp path"));
}

#[test]
fn notify_socket_abstract_name_gets_ready_and_stopping() {
    let name = format!("midge-test-notify-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
    let sock = UnixDatagram::bind_addr(&addr).expect("bind the notify socket");
    ready_then_stopping(&sock, &format!("@{name}"));
}

#[test]
fn without_notify_socket_nothing_changes() {
    // The variable unset: midge starts, serves and stops as before.
    let mut b = Broker::start("");
    let _client = b.client("plain");
    assert!(b.stop(libc::SIGTERM).success());
    assert!(!b.has_log("notify"), "{:?}", b.logs());
}

/// The `Max open files` soft and hard limits of a process.
fn nofile_limits(pid: u32) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/limits: {e}"));
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no 'Max open files' in /proc/{pid}/limits:\n{text}"));
    let v: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    assert!(v.len() >= 2, "cannot read {line:?}");
    (v[0].to_string(), v[1].to_string())
}

#[test]
fn raises_its_soft_fd_limit_to_the_hard_limit() {
    let (_, hard) = nofile_limits(std::process::id());
    let hard_n: u64 = hard.parse().expect("the hard limit is a number here");
    assert!(
        hard_n > 256,
        "the test needs a hard limit above 256, not {hard}"
    );
    // Start it with a soft limit well below the hard one, as systemd's
    // default of 1024 is below LimitNOFILE's hard limit.
    let b = Broker::start_launch(
        "",
        &Launch {
            shell_prefix: Some("ulimit -S -n 256"),
            ..Launch::default()
        },
    );
    let (soft_after, hard_after) = nofile_limits(b.pid());
    assert_eq!(hard_after, hard, "the hard limit must not change");
    assert_eq!(soft_after, hard, "the soft limit was not raised");
}

fn example_conf() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/midge/midge.conf")
}

/// The example config copied into `dir` (with an empty conf.d beside it),
/// its state directory, /var/lib/midge/, replaced by one in `dir`.
fn example_conf_in(dir: &TempDir) -> std::path::PathBuf {
    let text = std::fs::read_to_string(example_conf()).expect("read the example config");
    assert!(
        text.contains("\npersistence_location /var/lib/midge/\n"),
        "the example config keeps its state in /var/lib/midge/"
    );
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir state");
    std::fs::create_dir(dir.path().join("conf.d")).expect("mkdir conf.d");
    let text = text.replace("/var/lib/midge/", &format!("{}/", state.display()));
    dir.write("midge.conf", &text)
}

#[test]
fn example_config_passes_the_check() {
    let dir = TempDir::new("midge-example-check");
    let path = example_conf_in(&dir);
    let (status, stdout, stderr) =
        run_midge_output(&["-t", "-c", path.to_str().expect("utf-8 path")]);
    assert!(status.success(), "midge -t failed: {stderr}");
    assert_eq!(stdout.trim(), "configuration ok");
}

/// Options a user of the package looks for first; each must have an
/// example line (`#option value`) in the example config.
const DOCUMENTED: &[&str] = &[
    "listener",
    "allow_anonymous",
    "password_file",
    "acl_file",
    "max_inflight_messages",
    "max_queued_messages",
    "message_size_limit",
    "max_keepalive",
    "max_connections",
    "log_dest",
    "log_type",
    "persistence",
    "pid_file",
    "user",
];

#[test]
fn example_config_lines_are_all_valid_when_uncommented() {
    let text = std::fs::read_to_string(example_conf()).expect("read the example config");
    // Example lines are `#option value`; prose is `# text`.
    let mut uncommented = String::new();
    let mut found: Vec<String> = Vec::new();
    for line in text.lines() {
        match line.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => {
                found.extend(rest.split_whitespace().next().map(str::to_string));
                uncommented.push_str(rest);
            }
            // An option the package sets.
            None if line.starts_with(|c: char| c.is_ascii_lowercase()) => {
                found.extend(line.split_whitespace().next().map(str::to_string));
                uncommented.push_str(line);
            }
            _ => uncommented.push_str(line),
        }
        uncommented.push('\n');
    }
    for o in DOCUMENTED {
        assert!(
            found.iter().any(|f| f == o),
            "no '#{o} ...' example line in etc/midge/midge.conf"
        );
    }
    // All the examples at once, as written, are a valid config (its
    // include_dir is relative: conf.d beside the file).
    let dir = TempDir::new("midge-example");
    std::fs::create_dir(dir.path().join("conf.d")).expect("mkdir conf.d");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir state");
    uncommented = uncommented.replace("/var/lib/midge/", &format!("{}/", state.display()));
    // The password and ACL files it names, empty, in the test's directory.
    for name in ["passwd", "acl"] {
        let file = dir.write(name, "");
        uncommented = uncommented.replace(
            &format!("/etc/midge/{name}\n"),
            &format!("{}\n", file.display()),
        );
    }
    let path = dir.write("midge.conf", &uncommented);
    let (status, stdout, stderr) =
        run_midge_output(&["-t", "-c", path.to_str().expect("utf-8 path")]);
    assert!(
        status.success(),
        "the uncommented examples fail: {stderr}\n{uncommented}"
    );
    assert_eq!(stdout.trim(), "configuration ok");
}

#[test]
fn example_config_reads_local_settings_from_conf_d() {
    // The package's layout: midge.conf unchanged, a listener added in
    // conf.d/local.conf as the README there says.
    let dir = TempDir::new("midge-conf-d");
    let main = example_conf_in(&dir);
    dir.write(
        "conf.d/local.conf",
        "listener 0 127.0.0.1\nallow_anonymous true\n",
    );
    let mut b = Broker::start_without_config(&["-c", main.to_str().expect("utf-8")])
        .unwrap_or_else(|e| panic!("midge did not start with conf.d/local.conf: {e}"));
    assert!(
        !b.has_log("local only mode"),
        "conf.d/local.conf was not read: {:?}",
        b.logs()
    );
    let _c = b.client("from-conf-d");
    assert!(b.stop(libc::SIGTERM).success());
}

#[test]
fn example_config_serves_loopback_clients() {
    // The package's config unchanged, on a free port instead of 1883 (-p
    // keeps the local-only mode): clients on this machine connect.
    let dir = TempDir::new("midge-example-serves");
    let path = example_conf_in(&dir);
    let mut last = String::new();
    for _ in 0..5 {
        // Another process may take the free port first: retry with another.
        let port = common::free_port().to_string();
        match Broker::start_without_config(&["-c", path.to_str().expect("utf-8"), "-p", &port]) {
            Ok(mut b) => {
                let _c = b.client("example-conf");
                assert!(b.stop(libc::SIGTERM).success());
                return;
            }
            Err(e) => last = e,
        }
    }
    panic!("midge did not start with the example config: {last}");
}

/// Logging never stalls the broker: with `-v` and its log going to a pipe
/// that nobody reads, the broker keeps serving clients (lines beyond the
/// log queue are dropped and counted) and SIGTERM still ends it. Debian's
/// mosquitto 2.0.11 and 2.1.2 stop answering in this case.
#[test]
fn a_log_pipe_nobody_reads_stalls_nothing() {
    use std::io::BufRead;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let dir = TempDir::new("log-stall");
    // Port 0: the broker picks a free port and names it in its first log
    // lines, read here up to that line and then never again.
    let conf = dir.write("midge.conf", "listener 0 127.0.0.1\nallow_anonymous true\n");
    let mut child = common::midge_command(&["-c", conf.to_str().unwrap(), "-v"], None)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start midge");
    // Kept open and, after the port line, never read: its 64 KiB fill up
    // with log lines.
    let mut unread = std::io::BufReader::new(child.stderr.take().expect("stderr piped"));
    const MARK: &str = "Opening ipv4 listen socket on port ";
    let mut port = 0u16;
    let mut line = String::new();
    while port == 0 {
        line.clear();
        if unread.read_line(&mut line).expect("read the log") == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("midge ended before it listened");
        }
        if let Some(at) = line.find(MARK) {
            port = line[at + MARK.len()..]
                .trim()
                .trim_end_matches('.')
                .parse()
                .expect("the port in the log line");
        }
    }
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // About 500 KB of log lines: connections, subscriptions, publishes.
    for i in 0..1500 {
        let mut c = common::RawClient::connect(addr, &format!("noisy-client-{i:04}"));
        c.subscribe(1, &[("noise/#", 0)]);
        c.disconnect();
    }
    // Still served.
    let mut sub = common::RawClient::connect(addr, "sub");
    sub.subscribe(1, &[("still/served", 1)]);
    let mut p = common::RawClient::connect(addr, "pub");
    p.publish("still/served", b"yes", 1, false, 1);
    sub.expect_publish_eq("still/served", b"yes", 1, false);
    // And SIGTERM ends it.
    sigterm(child.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("midge did not end on SIGTERM with its log pipe full");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM to `pid`, through kill(1).
fn sigterm(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success());
}

/// With `WatchdogSec=` systemd sets `WATCHDOG_USEC`: midge pings
/// `WATCHDOG=1` from its router loop at half that interval, beside
/// READY=1. The pings keep coming, and they are paced by the interval
/// asked for: never more than one per 200 ms since the start (load can
/// only make them fewer).
#[test]
fn the_watchdog_pings_at_the_interval_asked_for() {
    use std::time::{Duration, Instant};
    let dir = TempDir::new("midge-watchdog");
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    let name = path.to_str().expect("utf-8 temp path");
    let start = Instant::now();
    // 400 ms asked: a ping every 200 ms.
    let mut b = Broker::start_launch(
        "",
        &Launch {
            env: &[("NOTIFY_SOCKET", name), ("WATCHDOG_USEC", "400000")],
            ..Launch::default()
        },
    );
    let mut pings = 0;
    let mut ready = false;
    while pings < 4 || !ready {
        match recv_state(&sock, "WATCHDOG=1").as_str() {
            "READY=1" => ready = true,
            "WATCHDOG=1" => pings += 1,
            other => panic!("unexpected datagram {other:?}"),
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let _client = b.client("watched");
    sock.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 64];
    while let Ok(n) = sock.recv(&mut buf) {
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        pings += 1;
    }
    let most = start.elapsed().as_millis() / 200 + 2;
    assert!(
        pings as u128 <= most,
        "{pings} pings in {:?}: more than one per 200 ms",
        start.elapsed()
    );
    assert!(b.stop(libc::SIGTERM).success());
}
