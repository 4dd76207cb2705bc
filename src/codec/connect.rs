//! CONNECT and CONNACK [MQTT-3.1, 3.2].

use std::sync::Arc;

use std::time::Instant;

use super::props::{Context, Properties, PubProps};
use super::reader::{Reader, binary_len, put_binary};
use super::{ConnAck, Connect, DecodeError, Level, PacketType, QoS, Will, header, topic};

const CLEAN: u8 = 0x02;
const WILL: u8 = 0x04;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USERNAME: u8 = 0x80;

pub(super) fn decode(body: &[u8]) -> Result<Connect, DecodeError> {
    let mut r = Reader::new(body);
    let name = r.binary("protocol name")?;
    let raw_level = r.u8("protocol level")?;
    // A bridge sets the top bit of the level (Mosquitto's try_private).
    let (raw_level, bridge) = match raw_level {
        0x83 | 0x84 => (raw_level & 0x7F, true),
        l => (l, false),
    };
    // Mosquitto answers CONNACK 1 to a known name with a level that does
    // not belong to it, and closes silently on an unknown name.
    let level = match (name, raw_level) {
        (b"MQIsdp", 3) => Level::V31,
        (b"MQTT", 4) => Level::V311,
        (b"MQTT", 5) => Level::V5,
        (b"MQIsdp" | b"MQTT", l) => return Err(DecodeError::ProtocolLevel(l)),
        _ => return Err(DecodeError::ProtocolName),
    };
    let flags = r.u8("connect flags")?;
    // 3.1 had no reserved bit; Mosquitto checks it from 3.1.1 on.
    if level >= Level::V311 && flags & 0x01 != 0 {
        return Err(DecodeError::ConnectReserved);
    }
    let will_qos = (flags >> 3) & 0x03;
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::BadQoS)?;
    if flags & WILL == 0 && (will_qos != QoS::AtMostOnce || flags & WILL_RETAIN != 0) {
        return Err(DecodeError::WillFlags);
    }
    if flags & PASSWORD != 0 && flags & USERNAME == 0 {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16("keep alive")?;
    let v5 = level == Level::V5;
    let props = if v5 {
        Properties::read(&mut r, Context::Connect)?
    } else {
        Properties::default()
    };
    let client_id = r.string("client identifier")?.to_string();
    let will = if flags & WILL != 0 {
        let will_props = if v5 {
            Some(Properties::read(&mut r, Context::Will)?)
        } else {
            None
        };
        let topic = r.string("will topic")?;
        if !topic::valid_name(topic) || topic::too_deep(topic) {
            return Err(DecodeError::BadTopic);
        }
        let payload = r.binary("will message")?;
        Some(Will {
            topic: Arc::from(topic),
            payload: Arc::from(payload),
            qos: will_qos,
            retain: flags & WILL_RETAIN != 0,
            props: will_props
                .filter(|p| !p.is_empty())
                .map(|p| std::sync::Arc::new(PubProps::from_properties(&p, Instant::now()))),
        })
    } else {
        None
    };
    // MQTT 3.1 clients set the credential flags and leave the fields out;
    // Mosquitto ignores the flag then, and so does midge.
    let lenient = level == Level::V31 && r.is_empty();
    let username = if flags & USERNAME != 0 && !lenient {
        Some(r.string("user name")?.to_string())
    } else {
        None
    };
    let lenient = level == Level::V31 && r.is_empty();
    let password = if flags & PASSWORD != 0 && !lenient {
        Some(r.binary("password")?.to_vec())
    } else {
        None
    };
    r.finish(PacketType::Connect)?;
    Ok(Connect {
        level,
        client_id,
        clean: flags & CLEAN != 0,
        keep_alive,
        username,
        password,
        will,
        props,
        bridge,
    })
}

pub(super) fn encode(p: &Connect, out: &mut Vec<u8>) {
    let name: &[u8] = match p.level {
        Level::V31 => b"MQIsdp",
        Level::V311 | Level::V5 => b"MQTT",
    };
    let mut flags = 0u8;
    let v5 = p.level == Level::V5;
    let mut len = binary_len(name) + 1 + 1 + 2 + binary_len(p.client_id.as_bytes());
    if v5 {
        len += p.props.len();
    }
    let will_props = p.will.as_ref().map(will_properties);
    if let (true, Some(wp)) = (v5, &will_props) {
        len += wp.len();
    }
    if p.clean {
        flags |= CLEAN;
    }
    if let Some(w) = &p.will {
        flags |= WILL | ((w.qos as u8) << 3);
        if w.retain {
            flags |= WILL_RETAIN;
        }
        len += binary_len(w.topic.as_bytes()) + binary_len(&w.payload);
    }
    if let Some(u) = &p.username {
        flags |= USERNAME;
        len += binary_len(u.as_bytes());
    }
    if let Some(pw) = &p.password {
        flags |= PASSWORD;
        len += binary_len(pw);
    }
    header::write(out, 0x10, len);
    put_binary(out, name);
    out.push(p.level as u8 | if p.bridge { 0x80 } else { 0 });
    out.push(flags);
    out.extend_from_slice(&p.keep_alive.to_be_bytes());
    if v5 {
        p.props.write(out);
    }
    put_binary(out, p.client_id.as_bytes());
    if let Some(w) = &p.will {
        if let (true, Some(wp)) = (v5, &will_props) {
            wp.write(out);
        }
        put_binary(out, w.topic.as_bytes());
        put_binary(out, &w.payload);
    }
    if let Some(u) = &p.username {
        put_binary(out, u.as_bytes());
    }
    if let Some(pw) = &p.password {
        put_binary(out, pw);
    }
}

/// A will's properties as a list again: the will delay, then what is
/// forwarded with the message.
fn will_properties(w: &Will) -> Properties {
    let mut props = Properties::default();
    if let Some(wp) = &w.props {
        if wp.will_delay > 0 {
            props.push(
                super::props::id::WILL_DELAY,
                super::Value::Four(wp.will_delay),
            );
        }
        if let Some(e) = wp.expiry {
            props.push(super::props::id::MESSAGE_EXPIRY, super::Value::Four(e));
        }
        props.0.extend(wp.forwarded().0);
    }
    props
}

pub(super) fn decode_connack(body: &[u8], v5: bool) -> Result<ConnAck, DecodeError> {
    let mut r = Reader::new(body);
    let flags = r.u8("acknowledge flags")?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::ReservedBits(PacketType::ConnAck));
    }
    let code = r.u8("return code")?;
    let props = if v5 {
        Properties::read(&mut r, Context::ConnAck)?
    } else {
        Properties::default()
    };
    r.finish(PacketType::ConnAck)?;
    Ok(ConnAck {
        session_present: flags & 0x01 != 0,
        code,
        props,
    })
}

pub(super) fn encode_connack(p: &ConnAck, v5: bool, out: &mut Vec<u8>) {
    let props_len = if v5 { p.props.len() } else { 0 };
    header::write(out, 0x20, 2 + props_len);
    out.push(u8::from(p.session_present));
    out.push(p.code);
    if v5 {
        p.props.write(out);
    }
}
