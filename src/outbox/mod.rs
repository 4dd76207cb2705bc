//! The bounded queue from the router to one client thread, plus its wake fd.
//!
//! The router pushes; the client thread swaps the whole queue out under the
//! lock and works on it without holding anything (rumqttd's `exchange`).
//! The router never blocks here: when a client already has
//! `max_queued_messages` messages waiting, new ones are dropped (Mosquitto's
//! policy), so one stalled subscriber cannot slow anyone else down. A
//! subscriber that keeps draining is paced instead ([`pacing`]): its
//! publishers are held back, and its queue may take somewhat more.

pub mod pacing;

use std::collections::VecDeque;
use std::io;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::codec::{Packet, Publish};
use crate::config::Config;
use crate::sys::WakeFd;
use pacing::now_ms;
pub use pacing::{PACE_MAX, Pressure};

/// `max_queued_messages` and `max_queued_bytes`: how much may wait for one
/// client beyond what is in flight (0 = no limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueLimits {
    pub messages: usize,
    pub bytes: usize,
}

impl QueueLimits {
    pub fn of(c: &Config) -> QueueLimits {
        QueueLimits {
            messages: c.max_queued_messages,
            bytes: c.max_queued_bytes,
        }
    }

    /// Whether one more message of `len` payload bytes fits beside
    /// `messages` messages of `bytes` bytes.
    pub fn room(&self, messages: usize, bytes: usize, len: usize) -> bool {
        (self.messages == 0 || messages < self.messages)
            && (self.bytes == 0 || bytes + len <= self.bytes)
    }
}

/// Why the router asks a client thread to close its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Another connection took over this client id.
    TakenOver,
    /// The broker is shutting down.
    Shutdown,
}

/// One item for a client thread to send, in order.
#[derive(Debug)]
pub enum Outgoing {
    /// A message for a subscriber. Its QoS is already the granted one and its
    /// packet id is 0: the client thread assigns ids.
    Publish(Publish),
    /// SUBACK, UNSUBACK and other control packets.
    Packet(Packet),
}

/// What the lock guards.
#[derive(Debug, Default)]
struct Queue {
    /// Items not yet taken by the client thread.
    items: VecDeque<Outgoing>,
    /// As a subscriber: publishers it holds back, to wake when it drains.
    /// Weak here and below, so that clients publishing to each other hold
    /// no cycle.
    paced: Vec<Weak<Outbox>>,
    /// As a publisher: the subscribers holding it back. Added by the
    /// router, looked at and cleared by this client's thread.
    holders: Vec<Weak<Outbox>>,
}

/// Written by the router, drained by the client thread.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<Queue>,
    /// Messages the client holds that are neither sent (QoS 0) nor in flight
    /// (QoS 1/2): those in `queue` and those the client took but is holding
    /// back behind its in-flight window. The router adds, the client subtracts.
    queued: AtomicUsize,
    /// The payload bytes of those messages, for `max_queued_bytes`.
    queued_bytes: AtomicUsize,
    /// A close request, out of band so that it overtakes messages waiting
    /// behind a full in-flight window: 0 none, else a [`CloseReason`] + 1.
    close: AtomicU8,
    /// Set by the router for a snapshot: the client thread sends it a copy
    /// of its queued and in-flight messages.
    copy: AtomicBool,
    wake: WakeFd,
    /// Whether this is a client thread's outbox, which takes part in pacing
    /// both ways; a bridge's does not.
    paces: bool,
    /// As a subscriber: when the client thread last moved messages out, or
    /// the router found nothing waiting ([`now_ms`]).
    drained_at: AtomicU64,
    /// As a subscriber: how often its thread has drained it (the thread
    /// writes, the router reads).
    drains: AtomicU64,
    /// As a subscriber: set while `Queue::paced` may hold publishers.
    pacing: AtomicBool,
    /// As a publisher: held back until then at most ([`now_ms`]; 0 not
    /// held). Set by the router, cleared by this client's thread; changed
    /// under the lock, read without it.
    paced_until: AtomicU64,
    /// As a publisher: not to be held back before then ([`now_ms`]; the
    /// pacing floor, [`pacing::FREE_RUN`]). Written by its client thread,
    /// read by the router.
    free_until: AtomicU64,
    /// As a publisher: holds in a row that ran their full length (its
    /// client thread's alone).
    full_holds: AtomicU64,
}

impl Outbox {
    /// An outbox outside pacing (a bridge's).
    pub fn new() -> io::Result<Outbox> {
        Ok(Outbox {
            queue: Mutex::new(Queue::default()),
            queued: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            close: AtomicU8::new(0),
            copy: AtomicBool::new(false),
            wake: WakeFd::new()?,
            paces: false,
            drained_at: AtomicU64::new(now_ms()),
            drains: AtomicU64::new(0),
            pacing: AtomicBool::new(false),
            paced_until: AtomicU64::new(0),
            free_until: AtomicU64::new(0),
            full_holds: AtomicU64::new(0),
        })
    }

    /// A client thread's outbox: it may pace and be paced.
    pub fn for_client() -> io::Result<Outbox> {
        Ok(Outbox {
            paces: true,
            ..Outbox::new()?
        })
    }

    /// Whether a message of `len` payload bytes fits within `limits` now
    /// (only the router adds, so it still fits when the router pushes it).
    pub fn has_room(&self, len: usize, limits: QueueLimits) -> bool {
        limits.room(
            self.queued.load(Ordering::Relaxed),
            self.queued_bytes.load(Ordering::Relaxed),
            len,
        )
    }

    /// Queues a message unless the client already has `limits` worth of
    /// messages waiting. Returns false when the message was dropped.
    pub fn push_publish(&self, p: Publish, limits: QueueLimits) -> bool {
        let len = p.payload.len();
        if !self.has_room(len, limits) {
            return false;
        }
        if self.queued.fetch_add(1, Ordering::Relaxed) == 0 && self.paces {
            self.drained_at.store(now_ms(), Ordering::Relaxed);
        }
        self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        self.push(Outgoing::Publish(p));
        true
    }

    /// The messages and payload bytes waiting.
    fn load(&self) -> (usize, usize) {
        (
            self.queued.load(Ordering::Relaxed),
            self.queued_bytes.load(Ordering::Relaxed),
        )
    }

    /// Asks the client thread to close its connection.
    pub fn request_close(&self, why: CloseReason) {
        let v = match why {
            CloseReason::TakenOver => 1,
            CloseReason::Shutdown => 2,
        };
        self.close.store(v, Ordering::Release);
        self.wake.wake();
    }

    /// The pending close request, if any.
    pub fn close_requested(&self) -> Option<CloseReason> {
        match self.close.load(Ordering::Acquire) {
            1 => Some(CloseReason::TakenOver),
            2 => Some(CloseReason::Shutdown),
            _ => None,
        }
    }

    /// Asks the client thread for a copy of its session state (a snapshot).
    pub fn request_copy(&self) {
        self.copy.store(true, Ordering::Release);
        self.wake.wake();
    }

    /// Whether a copy was asked for since the last call.
    pub fn take_copy_request(&self) -> bool {
        self.copy.swap(false, Ordering::AcqRel)
    }

    /// Queues a control packet; these are never dropped. They are bounded
    /// all the same: while they wait unsent, the client thread leaves its
    /// client's packets unread (`client::output`, `output_full`).
    pub fn push(&self, item: Outgoing) {
        let was_empty = {
            let mut q = self.queue.lock();
            let was_empty = q.items.is_empty();
            q.items.push_back(item);
            was_empty
        };
        // Only the first item after a drain needs a wake: the client thread
        // takes everything queued when it wakes.
        if was_empty {
            self.wake.wake();
        }
    }

    /// Moves everything queued into `into` (appending), for the client thread.
    pub fn take(&self, into: &mut VecDeque<Outgoing>) {
        self.wake.clear();
        let mut q = self.queue.lock();
        if into.is_empty() {
            std::mem::swap(&mut q.items, into);
        } else {
            into.append(&mut q.items);
        }
    }

    /// Messages (and their payload bytes) a resumed session brought along,
    /// held by the client thread.
    pub fn add_queued(&self, n: usize, bytes: usize) {
        self.queued.fetch_add(n, Ordering::Relaxed);
        self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The client thread sent queued messages or moved them into flight.
    pub fn dequeued(&self, n: usize, bytes: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Messages waiting, as counted against `max_queued_messages`.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The payload bytes of those messages.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    pub fn wake_fd(&self) -> &WakeFd {
        &self.wake
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;
    use std::sync::Arc;

    fn publish(n: u8) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: Arc::from("t"),
            pkid: 0,
            payload: Arc::from(vec![n]),
            props: None,
        }
    }

    #[test]
    fn drops_beyond_limit_and_counts_back() {
        let o = Outbox::new().expect("outbox");
        let two = QueueLimits {
            messages: 2,
            bytes: 0,
        };
        assert!(o.push_publish(publish(1), two));
        assert!(o.push_publish(publish(2), two));
        assert!(!o.push_publish(publish(3), two));
        o.push(Outgoing::Packet(Packet::PingResp));
        let mut got = VecDeque::new();
        o.take(&mut got);
        assert_eq!(got.len(), 3);
        assert_eq!(o.queued(), 2);
        o.dequeued(2, 2);
        assert!(o.push_publish(publish(4), two));
    }

    #[test]
    fn byte_limit() {
        let o = Outbox::new().expect("outbox");
        let three_bytes = QueueLimits {
            messages: 0,
            bytes: 3,
        };
        for n in 0..3 {
            assert!(o.push_publish(publish(n), three_bytes));
        }
        assert!(!o.push_publish(publish(3), three_bytes));
        assert_eq!(o.queued(), 3);
        o.dequeued(1, 1);
        assert!(o.push_publish(publish(4), three_bytes));
    }

    #[test]
    fn a_draining_queue_holds_its_publisher_back_until_low_water() {
        let limits = QueueLimits {
            messages: 8,
            bytes: 0,
        };
        let sub = Arc::new(Outbox::for_client().expect("outbox"));
        let publisher = Arc::new(Outbox::for_client().expect("outbox"));
        for n in 0..5 {
            assert!(sub.push_publish(publish(n), limits));
            assert_ne!(sub.pressure(limits), Pressure::Pressing, "below 6 of 8");
        }
        assert!(sub.push_publish(publish(5), limits));
        // Its queue was empty a moment ago: draining, not stalled.
        assert_eq!(sub.pressure(limits), Pressure::Pressing);
        sub.hold(&publisher, limits);
        assert!(publisher.held());
        assert!(
            publisher
                .recheck_hold(limits)
                .is_some_and(|d| d <= PACE_MAX)
        );
        // Down to 4 of 8: still above the low-water mark (3).
        sub.dequeued(2, 2);
        sub.drained(limits);
        assert!(publisher.recheck_hold(limits).is_some());
        sub.dequeued(1, 1);
        sub.drained(limits);
        assert!(publisher.wake_fd().clear(), "woken at the low-water mark");
        assert_eq!(publisher.recheck_hold(limits), None);
        assert!(!sub.pacing.load(Ordering::Relaxed), "forgotten");
    }

    #[test]
    fn a_bridge_neither_paces_nor_is_paced() {
        let limits = QueueLimits {
            messages: 4,
            bytes: 0,
        };
        let bridge = Arc::new(Outbox::new().expect("outbox"));
        let client = Arc::new(Outbox::for_client().expect("outbox"));
        for n in 0..4 {
            assert!(bridge.push_publish(publish(n), limits));
        }
        assert_eq!(bridge.pressure(limits), Pressure::Low);
        for n in 0..4 {
            assert!(client.push_publish(publish(n), limits));
        }
        client.hold(&bridge, limits);
        assert_eq!(bridge.recheck_hold(limits), None);
    }

    #[test]
    fn first_push_wakes() {
        let o = Outbox::new().expect("outbox");
        assert!(!o.wake_fd().clear());
        o.push(Outgoing::Packet(Packet::PingResp));
        assert!(o.wake_fd().clear());
    }
}
