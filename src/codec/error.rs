//! Why a byte sequence is not a valid MQTT packet.

use std::fmt;

use super::PacketType;

/// A malformed or forbidden packet. Each variant closes the connection it
/// came from; none of them is ever a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The remaining length runs past four bytes [MQTT-2.2.3].
    MalformedLength,
    /// The fixed header announces more than the broker accepts.
    PacketTooLarge { size: usize, max: usize },
    /// Packet type 0, or 15 (AUTH) before MQTT 5.
    ReservedType(u8),
    /// Fixed-header flag bits that the packet type fixes [MQTT-2.2.2-1].
    BadFlags(PacketType),
    /// The body ends inside the named field.
    Truncated(&'static str),
    /// Bytes left over after the last field of the packet.
    Trailing(PacketType),
    /// A string that is not well-formed UTF-8, or holds U+0000 [MQTT-1.5.3].
    BadUtf8,
    /// A protocol name other than "MQTT" or "MQIsdp" [MQTT-3.1.2-1].
    ProtocolName,
    /// A protocol level this broker does not speak, or one that does not go
    /// with the protocol name ("MQIsdp" is level 3, "MQTT" 4 or 5).
    ProtocolLevel(u8),
    /// The reserved bit of the CONNECT flags is set [MQTT-3.1.2-3].
    ConnectReserved,
    /// Will QoS or retain set without the will flag [MQTT-3.1.2-11, -15].
    WillFlags,
    /// A password without a user name [MQTT-3.1.2-22].
    PasswordWithoutUsername,
    /// QoS 3 [MQTT-3.3.1-4, 3.1.2-14, 3.8.3-4].
    BadQoS,
    /// Reserved bits set in a CONNACK or a SUBSCRIBE option byte
    /// [MQTT-3.2.2-1, 3.8.3-4].
    ReservedBits(PacketType),
    /// DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2].
    DupWithQoS0,
    /// Packet identifier 0 where one is required [MQTT-2.3.1-1].
    ZeroPacketId,
    /// Packet identifier 0 in a SUBSCRIBE or UNSUBSCRIBE, which Mosquitto
    /// answers as malformed (a PUBLISH's as a protocol error).
    ZeroPacketIdIn(PacketType),
    /// An empty topic name, or one with a wildcard [MQTT-3.3.2-2].
    BadTopic,
    /// A topic filter that misuses `+` or `#` [MQTT-4.7.1].
    BadFilter,
    /// SUBSCRIBE or UNSUBSCRIBE without a filter [MQTT-3.8.3-3, 3.10.3-2].
    NoFilters,
    /// A SUBACK return code other than 0, 1, 2 or 0x80.
    BadReturnCode(u8),
    /// MQTT 5: a reason code the packet may not carry.
    BadReasonCode(u8),
    /// MQTT 5: an unknown property, or one the packet may not carry.
    BadProperty(u8),
    /// MQTT 5: a property given twice that may appear once.
    DuplicateProperty(u8),
    /// MQTT 5: a property value the specification forbids (a receive
    /// maximum of 0, a flag other than 0 or 1, ...).
    PropertyValue(u8),
    /// MQTT 5: No Local on a shared subscription [MQTT-3.8.3-4].
    SharedNoLocal,
}

impl DecodeError {
    /// The CONNACK return code a client gets before it is closed, for the
    /// errors where MQTT (and Mosquitto) answer before closing.
    pub fn connack_code(&self) -> Option<u8> {
        match self {
            DecodeError::ProtocolLevel(_) => Some(super::connack::BAD_PROTOCOL_VERSION),
            _ => None,
        }
    }

    /// The reason code of the DISCONNECT an MQTT 5 client gets before it
    /// is closed for this error: 0x81 (malformed) as Mosquitto sends for
    /// nearly everything, invalid topic filters included.
    pub fn reason_code(&self) -> u8 {
        use super::reason;
        match self {
            DecodeError::PacketTooLarge { .. } => reason::PACKET_TOO_LARGE,
            // Mosquitto: a PUBLISH's empty or wildcard topic is a protocol
            // error (its test 13-malformed-publish-v5).
            DecodeError::DuplicateProperty(_)
            | DecodeError::ZeroPacketId
            | DecodeError::BadTopic
            | DecodeError::SharedNoLocal => reason::PROTOCOL_ERROR,
            _ => reason::MALFORMED_PACKET,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::MalformedLength => f.write_str("malformed remaining length"),
            DecodeError::PacketTooLarge { size, max } => {
                write!(f, "packet of {size} bytes exceeds the limit of {max}")
            }
            DecodeError::ReservedType(t) => write!(f, "reserved packet type {t}"),
            DecodeError::BadFlags(t) => write!(f, "invalid fixed header flags in {t}"),
            DecodeError::Truncated(field) => write!(f, "packet ends inside the {field}"),
            DecodeError::Trailing(t) => write!(f, "unexpected bytes after the end of {t}"),
            DecodeError::BadUtf8 => f.write_str("malformed UTF-8 string"),
            DecodeError::ProtocolName => f.write_str("invalid protocol name"),
            DecodeError::ProtocolLevel(l) => write!(f, "unsupported protocol version {l}"),
            DecodeError::ConnectReserved => f.write_str("reserved CONNECT flag set"),
            DecodeError::WillFlags => f.write_str("will QoS or retain set without a will"),
            DecodeError::PasswordWithoutUsername => f.write_str("password without a user name"),
            DecodeError::BadQoS => f.write_str("invalid QoS"),
            DecodeError::ReservedBits(t) => write!(f, "reserved bits set in {t}"),
            DecodeError::DupWithQoS0 => f.write_str("DUP set on a QoS 0 PUBLISH"),
            DecodeError::ZeroPacketId => f.write_str("packet identifier 0"),
            DecodeError::ZeroPacketIdIn(t) => write!(f, "packet identifier 0 in {t}"),
            DecodeError::BadTopic => f.write_str("invalid topic name"),
            DecodeError::BadFilter => f.write_str("invalid topic filter"),
            DecodeError::NoFilters => f.write_str("no topic filter"),
            DecodeError::BadReturnCode(c) => write!(f, "invalid SUBACK return code {c}"),
            DecodeError::BadReasonCode(c) => write!(f, "invalid reason code 0x{c:02X}"),
            DecodeError::BadProperty(p) => write!(f, "property 0x{p:02X} not allowed here"),
            DecodeError::DuplicateProperty(p) => write!(f, "property 0x{p:02X} given twice"),
            DecodeError::PropertyValue(p) => write!(f, "invalid value of property 0x{p:02X}"),
            DecodeError::SharedNoLocal => f.write_str("No Local on a shared subscription"),
        }
    }
}

impl std::error::Error for DecodeError {}
