//! Entry points for the fuzz targets of `fuzz/` (`make fuzz`), one per
//! input the broker reads from outside: packets from the network, the
//! config file, the password and ACL files, the persistence file.
//!
//! They live in the library, not in `fuzz/`, so that `cargo test` replays
//! the committed corpus (`fuzz/seeds/TARGET/`, every input that ever
//! crashed plus a few valid ones) through exactly the code the fuzzer ran
//! (tests/fuzz_corpus.rs). Each function must return for every input; a
//! panic is a bug. Not part of the broker's API.

use std::path::Path;
use std::sync::Arc;

use crate::auth::Auth;
use crate::auth::acl::{self, AclFile};
use crate::auth::passwd::Passwords;
use crate::codec::{self, Level, Packet};
use crate::config::Config;
use crate::persist::{self, format};
use crate::router::{Metrics, Router};

/// What a fuzz target runs on one input.
pub type Entry = fn(&[u8]);

/// The fuzz targets, by the name of their file in `fuzz/fuzz_targets/`
/// and of their seed folder.
pub const TARGETS: &[(&str, Entry)] = &[
    ("decode", decode),
    ("config", config),
    ("passwd", passwd),
    ("acl", acl_file),
    ("persist", persist_file),
];

/// Packets as a client sends them. The first byte is the protocol level
/// of the connection (3, 4 or 5; other values are taken modulo 3 from 3),
/// the rest a byte stream cut into packets as a client thread does. Every
/// packet that decodes must encode to bytes that decode to the same packet.
pub fn decode(data: &[u8]) {
    let Some((&first, mut stream)) = data.split_first() else {
        return;
    };
    let level = match first {
        3 => Level::V31,
        4 => Level::V311,
        5 => Level::V5,
        n => [Level::V31, Level::V311, Level::V5][usize::from(n % 3)],
    };
    // A small limit, so the fuzzer also reaches "packet too large".
    let max = if first & 0x80 != 0 { 64 } else { 1 << 20 };
    loop {
        let h = match codec::check(stream, max) {
            Ok(Some(h)) => h,
            Ok(None) | Err(_) => return,
        };
        let Some(body) = stream.get(h.header_len..h.total_len()) else {
            return;
        };
        if let Ok(p) = codec::decode(&h, body, level) {
            round_trip(&p, level);
        }
        stream = &stream[h.total_len()..];
    }
}

/// Encoding a decoded packet and decoding it again gives the same packet.
fn round_trip(p: &Packet, level: Level) {
    let level = match p {
        Packet::Connect(c) => c.level,
        _ => level,
    };
    let mut out = Vec::new();
    codec::encode(p, level, &mut out);
    let again = codec::check(&out, usize::MAX)
        .ok()
        .flatten()
        .and_then(|h| codec::decode(&h, out.get(h.header_len..)?, level).ok());
    assert_eq!(
        again.map(without_clock),
        Some(without_clock(p.clone())),
        "re-encoded as {out:?}"
    );
}

/// A packet without the instants its message expiry was read at (a
/// second decode reads the same interval at a later instant); also used by
/// the codec's round-trip property test.
pub fn without_clock(mut p: Packet) -> Packet {
    let clear = |pp: &mut Option<std::sync::Arc<codec::PubProps>>| {
        if let Some(pp) = pp {
            std::sync::Arc::make_mut(pp).expires_at = None;
        }
    };
    match &mut p {
        Packet::Publish(m) => clear(&mut m.props),
        Packet::Connect(c) => {
            if let Some(w) = &mut c.will {
                clear(&mut w.props);
            }
        }
        _ => {}
    }
    p
}

/// A config file. `include_dir` is left out: it reads other files, and the
/// fuzzer would find the machine's.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("include_dir") {
        return;
    }
    if let Ok(c) = Config::parse(text, Path::new("/nonexistent/fuzz.conf")) {
        for l in &c.listeners {
            let _ = c.allow_anonymous(l);
        }
    }
}

/// A password file; a parsed file is asked about a user and a password.
pub fn passwd(data: &[u8]) {
    if let Ok(p) = Passwords::parse(Path::new("fuzz.passwd"), data) {
        // Only `$6$` hashes: a `$7$` line names its own iteration count,
        // and a large one is slow by design, not a bug.
        if !data.windows(3).any(|w| w == b"$7$") {
            let _ = p.verify("user", Some(b"password"));
        }
    }
}

/// An ACL file, then a check. The input is `FILE\0USER\0CLIENT-ID\0TOPIC`;
/// an empty user is no user name.
pub fn acl_file(data: &[u8]) {
    let mut parts = data.splitn(4, |&b| b == 0);
    let file = parts.next().unwrap_or_default();
    let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
    let (user, client_id, topic) = (text(parts.next()), text(parts.next()), text(parts.next()));
    let Ok(a) = AclFile::parse(Path::new("fuzz.acl"), file) else {
        return;
    };
    let s = a.subject((!user.is_empty()).then_some(user.as_str()), &client_id);
    if crate::topic::valid_name(&topic) {
        for access in [acl::READ, acl::WRITE] {
            let _ = s.allows(&topic, access);
        }
    }
}

/// A persistence file (midge's, or Mosquitto's when it starts with
/// Mosquitto's header), decoded and restored into a router. With the first
/// byte odd, the rest is a list of records `KIND LEN(u16) BODY` that this
/// function frames with valid lengths and checksums, so the fuzzer reaches
/// the record bodies instead of stopping at a checksum.
pub fn persist_file(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let bytes = if first & 1 == 1 {
        frame(rest)
    } else {
        rest.to_vec()
    };
    let decoded = if persist::mosquitto::is_mosquitto(&bytes) {
        persist::mosquitto::decode(&bytes, 0).decoded
    } else {
        format::decode(&bytes)
    };
    let (restored, _) = persist::Restored::from_records(decoded.records);
    let metrics = Arc::new(Metrics::default());
    let mut router = Router::new(Arc::default(), metrics, Arc::new(Auth::default()));
    router.restore(restored);
}

/// A persistence file around fuzzer-chosen records (see [`persist_file`]).
fn frame(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(format::MAGIC);
    out.extend_from_slice(&format::VERSION.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    let crc = format::crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    let mut count = 0u64;
    while let [kind, a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
        record(&mut out, *kind, &tail[..len]);
        count += 1;
        rest = &tail[len..];
    }
    record(&mut out, 0xff, &count.to_be_bytes());
    out
}

/// Appends one record with its length and checksum.
fn record(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    let start = out.len();
    out.push(kind);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    let crc = format::crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}
