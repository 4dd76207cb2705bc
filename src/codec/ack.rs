//! The packets that are only a packet identifier (PUBACK, PUBREC, PUBREL,
//! PUBCOMP, UNSUBACK) or nothing at all (PINGREQ, PINGRESP, DISCONNECT).

use super::reader::Reader;
use super::{DecodeError, PacketType, header};

pub(super) fn decode_id(kind: PacketType, body: &[u8]) -> Result<u16, DecodeError> {
    let mut r = Reader::new(body);
    let id = r.pkid()?;
    r.finish(kind)?;
    Ok(id)
}

pub(super) fn encode_id(first: u8, id: u16, out: &mut Vec<u8>) {
    header::write(out, first, 2);
    out.extend_from_slice(&id.to_be_bytes());
}

pub(super) fn decode_empty(kind: PacketType, body: &[u8]) -> Result<(), DecodeError> {
    Reader::new(body).finish(kind)
}

pub(super) fn encode_empty(first: u8, out: &mut Vec<u8>) {
    header::write(out, first, 0);
}
