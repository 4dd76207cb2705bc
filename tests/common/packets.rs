//! MQTT 3.1/3.1.1 packets written byte by byte from the specification, and
//! a small blocking client to send them and read the broker's answers.
//!
//! Deliberately independent of midge's own codec: a test that encoded with
//! the code under test could not catch that code's bugs.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::TIMEOUT;

// Packet types (high nibble of the first byte).
pub const CONNECT: u8 = 1;
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;
pub const SUBSCRIBE: u8 = 8;
pub const SUBACK: u8 = 9;
pub const UNSUBSCRIBE: u8 = 10;
pub const UNSUBACK: u8 = 11;
pub const PINGREQ: u8 = 12;
pub const PINGRESP: u8 = 13;
pub const DISCONNECT: u8 = 14;

pub fn type_name(t: u8) -> &'static str {
    match t {
        CONNECT => "CONNECT",
        CONNACK => "CONNACK",
        PUBLISH => "PUBLISH",
        PUBACK => "PUBACK",
        PUBREC => "PUBREC",
        PUBREL => "PUBREL",
        PUBCOMP => "PUBCOMP",
        SUBSCRIBE => "SUBSCRIBE",
        SUBACK => "SUBACK",
        UNSUBSCRIBE => "UNSUBSCRIBE",
        UNSUBACK => "UNSUBACK",
        PINGREQ => "PINGREQ",
        PINGRESP => "PINGRESP",
        DISCONNECT => "DISCONNECT",
        _ => "RESERVED",
    }
}

/// The variable-length "remaining length" of the fixed header.
pub fn remaining_length(mut n: usize) -> Vec<u8> {
    assert!(n <= 268_435_455, "remaining length {n} too large");
    let mut out = Vec::new();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return out;
        }
    }
}

/// A whole packet: first byte, remaining length, body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    v.extend(remaining_length(body.len()));
    v.extend_from_slice(body);
    v
}

/// A length-prefixed string or binary field.
pub fn field(b: &[u8]) -> Vec<u8> {
    assert!(b.len() <= 65535);
    let mut v = (b.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

/// A will message of a CONNECT.
#[derive(Clone, Debug)]
pub struct Will {
    pub topic: Vec<u8>,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

/// CONNECT builder: `Connect::new("id").level(3).clean(false).build()`.
#[derive(Clone, Debug)]
pub struct Connect {
    pub level: u8,
    pub client_id: Vec<u8>,
    pub clean: bool,
    pub keepalive: u16,
    pub will: Option<Will>,
    pub username: Option<Vec<u8>>,
    pub password: Option<Vec<u8>>,
    /// Overrides the protocol name (default: "MQIsdp" for level 3, "MQTT"
    /// otherwise).
    pub protocol_name: Option<Vec<u8>>,
    /// MQTT 5: the Session Expiry Interval property.
    pub session_expiry: Option<u32>,
}

impl Connect {
    /// MQTT 3.1.1, clean session, keepalive 60.
    pub fn new(client_id: &str) -> Connect {
        Connect {
            level: 4,
            client_id: client_id.as_bytes().to_vec(),
            clean: true,
            keepalive: 60,
            will: None,
            username: None,
            password: None,
            protocol_name: None,
            session_expiry: None,
        }
    }
    /// MQTT 5: the Session Expiry Interval property.
    pub fn session_expiry(mut self, secs: u32) -> Connect {
        self.session_expiry = Some(secs);
        self
    }
    pub fn level(mut self, level: u8) -> Connect {
        self.level = level;
        self
    }
    pub fn clean(mut self, clean: bool) -> Connect {
        self.clean = clean;
        self
    }
    pub fn keepalive(mut self, secs: u16) -> Connect {
        self.keepalive = secs;
        self
    }
    pub fn will(mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> Connect {
        self.will = Some(Will {
            topic: topic.as_bytes().to_vec(),
            payload: payload.to_vec(),
            qos,
            retain,
        });
        self
    }
    pub fn username(mut self, u: &str) -> Connect {
        self.username = Some(u.as_bytes().to_vec());
        self
    }
    pub fn password(mut self, p: &[u8]) -> Connect {
        self.password = Some(p.to_vec());
        self
    }
    pub fn build(&self) -> Vec<u8> {
        let name = match &self.protocol_name {
            Some(n) => n.clone(),
            None if self.level == 3 => b"MQIsdp".to_vec(),
            None => b"MQTT".to_vec(),
        };
        let mut flags = 0u8;
        if self.clean {
            flags |= 0x02;
        }
        if let Some(w) = &self.will {
            flags |= 0x04 | (w.qos << 3);
            if w.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        let mut body = field(&name);
        body.push(self.level);
        body.push(flags);
        body.extend(self.keepalive.to_be_bytes());
        if self.level == 5 {
            match self.session_expiry {
                Some(secs) => {
                    body.extend([5, 0x11]);
                    body.extend(secs.to_be_bytes());
                }
                None => body.push(0), // no properties
            }
        }
        body.extend(field(&self.client_id));
        if let Some(w) = &self.will {
            if self.level == 5 {
                body.push(0); // no will properties
            }
            body.extend(field(&w.topic));
            body.extend(field(&w.payload));
        }
        if let Some(u) = &self.username {
            body.extend(field(u));
        }
        if let Some(p) = &self.password {
            body.extend(field(p));
        }
        packet(0x10, &body)
    }
}

/// CONNECT with MQTT 3.1.1, clean session, keepalive 60.
pub fn connect(client_id: &str) -> Vec<u8> {
    Connect::new(client_id).build()
}

pub fn subscribe(pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    for (f, q) in filters {
        body.extend(field(f.as_bytes()));
        body.push(*q);
    }
    packet(0x82, &body)
}

pub fn unsubscribe(pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    for f in filters {
        body.extend(field(f.as_bytes()));
    }
    packet(0xA2, &body)
}

/// PUBLISH with raw topic bytes (to send invalid UTF-8 or wildcards).
pub fn publish_raw(
    topic: &[u8],
    payload: &[u8],
    qos: u8,
    retain: bool,
    dup: bool,
    pkid: u16,
) -> Vec<u8> {
    let mut first = 0x30 | (qos << 1);
    if retain {
        first |= 0x01;
    }
    if dup {
        first |= 0x08;
    }
    let mut body = field(topic);
    if qos > 0 {
        body.extend(pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(first, &body)
}

/// PUBLISH; `pkid` is ignored at QoS 0.
pub fn publish(
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    dup: bool,
    pkid: u16,
) -> Vec<u8> {
    publish_raw(topic.as_bytes(), payload, qos, retain, dup, pkid)
}

pub fn puback(pkid: u16) -> Vec<u8> {
    packet(0x40, &pkid.to_be_bytes())
}
pub fn pubrec(pkid: u16) -> Vec<u8> {
    packet(0x50, &pkid.to_be_bytes())
}
pub fn pubrel(pkid: u16) -> Vec<u8> {
    packet(0x62, &pkid.to_be_bytes())
}
pub fn pubcomp(pkid: u16) -> Vec<u8> {
    packet(0x70, &pkid.to_be_bytes())
}
pub fn pingreq() -> Vec<u8> {
    vec![0xC0, 0x00]
}
pub fn disconnect() -> Vec<u8> {
    vec![0xE0, 0x00]
}

/// A whole packet from the front of `buf` and its length in bytes, if
/// there is one; panics (naming `who`) on a malformed remaining length.
pub fn parse_packet(buf: &[u8], who: &str) -> Option<(Packet, usize)> {
    if buf.is_empty() {
        return None;
    }
    let mut len = 0usize;
    let mut mult = 1usize;
    let mut i = 1;
    loop {
        if i >= buf.len() {
            return None;
        }
        let b = buf[i];
        len += (b & 0x7F) as usize * mult;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        mult *= 128;
        assert!(
            i <= 4,
            "{who}: malformed remaining length from the broker: {:02x?}",
            &buf[..i]
        );
    }
    if buf.len() < i + len {
        return None;
    }
    let p = Packet {
        first: buf[0],
        body: buf[i..i + len].to_vec(),
    };
    Some((p, i + len))
}

/// One packet as read from the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The whole first byte: type in the high nibble, flags in the low one.
    pub first: u8,
    pub body: Vec<u8>,
}

impl Packet {
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }
    pub fn flags(&self) -> u8 {
        self.first & 0x0F
    }
    /// The packet re-encoded, for byte-exact comparisons.
    pub fn bytes(&self) -> Vec<u8> {
        packet(self.first, &self.body)
    }
    /// The packet identifier at the start of the body (acks, SUBACK...).
    pub fn pkid(&self) -> u16 {
        assert!(self.body.len() >= 2, "{self:?} has no packet id");
        u16::from_be_bytes([self.body[0], self.body[1]])
    }
    pub fn describe(&self) -> String {
        format!(
            "{} (first byte {:#04x}, {} body bytes: {:02x?})",
            type_name(self.kind()),
            self.first,
            self.body.len(),
            &self.body[..self.body.len().min(64)]
        )
    }
    /// Parses a PUBLISH; panics on anything else.
    pub fn publish(&self) -> Publish {
        assert_eq!(
            self.kind(),
            PUBLISH,
            "expected PUBLISH, got {}",
            self.describe()
        );
        let qos = (self.first >> 1) & 0x03;
        assert!(qos < 3, "PUBLISH with QoS 3: {}", self.describe());
        let b = &self.body;
        assert!(b.len() >= 2, "PUBLISH too short: {}", self.describe());
        let tl = u16::from_be_bytes([b[0], b[1]]) as usize;
        assert!(
            b.len() >= 2 + tl,
            "PUBLISH topic overruns: {}",
            self.describe()
        );
        let topic = String::from_utf8(b[2..2 + tl].to_vec()).expect("PUBLISH topic is UTF-8");
        let mut i = 2 + tl;
        let pkid = if qos > 0 {
            assert!(
                b.len() >= i + 2,
                "PUBLISH without packet id: {}",
                self.describe()
            );
            let id = u16::from_be_bytes([b[i], b[i + 1]]);
            i += 2;
            Some(id)
        } else {
            None
        };
        Publish {
            topic,
            payload: b[i..].to_vec(),
            qos,
            retain: self.first & 0x01 != 0,
            dup: self.first & 0x08 != 0,
            pkid,
        }
    }
}

/// A parsed PUBLISH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    pub pkid: Option<u16>,
}

impl Publish {
    pub fn payload_str(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// What one read attempt found.
#[derive(Debug)]
pub enum ReadOutcome {
    Packet(Packet),
    /// Nothing (or only part of a packet) before the deadline.
    Timeout,
    /// The broker closed the connection (EOF or reset) with no further
    /// whole packet buffered.
    Closed,
}

/// A blocking MQTT client over a `TcpStream`, for byte-level tests.
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Packets read ahead while looking for a specific one (see `ack`),
    /// returned first by the next reads.
    pending: std::collections::VecDeque<Packet>,
    closed: bool,
    /// Name used in failure messages.
    pub name: String,
}

impl RawClient {
    /// Opens a TCP connection; nothing is sent.
    pub fn open(addr: SocketAddr) -> RawClient {
        RawClient::open_until(addr, Instant::now() + TIMEOUT)
    }

    /// Opens a TCP connection, retrying refused or timed-out attempts until
    /// `deadline` (a thousand clients connecting at once can overflow the
    /// listen backlog of a small machine).
    pub fn open_until(addr: SocketAddr, deadline: Instant) -> RawClient {
        let stream = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match TcpStream::connect_timeout(&addr, left.max(Duration::from_millis(100))) {
                Ok(s) => break s,
                Err(e) => {
                    if Instant::now() >= deadline {
                        panic!("cannot connect to {addr}: {e}");
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        RawClient::over(stream)
    }

    /// Wraps a connected stream, e.g. one a test's own listener accepted
    /// (a fake remote broker that reads what a bridge sends).
    pub fn over(stream: TcpStream) -> RawClient {
        stream.set_nodelay(true).expect("nodelay");
        RawClient {
            stream,
            buf: Vec::new(),
            pending: std::collections::VecDeque::new(),
            closed: false,
            name: String::from("client"),
        }
    }

    /// Opens a connection and sends `connect`, then expects CONNACK with
    /// return code 0 and `session_present`.
    pub fn connect_with(addr: SocketAddr, connect: &Connect, session_present: bool) -> RawClient {
        let mut c = RawClient::open(addr);
        c.name = String::from_utf8_lossy(&connect.client_id).into_owned();
        c.send(&connect.build());
        c.expect_connack(0, session_present);
        c
    }

    /// MQTT 3.1.1, clean session, keepalive 60, CONNACK 0 expected.
    pub fn connect(addr: SocketAddr, client_id: &str) -> RawClient {
        RawClient::connect_with(addr, &Connect::new(client_id), false)
    }

    pub fn named(mut self, name: &str) -> RawClient {
        self.name = name.to_string();
        self
    }

    /// Writes all of `bytes`; panics on error.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .set_write_timeout(Some(TIMEOUT))
            .expect("write timeout");
        if let Err(e) = self.stream.write_all(bytes) {
            panic!("{}: write of {} bytes failed: {e}", self.name, bytes.len());
        }
    }

    /// Writes, ignoring errors (for sends after which the broker may
    /// already have closed the connection).
    pub fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.stream.set_write_timeout(Some(TIMEOUT));
        let _ = self.stream.write_all(bytes);
    }

    /// Closes the socket without DISCONNECT (an abnormal end for the broker).
    pub fn drop_connection(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Sends DISCONNECT and closes.
    pub fn disconnect(mut self) {
        self.send_lossy(&disconnect());
        let _ = self.stream.shutdown(Shutdown::Write);
        // Let the broker see DISCONNECT before the close: wait for its EOF.
        let _ = self.try_read(Duration::from_secs(2));
    }

    /// A whole packet from the front of the buffer, if there is one.
    fn parse_buffered(&mut self) -> Option<Packet> {
        let (p, used) = parse_packet(&self.buf, &self.name)?;
        self.buf.drain(..used);
        Some(p)
    }

    /// Reads one whole packet, waiting at most `timeout`.
    pub fn try_read(&mut self, timeout: Duration) -> ReadOutcome {
        let deadline = Instant::now() + timeout;
        if let Some(p) = self.pending.pop_front() {
            return ReadOutcome::Packet(p);
        }
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(p) = self.parse_buffered() {
                return ReadOutcome::Packet(p);
            }
            if self.closed {
                return ReadOutcome::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return ReadOutcome::Timeout;
            }
            let left = (deadline - now).max(Duration::from_millis(1));
            self.stream
                .set_read_timeout(Some(left))
                .expect("read timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.closed = true, // reset: closed by the broker
            }
        }
    }

    /// Reads one packet within `TIMEOUT`; panics on timeout or close.
    pub fn read_packet(&mut self) -> Packet {
        self.read_packet_within(TIMEOUT)
    }

    pub fn read_packet_within(&mut self, timeout: Duration) -> Packet {
        match self.try_read(timeout) {
            ReadOutcome::Packet(p) => p,
            ReadOutcome::Timeout => panic!(
                "{}: no packet from the broker within {timeout:?}",
                self.name
            ),
            ReadOutcome::Closed => panic!(
                "{}: the broker closed the connection while a packet was expected",
                self.name
            ),
        }
    }

    /// Expects the next packet to be exactly `bytes`.
    pub fn expect_bytes(&mut self, bytes: &[u8], what: &str) {
        let p = self.read_packet();
        assert_eq!(
            p.bytes(),
            bytes,
            "{}: expected {what} {:02x?}, got {}",
            self.name,
            bytes,
            p.describe()
        );
    }

    /// Expects CONNACK with this return code and session-present flag,
    /// byte-exact: `20 02 0X RC`.
    pub fn expect_connack(&mut self, rc: u8, session_present: bool) {
        self.expect_bytes(&[0x20, 0x02, session_present as u8, rc], "CONNACK");
    }

    /// Reads the CONNACK and returns (session present, return code).
    pub fn read_connack(&mut self) -> (bool, u8) {
        let p = self.read_packet();
        assert_eq!(
            p.kind(),
            CONNACK,
            "{}: expected CONNACK, got {}",
            self.name,
            p.describe()
        );
        assert_eq!(
            p.body.len(),
            2,
            "{}: CONNACK length: {}",
            self.name,
            p.describe()
        );
        (p.body[0] & 1 == 1, p.body[1])
    }

    /// Expects SUBACK for `pkid` granting exactly `granted`.
    pub fn expect_suback(&mut self, pkid: u16, granted: &[u8]) {
        let mut body = pkid.to_be_bytes().to_vec();
        body.extend_from_slice(granted);
        self.expect_bytes(&packet(0x90, &body), "SUBACK");
    }

    pub fn expect_unsuback(&mut self, pkid: u16) {
        self.expect_bytes(&packet(0xB0, &pkid.to_be_bytes()), "UNSUBACK");
    }
    pub fn expect_puback(&mut self, pkid: u16) {
        self.expect_bytes(&puback(pkid), "PUBACK");
    }
    pub fn expect_pubrec(&mut self, pkid: u16) {
        self.expect_bytes(&pubrec(pkid), "PUBREC");
    }
    pub fn expect_pubrel(&mut self, pkid: u16) {
        self.expect_bytes(&pubrel(pkid), "PUBREL");
    }
    pub fn expect_pubcomp(&mut self, pkid: u16) {
        self.expect_bytes(&pubcomp(pkid), "PUBCOMP");
    }
    pub fn expect_pingresp(&mut self) {
        self.expect_bytes(&[0xD0, 0x00], "PINGRESP");
    }

    /// Reads the next packet, which must be a PUBLISH.
    pub fn expect_publish(&mut self) -> Publish {
        let p = self.read_packet();
        assert_eq!(
            p.kind(),
            PUBLISH,
            "{}: expected PUBLISH, got {}",
            self.name,
            p.describe()
        );
        p.publish()
    }

    /// Reads the next PUBLISH and checks topic, payload, QoS and retain.
    pub fn expect_publish_eq(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: u8,
        retain: bool,
    ) -> Publish {
        let p = self.expect_publish();
        assert_eq!(
            (p.topic.as_str(), p.payload.as_slice(), p.qos, p.retain),
            (topic, payload, qos, retain),
            "{}: PUBLISH (topic, payload, qos, retain) differs; whole packet: {p:?}",
            self.name
        );
        p
    }

    /// Subscribes (one SUBSCRIBE with all filters) and expects a SUBACK
    /// granting the requested QoS for each.
    pub fn subscribe(&mut self, pkid: u16, filters: &[(&str, u8)]) {
        self.send(&subscribe(pkid, filters));
        let granted: Vec<u8> = filters.iter().map(|(_, q)| *q).collect();
        self.expect_suback(pkid, &granted);
    }

    /// Publishes and completes the QoS flow as the sender (PUBACK, or
    /// PUBREC/PUBREL/PUBCOMP). The broker must answer nothing else first.
    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: u8, retain: bool, pkid: u16) {
        self.send(&publish(topic, payload, qos, retain, false, pkid));
        match qos {
            0 => {}
            1 => self.expect_puback(pkid),
            2 => {
                self.expect_pubrec(pkid);
                self.send(&pubrel(pkid));
                self.expect_pubcomp(pkid);
            }
            _ => panic!("QoS {qos}"),
        }
    }

    /// Acknowledges a received PUBLISH as a subscriber should (PUBACK, or
    /// PUBREC, PUBREL expected, PUBCOMP).
    pub fn ack(&mut self, p: &Publish) {
        match (p.qos, p.pkid) {
            (0, _) => {}
            (1, Some(id)) => self.send(&puback(id)),
            (2, Some(id)) => {
                self.send(&pubrec(id));
                // Other packets (the next PUBLISH) may come before our
                // PUBREL: keep them for the following reads.
                let mut ahead = Vec::new();
                loop {
                    let p = self.read_packet();
                    if p.kind() == PUBREL {
                        assert_eq!(
                            p.bytes(),
                            pubrel(id),
                            "{}: PUBREL for another id",
                            self.name
                        );
                        break;
                    }
                    ahead.push(p);
                }
                self.pending.extend(ahead);
                self.send(&pubcomp(id));
            }
            _ => panic!("cannot ack {p:?}"),
        }
    }

    /// Sends PINGREQ and expects PINGRESP: a round trip proving that the
    /// broker has read everything sent before.
    pub fn ping(&mut self) {
        self.send(&pingreq());
        self.expect_pingresp();
    }

    /// Expects no packet for `dur`, with the connection still open.
    pub fn expect_nothing(&mut self, dur: Duration) {
        match self.try_read(dur) {
            ReadOutcome::Timeout => {}
            ReadOutcome::Packet(p) => {
                panic!("{}: expected nothing, got {}", self.name, p.describe())
            }
            ReadOutcome::Closed => panic!(
                "{}: expected nothing, but the broker closed the connection",
                self.name
            ),
        }
    }

    /// Expects the broker to close the connection within `TIMEOUT` without
    /// sending any packet first.
    pub fn expect_closed(&mut self) {
        self.expect_closed_within(TIMEOUT)
    }

    pub fn expect_closed_within(&mut self, timeout: Duration) {
        match self.try_read(timeout) {
            ReadOutcome::Closed => {}
            ReadOutcome::Timeout => panic!(
                "{}: the broker did not close the connection within {timeout:?}",
                self.name
            ),
            ReadOutcome::Packet(p) => panic!(
                "{}: expected the connection to close, got {}",
                self.name,
                p.describe()
            ),
        }
    }

    /// Reads packets until the connection closes, returning them.
    pub fn read_until_closed(&mut self, timeout: Duration) -> Vec<Packet> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_read(left) {
                ReadOutcome::Packet(p) => out.push(p),
                ReadOutcome::Closed => return out,
                ReadOutcome::Timeout => panic!(
                    "{}: the broker did not close the connection within {timeout:?}; got {:?}",
                    self.name,
                    out.iter().map(|p| p.describe()).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Reads every packet that arrives within `dur` (no close allowed).
    pub fn read_for(&mut self, dur: Duration) -> Vec<Packet> {
        let deadline = Instant::now() + dur;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            match self.try_read(left) {
                ReadOutcome::Packet(p) => out.push(p),
                ReadOutcome::Timeout => return out,
                ReadOutcome::Closed => panic!("{}: connection closed while reading", self.name),
            }
        }
    }
}
