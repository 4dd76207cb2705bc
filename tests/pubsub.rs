//! SUBSCRIBE/UNSUBSCRIBE, topic matching, and publish/subscribe with the
//! clients midge's users run: mosquitto_pub/mosquitto_sub and paho-mqtt.

mod common;

use std::time::Duration;

use common::packets::{publish, subscribe, unsubscribe};
use common::tools::{self, mosquitto_pub, mosquitto_sub};
use common::*;

#[test]
fn qos0_delivery_is_byte_exact() {
    let b = Broker::start("");
    let mut s = b.client("sub");
    s.send(&subscribe(1, &[("a/b", 0)]));
    // SUBACK: 0x90, length 3, packet id 1, granted QoS 0.
    s.expect_bytes(&[0x90, 0x03, 0x00, 0x01, 0x00], "SUBACK");
    let mut p = b.client("pub");
    p.send(&publish("a/b", b"hello", 0, false, false, 0));
    s.expect_bytes(
        &[
            0x30, 0x0A, 0x00, 0x03, b'a', b'/', b'b', b'h', b'e', b'l', b'l', b'o',
        ],
        "PUBLISH",
    );
}

#[test]
fn suback_grants_the_requested_qos() {
    let b = Broker::start("");
    let mut s = b.client("sub");
    s.send(&subscribe(0x1234, &[("g/0", 0), ("g/1", 1), ("g/2", 2)]));
    s.expect_bytes(&[0x90, 0x05, 0x12, 0x34, 0x00, 0x01, 0x02], "SUBACK");
}

#[test]
fn delivered_qos_is_the_lower_of_published_and_granted() {
    let b = Broker::start("");
    let mut s = b.client("sub");
    s.subscribe(1, &[("m/0", 0), ("m/1", 1), ("m/2", 2)]);
    let mut p = b.client("pub");
    let mut id = 1;
    for granted in 0..3u8 {
        for published in 0..3u8 {
            let topic = format!("m/{granted}");
            let payload = format!("p{published}");
            p.publish(&topic, payload.as_bytes(), published, false, id);
            id += 1;
            let m = s.expect_publish_eq(&topic, payload.as_bytes(), granted.min(published), false);
            assert!(!m.dup);
            if m.qos > 0 {
                assert_ne!(m.pkid, Some(0), "packet id 0 in {m:?}");
            }
            s.ack(&m);
        }
    }
}

#[test]
fn wildcard_filters_match_as_the_spec_says() {
    let b = Broker::start("");
    let filters = [
        "sport/tennis/player1",
        "sport/tennis/+",
        "sport/+/player1",
        "sport/#",
        "sport/tennis/player1/#",
        "+/+",
        "+",
        "#",
        "/+",
        "+/tennis/#",
    ];
    let topics = [
        "sport/tennis/player1",
        "sport/tennis/player2",
        "sport/tennis/player1/ranking",
        "sport",
        "sport/",
        "/finance",
        "finance",
        "sport/golf/player1",
    ];
    // What the MQTT 3.1.1 specification (4.7) says each filter matches.
    let matches = |f: &str, t: &str| -> bool {
        let fl: Vec<&str> = f.split('/').collect();
        let tl: Vec<&str> = t.split('/').collect();
        for (i, level) in fl.iter().enumerate() {
            if *level == "#" {
                return true; // also matches the parent level
            }
            if i >= tl.len() {
                return false;
            }
            if *level != "+" && *level != tl[i] {
                return false;
            }
        }
        fl.len() == tl.len()
    };
    let mut subs: Vec<RawClient> = filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut c = b.client(&format!("s{i}")).named(f);
            c.subscribe(1, &[(f, 0)]);
            c
        })
        .collect();
    let mut p = b.client("pub");
    for t in &topics {
        p.publish(t, t.as_bytes(), 0, false, 0);
    }
    for (f, s) in filters.iter().zip(subs.iter_mut()) {
        let want: Vec<String> = topics
            .iter()
            .filter(|t| matches(f, t))
            .map(|t| t.to_string())
            .collect();
        let got: Vec<String> = want.iter().map(|_| s.expect_publish().topic).collect();
        assert_eq!(got, want, "topics delivered for filter {f:?}");
    }
    // Nothing more for anyone.
    for s in subs.iter_mut() {
        s.expect_nothing(Duration::from_millis(200));
    }
    // Sanity of the table itself: `sport/#` matches `sport`, `+` does not
    // match `/finance`, `#` matches everything.
    assert!(matches("sport/#", "sport"));
    assert!(!matches("+", "/finance"));
    assert!(topics.iter().all(|t| matches("#", t)));
}

#[test]
fn unsubscribe_stops_delivery() {
    let b = Broker::start("");
    let mut s = b.client("sub");
    s.subscribe(1, &[("u/a", 1), ("u/b", 1)]);
    s.send(&unsubscribe(0x0102, &["u/a"]));
    // UNSUBACK: 0xB0, length 2, packet id.
    s.expect_bytes(&[0xB0, 0x02, 0x01, 0x02], "UNSUBACK");
    let mut p = b.client("pub");
    p.publish("u/a", b"gone", 1, false, 1);
    p.publish("u/b", b"kept", 1, false, 2);
    let m = s.expect_publish_eq("u/b", b"kept", 1, false);
    s.ack(&m);
    s.expect_nothing(QUIET);
    // Unsubscribing from a filter one does not have is still acknowledged.
    s.send(&unsubscribe(9, &["never/subscribed"]));
    s.expect_unsuback(9);
}

#[test]
fn resubscribing_replaces_the_granted_qos() {
    let b = Broker::start("");
    let mut s = b.client("sub");
    s.subscribe(1, &[("r/#", 2)]);
    s.subscribe(2, &[("r/#", 0)]);
    let mut p = b.client("pub");
    p.publish("r/x", b"once", 2, false, 1);
    // One copy, at the new QoS.
    s.expect_publish_eq("r/x", b"once", 0, false);
    s.expect_nothing(QUIET);
}

#[test]
fn a_publisher_subscribed_to_its_topic_gets_its_own_message() {
    let b = Broker::start("");
    let mut c = b.client("self");
    c.subscribe(1, &[("echo", 1)]);
    c.send(&publish("echo", b"me", 1, false, false, 5));
    // PUBACK for our publish and the delivery can come in either order.
    let mut got_ack = false;
    let mut got_msg = false;
    for _ in 0..2 {
        let pk = c.read_packet();
        match pk.kind() {
            common::packets::PUBACK => {
                assert_eq!(pk.bytes(), common::packets::puback(5));
                got_ack = true;
            }
            common::packets::PUBLISH => {
                let m = pk.publish();
                assert_eq!(
                    (m.topic.as_str(), m.payload.as_slice(), m.qos),
                    ("echo", &b"me"[..], 1)
                );
                c.ack(&m);
                got_msg = true;
            }
            _ => panic!("unexpected {}", pk.describe()),
        }
    }
    assert!(got_ack && got_msg);
}

#[test]
fn large_and_empty_payloads_are_delivered_intact() {
    // Above the 2,000,000-byte default of max_packet_size: 0 lifts it.
    let b = Broker::start("max_packet_size 0\n");
    let mut s = b.client("sub");
    s.subscribe(1, &[("big/#", 1)]);
    let mut p = b.client("pub");
    // 2 MiB: a four-byte remaining length, many reads and writes.
    let big: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    p.publish("big/one", &big, 1, false, 1);
    let m = s.read_packet_within(Duration::from_secs(30)).publish();
    assert_eq!((m.topic.as_str(), m.qos), ("big/one", 1));
    assert!(
        m.payload == big,
        "2 MiB payload corrupted (got {} bytes)",
        m.payload.len()
    );
    s.ack(&m);
    // An empty, non-retained payload is a normal message.
    p.publish("big/empty", b"", 1, false, 2);
    let m = s.expect_publish_eq("big/empty", b"", 1, false);
    s.ack(&m);
    // Boundaries of the remaining-length encoding.
    for n in [127 - 2 - 7, 128 - 2 - 7, 16383 - 2 - 7, 16384 - 2 - 7] {
        let payload = vec![b'x'; n];
        p.publish("big/edge", &payload, 0, false, 0);
        let m = s.expect_publish();
        assert_eq!(m.payload.len(), n, "payload of {n} bytes");
    }
}

#[test]
fn fan_out_to_many_subscribers() {
    let b = Broker::start("");
    let mut subs: Vec<RawClient> = (0..50)
        .map(|i| {
            let mut c = b.client(&format!("fan{i}"));
            c.subscribe(1, &[("fan/out", 1)]);
            c
        })
        .collect();
    let mut p = b.client("pub");
    for k in 0..5u16 {
        p.publish("fan/out", format!("m{k}").as_bytes(), 1, false, k + 1);
    }
    for s in subs.iter_mut() {
        for k in 0..5 {
            let m = s.expect_publish_eq("fan/out", format!("m{k}").as_bytes(), 1, false);
            s.ack(&m);
        }
    }
}

#[test]
fn a_burst_of_qos1_publishes_keeps_its_order() {
    // [MQTT-4.6.0-2, -6]: PUBACKs in the order of the PUBLISHes, and the
    // messages of one topic forwarded in the order received.
    let b = Broker::start("");
    let mut s = b.client("sub");
    s.subscribe(1, &[("ord/#", 1)]);
    let mut p = b.client("pub");
    let mut burst = Vec::new();
    for k in 1..=30u16 {
        burst.extend(publish(
            "ord/t",
            format!("{k}").as_bytes(),
            1,
            false,
            false,
            k,
        ));
    }
    p.send(&burst);
    for k in 1..=30u16 {
        p.expect_puback(k);
    }
    for k in 1..=30u16 {
        let m = s.expect_publish_eq("ord/t", format!("{k}").as_bytes(), 1, false);
        s.ack(&m);
    }
}

#[test]
fn dollar_topics_are_not_matched_by_leading_wildcards() {
    let b = Broker::start("");
    let mut wild = b.client("wild");
    wild.subscribe(1, &[("#", 0), ("+/x", 0), ("+/+", 0), ("+", 0)]);
    let mut dollar = b.client("dollar");
    dollar.subscribe(1, &[("$foo/#", 0)]);
    let mut p = b.client("pub");
    p.publish("$SYS/x", b"sys", 0, false, 0);
    p.publish("$foo/x", b"foo-x", 0, false, 0);
    p.publish("$foo", b"foo", 0, false, 0);
    // A normal topic as a marker: `wild` must see only this one, and once
    // per matching subscription at most (see overlapping_subscriptions_*).
    p.publish("plain/x", b"marker", 0, false, 0);
    let m = wild.expect_publish();
    assert_eq!(
        m.topic, "plain/x",
        "a $ topic matched a filter starting with a wildcard"
    );
    dollar.expect_publish_eq("$foo/x", b"foo-x", 0, false);
    dollar.expect_publish_eq("$foo", b"foo", 0, false);
    let rest = wild.read_for(QUIET);
    for pk in rest {
        let m = pk.publish();
        assert_eq!(
            m.topic, "plain/x",
            "a $ topic matched a leading wildcard: {m:?}"
        );
    }
}

/// What one subscriber saw, as text, for the comparison with Mosquitto.
fn seen(c: &mut RawClient) -> Vec<String> {
    c.read_for(Duration::from_millis(800))
        .iter()
        .map(|pk| {
            let m = pk.publish();
            format!(
                "{} {} q{} r{}",
                m.topic,
                m.payload_str(),
                m.qos,
                m.retain as u8
            )
        })
        .collect()
}

/// One PUBLISH matching several subscriptions of one MQTT 3.1.1 client:
/// one copy, at the highest QoS of the matching subscriptions
/// [MQTT-3.3.5-1]. Debian's mosquitto 2.0.11 also sends one copy, but at
/// the QoS of the subscription its trie walk meets first (at each level
/// the literal branch, then `+`, then `#`, depth first), which breaks
/// that rule: midge follows MQTT here (docs/CONFORMANCE.md). Both are run
/// and each is checked against what it does.
#[test]
fn overlapping_subscriptions_get_one_copy_at_the_highest_qos() {
    let combos: [&[(&str, u8)]; 12] = [
        &[("a/#", 1), ("a/+", 2)],
        &[("a/#", 1), ("a/+", 2), ("a/b", 0)],
        &[("a/#", 2), ("a/b", 1)],
        &[("a/b", 1), ("a/#", 2)],
        &[("a/+", 0), ("a/#", 2)],
        &[("a/#", 0), ("a/+", 2)],
        &[("#", 2), ("a/#", 1)],
        &[("+/b", 1), ("a/+", 2)],
        &[("+/b", 2), ("a/+", 1)],
        &[("+/+", 2), ("a/b", 0)],
        &[("a/b", 2), ("+/+", 0)],
        &[("+/#", 1), ("a/b", 2)],
    ];
    let scenario = |b: &Broker| {
        let mut p = b.client("pub");
        let mut out = Vec::new();
        for (i, filters) in combos.iter().enumerate() {
            let mut s = b.client(&format!("overlap{i}"));
            s.subscribe(1, filters);
            for qos in [0u8, 2] {
                p.publish("a/b", format!("q{qos}").as_bytes(), qos, false, 1);
                let got: Vec<String> = s
                    .read_for(Duration::from_millis(500))
                    .iter()
                    .map(|pk| {
                        let m = pk.publish();
                        s.ack(&m);
                        format!("{} at q{}", m.payload_str(), m.qos)
                    })
                    .collect();
                out.push(format!("{filters:?} publish q{qos}: {got:?}"));
            }
            s.disconnect();
        }
        out
    };
    let expect = |delivered_qos: &[u8]| -> Vec<String> {
        combos
            .iter()
            .zip(delivered_qos)
            .flat_map(|(filters, q)| {
                [
                    format!("{filters:?} publish q0: [\"q0 at q0\"]"),
                    format!("{filters:?} publish q2: [\"q2 at q{q}\"]"),
                ]
            })
            .collect()
    };
    let highest: Vec<u8> = combos
        .iter()
        .map(|f| f.iter().map(|(_, q)| *q).max().unwrap_or(0))
        .collect();
    let first_met = [2u8, 0, 1, 1, 0, 2, 1, 2, 1, 0, 2, 2];
    let m = Broker::mosquitto("");
    assert_eq!(
        scenario(&m),
        expect(&first_met),
        "Debian's mosquitto changed its behaviour"
    );
    drop(m);
    let b = Broker::start("");
    let want = if b.kind == BrokerKind::Midge {
        expect(&highest)
    } else {
        expect(&first_met)
    };
    assert_eq!(scenario(&b), want);
}

#[test]
fn same_filter_twice_in_one_subscribe_matches_mosquitto() {
    // Observed with mosquitto 2.0.11: SUBACK grants both, the second entry
    // replaces the first, one copy is delivered at its QoS.
    let observed = same_as_mosquitto("same filter twice", "", |b| {
        let mut s = b.client("twice");
        s.send(&subscribe(1, &[("c/d", 0), ("c/d", 1)]));
        let ack = s.read_packet().bytes();
        let mut p = b.client("pub");
        p.publish("c/d", b"z", 2, false, 3);
        let mut out = vec![format!("{ack:02x?}")];
        out.extend(seen(&mut s));
        out
    });
    assert_eq!(observed, ["[90, 04, 00, 01, 00, 01]", "c/d z q1 r0"]);
}

// ---- with Debian's mosquitto_pub / mosquitto_sub ----

fn tools_roundtrip(qos: u8, version: &str) {
    let b = Broker::start("");
    let q = qos.to_string();
    let sub = mosquitto_sub(
        b.port,
        &[
            "-V",
            version,
            "-q",
            &q,
            "-t",
            "tools/#",
            "-F",
            "%t %q %r %p",
        ],
    );
    tools::wait_until_subscribed(&b, &sub, "tools/probe");
    for i in 1..=3 {
        mosquitto_pub(
            b.port,
            &[
                "-V",
                version,
                "-q",
                &q,
                "-t",
                &format!("tools/{i}"),
                "-m",
                &format!("msg {i}"),
            ],
        );
    }
    let last = sub.wait_line(&format!("tools/3 {qos} 0 msg 3"), TIMEOUT);
    std::thread::sleep(QUIET);
    let lines: Vec<String> = sub
        .stdout
        .all()
        .into_iter()
        .filter(|l| !l.starts_with("tools/probe"))
        .collect();
    assert_eq!(
        lines,
        [
            format!("tools/1 {qos} 0 msg 1"),
            format!("tools/2 {qos} 0 msg 2"),
            format!("tools/3 {qos} 0 msg 3"),
        ],
        "mosquitto_sub output (line {last} was the last expected)"
    );
}

#[test]
fn mosquitto_tools_qos0() {
    tools_roundtrip(0, "mqttv311");
}

#[test]
fn mosquitto_tools_qos1() {
    tools_roundtrip(1, "mqttv311");
}

#[test]
fn mosquitto_tools_qos2() {
    tools_roundtrip(2, "mqttv311");
}

#[test]
fn mosquitto_tools_mqtt31_qos1() {
    tools_roundtrip(1, "mqttv31");
}

// ---- with Python paho-mqtt 2.1 ----

fn paho_pubsub(proto: &str, qos: u8) {
    let b = Broker::start("");
    let out = tools::run_py(
        "paho_pubsub.py",
        &[&b.port.to_string(), proto, &qos.to_string()],
    );
    let mut want = vec![format!("GRANTED [{qos}]")];
    for i in 1..=5 {
        want.push(format!("MSG paho/{qos}/{i} q{qos} r0 message {i}"));
    }
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got, want, "paho output");
}

#[test]
fn paho_mqtt311_qos0() {
    paho_pubsub("311", 0);
}

#[test]
fn paho_mqtt311_qos1() {
    paho_pubsub("311", 1);
}

#[test]
fn paho_mqtt311_qos2() {
    paho_pubsub("311", 2);
}

#[test]
fn paho_mqtt31_qos0() {
    paho_pubsub("31", 0);
}

#[test]
fn paho_mqtt31_qos1() {
    paho_pubsub("31", 1);
}

#[test]
fn paho_mqtt31_qos2() {
    paho_pubsub("31", 2);
}

/// Regression: a burst larger than the client thread's 64 KiB write
/// high-water mark, read promptly, must arrive whole. Delivery used to stop
/// when one flush drained the write buffer with messages still pending.
#[test]
fn burst_beyond_the_write_high_water_mark_arrives_whole() {
    let b = Broker::start("");
    let mut s = b.client("sub");
    s.subscribe(1, &[("burst/#", 0)]);
    let mut p = b.client("pub");
    let payload = vec![b'x'; 4000];
    let mut burst = Vec::new();
    for _ in 0..100 {
        burst.extend(publish("burst/a", &payload, 0, false, false, 0));
    }
    p.send(&burst);
    for _ in 0..100 {
        let m = s.expect_publish();
        assert_eq!(m.payload.len(), 4000);
    }
}
