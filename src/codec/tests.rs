//! Byte-exact checks per packet type, the round trip as a property, and
//! random and truncated input that must give errors, never panics.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::fuzzing::without_clock;

const MAX: usize = super::header::MAX_REMAINING + 5;

fn decode_all(bytes: &[u8], level: Level) -> Result<Option<(Packet, usize)>, DecodeError> {
    let Some(h) = check(bytes, MAX)? else {
        return Ok(None);
    };
    let Some(body) = bytes.get(h.header_len..h.total_len()) else {
        return Ok(None);
    };
    Ok(Some((decode(&h, body, level)?, h.total_len())))
}

fn one(bytes: &[u8]) -> Result<Packet, DecodeError> {
    match decode_all(bytes, Level::V311)? {
        Some((p, n)) => {
            assert_eq!(n, bytes.len(), "packet length");
            Ok(p)
        }
        None => panic!("incomplete: {bytes:?}"),
    }
}

fn enc(p: &Packet) -> Vec<u8> {
    let mut v = Vec::new();
    encode(p, Level::V311, &mut v);
    v
}

fn publish(topic: &str, qos: QoS, pkid: u16, payload: &[u8]) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: Arc::from(topic),
        pkid,
        payload: Arc::from(payload),
        props: None,
    }
}

#[test]
fn connect_311_full() {
    let bytes = [
        0x10, 0x1C, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xEE, 0, 60, // header
        0, 2, b'i', b'd', // client id
        0, 1, b'w', 0, 2, b'b', b'y', // will
        0, 1, b'u', // user name
        0, 2, b'p', b'w', // password
    ];
    let want = Packet::Connect(Connect {
        level: Level::V311,
        client_id: "id".into(),
        clean: true,
        keep_alive: 60,
        username: Some("u".into()),
        password: Some(b"pw".to_vec()),
        will: Some(Will {
            topic: Arc::from("w"),
            payload: Arc::from(&b"by"[..]),
            qos: QoS::AtLeastOnce,
            retain: true,
            props: None,
        }),
        props: Properties::default(),
        bridge: false,
    });
    assert_eq!(one(&bytes), Ok(want.clone()));
    // Mosquitto's bridge bit on the level.
    let mut bridged = bytes;
    bridged[8] |= 0x80;
    let Ok(Packet::Connect(c)) = one(&bridged) else {
        panic!("bridge CONNECT refused");
    };
    assert!(c.bridge);
    assert_eq!(enc(&Packet::Connect(c)), bridged);
    assert_eq!(enc(&want), bytes);
}

#[test]
fn connect_31_and_its_leniency() {
    let mut bytes = vec![0x10, 0, 0, 6];
    bytes.extend_from_slice(b"MQIsdp");
    bytes.extend_from_slice(&[3, 0xC2, 0, 10, 0, 1, b'a']);
    bytes[1] = (bytes.len() - 2) as u8;
    // Credential flags without the fields: ignored in 3.1, like Mosquitto.
    match one(&bytes) {
        Ok(Packet::Connect(c)) => {
            assert_eq!(c.level, Level::V31);
            assert_eq!((c.username, c.password), (None, None));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn connect_refusals() {
    let build = |name: &[u8], level: u8, flags: u8, rest: &[u8]| {
        let mut body = vec![0, name.len() as u8];
        body.extend_from_slice(name);
        body.extend_from_slice(&[level, flags, 0, 60]);
        body.extend_from_slice(rest);
        let mut v = vec![0x10, body.len() as u8];
        v.extend(body);
        v
    };
    let id = [0, 1, b'a'];
    assert_eq!(
        one(&build(b"MQTT", 6, 2, &id)),
        Err(DecodeError::ProtocolLevel(6))
    );
    assert_eq!(
        one(&build(b"MQTT", 3, 2, &id)),
        Err(DecodeError::ProtocolLevel(3))
    );
    assert_eq!(
        one(&build(b"MQIsdp", 4, 2, &id)),
        Err(DecodeError::ProtocolLevel(4))
    );
    assert_eq!(DecodeError::ProtocolLevel(4).connack_code(), Some(1));
    assert_eq!(
        one(&build(b"HTTP", 4, 2, &id)),
        Err(DecodeError::ProtocolName)
    );
    assert_eq!(DecodeError::ProtocolName.connack_code(), None);
    assert_eq!(
        one(&build(b"MQTT", 4, 3, &id)),
        Err(DecodeError::ConnectReserved)
    );
    assert_eq!(one(&build(b"MQTT", 4, 0x1E, &id)), Err(DecodeError::BadQoS));
    assert_eq!(
        one(&build(b"MQTT", 4, 0x0A, &id)),
        Err(DecodeError::WillFlags)
    );
    assert_eq!(
        one(&build(b"MQTT", 4, 0x22, &id)),
        Err(DecodeError::WillFlags)
    );
    assert_eq!(
        one(&build(b"MQTT", 4, 0x42, &[0, 1, b'a', 0, 1, b'p'])),
        Err(DecodeError::PasswordWithoutUsername)
    );
    assert_eq!(
        one(&build(
            b"MQTT",
            4,
            0x06,
            &[0, 1, b'a', 0, 3, b'a', b'/', b'#', 0, 0]
        )),
        Err(DecodeError::BadTopic)
    );
    assert_eq!(
        one(&build(b"MQTT", 4, 2, &[0, 1, 0xFF])),
        Err(DecodeError::BadUtf8)
    );
    assert_eq!(
        one(&build(b"MQTT", 4, 2, &[0, 1, 0])),
        Err(DecodeError::BadUtf8)
    );
    assert_eq!(
        one(&build(b"MQTT", 4, 2, &[0, 1, b'a', 9])),
        Err(DecodeError::Trailing(PacketType::Connect))
    );
    assert_eq!(
        one(&build(b"MQTT", 4, 0x82, &id)),
        Err(DecodeError::Truncated("user name"))
    );
}

#[test]
fn connack() {
    let p = Packet::ConnAck(ConnAck {
        session_present: true,
        code: 0,
        props: Properties::default(),
    });
    assert_eq!(enc(&p), [0x20, 2, 1, 0]);
    assert_eq!(one(&[0x20, 2, 1, 0]), Ok(p));
    assert_eq!(
        one(&[0x20, 2, 2, 0]),
        Err(DecodeError::ReservedBits(PacketType::ConnAck))
    );
}

#[test]
fn publish_qos0_and_qos2() {
    let p = Packet::Publish(publish("a/b", QoS::AtMostOnce, 0, b"hi"));
    let bytes = [0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i'];
    assert_eq!(enc(&p), bytes);
    assert_eq!(one(&bytes), Ok(p));

    let mut m = publish("t", QoS::ExactlyOnce, 0x1234, b"");
    m.dup = true;
    m.retain = true;
    let bytes = [0x3D, 5, 0, 1, b't', 0x12, 0x34];
    assert_eq!(enc(&Packet::Publish(m.clone())), bytes);
    assert_eq!(one(&bytes), Ok(Packet::Publish(m)));
}

#[test]
fn publish_refusals() {
    assert_eq!(one(&[0x36, 5, 0, 1, b'a', 0, 1]), Err(DecodeError::BadQoS));
    assert_eq!(one(&[0x38, 3, 0, 1, b'a']), Err(DecodeError::DupWithQoS0));
    assert_eq!(
        one(&[0x32, 5, 0, 1, b'a', 0, 0]),
        Err(DecodeError::ZeroPacketId)
    );
    assert_eq!(one(&[0x30, 3, 0, 1, b'#']), Err(DecodeError::BadTopic));
    assert_eq!(one(&[0x30, 3, 0, 1, b'+']), Err(DecodeError::BadTopic));
    assert_eq!(one(&[0x30, 2, 0, 0]), Err(DecodeError::BadTopic));
    assert_eq!(
        one(&[0x30, 5, 0, 3, 0xED, 0xA0, 0x80]),
        Err(DecodeError::BadUtf8)
    );
    assert_eq!(
        one(&[0x32, 4, 0, 1, b'a', 0]),
        Err(DecodeError::Truncated("packet identifier"))
    );
}

#[test]
fn acks() {
    for (p, first) in [
        (Packet::PubAck(Ack::ok(7)), 0x40),
        (Packet::PubRec(Ack::ok(7)), 0x50),
        (Packet::PubRel(Ack::ok(7)), 0x62),
        (Packet::PubComp(Ack::ok(7)), 0x70),
        (
            Packet::UnsubAck(UnsubAck {
                pkid: 7,
                codes: vec![],
            }),
            0xB0,
        ),
    ] {
        let bytes = [first, 2, 0, 7];
        assert_eq!(enc(&p), bytes);
        assert_eq!(one(&bytes), Ok(p.clone()));
        assert_eq!(one(&[first, 2, 0, 0]), Err(DecodeError::ZeroPacketId));
        assert_eq!(
            one(&[first, 3, 0, 7, 0]),
            Err(DecodeError::Trailing(p.kind()))
        );
    }
    assert_eq!(
        one(&[0x60, 2, 0, 7]),
        Err(DecodeError::BadFlags(PacketType::PubRel))
    );
    // A repeated PUBREL with DUP set: MQTT 3.1 only.
    let dup = [0x6A, 2, 0, 7];
    assert_eq!(one(&dup), Err(DecodeError::BadFlags(PacketType::PubRel)));
    assert_eq!(
        decode_all(&dup, Level::V31),
        Ok(Some((Packet::PubRel(Ack { pkid: 7, reason: 0 }), 4)))
    );
    assert_eq!(
        one(&[0x41, 2, 0, 7]),
        Err(DecodeError::BadFlags(PacketType::PubAck))
    );
}

#[test]
fn empty_packets() {
    for (p, first) in [
        (Packet::PingReq, 0xC0),
        (Packet::PingResp, 0xD0),
        (Packet::Disconnect(Disconnect::default()), 0xE0),
    ] {
        assert_eq!(enc(&p), [first, 0]);
        assert_eq!(one(&[first, 0]), Ok(p.clone()));
        assert_eq!(one(&[first, 1, 0]), Err(DecodeError::Trailing(p.kind())));
        assert_eq!(one(&[first | 1, 0]), Err(DecodeError::BadFlags(p.kind())));
    }
}

#[test]
fn subscribe_and_suback() {
    let s = Packet::Subscribe(Subscribe {
        pkid: 10,
        filters: vec![
            SubscribeFilter::new("a/+", QoS::AtLeastOnce),
            SubscribeFilter::new("#", QoS::ExactlyOnce),
        ],
        sub_id: None,
        props: Properties::default(),
    });
    let bytes = [0x82, 12, 0, 10, 0, 3, b'a', b'/', b'+', 1, 0, 1, b'#', 2];
    assert_eq!(enc(&s), bytes);
    assert_eq!(one(&bytes), Ok(s));
    assert_eq!(one(&[0x82, 2, 0, 1]), Err(DecodeError::NoFilters));
    assert_eq!(
        one(&[0x82, 6, 0, 1, 0, 1, b'a', 3]),
        Err(DecodeError::BadQoS)
    );
    assert_eq!(
        one(&[0x82, 6, 0, 1, 0, 1, b'a', 4]),
        Err(DecodeError::ReservedBits(PacketType::Subscribe))
    );
    assert_eq!(
        one(&[0x82, 7, 0, 1, 0, 2, b'a', b'#', 0]),
        Err(DecodeError::BadFilter)
    );
    assert_eq!(
        one(&[0x82, 5, 0, 1, 0, 1, b'a']),
        Err(DecodeError::Truncated("subscription options"))
    );
    assert_eq!(
        one(&[0x80, 6, 0, 1, 0, 1, b'a', 0]),
        Err(DecodeError::BadFlags(PacketType::Subscribe))
    );

    let a = Packet::SubAck(SubAck {
        pkid: 10,
        codes: vec![0, 1, 2, 0x80],
    });
    let bytes = [0x90, 6, 0, 10, 0, 1, 2, 0x80];
    assert_eq!(enc(&a), bytes);
    assert_eq!(one(&bytes), Ok(a));
    assert_eq!(one(&[0x90, 3, 0, 1, 3]), Err(DecodeError::BadReturnCode(3)));
}

#[test]
fn unsubscribe() {
    let u = Packet::Unsubscribe(Unsubscribe {
        pkid: 3,
        filters: vec!["a/#".into(), "b".into()],
    });
    let bytes = [0xA2, 10, 0, 3, 0, 3, b'a', b'/', b'#', 0, 1, b'b'];
    assert_eq!(enc(&u), bytes);
    assert_eq!(one(&bytes), Ok(u));
    assert_eq!(one(&[0xA2, 2, 0, 3]), Err(DecodeError::NoFilters));
    assert_eq!(
        one(&[0xA2, 5, 0, 3, 0, 1, b'+']),
        Ok(Packet::Unsubscribe(Unsubscribe {
            pkid: 3,
            filters: vec!["+".into()],
        }))
    );
}

#[test]
fn fixed_header_limits() {
    assert_eq!(check(&[], MAX), Ok(None));
    assert_eq!(check(&[0x30], MAX), Ok(None));
    assert_eq!(check(&[0x30, 0xFF, 0xFF, 0xFF], MAX), Ok(None));
    assert_eq!(
        check(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], MAX),
        Err(DecodeError::MalformedLength)
    );
    assert_eq!(check(&[0x00, 0], MAX), Err(DecodeError::ReservedType(0)));
    assert_eq!(
        decode_all(&[0xF0, 0], Level::V311),
        Err(DecodeError::ReservedType(15))
    );
    let h = check(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], MAX)
        .expect("valid")
        .expect("complete");
    assert_eq!((h.header_len, h.remaining), (5, 268_435_455));
    // The size limit applies as soon as the length is known: a 1 MB
    // announcement is refused with only 4 bytes received.
    assert_eq!(
        check(&[0x30, 0x80, 0x80, 0x40], 1000),
        Err(DecodeError::PacketTooLarge {
            size: 1_048_580,
            max: 1000
        })
    );
}

#[test]
fn truncated_packets_need_more_bytes() {
    let bytes = enc(&Packet::Publish(publish(
        "a/b",
        QoS::AtLeastOnce,
        5,
        b"payload",
    )));
    for n in 0..bytes.len() {
        assert_eq!(decode_all(&bytes[..n], Level::V311), Ok(None), "{n} bytes");
    }
}

fn arb_string(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..max)
        .prop_map(|v| v.into_iter().collect())
}

fn arb_name() -> impl Strategy<Value = String> {
    arb_string(20).prop_map(|s| {
        let s: String = s.chars().filter(|c| *c != '+' && *c != '#').collect();
        if s.is_empty() { "t".into() } else { s }
    })
}

fn arb_filter() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![Just("+".to_string()), "[a-z$]{0,4}".prop_map(String::from)],
        1..5,
    )
    .prop_flat_map(|levels| {
        (Just(levels), any::<bool>()).prop_map(|(mut l, hash)| {
            if hash {
                l.push("#".into());
            }
            let f = l.join("/");
            if f.is_empty() { "e".into() } else { f }
        })
    })
}

fn arb_qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn arb_user() -> impl Strategy<Value = Vec<(u8, Value)>> {
    proptest::collection::vec(
        (arb_string(6), arb_string(6))
            .prop_map(|(k, v)| (props::id::USER_PROPERTY, Value::Pair(k, v))),
        0..3,
    )
}

/// MQTT 5 message properties as a client sends them (no alias, no
/// subscription identifier), in a random order.
fn arb_message_props() -> impl Strategy<Value = Properties> {
    use props::id;
    (
        proptest::option::of(0..=1u8),
        proptest::option::of(0..=100_000u32),
        proptest::option::of(arb_string(8)),
        proptest::option::of(arb_name()),
        proptest::option::of(arb_bytes(8)),
        arb_user(),
    )
        .prop_map(|(pf, exp, ct, rt, cd, user)| {
            let mut p = Properties::default();
            if let Some(b) = pf {
                p.push(id::PAYLOAD_FORMAT, Value::Byte(b));
            }
            if let Some(n) = exp {
                p.push(id::MESSAGE_EXPIRY, Value::Four(n));
            }
            if let Some(s) = ct {
                p.push(id::CONTENT_TYPE, Value::Str(s));
            }
            if let Some(s) = rt {
                p.push(id::RESPONSE_TOPIC, Value::Str(s));
            }
            if let Some(b) = cd {
                p.push(id::CORRELATION_DATA, Value::Bin(b));
            }
            p.0.extend(user);
            p
        })
}

/// Routed properties, with the decode-time clock taken out so that a
/// decoded copy compares equal.
fn pub_props(p: &Properties) -> Option<Arc<PubProps>> {
    (!p.is_empty()).then(|| Arc::new(PubProps::from_properties(p, std::time::Instant::now())))
}

fn arb_packet(level: Level) -> impl Strategy<Value = Packet> {
    let v5 = level == Level::V5;
    let id = 1..=u16::MAX;
    let props = move |s: BoxedStrategy<Properties>| {
        if v5 {
            s
        } else {
            Just(Properties::default()).boxed()
        }
    };
    let will = (
        arb_name(),
        arb_bytes(20),
        arb_qos(),
        any::<bool>(),
        props(arb_message_props().boxed()),
        0..100u32,
    )
        .prop_map(move |(t, p, qos, retain, mp, delay)| {
            let mut wp = mp.clone();
            if v5 && delay > 0 {
                wp.push(props::id::WILL_DELAY, Value::Four(delay));
            }
            Will {
                topic: Arc::from(t.as_str()),
                payload: Arc::from(p),
                qos,
                retain,
                props: pub_props(&wp),
            }
        });
    let connect_props = (
        proptest::option::of(any::<u32>()),
        proptest::option::of(1..=u16::MAX),
        arb_user(),
    )
        .prop_map(|(se, rm, user)| {
            let mut p = Properties::default();
            if let Some(n) = se {
                p.push(props::id::SESSION_EXPIRY, Value::Four(n));
            }
            if let Some(n) = rm {
                p.push(props::id::RECEIVE_MAXIMUM, Value::Two(n));
            }
            p.0.extend(user);
            p
        });
    let levels = if v5 {
        Just(Level::V5).boxed()
    } else {
        prop_oneof![Just(Level::V31), Just(Level::V311)].boxed()
    };
    let connect = (
        levels,
        arb_string(23),
        any::<bool>(),
        any::<u16>(),
        proptest::option::of(will),
        proptest::option::of((arb_string(10), proptest::option::of(arb_bytes(10)))),
        props(connect_props.boxed()),
    )
        .prop_map(
            |(level, client_id, clean, keep_alive, will, creds, props)| {
                let (username, password) = match creds {
                    Some((u, p)) => (Some(u), p),
                    None => (None, None),
                };
                Packet::Connect(Connect {
                    level,
                    client_id,
                    clean,
                    keep_alive,
                    username,
                    password,
                    will,
                    props,
                    bridge: false,
                })
            },
        );
    let publish = (
        arb_name(),
        arb_qos(),
        id.clone(),
        any::<bool>(),
        any::<bool>(),
        arb_bytes(64),
        props(arb_message_props().boxed()),
        proptest::collection::vec(1..=268_435_455u32, 0..3),
    )
        .prop_map(move |(t, qos, id, dup, retain, payload, mp, sub_ids)| {
            let qos0 = qos == QoS::AtMostOnce;
            let mut props = pub_props(&mp);
            if v5 && !sub_ids.is_empty() {
                let pp = props.get_or_insert_with(|| Arc::new(PubProps::default()));
                Arc::make_mut(pp).sub_ids = sub_ids;
            }
            Packet::Publish(Publish {
                dup: dup && !qos0,
                qos,
                retain,
                topic: Arc::from(t.as_str()),
                pkid: if qos0 { 0 } else { id },
                payload: Arc::from(payload),
                props,
            })
        });
    let options = (arb_qos(), any::<bool>(), any::<bool>(), 0..=2u8);
    let subscribe = (
        id.clone(),
        proptest::collection::vec((arb_filter(), options), 1..4),
        proptest::option::of(1..=268_435_455u32),
        props(arb_user().prop_map(Properties).boxed()),
    )
        .prop_map(move |(pkid, f, sub_id, props)| {
            Packet::Subscribe(Subscribe {
                pkid,
                filters: f
                    .into_iter()
                    .map(|(filter, (qos, nl, rap, rh))| SubscribeFilter {
                        filter,
                        qos,
                        no_local: nl && v5,
                        retain_as_published: rap && v5,
                        retain_handling: if v5 { rh } else { 0 },
                    })
                    .collect(),
                sub_id: sub_id.filter(|_| v5),
                props,
            })
        });
    let codes = if v5 {
        prop_oneof![
            Just(0u8),
            Just(1),
            Just(2),
            Just(0x80),
            Just(0x87),
            Just(0xA2)
        ]
        .boxed()
    } else {
        prop_oneof![Just(0u8), Just(1), Just(2), Just(0x80)].boxed()
    };
    let suback = (id.clone(), proptest::collection::vec(codes, 1..4))
        .prop_map(|(pkid, codes)| Packet::SubAck(SubAck { pkid, codes }));
    let unsubscribe = (id.clone(), proptest::collection::vec(arb_filter(), 1..4))
        .prop_map(|(pkid, filters)| Packet::Unsubscribe(Unsubscribe { pkid, filters }));
    let unsuback = (
        id.clone(),
        proptest::collection::vec(prop_oneof![Just(0u8), Just(0x11), Just(0x87)], 1..3),
    )
        .prop_map(move |(pkid, codes)| {
            Packet::UnsubAck(UnsubAck {
                pkid,
                codes: if v5 { codes } else { Vec::new() },
            })
        });
    let ack_reason = if v5 {
        prop_oneof![Just(0u8), Just(0x10), Just(0x87), Just(0x99)].boxed()
    } else {
        Just(0u8).boxed()
    };
    let rel_reason = if v5 {
        prop_oneof![Just(0u8), Just(0x92)].boxed()
    } else {
        Just(0u8).boxed()
    };
    let ack = (id.clone(), ack_reason).prop_map(|(pkid, reason)| Ack { pkid, reason });
    let rel = (id.clone(), rel_reason).prop_map(|(pkid, reason)| Ack { pkid, reason });
    let disconnect = (
        prop_oneof![Just(0u8), Just(0x04), Just(0x8E)],
        proptest::option::of(any::<u32>()),
    )
        .prop_map(move |(reason, se)| {
            let mut d = Disconnect::with(if v5 { reason } else { 0 });
            if let (true, Some(n)) = (v5, se) {
                d.props.push(props::id::SESSION_EXPIRY, Value::Four(n));
            }
            Packet::Disconnect(d)
        });
    let connack_props = (
        proptest::option::of(any::<u16>()),
        proptest::option::of(arb_string(10)),
        arb_user(),
    )
        .prop_map(|(ka, assigned, user)| {
            let mut p = Properties::default();
            if let Some(k) = ka {
                p.push(props::id::SERVER_KEEP_ALIVE, Value::Two(k));
            }
            if let Some(a) = assigned {
                p.push(props::id::ASSIGNED_CLIENT_ID, Value::Str(a));
            }
            p.0.extend(user);
            p
        });
    let connack = (any::<bool>(), any::<u8>(), props(connack_props.boxed())).prop_map(
        |(session_present, code, props)| {
            Packet::ConnAck(ConnAck {
                session_present,
                code,
                props,
            })
        },
    );
    prop_oneof![
        connect,
        connack,
        publish,
        ack.clone().prop_map(Packet::PubAck),
        ack.prop_map(Packet::PubRec),
        rel.clone().prop_map(Packet::PubRel),
        rel.prop_map(Packet::PubComp),
        subscribe,
        suback,
        unsubscribe,
        unsuback,
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect,
    ]
}

fn arb_level() -> impl Strategy<Value = Level> {
    prop_oneof![Just(Level::V31), Just(Level::V311), Just(Level::V5)]
}

proptest! {
    // Failing cases are kept beside this file, not in a top-level folder.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn round_trips_at_every_level((level, p) in arb_level().prop_flat_map(|l| (Just(l), arb_packet(l)))) {
        let level = match &p {
            Packet::Connect(c) => c.level,
            _ => level,
        };
        let mut bytes = Vec::new();
        encode(&p, level, &mut bytes);
        if let Packet::Publish(m) = &p {
            prop_assert_eq!(publish_len(m, level == Level::V5), bytes.len());
        }
        let got = decode_all(&bytes, level).map(|o| o.map(|(p, n)| (without_clock(p), n)));
        prop_assert_eq!(got, Ok(Some((without_clock(p), bytes.len()))));
    }

    #[test]
    fn random_bytes_never_panic(bytes in arb_bytes(300), level in arb_level()) {
        let _ = decode_all(&bytes, level);
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_or_incomplete(
        (level, p) in arb_level().prop_flat_map(|l| (Just(l), arb_packet(l))),
        flip in any::<(usize, u8)>(),
    ) {
        let mut bytes = Vec::new();
        encode(&p, level, &mut bytes);
        for n in 0..bytes.len() {
            // A prefix of a packet is never a whole packet of that length.
            if let Ok(Some((_, len))) = decode_all(&bytes[..n], level) {
                prop_assert!(len <= n);
            }
        }
        let i = flip.0 % bytes.len();
        bytes[i] ^= flip.1;
        let _ = decode_all(&bytes, level);
    }
}
