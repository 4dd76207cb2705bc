//! Keepalive: PINGREQ/PINGRESP, and the 1.5 x keepalive timeout.

mod common;

use std::time::{Duration, Instant};

use common::packets::{Connect, pingreq, publish};
use common::*;

#[test]
fn pingreq_gets_pingresp_byte_exact() {
    let b = Broker::start("");
    let mut c = b.client("pinger");
    for _ in 0..3 {
        c.send(&pingreq());
        c.expect_bytes(&[0xD0, 0x00], "PINGRESP");
    }
}

#[test]
fn silent_client_is_disconnected_after_one_and_a_half_keepalives() {
    let b = Broker::start("");
    let mut w = b.client("watcher");
    w.subscribe(1, &[("ka/#", 1)]);
    let mut c = RawClient::open(b.addr()).named("silent");
    c.send(
        &Connect::new("silent")
            .keepalive(2)
            .will("ka/will", b"timed out", 1, true)
            .build(),
    );
    c.expect_connack(0, false);
    let start = Instant::now();
    c.expect_closed_within(Duration::from_secs(15));
    let after = start.elapsed();
    // 1.5 x 2 s = 3 s. Not before (a little slack for the clock of our
    // CONNACK read), not much after.
    assert!(
        after >= Duration::from_millis(2500),
        "disconnected after {after:?}, before 1.5 x keepalive (3 s)"
    );
    assert!(
        after <= Duration::from_secs(8),
        "disconnected only after {after:?}, expected about 3 s"
    );
    b.wait_for_log(
        "Client silent has exceeded timeout, disconnecting.",
        TIMEOUT,
    );
    // And its will is published, with its QoS; retained.
    let m = w.expect_publish_eq("ka/will", b"timed out", 1, false);
    w.ack(&m);
    let mut late = b.client("late");
    late.subscribe(1, &[("ka/will", 1)]);
    late.expect_publish_eq("ka/will", b"timed out", 1, true);
}

#[test]
fn pinging_client_stays_connected() {
    let b = Broker::start("");
    let mut c = RawClient::connect_with(b.addr(), &Connect::new("alive").keepalive(1), false);
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        c.ping();
        std::thread::sleep(Duration::from_millis(400));
    }
    c.ping();
    assert!(!b.has_log("Client alive has exceeded timeout"));
}

#[test]
fn any_packet_counts_as_activity() {
    // [MQTT-3.1.2-23]: it is the time between control packets that counts,
    // not PINGREQ in particular.
    let b = Broker::start("");
    let mut c = RawClient::connect_with(b.addr(), &Connect::new("busy").keepalive(1), false);
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        c.send(&publish("busy/t", b"x", 0, false, false, 0));
        std::thread::sleep(Duration::from_millis(400));
    }
    c.ping();
}

#[test]
fn keepalive_zero_means_no_timeout() {
    let b = Broker::start("");
    let mut zero = RawClient::connect_with(b.addr(), &Connect::new("zero").keepalive(0), false);
    let mut one = RawClient::connect_with(b.addr(), &Connect::new("one").keepalive(1), false);
    // The keepalive-1 client is dropped after 1.5 s; the keepalive-0 one,
    // just as silent, stays.
    one.expect_closed_within(Duration::from_secs(10));
    zero.expect_nothing(Duration::from_secs(2));
    zero.ping();
}

#[test]
fn mosquitto_sub_with_short_keepalive_stays_connected() {
    // mosquitto_sub -k 5 (its minimum) pings by itself; the broker must not
    // drop it after 7.5 s of no other traffic.
    let b = Broker::start("");
    let mut sub = common::tools::mosquitto_sub(b.port, &["-i", "kasub", "-k", "5", "-t", "x"]);
    b.wait_for_log("as kasub (p2, c1, k5).", TIMEOUT);
    std::thread::sleep(Duration::from_secs(9));
    assert!(!sub.has_exited(), "{}", sub.output_text());
    assert!(
        !b.has_log("Client kasub has exceeded timeout") && !b.has_log("Client kasub closed"),
        "log:\n{}",
        b.logs().join("\n")
    );
}
