//! Damaged files: cut at every byte, zero-filled from every byte, random
//! bytes. Decoding never panics and returns exactly the intact prefix.

use super::*;
use proptest::prelude::*;

fn publish(topic: &str, payload: &[u8], qos: QoS, pkid: u16) -> Publish {
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

/// A small state with one record of every kind.
fn sample() -> Vec<Record> {
    let mut retained = publish("r/1", b"kept", QoS::AtLeastOnce, 0);
    retained.retain = true;
    vec![
        Record::Retained {
            publish: retained.clone(),
            source: None,
        },
        Record::Retained {
            publish: publish("r/2", b"with source", QoS::AtMostOnce, 0),
            source: Some(SavedSource {
                client_id: "pub".into(),
                username: Some("u".into()),
                scope: 3,
            }),
        },
        Record::Session {
            client_id: "s1".into(),
            username: None,
            scope: 0,
            last_id: 7,
            expiry: u32::MAX,
        },
        Record::Subscription {
            client_id: "s1".into(),
            filter: "a/#".into(),
            opts: SubOpts::qos(QoS::ExactlyOnce),
        },
        Record::Queued {
            client_id: "s1".into(),
            publish: publish("a/q", b"queued", QoS::AtLeastOnce, 0),
        },
        // MQTT 5: the subscription identifiers it is delivered with.
        Record::Queued {
            client_id: "s1".into(),
            publish: Publish {
                props: Some(Arc::new(PubProps {
                    sub_ids: vec![53, 7],
                    utf8: true,
                    ..PubProps::default()
                })),
                ..publish("a/q5", b"queued 5", QoS::AtLeastOnce, 0)
            },
        },
        Record::Outgoing {
            client_id: "s1".into(),
            state: OutState::Sent(publish("a/s", b"sent", QoS::ExactlyOnce, 5)),
        },
        Record::Outgoing {
            client_id: "s1".into(),
            state: OutState::Released(6),
        },
        Record::IncomingQos2 {
            client_id: "s1".into(),
            pkid: 9,
        },
    ]
}

fn encode(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
    let mut e = Encoder::new();
    // Where each record ends: a prefix up to it holds it whole.
    let mut ends = Vec::new();
    for r in records {
        e.record(r);
        ends.push(e.out.len());
    }
    (e.finish(), ends)
}

#[test]
fn round_trip() {
    let (bytes, _) = encode(&sample());
    let d = decode(&bytes);
    assert_eq!(d.damage, None);
    assert_eq!(d.records, sample());
}

#[test]
fn records_with_topics_too_deep_are_left_out_and_the_file_is_not_damaged() {
    let deep = vec!["d"; 202].join("/");
    let mut records = sample();
    records.insert(
        1,
        Record::Retained {
            publish: publish(&deep, b"deep", QoS::AtMostOnce, 0),
            source: None,
        },
    );
    records.push(Record::Subscription {
        client_id: "s1".into(),
        filter: format!("{deep}/#"),
        opts: SubOpts::qos(QoS::AtMostOnce),
    });
    records.push(Record::Queued {
        client_id: "s1".into(),
        publish: publish(&deep, b"deep", QoS::AtLeastOnce, 0),
    });
    let (bytes, _) = encode(&records);
    let d = decode(&bytes);
    assert_eq!(d.damage, None);
    assert_eq!(d.too_deep, 3);
    assert_eq!(d.records, sample());
}

#[test]
fn crc32_known_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

/// Damages the sample at every offset with `damage(bytes, at)` and checks
/// that exactly the records ending at or before `at` come back, with the
/// damage reported at or before `at`.
fn damaged_everywhere(what: &str, damage: impl Fn(&[u8], usize) -> Vec<u8>) {
    let records = sample();
    let (bytes, ends) = encode(&records);
    for at in 0..bytes.len() {
        let d = decode(&damage(&bytes, at));
        let whole = ends.iter().filter(|&&e| e <= at).count();
        assert_eq!(d.records, records[..whole], "{what} at {at}");
        let found = d
            .damage
            .unwrap_or_else(|| panic!("{what} at {at} not noticed"));
        assert!(found.offset <= at, "{what} at {at}: {found}");
    }
}

#[test]
fn cut_at_every_offset_keeps_the_whole_records_before_the_cut() {
    damaged_everywhere("cut", |b, at| b[..at].to_vec());
}

#[test]
fn zeros_from_every_offset_keep_the_whole_records_before_them() {
    damaged_everywhere("zeros", |b, at| {
        let mut b = b.to_vec();
        b[at..].fill(0);
        b
    });
}

#[test]
fn a_flipped_bit_anywhere_is_noticed() {
    damaged_everywhere("flipped bit", |b, at| {
        let mut b = b.to_vec();
        b[at] ^= 0x10;
        b
    });
}

#[test]
fn other_versions_and_files_are_refused_whole() {
    let (mut bytes, _) = encode(&sample());
    bytes[9] = (VERSION + 1) as u8;
    let crc = crc32(&bytes[..12]);
    bytes[12..16].copy_from_slice(&crc.to_be_bytes());
    let d = decode(&bytes);
    assert!(d.records.is_empty());
    assert_eq!(
        d.damage.map(|x| x.reason),
        Some("unsupported file format version")
    );
    let d = decode(b"SQLite format 3\0 and the rest of some other file");
    assert_eq!(
        d.damage.map(|x| x.reason),
        Some("not a midge persistence file")
    );
}

#[test]
fn bytes_after_the_end_are_noticed_but_everything_is_restored() {
    let (mut bytes, _) = encode(&sample());
    bytes.extend_from_slice(b"junk");
    let d = decode(&bytes);
    assert_eq!(d.records, sample());
    assert!(d.damage.is_some());
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut b = Encoder::new().out;
        b.extend_from_slice(&tail);
        let _ = decode(&b);
    }
}

#[test]
fn a_well_formed_record_with_a_wildcard_topic_is_refused() {
    let mut e = Encoder::new();
    e.record(&Record::Retained {
        publish: publish("a/+/b", b"x", QoS::AtMostOnce, 0),
        source: None,
    });
    let d = decode(&e.finish());
    assert!(d.records.is_empty());
    assert_eq!(
        d.damage.map(|x| x.reason),
        Some("record that does not parse")
    );
}

/// A journal of generation 3 holding the sample plus the journal-only
/// records, and where each record ends.
fn journal_sample() -> (Vec<Record>, Vec<u8>, Vec<usize>) {
    let mut records = sample();
    records.extend([
        Record::Sent {
            client_id: "s1".into(),
            pkid: 8,
            check: 0xdead_beef,
        },
        Record::Progress {
            client_id: "s1".into(),
            pkid: 8,
            step: Step::Received,
        },
        Record::Unsubscription {
            client_id: "s1".into(),
            filter: "a/#".into(),
        },
        Record::SessionEnd {
            client_id: "s1".into(),
        },
    ]);
    let mut bytes = journal_header(3);
    let mut ends = Vec::new();
    for r in &records {
        encode_record(r, &mut bytes);
        ends.push(bytes.len());
    }
    (records, bytes, ends)
}

#[test]
fn a_journal_round_trips() {
    let (records, bytes, _) = journal_sample();
    let (generation, d) = decode_journal(&bytes);
    assert_eq!(generation, Some(3));
    assert_eq!(d.damage, None);
    assert_eq!(d.records, records);
}

/// As [`damaged_everywhere`], for a journal: a cut exactly after a record
/// is a whole journal (it has no end record).
fn journal_damaged_everywhere(what: &str, damage: impl Fn(&[u8], usize) -> Vec<u8>) {
    let (records, bytes, ends) = journal_sample();
    for at in 0..bytes.len() {
        let (_, d) = decode_journal(&damage(&bytes, at));
        let whole = ends.iter().filter(|&&e| e <= at).count();
        assert_eq!(d.records, records[..whole], "{what} at {at}");
        let clean_cut = at == JOURNAL_HEADER_LEN || ends.contains(&at);
        match d.damage {
            Some(found) => assert!(found.offset <= at, "{what} at {at}: {found}"),
            None => assert!(clean_cut && what == "cut", "{what} at {at} not noticed"),
        }
    }
}

#[test]
fn a_journal_cut_at_every_offset_keeps_the_whole_records_before_the_cut() {
    journal_damaged_everywhere("cut", |b, at| b[..at].to_vec());
}

#[test]
fn a_journal_zeroed_from_every_offset_keeps_the_whole_records_before() {
    journal_damaged_everywhere("zeros", |b, at| {
        let mut b = b.to_vec();
        b[at..].fill(0);
        b
    });
}

#[test]
fn a_flipped_bit_anywhere_in_a_journal_is_noticed() {
    journal_damaged_everywhere("flipped bit", |b, at| {
        let mut b = b.to_vec();
        b[at] ^= 0x10;
        b
    });
}

proptest! {
    #[test]
    fn random_journal_bytes_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..512),
        keep in 0usize..200,
    ) {
        let (_, good, _) = journal_sample();
        let mut b = good[..keep.min(good.len())].to_vec();
        b.extend_from_slice(&tail);
        let _ = decode_journal(&b);
        let _ = decode_journal(&tail);
    }
}

/// A file written before MQTT 5 (version 1: no session expiry, no
/// subscription options) is read whole: its sessions never expire and its
/// subscriptions have 3.1.1's options.
#[test]
fn version_1_files_are_still_read() {
    let record = |out: &mut Vec<u8>, kind: u8, body: &[u8]| {
        let start = out.len();
        out.push(kind);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    };
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&1u16.to_be_bytes());
    bytes.extend_from_slice(&0u16.to_be_bytes());
    let crc = crc32(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    // SESSION: client id "s", no user name, scope 0, last id 7.
    record(&mut bytes, 2, &[0, 1, b's', 0, 0, 0, 0, 0, 0, 7]);
    // SUBSCRIPTION: "s", filter "a/#", QoS 2.
    record(&mut bytes, 3, &[0, 1, b's', 0, 3, b'a', b'/', b'#', 2]);
    record(&mut bytes, 0xff, &2u64.to_be_bytes());
    let d = decode(&bytes);
    assert_eq!(d.damage, None);
    assert_eq!(
        d.records,
        vec![
            Record::Session {
                client_id: "s".into(),
                username: None,
                scope: 0,
                last_id: 7,
                expiry: u32::MAX,
            },
            Record::Subscription {
                client_id: "s".into(),
                filter: "a/#".into(),
                opts: SubOpts::qos(QoS::ExactlyOnce),
            },
        ]
    );
}
