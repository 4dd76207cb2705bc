//! The output pump: messages taken from the outbox, sent within the
//! in-flight window and the write high-water mark, their packet ids
//! assigned; control packets in order.

use super::*;
use crate::codec::{SUBACK_FAILURE, SubAck};

impl Connected<'_> {
    /// Takes what the router queued. Acknowledgements (the router's MQTT 5
    /// PUBACK and PUBREC with their reason codes, and those the journal
    /// released) go out at once: behind messages that the in-flight window
    /// or the client's Receive Maximum holds back they could wait for
    /// themselves (a client may acknowledge nothing until its own
    /// publishes are acknowledged; a PUBREL frees the window's QoS 2 slots).
    pub(super) fn take_outbox(&mut self) {
        let mut fresh = VecDeque::new();
        self.outbox.take(&mut fresh);
        for item in fresh {
            match item {
                Outgoing::Packet(
                    p @ (Packet::PubAck(_)
                    | Packet::PubRec(_)
                    | Packet::PubRel(_)
                    | Packet::PubComp(_)),
                ) => self.control(p),
                other => {
                    self.controls_pending += usize::from(is_control(&other));
                    self.pending.push_back(other)
                }
            }
        }
    }

    /// A queued message went into flight. A retained copy sent after a
    /// SUBACK (retain set) was never queued in the journal.
    pub(super) fn record_sent(&self, p: &Publish) {
        if !p.retain {
            self.record(|client_id| Record::Sent {
                client_id,
                pkid: p.pkid,
                check: message_check(p),
            });
        }
    }

    pub(super) fn queue_limits(&self) -> QueueLimits {
        QueueLimits::of(&self.shared.config)
    }

    /// Whether the next pending item may go out now (the in-flight window
    /// has room for it), buffer space aside.
    pub(super) fn can_pump(&self) -> bool {
        let max = self.shared.config.max_inflight_messages;
        // An MQTT 5 client's receive maximum narrows the window.
        let max = match (max, self.limits.receive_maximum) {
            (0, r) => r,
            (m, r) => m.min(r),
        };
        let max_bytes = self.shared.config.max_inflight_bytes;
        match self.pending.front() {
            None => false,
            Some(Outgoing::Publish(p)) => {
                p.qos == QoS::AtMostOnce || self.inflight.has_room(max, max_bytes)
            }
            Some(Outgoing::Packet(_)) => true,
        }
    }

    /// Moves pending output into the write buffer as far as the in-flight
    /// window and the buffer's high-water mark allow.
    pub(super) fn pump(&mut self) {
        let now = Instant::now();
        let mut drained = false;
        while self.c.pending_write() < WRITE_HIGH_WATER && self.can_pump() {
            let Some(item) = self.pending.pop_front() else {
                break;
            };
            match item {
                Outgoing::Publish(p) => {
                    self.outbox.dequeued(1, p.payload.len());
                    drained = true;
                    // Expired while queued [MQTT-3.3.2-5], or too large
                    // for the client: dropped.
                    let p = self.unmounted(p);
                    if p.expired(now) || !self.fits(&p) {
                        // Mosquitto numbers a message when it queues it,
                        // so one dropped here has used up its packet id:
                        // the ids that follow are the ones it would send.
                        if p.qos != QoS::AtMostOnce {
                            self.inflight.take_id();
                        }
                        continue;
                    }
                    let p = if p.qos == QoS::AtMostOnce {
                        p
                    } else {
                        let p = self.inflight.start(p);
                        self.record_sent(&p);
                        p
                    };
                    self.c.queue(&Packet::Publish(p));
                }
                Outgoing::Packet(p) => {
                    self.controls_pending -= 1;
                    self.control(p)
                }
            }
        }
        if drained {
            self.outbox.drained(self.queue_limits());
        }
        if self.controls_pending > 0 && self.c.pending_write() < WRITE_HIGH_WATER {
            self.controls_ahead();
        }
    }

    /// Behind a full in-flight window, control packets go ahead of the
    /// messages that wait: a SUBACK or an MQTT 5 acknowledgement must not
    /// wait for the client's PUBACKs, which are not read while they pile
    /// up. (What follows a SUBACK, its retained messages, stays behind it.)
    fn controls_ahead(&mut self) {
        let mut rest = VecDeque::with_capacity(self.pending.len());
        for item in std::mem::take(&mut self.pending) {
            match item {
                Outgoing::Packet(p) => {
                    self.controls_pending -= 1;
                    self.control(p);
                }
                other => rest.push_back(other),
            }
        }
        self.pending = rest;
    }

    /// Puts the failure codes of the filters taken out of a SUBSCRIBE
    /// ([`Connected::refuse_deep_filters`]) into its SUBACK, in place.
    fn add_refused_codes(&mut self, s: &mut SubAck) {
        let Some(at) = self
            .refused_filters
            .iter()
            .position(|(pkid, _)| *pkid == s.pkid)
        else {
            return;
        };
        let (_, refused) = self.refused_filters.remove(at);
        let code = match self.level {
            Level::V5 => reason::TOPIC_FILTER_INVALID,
            _ => SUBACK_FAILURE,
        };
        for i in refused {
            s.codes.insert(i.min(s.codes.len()), code);
        }
    }

    /// Whether the client's unsent output is at its bound: the write
    /// buffer at its high-water mark, or control packets from the router
    /// (SUBACK, UNSUBACK, MQTT 5 acks) waiting behind a full in-flight
    /// window. Until it drains, the client's packets are not read.
    pub(super) fn output_full(&self) -> bool {
        self.c.pending_write() >= WRITE_HIGH_WATER || self.controls_pending >= MAX_PENDING_CONTROLS
    }

    /// Writes a control packet from the router (or one the journal
    /// released) after the acknowledgement bookkeeping it closes.
    pub(super) fn control(&mut self, mut p: Packet) {
        if let Packet::SubAck(s) = &mut p {
            self.add_refused_codes(s);
        }
        match &p {
            Packet::PubAck(_) => self.acks_due = self.acks_due.saturating_sub(1),
            // An error PUBREC ends the flow: no PUBREL follows.
            Packet::PubRec(a) if a.reason >= 0x80 => self.inflight.release_qos2(a.pkid),
            _ => {}
        }
        self.c.queue(&p);
    }
}

fn is_control(item: &Outgoing) -> bool {
    matches!(item, Outgoing::Packet(_))
}
