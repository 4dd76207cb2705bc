//! QoS 1 and 2 state of one session: outgoing messages awaiting their
//! acknowledgement, and incoming QoS 2 packet ids awaiting PUBREL.
//!
//! The client thread owns it while connected. When the connection ends it
//! travels back to the router inside [`SessionState`], and comes out again on
//! the next connection of a persistent session, so unacknowledged messages are
//! sent again with DUP set [MQTT-4.4.0-1].

use std::collections::{HashSet, VecDeque};

use crate::codec::{PacketType, Publish, QoS};

/// Where an outgoing QoS 1/2 message stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutState {
    /// Sent, awaiting PUBACK (QoS 1) or PUBREC (QoS 2).
    Sent(Publish),
    /// PUBREC received and PUBREL sent, awaiting PUBCOMP.
    Released(u16),
}

impl OutState {
    fn pkid(&self) -> u16 {
        match self {
            OutState::Sent(p) => p.pkid,
            OutState::Released(id) => *id,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Inflight {
    /// In send order; acknowledgements usually come in that order too.
    out: VecDeque<OutState>,
    /// The last packet id handed out.
    last_id: u16,
    /// QoS 2 ids received (and forwarded) whose PUBREL has not come yet.
    in_qos2: Vec<u16>,
    /// Of those, the ids received a second time on this connection.
    in_repeated: Vec<u16>,
    /// Payload bytes of the messages in `out` still awaiting PUBACK or PUBREC.
    bytes: usize,
    /// The packet ids in `out`: a free one is found without a scan of
    /// `out` per id tried, however large the window.
    ids: HashSet<u16>,
}

/// What a session keeps between connections: in-flight state plus the
/// messages that were queued for it but not yet sent.
#[derive(Debug, Default)]
pub struct SessionState {
    pub inflight: Inflight,
    pub pending: VecDeque<Publish>,
}

impl Inflight {
    /// Messages currently awaiting an acknowledgement.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Whether another message may be sent with a window of `max` messages
    /// and `max_bytes` payload bytes (0 = no limit). The byte limit lets the
    /// message that crosses it go, so a large message is never stuck.
    pub fn has_room(&self, max: u16, max_bytes: usize) -> bool {
        // Packet ids are 16 bits, which bounds an unlimited window too.
        let max = if max == 0 { 65535 } else { max as usize };
        self.out.len() < max && (max_bytes == 0 || self.bytes < max_bytes)
    }

    /// Payload bytes in flight.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Assigns a free packet id to `p`, records it and returns the packet to send.
    pub fn start(&mut self, mut p: Publish) -> Publish {
        debug_assert!(p.qos != QoS::AtMostOnce);
        let id = self.take_id();
        p.pkid = id;
        self.bytes += p.payload.len();
        self.ids.insert(id);
        self.out.push_back(OutState::Sent(p.clone()));
        p
    }

    /// The next packet id after the last one handed out that no message in
    /// flight holds. A bridge takes its SUBSCRIBE and UNSUBSCRIBE ids here
    /// too, so the ids go on from one connection to the next, as
    /// Mosquitto's do.
    pub fn take_id(&mut self) -> u16 {
        let mut id = self.last_id;
        loop {
            id = id.wrapping_add(1);
            if id == 0 {
                id = 1;
            }
            if !self.ids.contains(&id) {
                break;
            }
        }
        self.last_id = id;
        id
    }

    /// Appends a saved entry (persistence), after those before it.
    pub fn push_restored(&mut self, s: OutState) {
        if let OutState::Sent(p) = &s {
            self.bytes += p.payload.len();
        }
        self.ids.insert(s.pkid());
        self.out.push_back(s);
    }

    /// The last packet id handed out, as saved (persistence).
    pub fn set_last_id(&mut self, id: u16) {
        self.last_id = id;
    }

    /// Takes the entry at `i` out.
    fn remove(&mut self, i: usize) -> Option<OutState> {
        let s = self.out.remove(i)?;
        self.ids.remove(&s.pkid());
        Some(s)
    }

    fn position(&self, pkid: u16) -> Option<usize> {
        self.out.iter().position(|s| s.pkid() == pkid)
    }

    /// PUBACK: true when it matched a QoS 1 message, which is now done.
    pub fn puback(&mut self, pkid: u16) -> bool {
        match self.position(pkid) {
            Some(i) if matches!(&self.out[i], OutState::Sent(p) if p.qos == QoS::AtLeastOnce) => {
                if let Some(OutState::Sent(p)) = self.remove(i) {
                    self.bytes -= p.payload.len();
                }
                true
            }
            _ => false,
        }
    }

    /// PUBREC: true when it matched a QoS 2 message; a PUBREL is then due.
    /// A repeated PUBREC for a released id also wants the PUBREL again.
    pub fn pubrec(&mut self, pkid: u16) -> bool {
        match self.position(pkid) {
            Some(i) => match &self.out[i] {
                OutState::Sent(p) if p.qos == QoS::ExactlyOnce => {
                    self.bytes -= p.payload.len();
                    self.out[i] = OutState::Released(pkid);
                    true
                }
                OutState::Released(_) => true,
                OutState::Sent(_) => false,
            },
            None => false,
        }
    }

    /// What the outgoing message with packet id `pkid` waits for, if any:
    /// an acknowledgement of another kind is a protocol violation.
    pub fn awaits(&self, pkid: u16) -> Option<PacketType> {
        self.position(pkid).map(|i| match &self.out[i] {
            OutState::Sent(p) if p.qos == QoS::AtLeastOnce => PacketType::PubAck,
            OutState::Sent(_) => PacketType::PubRec,
            OutState::Released(_) => PacketType::PubComp,
        })
    }

    /// PUBREC with an error reason (MQTT 5): the message is done, no
    /// PUBREL follows.
    pub fn refused(&mut self, pkid: u16) -> bool {
        match self.position(pkid) {
            Some(i) => {
                if let Some(OutState::Sent(p)) = self.remove(i) {
                    self.bytes -= p.payload.len();
                }
                true
            }
            None => false,
        }
    }

    /// PUBCOMP: true when it completed a released QoS 2 message.
    pub fn pubcomp(&mut self, pkid: u16) -> bool {
        match self.position(pkid) {
            Some(i) if matches!(self.out[i], OutState::Released(_)) => {
                self.remove(i);
                true
            }
            _ => false,
        }
    }

    /// What to send again on a new connection, in the original order:
    /// unacknowledged PUBLISHes with DUP set, and PUBRELs.
    pub fn resend(&self) -> impl Iterator<Item = Resend> + '_ {
        self.out.iter().map(|s| match s {
            OutState::Sent(p) => {
                let mut p = p.clone();
                p.dup = true;
                Resend::Publish(p)
            }
            OutState::Released(id) => Resend::PubRel(*id),
        })
    }

    /// An incoming QoS 2 PUBLISH: true when it is new and must be forwarded,
    /// false for a repeat of one awaiting PUBREL (exactly once [MQTT-4.3.3-2]).
    pub fn receive_qos2(&mut self, pkid: u16) -> bool {
        if self.in_qos2.contains(&pkid) {
            return false;
        }
        self.in_qos2.push(pkid);
        true
    }

    /// A repeat of an unreleased incoming QoS 2 message: true for the
    /// third copy on one connection, which Mosquitto (2.0 and 2.1) takes
    /// for a protocol violation; the second only gets its PUBREC again.
    pub fn repeated_too_often(&mut self, pkid: u16) -> bool {
        if self.in_repeated.contains(&pkid) {
            return true;
        }
        self.in_repeated.push(pkid);
        false
    }

    /// A new connection of the session: repeats count again from none
    /// (a client resends what it had not seen released).
    pub fn new_connection(&mut self) {
        self.in_repeated.clear();
    }

    /// PUBREL: the id may be used for a new message from now on.
    pub fn release_qos2(&mut self, pkid: u16) {
        self.in_qos2.retain(|&id| id != pkid);
        self.in_repeated.retain(|&id| id != pkid);
    }

    /// Rebuilds saved state (persistence): outgoing entries in send order,
    /// incoming QoS 2 ids awaiting PUBREL, and the last packet id handed out.
    pub fn restore(out: Vec<OutState>, in_qos2: Vec<u16>, last_id: u16) -> Inflight {
        let bytes = out
            .iter()
            .map(|s| match s {
                OutState::Sent(p) => p.payload.len(),
                OutState::Released(_) => 0,
            })
            .sum();
        Inflight {
            ids: out.iter().map(OutState::pkid).collect(),
            out: out.into(),
            last_id,
            in_qos2,
            in_repeated: Vec::new(),
            bytes,
        }
    }

    /// Drops the outgoing messages not yet acknowledged that `keep` refuses
    /// (PUBRELs stay: their message was delivered). Returns how many went.
    pub fn retain_unacknowledged(&mut self, mut keep: impl FnMut(&Publish) -> bool) -> usize {
        let before = self.out.len();
        let mut bytes = self.bytes;
        let ids = &mut self.ids;
        self.out.retain(|s| match s {
            OutState::Sent(p) if !keep(p) => {
                bytes -= p.payload.len();
                ids.remove(&p.pkid);
                false
            }
            _ => true,
        });
        self.bytes = bytes;
        before - self.out.len()
    }

    /// Outgoing entries in send order (for persistence).
    pub fn outgoing(&self) -> impl Iterator<Item = &OutState> {
        self.out.iter()
    }

    /// Incoming QoS 2 ids awaiting PUBREL (for persistence).
    pub fn incoming_qos2(&self) -> &[u16] {
        &self.in_qos2
    }

    /// The last packet id handed out (for persistence).
    pub fn last_id(&self) -> u16 {
        self.last_id
    }
}

/// One item of [`Inflight::resend`].
#[derive(Debug, PartialEq, Eq)]
pub enum Resend {
    Publish(Publish),
    PubRel(u16),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn msg(qos: QoS) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: Arc::from("a"),
            pkid: 0,
            payload: Arc::from(&b"x"[..]),
            props: None,
        }
    }

    #[test]
    fn ids_are_nonzero_unique_and_wrap() {
        let mut f = Inflight {
            last_id: 65534,
            ..Default::default()
        };
        let a = f.start(msg(QoS::AtLeastOnce));
        let b = f.start(msg(QoS::AtLeastOnce));
        assert_eq!((a.pkid, b.pkid), (65535, 1));
        f.last_id = 0;
        let c = f.start(msg(QoS::AtLeastOnce));
        assert_eq!(c.pkid, 2, "1 is still in flight");
    }

    #[test]
    fn qos1_and_qos2_flows() {
        let mut f = Inflight::default();
        let a = f.start(msg(QoS::AtLeastOnce));
        let b = f.start(msg(QoS::ExactlyOnce));
        assert!(!f.has_room(2, 0));
        assert!(f.has_room(3, 3), "1 byte each");
        assert!(!f.has_room(3, 2));
        assert_eq!(f.bytes(), 2);
        assert!(!f.puback(b.pkid), "PUBACK does not finish a QoS 2 message");
        assert!(f.puback(a.pkid));
        assert!(f.pubrec(b.pkid));
        assert_eq!(f.bytes(), 0, "a released message holds no payload");
        let resend: Vec<_> = f.resend().collect();
        assert_eq!(resend, vec![Resend::PubRel(b.pkid)]);
        assert!(f.pubcomp(b.pkid));
        assert!(f.is_empty());
        assert!(!f.pubcomp(b.pkid));
    }

    #[test]
    fn resend_sets_dup() {
        let mut f = Inflight::default();
        f.start(msg(QoS::AtLeastOnce));
        match f.resend().next() {
            Some(Resend::Publish(p)) => assert!(p.dup),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn incoming_qos2_is_deduplicated_until_pubrel() {
        let mut f = Inflight::default();
        assert!(f.receive_qos2(7));
        assert!(!f.receive_qos2(7));
        f.release_qos2(7);
        assert!(f.receive_qos2(7));
    }

    /// 65,535 messages in flight (a receive maximum of 65,535 with
    /// max_inflight_messages 0): each new id is found at once.
    #[test]
    fn a_full_id_space_in_flight_is_not_quadratic() {
        let mut f = Inflight::default();
        for _ in 0..65_535 {
            f.start(msg(QoS::AtLeastOnce));
        }
        assert_eq!(f.len(), 65_535);
        assert!(f.puback(300));
        let p = f.start(msg(QoS::AtLeastOnce));
        assert_eq!(p.pkid, 300, "the only free id");
    }
}
