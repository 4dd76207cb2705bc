//! The fixed header: packet type, flags and remaining length.
//!
//! [`check`] looks only at the fixed header, so a packet that would be too
//! large is refused before its body is buffered (Mosquitto's packet__read).

use std::fmt;

use super::DecodeError;

/// The largest remaining length four bytes can express [MQTT-2.2.3].
pub const MAX_REMAINING: usize = 268_435_455;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketType {
    Connect = 1,
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    PingReq,
    PingResp,
    Disconnect,
    /// MQTT 5 only.
    Auth,
}

impl PacketType {
    pub fn from_nibble(n: u8) -> Option<PacketType> {
        use PacketType::*;
        Some(match n {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }

    /// The flag bits this type requires, or None where they carry data (PUBLISH).
    fn fixed_flags(self) -> Option<u8> {
        match self {
            PacketType::Publish => None,
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => Some(0x02),
            _ => Some(0),
        }
    }

    pub fn name(self) -> &'static str {
        use PacketType::*;
        match self {
            Connect => "CONNECT",
            ConnAck => "CONNACK",
            Publish => "PUBLISH",
            PubAck => "PUBACK",
            PubRec => "PUBREC",
            PubRel => "PUBREL",
            PubComp => "PUBCOMP",
            Subscribe => "SUBSCRIBE",
            SubAck => "SUBACK",
            Unsubscribe => "UNSUBSCRIBE",
            UnsubAck => "UNSUBACK",
            PingReq => "PINGREQ",
            PingResp => "PINGRESP",
            Disconnect => "DISCONNECT",
            Auth => "AUTH",
        }
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed fixed header. The packet occupies `total_len()` bytes from the
/// start of the buffer it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedHeader {
    pub kind: PacketType,
    /// The low nibble of the first byte.
    pub flags: u8,
    /// Bytes of the first byte plus the remaining-length field (2 to 5).
    pub header_len: usize,
    /// Bytes after the fixed header.
    pub remaining: usize,
}

impl FixedHeader {
    pub fn total_len(&self) -> usize {
        self.header_len + self.remaining
    }
}

/// The flags of a PUBREL with DUP set, as MQTT 3.1 sends a repeated one.
pub const PUBREL_DUP_FLAGS: u8 = 0x0A;

/// Reads the fixed header at the start of `buf`. Ok(None) means more bytes
/// are needed to know the packet's length. A packet longer than `max` bytes
/// in total is an error as soon as its length is known.
pub fn check(buf: &[u8], max: usize) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let nibble = first >> 4;
    let kind = PacketType::from_nibble(nibble).ok_or(DecodeError::ReservedType(nibble))?;
    let flags = first & 0x0F;
    if let Some(want) = kind.fixed_flags() {
        // MQTT 3.1 sets DUP on a PUBREL sent again (flags 0x0A); `decode`,
        // which knows the protocol level, refuses it from later levels.
        let v31_dup = kind == PacketType::PubRel && flags == PUBREL_DUP_FLAGS;
        if flags != want && !v31_dup {
            return Err(DecodeError::BadFlags(kind));
        }
    }
    let mut remaining = 0usize;
    let mut shift = 0;
    for (i, &b) in buf[1..].iter().enumerate() {
        remaining |= usize::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            let h = FixedHeader {
                kind,
                flags,
                header_len: i + 2,
                remaining,
            };
            if h.total_len() > max {
                return Err(DecodeError::PacketTooLarge {
                    size: h.total_len(),
                    max,
                });
            }
            return Ok(Some(h));
        }
        if i == 3 {
            return Err(DecodeError::MalformedLength);
        }
        shift += 7;
    }
    Ok(None)
}

/// Appends a fixed header for a body of `len` bytes. Lengths beyond
/// [`MAX_REMAINING`] cannot be expressed; callers never build such packets.
pub(super) fn write(out: &mut Vec<u8>, first: u8, len: usize) {
    out.push(first);
    super::reader::put_var_int(out, len);
}
