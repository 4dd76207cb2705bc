//! Bridges (`connection` sections) between midge and Debian's mosquitto,
//! and between two midges, over real loopback sockets: remapped topics in
//! each direction, no loops, queueing while the remote is away,
//! reconnection that never gives up, fail-over and TLS.

mod common;

use std::time::Duration;

use common::tools::{self, Proc};
use common::*;

const WAIT: Duration = Duration::from_secs(20);

/// A bridge section to `addresses` with quick retries.
fn bridge(name: &str, addresses: &str, topics: &[&str]) -> String {
    let mut s = format!(
        "connection {name}\naddress {addresses}\nremote_clientid {name}-remote\n\
         restart_timeout 1 2\n"
    );
    for t in topics {
        s.push_str(&format!("topic {t}\n"));
    }
    s
}

/// A subscriber on `b` that is known to be subscribed to `filter`
/// (probed on `probe`, which `filter` must match).
fn subscriber(b: &Broker, args: &[&str], probe: &str) -> Proc {
    let sub = tools::mosquitto_sub(b.port, args);
    tools::wait_until_subscribed(b, &sub, probe);
    sub
}

/// Waits until the bridge of `local` is connected (its notification).
fn connected(local: &Broker, name: &str) {
    local.wait_for_log(&format!("Connecting bridge (step 2) {name}"), WAIT);
}

#[test]
fn midge_to_mosquitto_out_with_prefixes() {
    let remote = Broker::mosquitto("");
    let sub = subscriber(
        &remote,
        &["-v", "-q", "1", "-t", "site/b1/#", "-t", "probe"],
        "probe",
    );
    let local = Broker::start(&bridge(
        "up",
        &format!("127.0.0.1:{}", remote.port),
        &["sensors/# out 1 board/ site/b1/"],
    ));
    connected(&local, "up");
    tools::mosquitto_pub(
        local.port,
        &["-q", "1", "-t", "board/sensors/t", "-m", "21"],
    );
    sub.wait_line("site/b1/sensors/t 21", WAIT);
    // Not bridged: outside the local prefix.
    tools::mosquitto_pub(local.port, &["-t", "sensors/t", "-m", "no"]);
    tools::mosquitto_pub(
        local.port,
        &["-q", "1", "-t", "board/sensors/u", "-m", "22"],
    );
    sub.wait_line("site/b1/sensors/u 22", WAIT);
    assert!(!sub.output_text().contains(" no"), "{}", sub.output_text());
}

#[test]
fn mosquitto_to_midge_both_with_prefixes() {
    let remote = Broker::start("");
    let up = subscriber(&remote, &["-v", "-t", "central/#", "-t", "probe"], "probe");
    let local = Broker::mosquitto(&bridge(
        "m",
        &format!("127.0.0.1:{}", remote.port),
        &["# both 1 board/ central/"],
    ));
    // Mosquitto sets the bridge bit; midge says so.
    remote.wait_for_log("New bridge connected from 127.0.0.1:", WAIT);
    remote.wait_for_log("as m-remote (p2, c0, k60).", WAIT);
    let down = subscriber(&local, &["-v", "-t", "board/#", "-t", "probe"], "probe");
    tools::mosquitto_pub(local.port, &["-q", "1", "-t", "board/up", "-m", "u1"]);
    up.wait_line("central/up u1", WAIT);
    tools::mosquitto_pub(remote.port, &["-q", "1", "-t", "central/down", "-m", "d1"]);
    down.wait_line("board/down d1", WAIT);
}

/// A `both` bridge between two midges: a message published on either side
/// reaches each side's subscriber once and does not come back.
#[test]
fn midge_both_midge_delivers_once_without_loops() {
    let remote = Broker::start("");
    let local = Broker::start(&bridge(
        "loop",
        &format!("127.0.0.1:{}", remote.port),
        &["t/# both 2"],
    ));
    remote.wait_for_log("New bridge connected from", WAIT);
    let on_local = subscriber(&local, &["-v", "-q", "2", "-t", "t/#"], "t/probe");
    let on_remote = subscriber(&remote, &["-v", "-q", "2", "-t", "t/#"], "t/probe");
    tools::mosquitto_pub(local.port, &["-q", "2", "-t", "t/a", "-m", "from-local"]);
    tools::mosquitto_pub(remote.port, &["-q", "2", "-t", "t/b", "-m", "from-remote"]);
    for sub in [&on_local, &on_remote] {
        sub.wait_line("t/a from-local", WAIT);
        sub.wait_line("t/b from-remote", WAIT);
    }
    // A marker sent after them on each side: once it is in, any bounce
    // would be in too.
    tools::mosquitto_pub(local.port, &["-q", "2", "-t", "t/z", "-m", "end-local"]);
    tools::mosquitto_pub(remote.port, &["-q", "2", "-t", "t/z", "-m", "end-remote"]);
    for sub in [&on_local, &on_remote] {
        sub.wait_line("t/z end-local", WAIT);
        sub.wait_line("t/z end-remote", WAIT);
        let out = sub.output_text();
        assert_eq!(out.matches("t/a from-local").count(), 1, "{out}");
        assert_eq!(out.matches("t/b from-remote").count(), 1, "{out}");
    }
}

/// `bridge_protocol_version mqttv50` to Debian's mosquitto, `both`: MQTT 5
/// has no bridge bit, so no-local subscriptions on the remote keep each
/// message from coming back, and the retain flag stays as published.
#[test]
fn mqtt5_bridge_to_mosquitto_without_loops() {
    let remote = Broker::mosquitto("");
    let local = Broker::start(&format!(
        "{}bridge_protocol_version mqttv50\n",
        bridge(
            "five",
            &format!("127.0.0.1:{}", remote.port),
            &["t/# both 1"]
        )
    ));
    remote.wait_for_log("as five-remote (p5, c0, k60)", WAIT);
    let on_local = subscriber(&local, &["-v", "-t", "t/#"], "t/probe");
    let on_remote = subscriber(&remote, &["-v", "-t", "t/#"], "t/probe");
    tools::mosquitto_pub(local.port, &["-q", "1", "-t", "t/a", "-m", "from-local"]);
    tools::mosquitto_pub(remote.port, &["-q", "1", "-t", "t/b", "-m", "from-remote"]);
    tools::mosquitto_pub(local.port, &["-q", "1", "-t", "t/z", "-m", "end-local"]);
    tools::mosquitto_pub(remote.port, &["-q", "1", "-t", "t/z", "-m", "end-remote"]);
    for sub in [&on_local, &on_remote] {
        for line in [
            "t/a from-local",
            "t/b from-remote",
            "t/z end-local",
            "t/z end-remote",
        ] {
            sub.wait_line(line, WAIT);
        }
        let out = sub.output_text();
        assert_eq!(out.matches("t/a from-local").count(), 1, "{out}");
        assert_eq!(out.matches("t/b from-remote").count(), 1, "{out}");
    }
    // A retained message crosses with its retain flag.
    tools::mosquitto_pub(local.port, &["-r", "-t", "t/kept", "-m", "r1"]);
    let late = tools::mosquitto_sub(remote.port, &["-v", "-C", "1", "-t", "t/kept"]);
    late.wait_line("t/kept r1", WAIT);
}

/// The remote goes away while a publisher sends QoS 2 messages: they wait
/// in the bridge's session and each arrives exactly once when it is back.
#[test]
fn messages_wait_while_the_remote_is_down() {
    let dir = TempDir::new("bridge-remote");
    // Started as root, the broker runs as `nobody`.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let port = free_port();
    let remote_conf = format!(
        "listener {port} 127.0.0.1\npersistence true\npersistence_location {}/\n",
        dir.path().display()
    );
    let mut remote = Broker::start(&remote_conf);
    // A persistent subscriber on the remote, offline while we publish.
    let sub_args = ["-v", "-q", "2", "-c", "-i", "reader", "-t", "up/#"];
    let sub = subscriber(
        &remote,
        &[&sub_args[..], &["-t", "probe"]].concat(),
        "probe",
    );
    drop(sub);
    let local = Broker::start(&bridge("q", &format!("127.0.0.1:{port}"), &["up/# out 2"]));
    remote.wait_for_log("New bridge connected from", WAIT);
    remote.stop(libc::SIGTERM);
    local.wait_for_log("Client local.q-remote closed its connection.", WAIT);
    for i in 0..5 {
        // Local publishers notice nothing: each exchange completes.
        tools::mosquitto_pub(
            local.port,
            &["-q", "2", "-t", "up/n", "-m", &format!("m{i}")],
        );
    }
    let remote = Broker::start_exact(&format!("{remote_conf}allow_anonymous true\n"));
    remote.wait_for_log("New bridge connected from", WAIT);
    let sub = tools::mosquitto_sub(remote.port, &sub_args);
    for i in 0..5 {
        sub.wait_line(&format!("up/n m{i}"), WAIT);
    }
    tools::mosquitto_pub(local.port, &["-q", "2", "-t", "up/n", "-m", "last"]);
    sub.wait_line("up/n last", WAIT);
    let out = sub.output_text();
    for i in 0..5 {
        assert_eq!(out.matches(&format!("up/n m{i}")).count(), 1, "{out}");
    }
}

/// Nothing listens, then a name that does not resolve, then a refused
/// TLS handshake: the bridge keeps trying, and connects once the remote
/// comes up.
#[test]
fn reconnection_never_gives_up() {
    let port = free_port();
    let local = Broker::start(&bridge(
        "retry",
        &format!("127.0.0.1:{port}"),
        &["x/# out 1"],
    ));
    let refused = "Error creating bridge: Connection refused.";
    local.wait_for_log(refused, WAIT);
    let from = local.log_len();
    local.wait_for_log_from(from, refused, WAIT);
    let remote = Broker::start_exact(&format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\n"
    ));
    remote.wait_for_log("New bridge connected from", WAIT);
    connected(&local, "retry");
}

#[test]
fn unresolvable_name_is_retried() {
    let local = Broker::start(&bridge("dns", "no-such-host.invalid:1883", &["x out"]));
    let line = "Warning: Error resolving bridge address:";
    local.wait_for_log(line, WAIT);
    let from = local.log_len();
    local.wait_for_log_from(
        from,
        "Connecting bridge (step 1) dns (no-such-host.invalid:1883)",
        WAIT,
    );
    local.wait_for_log_from(from, line, WAIT);
}

#[test]
fn fails_over_to_the_second_address() {
    let remote = Broker::start("");
    let dead = free_port();
    let local = Broker::start(&bridge(
        "fo",
        &format!("127.0.0.1:{dead} 127.0.0.1:{}", remote.port),
        &["f/# out 1"],
    ));
    local.wait_for_log(
        &format!("Connecting bridge (step 1) fo (127.0.0.1:{dead})"),
        WAIT,
    );
    local.wait_for_log(
        &format!("Connecting bridge (step 2) fo (127.0.0.1:{})", remote.port),
        WAIT,
    );
    remote.wait_for_log("New bridge connected from", WAIT);
    let sub = subscriber(&remote, &["-v", "-t", "f/#"], "f/probe");
    tools::mosquitto_pub(local.port, &["-q", "1", "-t", "f/x", "-m", "over"]);
    sub.wait_line("f/x over", WAIT);
}

/// Notifications: `1` on both sides while connected; the remote's will
/// says `0` when the bridge drops off.
#[test]
fn notifications_on_both_sides() {
    let remote = Broker::mosquitto("");
    let topic = "$SYS/broker/connection/n-remote/state";
    let on_remote = tools::mosquitto_sub(remote.port, &["-v", "-t", topic]);
    let mut local = Broker::start(&bridge(
        "n",
        &format!("127.0.0.1:{}", remote.port),
        &["n/# out 0"],
    ));
    on_remote.wait_line(&format!("{topic} 1"), WAIT);
    let on_local = tools::mosquitto_sub(local.port, &["-v", "-t", topic]);
    on_local.wait_line(&format!("{topic} 1"), WAIT);
    local.stop(libc::SIGKILL);
    on_remote.wait_line(&format!("{topic} 0"), WAIT);
}

/// A TLS remote with certificates made the seed 003 way (X.509 version 1,
/// CN only): the bridge checks them against `bridge_cafile`.
fn tls_remote(dir: &TempDir) -> Broker {
    common::pki::seed003(dir.path(), "localhost");
    for f in ["mqtt_ca.crt", "mqtt_srv.crt", "mqtt_srv.key"] {
        std::fs::set_permissions(
            dir.path().join(f),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .expect("chmod");
    }
    Broker::mosquitto(&format!(
        "listener 0 127.0.0.1\n{}",
        common::pki::tls_lines(dir.path())
    ))
}

#[test]
fn tls_bridge_to_mosquitto_with_bridge_cafile() {
    let dir = TempDir::new("bridge-tls");
    let remote = tls_remote(&dir);
    let mut conf = bridge("sec", &format!("localhost:{}", remote.port), &["s/# out 1"]);
    conf.push_str(&format!(
        "bridge_cafile {}/mqtt_ca.crt\n",
        dir.path().display()
    ));
    let local = Broker::start(&conf);
    connected(&local, "sec");
    let sub = tools::mosquitto_sub(
        remote.port,
        &[
            "-h",
            "localhost",
            "--cafile",
            &format!("{}/mqtt_ca.crt", dir.path().display()),
            "-v",
            "-t",
            "$SYS/broker/connection/sec-remote/state",
        ],
    );
    sub.wait_line("$SYS/broker/connection/sec-remote/state 1", WAIT);
}

#[test]
fn tls_bridge_refuses_a_certificate_of_another_ca_and_keeps_trying() {
    let dir = TempDir::new("bridge-tls-bad");
    let remote = tls_remote(&dir);
    let other = TempDir::new("bridge-tls-other");
    let ca = common::pki::Ca::new(other.path(), "other_ca", "Other CA");
    let mut conf = bridge("bad", &format!("localhost:{}", remote.port), &["s/# out 1"]);
    conf.push_str(&format!("bridge_cafile {}\n", ca.crt().display()));
    let local = Broker::start(&conf);
    let line = "Error creating bridge: TLS error: invalid peer certificate: UnknownIssuer.";
    local.wait_for_log(line, WAIT);
    let from = local.log_len();
    local.wait_for_log_from(from, line, WAIT);
    assert!(!local.has_log("Connecting bridge (step 2)"));
}

/// `start_type lazy`: the bridge connects once `threshold` messages wait,
/// and delivers them all.
#[test]
fn lazy_bridge_starts_at_its_threshold() {
    let remote = Broker::start("");
    let sub = subscriber(&remote, &["-v", "-q", "1", "-t", "lazy/#"], "lazy/probe");
    let mut conf = bridge(
        "lz",
        &format!("127.0.0.1:{}", remote.port),
        &["lazy/# out 1"],
    );
    conf.push_str("start_type lazy\nthreshold 3\n");
    let local = Broker::start(&conf);
    for i in 0..2 {
        tools::mosquitto_pub(
            local.port,
            &["-q", "1", "-t", "lazy/n", "-m", &format!("m{i}")],
        );
    }
    assert!(!local.has_log("Connecting bridge"), "{:?}", local.logs());
    tools::mosquitto_pub(local.port, &["-q", "1", "-t", "lazy/n", "-m", "m2"]);
    connected(&local, "lz");
    for i in 0..3 {
        sub.wait_line(&format!("lazy/n m{i}"), WAIT);
    }
}
