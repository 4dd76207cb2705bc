//! WebSockets listeners (`protocol websockets`): paho-mqtt over
//! `transport="websockets"`, plain and TLS; a real browser (headless
//! Chromium) running the `mqtt` npm package on a page served from
//! `http_dir`; and byte-level tests of frames, handshakes and `http_dir`
//! with the hand-written client of tests/common/ws.rs.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::packets::{self, Connect};
use common::pki;
use common::tools::{self, Proc};
use common::ws::{self, Read1, WsClient};
use common::*;

fn on(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A broker with a plain MQTT listener (`b.port`) and a WebSockets one
/// with `ws_lines`, after the global options `global`. Returns the broker
/// and the WebSockets address.
fn broker(global: &str, ws_lines: &str) -> (Broker, SocketAddr) {
    let b = Broker::start(&format!(
        "{global}listener 0 127.0.0.1\nlistener 0 127.0.0.1\nprotocol websockets\n{ws_lines}"
    ));
    const MARK: &str = "Opening websockets listen socket on port ";
    let line = b.wait_for_log(MARK, TIMEOUT);
    let port = line[line.find(MARK).unwrap() + MARK.len()..]
        .trim_end_matches('.')
        .parse()
        .unwrap_or_else(|_| panic!("no port in {line:?}"));
    (b, on(port))
}

/// A paho client over WebSockets and the plain client beside it.
struct PahoRun<'a> {
    /// Host name paho connects to (the certificate's, with TLS).
    host: &'a str,
    /// CA file; empty for no TLS.
    cafile: &'a str,
    /// User name and password; empty for none.
    user: (&'a str, &'a str),
    /// The topic paho subscribes and publishes to.
    topic: &'a str,
    /// The topic mosquitto_pub publishes to over plain TCP, and its
    /// further arguments.
    tcp_topic: &'a str,
    pub_args: &'a [&'a str],
}

/// paho over WebSockets on `ws`: subscribes, gets its own small and
/// 200 kB messages back, then a message mosquitto_pub sends over plain TCP.
fn paho_round_trip(b: &Broker, ws: SocketAddr, r: &PahoRun) {
    let port = ws.port().to_string();
    let topic = r.topic;
    let mut p = tools::spawn_py(
        "paho_ws.py",
        &[&port, r.host, r.cafile, r.user.0, r.user.1, topic, "1"],
    );
    p.wait_line(&format!("MSG {topic} q1 r0 hello over websockets"), TIMEOUT);
    p.wait_line("BIG 200000 same", TIMEOUT);
    p.wait_line("READY", TIMEOUT);
    let mut args = vec!["-t", r.tcp_topic, "-m", "from plain tcp"];
    args.extend_from_slice(r.pub_args);
    tools::mosquitto_pub(b.port, &args);
    p.wait_line(&format!("MSG {topic} q0 r0 from plain tcp"), TIMEOUT);
    assert!(p.wait_exit(TIMEOUT).success(), "{}", p.output_text());
}

/// A password file made by Debian's mosquitto_passwd.
fn password_file(dir: &TempDir, users: &[(&str, &str)]) -> PathBuf {
    let path = dir.path().join("passwd");
    for (i, (u, p)) in users.iter().enumerate() {
        let mut cmd = Command::new("/usr/bin/mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        cmd.arg("-b").arg(&path).args([u, p]);
        tools::ok(&tools::run(cmd, "mosquitto_passwd", TIMEOUT));
    }
    path
}

#[test]
fn paho_over_websockets_with_password_acl_and_mount_point() {
    let dir = TempDir::new("ws-paho");
    let pw = password_file(&dir, &[("web", "web-pw"), ("tcp", "tcp-pw")]);
    let acl = dir.write(
        "acl",
        "user web\ntopic readwrite ws/#\n\nuser tcp\ntopic write ws/#\n",
    );
    let (b, ws) = broker(
        &format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}\n",
            pw.display(),
            acl.display()
        ),
        "mount_point ws/\n",
    );
    // The WebSockets client sees `t`: the mount point `ws/` is added and
    // taken off; the plain client publishes to the full name.
    paho_round_trip(
        &b,
        ws,
        &PahoRun {
            host: "127.0.0.1",
            cafile: "",
            user: ("web", "web-pw"),
            topic: "t",
            tcp_topic: "ws/t",
            pub_args: &["-u", "tcp", "-P", "tcp-pw"],
        },
    );
    // The password file applies to WebSockets clients too.
    let mut c = WsClient::open(ws);
    c.send_mqtt(
        &Connect::new("intruder")
            .username("web")
            .password(b"wrong")
            .build(),
    );
    c.expect_connack(5);
}

#[test]
fn paho_over_secure_websockets() {
    let dir = TempDir::new("ws-tls");
    pki::seed003(dir.path(), "localhost");
    let (b, ws) = broker("", &pki::tls_lines(dir.path()));
    let ca = dir.path().join("mqtt_ca.crt");
    paho_round_trip(
        &b,
        ws,
        &PahoRun {
            host: "localhost",
            cafile: ca.to_str().unwrap(),
            user: ("", ""),
            topic: "secure/t",
            tcp_topic: "secure/t",
            pub_args: &[],
        },
    );
}

#[test]
fn packets_span_and_share_frames_with_pings_between() {
    let (b, ws) = broker("", "");
    let mut c = WsClient::open(ws);
    assert!(
        c.response.contains("\r\nSec-WebSocket-Protocol: mqtt\r\n"),
        "{}",
        c.response
    );
    // CONNECT and SUBSCRIBE share one frame.
    let mut both = packets::connect("span");
    both.extend(packets::subscribe(1, &[("span/t", 1)]));
    c.send_mqtt(&both);
    c.expect_connack(0);
    assert_eq!(c.read_packet().bytes(), [0x90, 3, 0, 1, 1], "SUBACK");
    // A PUBLISH in a fragmented message of three frames, a ping between.
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 200) as u8).collect();
    let publish = packets::publish("span/t", &payload, 1, false, false, 7);
    c.send_frame(false, ws::BINARY, &publish[..3]);
    c.send_frame(true, ws::PING, b"still there?");
    c.send_frame(false, ws::CONTINUATION, &publish[3..1000]);
    c.send_frame(true, ws::CONTINUATION, &publish[1000..]);
    match c.read_frame(TIMEOUT) {
        Read1::Frame {
            fin: true,
            opcode: ws::PONG,
            payload,
        } => assert_eq!(payload, b"still there?"),
        other => panic!("expected the pong first, got {other:?}"),
    }
    // PUBACK and the message, in either order.
    let got = [c.read_packet(), c.read_packet()];
    let (ack, msg) = match got[0].kind() {
        4 => (&got[0], &got[1]),
        _ => (&got[1], &got[0]),
    };
    assert_eq!(ack.bytes(), packets::puback(7), "PUBACK");
    let p = msg.publish();
    assert_eq!(p.topic, "span/t");
    assert!(p.payload == payload, "the message's payload differs");
    // A close frame is answered with the same code, then the connection ends.
    c.send_frame(true, ws::CLOSE, &1000u16.to_be_bytes());
    assert_eq!(c.expect_closed(), Some(1000));
    b.wait_for_log("Client span closed its connection.", TIMEOUT);
}

#[test]
fn mqttv31_subprotocol_and_mqtt_3_1() {
    let (_b, ws) = broker("", "");
    let req = ws::upgrade_request("/", Some("mqttv3.1"));
    let mut c = WsClient::handshake(ws, req.as_bytes());
    assert!(c.response.starts_with("HTTP/1.1 101 "), "{}", c.response);
    assert!(
        c.response
            .contains("\r\nSec-WebSocket-Protocol: mqttv3.1\r\n"),
        "{}",
        c.response
    );
    c.send_mqtt(&Connect::new("old-client").level(3).build());
    c.expect_connack(0);
    // After DISCONNECT the broker closes with a close frame.
    c.send_mqtt(&packets::disconnect());
    assert_eq!(c.expect_closed(), Some(1000));
    // The first of several offered that the broker speaks is chosen.
    let req = ws::upgrade_request("/mqtt", Some("wamp, mqtt, mqttv3.1"));
    let c = WsClient::handshake(ws, req.as_bytes());
    assert!(
        c.response.contains("\r\nSec-WebSocket-Protocol: mqtt\r\n"),
        "{}",
        c.response
    );
}

/// Bytes of a client frame with its first byte changed by `f`.
fn with_first_byte(mut frame: Vec<u8>, f: impl Fn(u8) -> u8) -> Vec<u8> {
    frame[0] = f(frame[0]);
    frame
}

#[test]
fn malformed_frames_close_only_that_connection() {
    let (b, ws) = broker("", "");
    let mut watcher = WsClient::connect(ws, "watcher");
    watcher.send_mqtt(&packets::subscribe(1, &[("ok/#", 0)]));
    assert_eq!(watcher.read_packet().kind(), 9, "SUBACK");
    let mut huge = vec![0x82, 0x80 | 127];
    huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
    huge.extend_from_slice(&[1, 2, 3, 4]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        // PINGREQ in a frame without a mask.
        ("unmasked", vec![0x82, 0x02, 0xC0, 0x00], 1002),
        ("bad opcode", ws::frame(true, 0x3, b""), 1002),
        ("oversized length", huge, 1009),
        (
            "text frame",
            ws::frame(true, ws::TEXT, b"{\"json\": 1}"),
            1003,
        ),
        (
            "reserved bit",
            with_first_byte(ws::frame(true, ws::BINARY, &[0xC0, 0]), |b| b | 0x40),
            1002,
        ),
        (
            "lone continuation",
            ws::frame(true, ws::CONTINUATION, &[0xC0, 0]),
            1002,
        ),
        ("long ping", ws::frame(true, ws::PING, &[0; 126]), 1002),
    ];
    for (i, (what, bytes, code)) in cases.into_iter().enumerate() {
        let id = format!("bad-{i}");
        let mut c = WsClient::connect(ws, &id);
        c.send_raw(&bytes);
        assert_eq!(c.expect_closed(), Some(code), "{what}");
        b.wait_for_log(
            &format!("Client {id} disconnected: WebSocket protocol error: "),
            TIMEOUT,
        );
        // Everyone else goes on.
        let mut p = WsClient::connect(ws, &format!("pub-{i}"));
        p.send_mqtt(&packets::publish(
            &format!("ok/{i}"),
            what.as_bytes(),
            0,
            false,
            false,
            0,
        ));
        let m = watcher.read_packet().publish();
        assert_eq!(
            (m.topic.clone(), m.payload_str()),
            (format!("ok/{i}"), what.to_string())
        );
    }
    // Before CONNECT too.
    let mut c = WsClient::open(ws);
    c.send_frame(true, ws::TEXT, b"hello");
    assert_eq!(c.expect_closed(), Some(1003));
    b.wait_for_log(
        "disconnected due to protocol error: WebSocket protocol error: text frame",
        TIMEOUT,
    );
    watcher.send_frame(true, ws::PING, b"");
    assert!(matches!(
        watcher.read_frame(TIMEOUT),
        Read1::Frame {
            opcode: ws::PONG,
            ..
        }
    ));
}

#[test]
fn oversized_slow_and_bad_handshakes_close_only_that_connection() {
    let secs = scaled(Duration::from_secs(2)).as_secs();
    let (b, ws) = broker(
        &format!("connect_timeout {secs}\nwebsockets_headers_size 1024\n"),
        "",
    );
    // Slow: part of a request, then nothing.
    let mut slow = TcpStream::connect(ws).expect("connect");
    slow.write_all(b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .expect("write");
    // Oversized: a 2,000-byte header. The answer may be lost to a reset.
    let big = format!(
        "GET /mqtt HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(2000)
    );
    let a = ws::http_raw(ws, big.as_bytes());
    assert!(
        a.status.is_empty() || a.status.starts_with("HTTP/1.1 431 "),
        "{a:?}"
    );
    b.wait_for_log(
        "disconnected: WebSocket handshake refused: request head over 1024 bytes",
        TIMEOUT,
    );
    // Wrong WebSocket version, MQTT instead of HTTP, unknown subprotocol.
    let old = ws::upgrade_request("/mqtt", Some("mqtt")).replace("Version: 13", "Version: 8");
    let a = ws::http_raw(ws, old.as_bytes());
    assert!(a.status.starts_with("HTTP/1.1 426 "), "{a:?}");
    assert!(
        a.head.contains("\r\nSec-WebSocket-Version: 13\r\n"),
        "{a:?}"
    );
    let a = ws::http_raw(ws, &packets::connect("not-http"));
    assert!(
        a.status.is_empty() || a.status.starts_with("HTTP/1.1 400 "),
        "{a:?}"
    );
    let a = ws::http_raw(ws, ws::upgrade_request("/", Some("chat")).as_bytes());
    assert!(a.status.starts_with("HTTP/1.1 400 "), "{a:?}");
    // Meanwhile a good client works.
    let mut good = WsClient::connect(ws, "good");
    good.send_mqtt(&packets::subscribe(1, &[("good/t", 0)]));
    assert_eq!(good.read_packet().kind(), 9, "SUBACK");
    // The slow one is closed once connect_timeout has passed.
    slow.set_read_timeout(Some(TIMEOUT + Duration::from_secs(secs)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    assert!(
        matches!(slow.read(&mut byte), Ok(0) | Err(_)),
        "the slow handshake was not closed"
    );
    b.wait_for_log(
        "disconnected: WebSocket handshake not finished in time",
        TIMEOUT,
    );
    good.send_mqtt(&packets::publish(
        "good/t",
        b"still here",
        0,
        false,
        false,
        0,
    ));
    assert_eq!(good.read_packet().publish().payload_str(), "still here");
}

#[test]
fn max_connections_applies_to_a_websockets_listener() {
    let (b, ws) = broker("", "max_connections 1\n");
    let mut first = WsClient::connect(ws, "first");
    let mut second = TcpStream::connect(ws).expect("connect");
    second.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut byte = [0u8; 1];
    assert!(matches!(second.read(&mut byte), Ok(0) | Err(_)));
    b.wait_for_log("denied: max_connections exceeded.", TIMEOUT);
    first.send_frame(true, ws::PING, b"1");
    assert!(matches!(
        first.read_frame(TIMEOUT),
        Read1::Frame {
            opcode: ws::PONG,
            ..
        }
    ));
}

/// A folder for `http_dir` with a page, a script and a style sheet, and a
/// secret next to it, outside.
fn www(dir: &TempDir) -> PathBuf {
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).expect("mkdir");
    std::fs::write(www.join("index.html"), "<p>the page</p>\n").expect("write");
    std::fs::write(www.join("app.js"), "console.log(1);\n").expect("write");
    std::fs::write(www.join("style.css"), "p { color: red }\n").expect("write");
    dir.write("secret.txt", "top secret\n");
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), www.join("link.txt"))
        .expect("symlink");
    www
}

#[test]
fn http_dir_serves_files_and_nothing_outside() {
    let dir = TempDir::new("ws-http");
    let www = www(&dir);
    let (b, ws) = broker(
        "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
         log_type websockets\nwebsockets_log_level 15\n",
        &format!("http_dir {}\n", www.display()),
    );
    for (target, body, ctype) in [
        ("/", "<p>the page</p>\n", "text/html; charset=utf-8"),
        (
            "/index.html?v=1",
            "<p>the page</p>\n",
            "text/html; charset=utf-8",
        ),
        (
            "/app.js",
            "console.log(1);\n",
            "text/javascript; charset=utf-8",
        ),
        (
            "/style.css",
            "p { color: red }\n",
            "text/css; charset=utf-8",
        ),
    ] {
        let a = ws::http_get(ws, target);
        assert!(a.status.starts_with("HTTP/1.1 200 "), "{target}: {a:?}");
        assert!(
            a.head.contains(&format!("\r\nContent-Type: {ctype}\r\n")),
            "{a:?}"
        );
        assert_eq!(String::from_utf8_lossy(&a.body), body, "{target}");
    }
    b.wait_for_log("http: 127.0.0.1:", TIMEOUT);
    b.wait_for_log(" GET /app.js: 200, 16 bytes", TIMEOUT);
    assert_eq!(
        ws::http_get(ws, "/missing.html").status,
        "HTTP/1.1 404 Not Found"
    );
    for target in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/a/..%2f..%2fsecret.txt",
        "/link.txt",
    ] {
        let a = ws::http_get(ws, target);
        assert_eq!(a.status, "HTTP/1.1 403 Forbidden", "{target}");
        assert!(
            !String::from_utf8_lossy(&a.body).contains("secret"),
            "{target}"
        );
    }
    b.wait_for_log("leaves http_dir", TIMEOUT);
    // MQTT on the same listener.
    let mut c = WsClient::connect(ws, "beside-files");
    c.send_frame(true, ws::PING, b"");
    assert!(matches!(
        c.read_frame(TIMEOUT),
        Read1::Frame {
            opcode: ws::PONG,
            ..
        }
    ));
    // Without http_dir (and with websockets_log_level 0), 404 and no line.
    let (b2, ws2) = broker("log_type all\n", "");
    assert_eq!(ws::http_get(ws2, "/").status, "HTTP/1.1 404 Not Found");
    WsClient::connect(ws2, "after-404");
    assert!(!b2.has_log("http: "), "{:?}", b2.logs());
}

// --- a real browser ----------------------------------------------------------

/// dist/mqtt.min.js of the `mqtt` npm package ([`tools::mqtt_js`]).
fn mqtt_min_js() -> PathBuf {
    tools::mqtt_js().join("mqtt/dist/mqtt.min.js")
}

/// Headless Chromium on `url`, with its DevTools on an ephemeral port.
/// Returns the process (its whole group is killed on drop) and the
/// DevTools address.
fn chromium(url: &str, profile: &Path) -> (Proc, SocketAddr) {
    tools::require("/usr/bin/chromium");
    let mut cmd = Command::new("/usr/bin/chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--remote-debugging-port=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(url);
    let p = Proc::spawn(cmd, "chromium", true);
    const MARK: &str = "DevTools listening on ws://";
    let Some((_, line)) = p
        .stderr
        .wait_from(0, scaled(TIMEOUT * 3), |l| l.contains(MARK))
    else {
        panic!("chromium did not start: {}", p.output_text());
    };
    let rest = &line[line.find(MARK).unwrap() + MARK.len()..];
    let addr = rest[..rest.find('/').unwrap_or(rest.len())]
        .parse()
        .unwrap_or_else(|_| panic!("no address in {line:?}"));
    (p, addr)
}

/// The DevTools WebSocket of the browser's page.
fn devtools_page(devtools: SocketAddr) -> WsClient {
    const KEY: &str = "\"webSocketDebuggerUrl\": \"ws://";
    let deadline = Instant::now() + scaled(TIMEOUT);
    loop {
        let list = ws::http_get(devtools, "/json/list");
        let text = String::from_utf8_lossy(&list.body).into_owned();
        let page = text.split(KEY).skip(1).find_map(|s| {
            let url = &s[..s.find('"')?];
            url.contains("/devtools/page/").then(|| url.to_string())
        });
        if let Some(url) = page {
            let path = &url[url.find('/').unwrap_or(0)..];
            let c = WsClient::handshake(devtools, ws::upgrade_request(path, None).as_bytes());
            assert!(c.response.starts_with("HTTP/1.1 101 "), "{}", c.response);
            return c;
        }
        assert!(Instant::now() < deadline, "no page in {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The page's text (`document.body.innerText`), as DevTools' JSON answer.
fn page_text(page: &mut WsClient, id: u32) -> String {
    let call = format!(
        "{{\"id\":{id},\"method\":\"Runtime.evaluate\",\"params\":\
         {{\"expression\":\"document.body ? document.body.innerText : ''\",\"returnByValue\":true}}}}"
    );
    page.send_frame(true, ws::TEXT, call.as_bytes());
    let want = format!("{{\"id\":{id},");
    loop {
        match page.read_frame(TIMEOUT) {
            Read1::Frame {
                opcode: ws::TEXT,
                payload,
                ..
            } => {
                let text = String::from_utf8_lossy(&payload).into_owned();
                if text.starts_with(&want) {
                    return text;
                }
            }
            Read1::Frame { .. } => {}
            other => panic!("DevTools did not answer: {other:?}"),
        }
    }
}

/// Polls the page text until it contains `needle`; panics with the text.
fn wait_for_page_text(page: &mut WsClient, id: &mut u32, needle: &str, what: &str) {
    let deadline = Instant::now() + scaled(TIMEOUT * 3);
    loop {
        *id += 1;
        let text = page_text(page, *id);
        if text.contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: the page shows {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The example page of docs/WEBSOCKETS.md.
fn example_page() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join("docs/examples/websockets.html")).expect("example page")
}

#[test]
fn browser_page_from_http_dir_shows_a_message_from_mosquitto_pub() {
    let js = mqtt_min_js();
    let dir = TempDir::new("ws-browser");
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).expect("mkdir");
    std::fs::write(www.join("index.html"), example_page()).expect("page");
    std::fs::copy(&js, www.join("mqtt.min.js")).expect("copy mqtt.min.js");
    let (b, ws) = broker("", &format!("http_dir {}\n", www.display()));
    let profile = TempDir::new("ws-chromium-profile");
    let (browser, devtools) = chromium(&format!("http://{ws}/"), profile.path());
    let mut page = devtools_page(devtools);
    let mut id = 0;
    wait_for_page_text(&mut page, &mut id, "Status: subscribed", "subscribing");
    tools::mosquitto_pub(
        b.port,
        &[
            "-q",
            "1",
            "-t",
            "demo/browser",
            "-m",
            "hello from mosquitto_pub",
        ],
    );
    wait_for_page_text(
        &mut page,
        &mut id,
        "demo/browser: hello from mosquitto_pub",
        "the message",
    );
    b.wait_for_log("New client connected from 127.0.0.1", TIMEOUT);
    drop(page);
    drop(browser);
}

#[test]
fn the_documented_page_is_the_tested_page() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/WEBSOCKETS.md")).expect("docs/WEBSOCKETS.md");
    assert!(
        doc.contains(&example_page()),
        "docs/WEBSOCKETS.md must show docs/examples/websockets.html verbatim"
    );
}

/// `websockets_origin` (Mosquitto 2.1): an upgrade whose Origin header is
/// not one of the listed origins gets 403 and the connection ends; a
/// listed origin, and a request without Origin (not a browser), are
/// served. Without the option any origin is served.
#[test]
fn websockets_origin_limits_which_pages_may_connect() {
    let with_origin = |origin: &str| {
        let mut r = ws::upgrade_request("/mqtt", Some("mqtt"));
        r.insert_str(r.len() - 2, &format!("Origin: {origin}\r\n"));
        r
    };
    let (b, ws) = broker(
        "",
        "websockets_origin http://board.local:8080\nwebsockets_origin https://ha.example\n",
    );
    for ok in ["http://board.local:8080", "https://ha.example"] {
        let mut c = WsClient::handshake(ws, with_origin(ok).as_bytes());
        assert!(
            c.response.starts_with("HTTP/1.1 101 "),
            "{ok}: {}",
            c.response
        );
        c.send_mqtt(&packets::connect("allowed"));
        c.expect_connack(0);
    }
    for bad in ["http://evil.example", "http://board.local", "null"] {
        let c = WsClient::handshake(ws, with_origin(bad).as_bytes());
        assert!(
            c.response.starts_with("HTTP/1.1 403 "),
            "{bad}: {}",
            c.response
        );
        b.wait_for_log(&format!("origin '{bad}' is not allowed"), TIMEOUT);
    }
    WsClient::connect(ws, "no-origin");
    let (_b, ws) = broker("", "");
    let c = WsClient::handshake(ws, with_origin("http://evil.example").as_bytes());
    assert!(c.response.starts_with("HTTP/1.1 101 "), "{}", c.response);
}

/// 32 MiB of pings from `c`, never reading a pong, in 64 KiB writes until
/// the broker stops taking them. Returns the highest RSS seen (KiB) and the
/// bytes taken.
fn ping_flood(b: &Broker, c: &mut WsClient) -> (u64, usize) {
    let chunk = ws::frame(true, 0x9, b"").repeat(64 * 1024 / 6);
    c.stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .expect("write timeout");
    let mut peak = proc_status(b.pid(), "VmRSS");
    let mut sent = 0;
    while sent < 32 << 20 {
        match c.stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
        peak = peak.max(proc_status(b.pid(), "VmRSS"));
    }
    eprintln!("ping flood: {} KiB taken", sent / 1024);
    (peak, sent)
}

#[test]
fn a_ping_flood_from_a_client_that_never_reads_is_left_unread() {
    let (b, ws_addr) = broker("", "");
    // Before CONNECT and after it: pongs stop at the output bound.
    for connected in [false, true] {
        let before = proc_status(b.pid(), "VmRSS");
        let mut c = if connected {
            WsClient::connect(ws_addr, "pinger")
        } else {
            WsClient::open(ws_addr)
        };
        let (peak, sent) = ping_flood(&b, &mut c);
        eprintln!("connected {connected}: RSS before {before} KiB, peak {peak} KiB");
        // What the broker took beyond its output bound sits in the two
        // sockets' kernel buffers (about 16 MiB on loopback here).
        assert!(sent < 32 << 20, "the broker read all 32 MiB of pings");
        assert!(
            emulated() || peak < before + 4 * 1024,
            "a ping flood grew RSS from {before} to {peak} KiB"
        );
        let mut other = b.client(&format!("other-{connected}"));
        other.ping();
        drop(c);
    }
}
