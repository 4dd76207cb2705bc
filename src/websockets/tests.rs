//! Framing, handshake and `http_dir` tests, without sockets.

use std::path::Path;

use proptest::prelude::*;

use super::frame::{self, Decoded, Deframer, FrameError};
use super::handshake::{self, Request, Status};
use super::http;

/// A client frame built by hand from RFC 6455 5.2 (not with `frame`).
fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | opcode];
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Feeds `raw` in pieces of `chunk` bytes; returns the MQTT bytes, the
/// server's answers and whether a close came.
fn feed(raw: &[u8], chunk: usize) -> Result<(Vec<u8>, Vec<u8>, bool), FrameError> {
    let mut d = Deframer::new(1 << 20);
    let mut data = Vec::new();
    let mut out = Vec::new();
    let mut closed = false;
    for piece in raw.chunks(chunk.max(1)) {
        let mut buf = piece.to_vec();
        let Decoded { data: n, closed: c } = d.decode(&mut buf, &mut out)?;
        data.extend_from_slice(&buf[..n]);
        closed |= c;
    }
    Ok((data, out, closed))
}

fn decode_err(raw: &[u8]) -> FrameError {
    feed(raw, raw.len()).expect_err("a bad frame must be refused")
}

#[test]
fn one_binary_frame_gives_its_payload() {
    let raw = client_frame(true, frame::BINARY, b"\x10\x0c\x00\x04MQTT", MASK);
    let (data, out, closed) = feed(&raw, raw.len()).expect("decode");
    assert_eq!(data, b"\x10\x0c\x00\x04MQTT");
    assert!(out.is_empty());
    assert!(!closed);
}

#[test]
fn every_split_point_gives_the_same_bytes() {
    // Several frames of all three length forms, a fragmented message and
    // a ping in between, fed in every chunk size.
    let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
    let mut raw = client_frame(true, frame::BINARY, b"abc", MASK);
    raw.extend(client_frame(
        false,
        frame::BINARY,
        &big[..300],
        [1, 2, 3, 4],
    ));
    raw.extend(client_frame(true, frame::PING, b"hi", MASK));
    raw.extend(client_frame(
        true,
        frame::CONTINUATION,
        &big[300..],
        [9, 8, 7, 6],
    ));
    raw.extend(client_frame(true, frame::BINARY, b"", MASK));
    let mut want = b"abc".to_vec();
    want.extend_from_slice(&big);
    for chunk in [1, 2, 3, 5, 13, 14, 15, 127, 4096, raw.len()] {
        let (data, out, closed) = feed(&raw, chunk).expect("decode");
        assert!(data == want, "chunk {chunk}: payload differs");
        assert_eq!(out, [0x8A, 2, b'h', b'i'], "chunk {chunk}: one pong");
        assert!(!closed);
    }
}

#[test]
fn ping_is_answered_with_its_payload_and_empty_ping_too() {
    let mut raw = client_frame(true, frame::PING, b"", MASK);
    raw.extend(client_frame(true, frame::PING, &[7; 125], MASK));
    let (data, out, _) = feed(&raw, 3).expect("decode");
    assert!(data.is_empty());
    let mut want = vec![0x8A, 0];
    want.extend_from_slice(&[0x8A, 125]);
    want.extend_from_slice(&[7; 125]);
    assert_eq!(out, want);
}

#[test]
fn pong_is_ignored() {
    let mut raw = client_frame(true, frame::PONG, b"x", MASK);
    raw.extend(client_frame(true, frame::BINARY, b"y", MASK));
    let (data, out, _) = feed(&raw, raw.len()).expect("decode");
    assert_eq!(data, b"y");
    assert!(out.is_empty());
}

#[test]
fn close_is_echoed_and_ends_reading() {
    let mut raw = client_frame(true, frame::BINARY, b"before", MASK);
    raw.extend(client_frame(
        true,
        frame::CLOSE,
        &[0x03, 0xE8, b'b', b'y', b'e'],
        MASK,
    ));
    raw.extend(client_frame(true, frame::BINARY, b"after", MASK));
    let (data, out, closed) = feed(&raw, raw.len()).expect("decode");
    assert_eq!(data, b"before");
    assert_eq!(out, [0x88, 2, 0x03, 0xE8]);
    assert!(closed);
    // An empty close gets an empty close.
    let (_, out, closed) = feed(&client_frame(true, frame::CLOSE, b"", MASK), 1).expect("decode");
    assert_eq!(out, [0x88, 0]);
    assert!(closed);
}

#[test]
fn malformed_frames_are_refused() {
    let mut unmasked = client_frame(true, frame::BINARY, b"abc", MASK);
    unmasked[1] &= 0x7F;
    unmasked.drain(2..6);
    assert_eq!(decode_err(&unmasked), FrameError::Unmasked);
    assert_eq!(
        decode_err(&client_frame(true, frame::TEXT, b"{}", MASK)),
        FrameError::Text
    );
    for op in [3, 7, 0xB, 0xF] {
        assert_eq!(
            decode_err(&client_frame(true, op, b"", MASK)),
            FrameError::UnknownOpcode(op)
        );
    }
    let mut rsv = client_frame(true, frame::BINARY, b"a", MASK);
    rsv[0] |= 0x40;
    assert_eq!(decode_err(&rsv), FrameError::Reserved);
    assert_eq!(
        decode_err(&client_frame(true, frame::PING, &[0; 126], MASK)),
        FrameError::BadControl
    );
    assert_eq!(
        decode_err(&client_frame(false, frame::PING, b"", MASK)),
        FrameError::BadControl
    );
    assert_eq!(
        decode_err(&client_frame(true, frame::CONTINUATION, b"a", MASK)),
        FrameError::Continuation
    );
    let mut two = client_frame(false, frame::BINARY, b"a", MASK);
    two.extend(client_frame(true, frame::BINARY, b"b", MASK));
    assert_eq!(decode_err(&two), FrameError::Unfinished);
    assert_eq!(
        decode_err(&client_frame(true, frame::CLOSE, b"x", MASK)),
        FrameError::BadClose
    );
}

#[test]
fn oversized_lengths_are_refused_from_the_header() {
    // 2^63 (forbidden by RFC 6455) and 2^40, header only: no payload needed.
    for len in [1u64 << 63, 1 << 40, (1 << 20) + 1] {
        let mut raw = vec![0x82, 0x80 | 127];
        raw.extend_from_slice(&len.to_be_bytes());
        raw.extend_from_slice(&MASK);
        assert_eq!(decode_err(&raw), FrameError::TooLarge { len, max: 1 << 20 });
    }
    assert_eq!(
        FrameError::TooLarge { len: 1, max: 0 }.close_code(),
        frame::CLOSE_TOO_BIG
    );
    assert_eq!(FrameError::Text.close_code(), frame::CLOSE_UNSUPPORTED_DATA);
    assert_eq!(
        FrameError::Unmasked.close_code(),
        frame::CLOSE_PROTOCOL_ERROR
    );
}

#[test]
fn server_frames_use_the_shortest_length_form() {
    for (len, head) in [
        (0usize, vec![0x82, 0]),
        (125, vec![0x82, 125]),
        (126, vec![0x82, 126, 0, 126]),
        (65535, vec![0x82, 126, 0xFF, 0xFF]),
        (65536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
    ] {
        let mut out = Vec::new();
        frame::encode(frame::BINARY, &vec![0; len], &mut out);
        assert_eq!(out[..head.len()], head[..], "length {len}");
        assert_eq!(out.len(), head.len() + len);
    }
    let mut out = Vec::new();
    frame::encode_close(1002, &mut out);
    assert_eq!(out, [0x88, 2, 0x03, 0xEA]);
}

proptest! {
    /// Any payload cut into any frames, with any masks, read in any chunks,
    /// comes out whole.
    #[test]
    fn frames_and_chunks_do_not_matter(
        payload in proptest::collection::vec(any::<u8>(), 0..3000),
        cuts in proptest::collection::vec(1usize..400, 1..12),
        mask in any::<[u8; 4]>(),
        chunk in 1usize..600,
    ) {
        let mut raw = Vec::new();
        let mut rest = &payload[..];
        let mut first = true;
        for c in &cuts {
            let n = (*c).min(rest.len());
            let (now, later) = rest.split_at(n);
            let op = if first { frame::BINARY } else { frame::CONTINUATION };
            raw.extend(client_frame(later.is_empty(), op, now, mask));
            first = false;
            rest = later;
            if rest.is_empty() {
                break;
            }
        }
        if !rest.is_empty() {
            let op = if first { frame::BINARY } else { frame::CONTINUATION };
            raw.extend(client_frame(true, op, rest, mask));
        }
        let (data, _, _) = feed(&raw, chunk).expect("decode");
        prop_assert_eq!(data, payload);
    }
}

// --- handshake -------------------------------------------------------------

fn upgrade_request(extra: &str) -> String {
    format!(
        "GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

fn response(extra: &str) -> String {
    match handshake::parse(upgrade_request(extra).as_bytes()) {
        Ok(Request::Upgrade { response, .. }) => response,
        other => panic!("not an upgrade: {other:?}"),
    }
}

fn refusal(req: &str) -> Status {
    match handshake::parse(req.as_bytes()) {
        Err(r) => r.status,
        Ok(r) => panic!("accepted: {r:?}"),
    }
}

#[test]
fn accept_key_is_rfc_6455s_example() {
    assert_eq!(
        handshake::accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn upgrade_picks_the_mqtt_subprotocol() {
    let r = response("Sec-WebSocket-Protocol: mqtt\r\n");
    assert!(r.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{r}");
    assert!(r.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(r.contains("\r\nSec-WebSocket-Protocol: mqtt\r\n"));
    assert!(r.ends_with("\r\n\r\n"));
    let r = response("Sec-WebSocket-Protocol: mqttv3.1\r\n");
    assert!(r.contains("\r\nSec-WebSocket-Protocol: mqttv3.1\r\n"));
    let r = response("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: MQTT, mqttv3.1\r\n");
    assert!(r.contains("\r\nSec-WebSocket-Protocol: mqtt\r\n"), "{r}");
    let r = response("");
    assert!(!r.contains("Sec-WebSocket-Protocol"));
}

#[test]
fn bad_upgrades_are_refused() {
    assert_eq!(
        refusal(&upgrade_request(
            "Sec-WebSocket-Protocol: chat, superchat\r\n"
        )),
        Status::BadRequest
    );
    let req = upgrade_request("").replace("Version: 13", "Version: 8");
    assert_eq!(refusal(&req), Status::UpgradeRequired);
    assert!(
        handshake::error_response(Status::UpgradeRequired).contains("Sec-WebSocket-Version: 13")
    );
    let req = upgrade_request("").replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    assert_eq!(refusal(&req), Status::BadRequest);
    let req = upgrade_request("").replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=");
    assert_eq!(refusal(&req), Status::BadRequest);
    let req = upgrade_request("").replace("keep-alive, Upgrade", "keep-alive");
    assert_eq!(refusal(&req), Status::BadRequest);
    assert_eq!(refusal("POST / HTTP/1.1\r\n\r\n"), Status::MethodNotAllowed);
    assert_eq!(refusal("GET / SPDY/3\r\n\r\n"), Status::BadRequest);
    assert_eq!(
        refusal("GET http://x/ HTTP/1.1\r\n\r\n"),
        Status::BadRequest
    );
    assert_eq!(refusal("\x10\x0c\x00\x04MQTT\r\n\r\n"), Status::BadRequest);
    assert_eq!(
        refusal("GET / HTTP/1.1\r\nno colon\r\n\r\n"),
        Status::BadRequest
    );
}

#[test]
fn plain_get_is_a_file_request() {
    assert_eq!(
        handshake::parse(b"GET /index.html?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
        Ok(Request::Get {
            target: "/index.html?x=1".into()
        })
    );
    assert_eq!(handshake::head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
    assert_eq!(handshake::head_end(b"GET / HTTP/1.1\r\n"), None);
}

// --- http_dir --------------------------------------------------------------

struct Dir(std::path::PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("midge-ws-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("www/sub")).expect("mkdir");
        std::fs::write(p.join("www/index.html"), "<p>hi</p>").expect("write");
        std::fs::write(p.join("www/sub/app.js"), "1;").expect("write");
        std::fs::write(p.join("www/sub/a b.css"), "p{}").expect("write");
        std::fs::write(p.join("secret.txt"), "secret").expect("write");
        Dir(p)
    }

    fn www(&self) -> std::path::PathBuf {
        self.0.join("www")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn status(dir: &Path, target: &str) -> Status {
    match http::resolve(dir, target) {
        Err(r) => r.status,
        Ok(f) => panic!("{target} gave {}", f.path.display()),
    }
}

#[test]
fn http_dir_serves_files_with_their_types() {
    let d = Dir::new("serve");
    let f = http::resolve(&d.www(), "/").expect("index");
    assert_eq!((f.len, f.content_type), (9, "text/html; charset=utf-8"));
    let f = http::resolve(&d.www(), "/sub/app.js?v=2").expect("js");
    assert_eq!(f.content_type, "text/javascript; charset=utf-8");
    let f = http::resolve(&d.www(), "/sub/a%20b.css").expect("css");
    assert_eq!(f.content_type, "text/css; charset=utf-8");
    let f = http::resolve(&d.www(), "/./sub//./app.js").expect("dots");
    assert!(f.path.ends_with("sub/app.js"));
    assert!(http::ok_head(&f).contains("Content-Length: 2\r\n"));
    assert_eq!(status(&d.www(), "/missing.html"), Status::NotFound);
    assert_eq!(status(&d.www(), "/sub"), Status::NotFound); // no index.html there
    assert_eq!(
        http::content_type(Path::new("x.bin")),
        "application/octet-stream"
    );
}

#[test]
fn http_dir_paths_cannot_escape() {
    let d = Dir::new("escape");
    for t in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2fsecret.txt",
        "/sub/..%2f..%2fsecret.txt",
    ] {
        assert_eq!(status(&d.www(), t), Status::Forbidden, "{t}");
    }
    assert_eq!(status(&d.www(), "/%zz"), Status::BadRequest);
    assert_eq!(status(&d.www(), "/a%00b"), Status::BadRequest);
    // A symbolic link out of the folder, to a file and to a folder.
    std::os::unix::fs::symlink(d.0.join("secret.txt"), d.www().join("link.txt")).expect("ln");
    std::os::unix::fs::symlink(&d.0, d.www().join("up")).expect("ln");
    assert_eq!(status(&d.www(), "/link.txt"), Status::Forbidden);
    assert_eq!(status(&d.www(), "/up/secret.txt"), Status::Forbidden);
    // A link that stays inside is fine.
    std::os::unix::fs::symlink(d.www().join("sub/app.js"), d.www().join("app.js")).expect("ln");
    assert!(http::resolve(&d.www(), "/app.js").is_ok());
}
