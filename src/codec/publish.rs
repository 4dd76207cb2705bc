//! PUBLISH [MQTT-3.3].

use std::sync::Arc;

use super::reader::{Reader, binary_len, put_binary};
use super::{DecodeError, FixedHeader, Publish, QoS, header, topic};

const DUP: u8 = 0x08;
const RETAIN: u8 = 0x01;

pub(super) fn decode(h: &FixedHeader, body: &[u8]) -> Result<Publish, DecodeError> {
    let qos = QoS::from_u8((h.flags >> 1) & 0x03).ok_or(DecodeError::BadQoS)?;
    let dup = h.flags & DUP != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::DupWithQoS0);
    }
    let mut r = Reader::new(body);
    let name = r.string("topic name")?;
    if !topic::valid_name(name) {
        return Err(DecodeError::BadTopic);
    }
    let pkid = if qos == QoS::AtMostOnce { 0 } else { r.pkid()? };
    Ok(Publish {
        dup,
        qos,
        retain: h.flags & RETAIN != 0,
        topic: Arc::from(name),
        pkid,
        payload: Arc::from(r.rest()),
    })
}

pub(super) fn encode(p: &Publish, out: &mut Vec<u8>) {
    let mut first = 0x30 | ((p.qos as u8) << 1);
    if p.dup && p.qos != QoS::AtMostOnce {
        first |= DUP;
    }
    if p.retain {
        first |= RETAIN;
    }
    let has_id = p.qos != QoS::AtMostOnce;
    let len = binary_len(p.topic.as_bytes()) + if has_id { 2 } else { 0 } + p.payload.len();
    out.reserve(len + 5);
    header::write(out, first, len);
    put_binary(out, p.topic.as_bytes());
    if has_id {
        out.extend_from_slice(&p.pkid.to_be_bytes());
    }
    out.extend_from_slice(&p.payload);
}
