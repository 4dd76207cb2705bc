//! The MQTT wire codec: bytes in, [`Packet`] out, and back.
//!
//! This is the first stage of the data path. A client thread appends what it
//! reads from its socket to a buffer and calls [`check`] until a whole packet
//! is present, then [`decode`]s it. Outgoing packets are [`encode`]d into a
//! reusable `Vec<u8>`.
//!
//! The packet structs are version-neutral: MQTT 3.1 (level 3), 3.1.1
//! (level 4) and, later, 5.0 share one tree, and 5.0 adds fields rather than
//! a second set of types. Payloads are copied once into an [`Payload`]
//! (`Arc<[u8]>`) so a fan-out to many subscribers shares one allocation.
//!
//! Nothing in here panics on any input: every malformed byte sequence is a
//! [`DecodeError`].

mod ack;
mod connect;
mod error;
mod header;
mod publish;
mod reader;
mod subscribe;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::topic;
pub use error::DecodeError;
pub use header::{FixedHeader, MAX_REMAINING, PacketType, check};

/// A message body shared by every subscriber it is delivered to.
pub type Payload = Arc<[u8]>;

/// The protocol level from CONNECT; it decides how the other packets of a
/// connection are read and written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// MQTT 3.1, protocol name "MQIsdp".
    V31 = 3,
    /// MQTT 3.1.1, protocol name "MQTT".
    V311 = 4,
    /// MQTT 5.0, protocol name "MQTT".
    V5 = 5,
}

impl Level {
    /// The `pN` of Mosquitto's "New client connected ... (p2, c1, k60)" line.
    pub fn log_number(self) -> u8 {
        match self {
            Level::V31 => 1,
            Level::V311 => 2,
            Level::V5 => 5,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// CONNACK return codes of MQTT 3.1 and 3.1.1 [MQTT-3.2.2.3].
pub mod connack {
    pub const ACCEPTED: u8 = 0;
    pub const BAD_PROTOCOL_VERSION: u8 = 1;
    pub const IDENTIFIER_REJECTED: u8 = 2;
    pub const SERVER_UNAVAILABLE: u8 = 3;
    pub const BAD_USERNAME_OR_PASSWORD: u8 = 4;
    pub const NOT_AUTHORIZED: u8 = 5;
}

/// SUBACK return code for a refused filter [MQTT-3.9.3].
pub const SUBACK_FAILURE: u8 = 0x80;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    pub topic: Arc<str>,
    pub payload: Payload,
    pub qos: QoS,
    pub retain: bool,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Connect {
    pub level: Level,
    pub client_id: String,
    /// "clean session" in 3.1.1, "clean start" in 5.0.
    pub clean: bool,
    pub keep_alive: u16,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
    pub will: Option<Will>,
    /// Mosquitto's bridge bit (0x80 on the protocol level): the client is
    /// another broker's bridge (`try_private`).
    pub bridge: bool,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Connect")
            .field("level", &self.level)
            .field("client_id", &self.client_id)
            .field("clean", &self.clean)
            .field("keep_alive", &self.keep_alive)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|p| p.len()))
            .field("will", &self.will)
            .field("bridge", &self.bridge)
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    /// A [`connack`] return code.
    pub code: u8,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: Arc<str>,
    /// Zero for QoS 0, non-zero otherwise [MQTT-2.3.1-1].
    pub pkid: u16,
    pub payload: Payload,
}

impl Publish {
    /// A retained QoS 0 message, as the broker itself publishes (`$SYS`).
    pub fn retained(topic: &str, payload: &[u8]) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: true,
            topic: Arc::from(topic),
            pkid: 0,
            payload: Arc::from(payload),
        }
    }
}

impl std::fmt::Debug for Publish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publish")
            .field("dup", &self.dup)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("topic", &self.topic)
            .field("pkid", &self.pkid)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeFilter {
    pub filter: String,
    /// The maximum QoS the subscriber asks for.
    pub qos: QoS,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    pub pkid: u16,
    pub filters: Vec<SubscribeFilter>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubAck {
    pub pkid: u16,
    /// One per filter: the granted QoS (0, 1, 2) or [`SUBACK_FAILURE`].
    pub codes: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    pub pkid: u16,
    pub filters: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    Connect(Connect),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(u16),
    PingReq,
    PingResp,
    Disconnect,
}

impl Packet {
    pub fn kind(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect => PacketType::Disconnect,
        }
    }
}

/// Decodes one packet whose fixed header [`check`] returned; `body` is the
/// `h.remaining` bytes after it. `level` is the connection's protocol level
/// (CONNECT carries its own).
pub fn decode(h: &FixedHeader, body: &[u8], level: Level) -> Result<Packet, DecodeError> {
    use PacketType as T;
    if body.len() != h.remaining {
        return Err(DecodeError::Truncated("packet body"));
    }
    let _ = level; // 3.1 and 3.1.1 share every layout but CONNECT's.
    Ok(match h.kind {
        T::Connect => Packet::Connect(connect::decode(body)?),
        T::ConnAck => Packet::ConnAck(connect::decode_connack(body)?),
        T::Publish => Packet::Publish(publish::decode(h, body)?),
        T::PubAck => Packet::PubAck(ack::decode_id(h.kind, body)?),
        T::PubRec => Packet::PubRec(ack::decode_id(h.kind, body)?),
        T::PubRel => Packet::PubRel(ack::decode_id(h.kind, body)?),
        T::PubComp => Packet::PubComp(ack::decode_id(h.kind, body)?),
        T::Subscribe => Packet::Subscribe(subscribe::decode_subscribe(body)?),
        T::SubAck => Packet::SubAck(subscribe::decode_suback(body)?),
        T::Unsubscribe => Packet::Unsubscribe(subscribe::decode_unsubscribe(body)?),
        T::UnsubAck => Packet::UnsubAck(ack::decode_id(h.kind, body)?),
        T::PingReq => {
            ack::decode_empty(h.kind, body)?;
            Packet::PingReq
        }
        T::PingResp => {
            ack::decode_empty(h.kind, body)?;
            Packet::PingResp
        }
        T::Disconnect => {
            ack::decode_empty(h.kind, body)?;
            Packet::Disconnect
        }
        // AUTH exists from MQTT 5 on.
        T::Auth => return Err(DecodeError::ReservedType(T::Auth as u8)),
    })
}

/// Appends the encoding of `p` to `out`. `level` is the connection's
/// protocol level (CONNECT carries its own).
pub fn encode(p: &Packet, level: Level, out: &mut Vec<u8>) {
    let _ = level;
    match p {
        Packet::Connect(c) => connect::encode(c, out),
        Packet::ConnAck(c) => connect::encode_connack(c, out),
        Packet::Publish(m) => publish::encode(m, out),
        Packet::PubAck(id) => ack::encode_id(0x40, *id, out),
        Packet::PubRec(id) => ack::encode_id(0x50, *id, out),
        Packet::PubRel(id) => ack::encode_id(0x62, *id, out),
        Packet::PubComp(id) => ack::encode_id(0x70, *id, out),
        Packet::Subscribe(s) => subscribe::encode_subscribe(s, out),
        Packet::SubAck(s) => subscribe::encode_suback(s, out),
        Packet::Unsubscribe(u) => subscribe::encode_unsubscribe(u, out),
        Packet::UnsubAck(id) => ack::encode_id(0xB0, *id, out),
        Packet::PingReq => ack::encode_empty(0xC0, out),
        Packet::PingResp => ack::encode_empty(0xD0, out),
        Packet::Disconnect => ack::encode_empty(0xE0, out),
    }
}
