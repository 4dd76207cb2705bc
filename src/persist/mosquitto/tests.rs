//! Mosquitto files: one that Debian's mosquitto 2.0.11 wrote, files built
//! here for the states and versions it did not write, and damaged files.

use super::*;
use crate::persist::model::Model;
use proptest::prelude::*;

/// Written by Debian's mosquitto 2.0.11 (`tests/fixtures`), saved at Unix
/// time 1796624177: retained `r/1` (QoS 1) and `r/2` (MQTT 5: content
/// type, user property, expiry 3,600 s); session "sess" (MQTT 5, session
/// expiry 86,400 s, `q/#` QoS 1) with `q/a` (MQTT 5 properties) and `q/b`
/// queued; session "old" (user bob, `o/#` QoS 2) with `o/c` queued; "fly"
/// (`f/#` QoS 2) with `f/1` sent and not acknowledged; "pubber", whose
/// QoS 2 PUBLISH 6 waits for its PUBREL. Mosquitto 2.0.11 saved "fly" and
/// "pubber" with the username bytes left over from "old".
const DEBIAN: &[u8] = include_bytes!("../../../tests/fixtures/mosquitto-2.0.11.db");
const SAVED_AT: i64 = 1_796_624_177;

fn model(records: Vec<Record>) -> Model {
    let mut m = Model::default();
    for r in records {
        m.apply(r);
    }
    m
}

#[test]
fn reads_the_file_debian_mosquitto_wrote() {
    let read = decode(DEBIAN, SAVED_AT + 10);
    assert_eq!(read.version, Some(6));
    assert_eq!(read.decoded.damage, None);
    let m = model(read.decoded.records);
    assert_eq!(m.orphans, 0);
    let r = m.to_restored();
    let topics: Vec<&str> = r.retained.iter().map(|(p, _)| &*p.topic).collect();
    assert_eq!(topics, ["r/1", "r/2"]);
    let r2 = &r.retained[1].0;
    assert!(r2.retain);
    assert_eq!(&*r2.payload, b"two");
    let props = r2.props.as_deref().expect("r/2 has properties");
    let left = props.expiry.expect("r/2 expires");
    assert!((3_000..=3_600).contains(&left), "{left}");
    let fwd = props.forwarded();
    assert_eq!(
        fwd.str(crate::codec::props::id::CONTENT_TYPE),
        Some("text/plain")
    );
    assert_eq!(fwd.user().collect::<Vec<_>>(), [("k", "v")]);

    let ids: Vec<&str> = r.sessions.iter().map(|s| &*s.client_id).collect();
    assert_eq!(ids, ["fly", "old", "pubber", "sess"]);
    let s = |id: &str| r.sessions.iter().find(|s| s.client_id == id).expect(id);

    let sess = s("sess");
    assert_eq!(
        sess.subs,
        [("q/#".to_string(), SubOpts::qos(QoS::AtLeastOnce))]
    );
    assert!((86_000..=86_400).contains(&sess.expiry), "{}", sess.expiry);
    let queued: Vec<&str> = sess.state.pending.iter().map(|p| &*p.topic).collect();
    assert_eq!(queued, ["q/a", "q/b"]);
    let qa = &sess.state.pending[0];
    assert_eq!(qa.qos, QoS::AtLeastOnce);
    let fwd = qa.props.as_deref().expect("q/a has properties").forwarded();
    assert_eq!(fwd.str(crate::codec::props::id::CONTENT_TYPE), Some("ct"));
    assert_eq!(fwd.user().collect::<Vec<_>>(), [("x", "y")]);

    let old = s("old");
    assert_eq!(old.username.as_deref(), Some("bob"));
    assert_eq!(old.expiry, u32::MAX);
    assert_eq!(
        old.subs,
        [("o/#".to_string(), SubOpts::qos(QoS::ExactlyOnce))]
    );
    assert_eq!(old.state.pending.len(), 1);
    assert_eq!(old.state.pending[0].qos, QoS::ExactlyOnce);

    // The leftover username bytes are not text: no username.
    let fly = s("fly");
    assert_eq!(fly.username, None);
    let out: Vec<_> = fly.state.inflight.outgoing().cloned().collect();
    let [OutState::Sent(f1)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!((&*f1.topic, f1.pkid, f1.qos), ("f/1", 1, QoS::AtLeastOnce));
    assert!(fly.state.pending.is_empty());

    assert_eq!(s("pubber").state.inflight.incoming_qos2(), &[6]);
}

#[test]
fn expired_messages_and_sessions_are_left_out() {
    // A day and a bit later: r/2 and the session "sess" have expired.
    let read = decode(DEBIAN, SAVED_AT + 90_000);
    assert_eq!(read.decoded.damage, None);
    assert_eq!(read.expired, 2);
    let r = model(read.decoded.records).to_restored();
    assert_eq!(r.retained.len(), 1);
    assert!(r.sessions.iter().all(|s| s.client_id != "sess"));
    assert_eq!(r.sessions.len(), 3);
}

/// Builds Mosquitto files for the cases Debian's mosquitto did not write.
struct File(Vec<u8>);

impl File {
    fn new(version: u32) -> File {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&version.to_be_bytes());
        File(b)
    }

    fn chunk(mut self, kind: u32, body: &[u8]) -> File {
        self.0.extend_from_slice(&kind.to_be_bytes());
        self.0.extend_from_slice(&(body.len() as u32).to_be_bytes());
        self.0.extend_from_slice(body);
        self
    }

    fn msg(self, id: u64, topic: &str, payload: &[u8], qos: u8, props: &[u8]) -> File {
        let mut b = id.to_le_bytes().to_vec();
        b.extend_from_slice(&0i64.to_le_bytes());
        b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        b.extend_from_slice(&[0, 0, qos, 0]);
        b.extend_from_slice(topic.as_bytes());
        b.extend_from_slice(payload);
        b.extend_from_slice(props);
        self.chunk(MSG_STORE, &b)
    }

    fn client_msg(self, id: u64, mid: u16, client: &str, qos: u8, state: u8, dir: u8) -> File {
        let mut b = id.to_le_bytes().to_vec();
        b.extend_from_slice(&mid.to_be_bytes());
        b.extend_from_slice(&(client.len() as u16).to_be_bytes());
        b.extend_from_slice(&[qos, state, 0, dir]);
        b.extend_from_slice(client.as_bytes());
        self.chunk(CLIENT_MSG, &b)
    }

    /// A version 5 client chunk (no username).
    fn client_v5(self, client: &str, last_mid: u16) -> File {
        let mut b = 0i64.to_le_bytes().to_vec();
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        b.extend_from_slice(&last_mid.to_be_bytes());
        b.extend_from_slice(&(client.len() as u16).to_be_bytes());
        b.extend_from_slice(client.as_bytes());
        self.chunk(CLIENT, &b)
    }

    fn sub(self, client: &str, filter: &str, qos: u8, options: u8, sub_id: u32) -> File {
        let mut b = sub_id.to_be_bytes().to_vec();
        b.extend_from_slice(&(client.len() as u16).to_be_bytes());
        b.extend_from_slice(&(filter.len() as u16).to_be_bytes());
        b.extend_from_slice(&[qos, options, 0, 0]);
        b.extend_from_slice(client.as_bytes());
        b.extend_from_slice(filter.as_bytes());
        self.chunk(SUB, &b)
    }
}

/// Version 5 (Mosquitto 1.6) and every outgoing state midge keeps apart.
fn version5() -> Vec<u8> {
    File::new(5)
        .chunk(CFG, &[0; 16])
        .msg(1, "a/1", b"one", 1, &[])
        .msg(2, "a/2", b"two", 2, &[])
        .msg(3, "a/3", b"three", 2, &[])
        .msg(4, "a/4", b"four", 1, &[])
        .msg(5, "a/5", b"five", 0, &[])
        .chunk(RETAIN, &5u64.to_le_bytes())
        .chunk(99, b"unknown chunks are skipped")
        .client_v5("c", 7)
        .client_msg(1, 1, "c", 1, WAIT_FOR_PUBACK, 1)
        .client_msg(2, 2, "c", 2, WAIT_FOR_PUBREC, 1)
        .client_msg(3, 3, "c", 2, WAIT_FOR_PUBCOMP, 1)
        .client_msg(4, 4, "c", 1, 11, 1)
        .client_msg(9, 5, "c", 1, 11, 1)
        .client_msg(2, 8, "c", 2, WAIT_FOR_PUBREL, 0)
        .sub("c", "a/#", 2, 0x04 | 0x08, 42)
        .sub("c", "bad/#/filter", 1, 0, 0)
        .0
}

#[test]
fn reads_version_5_and_every_outgoing_state() {
    let read = decode(&version5(), 0);
    assert_eq!(read.version, Some(5));
    assert_eq!(read.decoded.damage, None);
    // Store id 9 is not in the file; the filter is not valid.
    assert_eq!(read.skipped, 2);
    let r = model(read.decoded.records).to_restored();
    assert_eq!(r.retained.len(), 1);
    assert_eq!(&*r.retained[0].0.topic, "a/5");
    let c = &r.sessions[0];
    assert_eq!((c.client_id.as_str(), c.username.as_deref()), ("c", None));
    assert_eq!(c.expiry, u32::MAX);
    assert_eq!(
        c.subs,
        [(
            "a/#".to_string(),
            SubOpts {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                sub_id: 42,
            }
        )]
    );
    let out: Vec<_> = c.state.inflight.outgoing().cloned().collect();
    assert_eq!(out.len(), 3);
    assert!(matches!(&out[0], OutState::Sent(p) if p.pkid == 1 && &*p.topic == "a/1"));
    assert!(matches!(&out[1], OutState::Sent(p) if p.pkid == 2 && p.qos == QoS::ExactlyOnce));
    assert_eq!(out[2], OutState::Released(3));
    assert_eq!(c.state.inflight.incoming_qos2(), &[8]);
    let queued: Vec<&str> = c.state.pending.iter().map(|p| &*p.topic).collect();
    assert_eq!(queued, ["a/4"]);
    assert_eq!(c.state.pending[0].pkid, 0);
}

#[test]
fn properties_and_the_subscription_identifier_are_kept() {
    // Content type "ct", then (a client message's) subscription id 7.
    let props = [5, 0x03, 0, 2, b'c', b't'];
    let file = File::new(6)
        .msg(1, "p", b"x", 1, &props)
        .chunk(CLIENT, &{
            let mut b = 0i64.to_le_bytes().to_vec();
            b.extend_from_slice(&u32::MAX.to_be_bytes());
            b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
            b.push(b'c');
            b
        })
        .chunk(CLIENT_MSG, &{
            let mut b = 1u64.to_le_bytes().to_vec();
            b.extend_from_slice(&[0, 0, 0, 1, 1, 11, 0x10, 1, b'c', 2, 0x0b, 7]);
            b
        });
    let read = decode(&file.0, 0);
    assert_eq!(read.decoded.damage, None);
    let r = model(read.decoded.records).to_restored();
    let p = &r.sessions[0].state.pending[0];
    assert!(p.retain, "retain from the client message's flags");
    let props = p.props.as_deref().expect("properties");
    assert_eq!(props.sub_ids, [7]);
    assert_eq!(
        props.forwarded().str(crate::codec::props::id::CONTENT_TYPE),
        Some("ct")
    );
}

#[test]
fn topics_and_filters_deeper_than_the_broker_accepts_are_left_out() {
    let deep = vec!["d"; 202].join("/");
    let ok = vec!["d"; 201].join("/");
    let file = File::new(5)
        .chunk(CFG, &[0; 16])
        .msg(1, &deep, b"deep", 0, &[])
        .msg(2, &ok, b"ok", 0, &[])
        .chunk(RETAIN, &1u64.to_le_bytes())
        .chunk(RETAIN, &2u64.to_le_bytes())
        .client_v5("c", 1)
        .sub("c", &deep, 1, 0, 0)
        .sub("c", "ok/#", 1, 0, 0)
        .0;
    let read = decode(&file, 0);
    assert_eq!(read.decoded.damage, None);
    assert_eq!(read.decoded.too_deep, 2);
    let r = model(read.decoded.records).to_restored();
    let retained: Vec<&str> = r.retained.iter().map(|m| &*m.0.topic).collect();
    assert_eq!(retained, [ok.as_str()]);
    let subs: Vec<&str> = r.sessions[0].subs.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(subs, ["ok/#"]);
}

#[test]
fn unknown_versions_are_refused() {
    for v in [0, 1, 7, 0x0600_0000] {
        let read = decode(&File::new(v).msg(1, "a", b"", 0, &[]).0, 0);
        assert!(read.refused(), "{v}");
        assert!(read.decoded.records.is_empty());
    }
}

/// A u16 length and the bytes, as versions 2 to 4 write strings.
fn string(s: &str) -> Vec<u8> {
    let mut b = (s.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(s.as_bytes());
    b
}

/// A file of version 2, 3 or 4 (Mosquitto 1.5 and before): chunk headers
/// of 6 bytes, fields in turn.
fn old_file(version: u32) -> Vec<u8> {
    let mut out = File::new(version).0;
    let mut chunk = |kind: u16, parts: &[&[u8]]| {
        let body = parts.concat();
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
    };
    let msg = |id: u64, topic: &str, qos: u8, payload: &[u8]| {
        let mut b = id.to_le_bytes().to_vec();
        b.extend(string("publisher"));
        if version == 4 {
            b.extend(string("alice"));
            b.extend_from_slice(&1883u16.to_be_bytes());
        }
        b.extend_from_slice(&[0, 7, 0, 0]);
        b.extend(string(topic));
        b.extend_from_slice(&[qos, 1]);
        b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        b.extend_from_slice(payload);
        b
    };
    let client_msg = |id: u64, mid: u16, qos: u8, dir: u8, state: u8| {
        let mut b = string("old");
        b.extend_from_slice(&id.to_le_bytes());
        b.extend_from_slice(&mid.to_be_bytes());
        b.extend_from_slice(&[qos, 0, dir, state, 1]);
        b
    };
    chunk(CFG as u16, &[&[1, 8], &9u64.to_le_bytes()]);
    chunk(MSG_STORE as u16, &[&msg(1, "ha/config", 1, b"{}")]);
    chunk(MSG_STORE as u16, &[&msg(2, "o/1", 2, b"queued")]);
    chunk(MSG_STORE as u16, &[&msg(3, "o/2", 1, b"in flight")]);
    chunk(RETAIN as u16, &[&1u64.to_le_bytes()]);
    // The disconnect time: none in version 2, a 32-bit time_t in 3.
    let time: &[u8] = [&[][..], &[0; 4], &[0; 8]][(version - 2) as usize];
    chunk(CLIENT as u16, &[&string("old"), &[0, 4], time]);
    chunk(CLIENT_MSG as u16, &[&client_msg(2, 0, 2, 1, 11)]);
    chunk(
        CLIENT_MSG as u16,
        &[&client_msg(3, 4, 1, 1, WAIT_FOR_PUBACK)],
    );
    chunk(SUB as u16, &[&string("old"), &string("o/#"), &[2]]);
    out
}

#[test]
fn reads_versions_2_to_4() {
    for version in 2..=4 {
        let read = decode(&old_file(version), 0);
        assert_eq!(read.version, Some(version));
        assert_eq!(read.decoded.damage, None, "{version}");
        let m = model(read.decoded.records);
        assert_eq!(m.orphans, 0);
        let r = m.to_restored();
        let (retained, source) = &r.retained[0];
        assert_eq!(
            (&*retained.topic, &*retained.payload),
            ("ha/config", &b"{}"[..])
        );
        assert_eq!((retained.qos, retained.retain), (QoS::AtLeastOnce, true));
        let source = source.as_ref().expect("source");
        assert_eq!(source.client_id, "publisher");
        let user = (version == 4).then(|| "alice".to_string());
        assert_eq!(source.username, user);
        let s = &r.sessions[0];
        assert_eq!((s.client_id.as_str(), s.expiry), ("old", u32::MAX));
        assert_eq!(
            s.subs,
            [("o/#".to_string(), SubOpts::qos(QoS::ExactlyOnce))]
        );
        let queued: Vec<&str> = s.state.pending.iter().map(|p| &*p.topic).collect();
        assert_eq!(queued, ["o/1"]);
        let out: Vec<_> = s.state.inflight.outgoing().cloned().collect();
        assert!(
            matches!(&out[..], [OutState::Sent(p)] if p.pkid == 4 && p.dup && &*p.payload == b"in flight"),
            "{out:?}"
        );
        assert_eq!(s.state.inflight.last_id(), 4);
    }
}

#[test]
fn what_is_mosquittos() {
    assert!(is_mosquitto(DEBIAN));
    assert!(is_mosquitto(&MAGIC[..3]));
    assert!(!is_mosquitto(&MAGIC[..2]));
    assert!(!is_mosquitto(b"MIDGEDB\0"));
    assert!(decode(&MAGIC[..10], 0).refused());
}

/// Cut at every byte: never a panic, damage unless the cut falls between
/// two chunks, and never more than the whole file gives.
#[test]
fn a_cut_file_gives_back_its_intact_chunks() {
    for file in [DEBIAN.to_vec(), version5(), old_file(4)] {
        let whole = decode(&file, SAVED_AT).decoded.records.len();
        for n in 0..file.len() {
            let read = decode(&file[..n], SAVED_AT);
            assert_eq!(
                read.decoded.damage.is_none(),
                n == HEADER_LEN || boundary(&file, n)
            );
            assert!(read.decoded.records.len() <= whole);
            let _ = model(read.decoded.records);
        }
    }
}

/// Whether `n` is where a chunk of `file` starts or the file ends.
fn boundary(file: &[u8], n: usize) -> bool {
    let head = if be32(&file[19..23]) < 5 { 6 } else { 8 };
    let mut pos = HEADER_LEN;
    while pos < n {
        pos += head + be32(&file[pos + head - 4..pos + head]) as usize;
    }
    pos == n
}

/// Every byte changed in turn: never a panic.
#[test]
fn a_garbled_file_never_panics() {
    for file in [DEBIAN.to_vec(), version5(), old_file(3)] {
        for i in 0..file.len() {
            for x in [0x00, 0xff, 0x80, 0x01] {
                let mut b = file.clone();
                b[i] ^= x;
                let read = decode(&b, SAVED_AT);
                let _ = model(read.decoded.records);
            }
        }
    }
}

proptest! {
    #[test]
    fn random_chunks_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..512),
        version in 2u32..7,
    ) {
        let mut b = File::new(version).0;
        b.extend_from_slice(&tail);
        let _ = decode(&b, 0);
    }

    #[test]
    fn random_bodies_of_each_chunk_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..96),
        kind in 1u32..7,
        version in 5u32..7,
    ) {
        let b = File::new(version).msg(1, "a", b"x", 1, &[]).chunk(kind, &body).0;
        let _ = model(decode(&b, 0).decoded.records);
    }

    #[test]
    fn random_bodies_of_each_old_chunk_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..64),
        kind in 1u16..7,
        version in 2u32..5,
    ) {
        let mut b = old_file(version);
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&(body.len() as u32).to_be_bytes());
        b.extend_from_slice(&body);
        let _ = model(decode(&b, 0).decoded.records);
    }
}
