//! The MQTT wire codec: bytes in, [`Packet`] out, and back.
//!
//! This is the first stage of the data path. A client thread appends what it
//! reads from its socket to a buffer and calls [`check`] until a whole packet
//! is present, then [`decode`]s it. Outgoing packets are [`encode`]d into a
//! reusable `Vec<u8>`.
//!
//! The packet structs are version-neutral: MQTT 3.1 (level 3), 3.1.1
//! (level 4) and 5.0 share one tree, and 5.0 adds fields (properties,
//! reason codes) rather than a second set of types. Those fields are empty
//! for the older levels and are neither read nor written there. Payloads are copied once into an [`Payload`]
//! (`Arc<[u8]>`) so a fan-out to many subscribers shares one allocation.
//!
//! Nothing in here panics on any input: every malformed byte sequence is a
//! [`DecodeError`].

mod ack;
mod connect;
mod error;
mod header;
pub mod props;
mod publish;
mod reader;
mod subscribe;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::topic;
pub use error::DecodeError;
pub use header::{FixedHeader, MAX_REMAINING, PacketType, check};
pub use props::{Properties, PubProps, Value};

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
    /// MQTT 5 will properties, the will delay interval among them.
    pub props: Option<Arc<PubProps>>,
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
    /// MQTT 5 CONNECT properties (session expiry, receive maximum, ...).
    pub props: Properties,
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
            .field("props", &self.props)
            .field("bridge", &self.bridge)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    /// A [`connack`] return code (3.x) or a [`reason`] code (5.0).
    pub code: u8,
    /// MQTT 5 CONNACK properties.
    pub props: Properties,
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
    /// MQTT 5 message properties; None when there are none.
    pub props: Option<Arc<PubProps>>,
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
            props: None,
        }
    }

    /// Whether the message's expiry interval has run out at `now`.
    pub fn expired(&self, now: std::time::Instant) -> bool {
        self.props.as_ref().is_some_and(|p| p.expired(now))
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
            .field("props", &self.props)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeFilter {
    pub filter: String,
    /// The maximum QoS the subscriber asks for.
    pub qos: QoS,
    /// MQTT 5: not sent the messages it publishes itself.
    pub no_local: bool,
    /// MQTT 5: messages keep the retain flag they were published with.
    pub retain_as_published: bool,
    /// MQTT 5: 0 send retained messages, 1 only for a new subscription,
    /// 2 never.
    pub retain_handling: u8,
}

impl SubscribeFilter {
    /// A filter with the options of MQTT 3.1.1.
    pub fn new(filter: &str, qos: QoS) -> SubscribeFilter {
        SubscribeFilter {
            filter: filter.to_string(),
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    pub pkid: u16,
    pub filters: Vec<SubscribeFilter>,
    /// MQTT 5 subscription identifier.
    pub sub_id: Option<u32>,
    /// MQTT 5 user properties.
    pub props: Properties,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubAck {
    pub pkid: u16,
    /// One per filter: the granted QoS (0, 1, 2) or [`SUBACK_FAILURE`]
    /// (3.1.1), or a [`reason`] code (5.0).
    pub codes: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    pub pkid: u16,
    pub filters: Vec<String>,
}

/// UNSUBACK: MQTT 5 adds a reason code per filter; empty before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsubAck {
    pub pkid: u16,
    pub codes: Vec<u8>,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP. The reason code is 0 (success) for
/// every 3.x packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub pkid: u16,
    pub reason: u8,
}

impl Ack {
    pub fn ok(pkid: u16) -> Ack {
        Ack { pkid, reason: 0 }
    }
}

/// DISCONNECT; MQTT 5 adds a reason code and properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Disconnect {
    pub reason: u8,
    pub props: Properties,
}

impl Disconnect {
    pub fn with(reason: u8) -> Disconnect {
        Disconnect {
            reason,
            props: Properties::default(),
        }
    }
}

/// AUTH (MQTT 5 only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    pub reason: u8,
    pub props: Properties,
}

/// MQTT 5 reason codes [MQTT-2.4].
pub mod reason {
    pub const SUCCESS: u8 = 0x00;
    pub const GRANTED_QOS1: u8 = 0x01;
    pub const GRANTED_QOS2: u8 = 0x02;
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub const UNSPECIFIED: u8 = 0x80;
    pub const MALFORMED_PACKET: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const IMPLEMENTATION_SPECIFIC: u8 = 0x83;
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    pub const CLIENT_ID_NOT_VALID: u8 = 0x85;
    pub const BAD_USERNAME_OR_PASSWORD: u8 = 0x86;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    pub const SERVER_BUSY: u8 = 0x89;
    pub const BANNED: u8 = 0x8A;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const PACKET_ID_IN_USE: u8 = 0x91;
    pub const PACKET_ID_NOT_FOUND: u8 = 0x92;
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    pub const RETAIN_NOT_SUPPORTED: u8 = 0x9A;
    pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
    pub const SUBSCRIPTION_IDS_NOT_SUPPORTED: u8 = 0xA1;
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0xA2;

    /// The text Mosquitto's tools print for a reason code.
    pub fn text(code: u8) -> &'static str {
        match code {
            SUCCESS => "Success",
            GRANTED_QOS1 => "Granted QoS 1",
            GRANTED_QOS2 => "Granted QoS 2",
            DISCONNECT_WITH_WILL => "Disconnect with Will Message",
            NO_MATCHING_SUBSCRIBERS => "No matching subscribers",
            NO_SUBSCRIPTION_EXISTED => "No subscription existed",
            UNSPECIFIED => "Unspecified error",
            MALFORMED_PACKET => "Malformed Packet",
            PROTOCOL_ERROR => "Protocol Error",
            IMPLEMENTATION_SPECIFIC => "Implementation specific error",
            UNSUPPORTED_PROTOCOL_VERSION => "Unsupported Protocol Version",
            CLIENT_ID_NOT_VALID => "Client Identifier not valid",
            BAD_USERNAME_OR_PASSWORD => "Bad User Name or Password",
            NOT_AUTHORIZED => "Not authorized",
            SERVER_UNAVAILABLE => "Server unavailable",
            SERVER_BUSY => "Server busy",
            BANNED => "Banned",
            SERVER_SHUTTING_DOWN => "Server shutting down",
            BAD_AUTHENTICATION_METHOD => "Bad authentication method",
            KEEP_ALIVE_TIMEOUT => "Keep Alive timeout",
            SESSION_TAKEN_OVER => "Session taken over",
            TOPIC_FILTER_INVALID => "Topic Filter invalid",
            TOPIC_NAME_INVALID => "Topic Name invalid",
            PACKET_ID_IN_USE => "Packet Identifier in use",
            PACKET_ID_NOT_FOUND => "Packet Identifier not found",
            RECEIVE_MAXIMUM_EXCEEDED => "Receive Maximum exceeded",
            TOPIC_ALIAS_INVALID => "Topic Alias invalid",
            PACKET_TOO_LARGE => "Packet too large",
            QUOTA_EXCEEDED => "Quota exceeded",
            PAYLOAD_FORMAT_INVALID => "Payload format invalid",
            RETAIN_NOT_SUPPORTED => "Retain not supported",
            QOS_NOT_SUPPORTED => "QoS not supported",
            SHARED_SUBSCRIPTIONS_NOT_SUPPORTED => "Shared Subscriptions not supported",
            SUBSCRIPTION_IDS_NOT_SUPPORTED => "Subscription identifiers not supported",
            WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED => "Wildcard Subscriptions not supported",
            _ => "Unknown reason",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    Connect(Connect),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
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
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}

/// The size of a PUBLISH once encoded for a connection of this level.
pub fn publish_len(p: &Publish, v5: bool) -> usize {
    publish::encoded_len(p, v5)
}

/// Decodes one packet whose fixed header [`check`] returned; `body` is the
/// `h.remaining` bytes after it. `level` is the connection's protocol level
/// (CONNECT carries its own).
pub fn decode(h: &FixedHeader, body: &[u8], level: Level) -> Result<Packet, DecodeError> {
    use PacketType as T;
    if body.len() != h.remaining {
        return Err(DecodeError::Truncated("packet body"));
    }
    let v5 = level == Level::V5;
    Ok(match h.kind {
        T::Connect => Packet::Connect(connect::decode(body)?),
        T::ConnAck => Packet::ConnAck(connect::decode_connack(body, v5)?),
        T::Publish => Packet::Publish(publish::decode(h, body, v5)?),
        T::PubAck => Packet::PubAck(ack::decode(h.kind, body, v5)?),
        T::PubRec => Packet::PubRec(ack::decode(h.kind, body, v5)?),
        T::PubRel if h.flags == header::PUBREL_DUP_FLAGS && level != Level::V31 => {
            return Err(DecodeError::BadFlags(h.kind));
        }
        T::PubRel => Packet::PubRel(ack::decode(h.kind, body, v5)?),
        T::PubComp => Packet::PubComp(ack::decode(h.kind, body, v5)?),
        T::Subscribe => Packet::Subscribe(subscribe::decode_subscribe(body, v5)?),
        T::SubAck => Packet::SubAck(subscribe::decode_suback(body, v5)?),
        T::Unsubscribe => Packet::Unsubscribe(subscribe::decode_unsubscribe(body, v5)?),
        T::UnsubAck => Packet::UnsubAck(subscribe::decode_unsuback(body, v5)?),
        T::PingReq => {
            ack::decode_empty(h.kind, body)?;
            Packet::PingReq
        }
        T::PingResp => {
            ack::decode_empty(h.kind, body)?;
            Packet::PingResp
        }
        T::Disconnect if v5 => Packet::Disconnect(ack::decode_disconnect(body)?),
        T::Disconnect => {
            ack::decode_empty(h.kind, body)?;
            Packet::Disconnect(Disconnect::default())
        }
        T::Auth if v5 => Packet::Auth(ack::decode_auth(body)?),
        // AUTH exists from MQTT 5 on.
        T::Auth => return Err(DecodeError::ReservedType(T::Auth as u8)),
    })
}

/// Appends the encoding of `p` to `out`. `level` is the connection's
/// protocol level (CONNECT carries its own): MQTT 5 fields are written for
/// level 5 only, so a message from a 5.0 client reaches a 3.1.1 one
/// without its properties.
pub fn encode(p: &Packet, level: Level, out: &mut Vec<u8>) {
    let v5 = level == Level::V5;
    match p {
        Packet::Connect(c) => connect::encode(c, out),
        Packet::ConnAck(c) => connect::encode_connack(c, v5, out),
        Packet::Publish(m) => publish::encode(m, v5, out),
        Packet::PubAck(a) => ack::encode(0x40, a, v5, out),
        Packet::PubRec(a) => ack::encode(0x50, a, v5, out),
        Packet::PubRel(a) => ack::encode(0x62, a, v5, out),
        Packet::PubComp(a) => ack::encode(0x70, a, v5, out),
        Packet::Subscribe(s) => subscribe::encode_subscribe(s, v5, out),
        Packet::SubAck(s) => subscribe::encode_suback(s, v5, out),
        Packet::Unsubscribe(u) => subscribe::encode_unsubscribe(u, v5, out),
        Packet::UnsubAck(u) => subscribe::encode_unsuback(u, v5, out),
        Packet::PingReq => ack::encode_empty(0xC0, out),
        Packet::PingResp => ack::encode_empty(0xD0, out),
        Packet::Disconnect(d) if v5 => ack::encode_reason(0xE0, d.reason, &d.props, out),
        Packet::Disconnect(_) => ack::encode_empty(0xE0, out),
        Packet::Auth(a) => ack::encode_reason(0xF0, a.reason, &a.props, out),
    }
}
