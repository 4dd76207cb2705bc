//! Clean and persistent sessions: the session-present flag, subscriptions
//! kept or dropped, offline queueing, redelivery with DUP after reconnect.

mod common;

use std::time::Duration;

use common::packets::{Connect, PUBLISH, PUBREL, puback, pubcomp, pubrec};
use common::tools::{self, mosquitto_pub, mosquitto_sub};
use common::*;

fn persistent(b: &Broker, id: &str, session_present: bool) -> RawClient {
    RawClient::connect_with(b.addr(), &Connect::new(id).clean(false), session_present).named(id)
}

#[test]
fn clean_session_keeps_nothing() {
    let b = Broker::start("");
    let mut c = b.client("cs");
    c.subscribe(1, &[("cs/#", 1)]);
    c.disconnect();
    b.wait_for_log("Client cs disconnected.", TIMEOUT);
    // Session present 0, and no subscription survived.
    let mut c = b.client("cs");
    let mut p = b.client("pub");
    p.publish("cs/x", b"lost", 1, false, 1);
    c.expect_nothing(QUIET);
}

#[test]
fn persistent_session_is_present_and_keeps_subscriptions() {
    let b = Broker::start("");
    let mut c = persistent(&b, "ps", false);
    c.subscribe(1, &[("ps/#", 1)]);
    c.disconnect();
    b.wait_for_log("Client ps disconnected.", TIMEOUT);
    let mut c = persistent(&b, "ps", true);
    let mut p = b.client("pub");
    p.publish("ps/x", b"kept", 1, false, 1);
    let m = c.expect_publish_eq("ps/x", b"kept", 1, false);
    c.ack(&m);
}

#[test]
fn clean_connect_discards_a_persistent_session() {
    let b = Broker::start("");
    let mut c = persistent(&b, "gone", false);
    c.subscribe(1, &[("gone/#", 1)]);
    c.disconnect();
    b.wait_for_log("Client gone disconnected.", TIMEOUT);
    // clean=1: session present 0 [MQTT-3.2.2-1].
    let c = b.client("gone");
    c.disconnect();
    wait_until("the second disconnect", TIMEOUT, || {
        b.count_log("Client gone disconnected.") >= 2
    });
    // And the old persistent session is gone: a new persistent one starts
    // empty.
    let mut c = persistent(&b, "gone", false);
    let mut p = b.client("pub");
    p.publish("gone/x", b"nobody", 1, false, 1);
    c.expect_nothing(QUIET);
}

#[test]
fn messages_published_while_offline_arrive_on_reconnect() {
    let b = Broker::start("");
    let mut c = persistent(&b, "away", false);
    c.subscribe(1, &[("away/#", 2)]);
    c.disconnect();
    b.wait_for_log("Client away disconnected.", TIMEOUT);
    let mut p = b.client("pub");
    p.publish("away/1", b"one", 1, false, 1);
    p.publish("away/2", b"two", 2, false, 2);
    p.publish("away/3", b"three", 1, false, 3);
    let mut c = persistent(&b, "away", true);
    for (t, pl, q) in [
        ("away/1", "one", 1),
        ("away/2", "two", 2),
        ("away/3", "three", 1),
    ] {
        let m = c.expect_publish_eq(t, pl.as_bytes(), q, false);
        assert!(!m.dup, "first delivery with DUP: {m:?}");
        c.ack(&m);
    }
    c.expect_nothing(QUIET);
}

#[test]
fn mqtt31_persistent_session_is_kept_but_connack_has_no_session_present() {
    // MQTT 3.1 has no session-present flag: the byte is 0 even when the
    // session is resumed (Mosquitto does the same).
    let b = Broker::start("");
    let c31 = || {
        let mut c = RawClient::open(b.addr()).named("v31");
        c.send(&Connect::new("v31sess").level(3).clean(false).build());
        c.expect_connack(0, false);
        c
    };
    let mut c = c31();
    c.subscribe(1, &[("v31s/#", 1)]);
    c.disconnect();
    b.wait_for_log("Client v31sess disconnected.", TIMEOUT);
    let mut p = b.client("pub");
    p.publish("v31s/x", b"kept for 3.1", 1, false, 1);
    let mut c = c31();
    let m = c.expect_publish_eq("v31s/x", b"kept for 3.1", 1, false);
    c.ack(&m);
}

#[test]
fn unacknowledged_messages_are_redelivered_with_dup_after_reconnect() {
    let b = Broker::start("");
    let mut c = persistent(&b, "flaky", false);
    c.subscribe(1, &[("fl/#", 2)]);
    let mut p = b.client("pub");
    p.publish("fl/1", b"qos1 unacked", 1, false, 1);
    p.publish("fl/2", b"qos2 pubrec sent", 2, false, 2);
    p.publish("fl/3", b"qos2 unacked", 2, false, 3);
    let m1 = c.expect_publish_eq("fl/1", b"qos1 unacked", 1, false);
    let m2 = c.expect_publish_eq("fl/2", b"qos2 pubrec sent", 2, false);
    let m3 = c.expect_publish_eq("fl/3", b"qos2 unacked", 2, false);
    c.send(&pubrec(m2.pkid.unwrap()));
    c.expect_pubrel(m2.pkid.unwrap());
    // Gone without acking anything else (and without DISCONNECT).
    c.drop_connection();
    b.wait_for_log("Client flaky closed its connection.", TIMEOUT);

    let mut c = persistent(&b, "flaky", true);
    // Same ids, DUP=1, in the original order; PUBREL again for the one
    // that had reached PUBREC [MQTT-4.4.0-1].
    let pk = c.read_packet();
    assert_eq!(
        pk.first,
        0x3A,
        "QoS 1 redelivery with DUP: {}",
        pk.describe()
    );
    let r1 = pk.publish();
    assert_eq!(
        (r1.topic.as_str(), r1.payload.as_slice(), r1.pkid),
        ("fl/1", &b"qos1 unacked"[..], m1.pkid)
    );
    let mut rel_seen = false;
    let mut r3 = None;
    for _ in 0..2 {
        let pk = c.read_packet();
        match pk.kind() {
            PUBREL => {
                assert_eq!(pk.bytes(), common::packets::pubrel(m2.pkid.unwrap()));
                rel_seen = true;
            }
            PUBLISH => {
                assert_eq!(
                    pk.first,
                    0x3C,
                    "QoS 2 redelivery with DUP: {}",
                    pk.describe()
                );
                r3 = Some(pk.publish());
            }
            _ => panic!("unexpected {}", pk.describe()),
        }
    }
    assert!(
        rel_seen,
        "no PUBREL re-sent for the message that had PUBREC"
    );
    let r3 = r3.expect("QoS 2 PUBLISH without PUBREC re-sent");
    assert_eq!((r3.topic.as_str(), r3.pkid), ("fl/3", m3.pkid));
    c.send(&puback(r1.pkid.unwrap()));
    c.send(&pubcomp(m2.pkid.unwrap()));
    c.send(&pubrec(r3.pkid.unwrap()));
    c.expect_pubrel(r3.pkid.unwrap());
    c.send(&pubcomp(r3.pkid.unwrap()));
    c.expect_nothing(QUIET);

    // Everything acknowledged: a third connection gets nothing again.
    c.disconnect();
    b.wait_for_log("Client flaky disconnected.", TIMEOUT);
    let mut c = persistent(&b, "flaky", true);
    c.expect_nothing(QUIET);
}

#[test]
fn redelivery_then_queued_messages_in_order() {
    // Mosquitto 2.0.11 observed: after reconnect, first the unacked
    // in-flight message (DUP=1), then those queued while offline (DUP=0).
    let b = Broker::start("");
    let mut c = persistent(&b, "order", false);
    c.subscribe(1, &[("ord/#", 1)]);
    let mut p = b.client("pub");
    p.publish("ord/a", b"in flight", 1, false, 1);
    c.expect_publish_eq("ord/a", b"in flight", 1, false);
    c.drop_connection();
    b.wait_for_log("Client order closed its connection.", TIMEOUT);
    p.publish("ord/b", b"queued 1", 1, false, 2);
    p.publish("ord/c", b"queued 2", 1, false, 3);
    let mut c = persistent(&b, "order", true);
    let m = c.expect_publish_eq("ord/a", b"in flight", 1, false);
    assert!(m.dup);
    c.ack(&m);
    let m = c.expect_publish_eq("ord/b", b"queued 1", 1, false);
    assert!(!m.dup);
    c.ack(&m);
    let m = c.expect_publish_eq("ord/c", b"queued 2", 1, false);
    assert!(!m.dup);
    c.ack(&m);
}

#[test]
fn offline_qos0_and_queue_limit_match_mosquitto() {
    // Not fixed by the specification: QoS 0 messages for an offline
    // persistent session, and how many QoS 1 messages are kept. Observed
    // with mosquitto 2.0.11 (queue_qos0_messages false): QoS 0 dropped,
    // max_queued_messages QoS 1 messages kept, the oldest.
    let observed = same_as_mosquitto("offline queue", "max_queued_messages 5\n", |b| {
        let mut c = persistent(b, "offq", false);
        c.subscribe(1, &[("oq/#", 1)]);
        c.disconnect();
        b.wait_for_log("Client offq disconnected.", TIMEOUT);
        let mut p = b.client("pub");
        for i in 1..=8u16 {
            p.publish("oq/t", format!("q1 {i}").as_bytes(), 1, false, i);
            p.publish("oq/t", format!("q0 {i}").as_bytes(), 0, false, 0);
        }
        p.ping();
        let mut c = persistent(b, "offq", true);
        let mut out = Vec::new();
        loop {
            match c.try_read(Duration::from_millis(800)) {
                ReadOutcome::Packet(pk) => {
                    let m = pk.publish();
                    out.push(format!("{} q{} d{}", m.payload_str(), m.qos, m.dup as u8));
                    c.ack(&m);
                }
                ReadOutcome::Timeout => break,
                ReadOutcome::Closed => panic!("closed"),
            }
        }
        out
    });
    assert_eq!(
        observed,
        [
            "q1 1 q1 d0",
            "q1 2 q1 d0",
            "q1 3 q1 d0",
            "q1 4 q1 d0",
            "q1 5 q1 d0"
        ],
        "Debian's mosquitto changed its behaviour"
    );
}

#[test]
fn mosquitto_sub_persistent_session() {
    let b = Broker::start("");
    // -c: clean session off; -E: exit once subscribed.
    let mut first = mosquitto_sub(
        b.port,
        &["-c", "-i", "toolsess", "-q", "1", "-t", "tsess/#", "-E"],
    );
    let st = first.wait_exit(TIMEOUT);
    assert!(st.success(), "{}", first.output_text());
    for i in 1..=3 {
        mosquitto_pub(
            b.port,
            &[
                "-q",
                "1",
                "-t",
                &format!("tsess/{i}"),
                "-m",
                &format!("offline {i}"),
            ],
        );
    }
    let mut again = mosquitto_sub(
        b.port,
        &[
            "-c", "-i", "toolsess", "-q", "1", "-t", "tsess/#", "-C", "3", "-v",
        ],
    );
    let st = again.wait_exit(TIMEOUT);
    assert!(st.success(), "{}", again.output_text());
    assert_eq!(
        again.stdout.all(),
        [
            "tsess/1 offline 1",
            "tsess/2 offline 2",
            "tsess/3 offline 3"
        ],
        "{}",
        again.output_text()
    );
}

fn paho_session(proto: &str) {
    let b = Broker::start("");
    let out = tools::run_py("paho_session.py", &[&b.port.to_string(), proto]);
    let lines: Vec<&str> = out.lines().collect();
    // MQTT 3.1's CONNACK has no session-present flag.
    let present = if proto == "31" {
        "SESSION_PRESENT False"
    } else {
        "SESSION_PRESENT True"
    };
    assert_eq!(
        lines,
        [
            "FIRST SESSION_PRESENT False",
            "GRANTED [2]",
            present,
            "MSG paho/session/a q1 r0 while away 1",
            "MSG paho/session/b q2 r0 while away 2",
            "MSG paho/session/c q1 r0 while away 3",
        ],
        "paho output"
    );
}

#[test]
fn paho_persistent_session_mqtt311() {
    paho_session("311");
}

#[test]
fn paho_persistent_session_mqtt31() {
    paho_session("31");
}
