//! CONNECT and CONNACK: protocol levels, client ids, takeover, log lines.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::packets::{Connect, connect, subscribe};
use common::*;

fn local_port(c: &RawClient) -> u16 {
    c.stream.local_addr().expect("local_addr").port()
}

#[test]
fn mqtt311_connect_gets_connack_0_byte_exact() {
    let b = Broker::start("");
    let mut c = b.raw();
    c.send(&connect("c1"));
    // 0x20, remaining length 2, session present 0, return code 0.
    c.expect_bytes(&[0x20, 0x02, 0x00, 0x00], "CONNACK accepted");
    let port = local_port(&c);
    b.wait_for_log(
        &format!("New client connected from 127.0.0.1:{port} as c1 (p2, c1, k60)."),
        TIMEOUT,
    );
    // The connection is usable.
    c.ping();
}

#[test]
fn mqtt31_connect_is_accepted_and_logged_as_p1() {
    let b = Broker::start("");
    let mut c = b.raw();
    c.send(&Connect::new("old31").level(3).keepalive(30).build());
    c.expect_connack(0, false);
    let port = local_port(&c);
    b.wait_for_log(
        &format!("New client connected from 127.0.0.1:{port} as old31 (p1, c1, k30)."),
        TIMEOUT,
    );
    c.subscribe(1, &[("v31/t", 1)]);
    let mut p = RawClient::connect_with(b.addr(), &Connect::new("pub31").level(3), false);
    p.publish("v31/t", b"hi", 1, false, 2);
    let m = c.expect_publish_eq("v31/t", b"hi", 1, false);
    c.ack(&m);
}

#[test]
fn unknown_protocol_levels_are_refused_with_code_1() {
    let b = Broker::start("");
    for level in [0u8, 1, 2, 6, 7, 255] {
        let mut c = b.raw().named(&format!("level {level}"));
        c.send(&Connect::new("lv").level(level).build());
        c.expect_connack(1, false);
        c.expect_closed();
    }
}

#[test]
fn protocol_name_must_match_level_as_mosquitto() {
    // Mosquitto 2.0 answers CONNACK 1 (unacceptable protocol version) when
    // the name does not belong to the level: "MQIsdp" with 4, "MQTT" with 3.
    let b = Broker::start("");
    let mut c = b.raw().named("MQIsdp level 4");
    c.send(
        &Connect {
            protocol_name: Some(b"MQIsdp".to_vec()),
            ..Connect::new("n1")
        }
        .build(),
    );
    c.expect_connack(1, false);
    c.expect_closed();

    let mut c = b.raw().named("MQTT level 3");
    c.send(
        &Connect {
            protocol_name: Some(b"MQTT".to_vec()),
            ..Connect::new("n2").level(3)
        }
        .build(),
    );
    c.expect_connack(1, false);
    c.expect_closed();
}

#[test]
fn empty_client_id_with_clean_session_gets_an_assigned_id() {
    let b = Broker::start("");
    let mut c = b.raw();
    c.send(&Connect::new("").build());
    c.expect_connack(0, false);
    let port = local_port(&c);
    let line = b.wait_for_log(
        &format!("New client connected from 127.0.0.1:{port} as "),
        TIMEOUT,
    );
    let id = line
        .split(" as ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or("");
    assert!(
        id.starts_with("auto-") && id.len() > 5,
        "assigned id not auto-...: {line:?}"
    );
    assert!(line.ends_with("(p2, c1, k60)."), "{line:?}");
    // A working session under that id.
    c.subscribe(1, &[("auto/t", 0)]);
    c.publish("auto/t", b"x", 0, false, 0);
    c.expect_publish_eq("auto/t", b"x", 0, false);

    // Two anonymous clients get different ids.
    let mut d = b.raw();
    d.send(&Connect::new("").build());
    d.expect_connack(0, false);
    let port2 = local_port(&d);
    let line2 = b.wait_for_log(
        &format!("New client connected from 127.0.0.1:{port2} as "),
        TIMEOUT,
    );
    let id2 = line2
        .split(" as ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or("");
    assert_ne!(id, id2, "two clients got the same assigned id");
    c.ping(); // the first was not taken over
}

#[test]
fn empty_client_id_with_persistent_session_is_rejected() {
    let b = Broker::start("");
    let mut c = b.raw();
    c.send(&Connect::new("").clean(false).build());
    c.expect_connack(2, false);
    c.expect_closed();
}

#[test]
fn empty_client_id_with_mqtt31_is_rejected() {
    let b = Broker::start("");
    let mut c = b.raw();
    c.send(&Connect::new("").level(3).build());
    c.expect_connack(2, false);
    c.expect_closed();
}

#[test]
fn session_takeover_closes_the_old_connection() {
    let b = Broker::start("");
    let mut old = b.client("same").named("old");
    old.subscribe(1, &[("take/#", 0)]);
    let mut new = b.raw().named("new");
    new.send(&connect("same"));
    new.expect_connack(0, false);
    // The broker closes the old connection without sending it anything.
    old.expect_closed();
    // The new one works, and the clean session has no subscription left.
    let mut p = b.client("pub");
    p.publish("take/x", b"1", 0, false, 0);
    new.expect_nothing(QUIET);
    new.subscribe(2, &[("take/#", 0)]);
    p.publish("take/x", b"2", 0, false, 0);
    new.expect_publish_eq("take/x", b"2", 0, false);
}

#[test]
fn session_takeover_of_a_persistent_session_keeps_it() {
    let b = Broker::start("");
    let mut old = RawClient::connect_with(b.addr(), &Connect::new("keep").clean(false), false);
    old.subscribe(1, &[("keep/#", 1)]);
    let mut new = RawClient::open(b.addr()).named("new");
    new.send(&Connect::new("keep").clean(false).build());
    new.expect_connack(0, true);
    old.expect_closed();
    let mut p = b.client("pub");
    p.publish("keep/x", b"still here", 1, false, 1);
    let m = new.expect_publish_eq("keep/x", b"still here", 1, false);
    new.ack(&m);
}

#[test]
fn many_takeovers_in_a_row_leave_one_working_connection() {
    let b = Broker::start("");
    let mut conns = Vec::new();
    for i in 0..10 {
        let c = b.client("flip").named(&format!("conn {i}"));
        conns.push(c);
    }
    let mut last = conns.pop().unwrap();
    for mut c in conns {
        c.expect_closed();
    }
    last.ping();
}

#[test]
fn password_without_username_is_a_protocol_error() {
    // [MQTT-3.1.2-22]; Mosquitto closes without a CONNACK.
    let b = Broker::start("");
    let mut c = b.raw();
    c.send(&Connect::new("pw").password(b"secret").build());
    c.expect_closed();
}

#[test]
fn username_and_password_accepted_when_anonymous_allowed() {
    let b = Broker::start("");
    let mut c = b.raw();
    c.send(
        &Connect::new("user1")
            .username("alice")
            .password(b"pw")
            .build(),
    );
    c.expect_connack(0, false);
    b.wait_for_log("as user1 (p2, c1, k60, u'alice').", TIMEOUT);
}

#[test]
fn clean_disconnect_is_logged() {
    let b = Broker::start("");
    let c = b.client("bye");
    c.disconnect();
    b.wait_for_log("Client bye disconnected.", TIMEOUT);
}

#[test]
fn log_lines_have_mosquitto_form() {
    let b = Broker::start("");
    let mut c = b.raw();
    c.send(&connect("c1"));
    c.expect_connack(0, false);
    let lp = local_port(&c);
    c.disconnect();
    b.wait_for_log("Client c1 disconnected.", TIMEOUT);

    let version = env!("CARGO_PKG_VERSION");
    let conf = b.conf_path.display().to_string();
    let expected = [
        format!("midge version {version} starting"),
        format!("Config loaded from {conf}."),
        format!("Opening ipv4 listen socket on port {}.", b.port),
        format!("New connection from 127.0.0.1:{lp} on port {}.", b.port),
        format!("New client connected from 127.0.0.1:{lp} as c1 (p2, c1, k60)."),
        "Client c1 disconnected.".to_string(),
    ];
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let logs = b.logs();
    // Each expected message appears, in this order, as a whole line after
    // a Unix timestamp.
    let mut from = 0;
    for want in &expected {
        let pos = logs[from..]
            .iter()
            .position(|l| match l.split_once(": ") {
                Some((_, msg)) => msg == want,
                None => false,
            })
            .unwrap_or_else(|| {
                panic!("no log line {want:?} (in order); log:\n{}", logs.join("\n"))
            });
        let line = &logs[from + pos];
        let ts: u64 = line
            .split_once(": ")
            .unwrap()
            .0
            .parse()
            .unwrap_or_else(|_| panic!("no Unix timestamp prefix: {line:?}"));
        assert!(
            ts + 300 >= now && ts <= now + 300,
            "timestamp {ts} far from now {now}: {line:?}"
        );
        from += pos + 1;
    }
}

#[test]
fn subscribe_before_connack_wait_is_fine() {
    // A client may send packets right behind CONNECT without waiting for
    // CONNACK (paho and mosquitto_sub do); they are handled in order.
    let b = Broker::start("");
    let mut c = b.raw();
    let mut bytes = connect("eager");
    bytes.extend(subscribe(1, &[("eager/t", 0)]));
    bytes.extend(common::packets::publish(
        "eager/t", b"self", 0, false, false, 0,
    ));
    c.send(&bytes);
    c.expect_connack(0, false);
    c.expect_suback(1, &[0]);
    c.expect_publish_eq("eager/t", b"self", 0, false);
}
