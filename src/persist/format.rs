//! The persistence file format: midge's own, versioned, one checksummed
//! record per saved item.
//!
//! ```text
//! header   "MIDGEDB\0" | version u16 | flags u16 (0) | crc32 of the 12 bytes before
//! record   kind u8 | length u32 | body (length bytes) | crc32 of kind, length and body
//! ...
//! end      a record of kind END whose body is the number of records before it (u64)
//! ```
//!
//! Integers are big-endian. Strings are a u16 length and UTF-8 bytes (a
//! topic or client id never exceeds 65,535 bytes [MQTT-1.5.3]); payloads a
//! u32 length and the bytes. A record refers to its session by client id, so
//! a session's record comes before its subscriptions and messages.
//!
//! Decoding never panics and stops at the first damage (bad checksum,
//! truncation, a body that does not parse): what came before it is intact
//! and is returned with the offset and reason of the damage. The end record
//! tells a file cut exactly between two records from a whole one.
//!
//! The journal (`persistence_journal true`) uses the same records after its
//! own header, without an end record: it is appended to while the broker
//! runs, so its end is wherever the last whole record stops.
//!
//! ```text
//! journal  "MIDGEJNL" | version u16 | flags u16 (0) | generation u64 | crc32 of the 20 bytes before
//! ```
//!
//! A snapshot written with the journal on holds a [`Record::JournalGen`]:
//! journals of an older generation are already in it.

use std::fmt;
use std::sync::Arc;

use std::time::{Duration, Instant};

use crate::codec::{PubProps, Publish, QoS};
use crate::session::SubOpts;
use crate::session::inflight::OutState;
use crate::topic;

pub const MAGIC: &[u8; 8] = b"MIDGEDB\0";
/// Bumped on any change a reader of the previous version would misread.
/// Version 2 added the MQTT 5 fields (message properties, session expiry,
/// subscription options), version 3 the subscription identifiers a queued
/// message carries; version 1 and 2 files are still read.
pub const VERSION: u16 = 3;
pub const HEADER_LEN: usize = 16;

const RETAINED: u8 = 1;
const SESSION: u8 = 2;
const SUBSCRIPTION: u8 = 3;
const QUEUED: u8 = 4;
const OUT_SENT: u8 = 5;
const OUT_RELEASED: u8 = 6;
const IN_QOS2: u8 = 7;
const JOURNAL_GEN: u8 = 8;
const SESSION_END: u8 = 9;
const UNSUBSCRIPTION: u8 = 10;
const SENT: u8 = 11;
/// `STEP + Step as u8`: the acknowledgement records.
const STEP: u8 = 12;
const END: u8 = 0xff;

pub const JOURNAL_MAGIC: &[u8; 8] = b"MIDGEJNL";
pub const JOURNAL_HEADER_LEN: usize = 24;

/// One step of a QoS 1/2 flow that changes what a session keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// PUBACK from the subscriber: the QoS 1 message is done.
    Acked = 0,
    /// PUBREC from the subscriber: the QoS 2 message awaits PUBCOMP.
    Received = 1,
    /// PUBCOMP from the subscriber: the QoS 2 message is done.
    Completed = 2,
    /// PUBREL from the publisher: the incoming QoS 2 id is free again.
    Released = 3,
    /// PUBREC with an error reason (MQTT 5): the QoS 2 message is done.
    Refused = 4,
}

/// Who published a retained message (`check_retain_source`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedSource {
    pub client_id: String,
    pub username: Option<String>,
    pub scope: u32,
}

/// One item of a saved state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Retained {
        publish: Publish,
        source: Option<SavedSource>,
    },
    /// A persistent session; `last_id` is the last packet id it handed out,
    /// `expiry` its session expiry interval (u32::MAX: never).
    Session {
        client_id: String,
        username: Option<String>,
        scope: u32,
        last_id: u16,
        expiry: u32,
    },
    Subscription {
        client_id: String,
        filter: String,
        opts: SubOpts,
    },
    /// A message waiting to be sent to an offline session.
    Queued { client_id: String, publish: Publish },
    /// An outgoing QoS 1/2 message awaiting PUBACK/PUBREC, or a released
    /// QoS 2 id awaiting PUBCOMP.
    Outgoing { client_id: String, state: OutState },
    /// An incoming QoS 2 packet id awaiting PUBREL.
    IncomingQos2 { client_id: String, pkid: u16 },
    /// Snapshot only: the first journal generation not in it.
    JournalGen(u64),
    /// Journal: a persistent session and everything it kept are gone.
    SessionEnd { client_id: String },
    /// Journal: a persistent session dropped a subscription.
    Unsubscription { client_id: String, filter: String },
    /// Journal: the first queued message of the session whose topic and
    /// payload have the CRC-32 `check` went out with packet id `pkid`.
    Sent {
        client_id: String,
        pkid: u16,
        check: u32,
    },
    /// Journal: an acknowledgement for packet id `pkid`.
    Progress {
        client_id: String,
        pkid: u16,
        step: Step,
    },
}

/// What [`Record::Sent`] checks: the CRC-32 of a message's topic and payload.
pub fn message_check(p: &Publish) -> u32 {
    let mut c = Crc32::new();
    c.update(p.topic.as_bytes());
    c.update(&[0]);
    c.update(&p.payload);
    c.finish()
}

/// Where and why decoding stopped early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset of the first byte not restored.
    pub offset: usize,
    pub reason: &'static str,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.offset)
    }
}

/// What a file held: every intact record, and the damage if any.
#[derive(Debug, Default)]
pub struct Decoded {
    pub records: Vec<Record>,
    pub damage: Option<Damage>,
    /// Intact records left out: their topic or filter is deeper than the
    /// broker accepts ([`topic::too_deep`]), so they are not rebuilt.
    pub too_deep: usize,
}

/// Builds a file: the header, then records, then [`Encoder::finish`].
pub struct Encoder {
    out: Vec<u8>,
    count: u64,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    pub fn new() -> Encoder {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        Encoder { out, count: 0 }
    }

    pub fn record(&mut self, r: &Record) {
        encode_record(r, &mut self.out);
        self.count += 1;
    }

    /// Number of records so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn finish(mut self) -> Vec<u8> {
        let start = self.out.len();
        self.out.extend_from_slice(&[0; 5]);
        self.out.extend_from_slice(&self.count.to_be_bytes());
        finish_record(&mut self.out, start, END);
        self.out
    }
}

/// Appends one framed record (kind, length, body, CRC-32) to `out`.
pub fn encode_record(r: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 5]);
    let kind = encode_body(r, out);
    finish_record(out, start, kind);
}

fn finish_record(out: &mut Vec<u8>, start: usize, kind: u8) {
    let len = (out.len() - start - 5) as u32;
    out[start] = kind;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// The header of journal generation `generation`.
pub fn journal_header(generation: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(JOURNAL_HEADER_LEN);
    out.extend_from_slice(JOURNAL_MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&generation.to_be_bytes());
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Longer strings cannot come from the network; cut rather than corrupt.
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

/// qos | flags (dup 1, retain 2, properties 4) | pkid u16 | topic |
/// payload, then with flag 4 the MQTT 5 properties: forwarded properties
/// (u32 length and bytes), expiry left in seconds (u32, u32::MAX for
/// none) and a flags byte (1: payload is UTF-8; 2, from version 3: the
/// subscription identifiers follow, a u8 count and a u32 each).
fn put_publish(out: &mut Vec<u8>, p: &Publish) {
    out.push(p.qos as u8);
    let has_props = u8::from(p.props.is_some()) << 2;
    out.push(u8::from(p.dup) | (u8::from(p.retain) << 1) | has_props);
    out.extend_from_slice(&p.pkid.to_be_bytes());
    put_str(out, &p.topic);
    out.extend_from_slice(&(p.payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&p.payload);
    if let Some(props) = &p.props {
        out.extend_from_slice(&(props.forward.len() as u32).to_be_bytes());
        out.extend_from_slice(&props.forward);
        let left = props.remaining(Instant::now()).unwrap_or(u32::MAX);
        out.extend_from_slice(&left.to_be_bytes());
        let ids = &props.sub_ids[..props.sub_ids.len().min(u8::MAX as usize)];
        let has_ids = u8::from(!ids.is_empty()) << 1;
        out.push(u8::from(props.utf8) | has_ids);
        if !ids.is_empty() {
            out.push(ids.len() as u8);
            for id in ids {
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
    }
}

fn encode_body(r: &Record, out: &mut Vec<u8>) -> u8 {
    match r {
        Record::Retained { publish, source } => {
            put_publish(out, publish);
            match source {
                Some(s) => {
                    out.push(1);
                    put_str(out, &s.client_id);
                    put_opt_str(out, s.username.as_deref());
                    out.extend_from_slice(&s.scope.to_be_bytes());
                }
                None => out.push(0),
            }
            RETAINED
        }
        Record::Session {
            client_id,
            username,
            scope,
            last_id,
            expiry,
        } => {
            put_str(out, client_id);
            put_opt_str(out, username.as_deref());
            out.extend_from_slice(&scope.to_be_bytes());
            out.extend_from_slice(&last_id.to_be_bytes());
            out.extend_from_slice(&expiry.to_be_bytes());
            SESSION
        }
        Record::Subscription {
            client_id,
            filter,
            opts,
        } => {
            put_str(out, client_id);
            put_str(out, filter);
            out.push(opts.qos as u8);
            out.push(u8::from(opts.no_local) | (u8::from(opts.retain_as_published) << 1));
            out.extend_from_slice(&opts.sub_id.to_be_bytes());
            SUBSCRIPTION
        }
        Record::Queued { client_id, publish } => {
            put_str(out, client_id);
            put_publish(out, publish);
            QUEUED
        }
        Record::Outgoing { client_id, state } => {
            put_str(out, client_id);
            match state {
                OutState::Sent(p) => {
                    put_publish(out, p);
                    OUT_SENT
                }
                OutState::Released(id) => {
                    out.extend_from_slice(&id.to_be_bytes());
                    OUT_RELEASED
                }
            }
        }
        Record::IncomingQos2 { client_id, pkid } => {
            put_str(out, client_id);
            out.extend_from_slice(&pkid.to_be_bytes());
            IN_QOS2
        }
        Record::JournalGen(g) => {
            out.extend_from_slice(&g.to_be_bytes());
            JOURNAL_GEN
        }
        Record::SessionEnd { client_id } => {
            put_str(out, client_id);
            SESSION_END
        }
        Record::Unsubscription { client_id, filter } => {
            put_str(out, client_id);
            put_str(out, filter);
            UNSUBSCRIPTION
        }
        Record::Sent {
            client_id,
            pkid,
            check,
        } => {
            put_str(out, client_id);
            out.extend_from_slice(&pkid.to_be_bytes());
            out.extend_from_slice(&check.to_be_bytes());
            SENT
        }
        Record::Progress {
            client_id,
            pkid,
            step,
        } => {
            put_str(out, client_id);
            out.extend_from_slice(&pkid.to_be_bytes());
            STEP + *step as u8
        }
    }
}

/// Reads a whole snapshot file's bytes. Never panics.
pub fn decode(bytes: &[u8]) -> Decoded {
    let mut d = Decoded::default();
    if bytes.len() < HEADER_LEN {
        d.damage = Some(Damage {
            offset: 0,
            reason: "file shorter than its header",
        });
        return d;
    }
    let (head, crc) = (&bytes[..12], &bytes[12..16]);
    match check_header(head, crc, MAGIC, "not a midge persistence file") {
        Ok(version) => decode_records(bytes, HEADER_LEN, true, version, &mut d),
        Err(damage) => d.damage = Some(damage),
    }
    d
}

/// A journal file: its generation (None when the header is unusable) and
/// its intact records. Never panics.
pub fn decode_journal(bytes: &[u8]) -> (Option<u64>, Decoded) {
    let mut d = Decoded::default();
    if bytes.len() < JOURNAL_HEADER_LEN {
        d.damage = Some(Damage {
            offset: 0,
            reason: "file shorter than its header",
        });
        return (None, d);
    }
    let (head, crc) = (&bytes[..20], &bytes[20..24]);
    let version = match check_header(head, crc, JOURNAL_MAGIC, "not a midge journal") {
        Ok(v) => v,
        Err(damage) => {
            d.damage = Some(damage);
            return (None, d);
        }
    };
    let mut g = [0; 8];
    g.copy_from_slice(&head[12..20]);
    decode_records(bytes, JOURNAL_HEADER_LEN, false, version, &mut d);
    (Some(u64::from_be_bytes(g)), d)
}

/// Magic, checksum and version of a header; the version when they are
/// good.
fn check_header(
    head: &[u8],
    crc: &[u8],
    magic: &[u8; 8],
    foreign: &'static str,
) -> Result<u16, Damage> {
    let damage = |offset, reason| Err(Damage { offset, reason });
    if &head[..8] != magic {
        return damage(0, foreign);
    }
    if crc32(head).to_be_bytes() != crc {
        return damage(0, "header checksum mismatch");
    }
    let version = u16::from_be_bytes([head[8], head[9]]);
    if !(1..=VERSION).contains(&version) {
        return Err(Damage {
            offset: 8,
            reason: "unsupported file format version",
        });
    }
    Ok(version)
}

/// Records from `pos` to the end; a snapshot (`with_end`) must close with
/// its end record, a journal simply ends.
fn decode_records(bytes: &[u8], mut pos: usize, with_end: bool, version: u16, d: &mut Decoded) {
    let damage = |offset, reason| Some(Damage { offset, reason });
    loop {
        // pos <= bytes.len()
        let rest = &bytes[pos..];
        if rest.is_empty() {
            if with_end {
                d.damage = damage(pos, "file ends without its end record");
            }
            return;
        }
        if rest.len() < 9 {
            d.damage = damage(pos, "truncated record");
            return;
        }
        let kind = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if rest.len() - 9 < len {
            d.damage = damage(pos, "truncated record");
            return;
        }
        let body = &rest[5..5 + len];
        let crc = &rest[5 + len..9 + len];
        if crc32(&rest[..5 + len]).to_be_bytes() != crc {
            d.damage = damage(pos, "record checksum mismatch");
            return;
        }
        if kind == END && with_end {
            let mut r = Reader(body);
            let count = r.u64();
            let read = d.records.len() + d.too_deep;
            if count != Some(read as u64) || !r.0.is_empty() {
                d.damage = damage(pos, "end record does not match the records before it");
            } else if pos + 9 + len != bytes.len() {
                d.damage = damage(pos + 9 + len, "bytes after the end record");
            }
            return;
        }
        match decode_body(kind, body, version) {
            Some(r) if too_deep(&r) => d.too_deep += 1,
            Some(r) => d.records.push(r),
            None => {
                d.damage = damage(pos, "record that does not parse");
                return;
            }
        }
        pos += 9 + len;
    }
}

/// Whether a record holds a topic or filter deeper than the broker accepts
/// (a file from an older midge); an unsubscription takes nothing away.
pub(super) fn too_deep(r: &Record) -> bool {
    let t = match r {
        Record::Retained { publish, .. } | Record::Queued { publish, .. } => &publish.topic,
        Record::Outgoing {
            state: OutState::Sent(p),
            ..
        } => &p.topic,
        Record::Subscription { filter, .. } => filter.as_str(),
        _ => return false,
    };
    topic::too_deep(t)
}

/// A cursor over a record body; every read is checked.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    pub(super) fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Some(u64::from_be_bytes(a))
    }

    fn string(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        std::str::from_utf8(b).ok().map(str::to_string)
    }

    fn opt_string(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.string()?)),
            _ => None,
        }
    }

    fn qos(&mut self) -> Option<QoS> {
        QoS::from_u8(self.u8()?)
    }

    fn publish(&mut self) -> Option<Publish> {
        let qos = self.qos()?;
        let flags = self.u8()?;
        let pkid = self.u16()?;
        // Checked as from the network: the router's trees rely on it.
        let topic = self.string().filter(|t| topic::valid_name(t))?;
        let n = self.u32()? as usize;
        let payload = self.take(n)?;
        let props = if flags & 4 != 0 {
            let n = self.u32()? as usize;
            let forward = self.take(n)?;
            let left = self.u32()?;
            let pflags = self.u8()?;
            let mut sub_ids = Vec::new();
            if pflags & 2 != 0 {
                for _ in 0..self.u8()? {
                    sub_ids.push(self.u32()?);
                }
            }
            let expiry = (left != u32::MAX).then_some(left);
            Some(Arc::new(PubProps {
                sub_ids,
                forward: Arc::from(forward),
                expiry,
                expires_at: expiry
                    .and_then(|e| Instant::now().checked_add(Duration::from_secs(u64::from(e)))),
                utf8: pflags & 1 != 0,
                ..PubProps::default()
            }))
        } else {
            None
        };
        Some(Publish {
            dup: flags & 1 != 0,
            qos,
            retain: flags & 2 != 0,
            topic: Arc::from(topic),
            pkid,
            payload: Arc::from(payload),
            props,
        })
    }
}

fn decode_body(kind: u8, body: &[u8], version: u16) -> Option<Record> {
    // Version 1 had no session expiry (sessions never expired) and no
    // subscription options.
    let v1 = version == 1;
    let mut r = Reader(body);
    let rec = match kind {
        RETAINED => {
            let publish = r.publish()?;
            let source = match r.u8()? {
                0 => None,
                1 => Some(SavedSource {
                    client_id: r.string()?,
                    username: r.opt_string()?,
                    scope: r.u32()?,
                }),
                _ => return None,
            };
            Record::Retained { publish, source }
        }
        SESSION => Record::Session {
            client_id: r.string()?,
            username: r.opt_string()?,
            scope: r.u32()?,
            last_id: r.u16()?,
            expiry: if v1 { u32::MAX } else { r.u32()? },
        },
        SUBSCRIPTION => {
            let client_id = r.string()?;
            let filter = r.string().filter(|f| topic::valid_filter(f))?;
            let qos = r.qos()?;
            let (flags, sub_id) = if v1 { (0, 0) } else { (r.u8()?, r.u32()?) };
            Record::Subscription {
                client_id,
                filter,
                opts: SubOpts {
                    qos,
                    no_local: flags & 1 != 0,
                    retain_as_published: flags & 2 != 0,
                    sub_id,
                },
            }
        }
        QUEUED => Record::Queued {
            client_id: r.string()?,
            publish: r.publish()?,
        },
        OUT_SENT => {
            let client_id = r.string()?;
            let p = r.publish()?;
            if p.qos == QoS::AtMostOnce || p.pkid == 0 {
                return None;
            }
            Record::Outgoing {
                client_id,
                state: OutState::Sent(p),
            }
        }
        OUT_RELEASED => Record::Outgoing {
            client_id: r.string()?,
            state: OutState::Released(r.u16()?),
        },
        IN_QOS2 => Record::IncomingQos2 {
            client_id: r.string()?,
            pkid: r.u16()?,
        },
        JOURNAL_GEN => Record::JournalGen(r.u64()?),
        SESSION_END => Record::SessionEnd {
            client_id: r.string()?,
        },
        UNSUBSCRIPTION => Record::Unsubscription {
            client_id: r.string()?,
            filter: r.string().filter(|f| topic::valid_filter(f))?,
        },
        SENT => Record::Sent {
            client_id: r.string()?,
            pkid: r.u16()?,
            check: r.u32()?,
        },
        k if (STEP..STEP + 5).contains(&k) => Record::Progress {
            client_id: r.string()?,
            pkid: r.u16()?,
            step: [
                Step::Acked,
                Step::Received,
                Step::Completed,
                Step::Released,
                Step::Refused,
            ][(k - STEP) as usize],
        },
        _ => return None,
    };
    r.0.is_empty().then_some(rec)
}

/// CRC-32 (IEEE 802.3, as zlib and PNG), table-driven.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(data);
    c.finish()
}

/// A CRC-32 over several pieces.
struct Crc32(u32);

impl Crc32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };

    fn new() -> Crc32 {
        Crc32(!0)
    }

    fn update(&mut self, data: &[u8]) {
        let mut c = self.0;
        for &b in data {
            c = Self::TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }

    fn finish(&self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests;
