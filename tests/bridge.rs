//! Bridges (`connection` sections) between midge and Debian's mosquitto,
//! and between two midges, over real loopback sockets: remapped topics in
//! each direction, no loops, queueing while the remote is away,
//! reconnection that never gives up, fail-over and TLS.

mod common;

use std::time::Duration;

use common::packets::Connect;
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

/// How long a bridge with `restart_timeout 1 2` may take to connect once
/// its remote is reachable: the cap, plus slack for a loaded machine.
fn restart_bound() -> Duration {
    scaled(Duration::from_secs(2) + TIMEOUT)
}

/// Waits until the bridge of `local` is connected to `remote`, within
/// [`restart_bound`] of now.
fn comes_up(remote: &Broker) {
    remote.wait_for_log("New bridge connected from", restart_bound());
}

/// A QoS 1 message published on `local` under `topic` reaches a
/// subscriber on `remote`.
fn flows(local: &Broker, remote: &Broker, topic: &str) {
    let sub = subscriber(remote, &["-v", "-t", topic, "-t", "probe"], "probe");
    tools::mosquitto_pub(local.port, &["-q", "1", "-t", topic, "-m", "through"]);
    sub.wait_line(&format!("{topic} through"), WAIT);
}

/// Watches `remote` for `secs` seconds (scaled): no bridge connects.
fn no_bridge_for(remote: &Broker, secs: u64) {
    std::thread::sleep(scaled(Duration::from_secs(secs)));
    assert!(
        !remote.has_log("New bridge connected"),
        "{:?}",
        remote.logs()
    );
}

/// A midge listening on `port` (free a moment ago, or used before).
fn midge_on(port: u16) -> Broker {
    Broker::start_exact(&format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\n"
    ))
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

/// A temporary directory the broker can write after dropping to `nobody`
/// (tests run as root).
fn shared_dir(prefix: &str) -> TempDir {
    let dir = TempDir::new(prefix);
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    dir
}

/// A midge remote on a fixed port that keeps its sessions on disk, where
/// a persistent QoS 2 subscriber `reader` of `up/#` waits offline for
/// what the bridge brings while nobody watches.
struct ReaderRemote {
    _dir: TempDir,
    port: u16,
    conf: String,
}

const READER: [&str; 8] = ["-v", "-q", "2", "-c", "-i", "reader", "-t", "up/#"];

impl ReaderRemote {
    /// Starts the remote and makes the reader's session; returns it running.
    fn new() -> (ReaderRemote, Broker) {
        let dir = shared_dir("bridge-remote");
        let port = free_port();
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}/\n",
            dir.path().display()
        );
        let remote = Broker::start_exact(&conf);
        let sub = subscriber(&remote, &[&READER[..], &["-t", "probe"]].concat(), "probe");
        drop(sub);
        let r = ReaderRemote {
            _dir: dir,
            port,
            conf,
        };
        (r, remote)
    }

    /// Starts it again on its port, from its saved sessions.
    fn start(&self) -> Broker {
        Broker::start_exact(&self.conf)
    }

    /// The reader, back for its messages.
    fn reader(&self) -> Proc {
        tools::mosquitto_sub(self.port, &READER)
    }
}

/// Waits for each `up/n m{i}` (i < n) on `sub`, then checks that none
/// came twice.
fn each_once(sub: &Proc, n: usize) {
    for i in 0..n {
        sub.wait_line(&format!("up/n m{i}"), WAIT);
    }
    let out = sub.output_text();
    for i in 0..n {
        let line = format!("up/n m{i}");
        assert_eq!(out.lines().filter(|l| *l == line).count(), 1, "{out}");
    }
}

fn publish_numbered(b: &Broker, qos: &str, n: usize) {
    for i in 0..n {
        // Local publishers notice nothing: each exchange completes.
        tools::mosquitto_pub(b.port, &["-q", qos, "-t", "up/n", "-m", &format!("m{i}")]);
    }
}

/// The remote goes away while a publisher sends QoS 2 messages: they wait
/// in the bridge's session and each arrives exactly once when it is back.
#[test]
fn messages_wait_while_the_remote_is_down() {
    let (remote_at, mut remote) = ReaderRemote::new();
    let local = Broker::start(&bridge(
        "q",
        &format!("127.0.0.1:{}", remote_at.port),
        &["up/# out 2"],
    ));
    remote.wait_for_log("New bridge connected from", WAIT);
    remote.stop(libc::SIGTERM);
    local.wait_for_log("Client local.q-remote closed its connection.", WAIT);
    publish_numbered(&local, "2", 5);
    let remote = remote_at.start();
    remote.wait_for_log("New bridge connected from", WAIT);
    let sub = remote_at.reader();
    tools::mosquitto_pub(local.port, &["-q", "2", "-t", "up/n", "-m", "m5"]);
    each_once(&sub, 6);
}

/// With `local_cleansession true` the bridge's local session ends with each
/// connection, as Mosquitto's does: QoS 1 messages published while the
/// remote is down are dropped, and those published after it is back flow.
#[test]
fn local_cleansession_true_drops_what_waits_for_the_remote() {
    let (remote_at, mut remote) = ReaderRemote::new();
    let conf = format!(
        "{}local_cleansession true\n",
        bridge(
            "lc",
            &format!("127.0.0.1:{}", remote_at.port),
            &["up/# out 1"]
        )
    );
    let local = Broker::start(&conf);
    remote.wait_for_log("New bridge connected from", WAIT);
    remote.stop(libc::SIGTERM);
    local.wait_for_log("Client local.lc-remote closed its connection.", WAIT);
    publish_numbered(&local, "1", 5);
    let remote = remote_at.start();
    remote.wait_for_log("New bridge connected from", restart_bound());
    let sub = remote_at.reader();
    tools::mosquitto_pub(local.port, &["-q", "1", "-t", "up/n", "-m", "m5"]);
    sub.wait_line("up/n m5", WAIT);
    let out = sub.output_text();
    assert!(
        !out.lines()
            .any(|l| l.starts_with("up/n m") && l != "up/n m5"),
        "messages from while the remote was down arrived: {out}"
    );
}

/// `persistence true` on the board: QoS 1 messages queued for an `out`
/// topic while the remote is down survive a restart of the local broker
/// (SIGTERM), and all arrive once the remote is up.
#[test]
fn queued_messages_survive_a_restart_of_the_local_broker() {
    let (remote_at, mut remote) = ReaderRemote::new();
    remote.stop(libc::SIGTERM);
    let dir = shared_dir("bridge-local");
    let conf = format!(
        "persistence true\npersistence_location {}/\n{}",
        dir.path().display(),
        bridge(
            "pq",
            &format!("127.0.0.1:{}", remote_at.port),
            &["up/# out 1"]
        )
    );
    let mut local = Broker::start(&conf);
    local.wait_for_log("Error creating bridge: Connection refused.", WAIT);
    publish_numbered(&local, "1", 5);
    local.stop(libc::SIGTERM);
    let local = Broker::start(&conf);
    local.wait_for_log("Error creating bridge: Connection refused.", WAIT);
    let remote = remote_at.start();
    remote.wait_for_log("New bridge connected from", restart_bound());
    let sub = remote_at.reader();
    for i in 0..5 {
        sub.wait_line(&format!("up/n m{i}"), WAIT);
    }
    drop(local);
}

/// Nothing listens: the bridge keeps trying, connects within
/// `restart_timeout` of the remote coming up, and messages flow.
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
    let remote = midge_on(port);
    comes_up(&remote);
    connected(&local, "retry");
    flows(&local, &remote, "x/up");
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
    seed003_files(dir);
    tls_mosquitto(dir, 0)
}

/// Makes the seed 003 files in `dir`, readable by Debian's mosquitto
/// (which drops root for its own user).
fn seed003_files(dir: &TempDir) {
    common::pki::seed003(dir.path(), "localhost");
    for f in ["mqtt_ca.crt", "mqtt_srv.crt", "mqtt_srv.key"] {
        std::fs::set_permissions(
            dir.path().join(f),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .expect("chmod");
    }
}

/// Debian's mosquitto with the seed 003 files of `dir` on `port` (0: any).
fn tls_mosquitto(dir: &TempDir, port: u16) -> Broker {
    Broker::mosquitto(&format!(
        "listener {port} 127.0.0.1\n{}",
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

/// The remote first shows a certificate of another CA (the bridge refuses
/// it), then is restarted on the same port with a good one: the bridge
/// connects within `restart_timeout` and messages flow.
#[test]
fn tls_failure_then_a_good_certificate() {
    let good = TempDir::new("bridge-tls-good");
    let other = TempDir::new("bridge-tls-other-ca");
    seed003_files(&good);
    // Made the same way, with another CA key of the same name.
    seed003_files(&other);
    let port = free_port();
    let bad_remote = tls_mosquitto(&other, port);
    let mut conf = bridge("fix", &format!("localhost:{port}"), &["s/# out 1"]);
    conf.push_str(&format!(
        "bridge_cafile {}/mqtt_ca.crt\n",
        good.path().display()
    ));
    let local = Broker::start(&conf);
    let line = "Error creating bridge: TLS error: invalid peer certificate";
    local.wait_for_log(line, WAIT);
    let from = local.log_len();
    local.wait_for_log_from(from, line, WAIT);
    drop(bad_remote);
    let remote = tls_mosquitto(&good, port);
    comes_up(&remote);
    let cafile = format!("{}/mqtt_ca.crt", good.path().display());
    let state = "$SYS/broker/connection/fix-remote/state";
    let sub = tools::mosquitto_sub(
        port,
        &[
            "-h",
            "localhost",
            "--cafile",
            &cafile,
            "-v",
            "-t",
            state,
            "-t",
            "s/#",
        ],
    );
    // The retained state proves the subscription is in place.
    sub.wait_line(&format!("{state} 1"), WAIT);
    tools::mosquitto_pub(local.port, &["-q", "1", "-t", "s/x", "-m", "secure"]);
    sub.wait_line("s/x secure", WAIT);
}

/// A host name that does not resolve yet and resolves later. The broker
/// runs in its own mount namespace (`unshare --mount`, private
/// propagation) where /etc/hosts is a file of the test, so the machine's
/// /etc/hosts is never touched; getaddrinfo reads the file at each lookup.
#[test]
fn a_host_name_that_resolves_later() {
    let remote = Broker::start("");
    let dir = TempDir::new("bridge-hosts");
    let hosts = dir.write("hosts", "127.0.0.1 localhost\n");
    let name = "midge-bridge-remote.test";
    // The prefix replaces the harness's shell with unshare; the inner
    // shell mounts the file and runs the broker ("$0" "$@").
    let prefix = format!(
        "exec unshare --mount --propagation private sh -c \
         'mount --bind {} /etc/hosts && exec \"$0\" \"$@\"' \"$0\" \"$@\"",
        hosts.display()
    );
    let conf = bridge("dns", &format!("{name}:{}", remote.port), &["d/# out 1"]);
    let local = Broker::start_launch(
        &conf,
        &Launch {
            shell_prefix: Some(&prefix),
            ..Launch::default()
        },
    );
    let line = "Warning: Error resolving bridge address:";
    local.wait_for_log(line, WAIT);
    let from = local.log_len();
    local.wait_for_log_from(from, line, WAIT);
    // Written in place: the bind mount follows the file's inode.
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.1 {name}\n")).expect("hosts");
    comes_up(&remote);
    connected(&local, "dns");
    flows(&local, &remote, "d/x");
}

/// `start_type once`: after its first connection ends the bridge does not
/// come back, even when the remote does (as Mosquitto).
#[test]
fn start_type_once_does_not_reconnect() {
    let port = free_port();
    let mut remote = midge_on(port);
    let local = Broker::start(&format!(
        "{}start_type once\n",
        bridge("one", &format!("127.0.0.1:{port}"), &["o/# out 1"])
    ));
    remote.wait_for_log("New bridge connected from", WAIT);
    remote.stop(libc::SIGTERM);
    local.wait_for_log("Client local.one-remote closed its connection.", WAIT);
    let remote = midge_on(port);
    // An automatic bridge with `restart_timeout 1 2` is back within 2 s.
    no_bridge_for(&remote, 4);
    assert_eq!(
        local.count_log("Connecting bridge (step 1) one"),
        1,
        "{:?}",
        local.logs()
    );
}

/// Two addresses, the first one down at start-up: the bridge uses the
/// second one. Returns (local, first address's port, second broker).
fn on_the_second_address(name: &str, round_robin: bool) -> (Broker, u16, Broker) {
    let first = free_port();
    let second = Broker::start("");
    let local = Broker::start(&format!(
        "{}round_robin {round_robin}\n",
        bridge(
            name,
            &format!("127.0.0.1:{first} 127.0.0.1:{}", second.port),
            &["r/# out 1"],
        )
    ));
    second.wait_for_log("New bridge connected from", WAIT);
    (local, first, second)
}

/// `round_robin false`: the first address is the main one; once it is back
/// the bridge leaves the second one for it. When the main one fails, the
/// bridge goes on to the next address (as Mosquitto).
#[test]
fn round_robin_false_goes_back_to_the_primary() {
    let (local, first, second) = on_the_second_address("main", false);
    let mut primary = midge_on(first);
    comes_up(&primary);
    local.wait_for_log("Bridge main: primary address 127.0.0.1:", WAIT);
    second.wait_for_log("Client main-remote disconnected.", WAIT);
    flows(&local, &primary, "r/x");
    let from = second.log_len();
    primary.stop(libc::SIGTERM);
    second.wait_for_log_from(from, "New bridge connected from", WAIT);
    flows(&local, &second, "r/y");
}

/// `round_robin true`: the addresses are equals; the bridge stays where it
/// is while that works, and moves to the next one when it fails.
#[test]
fn round_robin_true_stays_until_the_connection_fails() {
    let (local, first, mut second) = on_the_second_address("equal", true);
    let primary = midge_on(first);
    // A `round_robin false` bridge checks every second and moves.
    no_bridge_for(&primary, 3);
    second.stop(libc::SIGTERM);
    primary.wait_for_log("New bridge connected from", WAIT);
    flows(&local, &primary, "r/x");
}

/// `bridge_outgoing_retain false`: a retained message reaches the remote
/// without its retain flag, so the remote does not keep it.
#[test]
fn outgoing_retain_false_clears_the_retain_flag() {
    let remote = Broker::mosquitto("");
    let sub = subscriber(&remote, &["-v", "-t", "k/#"], "k/probe");
    let local = Broker::start(&format!(
        "{}bridge_outgoing_retain false\n",
        bridge("nr", &format!("127.0.0.1:{}", remote.port), &["k/# out 1"])
    ));
    connected(&local, "nr");
    tools::mosquitto_pub(local.port, &["-r", "-q", "1", "-t", "k/kept", "-m", "r1"]);
    sub.wait_line("k/kept r1", WAIT);
    let mut late = remote.client("late");
    late.subscribe(1, &[("k/#", 1)]);
    late.expect_nothing(scaled(QUIET));
    // Kept locally all the same.
    let mut here = local.client("here");
    here.subscribe(1, &[("k/#", 1)]);
    let m = here.expect_publish();
    assert!(m.retain && m.payload_str() == "r1", "{m:?}");
}

/// `bridge_attempt_unsubscribe`: on connecting, the bridge unsubscribes
/// its `out` topics on the remote (true, the default) or not (false).
/// Seen in the log of Debian's mosquitto.
#[test]
fn attempt_unsubscribe_on_and_off() {
    for (setting, expected) in [("", true), ("bridge_attempt_unsubscribe false\n", false)] {
        let remote = Broker::mosquitto("log_type all\n");
        let _local = Broker::start(&format!(
            "{}{setting}",
            bridge(
                "un",
                &format!("127.0.0.1:{}", remote.port),
                &["a/# out 1", "b/# in 1"],
            )
        ));
        // The out topic comes first: its UNSUBSCRIBE would be in by now.
        remote.wait_for_log("Received SUBSCRIBE from un-remote", WAIT);
        assert_eq!(
            remote.has_log("Received UNSUBSCRIBE from un-remote"),
            expected,
            "{setting:?}: {:?}",
            remote.logs()
        );
    }
}

/// `bridge_max_packet_size 100` on a bridge from a broker of `kind`:
/// larger messages are not sent to the remote, and the log says so, in
/// Mosquitto's words.
fn max_packet_size_scenario(kind: BrokerKind, qos1_large: usize) {
    let remote = Broker::start("");
    let sub = subscriber(&remote, &["-v", "-t", "big/#"], "big/probe");
    let local = Broker::start_kind(
        kind,
        &format!(
            "max_inflight_messages 2\n{}bridge_max_packet_size 100\n",
            bridge(
                "mps",
                &format!("127.0.0.1:{}", remote.port),
                &["big/# out 1"]
            )
        ),
        &[],
    );
    connected(&local, "mps");
    let pubs = |qos: &str, topic: &str, len: usize| {
        let m = "x".repeat(len);
        tools::mosquitto_pub(local.port, &["-q", qos, "-t", topic, "-m", &m]);
    };
    pubs("0", "big/large", 200);
    for _ in 0..qos1_large {
        pubs("1", "big/large", 200);
    }
    // Remaining length 2 + 8 + 89, and one length byte: 100, the limit.
    pubs("0", "big/edge", 89);
    pubs("0", "big/over", 90);
    tools::mosquitto_pub(local.port, &["-q", "1", "-t", "big/small", "-m", "fits"]);
    sub.wait_line("big/small fits", WAIT);
    let out = sub.output_text();
    let topics: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split(' ').next())
        .filter(|t| t.starts_with("big/") && *t != "big/probe")
        .collect();
    assert_eq!(topics, ["big/edge", "big/small"], "{out}");
    // The remaining length: 2 + 9 + 200 (+ 2 at QoS 1), 2 + 8 + 90.
    let mut lens = vec![211, 100];
    if qos1_large > 0 {
        lens.push(213);
    }
    for len in lens {
        local.wait_for_log(
            &format!("Dropping too large outgoing PUBLISH for local.mps-remote ({len} bytes)"),
            WAIT,
        );
    }
}

/// More large QoS 1 messages than the in-flight window holds: they leave
/// the window at once, so the messages after them still go. (Debian's
/// mosquitto 2.0.11 keeps them in its window, which then stays full.)
#[test]
fn max_packet_size_drops_larger_messages() {
    max_packet_size_scenario(BrokerKind::Midge, 3);
}

/// The limit counts as Mosquitto's does: the same scenario, QoS 0 only,
/// with Debian's mosquitto as the local broker.
#[test]
fn max_packet_size_as_mosquitto_counts_it() {
    max_packet_size_scenario(BrokerKind::Mosquitto, 0);
}

/// `notifications_local_only true`: the state goes to the local broker
/// only; the remote sees neither `1` nor the will's `0`.
#[test]
fn notifications_local_only() {
    let remote = Broker::mosquitto("");
    let state = "$SYS/broker/connection/lo-remote/state";
    let on_remote = subscriber(
        &remote,
        &["-v", "-t", "$SYS/broker/connection/#", "-t", "lo/#"],
        "lo/probe",
    );
    let mut local = Broker::start(&format!(
        "{}notifications_local_only true\n",
        bridge("lo", &format!("127.0.0.1:{}", remote.port), &["lo/# out 1"])
    ));
    let on_local = tools::mosquitto_sub(local.port, &["-v", "-t", state]);
    on_local.wait_line(&format!("{state} 1"), WAIT);
    tools::mosquitto_pub(local.port, &["-q", "1", "-t", "lo/x", "-m", "after"]);
    on_remote.wait_line("lo/x after", WAIT);
    let from = remote.log_len();
    local.stop(libc::SIGKILL);
    remote.wait_for_log_from(from, "lo-remote", WAIT);
    // Published after the remote noticed the loss: a will would be in.
    tools::mosquitto_pub(remote.port, &["-q", "1", "-t", "lo/end", "-m", "end"]);
    on_remote.wait_line("lo/end end", WAIT);
    let out = on_remote.output_text();
    assert!(!out.lines().any(|l| l.starts_with("$SYS")), "{out}");
}

/// A remote broker played by the test: accepts the bridge's connection.
fn accept_bridge(l: &std::net::TcpListener) -> RawClient {
    l.set_nonblocking(true).expect("nonblocking");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).expect("blocking");
                return RawClient::over(s).named("fake remote");
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(std::time::Instant::now() < deadline, "no bridge connected");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Reads packets until one of `kind` comes; returns it.
fn read_until_kind(c: &mut RawClient, kind: u8, timeout: Duration) -> Packet {
    loop {
        let p = c.read_packet_within(timeout);
        if p.kind() == kind {
            return p;
        }
    }
}

/// `keepalive_interval 5` (the least): CONNECT carries 5, the bridge sends
/// PINGREQ once 5 s pass quietly, and gives the connection up when no
/// PINGRESP comes, then connects again.
#[test]
fn keepalive_interval_pings_the_remote() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let local = Broker::start(&format!(
        "{}keepalive_interval 5\n",
        bridge("ka", &format!("127.0.0.1:{port}"), &["k/# out 1"])
    ));
    let mut remote = accept_bridge(&l);
    let connect = remote.read_packet_within(WAIT);
    assert_eq!(connect.kind(), 1, "{}", connect.describe());
    // MQTT 3.1.1: name (2 + 4 bytes), level, flags, then the keep alive.
    assert_eq!(
        &connect.body[..7],
        b"\x00\x04MQTT\x84",
        "{}",
        connect.describe()
    );
    assert_eq!(u16::from_be_bytes([connect.body[8], connect.body[9]]), 5);
    remote.send(&[0x20, 0x02, 0x00, 0x00]);
    let acked = std::time::Instant::now();
    read_until_kind(&mut remote, 12, scaled(WAIT));
    let quiet = acked.elapsed();
    assert!(
        quiet >= Duration::from_millis(4500),
        "PINGREQ after {quiet:?}"
    );
    // No PINGRESP: the bridge drops this connection and comes back.
    remote.read_until_closed(scaled(WAIT));
    local.wait_for_log(
        "Client local.ka-remote has exceeded timeout, disconnecting.",
        WAIT,
    );
    let mut again = accept_bridge(&l);
    assert_eq!(again.read_packet_within(WAIT).kind(), 1);
}

/// Seed 004's ACL on the remote, with a user `x` that may read `$SYS`
/// to watch: the bridge (anonymous, its default client id `HOSTNAME.NAME`
/// standing for `%c`) may write its own state topic, `1` on connecting
/// and the will's `0` when it drops off, but not another connection's
/// state or other `$SYS` topics.
fn seed_004_acl_allows_the_bridge_state_only(kind: BrokerKind) {
    let dir = TempDir::new("bridge-seed004");
    let acl = dir.write(
        "seed004.acl",
        &format!(
            "{}\nuser x\ntopic read $SYS/broker/#\n",
            include_str!("fixtures/seed004.acl")
        ),
    );
    let remote = Broker::start_kind(
        kind,
        &format!("acl_file {}\nsys_interval 0\n", acl.display()),
        &[],
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("host name");
    let state = format!("$SYS/broker/connection/{}.acl/state", host.trim());
    let mut watch =
        RawClient::connect_with(remote.addr(), &Connect::new("watch").username("x"), false)
            .named("watch");
    watch.subscribe(1, &[("$SYS/broker/#", 1), ("pub/playground/#", 1)]);
    let mut local = Broker::start(&format!(
        "connection acl\naddress 127.0.0.1:{}\nrestart_timeout 1 2\n\
         topic state out 1 fake/ $SYS/broker/connection/other/\n\
         topic \"\" out 1 fake/sys $SYS/broker/fake\n\
         topic pub/playground/# out 1\n",
        remote.port
    ));
    let mut seen = Vec::new();
    read_until(&mut watch, &format!("{state} 1"), &mut seen);
    for (topic, payload) in [
        ("fake/state", "1"),
        ("fake/sys", "1"),
        ("pub/playground/end", "end"),
    ] {
        tools::mosquitto_pub(local.port, &["-q", "1", "-t", topic, "-m", payload]);
    }
    read_until(&mut watch, "pub/playground/end end", &mut seen);
    local.stop(libc::SIGKILL);
    read_until(&mut watch, &format!("{state} 0"), &mut seen);
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("other") || l.contains("fake")),
        "{seen:?}"
    );
}

/// Reads PUBLISH packets (acknowledging QoS 1) as "topic payload" lines
/// into `seen` until `line` comes.
fn read_until(c: &mut RawClient, line: &str, seen: &mut Vec<String>) {
    while !seen.iter().any(|l| l == line) {
        let p = read_until_kind(c, 3, WAIT).publish();
        if let Some(id) = p.pkid {
            c.send(&common::packets::puback(id));
        }
        seen.push(format!("{} {}", p.topic, p.payload_str()));
    }
}

#[test]
fn seed_004_acl_on_a_midge_remote() {
    seed_004_acl_allows_the_bridge_state_only(BrokerKind::Midge);
}

#[test]
fn seed_004_acl_on_a_mosquitto_remote() {
    seed_004_acl_allows_the_bridge_state_only(BrokerKind::Mosquitto);
}

/// A bridge's local session is exempt from the ACL, as Mosquitto exempts
/// its bridges: with an ACL file that has no rules for anonymous clients
/// (and no `local_username`), messages still cross in both directions.
/// Run against midge and Debian's mosquitto as the local broker.
#[test]
fn the_acl_does_not_apply_to_a_bridge() {
    for kind in [BrokerKind::Midge, BrokerKind::Mosquitto] {
        let dir = TempDir::new("bridge-acl");
        let acl = dir.write("acl", "user local\ntopic readwrite #\n");
        let remote = Broker::start("");
        let up = subscriber(&remote, &["-v", "-t", "central/#", "-t", "probe"], "probe");
        let conf = format!(
            "allow_anonymous true\nacl_file {}\n{}",
            acl.display(),
            bridge(
                "aclbridge",
                &format!("127.0.0.1:{}", remote.port),
                &["# both 1 board/ central/"],
            )
        );
        let local = Broker::start_kind(kind, &conf, &[]);
        comes_up(&remote);
        let as_local = Connect::new("prober").username("local");
        let down = tools::mosquitto_sub(
            local.port,
            &["-u", "local", "-v", "-t", "board/#", "-t", "probe"],
        );
        tools::wait_until_subscribed_as(&local, &down, "probe", &as_local);
        tools::mosquitto_pub(
            local.port,
            &["-u", "local", "-q", "1", "-t", "board/up", "-m", "u1"],
        );
        up.wait_line("central/up u1", WAIT);
        tools::mosquitto_pub(remote.port, &["-q", "1", "-t", "central/down", "-m", "d1"]);
        down.wait_line("board/down d1", WAIT);
    }
}

/// A remote broker that sends PINGREQ gets PINGRESP, as Mosquitto's bridge
/// answers (its tests 06-bridge-br2b-remapping and -late-connection-retain
/// ping the bridge); before, the bridge took it for a protocol error and
/// dropped the connection.
#[test]
fn a_ping_from_the_remote_gets_its_answer() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let _local = Broker::start(&bridge(
        "pong",
        &format!("127.0.0.1:{port}"),
        &["p/# out 0"],
    ));
    let mut remote = accept_bridge(&l);
    assert_eq!(remote.read_packet_within(WAIT).kind(), 1, "CONNECT");
    remote.send(&[0x20, 0x02, 0x00, 0x00]);
    remote.send(&[0xC0, 0x00]);
    read_until_kind(&mut remote, 13, WAIT);
    // Still the same connection: it answers a second time.
    remote.send(&[0xC0, 0x00]);
    read_until_kind(&mut remote, 13, WAIT);
}

/// Mosquitto 2.1's MQTT 5 bridge options: the CONNECT carries
/// `bridge_receive_maximum`, `bridge_session_expiry_interval` and
/// `bridge_max_topic_alias`; the aliases the remote sets up are resolved
/// before its messages reach local subscribers, and an alias above the
/// announced maximum ends that connection.
#[test]
fn mqtt5_bridge_options_and_topic_aliases_from_the_remote() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let local = Broker::start(&format!(
        "{}bridge_protocol_version mqttv50\nbridge_receive_maximum 7\n\
         bridge_session_expiry_interval 63\nbridge_max_topic_alias 2\n\
         notifications false\n",
        bridge("al", &format!("127.0.0.1:{port}"), &["a/# in 0"])
    ));
    let mut sub = local.client("sub");
    sub.subscribe(1, &[("a/#", 0)]);
    let mut remote = accept_bridge(&l);
    let connect = remote.read_packet_within(WAIT);
    assert_eq!(connect.kind(), 1, "{}", connect.describe());
    let body = &connect.body;
    let has = |bytes: &[u8]| body.windows(bytes.len()).any(|w| w == bytes);
    assert!(
        has(&[0x21, 0, 7]),
        "Receive Maximum 7: {}",
        connect.describe()
    );
    assert!(
        has(&[0x11, 0, 0, 0, 63]),
        "Session Expiry 63: {}",
        connect.describe()
    );
    assert!(
        has(&[0x22, 0, 2]),
        "Topic Alias Maximum 2: {}",
        connect.describe()
    );
    // CONNACK, then the SUBACK for its subscription.
    remote.send(&[0x20, 0x03, 0x00, 0x00, 0x00]);
    let subscribe = read_until_kind(&mut remote, 8, WAIT);
    let pkid = subscribe.pkid().to_be_bytes();
    remote.send(&[0x90, 0x04, pkid[0], pkid[1], 0x00, 0x00]);
    // A PUBLISH that sets alias 1, then one that uses it.
    let publish = |topic: &str, alias: u8, payload: &[u8]| {
        let mut body = packets::field(topic.as_bytes());
        body.extend([3, 0x23, 0, alias]);
        body.extend_from_slice(payload);
        packets::packet(0x30, &body)
    };
    remote.send(&publish("a/x", 1, b"one"));
    remote.send(&publish("", 1, b"two"));
    sub.expect_publish_eq("a/x", b"one", 0, false);
    sub.expect_publish_eq("a/x", b"two", 0, false);
    // Alias 3 is above the 2 the bridge announced.
    remote.send(&publish("a/y", 3, b"three"));
    remote.read_until_closed(WAIT);
    // The bridge comes back.
    let mut again = accept_bridge(&l);
    assert_eq!(again.read_packet_within(WAIT).kind(), 1);
}
