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
//! only in the CLIENT chunk. Older versions (Mosquitto 1.5 and before) are
//! refused, never guessed at.
//!
//! Decoding never panics: every length is checked against the bytes of its
//! chunk, and nothing is allocated from a length field beyond the bytes
//! present. It stops at the first chunk that does not parse; what came
//! before it is returned with the damage, as [`super::format::decode`] does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::format::{Damage, Decoded, Reader, Record, SavedSource};
use crate::client::inflight::OutState;
use crate::codec::{FixedHeader, Level, Packet, PacketType, PubProps, Publish, QoS};
use crate::router::SubOpts;
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

/// Whether db format `version` is read.
pub fn supported(version: u32) -> bool {
    version == 5 || version == 6
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
    expired_sessions: Vec<String>,
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
        read.decoded.damage = damage(
            0,
            if (2..=4).contains(&version) {
                "a db format version of Mosquitto 1.5 or older, which midge does not read"
            } else {
                "a db format version midge does not know"
            },
        );
        return read;
    }
    let mut st = State {
        version,
        now,
        stored: HashMap::new(),
        retained: Vec::new(),
        clients: Vec::new(),
        by_id: HashMap::new(),
        expired_sessions: Vec::new(),
        expired: 0,
        skipped: 0,
    };
    let mut pos = HEADER_LEN;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < 8 {
            read.decoded.damage = damage(pos, "truncated chunk header");
            break;
        }
        let kind = be32(&rest[..4]);
        let len = be32(&rest[4..8]) as usize;
        if rest.len() - 8 < len {
            read.decoded.damage = damage(pos, "truncated chunk");
            break;
        }
        if let Err(reason) = chunk(&mut st, kind, &rest[8..8 + len]) {
            read.decoded.damage = damage(pos, reason);
            break;
        }
        pos += 8 + len;
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
    read
}

type Parsed = Result<(), &'static str>;

fn chunk(st: &mut State, kind: u32, body: &[u8]) -> Parsed {
    match kind {
        MSG_STORE => msg_store(st, body),
        CLIENT_MSG => client_msg(st, body),
        RETAIN => {
            let id = le64(body.get(..8).ok_or("truncated retain chunk")?);
            match st.stored.get(&id) {
                // The broker's own: midge publishes its `$SYS` afresh.
                Some(m) if m.publish.topic.starts_with("$SYS") => st.skipped += 1,
                Some(m) => st.retained.push(Record::Retained {
                    publish: Publish {
                        retain: true,
                        ..m.publish.clone()
                    },
                    source: m.source.clone(),
                }),
                // Expired, as in Mosquitto.
                None => st.skipped += 1,
            }
            Ok(())
        }
        SUB => sub(st, body),
        CLIENT => client(st, body),
        // The configuration holds nothing midge keeps.
        CFG => Ok(()),
        // An unknown chunk is skipped, as Mosquitto skips it.
        _ => Ok(()),
    }
}

fn msg_store(st: &mut State, body: &[u8]) -> Parsed {
    let mut r = Reader(body);
    let f = r.take(MSG_STORE_FIXED).ok_or("truncated message chunk")?;
    let store_id = le64(&f[..8]);
    let expiry_time = le64(&f[8..16]) as i64;
    let payload_len = be32(&f[16..20]) as usize;
    let id_len = be16(&f[22..24]);
    let user_len = be16(&f[24..26]);
    let topic_len = be16(&f[26..28]);
    let qos = QoS::from_u8(f[30]).ok_or("message with an invalid QoS")?;
    let source_id = r
        .take(usize::from(id_len))
        .ok_or("truncated message chunk")?;
    let source_user = r
        .take(usize::from(user_len))
        .ok_or("truncated message chunk")?;
    let topic = take_text(&mut r, topic_len).ok_or("message with a bad topic")?;
    if !topic::valid_name(topic) {
        return Err("message with an invalid topic");
    }
    let payload = r.take(payload_len).ok_or("truncated message payload")?;
    let mut props = properties(topic, r.0).ok_or("message with bad properties")?;
    if expiry_time > 0 {
        let left = expiry_time.saturating_sub(st.now);
        let Ok(left) = u32::try_from(left) else {
            st.expired += 1;
            return Ok(());
        };
        if left == 0 {
            st.expired += 1;
            return Ok(());
        }
        let p = props.get_or_insert_with(PubProps::default);
        p.expiry = Some(left);
        p.expires_at = Instant::now().checked_add(Duration::from_secs(u64::from(left)));
    }
    // Only for `check_retain_source`: a source that is not text is none.
    let source = text(source_id)
        .filter(|id| !id.is_empty())
        .map(|id| SavedSource {
            client_id: id.to_string(),
            username: text(source_user)
                .filter(|u| !u.is_empty())
                .map(str::to_string),
            scope: 0,
        });
    let publish = Publish {
        dup: false,
        qos,
        retain: f[31] != 0,
        topic: Arc::from(topic),
        pkid: 0,
        payload: Arc::from(payload),
        props: props.map(Arc::new),
    };
    st.stored.insert(store_id, Stored { publish, source });
    Ok(())
}

fn client_msg(st: &mut State, body: &[u8]) -> Parsed {
    let mut r = Reader(body);
    let f = r
        .take(CLIENT_MSG_FIXED)
        .ok_or("truncated client message chunk")?;
    let store_id = le64(&f[..8]);
    let mid = be16(&f[8..10]);
    let qos = QoS::from_u8(f[12]).ok_or("client message with an invalid QoS")?;
    let (state, retain_dup, direction) = (f[13], f[14], f[15]);
    let id = take_text(&mut r, be16(&f[10..12])).ok_or("client message with a bad client id")?;
    let sub_id = properties("-", r.0)
        .ok_or("client message with bad properties")?
        .and_then(|p| p.sub_ids.first().copied());
    let id = id.to_string();
    if direction != DIRECTION_OUT {
        // An incoming QoS 2 message waiting for PUBREL: midge keeps the
        // packet id, so the client's PUBREL completes. Mosquitto would
        // deliver the message then; midge delivered at PUBLISH, so it is
        // not delivered (docs/PERSISTENCE.md).
        if state == WAIT_FOR_PUBREL && mid != 0 {
            let pkid = mid;
            st.client(id.clone()).outgoing.push(Record::IncomingQos2 {
                client_id: id,
                pkid,
            });
        } else {
            st.skipped += 1;
        }
        return Ok(());
    }
    let Some(m) = st.stored.get(&store_id) else {
        // Expired, or never stored: Mosquitto skips it too.
        st.skipped += 1;
        return Ok(());
    };
    let mut publish = Publish {
        qos,
        retain: retain_dup & 0xf0 != 0,
        dup: false,
        pkid: 0,
        ..m.publish.clone()
    };
    if sub_id.is_some() {
        let mut p = publish.props.as_deref().cloned().unwrap_or_default();
        p.sub_ids = sub_id.into_iter().collect();
        publish.props = Some(Arc::new(p));
    }
    let c = st.client(id.clone());
    let sent = qos != QoS::AtMostOnce && mid != 0;
    match state {
        WAIT_FOR_PUBACK | WAIT_FOR_PUBREC if sent => {
            publish.pkid = mid;
            publish.dup = retain_dup & 0x0f != 0;
            c.outgoing.push(Record::Outgoing {
                client_id: id,
                state: OutState::Sent(publish),
            });
        }
        RESEND_PUBREL | WAIT_FOR_PUBCOMP if sent => c.outgoing.push(Record::Outgoing {
            client_id: id,
            state: OutState::Released(mid),
        }),
        // Queued, or in flight but not sent yet: sent on resume.
        _ => c.queued.push(Record::Queued {
            client_id: id,
            publish,
        }),
    }
    Ok(())
}

fn sub(st: &mut State, body: &[u8]) -> Parsed {
    let mut r = Reader(body);
    let f = r.take(SUB_FIXED).ok_or("truncated subscription chunk")?;
    let sub_id = be32(&f[..4]);
    let qos = QoS::from_u8(f[8] & 0x03).ok_or("subscription with an invalid QoS")?;
    let options = f[9];
    let id = take_text(&mut r, be16(&f[4..6])).ok_or("subscription with a bad client id")?;
    let filter = take_text(&mut r, be16(&f[6..8])).ok_or("subscription with a bad filter")?;
    if !topic::valid_filter(filter) {
        st.skipped += 1;
        return Ok(());
    }
    let (id, filter) = (id.to_string(), filter.to_string());
    st.client(id.clone()).subs.push(Record::Subscription {
        client_id: id,
        filter,
        opts: SubOpts {
            qos,
            no_local: (f[8] | options) & 0x04 != 0,
            retain_as_published: (f[8] | options) & 0x08 != 0,
            // Mosquitto keeps identifiers 1 to 268,435,455.
            sub_id: sub_id.min(0x0fff_ffff),
        },
    });
    Ok(())
}

fn client(st: &mut State, body: &[u8]) -> Parsed {
    let head = body
        .get(..CLIENT_V5_FIXED)
        .ok_or("truncated client chunk")?;
    let expiry_time = le64(&head[..8]) as i64;
    let interval = be32(&head[8..12]);
    let last_mid = be16(&head[12..14]);
    let id_len = be16(&head[14..16]);
    let (fixed, user_len) = if st.version == 5 {
        (CLIENT_V5_FIXED, 0)
    } else {
        let more = body.get(16..20).ok_or("truncated client chunk")?;
        let user_len = be16(&more[2..4]);
        // The padding is whatever the chunk length leaves.
        let strings = usize::from(id_len) + usize::from(user_len);
        let fixed = CLIENT_V6_FIXED
            .into_iter()
            .find(|&n| body.len() == n + strings)
            .ok_or("client chunk whose length does not add up")?;
        (fixed, user_len)
    };
    let mut r = Reader(&body[fixed.min(body.len())..]);
    let id = take_text(&mut r, id_len).ok_or("client with a bad client id")?;
    // Mosquitto 2.0.11 can save a client without a username with the
    // length and bytes left over from the client saved before it: a
    // username that is not text is taken as none.
    let user = r
        .take(usize::from(user_len))
        .ok_or("truncated client chunk")?;
    let user = text(user).filter(|u| !u.is_empty());
    if id.is_empty() {
        st.skipped += 1;
        return Ok(());
    }
    let mut expiry = interval;
    if interval != u32::MAX && expiry_time > 0 {
        match u32::try_from(expiry_time.saturating_sub(st.now)) {
            Ok(left) if left > 0 => expiry = expiry.min(left),
            _ => {
                st.expired += 1;
                st.expired_sessions.push(id.to_string());
                return Ok(());
            }
        }
    }
    st.client(id.to_string()).session = Some(Record::Session {
        client_id: id.to_string(),
        username: user.map(str::to_string),
        scope: 0,
        last_id: last_mid,
        expiry,
    });
    Ok(())
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

/// `n` bytes of [`text`] from `r`.
fn take_text<'a>(r: &mut Reader<'a>, n: u16) -> Option<&'a str> {
    text(r.take(usize::from(n))?)
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
