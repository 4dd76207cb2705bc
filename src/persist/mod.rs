//! Persistence: retained messages and persistent sessions saved to one
//! file and restored at start-up (`persistence true`, as Mosquitto).
//!
//! Where it sits in the data path: the router owns the state, so the router
//! serializes a snapshot ([`format::Encoder`], in `router/persist.rs`) and
//! hands the bytes to the [`writer::Writer`] thread, which writes them to a
//! temporary file, fsyncs it, renames it over the file and fsyncs the
//! directory. The router never waits for the disk. At start-up, before any
//! listener accepts, [`load`] reads the file back; a damaged file gives up
//! every intact record before the damage and is moved aside, never deleted.
//!
//! docs/PERSISTENCE.md says what survives what.

pub mod format;
pub mod writer;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{info, warn};

use crate::client::inflight::{Inflight, OutState, SessionState};
use crate::router::SubOpts;
use crate::codec::Publish;
use crate::config::Persistence;
use format::{Damage, Record, SavedSource};

/// `persistence_location` joined with `persistence_file` (Mosquitto: the
/// location is a prefix, the working directory when unset).
pub fn file_path(p: &Persistence) -> PathBuf {
    match &p.location {
        Some(dir) => dir.join(&p.file),
        None => PathBuf::from(&p.file),
    }
}

/// A persistent session as it was saved.
#[derive(Debug, Default)]
pub struct SavedSession {
    pub client_id: String,
    pub username: Option<String>,
    pub scope: u32,
    /// The session expiry interval (u32::MAX: never).
    pub expiry: u32,
    pub subs: Vec<(String, SubOpts)>,
    pub state: SessionState,
}

/// Everything a file gave back, ready for [`crate::router::Router::restore`].
#[derive(Debug, Default)]
pub struct Restored {
    pub retained: Vec<(Publish, Option<SavedSource>)>,
    pub sessions: Vec<SavedSession>,
}

impl Restored {
    /// Groups decoded records by session. A record for a session the file
    /// does not hold (only a damaged or foreign file has one) is skipped
    /// and counted in the second value.
    pub fn from_records(records: Vec<Record>) -> (Restored, usize) {
        let mut r = Restored::default();
        let mut index: HashMap<String, usize> = HashMap::new();
        // Per session: outgoing states, incoming ids, last id, in order.
        let mut inflight: Vec<(Vec<OutState>, Vec<u16>, u16)> = Vec::new();
        let mut orphans = 0;
        for rec in records {
            let (client_id, item) = match rec {
                Record::Retained { publish, source } => {
                    r.retained.push((publish, source));
                    continue;
                }
                Record::Session {
                    client_id,
                    username,
                    scope,
                    last_id,
                    expiry,
                } => {
                    if index.contains_key(&client_id) {
                        orphans += 1;
                        continue;
                    }
                    index.insert(client_id.clone(), r.sessions.len());
                    r.sessions.push(SavedSession {
                        client_id,
                        username,
                        scope,
                        expiry,
                        ..SavedSession::default()
                    });
                    inflight.push((Vec::new(), Vec::new(), last_id));
                    continue;
                }
                Record::Subscription {
                    client_id,
                    filter,
                    opts,
                } => (client_id, Item::Sub(filter, opts)),
                Record::Queued { client_id, publish } => (client_id, Item::Queued(publish)),
                Record::Outgoing { client_id, state } => (client_id, Item::Out(state)),
                Record::IncomingQos2 { client_id, pkid } => (client_id, Item::In(pkid)),
            };
            let Some(&i) = index.get(&client_id) else {
                orphans += 1;
                continue;
            };
            match item {
                Item::Sub(f, q) => r.sessions[i].subs.push((f, q)),
                Item::Queued(p) => r.sessions[i].state.pending.push_back(p),
                Item::Out(s) => inflight[i].0.push(s),
                Item::In(id) => inflight[i].1.push(id),
            }
        }
        for (s, (out, incoming, last_id)) in r.sessions.iter_mut().zip(inflight) {
            s.state.inflight = Inflight::restore(out, incoming, last_id);
        }
        (r, orphans)
    }
}

enum Item {
    Sub(String, SubOpts),
    Queued(Publish),
    Out(OutState),
    In(u16),
}

/// Check mode (`midge -t`): the directory must exist and the file, when
/// there is one, must read. Damage is reported (the broker would restore
/// the records before it and set the file aside), not repaired.
pub fn check(p: &Persistence) -> Result<Option<String>, String> {
    let path = file_path(p);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(format!(
                "persistence_location {}: no such directory (midge saves its state there)",
                dir.display()
            ));
        }
    }
    match std::fs::read(&path) {
        Ok(bytes) => Ok(format::decode(&bytes).damage.map(|d| {
            format!(
                "Warning: persistence file {} is damaged ({d}); at start midge restores the \
                 records before the damage and sets the file aside.",
                path.display()
            )
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "unable to read persistence file {}: {e}",
            path.display()
        )),
    }
}

/// Reads the file at `path`. A missing file is an empty state. A file that
/// exists but cannot be read is an error: starting empty would overwrite it
/// at the next save. A damaged file gives back its intact records, is
/// logged and moved aside.
pub fn load(path: &Path) -> Result<Restored, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            info!(
                "No persistence file {} yet: starting with an empty state.",
                path.display()
            );
            return Ok(Restored::default());
        }
        Err(e) => {
            return Err(format!(
                "unable to read persistence file {}: {e}",
                path.display()
            ));
        }
    };
    info!("Restoring in-memory database from {}.", path.display());
    let decoded = format::decode(&bytes);
    let kept = decoded.records.len();
    let (restored, orphans) = Restored::from_records(decoded.records);
    if orphans > 0 {
        warn!(
            "Warning: {orphans} record(s) of {} name a session the file does not hold; skipped.",
            path.display()
        );
    }
    if let Some(damage) = decoded.damage {
        set_aside(path, &damage, kept, bytes.len());
    }
    info!(
        "Restored {} retained message(s) and {} persistent session(s).",
        restored.retained.len(),
        restored.sessions.len()
    );
    Ok(restored)
}

/// Logs the damage and renames the file to `<file>.corrupt-<unix time>`
/// (with `-N` added if that name is taken), so the next save cannot
/// overwrite what a person may still want to look at.
fn set_aside(path: &Path, damage: &Damage, kept: usize, len: usize) {
    warn!(
        "Warning: persistence file {} is damaged ({damage}): restored the {kept} intact \
         record(s) before it, skipped the remaining {} byte(s).",
        path.display(),
        len.saturating_sub(damage.offset)
    );
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".corrupt-{secs}"));
    let mut aside = PathBuf::from(&name);
    let mut n = 1;
    while aside.exists() {
        let mut other = name.clone();
        other.push(format!("-{n}"));
        aside = PathBuf::from(other);
        n += 1;
    }
    match std::fs::rename(path, &aside) {
        Ok(()) => warn!("Warning: moved the damaged file to {}.", aside.display()),
        Err(e) => warn!(
            "Warning: unable to move the damaged file {} aside: {e}; the next save replaces it.",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_grouped_by_session_and_orphans_counted() {
        let p = Publish::retained("t", b"x");
        let records = vec![
            Record::Subscription {
                client_id: "ghost".into(),
                filter: "a".into(),
                opts: SubOpts::qos(crate::codec::QoS::AtMostOnce),
            },
            Record::Session {
                client_id: "s".into(),
                username: None,
                scope: 0,
                last_id: 4,
                expiry: u32::MAX,
            },
            Record::Queued {
                client_id: "s".into(),
                publish: p.clone(),
            },
            Record::IncomingQos2 {
                client_id: "s".into(),
                pkid: 3,
            },
        ];
        let (r, orphans) = Restored::from_records(records);
        assert_eq!(orphans, 1);
        assert_eq!(r.sessions.len(), 1);
        assert_eq!(r.sessions[0].state.pending.len(), 1);
        assert_eq!(r.sessions[0].state.inflight.incoming_qos2(), &[3]);
        assert_eq!(r.sessions[0].state.inflight.last_id(), 4);
    }
}
