//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK [MQTT-3.8 to 3.11].

use super::reader::{Reader, binary_len, put_binary};
use super::{
    DecodeError, PacketType, QoS, SUBACK_FAILURE, SubAck, Subscribe, SubscribeFilter, Unsubscribe,
    header, topic,
};

fn filter<'a>(r: &mut Reader<'a>) -> Result<&'a str, DecodeError> {
    let f = r.string("topic filter")?;
    if topic::valid_filter(f) {
        Ok(f)
    } else {
        Err(DecodeError::BadFilter)
    }
}

pub(super) fn decode_subscribe(body: &[u8]) -> Result<Subscribe, DecodeError> {
    let mut r = Reader::new(body);
    let pkid = r.pkid()?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let f = filter(&mut r)?;
        let options = r.u8("requested QoS")?;
        if options & 0xFC != 0 {
            return Err(DecodeError::ReservedBits(PacketType::Subscribe));
        }
        let qos = QoS::from_u8(options).ok_or(DecodeError::BadQoS)?;
        filters.push(SubscribeFilter {
            filter: f.to_string(),
            qos,
        });
    }
    if filters.is_empty() {
        return Err(DecodeError::NoFilters);
    }
    Ok(Subscribe { pkid, filters })
}

pub(super) fn encode_subscribe(p: &Subscribe, out: &mut Vec<u8>) {
    let len = 2 + p
        .filters
        .iter()
        .map(|f| binary_len(f.filter.as_bytes()) + 1)
        .sum::<usize>();
    header::write(out, 0x82, len);
    out.extend_from_slice(&p.pkid.to_be_bytes());
    for f in &p.filters {
        put_binary(out, f.filter.as_bytes());
        out.push(f.qos as u8);
    }
}

pub(super) fn decode_suback(body: &[u8]) -> Result<SubAck, DecodeError> {
    let mut r = Reader::new(body);
    let pkid = r.pkid()?;
    let codes = r.rest().to_vec();
    if codes.is_empty() {
        return Err(DecodeError::Truncated("return codes"));
    }
    if let Some(&bad) = codes.iter().find(|&&c| c > 2 && c != SUBACK_FAILURE) {
        return Err(DecodeError::BadReturnCode(bad));
    }
    Ok(SubAck { pkid, codes })
}

pub(super) fn encode_suback(p: &SubAck, out: &mut Vec<u8>) {
    header::write(out, 0x90, 2 + p.codes.len());
    out.extend_from_slice(&p.pkid.to_be_bytes());
    out.extend_from_slice(&p.codes);
}

pub(super) fn decode_unsubscribe(body: &[u8]) -> Result<Unsubscribe, DecodeError> {
    let mut r = Reader::new(body);
    let pkid = r.pkid()?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(filter(&mut r)?.to_string());
    }
    if filters.is_empty() {
        return Err(DecodeError::NoFilters);
    }
    Ok(Unsubscribe { pkid, filters })
}

pub(super) fn encode_unsubscribe(p: &Unsubscribe, out: &mut Vec<u8>) {
    let len = 2 + p
        .filters
        .iter()
        .map(|f| binary_len(f.as_bytes()))
        .sum::<usize>();
    header::write(out, 0xA2, len);
    out.extend_from_slice(&p.pkid.to_be_bytes());
    for f in &p.filters {
        put_binary(out, f.as_bytes());
    }
}
