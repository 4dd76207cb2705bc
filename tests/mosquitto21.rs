//! Mosquitto 2.1's options over real sockets: `listener_allow_anonymous`,
//! `global_max_connections` and the SIGRTMIN log reopen. (The MQTT-level
//! ones are in mqtt5.rs, the TLS ones in tls.rs, the bridge ones in
//! bridge.rs, the watchdog in service.rs.)

mod common;

use std::net::SocketAddr;

use common::packets::Connect;
use common::*;

fn on(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// CONNACK return code of an anonymous 3.1.1 client on `port`.
fn anonymous_connack(port: u16) -> u8 {
    let mut c = RawClient::open(on(port)).named("anonymous");
    c.send(&Connect::new("anon").build());
    c.read_connack().1
}

/// `listener_allow_anonymous` decides for its listener, either way, over
/// the global `allow_anonymous`.
#[test]
fn listener_allow_anonymous_overrides_allow_anonymous_per_listener() {
    let closed = Broker::start(
        "allow_anonymous false\nlistener 0 127.0.0.1\nlistener 0 127.0.0.1\n\
         listener_allow_anonymous true\n",
    );
    let ports = closed.ipv4_ports();
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert_eq!(anonymous_connack(ports[0]), 5, "allow_anonymous false");
    assert_eq!(
        anonymous_connack(ports[1]),
        0,
        "listener_allow_anonymous true"
    );

    let open = Broker::start(
        "allow_anonymous true\nlistener 0 127.0.0.1\nlistener_allow_anonymous false\n\
         listener 0 127.0.0.1\n",
    );
    let ports = open.ipv4_ports();
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert_eq!(
        anonymous_connack(ports[0]),
        5,
        "listener_allow_anonymous false"
    );
    assert_eq!(anonymous_connack(ports[1]), 0, "allow_anonymous true");
}

/// `global_max_connections` (Mosquitto 2.1) caps the connections of every
/// listener together: past it a connection is closed at once, with
/// Mosquitto's log line, and a place that frees up is taken again.
#[test]
fn global_max_connections_caps_every_listener_together() {
    let b = Broker::start("listener 0 127.0.0.1\nlistener 0 127.0.0.1\nglobal_max_connections 2\n");
    let ports = b.ipv4_ports();
    assert_eq!(ports.len(), 2, "{ports:?}");
    let first = RawClient::connect(on(ports[0]), "first");
    let _second = RawClient::connect(on(ports[1]), "second");
    let mut third = RawClient::open(on(ports[1])).named("third");
    third.send_lossy(&Connect::new("third").build());
    third.expect_closed();
    b.wait_for_log("denied: max_connections exceeded", TIMEOUT);
    first.disconnect();
    // The first connection's place frees once its thread has ended.
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let mut c = RawClient::open(on(ports[0])).named("again");
        c.send_lossy(&Connect::new("again").build());
        match c.try_read(std::time::Duration::from_secs(5)) {
            ReadOutcome::Packet(p) => {
                assert_eq!(p.bytes(), [0x20, 0x02, 0x00, 0x00]);
                break;
            }
            other => assert!(
                std::time::Instant::now() < deadline,
                "no place after a disconnect: {other:?}"
            ),
        }
    }
}

/// SIGRTMIN (Mosquitto 2.1) reopens the log files by name: after
/// logrotate moved the file away, the broker writes to a new one, and
/// the moved file keeps what was written before.
#[test]
fn sigrtmin_reopens_the_log_file() {
    let dir = TempDir::new("log-reopen");
    // The broker drops root: let it write there.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let log = dir.path().join("midge.log");
    let b = Broker::start(&format!(
        "log_dest stderr\nlog_dest file {}\n",
        log.display()
    ));
    let _before = b.client("before-rotation");
    b.wait_for_log("as before-rotation", TIMEOUT);
    let rotated = dir.path().join("midge.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    b.signal(libc::SIGRTMIN());
    b.wait_for_log("Log files reopened (SIGRTMIN).", TIMEOUT);
    let _after = b.client("after-rotation");
    b.wait_for_log("as after-rotation", TIMEOUT);
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let new = std::fs::read_to_string(&log).unwrap_or_default();
        if new.contains("as after-rotation") {
            assert!(!new.contains("as before-rotation"), "{new}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new log file lacks the later line: {new:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let old = std::fs::read_to_string(&rotated).expect("read the rotated file");
    assert!(old.contains("as before-rotation"), "{old}");
    assert!(!old.contains("as after-rotation"), "{old}");
}

/// A PROXY protocol version 2 header for TCP over IPv4 from `src`.
fn proxy_v2(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x21, 0x11, 0x00, 0x0C]);
    h.extend(src);
    h.extend([127, 0, 0, 1]);
    h.extend(port.to_be_bytes());
    h.extend(1883u16.to_be_bytes());
    h
}

/// `enable_proxy_protocol` (Mosquitto 2.1): on a listener with it, a
/// client behind a proxy is logged with the address of the PROXY header
/// (version 1 or 2, whichever the listener names); a header of the other
/// version, a bad one or none closes the connection with one line; on a
/// listener without it, a header is refused as a bad first packet.
#[test]
fn enable_proxy_protocol_takes_the_client_address_from_the_header() {
    let b = Broker::start(
        "listener 0 127.0.0.1\nenable_proxy_protocol 1\nlistener 0 127.0.0.1\n\
         enable_proxy_protocol 2\nlistener 0 127.0.0.1\n",
    );
    let ports = b.ipv4_ports();
    assert_eq!(ports.len(), 3, "{ports:?}");
    let (v1, v2, plain) = (ports[0], ports[1], ports[2]);
    let connect = Connect::new("behind-proxy").build();

    let mut c = RawClient::open(on(v1)).named("v1");
    let mut bytes = b"PROXY TCP4 203.0.113.7 127.0.0.1 4321 1883\r\n".to_vec();
    bytes.extend(&connect);
    c.send(&bytes);
    c.expect_connack(0, false);
    b.wait_for_log("New connection from 203.0.113.7:4321 on port", TIMEOUT);
    b.wait_for_log(
        "New client connected from 203.0.113.7:4321 as behind-proxy",
        TIMEOUT,
    );
    c.disconnect();

    let mut c = RawClient::open(on(v2)).named("v2");
    let mut bytes = proxy_v2([198, 51, 100, 9], 4322);
    bytes.extend(&connect);
    c.send(&bytes);
    c.expect_connack(0, false);
    b.wait_for_log(
        "New client connected from 198.51.100.9:4322 as behind-proxy",
        TIMEOUT,
    );
    c.disconnect();

    // The other version, a broken header, or a plain CONNECT: closed.
    let refusals = [
        (v1, proxy_v2([198, 51, 100, 10], 4323)),
        (
            v2,
            b"PROXY TCP4 203.0.113.8 127.0.0.1 4324 1883\r\n".to_vec(),
        ),
        (v1, b"PROXY TCP4 203.0.113.8 127.0.0.1 4324\r\n".to_vec()),
        (v1, connect.clone()),
    ];
    let before = b.count_log("PROXY header");
    for (port, bytes) in &refusals {
        let mut c = RawClient::open(on(*port)).named("bad header");
        c.send_lossy(bytes);
        c.expect_closed();
    }
    let deadline = std::time::Instant::now() + TIMEOUT;
    while b.count_log("PROXY header") < before + refusals.len() {
        assert!(std::time::Instant::now() < deadline, "{:?}", b.logs());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Without enable_proxy_protocol the header is not a CONNECT.
    let mut c = RawClient::open(on(plain)).named("plain");
    c.send_lossy(b"PROXY TCP4 203.0.113.9 127.0.0.1 4325 1883\r\n");
    c.expect_closed();
    assert!(!b.has_log("203.0.113.9"), "{:?}", b.logs());
    // Everyone else is served.
    let _ok = RawClient::connect(on(plain), "plain-client");
}

/// `proxy_protocol_v2_require_tls` (Mosquitto 2.1): a version 2 header
/// must carry the TLS indication (PP2_TYPE_SSL with PP2_CLIENT_SSL) of a
/// proxy that took the client's TLS; without it the connection is closed.
#[test]
fn proxy_protocol_v2_require_tls_needs_the_header_s_tls_indication() {
    let b = Broker::start(
        "listener 0 127.0.0.1\nenable_proxy_protocol 2\nproxy_protocol_v2_require_tls true\n",
    );
    let connect = Connect::new("behind-tls-proxy").build();
    let with_tls = |tls: bool| {
        let mut h = proxy_v2([198, 51, 100, 20], 4400);
        // Length 12 + the TLV's 8 bytes.
        h[15] = 20;
        h.extend([0x20, 0x00, 0x05, u8::from(tls), 0, 0, 0, 0]);
        h
    };
    let mut plain = b.raw().named("no TLS");
    let mut bytes = with_tls(false);
    bytes.extend(&connect);
    plain.send_lossy(&bytes);
    plain.expect_closed();
    b.wait_for_log("does not say the client used TLS", TIMEOUT);
    let mut tls = b.raw().named("TLS");
    let mut bytes = with_tls(true);
    bytes.extend(&connect);
    tls.send(&bytes);
    tls.expect_connack(0, false);
    b.wait_for_log("New client connected from 198.51.100.20:4400", TIMEOUT);
}
