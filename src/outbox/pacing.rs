//! Pacing: a client thread's queue filled beyond its high-water mark while
//! the thread keeps draining it holds back the publishers that fill it. They
//! stop reading their sockets until it drains to its low-water mark, or for
//! [`PACE_MAX`] at most, and TCP slows the publishing clients down. A queue
//! that does not drain (a stalled subscriber) holds back no one.
//!
//! The whole policy is here. The router asks it for each subscriber a
//! message reaches ([`Outbox::pressure`], [`Outbox::limits_under`]) and
//! holds the publisher back once the message is routed
//! ([`hold_publisher`]); the client thread reports its drains
//! ([`Outbox::drained`]) and, as a publisher, leaves its socket unread while
//! [`Outbox::recheck_hold`] says so.
//!
//! Its tunables, for limits `max_queued_messages` and `max_queued_bytes`:
//!
//! - [`HIGH_WATER_CUT`]: pacing starts at the limit less a quarter (and at
//!   [`PACE_MESSAGES`] messages or [`PACE_BYTES`] queued bytes at most);
//! - [`LOW_WATER_DIVISOR`]: publishers go on at half the high-water mark;
//! - [`PACE_MAX`]: the longest a publisher is held back at a time;
//! - [`FULL_HOLDS`] and [`FREE_RUN`]: after that many holds in a row that
//!   each lasted [`PACE_MAX`] (a queue that drains, but too slowly to
//!   reach its low-water mark), the publisher runs unheld for as long:
//!   the pacing floor. Whatever its subscribers do, a publisher is held at
//!   most half the time, so it keeps at least half its normal rate; what
//!   the slow queue cannot take meanwhile is dropped and counted
//!   (`$SYS/broker/publish/messages/dropped`), as Mosquitto drops it. A
//!   reader merely slower than its publishers for a moment reaches its
//!   low-water mark within a hold or two and loses nothing;
//! - [`DRAINING_MS`]: a subscriber that has not drained for longer counts
//!   as stalled and holds back no one;
//! - [`PROVEN_DRAINS`]: drains before a subscriber's queue may go beyond
//!   its limit while pacing;
//! - [`OVERSHOOT_CHANNELS`]: how far beyond, in router channels' worth of
//!   messages.

use std::sync::atomic::{Ordering, fence};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::{Outbox, QueueLimits};

/// A subscriber counts as draining while its thread moved messages out of
/// its queue, or its queue was empty, at most this many milliseconds ago.
/// Beyond that it counts as stalled and holds back no one.
pub const DRAINING_MS: u64 = 100;

/// The longest a publisher is held back at a time. A subscriber that stalls
/// right after it was seen draining delays its publishers once, by this.
pub const PACE_MAX: Duration = Duration::from_millis(200);

/// Holds in a row that ran their full [`PACE_MAX`] before the publisher
/// runs free ([`FREE_RUN`]).
pub const FULL_HOLDS: u64 = 3;

/// After [`FULL_HOLDS`] holds that each ran their full [`PACE_MAX`], the
/// publisher is not held again for as long: the pacing floor (half its
/// rate at least).
pub const FREE_RUN: Duration = Duration::from_millis(PACE_MAX.as_millis() as u64 * FULL_HOLDS);

/// Queued payload bytes beyond which a draining subscriber paces its
/// publishers even when the configured limits are higher (or unlimited). A
/// longer queue adds memory, not throughput: the client thread writes at
/// most 64 KiB per turn, and the 512 KiB left at the low-water mark keep it
/// busy while the publishers it wakes come back.
pub const PACE_BYTES: usize = 1024 * 1024;

/// Queued messages beyond which a draining subscriber paces its
/// publishers even when `max_queued_messages` is higher (or unlimited).
/// Small messages cost far more memory than their payload (the queue
/// entry, the topic and the payload's own allocation: about 180 bytes for
/// a 32-byte message), and the 512 left at the low-water mark still fill
/// the client thread's writes while its publishers come back
/// (docs/PERFORMANCE.md: 4,096 held 0.4-1.0 MiB more at the peak of a
/// QoS 0 fan-in or fan-out of 32-byte messages, for a quarter more
/// fan-in throughput).
pub const PACE_MESSAGES: usize = 1024;

/// The high-water mark is each limit less its 1/`HIGH_WATER_CUT` part
/// (rounded down): at 3/4 of `max_queued_messages` a draining subscriber
/// starts to hold its publishers back, a quarter before messages would be
/// dropped.
pub const HIGH_WATER_CUT: usize = 4;

/// The low-water mark is the high one divided by this: held publishers go
/// on once the queue is down to half of where pacing started, so that
/// they are not woken for every message.
pub const LOW_WATER_DIVISOR: usize = 2;

/// Turns of draining after which a subscriber counts as a reader (see
/// [`Outbox::proven`]). A client that stops reading right after it
/// connected has drained fewer times and keeps `max_queued_messages`
/// exactly, as in Mosquitto (tests/config.rs,
/// `max_inflight_messages_2_max_queued_messages_3`); a reader that has
/// drained this often may take the overshoot below. 6 is a few turns
/// more than that test's client gets; tests/pacing.rs warms its readers up
/// with 30 messages before its flood.
pub const PROVEN_DRAINS: u64 = 6;

/// A pressing queue of a proven reader also takes what its publishers sent
/// before the pace reached them, up to this many router channels' worth
/// of messages beyond its limit (and twice its byte limit): what was in
/// the channel, and what those not yet held added meanwhile.
pub const OVERSHOOT_CHANNELS: usize = 2;

/// Milliseconds on the pacing clock (never 0).
pub(super) fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

impl QueueLimits {
    /// These limits with `extra` more messages and twice the bytes (0 stays
    /// unlimited).
    fn beyond(&self, extra: usize) -> QueueLimits {
        let more = |limit: usize, by: usize| match limit {
            0 => 0,
            n => n.saturating_add(by),
        };
        QueueLimits {
            messages: more(self.messages, extra),
            bytes: more(self.bytes, self.bytes),
        }
    }

    /// Where pacing starts: 3/4 of each configured limit
    /// ([`HIGH_WATER_CUT`]), and [`PACE_MESSAGES`] and [`PACE_BYTES`] at
    /// most.
    fn high_water(&self) -> (usize, usize) {
        let three_quarters = |limit: usize| match limit {
            0 => usize::MAX,
            n => n - n / HIGH_WATER_CUT,
        };
        (
            three_quarters(self.messages).min(PACE_MESSAGES),
            three_quarters(self.bytes).min(PACE_BYTES),
        )
    }

    /// Whether `messages` of `bytes` are at or above the high-water mark.
    fn high(&self, messages: usize, bytes: usize) -> bool {
        let (m, b) = self.high_water();
        messages >= m || bytes >= b
    }

    /// Whether they are down to the low-water mark: half the high one
    /// ([`LOW_WATER_DIVISOR`]).
    fn low(&self, messages: usize, bytes: usize) -> bool {
        let (m, b) = self.high_water();
        messages <= m / LOW_WATER_DIVISOR && bytes <= b / LOW_WATER_DIVISOR
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

    /// Router: the limits a message for this queue is taken under, given
    /// its `pressure`: beyond them by [`OVERSHOOT_CHANNELS`] router
    /// channels of `channel` events when it presses and is a proven
    /// reader's, else as configured.
    pub fn limits_under(
        &self,
        pressure: Pressure,
        limits: QueueLimits,
        channel: usize,
    ) -> QueueLimits {
        if pressure == Pressure::Pressing && self.proven() {
            limits.beyond(OVERSHOOT_CHANNELS * channel)
        } else {
            limits
        }
    }

    /// Router: whether this client is held back now.
    pub fn held(&self) -> bool {
        self.paced_until.load(Ordering::Relaxed) > now_ms()
    }

    /// Router: holds back `publisher`, which fed this queue, until every
    /// queue holding it drains to its low-water mark or stalls, or
    /// [`PACE_MAX`] passes.
    pub fn hold(self: &Arc<Outbox>, publisher: &Arc<Outbox>, limits: QueueLimits) {
        if !publisher.paces || publisher.free_until.load(Ordering::Relaxed) > now_ms() {
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

    /// Client thread, as a publisher: looks again at the queues that hold
    /// it back, lets go of those that drained to their low-water mark or
    /// stalled (and of the pace once none is left or [`PACE_MAX`] passed),
    /// and returns how much longer it must leave its socket unread, if at
    /// all.
    pub fn recheck_hold(self: &Arc<Outbox>, limits: QueueLimits) -> Option<Duration> {
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
                // Held the whole PACE_MAX, or let go sooner.
                let full = if left == 0 {
                    self.full_holds.load(Ordering::Relaxed) + 1
                } else {
                    0
                };
                if full >= FULL_HOLDS {
                    // The floor's free run.
                    let until = now + FREE_RUN.as_millis() as u64;
                    self.free_until.store(until, Ordering::Relaxed);
                    self.full_holds.store(0, Ordering::Relaxed);
                } else {
                    self.full_holds.store(full, Ordering::Relaxed);
                }
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

/// Router: holds back `publisher` on the queues its message `fed` (each
/// with whether it pressed that queue), if it pressed one. Once held, only
/// the queues it presses are worth a look. It only stops reading its
/// socket: the router never waits.
pub fn hold_publisher<'a>(
    publisher: &Arc<Outbox>,
    fed: impl Iterator<Item = (&'a Arc<Outbox>, bool)>,
    limits: QueueLimits,
) {
    let held = publisher.held();
    for (queue, pressing) in fed {
        if pressing || !held {
            queue.hold(publisher, limits);
        }
    }
}
