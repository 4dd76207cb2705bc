//! QoS 1 and 2 flows in both directions, exactly-once delivery of inbound
//! QoS 2, and the default in-flight window.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::packets::{Connect, PUBLISH, PUBREL, puback, pubcomp, publish, pubrec, pubrel};
use common::*;

#[test]
fn qos1_publish_gets_puback_and_is_delivered() {
    let b = Broker::start("");
    let mut s = b.client("sub");
    s.subscribe(1, &[("q1/t", 1)]);
    let mut p = b.client("pub");
    p.send(&publish("q1/t", b"one", 1, false, false, 0x0A0B));
    p.expect_bytes(&[0x40, 0x02, 0x0A, 0x0B], "PUBACK");
    let pk = s.read_packet();
    // QoS 1, no DUP, no RETAIN: first byte 0x32.
    assert_eq!(pk.first, 0x32, "{}", pk.describe());
    let m = pk.publish();
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        ("q1/t", &b"one"[..])
    );
    let id = m.pkid.unwrap();
    assert_ne!(id, 0);
    s.send(&puback(id));
    s.expect_nothing(QUIET);
}

#[test]
fn qos2_publish_flow_both_directions_byte_exact() {
    let b = Broker::start("");
    let mut s = b.client("sub");
    s.subscribe(1, &[("q2/t", 2)]);
    let mut p = b.client("pub");
    p.send(&publish("q2/t", b"two", 2, false, false, 0x0102));
    p.expect_bytes(&[0x50, 0x02, 0x01, 0x02], "PUBREC");
    p.send(&pubrel(0x0102));
    p.expect_bytes(&[0x70, 0x02, 0x01, 0x02], "PUBCOMP");

    let pk = s.read_packet();
    assert_eq!(pk.first, 0x34, "{}", pk.describe());
    let m = pk.publish();
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        ("q2/t", &b"two"[..])
    );
    let id = m.pkid.unwrap();
    assert_ne!(id, 0);
    s.send(&pubrec(id));
    // PUBREL has the reserved flags 0010: 0x62.
    s.expect_bytes(&pubrel(id), "PUBREL");
    s.send(&pubcomp(id));
    s.expect_nothing(QUIET);
}

#[test]
fn inbound_qos2_resent_with_dup_is_delivered_once() {
    let b = Broker::start("");
    let mut s = b.client("sub");
    s.subscribe(1, &[("once/t", 2)]);
    let mut p = b.client("pub");
    p.send(&publish("once/t", b"exactly once", 2, false, false, 7));
    p.expect_pubrec(7);
    // The sender did not see PUBREC (as far as the broker knows) and sends
    // again with DUP=1 and the same id, before PUBREL.
    // (Only once: Mosquitto 2.0.11 closes the connection on a third copy.)
    p.send(&publish("once/t", b"exactly once", 2, false, true, 7));
    p.expect_pubrec(7);
    p.send(&pubrel(7));
    p.expect_pubcomp(7);

    let m = s.expect_publish_eq("once/t", b"exactly once", 2, false);
    s.ack(&m);
    s.expect_nothing(Duration::from_secs(1));

    // After PUBCOMP the id is free again: the same id is a new message.
    p.publish("once/t", b"second", 2, false, 7);
    let m = s.expect_publish_eq("once/t", b"second", 2, false);
    s.ack(&m);
    s.expect_nothing(QUIET);
}

#[test]
fn pubrel_for_an_unknown_id_gets_pubcomp() {
    // Mosquitto answers PUBCOMP (the sender may be retrying after a
    // reconnect whose PUBCOMP was lost).
    let b = Broker::start("");
    let mut p = b.client("pub");
    p.send(&pubrel(77));
    p.expect_pubcomp(77);
}

#[test]
fn outbound_packet_ids_are_distinct_and_nonzero() {
    let b = Broker::start("");
    let mut s = b.client("sub");
    s.subscribe(1, &[("ids/#", 2)]);
    let mut p = b.client("pub");
    for i in 0..10u16 {
        p.publish(
            "ids/a",
            format!("{i}").as_bytes(),
            1 + (i % 2) as u8,
            false,
            i + 1,
        );
    }
    let mut ids = HashSet::new();
    for i in 0..10u16 {
        let m = s.expect_publish();
        assert_eq!(m.payload_str(), i.to_string(), "order");
        let id = m.pkid.expect("QoS > 0 has an id");
        assert_ne!(id, 0);
        assert!(ids.insert(id), "packet id {id} in flight twice");
    }
}

#[test]
fn default_inflight_window_is_20_unacked_qos1() {
    // max_inflight_messages is "the maximum number of QoS 1 and 2 messages
    // currently in flight per client" (mosquitto.conf(5)): 20 by default,
    // and still 20 after an ack. (Debian's mosquitto 2.0.11 sends a whole
    // new window after each PUBACK; midge keeps to the documented limit.)
    let b = Broker::start("");
    let mut s = b.client("slow");
    s.subscribe(1, &[("win/#", 1)]);
    let mut p = b.client("pub");
    for i in 1..=30u16 {
        p.publish("win/t", format!("m{i}").as_bytes(), 1, false, i);
    }
    // Never acking: exactly 20 arrive.
    let mut got = Vec::new();
    for _ in 0..20 {
        got.push(s.expect_publish());
    }
    s.expect_nothing(Duration::from_secs(1));
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.payload_str(), format!("m{}", i + 1));
        assert_eq!(m.qos, 1);
    }
    // One ack opens the window by one.
    s.send(&puback(got[0].pkid.unwrap()));
    let m = s.expect_publish_eq("win/t", b"m21", 1, false);
    s.expect_nothing(QUIET);
    got.push(m);
    // Acking everything delivers the rest, in order.
    for m in &got[1..] {
        s.send(&puback(m.pkid.unwrap()));
    }
    for i in 22..=30 {
        let m = s.expect_publish_eq("win/t", format!("m{i}").as_bytes(), 1, false);
        s.ack(&m);
    }
    s.expect_nothing(QUIET);
}

#[test]
fn qos2_outbound_waits_for_pubcomp_before_the_id_is_reused() {
    // A QoS 2 message stays in flight through PUBREC until PUBCOMP; the
    // broker re-sends nothing while the client is slow but connected.
    let b = Broker::start("");
    let mut s = b.client("sub");
    s.subscribe(1, &[("slow2/t", 2)]);
    let mut p = b.client("pub");
    p.publish("slow2/t", b"a", 2, false, 1);
    let m = s.expect_publish_eq("slow2/t", b"a", 2, false);
    let id = m.pkid.unwrap();
    s.send(&pubrec(id));
    s.expect_pubrel(id);
    s.expect_nothing(QUIET);
    s.send(&pubcomp(id));
    p.publish("slow2/t", b"b", 2, false, 2);
    let m2 = s.expect_publish_eq("slow2/t", b"b", 2, false);
    s.ack(&m2);
}

#[test]
fn interleaved_flows_of_several_publishers() {
    // Three publishers at QoS 2 interleaving their flows, one subscriber:
    // every message arrives once.
    let b = Broker::start("");
    let mut s = b.client("sub");
    s.subscribe(1, &[("mix/#", 2)]);
    let mut pubs: Vec<RawClient> = (0..3).map(|i| b.client(&format!("p{i}"))).collect();
    for round in 0..5u16 {
        for (i, p) in pubs.iter_mut().enumerate() {
            p.send(&publish(
                &format!("mix/{i}"),
                format!("{i}-{round}").as_bytes(),
                2,
                false,
                false,
                round + 1,
            ));
        }
        for p in pubs.iter_mut() {
            p.expect_pubrec(round + 1);
        }
        for p in pubs.iter_mut() {
            p.send(&pubrel(round + 1));
            p.expect_pubcomp(round + 1);
        }
    }
    let mut seen = HashSet::new();
    while seen.len() < 15 {
        let pk = s.read_packet();
        match pk.kind() {
            PUBLISH => {
                let m = pk.publish();
                assert!(seen.insert(m.payload_str()), "delivered twice: {m:?}");
                s.send(&pubrec(m.pkid.unwrap()));
            }
            PUBREL => s.send(&pubcomp(pk.pkid())),
            _ => panic!("unexpected {}", pk.describe()),
        }
    }
    // Drain the remaining PUBRELs; no further PUBLISH.
    for pk in s.read_for(QUIET) {
        assert_eq!(pk.kind(), PUBREL, "unexpected {}", pk.describe());
        s.send(&pubcomp(pk.pkid()));
    }
}

/// An acknowledgement of the wrong kind for a message in flight (PUBREC
/// for QoS 1, PUBACK or PUBCOMP for QoS 2 before its PUBREC) closes the
/// connection, as in Mosquitto (its tests 02-subpub-qos1-bad-pubrec,
/// -bad-pubcomp, 02-subpub-qos2-bad-puback-1/2, -bad-pubcomp). A PUBREC
/// for an id nothing is in flight under still gets its PUBREL.
#[test]
fn an_acknowledgement_of_the_wrong_kind_closes_the_connection() {
    let b = Broker::start("");
    for (qos, wrong, what) in [
        (1, pubrec(1), "PUBREC for QoS 1"),
        (1, pubcomp(1), "PUBCOMP for QoS 1"),
        (2, puback(1), "PUBACK for QoS 2"),
        (2, pubcomp(1), "PUBCOMP for QoS 2 before PUBREC"),
    ] {
        let mut sub = b.client(&format!("wrong-ack-{qos}-{}", wrong[0]));
        sub.subscribe(1, &[("wrong/ack", qos)]);
        let mut p = b.client("wrong-ack-pub");
        p.publish("wrong/ack", b"m", qos, false, 1);
        let m = sub.read_packet();
        assert_eq!(m.kind(), PUBLISH, "{what}");
        sub.send(&wrong);
        sub.expect_closed();
        p.disconnect();
    }
    let mut c = b.client("unknown-pubrec");
    c.send(&pubrec(77));
    let rel = c.read_packet();
    assert_eq!(rel.kind(), PUBREL);
    assert_eq!(rel.body, vec![0, 77]);
    c.ping();
}

/// A third copy of an unreleased QoS 2 message on one connection closes
/// it (the second still gets its PUBREC), as Mosquitto 2.0 and 2.1 do
/// (its test 03-publish-qos2-dup). After a reconnect, repeats count anew
/// against the copy the broker holds.
#[test]
fn a_third_copy_of_an_unreleased_qos2_message_closes_the_connection() {
    let b = Broker::start("");
    let copy = publish("dup/2", b"m", 2, false, true, 1);
    let session = Connect::new("dup-sender").clean(false);
    let mut c = RawClient::connect_with(b.addr(), &session, false);
    c.send(&copy);
    c.expect_pubrec(1);
    c.send(&copy);
    c.expect_pubrec(1);
    c.drop_connection();
    // A new connection may send it again once more, as the first copy
    // stays stored; then it is a repeat too many.
    let mut c = RawClient::connect_with(b.addr(), &session, true);
    c.send(&copy);
    c.expect_pubrec(1);
    c.send(&copy);
    c.expect_closed();
}
