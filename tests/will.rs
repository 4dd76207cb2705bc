//! Will messages: published on an abnormal end only, with their QoS and
//! retain flag. (Keepalive timeouts and protocol errors are in
//! keepalive.rs and malformed.rs.)

mod common;

use std::time::Duration;

use common::packets::Connect;
use common::tools;
use common::*;

/// A watcher subscribed to `filter` at `qos`.
fn watcher(b: &Broker, filter: &str, qos: u8) -> RawClient {
    let mut w = b.client("watcher");
    w.subscribe(1, &[(filter, qos)]);
    w
}

#[test]
fn will_is_published_when_the_socket_closes_without_disconnect() {
    let b = Broker::start("");
    let mut w = watcher(&b, "will/#", 1);
    let c = RawClient::connect_with(
        b.addr(),
        &Connect::new("dying").will("will/dying", b"it died", 1, false),
        false,
    );
    c.drop_connection();
    let m = w.expect_publish_eq("will/dying", b"it died", 1, false);
    w.ack(&m);
    w.expect_nothing(QUIET);
    b.wait_for_log("Client dying closed its connection.", TIMEOUT);
}

#[test]
fn will_is_not_published_after_disconnect() {
    let b = Broker::start("");
    let mut w = watcher(&b, "will/#", 2);
    let c = RawClient::connect_with(
        b.addr(),
        &Connect::new("polite").will("will/polite", b"should not appear", 2, true),
        false,
    );
    c.disconnect();
    b.wait_for_log("Client polite disconnected.", TIMEOUT);
    w.expect_nothing(Duration::from_secs(1));
    // Not retained either.
    let mut late = b.client("late");
    late.subscribe(1, &[("will/#", 2)]);
    late.expect_nothing(QUIET);
}

#[test]
fn will_qos_is_kept_up_to_the_granted_qos() {
    let b = Broker::start("");
    let mut w2 = watcher(&b, "wq/#", 2);
    let mut w1 = b.client("w1");
    w1.subscribe(1, &[("wq/#", 1)]);
    let c = RawClient::connect_with(
        b.addr(),
        &Connect::new("q2will").will("wq/x", b"qos two", 2, false),
        false,
    );
    c.drop_connection();
    let m = w2.expect_publish_eq("wq/x", b"qos two", 2, false);
    w2.ack(&m);
    let m = w1.expect_publish_eq("wq/x", b"qos two", 1, false);
    w1.ack(&m);
}

#[test]
fn will_with_retain_is_kept_as_the_retained_message() {
    let b = Broker::start("");
    let mut w = watcher(&b, "status/#", 1);
    let mut c = RawClient::connect_with(
        b.addr(),
        &Connect::new("device7").will("status/device7", b"offline", 1, true),
        false,
    );
    // The usual pattern: a retained "online" replaced by the will.
    c.publish("status/device7", b"online", 1, true, 1);
    let m = w.expect_publish_eq("status/device7", b"online", 1, false);
    w.ack(&m);
    c.drop_connection();
    // Live delivery: retain 0.
    let m = w.expect_publish_eq("status/device7", b"offline", 1, false);
    w.ack(&m);
    // A later subscriber gets it as retained.
    let mut late = b.client("late");
    late.subscribe(1, &[("status/#", 1)]);
    let m = late.expect_publish_eq("status/device7", b"offline", 1, true);
    late.ack(&m);
}

#[test]
fn will_of_an_mqtt31_client() {
    let b = Broker::start("");
    let mut w = watcher(&b, "old/#", 0);
    let c = RawClient::connect_with(
        b.addr(),
        &Connect::new("old31")
            .level(3)
            .will("old/will", b"v3.1 gone", 0, false),
        false,
    );
    c.drop_connection();
    w.expect_publish_eq("old/will", b"v3.1 gone", 0, false);
}

#[test]
fn will_is_published_when_the_connection_is_reset() {
    // A client with unread data in its receive buffer that closes gets a
    // TCP RST sent: the broker sees a reset rather than EOF.
    let b = Broker::start("");
    let mut w = watcher(&b, "rst/#", 0);
    let mut c = RawClient::connect_with(
        b.addr(),
        &Connect::new("rst").will("rst/will", b"reset", 0, false),
        false,
    );
    c.subscribe(1, &[("rst/data", 0)]);
    let mut p = b.client("pub");
    p.publish("rst/data", b"unread", 0, false, 0);
    // Wait until the data has reached our socket, then close unread.
    std::thread::sleep(Duration::from_millis(300));
    drop(c);
    w.expect_publish_eq("rst/data", b"unread", 0, false);
    w.expect_publish_eq("rst/will", b"reset", 0, false);
}

#[test]
fn will_publish_is_not_sent_back_to_a_dead_client_and_others_still_work() {
    let b = Broker::start("");
    let mut w = watcher(&b, "loop/#", 0);
    let mut c = RawClient::connect_with(
        b.addr(),
        &Connect::new("selfwill").will("loop/will", b"bye", 0, false),
        false,
    );
    c.subscribe(1, &[("loop/#", 0)]);
    c.drop_connection();
    w.expect_publish_eq("loop/will", b"bye", 0, false);
    let mut p = b.client("pub");
    p.publish("loop/after", b"fine", 0, false, 0);
    w.expect_publish_eq("loop/after", b"fine", 0, false);
}

#[test]
fn takeover_will_rules_match_mosquitto() {
    // A connection taken over by the same client id: Mosquitto 2.0.11
    // publishes the old connection's will unless both the old and the new
    // session are persistent (observed, all four combinations).
    let observed = same_as_mosquitto("will on takeover", "", |b| {
        let mut w = b.client("watcher");
        w.subscribe(1, &[("tw/#", 0)]);
        let mut out = Vec::new();
        for (old_clean, new_clean) in [(true, true), (true, false), (false, true), (false, false)] {
            let label = format!("old c{} new c{}", old_clean as u8, new_clean as u8);
            let mut old = RawClient::open(b.addr()).named("old");
            old.send(
                &Connect::new("twin")
                    .clean(old_clean)
                    .will("tw/will", label.as_bytes(), 0, false)
                    .build(),
            );
            let _ = old.read_connack();
            let mut new = RawClient::open(b.addr()).named("new");
            new.send(&Connect::new("twin").clean(new_clean).build());
            let (sp, rc) = new.read_connack();
            old.expect_closed();
            let wills: Vec<String> = w
                .read_for(Duration::from_millis(700))
                .iter()
                .map(|pk| pk.publish().payload_str())
                .collect();
            out.push(format!(
                "{label}: connack rc {rc} sp {}, wills {wills:?}",
                sp as u8
            ));
            new.disconnect();
        }
        // Leave no persistent session behind for the next combination.
        out
    });
    assert_eq!(
        observed,
        [
            "old c1 new c1: connack rc 0 sp 0, wills [\"old c1 new c1\"]",
            "old c1 new c0: connack rc 0 sp 0, wills [\"old c1 new c0\"]",
            "old c0 new c1: connack rc 0 sp 0, wills [\"old c0 new c1\"]",
            "old c0 new c0: connack rc 0 sp 1, wills []",
        ],
        "Debian's mosquitto changed its behaviour"
    );
}

#[test]
fn will_message_published_by_paho_client_killed() {
    for proto in ["311", "31"] {
        let b = Broker::start("");
        let mut w = watcher(&b, "paho/will/#", 1);
        let mut c = tools::spawn_py(
            "paho_will_client.py",
            &[&b.port.to_string(), proto, "1", "0", "hang"],
        );
        c.wait_line("CONNECTED", TIMEOUT);
        c.kill(); // SIGKILL: the kernel closes the socket, no DISCONNECT
        let m = w.expect_publish_eq(
            &format!("paho/will/{proto}"),
            format!("gone {proto}").as_bytes(),
            1,
            false,
        );
        w.ack(&m);
    }
}

#[test]
fn no_will_from_paho_client_that_disconnects() {
    for proto in ["311", "31"] {
        let b = Broker::start("");
        let mut w = watcher(&b, "paho/will/#", 1);
        let mut c = tools::spawn_py(
            "paho_will_client.py",
            &[&b.port.to_string(), proto, "1", "1", "disconnect"],
        );
        c.wait_line("DISCONNECTED", TIMEOUT);
        let st = c.wait_exit(TIMEOUT);
        assert!(st.success(), "{}", c.output_text());
        b.wait_for_log(&format!("Client paho-will-{proto} disconnected."), TIMEOUT);
        w.expect_nothing(Duration::from_secs(1));
    }
}

#[test]
fn will_from_mosquitto_sub_killed() {
    let b = Broker::start("");
    let mut w = watcher(&b, "tools/will", 0);
    let mut sub = tools::mosquitto_sub(
        b.port,
        &[
            "-i",
            "subwill",
            "-t",
            "tools/x",
            "--will-topic",
            "tools/will",
            "--will-payload",
            "sub died",
        ],
    );
    b.wait_for_log("as subwill (", TIMEOUT);
    sub.kill();
    w.expect_publish_eq("tools/will", b"sub died", 0, false);
}
