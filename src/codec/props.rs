//! MQTT 5 properties [MQTT-2.2.2]: a length, then identifier and value
//! pairs.
//!
//! Each identifier has one value type and a fixed set of packets it may
//! appear on; both are checked here, once, for every packet. Every property
//! but the user property (and the subscription identifier of a PUBLISH) may
//! appear at most once [MQTT-2.2.2-2].
//!
//! A decoded [`Properties`] keeps the order of the wire: user properties
//! must reach the receiver in the order they were sent [MQTT-3.3.2-18].

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::DecodeError;
use super::reader::{Reader, binary_len, put_binary, put_var_int, var_int_len};

/// Property identifiers [MQTT-2.2.2.2].
pub mod id {
    pub const PAYLOAD_FORMAT: u8 = 0x01;
    pub const MESSAGE_EXPIRY: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_ID: u8 = 0x0B;
    pub const SESSION_EXPIRY: u8 = 0x11;
    pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTH_METHOD: u8 = 0x15;
    pub const AUTH_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFO: u8 = 0x17;
    pub const WILL_DELAY: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFO: u8 = 0x19;
    pub const RESPONSE_INFO: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_ID_AVAILABLE: u8 = 0x29;
    pub const SHARED_AVAILABLE: u8 = 0x2A;
}

/// The packet (or part of CONNECT) a property list belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL and PUBCOMP.
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

/// One property value; the identifier decides which variant it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Byte(u8),
    Two(u16),
    Four(u32),
    /// A variable byte integer.
    Var(u32),
    Str(String),
    Bin(Vec<u8>),
    Pair(String, String),
}

#[derive(Clone, Copy)]
enum Kind {
    Byte,
    Two,
    Four,
    Var,
    Str,
    Bin,
    Pair,
}

/// The value type of `id` and the packets it may appear on.
fn spec(id: u8) -> Option<(Kind, &'static [Context])> {
    use Context::*;
    use Kind::*;
    const PUBLISH_WILL: &[Context] = &[Publish, Will];
    const REASON: &[Context] = &[ConnAck, Ack, SubAck, UnsubAck, Disconnect, Auth];
    const USER: &[Context] = &[
        Connect,
        Will,
        ConnAck,
        Publish,
        Ack,
        Subscribe,
        SubAck,
        Unsubscribe,
        UnsubAck,
        Disconnect,
        Auth,
    ];
    Some(match id {
        id::PAYLOAD_FORMAT => (Byte, PUBLISH_WILL),
        id::MESSAGE_EXPIRY => (Four, PUBLISH_WILL),
        id::CONTENT_TYPE | id::RESPONSE_TOPIC => (Str, PUBLISH_WILL),
        id::CORRELATION_DATA => (Bin, PUBLISH_WILL),
        id::SUBSCRIPTION_ID => (Var, &[Publish, Subscribe]),
        id::SESSION_EXPIRY => (Four, &[Connect, ConnAck, Disconnect]),
        id::ASSIGNED_CLIENT_ID | id::RESPONSE_INFO => (Str, &[ConnAck]),
        id::SERVER_KEEP_ALIVE => (Two, &[ConnAck]),
        id::AUTH_METHOD => (Str, &[Connect, ConnAck, Auth]),
        id::AUTH_DATA => (Bin, &[Connect, ConnAck, Auth]),
        id::REQUEST_PROBLEM_INFO | id::REQUEST_RESPONSE_INFO => (Byte, &[Connect]),
        id::WILL_DELAY => (Four, &[Will]),
        id::SERVER_REFERENCE => (Str, &[ConnAck, Disconnect]),
        id::REASON_STRING => (Str, REASON),
        id::RECEIVE_MAXIMUM | id::TOPIC_ALIAS_MAXIMUM => (Two, &[Connect, ConnAck]),
        id::TOPIC_ALIAS => (Two, &[Publish]),
        id::MAXIMUM_QOS
        | id::RETAIN_AVAILABLE
        | id::WILDCARD_AVAILABLE
        | id::SUBSCRIPTION_ID_AVAILABLE
        | id::SHARED_AVAILABLE => (Byte, &[ConnAck]),
        id::USER_PROPERTY => (Pair, USER),
        id::MAXIMUM_PACKET_SIZE => (Four, &[Connect, ConnAck]),
        _ => return None,
    })
}

/// The names Mosquitto's tools give the properties (`-D`).
const NAMES: &[(u8, &str)] = &[
    (id::PAYLOAD_FORMAT, "payload-format-indicator"),
    (id::MESSAGE_EXPIRY, "message-expiry-interval"),
    (id::CONTENT_TYPE, "content-type"),
    (id::RESPONSE_TOPIC, "response-topic"),
    (id::CORRELATION_DATA, "correlation-data"),
    (id::SUBSCRIPTION_ID, "subscription-identifier"),
    (id::SESSION_EXPIRY, "session-expiry-interval"),
    (id::ASSIGNED_CLIENT_ID, "assigned-client-identifier"),
    (id::SERVER_KEEP_ALIVE, "server-keep-alive"),
    (id::AUTH_METHOD, "authentication-method"),
    (id::AUTH_DATA, "authentication-data"),
    (id::REQUEST_PROBLEM_INFO, "request-problem-information"),
    (id::WILL_DELAY, "will-delay-interval"),
    (id::REQUEST_RESPONSE_INFO, "request-response-information"),
    (id::RESPONSE_INFO, "response-information"),
    (id::SERVER_REFERENCE, "server-reference"),
    (id::REASON_STRING, "reason-string"),
    (id::RECEIVE_MAXIMUM, "receive-maximum"),
    (id::TOPIC_ALIAS_MAXIMUM, "topic-alias-maximum"),
    (id::TOPIC_ALIAS, "topic-alias"),
    (id::MAXIMUM_QOS, "maximum-qos"),
    (id::RETAIN_AVAILABLE, "retain-available"),
    (id::USER_PROPERTY, "user-property"),
    (id::MAXIMUM_PACKET_SIZE, "maximum-packet-size"),
    (id::WILDCARD_AVAILABLE, "wildcard-subscription-available"),
    (
        id::SUBSCRIPTION_ID_AVAILABLE,
        "subscription-identifier-available",
    ),
    (id::SHARED_AVAILABLE, "shared-subscription-available"),
];

/// The identifier of a property by its Mosquitto name.
pub fn by_name(name: &str) -> Option<u8> {
    NAMES.iter().find(|(_, n)| *n == name).map(|(i, _)| *i)
}

/// The Mosquitto name of a property.
pub fn name(pid: u8) -> &'static str {
    NAMES
        .iter()
        .find(|(i, _)| *i == pid)
        .map_or("unknown", |(_, n)| *n)
}

/// Whether `pid` may appear on the packet `ctx`.
pub fn allowed(pid: u8, ctx: Context) -> bool {
    spec(pid).is_some_and(|(_, ctxs)| ctxs.contains(&ctx))
}

/// A property value from its text, as Mosquitto's tools read `-D`: the
/// text itself for strings and binary data, a number otherwise (with the
/// largest value it may take). `second` is a user property's value.
pub fn parse_value(pid: u8, text: &str, second: &str) -> Result<Value, i64> {
    let num = |max: u64| -> Result<u64, i64> {
        let n = text.trim().parse::<i64>().unwrap_or(0);
        u64::try_from(n).ok().filter(|&v| v <= max).ok_or(n)
    };
    let Some((kind, _)) = spec(pid) else {
        return Err(0);
    };
    Ok(match kind {
        Kind::Byte => Value::Byte(num(255)? as u8),
        Kind::Two => Value::Two(num(65_535)? as u16),
        Kind::Four => Value::Four(num(u64::from(u32::MAX))? as u32),
        Kind::Var => Value::Var(num(268_435_455)? as u32),
        Kind::Str => Value::Str(text.to_string()),
        Kind::Bin => Value::Bin(text.as_bytes().to_vec()),
        Kind::Pair => Value::Pair(text.to_string(), second.to_string()),
    })
}

/// Whether a property list repeats one that may appear once on `ctx`.
pub fn has_duplicate(p: &Properties, ctx: Context) -> bool {
    p.0.iter().enumerate().any(|(i, (pid, _))| {
        let repeatable =
            *pid == id::USER_PROPERTY || (*pid == id::SUBSCRIPTION_ID && ctx == Context::Publish);
        !repeatable && p.0[..i].iter().any(|(q, _)| q == pid)
    })
}

/// Whether a value is one the specification allows for `id`.
fn valid(id: u8, v: &Value) -> bool {
    match (id, v) {
        // The Payload Format Indicator is forwarded as it came, whatever
        // its value, as Mosquitto does (MQTT names 0 and 1 and forbids no
        // other): only 1 makes midge check the payload.
        (
            id::REQUEST_PROBLEM_INFO
            | id::REQUEST_RESPONSE_INFO
            | id::MAXIMUM_QOS
            | id::RETAIN_AVAILABLE
            | id::WILDCARD_AVAILABLE
            | id::SUBSCRIPTION_ID_AVAILABLE
            | id::SHARED_AVAILABLE,
            Value::Byte(b),
        ) => *b <= 1,
        (id::RECEIVE_MAXIMUM | id::TOPIC_ALIAS, Value::Two(0)) => false,
        (id::MAXIMUM_PACKET_SIZE, Value::Four(0)) => false,
        (id::SUBSCRIPTION_ID, Value::Var(0)) => false,
        _ => true,
    }
}

/// A property list in wire order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties(pub Vec<(u8, Value)>);

impl Properties {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn push(&mut self, id: u8, v: Value) {
        self.0.push((id, v));
    }

    pub fn get(&self, id: u8) -> Option<&Value> {
        self.0.iter().find(|(i, _)| *i == id).map(|(_, v)| v)
    }

    /// A one-byte, two-byte, four-byte or variable integer property.
    pub fn int(&self, id: u8) -> Option<u32> {
        match self.get(id)? {
            Value::Byte(b) => Some(u32::from(*b)),
            Value::Two(n) => Some(u32::from(*n)),
            Value::Four(n) | Value::Var(n) => Some(*n),
            _ => None,
        }
    }

    pub fn str(&self, id: u8) -> Option<&str> {
        match self.get(id)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn bin(&self, id: u8) -> Option<&[u8]> {
        match self.get(id)? {
            Value::Bin(b) => Some(b),
            _ => None,
        }
    }

    /// The user properties, in order.
    pub fn user(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().filter_map(|(_, v)| match v {
            Value::Pair(k, v) => Some((k.as_str(), v.as_str())),
            _ => None,
        })
    }

    /// Reads a property list for `ctx`, checking identifiers, types,
    /// values and repeats.
    pub(super) fn read(r: &mut Reader<'_>, ctx: Context) -> Result<Properties, DecodeError> {
        let len = r.var_int("property length")?;
        let mut r = Reader::new(r.take(len as usize, "properties")?);
        let mut props = Properties::default();
        while !r.is_empty() {
            let pid = r.var_int("property identifier")?;
            let pid = u8::try_from(pid).map_err(|_| DecodeError::BadProperty(0xFF))?;
            let (kind, allowed) = spec(pid).ok_or(DecodeError::BadProperty(pid))?;
            if !allowed.contains(&ctx) {
                return Err(DecodeError::BadProperty(pid));
            }
            let repeatable =
                pid == id::USER_PROPERTY || (pid == id::SUBSCRIPTION_ID && ctx == Context::Publish);
            if !repeatable && props.get(pid).is_some() {
                return Err(DecodeError::DuplicateProperty(pid));
            }
            let v = match kind {
                Kind::Byte => Value::Byte(r.u8("property")?),
                Kind::Two => Value::Two(r.u16("property")?),
                Kind::Four => Value::Four(r.u32("property")?),
                Kind::Var => Value::Var(r.var_int("property")?),
                Kind::Str => Value::Str(r.string("property")?.to_string()),
                Kind::Bin => Value::Bin(r.binary("property")?.to_vec()),
                Kind::Pair => {
                    let k = r.string("user property")?.to_string();
                    Value::Pair(k, r.string("user property")?.to_string())
                }
            };
            if !valid(pid, &v) {
                return Err(DecodeError::PropertyValue(pid));
            }
            props.push(pid, v);
        }
        Ok(props)
    }

    /// The encoded size of the entries, without the length in front.
    pub fn body_len(&self) -> usize {
        self.0.iter().map(|(id, v)| 1 + value_len(*id, v)).sum()
    }

    /// The encoded size with the length in front.
    pub fn len(&self) -> usize {
        let n = self.body_len();
        var_int_len(n) + n
    }

    /// Appends the length and the entries.
    pub fn write(&self, out: &mut Vec<u8>) {
        put_var_int(out, self.body_len());
        self.write_entries(out);
    }

    /// Appends the entries only.
    pub fn write_entries(&self, out: &mut Vec<u8>) {
        for (id, v) in &self.0 {
            out.push(*id);
            match v {
                Value::Byte(b) => out.push(*b),
                Value::Two(n) => out.extend_from_slice(&n.to_be_bytes()),
                Value::Four(n) => out.extend_from_slice(&n.to_be_bytes()),
                Value::Var(n) => put_var_int(out, *n as usize),
                Value::Str(s) => put_binary(out, s.as_bytes()),
                Value::Bin(b) => put_binary(out, b),
                Value::Pair(k, v) => {
                    put_binary(out, k.as_bytes());
                    put_binary(out, v.as_bytes());
                }
            }
        }
    }
}

fn value_len(_id: u8, v: &Value) -> usize {
    match v {
        Value::Byte(_) => 1,
        Value::Two(_) => 2,
        Value::Four(_) => 4,
        Value::Var(n) => var_int_len(*n as usize),
        Value::Str(s) => binary_len(s.as_bytes()),
        Value::Bin(b) => binary_len(b),
        Value::Pair(k, v) => binary_len(k.as_bytes()) + binary_len(v.as_bytes()),
    }
}

/// The properties of a message (PUBLISH or will) in the form the broker
/// routes: what is forwarded unchanged kept encoded, in wire order, so a
/// fan-out copies bytes instead of rebuilding a list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PubProps {
    /// Payload format indicator, content type, response topic, correlation
    /// data and user properties, encoded, in the order received
    /// [MQTT-3.3.2-4, -15, -16, -18].
    pub forward: Arc<[u8]>,
    /// The message expiry interval as received, in seconds.
    pub expiry: Option<u32>,
    /// When the message expires: receipt plus `expiry`.
    pub expires_at: Option<Instant>,
    /// A topic alias (from a client, resolved by its connection; or one a
    /// client tool sets).
    pub topic_alias: Option<u16>,
    /// Subscription identifiers: set per subscriber on delivery.
    pub sub_ids: Vec<u32>,
    /// The payload format indicator: the payload is UTF-8.
    pub utf8: bool,
    /// The will delay interval (a will's properties only).
    pub will_delay: u32,
}

impl PubProps {
    /// Sorts a decoded PUBLISH or will property list into its routed form.
    pub fn from_properties(p: &Properties, now: Instant) -> PubProps {
        let mut forward = Properties::default();
        let mut out = PubProps::default();
        for (pid, v) in &p.0 {
            match (*pid, v) {
                (id::MESSAGE_EXPIRY, Value::Four(n)) => {
                    out.expiry = Some(*n);
                    out.expires_at = now.checked_add(Duration::from_secs(u64::from(*n)));
                }
                (id::TOPIC_ALIAS, Value::Two(n)) => out.topic_alias = Some(*n),
                (id::SUBSCRIPTION_ID, Value::Var(n)) => out.sub_ids.push(*n),
                (id::WILL_DELAY, Value::Four(n)) => out.will_delay = *n,
                (id::PAYLOAD_FORMAT, Value::Byte(b)) => {
                    out.utf8 = *b == 1;
                    forward.push(*pid, v.clone());
                }
                _ => forward.push(*pid, v.clone()),
            }
        }
        let mut bytes = Vec::with_capacity(forward.body_len());
        forward.write_entries(&mut bytes);
        out.forward = Arc::from(bytes);
        out
    }

    /// The forwarded properties decoded again (for the client tools).
    pub fn forwarded(&self) -> Properties {
        let mut framed = Vec::with_capacity(self.forward.len() + 4);
        put_var_int(&mut framed, self.forward.len());
        framed.extend_from_slice(&self.forward);
        // They were checked on the way in.
        Properties::read(&mut Reader::new(&framed), Context::Publish).unwrap_or_default()
    }

    /// Whether the message has expired at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }

    /// The expiry interval left at `now`, rounded up, for forwarding
    /// [MQTT-3.3.2-6].
    pub fn remaining(&self, now: Instant) -> Option<u32> {
        let at = self.expires_at?;
        let left = at.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Some(u32::try_from(secs).unwrap_or(u32::MAX))
    }
}
