//! Mosquitto's persistence file (`mosquitto.db`), read so that a board
//! switching from Mosquitto keeps its retained messages and persistent
//! sessions. Written from the file layout; nothing here writes one.
//!
//! ```text
//! header  magic (15 bytes: 00 B5 00 "mosquitto db") | crc u32 (unused) | db version u32
//! chunk   type u32 | length u32 | body (length bytes)
//! ```
//!
//! Lengths, counts and most fields are big-endian. The 64-bit fields (store
//! ids, absolute expiry times in Unix seconds) are in the writer's byte
//! order, little-endian on every board midge is built for. Each body starts
//! with a fixed part that Mosquitto writes as a C struct, padding included:
//!
//! ```text
//! 1 CFG        last db id u64 | shutdown u8 | dbid size u8 | padding
//! 2 MSG_STORE  store id u64 | expiry time i64 | payload len u32 | source mid u16 |
//!              source id len u16 | source username len u16 | topic len u16 |
//!              source port u16 | qos u8 | retain u8   (32 bytes), then the source
//!              id, source username, topic, payload, and MQTT 5 properties
//!              (variable length, then properties) to the end of the chunk
//! 3 CLIENT_MSG store id u64 | mid u16 | client id len u16 | qos u8 | state u8 |
//!              retain << 4 | dup u8 | direction u8 (16 bytes), client id, then
//!              properties (the subscription identifier) to the end
//! 4 RETAIN     store id u64
//! 5 SUB        identifier u32 | client id len u16 | topic len u16 | qos u8 |
//!              options u8 | padding (12 bytes), client id, filter
//! 6 CLIENT     session expiry time i64 | session expiry interval u32 | last mid u16 |
//!              client id len u16, then in version 6 only listener port u16 |
//!              username len u16 | padding; client id, username
//! ```
//!
//! Version 6 is Mosquitto 2.0 and later; version 5 (Mosquitto 1.6) differs
//! only in the CLIENT chunk. Versions 2 to 4 (Mosquitto 1.5 and before,
//! MQTT 3.1.1 only) write field after field: see [`v234`]. Other versions
//! are refused, never guessed at.
//!
//! Decoding never panics: every length is checked against the bytes of its
//! chunk, and nothing is allocated from a length field beyond the bytes
//! present. It stops at the first chunk that does not parse; what came
//! before it is returned with the damage, as [`super::format::decode`] does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::format::{Damage, Decoded, Reader, Record, SavedSource};
use crate::codec::{FixedHeader, Level, Packet, PacketType, PubProps, Publish, QoS};
use crate::session::SubOpts;
use crate::session::inflight::OutState;
use crate::topic;

/// The first bytes of every Mosquitto persistence file.
pub const MAGIC: [u8; 15] = *b"\x00\xB5\x00mosquitto db";
const HEADER_LEN: usize = 23;

const CFG: u32 = 1;
const MSG_STORE: u32 = 2;
const CLIENT_MSG: u32 = 3;
const RETAIN: u32 = 4;
const SUB: u32 = 5;
const CLIENT: u32 = 6;

const MSG_STORE_FIXED: usize = 32;
const CLIENT_MSG_FIXED: usize = 16;
const SUB_FIXED: usize = 12;
const CLIENT_V5_FIXED: usize = 16;
/// 20 bytes, padded to 24 where a 64-bit integer is 8-aligned (every
/// Debian architecture but i386, where it is 20).
const CLIENT_V6_FIXED: [usize; 2] = [24, 20];

/// Mosquitto's `mosq_ms_*` message states that midge keeps apart.
const WAIT_FOR_PUBACK: u8 = 3;
const WAIT_FOR_PUBREC: u8 = 5;
const RESEND_PUBREL: u8 = 6;
const WAIT_FOR_PUBREL: u8 = 7;
const WAIT_FOR_PUBCOMP: u8 = 9;
/// `mosq_md_out`: a message to the client (`mosq_md_in` is 0).
const DIRECTION_OUT: u8 = 1;

/// Whether `bytes` start like a Mosquitto persistence file (a file cut
/// inside the magic counts, from its third byte on).
pub fn is_mosquitto(bytes: &[u8]) -> bool {
    let n = bytes.len().min(MAGIC.len());
    n >= 3 && bytes[..n] == MAGIC[..n]
}

/// What a Mosquitto file gave back.
#[derive(Debug, Default)]
pub struct Read {
    /// The db format version, when the header holds one.
    pub version: Option<u32>,
    /// The records, in the order the midge model needs (each session's
    /// record before its subscriptions and messages), and the damage.
    pub decoded: Decoded,
    /// Messages and sessions whose expiry time had passed: dropped, as
    /// Mosquitto drops them at start.
    pub expired: usize,
    /// Items midge cannot hold (an invalid filter, a message the file does
    /// not store): skipped.
    pub skipped: usize,
}

impl Read {
    /// Whether the file gave nothing back at all: its header is cut or its
    /// version is not read.
    pub fn refused(&self) -> bool {
        self.decoded.damage.as_ref().is_some_and(|d| d.offset == 0)
    }
}

/// Whether db format `version` is read: 2 to 4 (Mosquitto 1.5 and
/// before), 5 (1.6) and 6 (2.x).
pub fn supported(version: u32) -> bool {
    (2..=6).contains(&version)
}

/// A stored message (`MSG_STORE`).
struct Stored {
    publish: Publish,
    source: Option<SavedSource>,
}

/// A persistent session and what the file holds for it, in file order.
#[derive(Default)]
struct Client {
    session: Option<Record>,
    subs: Vec<Record>,
    outgoing: Vec<Record>,
    queued: Vec<Record>,
}

/// The file as it is read.
struct State {
    version: u32,
    /// Unix seconds at start: the file's expiry times are absolute.
    now: i64,
    stored: HashMap<u64, Stored>,
    retained: Vec<Record>,
    clients: Vec<(String, Client)>,
    by_id: HashMap<String, usize>,
    expired_sessions: HashSet<String>,
    expired: usize,
    skipped: usize,
}

impl State {
    fn client(&mut self, id: String) -> &mut Client {
        let at = match self.by_id.get(&id) {
            Some(&i) => i,
            None => {
                self.by_id.insert(id.clone(), self.clients.len());
                self.clients.push((id, Client::default()));
                self.clients.len() - 1
            }
        };
        &mut self.clients[at].1
    }
}

/// Reads a whole Mosquitto file; `now` is the Unix time in seconds. Never
/// panics.
pub fn decode(bytes: &[u8], now: i64) -> Read {
    let mut read = Read::default();
    let damage = |offset, reason| Some(Damage { offset, reason });
    if bytes.len() < HEADER_LEN || !is_mosquitto(bytes) {
        read.decoded.damage = damage(0, "file shorter than its header");
        return read;
    }
    let version = be32(&bytes[19..23]);
    read.version = Some(version);
    if !supported(version) {
        read.decoded.damage = damage(0, "a db format version midge does not know");
        return read;
    }
    let mut st = State {
        version,
        now,
        stored: HashMap::new(),
        retained: Vec::new(),
        clients: Vec::new(),
        by_id: HashMap::new(),
        expired_sessions: HashSet::new(),
        expired: 0,
        skipped: 0,
    };
    // Versions 2 to 4: type u16 | length u32.
    let head = if version < 5 { 6 } else { 8 };
    let mut pos = HEADER_LEN;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < head {
            read.decoded.damage = damage(pos, "truncated chunk header");
            break;
        }
        let (kind, len) = if head == 6 {
            (u32::from(be16(&rest[..2])), be32(&rest[2..6]) as usize)
        } else {
            (be32(&rest[..4]), be32(&rest[4..8]) as usize)
        };
        if rest.len() - head < len {
            read.decoded.damage = damage(pos, "truncated chunk");
            break;
        }
        if let Err(reason) = chunk(&mut st, kind, &rest[head..head + len]) {
            read.decoded.damage = damage(pos, reason);
            break;
        }
        pos += head + len;
    }
    read.expired = st.expired;
    read.skipped = st.skipped;
    let records = &mut read.decoded.records;
    records.append(&mut st.retained);
    for (id, c) in st.clients {
        match c.session {
            Some(s) => records.push(s),
            // Mosquitto saves no subscription or message for a session it
            // does not save; one whose session expired goes with it.
            None if st.expired_sessions.contains(&id) => continue,
            None => {}
        }
        records.extend(c.subs);
        records.extend(c.outgoing);
        records.extend(c.queued);
    }
    // Deeper than the broker accepts (Mosquitto refuses them too): left
    // out, as from midge's own files.
    let before = records.len();
    records.retain(|r| !super::format::too_deep(r));
    read.decoded.too_deep = before - records.len();
    read
}

type Parsed = Result<(), &'static str>;

/// A stored message, as a chunk of any version gives it.
struct Msg<'a> {
    store_id: u64,
    /// Unix seconds; 0 for none.
    expiry_time: i64,
    qos: u8,
    retain: bool,
    source_id: &'a [u8],
    source_user: &'a [u8],
    topic: &'a [u8],
    payload: &'a [u8],
    /// The MQTT 5 property block (versions 5 and 6).
    props: &'a [u8],
}

/// A message to or from a client, queued or in flight.
struct ClientMsg<'a> {
    store_id: u64,
    mid: u16,
    client_id: &'a [u8],
    qos: u8,
    state: u8,
    retain: bool,
    dup: bool,
    direction: u8,
    /// The MQTT 5 property block (the subscription identifier).
    props: &'a [u8],
}

/// A subscription; `options` holds the MQTT 5 option bits.
struct Sub<'a> {
    client_id: &'a [u8],
    filter: &'a [u8],
    qos: u8,
    options: u8,
    /// 0 for none.
    sub_id: u32,
}

/// A persistent session.
struct Session<'a> {
    client_id: &'a [u8],
    /// Empty for none.
    username: &'a [u8],
    last_mid: u16,
    /// Unix seconds when it expires; 0 for none.
    expiry_time: i64,
    interval: u32,
}

fn chunk(st: &mut State, kind: u32, body: &[u8]) -> Parsed {
    let old = st.version < 5;
    match kind {
        MSG_STORE if old => st.store(v234::msg_store(body, st.version)?),
        MSG_STORE => st.store(msg_store(body)?),
        CLIENT_MSG if old => st.client_msg(v234::client_msg(body)?),
        CLIENT_MSG => st.client_msg(client_msg(body)?),
        RETAIN => st.retain(body),
        SUB if old => st.sub(v234::sub(body)?),
        SUB => st.sub(sub(body)?),
        CLIENT if old => st.session(v234::client(body)?),
        CLIENT => st.session(client(body, st.version)?),
        // The configuration holds nothing midge keeps.
        CFG => Ok(()),
        // An unknown chunk is skipped, as Mosquitto skips it.
        _ => Ok(()),
    }
}

fn msg_store(body: &[u8]) -> Result<Msg<'_>, &'static str> {
    let truncated = "truncated message chunk";
    let mut r = Reader(body);
    let f = r.take(MSG_STORE_FIXED).ok_or(truncated)?;
    let mut field = |at: usize| r.take(usize::from(be16(&f[at..at + 2]))).ok_or(truncated);
    let (source_id, source_user, topic) = (field(22)?, field(24)?, field(26)?);
    let payload = r.take(be32(&f[16..20]) as usize).ok_or(truncated)?;
    Ok(Msg {
        store_id: le64(&f[..8]),
        expiry_time: le64(&f[8..16]) as i64,
        qos: f[30],
        retain: f[31] != 0,
        source_id,
        source_user,
        topic,
        payload,
        props: r.0,
    })
}

fn client_msg(body: &[u8]) -> Result<ClientMsg<'_>, &'static str> {
    let truncated = "truncated client message chunk";
    let mut r = Reader(body);
    let f = r.take(CLIENT_MSG_FIXED).ok_or(truncated)?;
    let client_id = r.take(usize::from(be16(&f[10..12]))).ok_or(truncated)?;
    Ok(ClientMsg {
        store_id: le64(&f[..8]),
        mid: be16(&f[8..10]),
        client_id,
        qos: f[12],
        state: f[13],
        retain: f[14] & 0xf0 != 0,
        dup: f[14] & 0x0f != 0,
        direction: f[15],
        props: r.0,
    })
}

fn sub(body: &[u8]) -> Result<Sub<'_>, &'static str> {
    let truncated = "truncated subscription chunk";
    let mut r = Reader(body);
    let f = r.take(SUB_FIXED).ok_or(truncated)?;
    let client_id = r.take(usize::from(be16(&f[4..6]))).ok_or(truncated)?;
    let filter = r.take(usize::from(be16(&f[6..8]))).ok_or(truncated)?;
    Ok(Sub {
        client_id,
        filter,
        qos: f[8] & 0x03,
        options: f[8] | f[9],
        sub_id: be32(&f[..4]),
    })
}

fn client(body: &[u8], version: u32) -> Result<Session<'_>, &'static str> {
    let truncated = "truncated client chunk";
    let head = body.get(..CLIENT_V5_FIXED).ok_or(truncated)?;
    let id_len = usize::from(be16(&head[14..16]));
    let (fixed, user_len) = if version == 5 {
        (CLIENT_V5_FIXED, 0)
    } else {
        let more = body.get(16..20).ok_or(truncated)?;
        let user_len = usize::from(be16(&more[2..4]));
        // The padding is whatever the chunk length leaves.
        let fixed = CLIENT_V6_FIXED
            .into_iter()
            .find(|&n| body.len() == n + id_len + user_len)
            .ok_or("client chunk whose length does not add up")?;
        (fixed, user_len)
    };
    let mut r = Reader(body.get(fixed..).ok_or(truncated)?);
    Ok(Session {
        client_id: r.take(id_len).ok_or(truncated)?,
        username: r.take(user_len).ok_or(truncated)?,
        last_mid: be16(&head[12..14]),
        expiry_time: le64(&head[..8]) as i64,
        interval: be32(&head[8..12]),
    })
}

impl State {
    /// Seconds left until `expiry_time`; None when it has passed (or is
    /// beyond what MQTT can say, as Mosquitto reads it).
    fn left(&self, expiry_time: i64) -> Option<u32> {
        u32::try_from(expiry_time.saturating_sub(self.now))
            .ok()
            .filter(|&left| left > 0)
    }

    fn store(&mut self, m: Msg<'_>) -> Parsed {
        let qos = QoS::from_u8(m.qos).ok_or("message with an invalid QoS")?;
        let topic = text(m.topic)
            .filter(|t| topic::valid_name(t))
            .ok_or("message with an invalid topic")?;
        let mut props = properties(topic, m.props).ok_or("message with bad properties")?;
        if m.expiry_time > 0 {
            let Some(left) = self.left(m.expiry_time) else {
                self.expired += 1;
                return Ok(());
            };
            let p = props.get_or_insert_with(PubProps::default);
            p.expiry = Some(left);
            p.expires_at = Instant::now().checked_add(Duration::from_secs(u64::from(left)));
        }
        // Only for `check_retain_source`: a source that is not text is none.
        let source = text(m.source_id)
            .filter(|id| !id.is_empty())
            .map(|id| SavedSource {
                client_id: id.to_string(),
                username: text(m.source_user)
                    .filter(|u| !u.is_empty())
                    .map(str::to_string),
                scope: 0,
            });
        let publish = Publish {
            dup: false,
            qos,
            retain: m.retain,
            topic: Arc::from(topic),
            pkid: 0,
            payload: Arc::from(m.payload),
            props: props.map(Arc::new),
        };
        self.stored.insert(m.store_id, Stored { publish, source });
        Ok(())
    }

    fn retain(&mut self, body: &[u8]) -> Parsed {
        let id = le64(body.get(..8).ok_or("truncated retain chunk")?);
        match self.stored.get(&id) {
            // The broker's own: midge publishes its `$SYS` afresh.
            Some(m) if m.publish.topic.starts_with("$SYS") => self.skipped += 1,
            Some(m) => self.retained.push(Record::Retained {
                publish: Publish {
                    retain: true,
                    ..m.publish.clone()
                },
                source: m.source.clone(),
            }),
            // Expired, as in Mosquitto.
            None => self.skipped += 1,
        }
        Ok(())
    }

    fn client_msg(&mut self, m: ClientMsg<'_>) -> Parsed {
        let qos = QoS::from_u8(m.qos).ok_or("client message with an invalid QoS")?;
        let id = text(m.client_id).ok_or("client message with a bad client id")?;
        let sub_id = properties("-", m.props)
            .ok_or("client message with bad properties")?
            .and_then(|p| p.sub_ids.first().copied());
        let id = id.to_string();
        if m.direction != DIRECTION_OUT {
            // An incoming QoS 2 message waiting for PUBREL: midge keeps the
            // packet id, so the client's PUBREL completes. Mosquitto would
            // deliver the message then; midge delivered at PUBLISH, so it
            // is not delivered (docs/PERSISTENCE.md).
            if m.state == WAIT_FOR_PUBREL && m.mid != 0 {
                let pkid = m.mid;
                self.client(id.clone()).outgoing.push(Record::IncomingQos2 {
                    client_id: id,
                    pkid,
                });
            } else {
                self.skipped += 1;
            }
            return Ok(());
        }
        let Some(stored) = self.stored.get(&m.store_id) else {
            // Expired, or never stored: Mosquitto skips it too.
            self.skipped += 1;
            return Ok(());
        };
        let mut publish = Publish {
            qos,
            retain: m.retain,
            dup: false,
            pkid: 0,
            ..stored.publish.clone()
        };
        if sub_id.is_some() {
            let mut p = publish.props.as_deref().cloned().unwrap_or_default();
            p.sub_ids = sub_id.into_iter().collect();
            publish.props = Some(Arc::new(p));
        }
        let c = self.client(id.clone());
        let sent = qos != QoS::AtMostOnce && m.mid != 0;
        match m.state {
            WAIT_FOR_PUBACK | WAIT_FOR_PUBREC if sent => {
                publish.pkid = m.mid;
                publish.dup = m.dup;
                c.outgoing.push(Record::Outgoing {
                    client_id: id,
                    state: OutState::Sent(publish),
                });
            }
            RESEND_PUBREL | WAIT_FOR_PUBCOMP if sent => c.outgoing.push(Record::Outgoing {
                client_id: id,
                state: OutState::Released(m.mid),
            }),
            // Queued, or in flight but not sent yet: sent on resume.
            _ => c.queued.push(Record::Queued {
                client_id: id,
                publish,
            }),
        }
        Ok(())
    }

    fn sub(&mut self, s: Sub<'_>) -> Parsed {
        let qos = QoS::from_u8(s.qos).ok_or("subscription with an invalid QoS")?;
        let id = text(s.client_id).ok_or("subscription with a bad client id")?;
        let filter = text(s.filter).ok_or("subscription with a bad filter")?;
        if !topic::valid_filter(filter) {
            self.skipped += 1;
            return Ok(());
        }
        let (id, filter) = (id.to_string(), filter.to_string());
        self.client(id.clone()).subs.push(Record::Subscription {
            client_id: id,
            filter,
            opts: SubOpts {
                qos,
                no_local: s.options & 0x04 != 0,
                retain_as_published: s.options & 0x08 != 0,
                // Mosquitto keeps identifiers 1 to 268,435,455.
                sub_id: s.sub_id.min(0x0fff_ffff),
            },
        });
        Ok(())
    }

    fn session(&mut self, s: Session<'_>) -> Parsed {
        let id = text(s.client_id).ok_or("client with a bad client id")?;
        if id.is_empty() {
            self.skipped += 1;
            return Ok(());
        }
        let mut expiry = s.interval;
        if s.interval != u32::MAX && s.expiry_time > 0 {
            match self.left(s.expiry_time) {
                Some(left) => expiry = expiry.min(left),
                None => {
                    self.expired += 1;
                    self.expired_sessions.insert(id.to_string());
                    return Ok(());
                }
            }
        }
        // Mosquitto 2.0.11 can save a client without a username with the
        // length and bytes left over from the client saved before it: a
        // username that is not text is taken as none.
        let username = text(s.username)
            .filter(|u| !u.is_empty())
            .map(str::to_string);
        self.client(id.to_string()).session = Some(Record::Session {
            client_id: id.to_string(),
            username,
            scope: 0,
            last_id: s.last_mid,
            expiry,
        });
        Ok(())
    }
}

/// A stored MQTT 5 property list (variable length, then the properties),
/// checked as a PUBLISH's from the network; `None` when it does not parse,
/// `Some(None)` when it is empty. The expiry interval and topic alias are
/// not forwarded properties: the file's expiry time stands for the first.
fn properties(topic: &str, block: &[u8]) -> Option<Option<PubProps>> {
    if block.is_empty() {
        return Some(None);
    }
    // A QoS 0 PUBLISH whose body is the topic and the property block.
    let mut body = Vec::with_capacity(2 + topic.len() + block.len());
    body.extend_from_slice(&u16::try_from(topic.len()).ok()?.to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(block);
    let h = FixedHeader {
        kind: PacketType::Publish,
        flags: 0,
        header_len: 2,
        remaining: body.len(),
    };
    let Ok(Packet::Publish(p)) = crate::codec::decode(&h, &body, Level::V5) else {
        return None;
    };
    // Whatever follows the properties would be read as the payload.
    if !p.payload.is_empty() {
        return None;
    }
    Some(p.props.map(|p| PubProps {
        expiry: None,
        expires_at: None,
        topic_alias: None,
        ..(*p).clone()
    }))
}

/// UTF-8 with no NUL (an MQTT string's rule).
fn text(b: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(b).ok()?;
    (!s.contains('\0')).then_some(s)
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests;
mod v234;
