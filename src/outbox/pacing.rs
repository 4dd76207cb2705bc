//! Pacing: a client thread's queue filled beyond its high-water mark while
//! the thread keeps draining it holds back the publishers that fill it. They
//! stop reading their sockets until it drains to its low-water mark, or for
//! [`PACE_MAX`] at most, and TCP slows the publishing clients down. A queue
//! that does not drain (a stalled subscriber) holds back no one.

use std::sync::atomic::{Ordering, fence};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::{Outbox, QueueLimits};

/// A subscriber counts as draining while its thread moved messages out of
/// its queue, or its queue was empty, at most this many milliseconds ago.
/// Beyond that it counts as stalled and holds back no one.
const DRAINING_MS: u64 = 100;

/// The longest a publisher is held back at a time. A subscriber that stalls
/// right after it was seen draining delays its publishers once, by this.
pub const PACE_MAX: Duration = Duration::from_millis(200);

/// Queued payload bytes beyond which a draining subscriber paces its
/// publishers even when the configured limits are higher (or unlimited). A
/// longer queue adds memory, not throughput: the client thread writes at
/// most 64 KiB per turn, and the 512 KiB left at the low-water mark keep it
/// busy while the publishers it wakes come back.
const PACE_BYTES: usize = 1024 * 1024;

/// Turns of draining after which a subscriber counts as a reader (see
/// [`Outbox::proven`]).
const PROVEN_DRAINS: u64 = 6;

/// Milliseconds on the pacing clock (never 0).
pub(super) fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

impl QueueLimits {
    /// These limits with `extra` more messages and twice the bytes (0 stays
    /// unlimited).
    pub fn beyond(&self, extra: usize) -> QueueLimits {
        let more = |limit: usize, by: usize| match limit {
            0 => 0,
            n => n.saturating_add(by),
        };
        QueueLimits {
            messages: more(self.messages, extra),
            bytes: more(self.bytes, self.bytes),
        }
    }

    /// Where pacing starts: 3/4 of each configured limit, and
    /// [`PACE_BYTES`] at most.
    fn high_water(&self) -> (usize, usize) {
        let three_quarters = |limit: usize| match limit {
            0 => usize::MAX,
            n => n - n / 4,
        };
        (
            three_quarters(self.messages),
            three_quarters(self.bytes).min(PACE_BYTES),
        )
    }

    /// Whether `messages` of `bytes` are at or above the high-water mark.
    fn high(&self, messages: usize, bytes: usize) -> bool {
        let (m, b) = self.high_water();
        messages >= m || bytes >= b
    }

    /// Whether they are down to the low-water mark: half the high one.
    fn low(&self, messages: usize, bytes: usize) -> bool {
        let (m, b) = self.high_water();
        messages <= m / 2 && bytes <= b / 2
    }
}

/// How full a client's queue is, for pacing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pressure {
    /// At or below its low-water mark, or outside pacing.
    Low,
    /// Above its low-water mark.
    Filling,
    /// At its high-water mark while its client thread keeps draining it:
    /// whoever fills it is held back.
    Pressing,
}

/// Whether `w` points to `o`.
fn is(w: &Weak<Outbox>, o: &Arc<Outbox>) -> bool {
    std::ptr::eq(w.as_ptr(), Arc::as_ptr(o))
}

/// Adds `o` to `list` unless it is there; forgets outboxes gone meanwhile.
fn add_once(list: &mut Vec<Weak<Outbox>>, o: &Arc<Outbox>) {
    list.retain(|w| w.strong_count() > 0);
    if !list.iter().any(|w| is(w, o)) {
        list.push(Arc::downgrade(o));
    }
}

impl Outbox {
    /// Whether the client thread moved messages out of the queue (or the
    /// queue was empty) lately: it is draining, not stalled.
    fn draining(&self, now: u64) -> bool {
        now.saturating_sub(self.drained_at.load(Ordering::Relaxed)) <= DRAINING_MS
    }

    /// Router: how full this client's queue is, for pacing.
    pub fn pressure(&self, limits: QueueLimits) -> Pressure {
        let (messages, bytes) = self.load();
        if !self.paces || limits.low(messages, bytes) {
            Pressure::Low
        } else if limits.high(messages, bytes) && self.draining(now_ms()) {
            Pressure::Pressing
        } else {
            Pressure::Filling
        }
    }

    /// Router: whether the client thread has drained its queue often
    /// enough to count as a reader rather than a client that stopped right
    /// after connecting. Only such a queue may go beyond its limit while it
    /// paces its publishers: one that never got going keeps
    /// `max_queued_messages` exactly, as in Mosquitto.
    pub fn proven(&self) -> bool {
        self.drains.load(Ordering::Relaxed) >= PROVEN_DRAINS
    }

    /// Router: whether this client is held back now.
    pub fn held(&self) -> bool {
        self.paced_until.load(Ordering::Relaxed) > now_ms()
    }

    /// Router: holds back `publisher`, which fed this queue, until every
    /// queue holding it drains to its low-water mark or stalls, or
    /// [`PACE_MAX`] passes.
    pub fn hold(self: &Arc<Outbox>, publisher: &Arc<Outbox>, limits: QueueLimits) {
        if !publisher.paces {
            return;
        }
        {
            let mut q = publisher.queue.lock();
            add_once(&mut q.holders, self);
            let now = now_ms();
            if publisher.paced_until.load(Ordering::Relaxed) <= now {
                let until = now + PACE_MAX.as_millis() as u64;
                publisher.paced_until.store(until, Ordering::Relaxed);
            }
        }
        {
            let mut q = self.queue.lock();
            add_once(&mut q.paced, publisher);
            self.pacing.store(true, Ordering::Relaxed);
        }
        // Either the client thread sees `pacing` after its last drain, or
        // this sees the queue that drain left (see `drained`).
        fence(Ordering::SeqCst);
        let (messages, bytes) = self.load();
        if limits.low(messages, bytes) {
            self.wake_paced();
        }
    }

    /// Client thread: it moved messages out of the queue. At the low-water
    /// mark it wakes the publishers it holds back, to look again.
    pub fn drained(&self, limits: QueueLimits) {
        self.drained_at.store(now_ms(), Ordering::Relaxed);
        let drains = self.drains.load(Ordering::Relaxed);
        self.drains.store(drains + 1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let (messages, bytes) = self.load();
        if self.pacing.load(Ordering::Relaxed) && limits.low(messages, bytes) {
            self.wake_paced();
        }
    }

    /// Wakes every publisher this client holds back, to look again; each
    /// takes itself off the list once it no longer waits for this one.
    fn wake_paced(&self) {
        for p in self.queue.lock().paced.iter().filter_map(Weak::upgrade) {
            p.wake.wake();
        }
    }

    /// Client thread, at its end: lets go of the publishers it holds back.
    pub fn release(&self) {
        self.wake_paced();
        let mut q = self.queue.lock();
        q.paced.clear();
        self.pacing.store(false, Ordering::Relaxed);
    }

    /// Client thread: how much longer it must leave its socket unread, if
    /// it is held back: while a queue that holds it is above its low-water
    /// mark and draining, [`PACE_MAX`] at most.
    pub fn paced(self: &Arc<Outbox>, limits: QueueLimits) -> Option<Duration> {
        if self.paced_until.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let now = now_ms();
        let mut done = Vec::new();
        let waiting = {
            let mut q = self.queue.lock();
            let left = self.paced_until.load(Ordering::Relaxed).saturating_sub(now);
            q.holders.retain(|w| {
                let Some(s) = w.upgrade() else { return false };
                let (messages, bytes) = s.load();
                let holding = left > 0 && !limits.low(messages, bytes) && s.draining(now);
                if !holding {
                    done.push(s);
                }
                holding
            });
            if q.holders.is_empty() {
                self.paced_until.store(0, Ordering::Relaxed);
                None
            } else {
                Some(Duration::from_millis(left))
            }
        };
        // Not under our own lock: a holder may be looking at us likewise.
        for s in done {
            s.forget(self);
        }
        waiting
    }

    /// Takes `publisher` off the list of those this client holds back.
    fn forget(&self, publisher: &Arc<Outbox>) {
        let mut q = self.queue.lock();
        q.paced
            .retain(|w| w.strong_count() > 0 && !is(w, publisher));
        self.pacing.store(!q.paced.is_empty(), Ordering::Relaxed);
    }
}
