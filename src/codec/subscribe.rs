//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK [MQTT-3.8 to 3.11].

use super::props::{Context, Properties, Value, id};
use super::reader::{Reader, binary_len, put_binary};
use super::{
    DecodeError, PacketType, QoS, SUBACK_FAILURE, SubAck, Subscribe, SubscribeFilter, UnsubAck,
    Unsubscribe, header, topic,
};

fn filter<'a>(r: &mut Reader<'a>) -> Result<&'a str, DecodeError> {
    let f = r.string("topic filter")?;
    if topic::valid_filter(f) {
        Ok(f)
    } else {
        Err(DecodeError::BadFilter)
    }
}

/// The packet identifier of a SUBSCRIBE or UNSUBSCRIBE: 0 is malformed.
fn pkid(r: &mut Reader<'_>, kind: PacketType) -> Result<u16, DecodeError> {
    r.pkid().map_err(|e| match e {
        DecodeError::ZeroPacketId => DecodeError::ZeroPacketIdIn(kind),
        e => e,
    })
}

/// Reads the property section of an MQTT 5 packet; nothing before 5.0.
fn props(r: &mut Reader<'_>, v5: bool, ctx: Context) -> Result<Properties, DecodeError> {
    if v5 {
        Properties::read(r, ctx)
    } else {
        Ok(Properties::default())
    }
}

/// The subscription option bits of MQTT 5 [MQTT-3.8.3.1].
const NO_LOCAL: u8 = 0x04;
const RETAIN_AS_PUBLISHED: u8 = 0x08;

pub(super) fn decode_subscribe(body: &[u8], v5: bool) -> Result<Subscribe, DecodeError> {
    let mut r = Reader::new(body);
    let pkid = pkid(&mut r, PacketType::Subscribe)?;
    let mut props = props(&mut r, v5, Context::Subscribe)?;
    let sub_id = props.int(id::SUBSCRIPTION_ID);
    props.0.retain(|(i, _)| *i != id::SUBSCRIPTION_ID);
    let reserved = if v5 { 0xC0 } else { 0xFC };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let f = filter(&mut r)?;
        let options = r.u8("subscription options")?;
        if options & reserved != 0 {
            return Err(DecodeError::ReservedBits(PacketType::Subscribe));
        }
        let qos = QoS::from_u8(options & 0x03).ok_or(DecodeError::BadQoS)?;
        let retain_handling = (options >> 4) & 0x03;
        if retain_handling == 3 {
            return Err(DecodeError::ReservedBits(PacketType::Subscribe));
        }
        // A protocol error (Mosquitto 2.1 closes with 0x82 too).
        if options & NO_LOCAL != 0 && f.starts_with("$share/") {
            return Err(DecodeError::SharedNoLocal);
        }
        filters.push(SubscribeFilter {
            filter: f.to_string(),
            qos,
            no_local: options & NO_LOCAL != 0,
            retain_as_published: options & RETAIN_AS_PUBLISHED != 0,
            retain_handling,
        });
    }
    if filters.is_empty() {
        return Err(DecodeError::NoFilters);
    }
    Ok(Subscribe {
        pkid,
        filters,
        sub_id,
        props,
    })
}

fn options(f: &SubscribeFilter, v5: bool) -> u8 {
    let mut o = f.qos as u8;
    if v5 {
        if f.no_local {
            o |= NO_LOCAL;
        }
        if f.retain_as_published {
            o |= RETAIN_AS_PUBLISHED;
        }
        o |= (f.retain_handling & 0x03) << 4;
    }
    o
}

/// The SUBSCRIBE properties: the subscription identifier, then the rest.
fn subscribe_props(p: &Subscribe) -> Properties {
    let mut props = Properties::default();
    if let Some(id) = p.sub_id {
        props.push(id::SUBSCRIPTION_ID, Value::Var(id));
    }
    props.0.extend(p.props.0.iter().cloned());
    props
}

pub(super) fn encode_subscribe(p: &Subscribe, v5: bool, out: &mut Vec<u8>) {
    let props = v5.then(|| subscribe_props(p));
    let len = 2
        + props.as_ref().map_or(0, |p| p.len())
        + p.filters
            .iter()
            .map(|f| binary_len(f.filter.as_bytes()) + 1)
            .sum::<usize>();
    header::write(out, 0x82, len);
    out.extend_from_slice(&p.pkid.to_be_bytes());
    if let Some(props) = props {
        props.write(out);
    }
    for f in &p.filters {
        put_binary(out, f.filter.as_bytes());
        out.push(options(f, v5));
    }
}

pub(super) fn decode_suback(body: &[u8], v5: bool) -> Result<SubAck, DecodeError> {
    let mut r = Reader::new(body);
    let pkid = r.pkid()?;
    props(&mut r, v5, Context::SubAck)?;
    let codes = r.rest().to_vec();
    if codes.is_empty() {
        return Err(DecodeError::Truncated("return codes"));
    }
    let valid = |c: u8| match v5 {
        false => c <= 2 || c == SUBACK_FAILURE,
        true => matches!(
            c,
            0..=2 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2
        ),
    };
    if let Some(&bad) = codes.iter().find(|&&c| !valid(c)) {
        return Err(DecodeError::BadReturnCode(bad));
    }
    Ok(SubAck { pkid, codes })
}

/// SUBACK and UNSUBACK: id, an empty property section in MQTT 5, codes.
fn encode_codes(first: u8, pkid: u16, codes: &[u8], v5: bool, out: &mut Vec<u8>) {
    header::write(out, first, 2 + usize::from(v5) + codes.len());
    out.extend_from_slice(&pkid.to_be_bytes());
    if v5 {
        out.push(0);
    }
    out.extend_from_slice(codes);
}

pub(super) fn encode_suback(p: &SubAck, v5: bool, out: &mut Vec<u8>) {
    encode_codes(0x90, p.pkid, &p.codes, v5, out);
}

pub(super) fn decode_unsubscribe(body: &[u8], v5: bool) -> Result<Unsubscribe, DecodeError> {
    let mut r = Reader::new(body);
    let pkid = pkid(&mut r, PacketType::Unsubscribe)?;
    props(&mut r, v5, Context::Unsubscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(filter(&mut r)?.to_string());
    }
    if filters.is_empty() {
        return Err(DecodeError::NoFilters);
    }
    Ok(Unsubscribe { pkid, filters })
}

pub(super) fn encode_unsubscribe(u: &Unsubscribe, v5: bool, out: &mut Vec<u8>) {
    let len = 2
        + usize::from(v5)
        + u.filters
            .iter()
            .map(|f| binary_len(f.as_bytes()))
            .sum::<usize>();
    header::write(out, 0xA2, len);
    out.extend_from_slice(&u.pkid.to_be_bytes());
    if v5 {
        out.push(0);
    }
    for f in &u.filters {
        put_binary(out, f.as_bytes());
    }
}

pub(super) fn decode_unsuback(body: &[u8], v5: bool) -> Result<UnsubAck, DecodeError> {
    let mut r = Reader::new(body);
    let pkid = r.pkid()?;
    if !v5 {
        r.finish(PacketType::UnsubAck)?;
        return Ok(UnsubAck {
            pkid,
            codes: Vec::new(),
        });
    }
    props(&mut r, v5, Context::UnsubAck)?;
    let codes = r.rest().to_vec();
    if let Some(&bad) = codes
        .iter()
        .find(|&&c| !matches!(c, 0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91))
    {
        return Err(DecodeError::BadReasonCode(bad));
    }
    Ok(UnsubAck { pkid, codes })
}

pub(super) fn encode_unsuback(u: &UnsubAck, v5: bool, out: &mut Vec<u8>) {
    if v5 {
        encode_codes(0xB0, u.pkid, &u.codes, v5, out);
    } else {
        header::write(out, 0xB0, 2);
        out.extend_from_slice(&u.pkid.to_be_bytes());
    }
}
