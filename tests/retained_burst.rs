//! Many retained messages for one new subscription (the home-automation
//! restart: thousands of retained discovery configs, then Home Assistant
//! subscribes to `homeassistant/#`). At default limits every one arrives,
//! in the store's order (topics level by level, so the zero-padded names
//! here arrive in publishing order), whatever `max_queued_messages` says;
//! a SUBSCRIBE naming a filter 2,000 times costs bounded memory; live
//! messages meanwhile keep their order.
//!
//! Run against Mosquitto too (`MIDGE_TEST_BROKER=mosquitto`): it delivers
//! about `max_inflight_messages` + `max_queued_messages` (1,020) of a
//! burst, its issue #2887. That expectation is explicit below, not skipped.

mod common;

use std::collections::HashSet;

use common::packets::{Connect, publish, subscribe};
use common::*;

fn mosquitto(b: &Broker) -> bool {
    b.kind == BrokerKind::Mosquitto
}

fn topic(i: usize) -> String {
    format!("homeassistant/sensor/e{i:05}/config")
}

/// Publishes `n` retained QoS 1 configs, pipelined, and waits for every
/// PUBACK.
fn publish_configs(b: &Broker, n: usize) {
    let mut p = b.client("bridge");
    for i in 0..n {
        let body = format!("{{\"name\":\"entity {i}\",\"state_topic\":\"z2m/e{i}\"}}");
        p.send(&publish(
            &topic(i),
            body.as_bytes(),
            1,
            true,
            false,
            (i + 1) as u16,
        ));
    }
    for i in 0..n {
        p.expect_puback((i + 1) as u16);
    }
}

/// Reads PUBLISHes, acknowledging each, until `want` arrived or (for a
/// broker expected to stop short) nothing came for a while.
fn receive(s: &mut RawClient, want: usize, may_stop_short: bool) -> Vec<Publish> {
    let mut got = Vec::new();
    while got.len() < want {
        let wait = if may_stop_short { QUIET * 2 } else { TIMEOUT };
        match s.try_read(wait) {
            ReadOutcome::Packet(pk) => {
                let m = pk.publish();
                s.ack(&m);
                got.push(m);
            }
            ReadOutcome::Timeout if may_stop_short => break,
            other => panic!(
                "{}: {} of {want} arrived, then {}",
                s.name,
                got.len(),
                match other {
                    ReadOutcome::Closed => "the connection closed".to_string(),
                    _ => "nothing".to_string(),
                }
            ),
        }
    }
    got
}

fn burst(n: usize, sub_qos: u8) {
    let b = Broker::start("");
    publish_configs(&b, n);
    let mut s = b.client("hub");
    s.subscribe(1, &[("homeassistant/#", sub_qos)]);
    let got = receive(&mut s, n, mosquitto(&b) && sub_qos > 0);
    eprintln!(
        "{:?}: {} of {n} retained messages arrived at a QoS {sub_qos} subscriber",
        b.kind,
        got.len()
    );
    if mosquitto(&b) && sub_qos > 0 {
        // max_inflight_messages + max_queued_messages, give or take; QoS 0
        // messages skip Mosquitto's queue and all arrive.
        assert!(
            got.len() < n && got.len() >= 1000,
            "Mosquitto 2.0.11 delivers about 1,020 of a retained burst, got {}",
            got.len()
        );
        return;
    }
    let want: Vec<String> = (0..n).map(topic).collect();
    let topics: Vec<String> = got.iter().map(|m| m.topic.clone()).collect();
    assert_eq!(topics, want, "every retained message, in order");
    for m in &got {
        assert!(m.retain, "sent for a new subscription: retain set");
        assert_eq!(m.qos, sub_qos.min(1), "the lower of stored and granted QoS");
    }
    s.expect_nothing(QUIET);
}

#[test]
fn three_thousand_retained_reach_a_qos1_subscriber() {
    burst(3000, 1);
}

#[test]
fn five_thousand_retained_reach_a_qos1_subscriber() {
    burst(5000, 1);
}

#[test]
fn five_thousand_retained_reach_a_qos0_subscriber() {
    burst(5000, 0);
}

#[test]
fn three_thousand_retained_reach_a_qos2_subscriber_at_qos1() {
    burst(3000, 2);
}

#[test]
fn a_filter_named_2000_times_costs_bounded_memory() {
    duplicate_filters(&Broker::start(""), Connect::new("hostile"));
}

/// The same with the journal on and a persistent session, whose SUBACK and
/// streamed batches wait for the journal (Mosquitto has no journal: there
/// it runs with plain persistence).
#[test]
fn a_filter_named_2000_times_costs_bounded_memory_with_the_journal() {
    let dir = TempDir::new("burst-journal");
    let extra = match BrokerKind::default_kind() {
        BrokerKind::Mosquitto => "autosave_interval 0\n",
        BrokerKind::Midge => "persistence_journal true\nautosave_interval 0\n",
    };
    let b = Broker::start(&common::persist::conf(&dir, extra));
    duplicate_filters(&b, Connect::new("hostile").clean(false));
}

fn duplicate_filters(b: &Broker, hostile: Connect) {
    let body = vec![b'x'; 200];
    let mut p = b.client("pub");
    for i in 0..300 {
        p.publish(&format!("dev/{i}"), &body, 0, true, 0);
    }
    p.ping();
    let before = proc_status(b.pid(), "VmRSS");
    let mut hostile = RawClient::connect_with(b.addr(), &hostile, false);
    let filters: Vec<(&str, u8)> = vec![("#", 1); 2000];
    hostile.send(&subscribe(1, &filters));
    // Another client is served meanwhile, after the broker took that in.
    let mut other = b.client("other");
    other.subscribe(1, &[("dev/7", 1)]);
    let m = other.expect_publish_eq("dev/7", &body, 0, true);
    other.ack(&m);
    other.ping();
    std::thread::sleep(QUIET);
    let after = proc_status(b.pid(), "VmRSS");
    let grew = after.saturating_sub(before);
    eprintln!(
        "{:?}: RSS {before} KiB before a SUBSCRIBE of 2,000 '#' over 300 retained, {after} \
         KiB after (+{grew} KiB)",
        b.kind
    );
    if mosquitto(b) {
        // Mosquitto queues one copy per filter: 600,000 (+37 MB measured).
        assert!(
            grew >= 4096,
            "Mosquitto copies per filter, RSS grew by {grew} KiB"
        );
        return;
    }
    // The old copy-per-filter took +81 MB; one stream of 300 at most a
    // batch at a time takes well under 4 MB.
    assert!(grew < 4096, "RSS grew by {grew} KiB");
    // The hostile client, reading at last, gets each retained message once
    // on midge (one subscription: the filter replaces itself).
    let suback = hostile.read_packet();
    assert_eq!(suback.kind(), 9, "{}", suback.describe());
    let got = receive(&mut hostile, 300, true);
    hostile.ping();
    let topics: HashSet<String> = got.iter().map(|m| m.topic.clone()).collect();
    assert_eq!((got.len(), topics.len()), (300, 300));
}

#[test]
fn live_messages_during_the_stream_keep_their_order() {
    let b = Broker::start("");
    let n = 3000;
    publish_configs(&b, n);
    let mut s = b.client("hub");
    s.subscribe(1, &[("homeassistant/#", 1)]);
    // The in-flight window fills; nothing is acknowledged yet.
    let first = s.expect_publish();
    assert_eq!(first.topic, topic(0));
    let mut p = b.client("live");
    // Already streamed: the update follows the stored one.
    p.publish(&topic(0), b"new0", 1, true, 1);
    // Not reached yet: a retained update is sent once, the new one.
    p.publish(&topic(2999), b"new2999", 1, true, 2);
    // Not reached yet: a plain message follows the stored one at once.
    p.publish(&topic(2500), b"live2500", 1, false, 3);
    s.ack(&first);
    let mut got = vec![first];
    got.extend(receive(&mut s, n + 1, mosquitto(&b)));
    let count = |t: &str| got.iter().filter(|m| m.topic == t).count();
    eprintln!(
        "{:?}: {} messages for {n} retained and 3 live",
        b.kind,
        got.len()
    );
    if mosquitto(&b) {
        assert!(got.len() < n, "Mosquitto stops short of the burst");
        return;
    }
    s.expect_nothing(QUIET);
    assert_eq!(
        got.len(),
        n + 2,
        "3,000 stored, two live messages after theirs"
    );
    let t0: Vec<&Publish> = got.iter().filter(|m| m.topic == topic(0)).collect();
    assert_eq!(t0.len(), 2);
    assert_eq!(
        (t0[1].payload_str().as_str(), t0[1].retain),
        ("new0", false)
    );
    assert_eq!(
        count(&topic(2999)),
        1,
        "a replaced retained message arrives once"
    );
    let last = got
        .iter()
        .find(|m| m.topic == topic(2999))
        .map(|m| m.payload_str());
    assert_eq!(last.as_deref(), Some("new2999"));
    let t2500: Vec<String> = got
        .iter()
        .filter(|m| m.topic == topic(2500))
        .map(|m| m.payload_str())
        .collect();
    assert_eq!(t2500.len(), 2);
    assert!(t2500[0].contains("entity 2500"), "the stored one first");
    assert_eq!(t2500[1], "live2500");
    let seen: HashSet<&str> = got.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(seen.len(), n, "every topic");
}

#[test]
fn a_persistent_session_resumes_its_stream() {
    let b = Broker::start("");
    let n = 3000;
    publish_configs(&b, n);
    let hub = Connect::new("hub").clean(false);
    let mut s = RawClient::connect_with(b.addr(), &hub, false);
    s.subscribe(1, &[("homeassistant/#", 1)]);
    let first = receive(&mut s, 100, false);
    s.drop_connection();
    // Meanwhile, for topics the stream has not reached: a retained update
    // (sent once, the new one) and a plain message (after the stored one).
    let mut p = b.client("live");
    p.publish(&topic(2999), b"new2999", 1, true, 1);
    p.publish(&topic(2500), b"live2500", 1, false, 2);
    let mut s = RawClient::connect_with(b.addr(), &hub, true);
    let mut seen: HashSet<String> = first.iter().map(|m| m.topic.clone()).collect();
    let mut rest = Vec::new();
    while seen.len() < n {
        let more = receive(&mut s, 1, mosquitto(&b));
        if more.is_empty() {
            break;
        }
        seen.extend(more.iter().map(|m| m.topic.clone()));
        rest.extend(more);
    }
    eprintln!(
        "{:?}: {} before the disconnect, {} after, {} topics",
        b.kind,
        first.len(),
        rest.len(),
        seen.len()
    );
    if mosquitto(&b) {
        assert!(seen.len() < n);
        return;
    }
    assert_eq!(seen.len(), n, "every topic, across the reconnection");
    let payloads = |t: &str| -> Vec<String> {
        rest.iter()
            .filter(|m| m.topic == t)
            .map(|m| m.payload_str())
            .collect()
    };
    assert_eq!(payloads(&topic(2999)), ["new2999"], "once, the new one");
    let t2500 = payloads(&topic(2500));
    assert_eq!(t2500.len(), 2, "{t2500:?}");
    assert!(t2500[0].contains("entity 2500") && t2500[1] == "live2500");
    // Redelivered ones (DUP) aside, the rest continues in the store's
    // order; the two topics published meanwhile went ahead of the stream
    // (the stored 2500 at once before its live message, as docs/CONFIG.md
    // says: MQTT orders messages per topic, not across topics).
    // A message still in flight at the disconnect (its PUBACK not yet
    // taken in by the broker) comes again, with DUP [MQTT-4.4.0-1]: such a
    // copy of a topic received before is not one of the rest.
    let (t2999, t2500) = (topic(2999), topic(2500));
    let before: HashSet<&str> = first.iter().map(|m| m.topic.as_str()).collect();
    let others: Vec<&Publish> = rest
        .iter()
        .filter(|m| m.topic != t2999 && m.topic != t2500)
        .filter(|m| !(m.dup && before.contains(m.topic.as_str())))
        .collect();
    let once: HashSet<&str> = others.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(others.len(), n - first.len() - 2, "each other topic");
    assert_eq!(once.len(), others.len(), "each other topic once");
    let fresh: Vec<&str> = others
        .iter()
        .filter(|m| !m.dup)
        .map(|m| m.topic.as_str())
        .collect();
    assert!(
        fresh.windows(2).all(|w| w[0] < w[1]),
        "in the store's order"
    );
}
