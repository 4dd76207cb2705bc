//! PUBLISH [MQTT-3.3].

use std::sync::Arc;
use std::time::Instant;

use super::props::{Context, Properties, PubProps, id};
use super::reader::{Reader, binary_len, put_binary, put_var_int, var_int_len};
use super::{DecodeError, FixedHeader, Publish, QoS, header, topic};

const DUP: u8 = 0x08;
const RETAIN: u8 = 0x01;

pub(super) fn decode(h: &FixedHeader, body: &[u8], v5: bool) -> Result<Publish, DecodeError> {
    let qos = QoS::from_u8((h.flags >> 1) & 0x03).ok_or(DecodeError::BadQoS)?;
    let dup = h.flags & DUP != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::DupWithQoS0);
    }
    let mut r = Reader::new(body);
    let name = r.string("topic name")?;
    let pkid = if qos == QoS::AtMostOnce { 0 } else { r.pkid()? };
    let props = if v5 {
        let p = Properties::read(&mut r, Context::Publish)?;
        (!p.is_empty()).then(|| PubProps::from_properties(&p, Instant::now()))
    } else {
        None
    };
    // An MQTT 5 topic may be empty when a topic alias stands for it.
    let aliased = props.as_ref().is_some_and(|p| p.topic_alias.is_some());
    // Deeper than Mosquitto's 201 levels: a protocol error, as there.
    if !(topic::valid_name(name) || (aliased && name.is_empty())) || topic::too_deep(name) {
        return Err(DecodeError::BadTopic);
    }
    Ok(Publish {
        dup,
        qos,
        retain: h.flags & RETAIN != 0,
        topic: Arc::from(name),
        pkid,
        payload: Arc::from(r.rest()),
        props: props.map(Arc::new),
    })
}

/// The MQTT 5 property section of an outgoing PUBLISH, in Mosquitto's
/// order: subscription identifiers, the forwarded properties as received,
/// the expiry interval left, then a topic alias.
fn props_len(p: Option<&PubProps>, now: Instant) -> usize {
    let Some(p) = p else { return 0 };
    let mut n = p.forward.len();
    n += p
        .sub_ids
        .iter()
        .map(|&s| 1 + var_int_len(s as usize))
        .sum::<usize>();
    if p.remaining(now).is_some() {
        n += 5;
    }
    if p.topic_alias.is_some() {
        n += 3;
    }
    n
}

fn write_props(p: &PubProps, now: Instant, out: &mut Vec<u8>) {
    for &s in &p.sub_ids {
        out.push(id::SUBSCRIPTION_ID);
        put_var_int(out, s as usize);
    }
    out.extend_from_slice(&p.forward);
    if let Some(left) = p.remaining(now) {
        out.push(id::MESSAGE_EXPIRY);
        out.extend_from_slice(&left.to_be_bytes());
    }
    if let Some(a) = p.topic_alias {
        out.push(id::TOPIC_ALIAS);
        out.extend_from_slice(&a.to_be_bytes());
    }
}

/// The size `encode` gives the whole packet.
pub fn encoded_len(p: &Publish, v5: bool) -> usize {
    let body = body_len(p, v5, Instant::now());
    1 + var_int_len(body) + body
}

fn body_len(p: &Publish, v5: bool, now: Instant) -> usize {
    let has_id = p.qos != QoS::AtMostOnce;
    let mut len = binary_len(p.topic.as_bytes()) + if has_id { 2 } else { 0 } + p.payload.len();
    if v5 {
        let n = props_len(p.props.as_deref(), now);
        len += var_int_len(n) + n;
    }
    len
}

pub(super) fn encode(p: &Publish, v5: bool, out: &mut Vec<u8>) {
    let mut first = 0x30 | ((p.qos as u8) << 1);
    if p.dup && p.qos != QoS::AtMostOnce {
        first |= DUP;
    }
    if p.retain {
        first |= RETAIN;
    }
    let has_id = p.qos != QoS::AtMostOnce;
    let now = Instant::now();
    let len = body_len(p, v5, now);
    out.reserve(len + 5);
    header::write(out, first, len);
    put_binary(out, p.topic.as_bytes());
    if has_id {
        out.extend_from_slice(&p.pkid.to_be_bytes());
    }
    if v5 {
        let props = p.props.as_deref();
        put_var_int(out, props_len(props, now));
        if let Some(props) = props {
            write_props(props, now, out);
        }
    }
    out.extend_from_slice(&p.payload);
}
