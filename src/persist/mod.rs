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
pub mod journal;
pub mod model;
pub mod mosquitto;
pub mod writer;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{info, warn};

use crate::codec::Publish;
use crate::config::Persistence;
use crate::session::SubOpts;
use crate::session::inflight::SessionState;
use format::{Damage, Record, SavedSource};
pub use model::Model;

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
    /// Applies decoded records in order. A record for a session the file
    /// does not hold (only a damaged or foreign file has one) is skipped
    /// and counted in the second value.
    pub fn from_records(records: Vec<Record>) -> (Restored, usize) {
        let mut m = Model::default();
        for r in records {
            m.apply(r);
        }
        (m.to_restored(), m.orphans)
    }
}

/// Appends the records of one persistent session, the session first. The
/// in-flight and queued messages (`state`) are left out when the router
/// does not hold them (the client is connected).
pub fn encode_session<'a>(
    e: &mut format::Encoder,
    client_id: &str,
    who: (Option<&str>, u32),
    expiry: u32,
    subs: impl IntoIterator<Item = (&'a String, &'a SubOpts)>,
    state: Option<&SessionState>,
) {
    let id = || client_id.to_string();
    e.record(&Record::Session {
        client_id: id(),
        username: who.0.map(str::to_string),
        scope: who.1,
        last_id: state.map_or(0, |s| s.inflight.last_id()),
        expiry,
    });
    for (filter, opts) in subs {
        e.record(&Record::Subscription {
            client_id: id(),
            filter: filter.clone(),
            opts: *opts,
        });
    }
    let Some(state) = state else { return };
    for out in state.inflight.outgoing() {
        e.record(&Record::Outgoing {
            client_id: id(),
            state: out.clone(),
        });
    }
    for &pkid in state.inflight.incoming_qos2() {
        e.record(&Record::IncomingQos2 {
            client_id: id(),
            pkid,
        });
    }
    for p in &state.pending {
        e.record(&Record::Queued {
            client_id: id(),
            publish: p.clone(),
        });
    }
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
        Ok(bytes) if mosquitto::is_mosquitto(&bytes) => {
            let read = mosquitto::decode(&bytes, unix_now());
            let what = match &read.decoded.damage {
                None => return Ok(None),
                Some(d) if read.refused() => format!("{}: midge restores nothing", d.reason),
                Some(d) => format!("damaged ({d}): midge restores what comes before"),
            };
            Ok(Some(format!(
                "Warning: persistence file {} is Mosquitto's, {what}; it leaves the file \
                 untouched and saves its own state to {}.",
                path.display(),
                own_path(&path).display()
            )))
        }
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

/// Where midge saves its own state when `persistence_file` is Mosquitto's:
/// `<file>.midge`, beside it.
pub fn own_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".midge");
    PathBuf::from(name)
}

/// Start-up: reads the state for `persistence_file` `path` and returns the
/// file midge saves to from now on with it.
///
/// When `path` is Mosquitto's file, midge never writes to it: it saves to
/// [`own_path`] instead, and reads that file in preference from then on,
/// unless Mosquitto saved its file again since (a switch back and forth).
/// Any other file is read and saved as before.
pub fn load_start(path: &Path) -> Result<(PathBuf, Loaded), String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(format!(
                "unable to read persistence file {}: {e}",
                path.display()
            ));
        }
    };
    let own = own_path(path);
    let own_saved = saved_at(&own);
    match bytes {
        Some(bytes) if mosquitto::is_mosquitto(&bytes) => {
            let theirs = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            if own_saved.is_some() && own_saved >= theirs {
                info!(
                    "Persistence file {} is Mosquitto's, left untouched: reading midge's own \
                     state from {}, saved since.",
                    path.display(),
                    own.display()
                );
                return Ok((own.clone(), load_model(&own)?));
            }
            let loaded = load_mosquitto(path, &bytes, &own);
            Ok((own, loaded))
        }
        // Mosquitto's file is gone: midge's own state is all there is.
        None if own_saved.is_some() => Ok((own.clone(), load_model(&own)?)),
        Some(bytes) => Ok((path.to_path_buf(), load_model_read(path, Ok(bytes))?)),
        None => Ok((
            path.to_path_buf(),
            load_model_read(path, Err(io::ErrorKind::NotFound.into()))?,
        )),
    }
}

/// When midge last saved `own` or a journal beside it; None when it never
/// did.
fn saved_at(own: &Path) -> Option<SystemTime> {
    let files =
        std::iter::once(own.to_path_buf()).chain(journal::list(own).into_iter().map(|j| j.1));
    files
        .filter_map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .max()
}

/// Restores from Mosquitto's file `path` and saves the state at once to
/// `own`, as a snapshot newer than any journal of `own`, so a restart
/// reads it. `path` is never renamed nor written: a damaged or unread
/// Mosquitto file stays for Mosquitto.
fn load_mosquitto(path: &Path, bytes: &[u8], own: &Path) -> Loaded {
    let read = mosquitto::decode(bytes, unix_now());
    too_deep(path, read.decoded.too_deep);
    let version = read
        .version
        .map_or_else(|| "unknown".to_string(), |v| v.to_string());
    let mut loaded = Loaded::default();
    if read.refused() {
        warn!(
            "Warning: persistence file {} is Mosquitto's, db format version {version}: {}. \
             midge reads versions 2 to 6 (Mosquitto 1.x and 2.x): nothing restored; the \
             file is left untouched and midge saves its own state to {}.",
            path.display(),
            read.decoded
                .damage
                .as_ref()
                .map_or("unreadable", |d| d.reason),
            own.display()
        );
    } else {
        info!(
            "Restoring from Mosquitto's persistence file {} (db format version {version}).",
            path.display()
        );
        let kept = read.decoded.records.len();
        for r in read.decoded.records {
            loaded.model.apply(r);
        }
        if let Some(damage) = &read.decoded.damage {
            warn!(
                "Warning: Mosquitto's persistence file {} is damaged ({damage}): restored the \
                 {kept} item(s) before it; the file is left as it is.",
                path.display()
            );
        }
        if read.expired > 0 || read.skipped > 0 {
            info!(
                "Mosquitto's file held {} expired message(s) or session(s) and {} item(s) \
                 midge does not keep: left out.",
                read.expired, read.skipped
            );
        }
        summary(&loaded.model);
    }
    let next = journal::list(own).last().map_or(1, |j| j.0 + 1);
    loaded.model.generation = next;
    loaded.last_generation = next;
    match writer::write_atomic(own, &loaded.model.snapshot(next)) {
        Ok(()) => {
            journal::remove_older(own, next);
            info!(
                "Mosquitto's persistence file {} is left untouched, for a switch back; midge \
                 saves its own state to {} and reads that from now on.",
                path.display(),
                own.display()
            );
        }
        Err(e) => warn!(
            "Warning: unable to write {}: {e}; Mosquitto's persistence file {} is left \
             untouched and read again at the next start.",
            own.display(),
            path.display()
        ),
    }
    loaded
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Logs what the saved state holds.
fn summary(model: &Model) {
    if model.orphans > 0 {
        warn!(
            "Warning: {} saved record(s) name a session that is not saved; skipped.",
            model.orphans
        );
    }
    info!(
        "Restored {} retained message(s) and {} persistent session(s).",
        model.retained_count(),
        model.session_count()
    );
}

/// Reads the file at `path`, for the router. See [`load_model`].
pub fn load(path: &Path) -> Result<Restored, String> {
    Ok(load_model(path)?.model.to_restored())
}

/// What start-up read: the state, and the journal generations it found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub model: Model,
    /// Journal files found (replayed, covered by the snapshot, or set aside).
    pub journals: usize,
    /// The highest journal or snapshot generation seen.
    pub last_generation: u64,
}

/// Reads the snapshot at `path`, then every journal beside it that the
/// snapshot does not already hold, oldest first. A missing file is an empty
/// state. A snapshot that exists but cannot be read is an error: starting
/// empty would overwrite it at the next save. A damaged file gives back its
/// intact records, is logged and moved aside.
pub fn load_model(path: &Path) -> Result<Loaded, String> {
    load_model_read(path, std::fs::read(path))
}

/// [`load_model`] with the snapshot already read (or its read error), so
/// the file is read once at start-up.
fn load_model_read(path: &Path, read: io::Result<Vec<u8>>) -> Result<Loaded, String> {
    let mut loaded = Loaded::default();
    match read {
        Ok(bytes) => {
            info!("Restoring in-memory database from {}.", path.display());
            let decoded = format::decode(&bytes);
            too_deep(path, decoded.too_deep);
            let kept = decoded.records.len();
            for r in decoded.records {
                loaded.model.apply(r);
            }
            if let Some(damage) = decoded.damage {
                set_aside(path, "persistence file", &damage, kept, bytes.len());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            info!(
                "No persistence file {} yet: starting with an empty state.",
                path.display()
            );
        }
        Err(e) => {
            return Err(format!(
                "unable to read persistence file {}: {e}",
                path.display()
            ));
        }
    }
    let covered = loaded.model.generation;
    loaded.last_generation = covered;
    for (generation, jpath) in journal::list(path) {
        loaded.journals += 1;
        loaded.last_generation = loaded.last_generation.max(generation);
        if generation < covered {
            continue;
        }
        let bytes = std::fs::read(&jpath)
            .map_err(|e| format!("unable to read journal {}: {e}", jpath.display()))?;
        let (_, decoded) = format::decode_journal(&bytes);
        too_deep(&jpath, decoded.too_deep);
        let kept = decoded.records.len();
        info!(
            "Replaying {kept} journal record(s) from {}.",
            jpath.display()
        );
        for r in decoded.records {
            loaded.model.apply(r);
        }
        if let Some(damage) = decoded.damage {
            set_aside(&jpath, "journal", &damage, kept, bytes.len());
        }
    }
    summary(&loaded.model);
    Ok(loaded)
}

/// Logs the records of `path` left out for a topic or filter too deep.
fn too_deep(path: &Path, n: usize) {
    if n > 0 {
        warn!(
            "Warning: {n} record(s) of {} hold a topic or filter deeper than {} levels: \
             not restored.",
            path.display(),
            crate::topic::MAX_SEPARATORS + 1
        );
    }
}

/// Without the journal: when start-up found journals (the journal was on
/// before), writes their state into the snapshot and removes them, so a
/// later snapshot without a generation does not replay them again.
pub fn fold_journals(path: &Path, loaded: &Loaded) -> Result<(), String> {
    if loaded.journals == 0 {
        return Ok(());
    }
    let next = loaded.last_generation + 1;
    writer::write_atomic(path, &loaded.model.snapshot(next))
        .map_err(|e| format!("unable to write persistence file {}: {e}", path.display()))?;
    journal::remove_older(path, next);
    Ok(())
}

/// Logs the damage and renames the file to `<file>.corrupt-<unix time>`
/// (with `-N` added if that name is taken), so the next save cannot
/// overwrite what a person may still want to look at.
fn set_aside(path: &Path, what: &str, damage: &Damage, kept: usize, len: usize) {
    warn!(
        "Warning: {what} {} is damaged ({damage}): restored the {kept} intact \
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
