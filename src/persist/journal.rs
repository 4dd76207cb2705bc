//! The journal (`persistence_journal true`): every change that must survive
//! a crash is appended to `<file>.journal.<generation>` and fsynced before
//! the acknowledgement that depends on it leaves the broker.
//!
//! Who does what:
//! - The router and the client threads [`Journal::append`] records to an
//!   in-memory queue (a lock, a push; no I/O).
//! - An acknowledgement that must wait (PUBACK, PUBREC, PUBREL, PUBCOMP,
//!   SUBACK and what follows it) is handed to [`Journal::after_durable`]
//!   with the outbox of its client. It carries a ticket: the number of
//!   records appended so far.
//! - The `journal` thread takes every queued record, encodes it, and
//!   gathers more for up to the commit interval
//!   (`persistence_journal_commit_interval`, counted from the first record
//!   of the batch) or until [`FULL`] bytes are gathered, then writes them
//!   with one `write` and fsyncs once (group commit: on a flash card every
//!   fsync rewrites at least the partly written last page, so the interval
//!   bounds that wear per hour whatever the message rate). It then pushes
//!   each waiting acknowledgement whose ticket is covered into its outbox,
//!   whose wake fd wakes the client thread. No thread but this one waits for
//!   the disk, and a client thread keeps reading while its acknowledgement
//!   waits.
//! - A change that promises nothing (a QoS 0 retained message) is
//!   [`Journal::note`]d: applied to the saved state, so the next snapshot
//!   holds it, but never written to the journal nor waited for.
//! - The thread also applies each record to a [`Model`] of the saved state.
//!   A compaction (SIGUSR1, autosave, shutdown, a journal grown past
//!   [`COMPACT_AT`]) writes the model as a snapshot: first a new, empty
//!   journal of the next generation, then the snapshot naming that
//!   generation (temp file, fsync, rename, directory fsync), then the older
//!   journals are removed. A crash at any point leaves a snapshot and the
//!   journals that follow it.
//!
//! When the disk fails (full, read-only, permissions) the acknowledgements
//! still go out: the broker keeps serving, says once that what it
//! acknowledges is not durable, and retries with a compaction every
//! [`RETRY`] until one works.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, error, info};

use super::format::{self, Record};
use super::model::Model;
use super::writer::{create_private, write_atomic};
use crate::outbox::{Outbox, Outgoing, QueueLimits};

/// A journal this long (bytes) is folded into a new snapshot, unless the
/// snapshot itself is larger: then at twice the snapshot's size.
pub const COMPACT_AT: u64 = 4 * 1024 * 1024;

/// A batch this large (bytes) is written at once, before the commit
/// interval ends: four pages, so the partly written page each fsync
/// rewrites adds at most a quarter.
pub const FULL: usize = 16 * 1024;

/// How long a failing disk is left alone before the next attempt.
const RETRY: Duration = Duration::from_secs(5);

/// `<file>.journal.<generation>`.
pub fn path_of(file: &Path, generation: u64) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(format!(".journal.{generation}"));
    PathBuf::from(name)
}

/// The journals beside `file`, oldest generation first. Files set aside
/// (`.corrupt-...`) do not count.
pub fn list(file: &Path) -> Vec<(u64, PathBuf)> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Some(base) = file.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let prefix = format!("{base}.journal.");
    let mut found: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name();
            let digits = name.to_str()?.strip_prefix(&prefix)?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((digits.parse().ok()?, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// Removes the journals older than `generation` (a snapshot holds them).
pub fn remove_older(file: &Path, generation: u64) {
    for (g, p) in list(file) {
        if g < generation {
            if let Err(e) = fs::remove_file(&p) {
                debug!("Unable to remove old journal {}: {e}.", p.display());
            }
        }
    }
}

/// Counters, for the log line at shutdown and the benchmark.
#[derive(Debug, Default)]
pub struct Status {
    pub records: AtomicU64,
    pub fsyncs: AtomicU64,
    pub bytes: AtomicU64,
    pub snapshots: AtomicU64,
    pub failures: AtomicU64,
}

#[derive(Default)]
struct Queue {
    /// Each with true when it goes to disk, false when only into the model.
    records: Vec<(Record, bool)>,
    /// Records appended since start: the ticket of the latest.
    appended: u64,
    /// Records written (or given up on, when the disk fails).
    durable: u64,
    /// Acknowledgements in ticket order, each for one client's outbox.
    waiting: VecDeque<(u64, Arc<Outbox>, Outgoing)>,
    compact: bool,
    stop: bool,
}

struct Inner {
    queue: Mutex<Queue>,
    cv: Condvar,
    status: Status,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The handle shared by the router and the client threads.
pub struct Journal {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Journal {
    /// Starts the journal thread for the snapshot `file`, with the state
    /// start-up restored. The thread first compacts: a new snapshot of
    /// `model` and an empty journal after `last_generation`.
    /// `commit` is how long a batch may gather records before its fsync.
    pub fn spawn(
        file: PathBuf,
        model: Model,
        last_generation: u64,
        commit: Duration,
    ) -> io::Result<Arc<Journal>> {
        let inner = Arc::new(Inner {
            queue: Mutex::new(Queue::default()),
            cv: Condvar::new(),
            status: Status::default(),
        });
        let mut w = Writer {
            file,
            model,
            generation: last_generation,
            out: None,
            len: 0,
            snapshot_len: 0,
            failing: false,
            retry_at: None,
            commit,
        };
        let i = inner.clone();
        let thread = std::thread::Builder::new()
            .name("journal".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                w.compact(&i.status);
                w.run(&i);
            })?;
        Ok(Arc::new(Journal {
            inner,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Queues a record; returns at once.
    pub fn append(&self, r: Record) {
        let mut q = self.inner.lock();
        q.records.push((r, true));
        q.appended += 1;
        if q.records.len() == 1 {
            self.inner.cv.notify_one();
        }
    }

    /// Queues a change that promises nothing (a QoS 0 retained message):
    /// the saved state takes it, in order with the records, so the next
    /// snapshot holds it; the journal does not, and nothing waits for it.
    pub fn note(&self, r: Record) {
        let mut q = self.inner.lock();
        q.records.push((r, false));
        if q.records.len() == 1 {
            self.inner.cv.notify_one();
        }
    }

    /// Pushes `items` into `outbox` once every record appended so far is
    /// on disk (at once when it already is), in the order of the calls.
    /// Returns their ticket, for [`Journal::released`].
    pub fn after_durable(&self, outbox: &Arc<Outbox>, items: Vec<Outgoing>) -> u64 {
        let mut q = self.inner.lock();
        let ticket = q.appended;
        if q.waiting.is_empty() && q.durable >= ticket {
            // Under the lock, so that nothing released later overtakes it.
            items.into_iter().for_each(|i| hand_over(outbox, i));
            return ticket;
        }
        for i in items {
            q.waiting.push_back((ticket, outbox.clone(), i));
        }
        ticket
    }

    /// Whether what [`Journal::after_durable`] took with `ticket` has been
    /// pushed.
    pub fn released(&self, ticket: u64) -> bool {
        let q = self.inner.lock();
        q.durable >= ticket && q.waiting.front().is_none_or(|(t, _, _)| *t > ticket)
    }

    /// Folds the journal into a new snapshot (SIGUSR1, autosave).
    pub fn compact(&self) {
        let mut q = self.inner.lock();
        q.compact = true;
        self.inner.cv.notify_one();
    }

    pub fn status(&self) -> &Status {
        &self.inner.status
    }

    /// Writes what is queued, compacts, and stops the thread.
    pub fn finish(&self) {
        {
            let mut q = self.inner.lock();
            q.stop = true;
            q.compact = true;
            self.inner.cv.notify_one();
        }
        let t = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.finish();
    }
}

fn hand_over(outbox: &Outbox, item: Outgoing) {
    match item {
        // Streamed retained copies after a SUBACK (router/stream.rs),
        // outside max_queued_messages: a stream hands over a bounded
        // batch at a time, the next once this one is pushed.
        Outgoing::Publish(p) => {
            outbox.push_publish(p, QueueLimits::default());
        }
        other => outbox.push(other),
    }
}

/// The journal thread's own state.
struct Writer {
    /// The snapshot file; journals sit beside it.
    file: PathBuf,
    model: Model,
    /// Generation of the journal being appended to.
    generation: u64,
    /// The open journal; None while the disk fails.
    out: Option<File>,
    /// Its length in bytes.
    len: u64,
    snapshot_len: u64,
    /// True from a failure until a compaction works: one episode, one line.
    failing: bool,
    retry_at: Option<Instant>,
    /// How long a batch may gather records before it is written.
    commit: Duration,
}

impl Writer {
    fn run(&mut self, inner: &Inner) {
        let mut buf = Vec::with_capacity(2 * FULL);
        // When the gathered batch began.
        let mut since: Option<Instant> = None;
        loop {
            // `ticket`: every record appended so far is in the batch.
            let (records, ticket, compact, stop) = {
                let mut q = inner.lock();
                loop {
                    let due = since.map(|t| t + self.commit);
                    if !q.records.is_empty() || q.compact || q.stop {
                        break;
                    }
                    if due.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let retry = self.retry_at;
                    let wake = match (due, retry) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    match wake.map(|t| t.saturating_duration_since(Instant::now())) {
                        Some(d) if d.is_zero() => break,
                        Some(d) => {
                            q = inner
                                .cv
                                .wait_timeout(q, d)
                                .unwrap_or_else(|p| p.into_inner())
                                .0
                        }
                        None => q = inner.cv.wait(q).unwrap_or_else(|p| p.into_inner()),
                    }
                }
                let records = std::mem::take(&mut q.records);
                let compact = std::mem::take(&mut q.compact);
                (records, q.appended, compact, q.stop)
            };
            let mut written = 0u64;
            for (r, durable) in records {
                if durable {
                    format::encode_record(&r, &mut buf);
                    written += 1;
                }
                self.model.apply(r);
            }
            inner.status.records.fetch_add(written, Ordering::Relaxed);
            if !buf.is_empty() && since.is_none() {
                since = Some(Instant::now());
            }
            let due = since.is_some_and(|t| Instant::now() >= t + self.commit);
            let retry = self.retry_at.is_some_and(|t| Instant::now() >= t);
            if !(compact || stop || retry || due || buf.len() >= FULL) {
                if buf.is_empty() {
                    // Only notes: nothing waits for them.
                    self.release(inner, ticket);
                }
                continue;
            }
            if !buf.is_empty() {
                self.write(&buf, &inner.status);
                buf.clear();
            }
            since = None;
            let grown = self.len > COMPACT_AT.max(2 * self.snapshot_len);
            if compact || grown || retry {
                self.compact(&inner.status);
            }
            self.release(inner, ticket);
            if stop {
                let q = inner.lock();
                if q.records.is_empty() {
                    let s = &inner.status;
                    info!(
                        "Journal: {} record(s), {} fsync(s), {} byte(s) written, {} snapshot(s).",
                        s.records.load(Ordering::Relaxed),
                        s.fsyncs.load(Ordering::Relaxed),
                        s.bytes.load(Ordering::Relaxed),
                        s.snapshots.load(Ordering::Relaxed)
                    );
                    return;
                }
            }
        }
    }

    /// Everything up to `ticket` is on disk (or given up on): hands over
    /// the acknowledgements it covers.
    fn release(&self, inner: &Inner, ticket: u64) {
        let mut q = inner.lock();
        q.durable = ticket;
        while q.waiting.front().is_some_and(|(t, _, _)| *t <= ticket) {
            if let Some((_, outbox, item)) = q.waiting.pop_front() {
                hand_over(&outbox, item);
            }
        }
    }

    /// Appends one batch and fsyncs it.
    fn write(&mut self, buf: &[u8], status: &Status) {
        let n = buf.len() as u64;
        let Some(f) = &mut self.out else { return };
        let result = f.write_all(buf).and_then(|()| f.sync_data());
        match result {
            Ok(()) => {
                status.fsyncs.fetch_add(1, Ordering::Relaxed);
                self.len += n;
                status.bytes.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                // The file may end in half a record now: never append to it
                // again; the next compaction starts a new one.
                self.out = None;
                self.fail(&e, status);
            }
        }
    }

    /// New journal, then the snapshot that names it, then the old journals
    /// go. A failure leaves the previous snapshot and journals as they were.
    fn compact(&mut self, status: &Status) {
        let next = self.generation + 1;
        let jpath = path_of(&self.file, next);
        let snapshot = self.model.snapshot(next);
        let result = (|| {
            let mut f = create_private(&jpath)?;
            f.write_all(&format::journal_header(next))?;
            f.sync_all()?;
            write_atomic(&self.file, &snapshot)?;
            Ok::<File, io::Error>(f)
        })();
        match result {
            Ok(f) => {
                // The new journal, the snapshot, the directory.
                status.fsyncs.fetch_add(3, Ordering::Relaxed);
                self.out = Some(f);
                self.generation = next;
                self.len = format::JOURNAL_HEADER_LEN as u64;
                self.snapshot_len = snapshot.len() as u64;
                status.snapshots.fetch_add(1, Ordering::Relaxed);
                status
                    .bytes
                    .fetch_add(self.len + self.snapshot_len, Ordering::Relaxed);
                remove_older(&self.file, next);
                self.retry_at = None;
                if self.failing {
                    self.failing = false;
                    info!(
                        "Writing to {} works again: acknowledged messages are durable again.",
                        self.file.display()
                    );
                }
                info!(
                    "Saved in-memory database to {} ({} bytes); journal generation {next}.",
                    self.file.display(),
                    snapshot.len()
                );
            }
            Err(e) => {
                let _ = fs::remove_file(&jpath);
                self.out = None;
                self.fail(&e, status);
            }
        }
    }

    fn fail(&mut self, e: &io::Error, status: &Status) {
        status.failures.fetch_add(1, Ordering::Relaxed);
        self.retry_at = Some(Instant::now() + RETRY);
        if self.failing {
            debug!(
                "Journal write to {} failed again: {e}.",
                self.file.display()
            );
            return;
        }
        self.failing = true;
        error!(
            "Error: unable to write the journal for {}: {e}. Until a write succeeds, messages, \
             retained messages, sessions and subscriptions that the broker acknowledges are \
             not durable and are lost on a crash or power cut; the broker keeps serving and \
             retries every {} s. (Further failures are not logged.)",
            self.file.display(),
            RETRY.as_secs()
        );
    }
}
