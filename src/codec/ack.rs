//! The small packets: PUBACK, PUBREC, PUBREL and PUBCOMP (a packet
//! identifier, and from MQTT 5 on a reason code and properties), PINGREQ
//! and PINGRESP (nothing), DISCONNECT and AUTH (MQTT 5: a reason code and
//! properties).

use super::props::{Context, Properties};
use super::reader::Reader;
use super::{Ack, Auth, DecodeError, Disconnect, PacketType, header};

/// The reason codes each packet may carry [MQTT-3.4.2.1 to 3.15.2.1].
fn valid_reason(kind: PacketType, code: u8) -> bool {
    use PacketType as T;
    match kind {
        T::PubAck | T::PubRec => {
            matches!(
                code,
                0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
            )
        }
        T::PubRel | T::PubComp => matches!(code, 0x00 | 0x92),
        T::Disconnect => {
            matches!(
                code,
                0x00 | 0x04 | 0x80..=0x83 | 0x87 | 0x89 | 0x8B | 0x8D..=0x90 | 0x93..=0xA2
            ) && !matches!(code, 0x91 | 0x92)
        }
        T::Auth => matches!(code, 0x00 | 0x18 | 0x19),
        _ => false,
    }
}

/// Reads the optional reason code and properties that end an MQTT 5 ack,
/// DISCONNECT or AUTH: both may be left out, from the end.
fn reason_and_props(
    r: &mut Reader<'_>,
    kind: PacketType,
    ctx: Context,
) -> Result<(u8, Properties), DecodeError> {
    if r.is_empty() {
        return Ok((0, Properties::default()));
    }
    let code = r.u8("reason code")?;
    if !valid_reason(kind, code) {
        return Err(DecodeError::BadReasonCode(code));
    }
    let props = if r.is_empty() {
        Properties::default()
    } else {
        Properties::read(r, ctx)?
    };
    r.finish(kind)?;
    Ok((code, props))
}

pub(super) fn decode(kind: PacketType, body: &[u8], v5: bool) -> Result<Ack, DecodeError> {
    let mut r = Reader::new(body);
    let pkid = r.pkid()?;
    if !v5 {
        r.finish(kind)?;
        return Ok(Ack::ok(pkid));
    }
    // Reason strings and user properties are checked, then dropped.
    let (reason, _) = reason_and_props(&mut r, kind, Context::Ack)?;
    Ok(Ack { pkid, reason })
}

/// A success is the short 3.1.1 form in MQTT 5 too [MQTT-3.4.2.1], as
/// Mosquitto sends it.
pub(super) fn encode(first: u8, a: &Ack, v5: bool, out: &mut Vec<u8>) {
    let with_reason = v5 && a.reason != 0;
    header::write(out, first, if with_reason { 3 } else { 2 });
    out.extend_from_slice(&a.pkid.to_be_bytes());
    if with_reason {
        out.push(a.reason);
    }
}

pub(super) fn decode_empty(kind: PacketType, body: &[u8]) -> Result<(), DecodeError> {
    Reader::new(body).finish(kind)
}

pub(super) fn encode_empty(first: u8, out: &mut Vec<u8>) {
    header::write(out, first, 0);
}

pub(super) fn decode_disconnect(body: &[u8]) -> Result<Disconnect, DecodeError> {
    let mut r = Reader::new(body);
    let (reason, props) = reason_and_props(&mut r, PacketType::Disconnect, Context::Disconnect)?;
    Ok(Disconnect { reason, props })
}

pub(super) fn decode_auth(body: &[u8]) -> Result<Auth, DecodeError> {
    let mut r = Reader::new(body);
    let (reason, props) = reason_and_props(&mut r, PacketType::Auth, Context::Auth)?;
    Ok(Auth { reason, props })
}

/// DISCONNECT or AUTH in the shortest form that carries them.
pub(super) fn encode_reason(first: u8, reason: u8, props: &Properties, out: &mut Vec<u8>) {
    if props.is_empty() {
        if reason == 0 {
            header::write(out, first, 0);
        } else {
            header::write(out, first, 1);
            out.push(reason);
        }
        return;
    }
    header::write(out, first, 1 + props.len());
    out.push(reason);
    props.write(out);
}
