//! mosquitto.conf options, each set in a file and observed over a socket
//! (or in the log, for the log options).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::packets::{Connect, publish};
use common::*;

fn on(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Starts midge with two loopback listeners; returns it and both ports.
fn two_listeners(conf: &str) -> (Broker, u16, u16) {
    let b = Broker::start_exact(conf);
    wait_until("two listen lines", TIMEOUT, || b.ipv4_ports().len() >= 2);
    let p = b.ipv4_ports();
    (b, p[0], p[1])
}

#[test]
fn mount_point_prefixes_and_strips_topics() {
    let (b, plain, mounted) = two_listeners(
        "listener 0 127.0.0.1\nlistener 0 127.0.0.1\nmount_point site1/\nallow_anonymous true\n",
    );
    let mut outside = RawClient::connect(on(plain), "outside");
    outside.subscribe(1, &[("site1/#", 0)]);
    let mut inside = RawClient::connect(on(mounted), "inside");
    inside.subscribe(1, &[("#", 0)]);

    inside.publish("temp", b"21", 0, false, 0);
    outside.expect_publish_eq("site1/temp", b"21", 0, false);
    inside.expect_publish_eq("temp", b"21", 0, false);

    outside.publish("site1/cmd", b"on", 0, false, 0);
    inside.expect_publish_eq("cmd", b"on", 0, false);
    outside.expect_publish_eq("site1/cmd", b"on", 0, false);
    // Outside the mount point the inside client sees nothing.
    outside.publish("elsewhere", b"x", 0, false, 0);
    inside.expect_nothing(QUIET);
    drop(b);
}

#[test]
fn mount_point_applies_to_wills() {
    let (b, plain, mounted) = two_listeners(
        "listener 0 127.0.0.1\nlistener 0 127.0.0.1\nmount_point m/\nallow_anonymous true\n",
    );
    let mut watcher = RawClient::connect(on(plain), "watcher");
    watcher.subscribe(1, &[("m/status", 0)]);
    let c = RawClient::connect_with(
        on(mounted),
        &Connect::new("dies").will("status", b"gone", 0, false),
        false,
    );
    c.drop_connection();
    watcher.expect_publish_eq("m/status", b"gone", 0, false);
    drop(b);
}

/// Connects `id`, trying again while the listener is full: a slot is free
/// only once the thread of the connection that held it has ended (the
/// harness's own readiness probe holds one for a moment at start).
fn connect_when_free(b: &Broker, id: &str) -> RawClient {
    let mut client = None;
    wait_until(&format!("a free slot for {id}"), TIMEOUT, || {
        let mut c = b.raw().named(id);
        c.send(&common::packets::connect(id));
        match c.try_read(TIMEOUT) {
            ReadOutcome::Packet(p) if p.kind() == common::packets::CONNACK => {
                client = Some(c);
                true
            }
            _ => false,
        }
    });
    client.expect("connected")
}

#[test]
fn max_connections_refuses_the_extra_connection() {
    let b = Broker::start("max_connections 2\n");
    let mut a = connect_when_free(&b, "a");
    let z = connect_when_free(&b, "z");
    let mut third = b.raw().named("third");
    third.send(&common::packets::connect("third"));
    third.expect_closed();
    b.wait_for_log("denied: max_connections exceeded.", TIMEOUT);
    // A freed slot can be used again.
    z.disconnect();
    connect_when_free(&b, "again").ping();
    a.ping();
}

#[test]
fn use_username_as_clientid() {
    let b = Broker::start("use_username_as_clientid true\n");
    let mut first =
        RawClient::connect_with(b.addr(), &Connect::new("id1").username("alice"), false);
    b.wait_for_log("as alice (p2, c1, k60, u'alice').", TIMEOUT);
    // A second client of the same user takes the session over.
    let mut second =
        RawClient::connect_with(b.addr(), &Connect::new("id2").username("alice"), false);
    first.expect_closed();
    second.ping();
    // Without a user name there is no client id to use.
    let mut anon = b.raw();
    anon.send(&Connect::new("noname").build());
    anon.expect_connack(5, false);
    anon.expect_closed();
}

#[test]
fn zero_length_client_ids_and_auto_id_prefix() {
    let b = Broker::start("auto_id_prefix pre-\n");
    let mut c = b.raw();
    c.send(&Connect::new("").build());
    c.expect_connack(0, false);
    b.wait_for_log(" as pre-", TIMEOUT);

    let b = Broker::start("allow_zero_length_clientid false\n");
    let mut c = b.raw();
    c.send(&Connect::new("").build());
    c.expect_connack(2, false);
    c.expect_closed();
}

#[test]
fn clientid_prefixes_match_mosquitto() {
    let observed = same_as_mosquitto("clientid_prefixes", "clientid_prefixes sensor-\n", |b| {
        let mut out = Vec::new();
        for id in ["sensor-1", "other"] {
            let mut c = b.raw().named(id);
            c.send(&Connect::new(id).build());
            let (_, rc) = c.read_connack();
            out.push(format!("{id}: {rc}"));
        }
        out
    });
    assert_eq!(observed, ["sensor-1: 0", "other: 5"]);
}

#[test]
fn retain_available_false_matches_mosquitto() {
    let observed = same_as_mosquitto("retain_available", "retain_available false\n", |b| {
        let mut sub = b.client("sub");
        sub.subscribe(1, &[("r/#", 0)]);
        let mut p = b.client("p");
        p.publish("r/plain", b"x", 0, false, 0);
        let plain = sub.expect_publish();
        p.send_lossy(&publish("r/kept", b"y", 0, true, false, 0));
        let closed = matches!(p.try_read(TIMEOUT), ReadOutcome::Closed);
        let mut late = b.client("late");
        late.subscribe(1, &[("r/#", 0)]);
        let retained = late.read_for(QUIET).len();
        vec![
            format!("plain delivered: {}", plain.topic),
            format!("retained publisher closed: {closed}"),
            format!("retained messages for a new subscriber: {retained}"),
        ]
    });
    assert_eq!(
        observed,
        [
            "plain delivered: r/plain",
            "retained publisher closed: true",
            "retained messages for a new subscriber: 0"
        ]
    );
}

#[test]
fn upgrade_outgoing_qos() {
    let b = Broker::start("upgrade_outgoing_qos true\n");
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("up", 2)]);
    let mut p = b.client("p");
    p.publish("up", b"low", 0, false, 0);
    let m = sub.expect_publish_eq("up", b"low", 2, false);
    sub.ack(&m);
    // Without the option the lower QoS wins.
    let b = Broker::start("");
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("up", 2)]);
    let mut p = b.client("p");
    p.publish("up", b"low", 0, false, 0);
    sub.expect_publish_eq("up", b"low", 0, false);
}

#[test]
fn upgrade_outgoing_qos_applies_to_retained_messages_too() {
    // As Mosquitto (its 04-retain-upgrade-outgoing-qos): a retained QoS 0
    // message goes to a new QoS 2 subscription at QoS 2.
    let b = Broker::start("upgrade_outgoing_qos true\n");
    let mut p = b.client("p");
    p.publish("up/kept", b"low", 0, true, 0);
    p.publish("up/kept1", b"one", 1, true, 1);
    // Both are with the router before the subscription (one queue).
    p.ping();
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("up/#", 2)]);
    let m = sub.expect_publish_eq("up/kept", b"low", 2, true);
    sub.ack(&m);
    let m = sub.expect_publish_eq("up/kept1", b"one", 2, true);
    sub.ack(&m);
    // Without the option each keeps its own QoS.
    let b = Broker::start("");
    let mut p = b.client("p");
    p.publish("up/kept", b"low", 0, true, 0);
    p.ping();
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("up/#", 2)]);
    sub.expect_publish_eq("up/kept", b"low", 0, true);
}

/// Subscribes `id` persistently to `q/#` at QoS 1, then disconnects.
fn park(b: &Broker, id: &str) {
    let mut c = RawClient::connect_with(b.addr(), &Connect::new(id).clean(false), false);
    c.subscribe(1, &[("q/#", 1)]);
    c.disconnect();
    b.wait_for_log(&format!("Client {id} disconnected."), TIMEOUT);
}

fn resume(b: &Broker, id: &str) -> Vec<String> {
    let mut c = RawClient::open(b.addr()).named(id);
    c.send(&Connect::new(id).clean(false).build());
    c.expect_connack(0, true);
    c.read_for(QUIET)
        .iter()
        .map(|p| {
            let m = p.publish();
            c.ack(&m);
            format!("{} q{}", m.payload_str(), m.qos)
        })
        .collect()
}

#[test]
fn queue_qos0_messages_for_offline_sessions() {
    for (conf, want) in [
        ("queue_qos0_messages true\n", vec!["zero q0", "one q1"]),
        ("", vec!["one q1"]),
    ] {
        let b = Broker::start(conf);
        park(&b, "off");
        let mut p = b.client("p");
        p.publish("q/a", b"zero", 0, false, 0);
        p.publish("q/a", b"one", 1, false, 1);
        assert_eq!(resume(&b, "off"), want, "with {conf:?}");
    }
}

#[test]
fn max_queued_bytes_limits_offline_queues() {
    let b = Broker::start("max_queued_bytes 10\n");
    park(&b, "off");
    let mut p = b.client("p");
    for (i, body) in ["aaaa", "bbbb", "cccc"].iter().enumerate() {
        p.publish("q/a", body.as_bytes(), 1, false, i as u16 + 1);
    }
    assert_eq!(resume(&b, "off"), ["aaaa q1", "bbbb q1"]);
}

#[test]
fn max_inflight_bytes_holds_messages_back_until_acknowledged() {
    let b = Broker::start("max_inflight_messages 0\nmax_inflight_bytes 5\n");
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("f", 1)]);
    let mut p = b.client("p");
    for (i, body) in ["aaaa", "bbbb", "cccc"].iter().enumerate() {
        p.publish("f", body.as_bytes(), 1, false, i as u16 + 1);
    }
    let got = sub.read_for(QUIET);
    let bodies: Vec<String> = got.iter().map(|p| p.publish().payload_str()).collect();
    assert_eq!(
        bodies,
        ["aaaa", "bbbb"],
        "4 bytes in flight < 5 lets one more go"
    );
    sub.ack(&got[0].publish());
    let m = sub.expect_publish_eq("f", b"cccc", 1, false);
    sub.ack(&m);
}

#[test]
fn max_packet_size_closes_the_sender_only() {
    let b = Broker::start("max_packet_size 100\n");
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("big", 0)]);
    let mut p = b.client("p");
    p.publish("big", &[b'x'; 50], 0, false, 0);
    sub.expect_publish_eq("big", &[b'x'; 50], 0, false);
    p.send_lossy(&publish("big", &[b'y'; 200], 0, false, false, 0));
    p.expect_closed();
    sub.expect_nothing(QUIET);
    sub.ping();
}

/// Without `max_packet_size`, Mosquitto 2.1's 2,000,000 bytes hold: a
/// packet of exactly that size goes through, one byte more closes its
/// sender, and MQTT 5 clients are told in CONNACK.
#[test]
fn max_packet_size_defaults_to_2_000_000_bytes() {
    let b = Broker::start("");
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("big", 0)]);
    let mut p = b.client("p");
    // Fixed header 1 + 3 bytes, topic 2 + 3: the payload makes it 2,000,000.
    let fits = vec![b'x'; 2_000_000 - 9];
    p.publish("big", &fits, 0, false, 0);
    let got = sub
        .read_packet_within(std::time::Duration::from_secs(30))
        .publish();
    assert_eq!(got.payload.len(), fits.len());
    p.send_lossy(&publish("big", &[b'y'; 2_000_000 - 8], 0, false, false, 0));
    p.expect_closed();
    b.wait_for_log("exceeds the limit of 2000000", TIMEOUT);
    // MQTT 5: Maximum Packet Size 2,000,000 in CONNACK.
    let mut v5 = b.raw().named("v5");
    v5.send(&common::packets::Connect::new("v5").level(5).build());
    let ack = v5.read_packet();
    let max = [0x27, 0x00, 0x1E, 0x84, 0x80];
    assert!(
        ack.bytes().windows(5).any(|w| w == max),
        "{}",
        ack.describe()
    );
}

#[test]
fn socket_domain_ipv4_opens_no_ipv6_socket() {
    let b = Broker::start_exact("listener 0\nsocket_domain ipv4\nallow_anonymous true\n");
    let mut c = b.client("v4");
    c.ping();
    assert!(!b.has_log("Opening ipv6 listen socket"), "{:?}", b.logs());
}

#[test]
fn bind_interface_loopback() {
    let b = Broker::start("bind_interface lo\nprotocol mqtt\n");
    let mut c = b.client("on-lo");
    c.ping();
    let (st, err, _) =
        Broker::start_expect_fail("listener 0 127.0.0.1\nbind_interface no-such-if0\n");
    assert!(!st.success());
    assert!(err.contains("unable to listen"), "{err}");
}

#[test]
fn per_listener_settings_apply_allow_anonymous_per_listener() {
    let (b, open, closed) = two_listeners(
        "per_listener_settings true\nlistener 0 127.0.0.1\nallow_anonymous true\n\
         listener 0 127.0.0.1\n",
    );
    let mut ok = RawClient::connect(on(open), "guest");
    ok.ping();
    let mut refused = RawClient::open(on(closed));
    refused.send(&Connect::new("guest2").build());
    refused.expect_connack(5, false);
    refused.expect_closed();
    drop(b);
}

#[test]
fn include_dir_reads_more_options() {
    let extra = TempDir::new("midge-include");
    extra.write("10-limits.conf", "max_inflight_messages 1\n");
    extra.write("ignored.txt", "frobnicate\n");
    let b = Broker::start(&format!("include_dir {}\n", extra.path().display()));
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("i", 1)]);
    let mut p = b.client("p");
    p.publish("i", b"1", 1, false, 1);
    p.publish("i", b"2", 1, false, 2);
    let got = sub.read_for(QUIET);
    assert_eq!(got.len(), 1, "window of 1 from the included file");
    sub.ack(&got[0].publish());
    sub.expect_publish_eq("i", b"2", 1, false);
}

#[test]
fn connection_messages_false_keeps_connects_out_of_the_log() {
    let b = Broker::start("connection_messages false\nlog_type all\n");
    let mut c = b.client("quiet");
    c.subscribe(1, &[("seen/marker", 0)]);
    b.wait_for_log("quiet 0 seen/marker", TIMEOUT);
    c.disconnect();
    let mut d = b.client("second");
    d.subscribe(1, &[("seen/second", 0)]);
    b.wait_for_log("second 0 seen/second", TIMEOUT);
    assert!(!b.has_log("New connection from"), "{:?}", b.logs());
    assert!(!b.has_log("New client connected"), "{:?}", b.logs());
    assert!(!b.has_log("Client quiet disconnected."), "{:?}", b.logs());
}

#[test]
fn log_type_subscribe_logs_subscriptions() {
    let b = Broker::start("log_type notice\nlog_type subscribe\nlog_type unsubscribe\n");
    let mut c = b.client("lt");
    c.subscribe(1, &[("a/b", 1)]);
    b.wait_for_log("lt 1 a/b", TIMEOUT);
    c.send(&common::packets::unsubscribe(2, &["a/b"]));
    c.expect_unsuback(2);
    b.wait_for_log("lt a/b", TIMEOUT);
    // Without those types, nothing of the kind is logged.
    let b = Broker::start("");
    let mut c = b.client("quiet");
    c.subscribe(1, &[("x/y", 1)]);
    c.ping();
    c.disconnect();
    b.wait_for_log("Client quiet disconnected.", TIMEOUT);
    assert!(!b.has_log("quiet 1 x/y"), "{:?}", b.logs());
}

#[test]
fn log_dest_file_and_timestamp_format() {
    let dir = TempDir::new("midge-logfile");
    let file = dir.path().join("midge.log");
    let b = Broker::start(&format!(
        "log_dest stderr\nlog_dest file {}\nlog_timestamp_format %Y-%m-%dT%H:%M:%S\n",
        file.display()
    ));
    let c = b.client("filed");
    c.disconnect();
    b.wait_for_log("Client filed disconnected.", TIMEOUT);
    wait_until("the log file line", TIMEOUT, || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains("Client filed disconnected."))
    });
    let text = std::fs::read_to_string(&file).expect("log file");
    let line = text
        .lines()
        .find(|l| l.contains("midge version"))
        .expect("start line");
    // 2026-11-24T07:30:00: midge version ...
    let (ts, _) = line.split_once(": ").expect("prefix");
    assert_eq!(ts.len(), 19, "{line:?}");
    assert_eq!((&ts[4..5], &ts[10..11]), ("-", "T"), "{line:?}");
}

#[test]
fn log_timestamp_false_prints_bare_messages() {
    let b = Broker::start("log_timestamp false\n");
    let c = b.client("bare");
    c.disconnect();
    b.wait_for_log("Client bare disconnected.", TIMEOUT);
    assert!(
        b.logs().iter().any(|l| l == "Client bare disconnected."),
        "{:?}",
        b.logs()
    );
}

#[test]
fn log_dest_topic_publishes_log_lines() {
    let b = Broker::start("log_dest stderr\nlog_dest topic\n");
    let mut watcher = b.client("watcher");
    watcher.subscribe(1, &[("$SYS/broker/log/N", 0)]);
    let c = b.client("visible");
    c.disconnect();
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let m = watcher.expect_publish();
        assert_eq!(m.topic, "$SYS/broker/log/N");
        if m.payload_str() == "Client visible disconnected." {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no disconnect line on the log topic"
        );
    }
}

#[test]
fn sys_tree_is_published_every_sys_interval() {
    let b = Broker::start("sys_interval 1\n");
    let mut p = b.client("p");
    for i in 1..=3 {
        p.publish("counted", b"x", 1, false, i);
    }
    let mut s = b.client("sys");
    s.subscribe(1, &[("$SYS/broker/#", 0)]);
    let mut seen = std::collections::HashMap::new();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::time::Instant::now() < deadline {
        for pk in s.read_for(Duration::from_millis(300)) {
            let m = pk.publish();
            seen.insert(m.topic.clone(), m.payload_str());
        }
        if seen
            .get("$SYS/broker/clients/connected")
            .map(String::as_str)
            == Some("2")
            && seen
                .get("$SYS/broker/publish/messages/received")
                .map(String::as_str)
                == Some("3")
        {
            break;
        }
    }
    assert_eq!(
        seen.get("$SYS/broker/version").map(String::as_str),
        Some(format!("midge version {}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert_eq!(
        seen.get("$SYS/broker/clients/connected")
            .map(String::as_str),
        Some("2")
    );
    assert_eq!(
        seen.get("$SYS/broker/publish/messages/received")
            .map(String::as_str),
        Some("3")
    );
    for t in [
        "uptime",
        "clients/total",
        "clients/maximum",
        "messages/received",
        "bytes/received",
        "retained messages/count",
        "subscriptions/count",
        "heap/current",
        "load/messages/received/1min",
    ] {
        assert!(
            seen.contains_key(&format!("$SYS/broker/{t}")),
            "no $SYS/broker/{t} in {seen:?}"
        );
    }
    let uptime = &seen["$SYS/broker/uptime"];
    assert!(uptime.ends_with(" seconds"), "{uptime}");
}

#[test]
fn sys_interval_0_publishes_nothing() {
    let b = Broker::start("sys_interval 0\n");
    let mut s = b.client("sys");
    s.subscribe(1, &[("$SYS/#", 0)]);
    s.expect_nothing(Duration::from_millis(1500));
}
