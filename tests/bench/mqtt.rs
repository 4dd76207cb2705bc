//! The load generator's own MQTT 3.1.1 client: packet builders and a framer,
//! written by hand (not with midge's codec) so that both brokers are driven
//! by exactly the same bytes.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub const CONNACK: u8 = 0x20;
pub const PUBLISH: u8 = 0x30;
pub const PUBACK: u8 = 0x40;
pub const PUBREC: u8 = 0x50;
pub const PUBREL: u8 = 0x62;
pub const PUBCOMP: u8 = 0x70;
pub const SUBACK: u8 = 0x90;

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// CONNECT, MQTT 3.1.1, clean session.
pub fn connect(out: &mut Vec<u8>, client_id: &str, keepalive: u16) {
    let body = 10 + 2 + client_id.len();
    out.push(0x10);
    put_len(out, body);
    put_str(out, b"MQTT");
    out.push(4);
    out.push(0x02);
    out.extend_from_slice(&keepalive.to_be_bytes());
    put_str(out, client_id.as_bytes());
}

pub fn subscribe(out: &mut Vec<u8>, pkid: u16, filter: &str, qos: u8) {
    out.push(0x82);
    put_len(out, 2 + 2 + filter.len() + 1);
    out.extend_from_slice(&pkid.to_be_bytes());
    put_str(out, filter.as_bytes());
    out.push(qos);
}

pub fn publish(out: &mut Vec<u8>, topic: &str, qos: u8, retain: bool, pkid: u16, payload: &[u8]) {
    out.push(PUBLISH | (qos << 1) | u8::from(retain));
    let id = if qos > 0 { 2 } else { 0 };
    put_len(out, 2 + topic.len() + id + payload.len());
    put_str(out, topic.as_bytes());
    if qos > 0 {
        out.extend_from_slice(&pkid.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP.
pub fn ack(out: &mut Vec<u8>, kind: u8, pkid: u16) {
    out.push(kind);
    out.push(2);
    out.extend_from_slice(&pkid.to_be_bytes());
}

/// One received PUBLISH, borrowed from the framer's buffer.
pub struct Msg<'a> {
    pub qos: u8,
    pub pkid: u16,
    pub payload: &'a [u8],
}

/// Splits a PUBLISH body.
pub fn parse_publish(first: u8, body: &[u8]) -> Option<Msg<'_>> {
    let qos = (first >> 1) & 3;
    let tlen = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let mut pos = 2 + tlen;
    let mut pkid = 0;
    if qos > 0 {
        pkid = u16::from_be_bytes([*body.get(pos)?, *body.get(pos + 1)?]);
        pos += 2;
    }
    Some(Msg {
        qos,
        pkid,
        payload: body.get(pos..)?,
    })
}

/// The id carried by a two-byte-body acknowledgement.
pub fn ack_id(body: &[u8]) -> u16 {
    match body {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    }
}

/// Reads from a socket and cuts whole packets out of what arrived.
pub struct Framer {
    buf: Vec<u8>,
    /// Undecoded bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Framer {
    pub fn new(capacity: usize) -> Framer {
        Framer {
            buf: vec![0; capacity.max(4096)],
            start: 0,
            end: 0,
        }
    }

    /// One read(2). Ok(0) means the peer closed; a timeout is WouldBlock
    /// or TimedOut.
    pub fn fill(&mut self, s: &mut TcpStream) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.buf.len() - self.end < self.buf.len() / 4 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // One packet larger than the buffer.
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = s.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Calls `f(first byte, body)` for every whole packet buffered, until
    /// it returns false.
    pub fn drain(&mut self, mut f: impl FnMut(u8, &[u8]) -> bool) {
        loop {
            let avail = &self.buf[self.start..self.end];
            let Some((len, hlen)) = remaining(avail) else {
                return;
            };
            if avail.len() < hlen + len {
                return;
            }
            let more = f(avail[0], &avail[hlen..hlen + len]);
            self.start += hlen + len;
            if !more {
                return;
            }
        }
    }
}

/// (remaining length, fixed header length) when the header is complete.
fn remaining(b: &[u8]) -> Option<(usize, usize)> {
    let mut len = 0usize;
    for i in 0..4 {
        let byte = *b.get(1 + i)?;
        len |= ((byte & 0x7f) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((len, 2 + i));
        }
    }
    None
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads until as many packets of the given kinds as `kinds` lists have
/// arrived; what follows them stays in the framer.
pub fn expect(s: &mut TcpStream, fr: &mut Framer, kinds: &[u8]) -> io::Result<()> {
    let mut seen = 0;
    while seen < kinds.len() {
        fr.drain(|first, _| {
            if kinds.contains(&(first & 0xf0)) {
                seen += 1;
            }
            seen < kinds.len()
        });
        if seen >= kinds.len() {
            break;
        }
        if fr.fill(s)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "broker closed the connection",
            ));
        }
    }
    Ok(())
}

/// The keep-alive of `client`'s connections, in seconds: longer than any
/// scenario, and not 0, which rumqttd refuses.
pub const KEEPALIVE: u16 = 3600;

/// Connects and waits for CONNACK; subscribes too when a filter is given.
/// `rbuf` is the framer's starting buffer size.
pub fn client(
    port: u16,
    id: &str,
    sub: Option<(&str, u8)>,
    rbuf: usize,
) -> io::Result<(TcpStream, Framer)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut out = Vec::with_capacity(128);
    connect(&mut out, id, KEEPALIVE);
    let mut kinds = vec![CONNACK];
    if let Some((f, q)) = sub {
        subscribe(&mut out, 1, f, q);
        kinds.push(SUBACK);
    }
    s.write_all(&out)?;
    let mut fr = Framer::new(rbuf);
    expect(&mut s, &mut fr, &kinds)?;
    Ok((s, fr))
}

/// Publishes `n` QoS 1 messages with `window` of them in flight, each
/// written by `put(out, i, packet id)`; returns when all are acknowledged.
pub fn publish_acked(
    s: &mut TcpStream,
    fr: &mut Framer,
    n: usize,
    window: usize,
    mut put: impl FnMut(&mut Vec<u8>, usize, u16),
) -> io::Result<()> {
    let (mut sent, mut acked) = (0usize, 0usize);
    let mut buf = Vec::with_capacity(64 * 1024);
    while acked < n {
        buf.clear();
        while sent < n && sent - acked < window {
            put(&mut buf, sent, (sent % 65000 + 1) as u16);
            sent += 1;
        }
        s.write_all(&buf)?;
        if fr.fill(s)? == 0 {
            return Err(io::Error::other("broker closed the connection"));
        }
        fr.drain(|first, _| {
            if first & 0xf0 == PUBACK {
                acked += 1;
            }
            true
        });
    }
    Ok(())
}

/// Takes PUBLISHes, acknowledging those of QoS 1 and calling `f(first
/// byte, message)` for each, until `n` arrived, the broker closed the
/// connection or nothing came for `quiet`. Returns how many arrived.
pub fn take(
    s: &mut TcpStream,
    fr: &mut Framer,
    n: usize,
    quiet: Duration,
    mut f: impl FnMut(u8, &Msg),
) -> io::Result<usize> {
    s.set_read_timeout(Some(quiet))?;
    let mut got = 0;
    let mut acks = Vec::new();
    loop {
        acks.clear();
        fr.drain(|first, body| {
            if first & 0xf0 == PUBLISH {
                if let Some(m) = parse_publish(first, body) {
                    got += 1;
                    if m.qos == 1 {
                        ack(&mut acks, PUBACK, m.pkid);
                    }
                    f(first, &m);
                }
            }
            true
        });
        s.write_all(&acks)?;
        if got >= n {
            return Ok(got);
        }
        match fr.fill(s) {
            Ok(0) => return Ok(got),
            Ok(_) => {}
            Err(e) if is_timeout(&e) => return Ok(got),
            Err(e) => return Err(e),
        }
    }
}
