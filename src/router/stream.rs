//! Retained messages for a new subscription, streamed from the store.
//!
//! A SUBSCRIBE does not copy its retained messages into the client's queue.
//! Each filter that asks for them gets a [`Stream`]: the filter, its QoS
//! and a cursor, the last topic sent. The router tops the client's queue
//! up from the store, [`BATCH`] messages at most, whenever the client
//! thread has moved it down to half of that (into flight or onto the
//! socket). So every matching retained message arrives however many there
//! are, in the store's order, outside `max_queued_messages` (they are
//! stored already), while what one subscription makes the broker hold is
//! bounded by [`BATCH`] and [`BATCH_BYTES`], journal or not.
//!
//! Live messages meanwhile, for a topic the stream has not reached yet:
//! - a retained one replaced the stored message: it is sent once, now,
//!   with retain set, and the stream skips the topic;
//! - any other: the stored message goes first, then the live one, and the
//!   stream skips the topic.
//!
//! Either way each topic's messages keep their order and the retained one
//! is sent once. A stream of a persistent session waits while it is
//! offline and goes on when it connects again; UNSUBSCRIBE, a new
//! subscription to the same filter or the end of a clean session drop it.

use std::collections::HashSet;

use super::retain::{Stored, before};
use super::*;

/// The most streamed messages waiting for one client beyond what is in
/// flight: topped up when the queue is down to half of that.
pub const BATCH: usize = 128;

/// The most payload bytes a top-up fills the queue to (one message at
/// least).
pub const BATCH_BYTES: usize = 256 * 1024;

/// How soon the router looks again at a stream that moved, and at most
/// how long it waits for one that did not.
const POLL_FAST: Duration = Duration::from_millis(2);
const POLL_SLOW: Duration = Duration::from_millis(50);

/// One filter's retained messages still to send.
#[derive(Debug)]
pub(super) struct Stream {
    filter: String,
    qos: QoS,
    /// `upgrade_outgoing_qos`: copies go at the subscription's QoS.
    upgrade: bool,
    sub_id: Option<u32>,
    /// The last topic sent; None before the first.
    after: Option<Arc<str>>,
    /// Topics after the cursor already sent live: see the module doc.
    skip: HashSet<Arc<str>>,
}

impl Stream {
    pub(super) fn new(filter: &str, qos: QoS, upgrade: bool, sub_id: Option<u32>) -> Stream {
        Stream {
            filter: filter.to_string(),
            qos,
            upgrade,
            sub_id,
            after: None,
            skip: HashSet::new(),
        }
    }

    /// Whether this streams `filter`.
    pub(super) fn is_for(&self, filter: &str) -> bool {
        self.filter == filter
    }

    /// Whether `topic` matches and is still to come.
    fn ahead(&self, topic: &str) -> bool {
        topic::matches(&self.filter, topic)
            && self.after.as_deref().is_none_or(|a| before(a, topic))
            && !self.skip.contains(topic)
    }

    /// A live copy that skipped `topic` was dropped after all.
    pub(super) fn unskip(&mut self, topic: &str) {
        self.skip.remove(topic);
    }

    /// The copy of a stored message this stream sends.
    fn copy(&self, m: &Publish, v5: bool) -> Publish {
        let mut copy = m.clone();
        copy.dup = false;
        copy.pkid = 0;
        copy.qos = if self.upgrade {
            self.qos
        } else {
            copy.qos.min(self.qos)
        };
        copy.retain = true;
        if let (true, Some(id)) = (v5, self.sub_id) {
            with_sub_id(&mut copy, id);
        }
        copy
    }
}

impl Router {
    /// Starts the streams of a SUBSCRIBE (after its SUBACK was handed
    /// over). A filter named twice in one packet streams once; a filter
    /// subscribed again starts over.
    pub(super) fn start_streams(&mut self, sid: SessionId, streams: Vec<Stream>) {
        let Some(s) = session_mut(&mut self.sessions, sid) else {
            return;
        };
        for st in streams {
            s.streams.retain(|o| o.filter != st.filter);
            s.streams.push_back(st);
        }
        if !s.streams.is_empty() && !self.streaming.contains(&sid) {
            self.streaming.push(sid);
        }
        self.top_up(sid);
        self.stream_poll = Some(Instant::now() + POLL_FAST);
    }

    /// UNSUBSCRIBE: no more retained messages for `filter`.
    pub(super) fn stop_stream(s: &mut Session, filter: &str) {
        s.streams.retain(|o| o.filter != filter);
    }

    /// When the router should look at its streams next.
    pub(super) fn stream_deadline(&self) -> Option<Instant> {
        self.stream_poll
    }

    /// Tops up every streaming client that has room, if it is time.
    pub(super) fn stream_if_due(&mut self) {
        let Some(at) = self.stream_poll else { return };
        let now = Instant::now();
        if now < at {
            return;
        }
        let mut moved = false;
        let mut i = 0;
        while i < self.streaming.len() {
            let sid = self.streaming[i];
            moved |= self.top_up(sid);
            let active = session_ref(&self.sessions, sid).is_some_and(|s| !s.streams.is_empty());
            if active {
                i += 1;
            } else {
                self.streaming.swap_remove(i);
            }
        }
        self.stream_poll = if self.streaming.is_empty() {
            None
        } else if moved {
            Some(now + POLL_FAST)
        } else {
            let waited = at.saturating_duration_since(self.stream_since);
            Some(now + (waited * 2).clamp(POLL_FAST, POLL_SLOW))
        };
        if moved || self.stream_poll.is_none() {
            self.stream_since = now;
        }
    }

    /// Moves the next retained messages of session `sid`'s streams into its
    /// queue, if it is connected and its queue is down to half a
    /// [`BATCH`]. Returns whether any moved.
    fn top_up(&mut self, sid: SessionId) -> bool {
        let Some(s) = session_mut(&mut self.sessions, sid) else {
            return false;
        };
        let Some(live) = &s.live else { return false };
        let outbox = live.outbox.clone();
        let v5 = live.level == Level::V5;
        let (queued, bytes) = (outbox.queued(), outbox.queued_bytes());
        if queued > BATCH / 2 || bytes >= BATCH_BYTES / 2 {
            return false;
        }
        let journal = self.journal.clone();
        if let Some(j) = &journal {
            if !j.released(s.stream_ticket) {
                return false;
            }
        }
        let mut room = BATCH - queued;
        let mut room_bytes = BATCH_BYTES - bytes;
        let mut items = Vec::new();
        let now = Instant::now();
        let mut found: Vec<&Stored> = Vec::new();
        while room > 0 && room_bytes > 0 {
            let Some(st) = s.streams.front_mut() else {
                break;
            };
            found.clear();
            let limit = room;
            self.retained
                .next_after(&st.filter, st.after.as_deref(), limit, &mut found);
            let mut taken = 0;
            for stored in &found {
                if room == 0 || room_bytes == 0 {
                    break;
                }
                taken += 1;
                let m = &stored.publish;
                st.after = Some(m.topic.clone());
                if st.skip.remove(&m.topic)
                    || m.expired(now)
                    || !may_read(&self.auth, s.acl.as_ref(), stored)
                {
                    continue;
                }
                room -= 1;
                room_bytes = room_bytes.saturating_sub(m.payload.len().max(1));
                items.push(Outgoing::Publish(st.copy(m, v5)));
            }
            if taken < found.len() {
                break;
            }
            if found.len() < limit {
                s.streams.pop_front();
            }
        }
        if items.is_empty() {
            return false;
        }
        self.stats.messages_sent += items.len() as u64;
        match &journal {
            // After the SUBACK and anything else the client waits for.
            Some(j) => {
                s.stream_ticket = j.after_durable(&outbox, items);
            }
            None => {
                for item in items {
                    if let Outgoing::Publish(p) = item {
                        // Outside max_queued_messages: bounded by BATCH.
                        outbox.push_publish(p, QueueLimits::default());
                    }
                }
            }
        }
        true
    }

    /// Before a live message `p` is queued for session `sid` (connected or
    /// not): the streams of the session that have not reached its topic
    /// yet skip it, and the stored message goes first when `p` did not
    /// replace it. Returns whether `p` takes the place of a streamed copy
    /// (so carries retain; if it is dropped, the caller unskips it).
    pub(super) fn overtake(&mut self, sid: SessionId, p: &Publish, stored_now: bool) -> bool {
        let Some(s) = session_mut(&mut self.sessions, sid) else {
            return false;
        };
        if !s.streams.iter().any(|st| st.ahead(&p.topic)) {
            return false;
        }
        let outbox = s.live.as_ref().map(|l| l.outbox.clone());
        let v5 = s.level == Level::V5;
        let mut first = None;
        for st in s.streams.iter_mut() {
            if !st.ahead(&p.topic) {
                continue;
            }
            st.skip.insert(p.topic.clone());
            if !stored_now && first.is_none() {
                first = self
                    .retained
                    .get(&p.topic)
                    .filter(|stored| {
                        !stored.publish.expired(Instant::now())
                            && may_read(&self.auth, s.acl.as_ref(), stored)
                    })
                    .map(|stored| st.copy(&stored.publish, v5));
            }
        }
        let Some(old) = first else {
            return stored_now;
        };
        self.stats.messages_sent += 1;
        match (&outbox, &self.journal) {
            (Some(o), Some(j)) => {
                s.stream_ticket = j.after_durable(o, vec![Outgoing::Publish(old)]);
            }
            (Some(o), None) => {
                o.push_publish(old, QueueLimits::default());
            }
            // Offline: first in its queue, where the live one follows
            // (a QoS 0 one only with queue_qos0_messages, as live ones).
            (None, _) => {
                if old.qos != QoS::AtMostOnce || self.config.queue_qos0_messages {
                    s.offline_bytes += old.payload.len();
                    s.offline.pending.push_back(old);
                }
            }
        }
        stored_now
    }
}

/// Whether a session with ACL rules `acl` may have `stored` sent to it:
/// it may read the topic and, with `check_retain_source`, its publisher
/// may still write it.
fn may_read(auth: &Auth, acl: Option<&Subject>, stored: &Stored) -> bool {
    let topic = &stored.publish.topic;
    acl.is_none_or(|a| a.allows(topic, acl::READ))
        && stored
            .source
            .as_deref()
            .is_none_or(|src| source_may_write(auth, src, topic))
}
