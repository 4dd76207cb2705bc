//! A cursor over a packet body. Every read checks the length first, so a
//! short or lying packet is a [`DecodeError`], never an out-of-range index.

use super::{DecodeError, PacketType};

pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(field));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A variable byte integer: at most four bytes [MQTT-1.5.5].
    pub fn var_int(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let mut n = 0u32;
        for i in 0..4 {
            let b = self.u8(field)?;
            n |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(DecodeError::MalformedLength)
    }

    /// A packet identifier, which is never 0 [MQTT-2.3.1-1].
    pub fn pkid(&mut self) -> Result<u16, DecodeError> {
        match self.u16("packet identifier")? {
            0 => Err(DecodeError::ZeroPacketId),
            id => Ok(id),
        }
    }

    /// Two-byte length, then that many bytes [MQTT-1.5.3].
    pub fn binary(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u16(field)?;
        self.take(usize::from(n), field)
    }

    /// A length-prefixed UTF-8 string without U+0000 [MQTT-1.5.3-1, -2].
    pub fn string(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let b = self.binary(field)?;
        let s = std::str::from_utf8(b).map_err(|_| DecodeError::BadUtf8)?;
        if s.contains('\0') {
            return Err(DecodeError::BadUtf8);
        }
        Ok(s)
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// The end of a packet: nothing may be left over.
    pub fn finish(&self, kind: PacketType) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(kind))
        }
    }
}

/// Appends a length-prefixed field. Longer inputs are cut at 65,535 bytes;
/// everything the broker encodes came from a decoded field, so none is.
pub(super) fn put_binary(out: &mut Vec<u8>, b: &[u8]) {
    let b = &b[..b.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

/// The encoded size of a length-prefixed field.
pub(super) fn binary_len(b: &[u8]) -> usize {
    2 + b.len().min(usize::from(u16::MAX))
}

/// Appends a variable byte integer; values beyond four bytes are cut to
/// the largest one (nothing the codec encodes is that large).
pub(super) fn put_var_int(out: &mut Vec<u8>, n: usize) {
    let mut n = n.min(super::MAX_REMAINING);
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

/// The encoded size of a variable byte integer.
pub(super) fn var_int_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}
