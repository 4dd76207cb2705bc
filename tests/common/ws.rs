//! A blocking WebSocket client and HTTP GET, built by hand from RFC 6455
//! and not with midge's code, for byte-level tests of WebSockets listeners
//! (and to read a page through Chromium's DevTools).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::TIMEOUT;
use super::packets::{self, Packet};

/// The client mask used for every frame (any value will do).
const MASK: [u8; 4] = [0xA5, 0x1C, 0x7E, 0x03];

pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// An upgrade request for `path` offering `protocol` (none when None).
pub fn upgrade_request(path: &str, protocol: Option<&str>) -> String {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(p) = protocol {
        r.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    r.push_str("\r\n");
    r
}

/// A client frame: masked, with the shortest length form.
pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
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
    f.extend_from_slice(&MASK);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    f
}

/// What the server sent next.
#[derive(Debug, PartialEq, Eq)]
pub enum Read1 {
    Frame {
        fin: bool,
        opcode: u8,
        payload: Vec<u8>,
    },
    /// End of stream (or reset).
    Closed,
    Timeout,
}

pub struct WsClient {
    pub stream: TcpStream,
    /// Bytes received, not yet taken as frames.
    buf: Vec<u8>,
    /// MQTT bytes from binary frames, not yet taken as packets.
    mqtt: Vec<u8>,
    closed: bool,
    /// The server's answer to the upgrade request (the head).
    pub response: String,
}

impl WsClient {
    /// Connects to `addr`, sends `request` and reads the answer's head.
    pub fn handshake(addr: SocketAddr, request: &[u8]) -> WsClient {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).expect("nodelay");
        let mut c = WsClient {
            stream,
            buf: Vec::new(),
            mqtt: Vec::new(),
            closed: false,
            response: String::new(),
        };
        c.send_raw(request);
        let deadline = Instant::now() + TIMEOUT;
        let end = loop {
            if let Some(i) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !c.fill(deadline) {
                break c.buf.len();
            }
        };
        c.response = String::from_utf8_lossy(&c.buf[..end]).into_owned();
        c.buf.drain(..end);
        c
    }

    /// An upgraded connection with subprotocol `mqtt`.
    pub fn open(addr: SocketAddr) -> WsClient {
        let c = WsClient::handshake(addr, upgrade_request("/mqtt", Some("mqtt")).as_bytes());
        assert!(
            c.response.starts_with("HTTP/1.1 101 "),
            "upgrade refused: {:?}",
            c.response
        );
        c
    }

    /// An upgraded connection that sent CONNECT for `client_id` and got
    /// CONNACK 0.
    pub fn connect(addr: SocketAddr, client_id: &str) -> WsClient {
        let mut c = WsClient::open(addr);
        c.send_mqtt(&packets::connect(client_id));
        c.expect_connack(0);
        c
    }

    pub fn expect_connack(&mut self, rc: u8) {
        let p = self.read_packet();
        assert_eq!((p.first, p.body.clone()), (0x20, vec![0, rc]), "CONNACK");
    }

    /// Reads more bytes until `deadline`; false at end of stream.
    fn fill(&mut self, deadline: Instant) -> bool {
        if self.closed {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        self.stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("read timeout");
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => self.closed = true,
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => self.closed = true,
        }
        !self.closed
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the broker");
    }

    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send_raw(&frame(fin, opcode, payload));
    }

    /// MQTT bytes in one binary frame.
    pub fn send_mqtt(&mut self, bytes: &[u8]) {
        self.send_frame(true, BINARY, bytes);
    }

    /// The next server frame, within `timeout`. Server frames must not be
    /// masked.
    pub fn read_frame(&mut self, timeout: Duration) -> Read1 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((fin, opcode, payload, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Read1::Frame {
                    fin,
                    opcode,
                    payload,
                };
            }
            if self.closed {
                return Read1::Closed;
            }
            if Instant::now() >= deadline {
                return Read1::Timeout;
            }
            self.fill(deadline);
        }
    }

    /// The next MQTT packet, from one or more binary frames.
    pub fn read_packet(&mut self) -> Packet {
        loop {
            if let Some((p, used)) = packets::parse_packet(&self.mqtt, "ws client") {
                self.mqtt.drain(..used);
                return p;
            }
            match self.read_frame(TIMEOUT) {
                Read1::Frame {
                    opcode: BINARY | CONTINUATION,
                    payload,
                    ..
                } => self.mqtt.extend_from_slice(&payload),
                other => panic!("expected an MQTT packet, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes; the status code of its close frame
    /// (None without one). Panics if it stays open past TIMEOUT.
    pub fn expect_closed(&mut self) -> Option<u16> {
        let mut code = None;
        loop {
            match self.read_frame(TIMEOUT) {
                Read1::Frame {
                    opcode: CLOSE,
                    payload,
                    ..
                } => code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])),
                Read1::Frame { .. } => {}
                Read1::Closed => return code,
                Read1::Timeout => panic!("the broker kept the connection open"),
            }
        }
    }
}

/// A server frame from the front of `buf`: (fin, opcode, payload, bytes
/// used). Panics on a masked frame.
fn parse_server_frame(buf: &[u8]) -> Option<(bool, u8, Vec<u8>, usize)> {
    let [b0, b1, ..] = *buf else {
        return None;
    };
    assert_eq!(b1 & 0x80, 0, "a server frame must not be masked");
    let (len, at) = match b1 & 0x7F {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => {
            let b = buf.get(2..10)?;
            let mut n = [0u8; 8];
            n.copy_from_slice(b);
            (u64::from_be_bytes(n) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    Some((b0 & 0x80 != 0, b0 & 0x0F, payload, at + len))
}

/// An HTTP answer: status line, head, body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: String,
    pub head: String,
    pub body: Vec<u8>,
}

/// Sends `request` raw and reads the answer to the end of the stream (or
/// a reset: then the status may be empty), or to the end of its
/// Content-Length. Panics if the connection stays open past TIMEOUT.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> HttpAnswer {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    // A server that closes early may reset the connection under the write.
    let _ = s.write_all(request);
    s.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
    let mut all = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                all.extend_from_slice(&chunk[..n]);
                if body_complete(&all) {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!("the server kept the connection open")
            }
            Err(_) => break,
        }
    }
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(all.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    HttpAnswer {
        status: head.lines().next().unwrap_or("").to_string(),
        head,
        body: all[end..].to_vec(),
    }
}

/// Whether `all` holds a whole answer with a Content-Length.
fn body_complete(all: &[u8]) -> bool {
    let Some(end) = all.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&all[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| all.len() >= end + 4 + len)
}

/// `GET target` over plain HTTP/1.1.
pub fn http_get(addr: SocketAddr, target: &str) -> HttpAnswer {
    http_raw(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}
