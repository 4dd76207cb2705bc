//! Retained messages: set, replace, clear, delivery on subscribe.

mod common;

use common::packets::{publish, subscribe};
use common::tools::{self, mosquitto_pub, mosquitto_sub};
use common::*;

#[test]
fn retained_message_is_sent_on_subscribe_with_retain_set() {
    let b = Broker::start("");
    let mut p = b.client("pub");
    p.publish("ret/a", b"kept", 1, true, 1);
    let mut s = b.client("late");
    s.send(&subscribe(1, &[("ret/a", 1)]));
    s.expect_suback(1, &[1]);
    let pk = s.read_packet();
    // PUBLISH, QoS 1, RETAIN: 0x33.
    assert_eq!(pk.first, 0x33, "{}", pk.describe());
    let m = pk.publish();
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        ("ret/a", &b"kept"[..])
    );
    s.ack(&m);
    s.expect_nothing(QUIET);
}

#[test]
fn retained_qos0_byte_exact() {
    let b = Broker::start("");
    let mut p = b.client("pub");
    p.send(&publish("r0", b"v", 0, true, false, 0));
    p.ping(); // the broker has read the publish
    let mut s = b.client("late");
    s.subscribe(1, &[("r0", 2)]);
    s.expect_bytes(
        &[0x31, 0x05, 0x00, 0x02, b'r', b'0', b'v'],
        "retained PUBLISH",
    );
}

#[test]
fn a_new_retained_message_replaces_the_old() {
    let b = Broker::start("");
    let mut p = b.client("pub");
    p.publish("ret/a", b"first", 1, true, 1);
    p.publish("ret/a", b"second", 1, true, 2);
    p.publish("ret/a", b"third", 0, true, 0);
    p.ping();
    let mut s = b.client("late");
    s.subscribe(1, &[("ret/a", 1)]);
    s.expect_publish_eq("ret/a", b"third", 0, true);
    s.expect_nothing(QUIET);
}

#[test]
fn an_empty_retained_message_clears() {
    let b = Broker::start("");
    let mut p = b.client("pub");
    p.publish("ret/a", b"soon gone", 1, true, 1);
    p.publish("ret/b", b"stays", 1, true, 2);
    p.publish("ret/a", b"", 1, true, 3);
    let mut s = b.client("late");
    s.subscribe(1, &[("ret/#", 1)]);
    let m = s.expect_publish_eq("ret/b", b"stays", 1, true);
    s.ack(&m);
    s.expect_nothing(QUIET);
}

#[test]
fn live_delivery_of_a_retained_publish_has_retain_0() {
    let b = Broker::start("");
    let mut s = b.client("early");
    s.subscribe(1, &[("live/#", 2)]);
    let mut p = b.client("pub");
    p.publish("live/a", b"x", 2, true, 1);
    let pk = s.read_packet();
    assert_eq!(
        pk.first & 0x01,
        0,
        "RETAIN set on a live delivery: {}",
        pk.describe()
    );
    let m = pk.publish();
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice(), m.qos),
        ("live/a", &b"x"[..], 2)
    );
    s.ack(&m);
    // Mosquitto also forwards the clearing (empty) retained publish to
    // existing subscribers, as a normal message.
    p.publish("live/a", b"", 0, true, 0);
    s.expect_publish_eq("live/a", b"", 0, false);
}

#[test]
fn retained_qos_is_the_lower_of_stored_and_granted() {
    let b = Broker::start("");
    let mut p = b.client("pub");
    p.publish("rq/2", b"two", 2, true, 1);
    p.publish("rq/0", b"zero", 0, true, 0);
    p.ping();
    let mut s = b.client("s1");
    s.subscribe(1, &[("rq/2", 1)]);
    let m = s.expect_publish_eq("rq/2", b"two", 1, true);
    s.ack(&m);
    let mut s2 = b.client("s2");
    s2.subscribe(1, &[("rq/0", 2)]);
    s2.expect_publish_eq("rq/0", b"zero", 0, true);
}

#[test]
fn retained_messages_match_wildcards_but_not_dollar_topics() {
    let b = Broker::start("");
    let mut p = b.client("pub");
    for t in ["w/a/x", "w/b/x", "w/a/y", "$w/a/x"] {
        p.publish(t, t.as_bytes(), 0, true, 0);
    }
    p.ping();
    let mut s = b.client("plus");
    s.subscribe(1, &[("w/+/x", 0)]);
    let mut got: Vec<String> = (0..2).map(|_| s.expect_publish().topic).collect();
    got.sort();
    assert_eq!(got, ["w/a/x", "w/b/x"]);
    s.expect_nothing(QUIET);

    let mut all = b.client("all");
    all.subscribe(1, &[("#", 0)]);
    let mut got: Vec<String> = (0..3).map(|_| all.expect_publish().topic).collect();
    got.sort();
    assert_eq!(
        got,
        ["w/a/x", "w/a/y", "w/b/x"],
        "`#` must not match $w/a/x"
    );
    all.expect_nothing(QUIET);

    let mut d = b.client("dollar");
    d.subscribe(1, &[("$w/#", 0)]);
    d.expect_publish_eq("$w/a/x", b"$w/a/x", 0, true);
}

#[test]
fn resubscribing_sends_the_retained_message_again() {
    // [MQTT-3.8.4-3]: a SUBSCRIBE replacing a subscription re-sends the
    // matching retained messages (Mosquitto does).
    let b = Broker::start("");
    let mut p = b.client("pub");
    p.publish("again/t", b"r", 0, true, 0);
    p.ping();
    let mut s = b.client("sub");
    s.subscribe(1, &[("again/#", 0)]);
    s.expect_publish_eq("again/t", b"r", 0, true);
    s.subscribe(2, &[("again/#", 0)]);
    s.expect_publish_eq("again/t", b"r", 0, true);
}

#[test]
fn retained_message_survives_the_publisher() {
    let b = Broker::start("");
    let mut p = b.client("gone");
    p.publish("keep/t", b"after me", 1, true, 1);
    p.disconnect();
    b.wait_for_log("Client gone disconnected.", TIMEOUT);
    let mut s = b.client("sub");
    s.subscribe(1, &[("keep/t", 0)]);
    s.expect_publish_eq("keep/t", b"after me", 0, true);
}

#[test]
fn mosquitto_pub_retained_reaches_a_later_mosquitto_sub() {
    let b = Broker::start("");
    mosquitto_pub(
        b.port,
        &["-t", "tools/retained", "-m", "stored", "-r", "-q", "1"],
    );
    // -C 1: exit after one message; %r prints the retain flag.
    let mut sub = mosquitto_sub(
        b.port,
        &["-t", "tools/#", "-C", "1", "-F", "%t %q %r %p", "-q", "1"],
    );
    let st = sub.wait_exit(TIMEOUT);
    assert!(st.success(), "{}", sub.output_text());
    assert_eq!(
        sub.stdout.all(),
        ["tools/retained 1 1 stored"],
        "{}",
        sub.output_text()
    );

    // mosquitto_pub -r -n clears it.
    mosquitto_pub(b.port, &["-t", "tools/retained", "-n", "-r"]);
    let mut s = b.client("check");
    s.subscribe(1, &[("tools/#", 0)]);
    s.expect_nothing(QUIET);
}

#[test]
fn paho_retained_mqtt311() {
    paho_retained("311");
}

#[test]
fn paho_retained_mqtt31() {
    paho_retained("31");
}

fn paho_retained(proto: &str) {
    let b = Broker::start("");
    let out = tools::run_py("paho_retained.py", &[&b.port.to_string(), proto]);
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(
        got,
        [
            format!("MSG paho/retained/{proto} q1 r1 keep me"),
            "NONE".to_string()
        ],
        "paho output"
    );
}
