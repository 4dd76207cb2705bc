//! The config file and command line: every supported option observed over a
//! socket, and every kind of error naming the file, the line and the option.

mod common;

use std::time::Duration;

use common::broker::{run_midge_output, run_midge_to_end};
use common::packets::{Connect, puback, publish, pubrel};
use common::*;

// ---- max_inflight_messages / max_queued_messages ----

/// Publishes `count` QoS 1 messages to a subscriber that does not ack,
/// while a second, acking subscriber proves each one was routed. Returns
/// (how many arrived before any ack, how many arrived in all once the slow
/// subscriber acks everything), checking order and payloads.
fn window_and_queue(b: &Broker, count: u16) -> (usize, usize) {
    let mut slow = b.client("slow");
    slow.subscribe(1, &[("iq/#", 1)]);
    let mut fast = b.client("fast");
    fast.subscribe(1, &[("iq/#", 1)]);
    let mut p = b.client("pub");
    for i in 1..=count {
        p.publish("iq/t", format!("m{i}").as_bytes(), 1, false, i);
        let m = fast.expect_publish_eq("iq/t", format!("m{i}").as_bytes(), 1, false);
        fast.ack(&m);
    }
    // Every message has been routed. Without acks, only the window arrives.
    let mut got = Vec::new();
    loop {
        match slow.try_read(common::scaled(Duration::from_secs(1))) {
            ReadOutcome::Packet(pk) => got.push(pk.publish()),
            ReadOutcome::Timeout => break,
            ReadOutcome::Closed => panic!("slow subscriber closed"),
        }
    }
    let first = got.len();
    // Ack as they come: the queued ones follow, the dropped ones never.
    let mut acked = 0;
    loop {
        while acked < got.len() {
            slow.send(&puback(got[acked].pkid.unwrap()));
            acked += 1;
        }
        match slow.try_read(common::scaled(Duration::from_secs(1))) {
            ReadOutcome::Packet(pk) => got.push(pk.publish()),
            ReadOutcome::Timeout => break,
            ReadOutcome::Closed => panic!("slow subscriber closed"),
        }
    }
    for (i, m) in got.iter().enumerate() {
        assert_eq!(
            m.payload_str(),
            format!("m{}", i + 1),
            "order of delivery: {got:?}"
        );
        assert!(!m.dup);
    }
    (first, got.len())
}

#[test]
fn max_inflight_and_max_queued_messages() {
    // 5 in flight + 10 queued = 15 of 30; the rest is dropped. Mosquitto
    // 2.0.11 gives the same (5, 15) with this config.
    let b = Broker::start("max_inflight_messages 5\nmax_queued_messages 10\n");
    assert_eq!(window_and_queue(&b, 30), (5, 15));
}

#[test]
fn max_inflight_messages_2_max_queued_messages_3() {
    let b = Broker::start("max_inflight_messages 2\nmax_queued_messages 3\n");
    assert_eq!(window_and_queue(&b, 12), (2, 5));
}

#[test]
fn default_window_and_queue_keep_30_messages() {
    // Defaults 20 and 1000: 20 at once, all 30 in the end.
    let b = Broker::start("");
    assert_eq!(window_and_queue(&b, 30), (20, 30));
}

// ---- message_size_limit ----

/// A will larger than message_size_limit refuses the CONNECT, as Mosquitto
/// does (its test 07-will-oversize-payload): CONNACK 5 under 3.1.1; a will
/// at the limit is fine.
#[test]
fn a_will_over_message_size_limit_refuses_the_connect() {
    let b = Broker::start("message_size_limit 1\n");
    let mut c = b.raw();
    c.send(&Connect::new("big-will").will("w", b"AB", 0, false).build());
    c.expect_connack(5, false);
    c.expect_closed();
    let mut c = b.raw();
    c.send(&Connect::new("small-will").will("w", b"A", 0, false).build());
    c.expect_connack(0, false);
}

#[test]
fn message_size_limit_drops_oversize_publishes_but_completes_their_flow() {
    let b = Broker::start("message_size_limit 10\n");
    let mut s = b.client("sub");
    s.subscribe(1, &[("sz/#", 2)]);
    let mut p = b.client("pub");
    // At the limit: delivered.
    p.publish("sz/a", b"0123456789", 1, false, 1);
    let m = s.expect_publish_eq("sz/a", b"0123456789", 1, false);
    s.ack(&m);
    // Over it at QoS 1: PUBACK, not delivered.
    p.send(&publish("sz/b", b"0123456789X", 1, false, false, 2));
    p.expect_puback(2);
    // At QoS 2: PUBREC, PUBREL, PUBCOMP, not delivered.
    p.send(&publish("sz/c", b"0123456789X", 2, false, false, 3));
    p.expect_pubrec(3);
    p.send(&pubrel(3));
    p.expect_pubcomp(3);
    // At QoS 0: nothing to answer, not delivered.
    p.send(&publish("sz/d", b"0123456789X", 0, false, false, 0));
    // Retained and oversize: not stored either.
    p.send(&publish("sz/r", b"0123456789X", 1, true, false, 4));
    p.expect_puback(4);
    p.publish("sz/e", b"small", 0, false, 0);
    s.expect_publish_eq("sz/e", b"small", 0, false);
    s.expect_nothing(QUIET);
    // The publisher is still connected and served.
    p.ping();
    let mut late = b.client("late");
    late.subscribe(1, &[("sz/#", 0)]);
    late.expect_nothing(QUIET);
}

// ---- max_keepalive ----

#[test]
fn max_keepalive_rejects_longer_keepalives() {
    // Mosquitto 2.0 (since 2.0.12; Debian's 2.0.11 still accepts): a
    // 3.1/3.1.1 client asking for more than max_keepalive gets CONNACK 2.
    let b = Broker::start("max_keepalive 100\n");
    for level in [4u8, 3] {
        let mut c = b.raw().named(&format!("level {level} k101"));
        c.send(&Connect::new("ka").level(level).keepalive(101).build());
        c.expect_connack(2, false);
        c.expect_closed();

        let mut c = b.raw().named(&format!("level {level} k100"));
        c.send(&Connect::new("ka").level(level).keepalive(100).build());
        c.expect_connack(0, false);
        c.ping();
        c.disconnect();
    }
    let mut c = b.raw().named("k65535");
    c.send(&Connect::new("big").keepalive(65535).build());
    c.expect_connack(2, false);
    c.expect_closed();
}

// ---- allow_anonymous ----

#[test]
fn allow_anonymous_false_refuses_clients_without_username() {
    let b = Broker::start("allow_anonymous false\n");
    for level in [4u8, 3] {
        let mut c = b.raw().named(&format!("level {level}"));
        c.send(&Connect::new("anon").level(level).build());
        c.expect_connack(5, false);
        c.expect_closed();
    }
}

#[test]
fn allow_anonymous_false_without_password_file_matches_mosquitto() {
    // Observed with mosquitto 2.0.11: with no password file every client is
    // refused with 5, with or without username and password.
    let observed = same_as_mosquitto("allow_anonymous false", "allow_anonymous false\n", |b| {
        let mut out = Vec::new();
        for (case, c) in [
            ("no username", Connect::new("a1")),
            ("username", Connect::new("a2").username("bob")),
            (
                "username and password",
                Connect::new("a3").username("bob").password(b"pw"),
            ),
        ] {
            let mut r = b.raw().named(case);
            r.send(&c.build());
            let (sp, rc) = r.read_connack();
            r.expect_closed();
            out.push(format!("{case}: rc {rc} sp {}", sp as u8));
        }
        out
    });
    assert_eq!(
        observed,
        [
            "no username: rc 5 sp 0",
            "username: rc 5 sp 0",
            "username and password: rc 5 sp 0"
        ]
    );
}

#[test]
fn a_listener_without_allow_anonymous_refuses_anonymous_clients() {
    // Mosquitto 2: once a listener is configured, anonymous access is off
    // unless allow_anonymous true.
    let b = Broker::start_exact("listener 0 127.0.0.1\n");
    let mut c = b.raw();
    c.send(&Connect::new("anon").build());
    c.expect_connack(5, false);
    c.expect_closed();
}

#[test]
fn allow_anonymous_true_accepts() {
    let b = Broker::start_exact("listener 0 127.0.0.1\nallow_anonymous true\n");
    let mut c = b.client("anon");
    c.ping();
}

// ---- listener / port / comments ----

#[test]
fn comments_blank_lines_and_every_supported_option_are_accepted() {
    let conf = "\
# midge test config
   # an indented comment

listener 0 127.0.0.1
allow_anonymous true
max_inflight_messages 20
max_queued_messages 1000

message_size_limit 0
max_keepalive 65535
";
    let b = Broker::start_exact(conf);
    b.wait_for_log(
        &format!("Config loaded from {}.", b.conf_path.display()),
        TIMEOUT,
    );
    let mut c = b.client("ok");
    c.subscribe(1, &[("t", 0)]);
    c.publish("t", b"x", 0, false, 0);
    c.expect_publish_eq("t", b"x", 0, false);
}

/// Starts midge on a port found free, retrying when something else took it
/// first. `make` builds the arguments from the port.
fn start_on_free_port(make: impl Fn(u16) -> (Option<String>, Vec<String>)) -> (Broker, u16) {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port();
        let (conf, args) = make(port);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = match conf {
            Some(conf) => {
                let dir = TempDir::new("midge-conf");
                let path = dir.write("midge.conf", &conf);
                let mut all = vec!["-c", path.to_str().unwrap()];
                all.extend(&args);
                let r = Broker::start_without_config(&all);
                drop(dir);
                r
            }
            None => Broker::start_without_config(&args),
        };
        match r {
            Ok(b) => return (b, port),
            Err(e) => last = e,
        }
    }
    panic!("midge did not start on a free port: {last}");
}

#[test]
fn listener_with_a_fixed_port_and_address() {
    let (b, port) = start_on_free_port(|p| {
        (
            Some(format!("listener {p} 127.0.0.1\nallow_anonymous true\n")),
            vec![],
        )
    });
    assert_eq!(b.port, port);
    b.wait_for_log(
        &format!("Opening ipv4 listen socket on port {port}."),
        TIMEOUT,
    );
    let mut c = b.client("fixed");
    c.ping();
}

#[test]
fn port_option_opens_a_listener() {
    let (b, port) =
        start_on_free_port(|p| (Some(format!("port {p}\nallow_anonymous true\n")), vec![]));
    assert_eq!(b.port, port);
    let mut c = b.client("viaport");
    c.ping();
}

#[test]
fn dash_p_without_config_listens_on_loopback() {
    let (b, port) = start_on_free_port(|p| (None, vec!["-p".to_string(), p.to_string()]));
    assert_eq!(b.port, port);
    // No config: anonymous clients are allowed, as in Mosquitto 2's
    // local-only mode.
    let mut c = b.client("local");
    c.ping();
}

/// `per_listener_settings true` with a password file and
/// `allow_anonymous false` but no listener line, started with `-p` alone
/// or not: the security options apply to the local-only listeners, so the
/// broker is never open to anonymous clients.
#[test]
fn per_listener_settings_without_a_listener_keeps_its_security() {
    let dir = TempDir::new("pls-local-only");
    let hash = midge::auth::passwd::Hash::new(
        midge::auth::passwd::Scheme::Pbkdf2(101),
        b"pw",
        b"midge-tests!",
    );
    let pw = dir.write("passwd", &format!("alice:{}\n", hash.encode()));
    let conf = format!(
        "per_listener_settings true\npassword_file {}\nallow_anonymous false\n",
        pw.display()
    );
    let (b, _) =
        start_on_free_port(|p| (Some(conf.clone()), vec!["-p".to_string(), p.to_string()]));
    let connack = |c: &Connect| {
        let mut raw = b.raw();
        raw.send(&c.build());
        raw.read_connack().1
    };
    assert_eq!(connack(&Connect::new("anonymous")), 5);
    assert_eq!(
        connack(&Connect::new("a").username("alice").password(b"no")),
        5
    );
    assert_eq!(
        connack(&Connect::new("a").username("alice").password(b"pw")),
        0
    );
}

/// `-c` with a listener and `-p`: as Mosquitto, -p is ignored (before,
/// midge opened one more listener, and failed with "Address already in
/// use" when the file had a listener on that port).
#[test]
fn dash_p_is_ignored_when_the_config_defines_a_listener() {
    let (b, port) = start_on_free_port(|p| {
        (
            Some(format!("listener {p} 127.0.0.1\nallow_anonymous true\n")),
            vec!["-p".to_string(), p.to_string()],
        )
    });
    assert_eq!(b.port, port);
    b.wait_for_log(&format!("-p {port} is ignored"), TIMEOUT);
    assert_eq!(
        b.count_log("Opening ipv4 listen socket"),
        1,
        "{:?}",
        b.logs()
    );
    b.client("on-the-listener").ping();
    // Another port given with -p is not opened.
    let other = free_port();
    let (b, port) = start_on_free_port(|p| {
        (
            Some(format!("listener {p} 127.0.0.1\nallow_anonymous true\n")),
            vec!["-p".to_string(), other.to_string()],
        )
    });
    assert_eq!(b.port, port);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", other)).is_err(),
        "-p {other} was opened"
    );
}

/// `-c` with a file that defines no listener, and `-p`: the local-only
/// listeners on that port, as Mosquitto.
#[test]
fn dash_p_with_a_config_without_listener_is_local_only_on_that_port() {
    let (b, port) = start_on_free_port(|p| {
        (
            Some("allow_anonymous true\n".to_string()),
            vec!["-p".to_string(), p.to_string()],
        )
    });
    assert_eq!(b.port, port);
    b.wait_for_log("local only mode", TIMEOUT);
    b.client("local").ping();
}

#[test]
fn two_listeners() {
    let b =
        Broker::start_exact("listener 0 127.0.0.1\nlistener 0 127.0.0.1\nallow_anonymous true\n");
    wait_until("two listen lines", TIMEOUT, || {
        b.count_log("Opening ipv4 listen socket on port ") >= 2
    });
    let ports: Vec<u16> = b
        .logs()
        .iter()
        .filter_map(|l| l.split("Opening ipv4 listen socket on port ").nth(1))
        .map(|r| r.trim_end_matches('.').parse().unwrap())
        .collect();
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert_ne!(ports[0], ports[1]);
    let mut a = RawClient::connect(
        std::net::SocketAddr::from(([127, 0, 0, 1], ports[0])),
        "on-first",
    );
    let mut z = RawClient::connect(
        std::net::SocketAddr::from(([127, 0, 0, 1], ports[1])),
        "on-second",
    );
    a.subscribe(1, &[("both", 0)]);
    z.publish("both", b"across listeners", 0, false, 0);
    a.expect_publish_eq("both", b"across listeners", 0, false);
}

// ---- command line ----

#[test]
fn verbose_flag_runs_normally() {
    let b = Broker::start_with_args("", &["-v"]);
    let mut c = b.client("loud");
    c.subscribe(1, &[("v/t", 1)]);
    c.disconnect();
    b.wait_for_log("Client loud disconnected.", TIMEOUT);
}

#[test]
fn version_flag() {
    let (st, out, err) = run_midge_output(&["--version"]);
    assert!(st.success(), "{st} {err}");
    assert!(
        out.contains(&format!("midge version {}", env!("CARGO_PKG_VERSION"))),
        "stdout: {out:?}"
    );
}

#[test]
fn help_flag_prints_usage() {
    let (_st, out, err) = run_midge_output(&["-h"]);
    let text = format!("{out}{err}");
    assert!(text.contains("Usage: midge"), "{text}");
    for opt in ["-c", "-p", "-v", "-h"] {
        assert!(text.contains(opt), "usage does not mention {opt}: {text}");
    }
}

#[test]
fn unknown_command_line_option_fails() {
    let (st, _err) = run_midge_to_end(&["--frobnicate"]);
    assert!(!st.success());
}

// ---- errors: file, line, option ----

/// The single non-empty stderr line of a failed start.
fn one_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
    lines[0].to_string()
}

#[test]
fn unknown_option_names_file_line_and_option() {
    let (st, err, path) =
        Broker::start_expect_fail("# comment\n\nfrobnicate 12\nlistener 0 127.0.0.1\n");
    assert!(!st.success());
    let line = one_line(&err);
    assert_eq!(
        line,
        format!("Error: {}:3: unknown option 'frobnicate'", path.display())
    );
}

#[test]
fn mosquitto_option_not_supported_yet() {
    let (_st, err, path) =
        Broker::start_expect_fail("listener 0 127.0.0.1\nbridge_reload_type lazy\n");
    let line = one_line(&err);
    assert_eq!(
        line,
        format!(
            "Error: {}:2: option 'bridge_reload_type' is not supported yet",
            path.display()
        )
    );
}

#[test]
fn mosquitto_2_1_plugin_options_name_the_built_in_equivalents() {
    let (_st, err, path) =
        Broker::start_expect_fail("plugin_load acl /usr/lib/mosquitto_acl_file.so\n");
    assert_eq!(
        one_line(&err),
        format!(
            "Error: {}:1: option 'plugin_load' is not supported by midge: midge does not \
             load C plugins; use password_file and acl_file",
            path.display()
        )
    );
}

#[test]
fn options_midge_never_implements_say_why() {
    for (opt, value, why) in [
        ("auth_plugin", "/usr/lib/auth.so", "C plugins"),
        ("plugin", "/usr/lib/dynsec.so", "C plugins"),
        ("auth_opt_backend", "mysql", "C plugins"),
        ("psk_file", "/etc/mosquitto/psk", "TLS-PSK"),
        ("tls_engine", "pkcs11", "OpenSSL engines"),
    ] {
        let (_st, err, path) = Broker::start_expect_fail(&format!("\n{opt} {value}\n"));
        let line = one_line(&err);
        let want = format!(
            "Error: {}:2: option '{opt}' is not supported by midge: ",
            path.display()
        );
        assert!(
            line.starts_with(&want) && line.contains(why),
            "for {opt}: {line:?}"
        );
    }
}

#[test]
fn bad_value_names_file_line_and_option() {
    for (n, conf) in [
        (2, "listener 0 127.0.0.1\nmax_inflight_messages abc\n"),
        (1, "max_queued_messages -5\n"),
        (3, "\n\nallow_anonymous maybe\n"),
        (1, "message_size_limit lots\n"),
        (1, "max_keepalive 70000\n"),
        (1, "listener notaport\n"),
    ] {
        let (_st, err, path) = Broker::start_expect_fail(conf);
        let line = one_line(&err);
        let option = conf
            .lines()
            .nth(n - 1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        let prefix = format!("Error: {}:{n}:", path.display());
        assert!(
            line.starts_with(&prefix) && line.contains(option),
            "for {conf:?}: expected {prefix:?} ... {option:?}, got {line:?}"
        );
    }
}

#[test]
fn missing_value_names_file_line_and_option() {
    let (_st, err, path) =
        Broker::start_expect_fail("listener 0 127.0.0.1\nmax_inflight_messages\n");
    let line = one_line(&err);
    let prefix = format!("Error: {}:2:", path.display());
    assert!(
        line.starts_with(&prefix) && line.contains("max_inflight_messages"),
        "{line:?}"
    );
}

#[test]
fn missing_config_file_is_named() {
    let dir = TempDir::new("midge-missing");
    let path = dir.path().join("nope.conf");
    let (st, err) = run_midge_to_end(&["-c", path.to_str().unwrap()]);
    assert!(!st.success(), "started without its config file");
    let line = one_line(&err);
    assert!(
        line.starts_with("Error: ") && line.contains(&path.display().to_string()),
        "{line:?}"
    );
}

#[test]
fn config_error_exits_without_listening() {
    // The error stops the start: no listener line, and it exits by itself.
    let (st, err, _path) = Broker::start_expect_fail("listener 0 127.0.0.1\nfrobnicate\n");
    assert!(!st.success());
    assert!(!err.contains("Opening ipv4 listen socket"), "{err}");
}
