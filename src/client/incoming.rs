//! Packets from the client: PUBLISH with its QoS flow, topic aliases and
//! mount points, acknowledgements, SUBSCRIBE and the rest, forwarded to
//! the router; and what the journal records of them.

use super::*;
use crate::codec::{PacketType, Subscribe};
use crate::session::aliases::AliasError;
use crate::topic;

impl Connected<'_> {
    /// Handles one packet from the client. Ok(Some) ends the session.
    pub(super) fn handle(&mut self, p: Packet) -> Result<Option<End>, End> {
        match p {
            Packet::Publish(p) => self.incoming_publish(p)?,
            Packet::PubAck(a) => {
                if self.inflight.puback(a.pkid) {
                    self.record_step(a.pkid, Step::Acked);
                } else {
                    self.unexpected_ack(PacketType::PubAck, a.pkid)?;
                }
            }
            // A PUBREC with an error reason ends that message's flow
            // [MQTT-4.3.3]: no PUBREL follows.
            Packet::PubRec(a) if a.reason >= 0x80 => {
                if self.inflight.refused(a.pkid) {
                    self.record_step(a.pkid, Step::Refused);
                }
            }
            Packet::PubRec(a) => {
                if self.inflight.pubrec(a.pkid) {
                    self.record_step(a.pkid, Step::Received);
                    // Not before the journal knows: a PUBLISH sent again
                    // after a crash would be a second copy to a receiver
                    // that has forgotten the id.
                    self.ack(Reply::PubRel(Ack::ok(a.pkid)), self.persistent)?;
                } else {
                    self.unexpected_ack(PacketType::PubRec, a.pkid)?;
                    // As Mosquitto: the PUBREL goes out all the same, so
                    // a peer that lost track can complete its flow.
                    self.ack(Reply::PubRel(Ack::ok(a.pkid)), false)?;
                }
            }
            Packet::PubComp(a) => {
                if self.inflight.pubcomp(a.pkid) {
                    self.record_step(a.pkid, Step::Completed);
                } else {
                    self.unexpected_ack(PacketType::PubComp, a.pkid)?;
                }
            }
            Packet::PubRel(a) => {
                // Always answered, known id or not [MQTT-4.3.3-2].
                self.inflight.release_qos2(a.pkid);
                self.record_step(a.pkid, Step::Released);
                self.ack(Reply::PubComp(Ack::ok(a.pkid)), self.persistent)?;
            }
            Packet::Subscribe(mut subscribe) => {
                self.refuse_deep_filters(&mut subscribe);
                let max_qos = QoS::from_u8(self.listener.max_qos).unwrap_or(QoS::ExactlyOnce);
                for f in &mut subscribe.filters {
                    f.qos = f.qos.min(max_qos);
                    if self.mount_point.is_some() {
                        f.filter = self.mounted(&f.filter);
                    }
                }
                self.to_router(Event::Subscribe {
                    conn: self.conn_id,
                    subscribe: Box::new(subscribe),
                })?
            }
            Packet::Unsubscribe(mut unsubscribe) => {
                if self.mount_point.is_some() {
                    for f in &mut unsubscribe.filters {
                        *f = self.mounted(f);
                    }
                }
                self.to_router(Event::Unsubscribe {
                    conn: self.conn_id,
                    unsubscribe,
                })?
            }
            Packet::PingReq => self.c.queue(&Packet::PingResp),
            Packet::Disconnect(d) => return self.disconnect(&d).map(Some),
            // [MQTT-3.1.0-2]: a second CONNECT is a protocol violation.
            Packet::Connect(_) => return Err(End::SecondConnect),
            Packet::Auth(_) => {
                return Err(End::Protocol(
                    "AUTH, but no authentication method is offered".into(),
                    reason::BAD_AUTHENTICATION_METHOD,
                ));
            }
            // A server's packet: closed without a DISCONNECT, as Mosquitto.
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(End::Protocol(
                    format!("unexpected {} from a client", p.kind()),
                    CLOSE_ONLY,
                ));
            }
        }
        Ok(None)
    }

    /// Takes the filters deeper than Mosquitto allows out of a SUBSCRIBE
    /// (logged); their places get a failure code in the SUBACK, the other
    /// filters are granted ([`Connected::control`]).
    fn refuse_deep_filters(&mut self, subscribe: &mut Subscribe) {
        if !subscribe.filters.iter().any(|f| topic::too_deep(&f.filter)) {
            return;
        }
        let mut refused = Vec::new();
        let mut i = 0;
        subscribe.filters.retain(|f| {
            let deep = topic::too_deep(&f.filter);
            if deep {
                refused.push(i);
            }
            i += 1;
            !deep
        });
        info!(
            "Client {} subscribed to {} filter(s) deeper than {} levels: refused.",
            self.client_id,
            refused.len(),
            topic::MAX_SEPARATORS + 1
        );
        self.refused_filters.push((subscribe.pkid, refused));
    }

    /// An acknowledgement that completed nothing: for an unknown packet id
    /// it is logged and ignored; for a message that waits for another kind
    /// (a PUBREC for a QoS 1 message, a PUBACK for a QoS 2 one, a PUBCOMP
    /// before the PUBREC) it is a protocol violation that closes the
    /// connection, as in Mosquitto.
    fn unexpected_ack(&self, kind: PacketType, pkid: u16) -> Result<(), End> {
        match self.inflight.awaits(pkid) {
            None => {
                debug!(
                    "Client {} sent {kind} for unknown id {pkid}.",
                    self.client_id
                );
                Ok(())
            }
            // Closed without a DISCONNECT, as Mosquitto does.
            Some(want) => Err(End::Protocol(
                format!("{kind} for packet id {pkid}, which waits for {want}"),
                CLOSE_ONLY,
            )),
        }
    }

    /// DISCONNECT from the client. MQTT 5 may change the session expiry
    /// interval, but not from 0 [MQTT-3.14.2-2], and may ask for its will.
    pub(super) fn disconnect(&mut self, d: &Disconnect) -> Result<End, End> {
        if let Some(expiry) = d.props.int(id::SESSION_EXPIRY) {
            if self.session_expiry == 0 && expiry != 0 {
                return Err(End::Protocol(
                    "session expiry set in DISCONNECT after 0 in CONNECT".into(),
                    reason::PROTOCOL_ERROR,
                ));
            }
            self.session_expiry = expiry;
        }
        Ok(match d.reason {
            reason::DISCONNECT_WITH_WILL => End::GracefulWithWill,
            _ => End::Graceful,
        })
    }

    /// MQTT 5: the topic of a PUBLISH that uses a topic alias, and the
    /// alias recorded for later ones [MQTT-3.3.2.3.4].
    pub(super) fn resolve_alias(&mut self, p: &mut Publish) -> Result<(), End> {
        match self.aliases.resolve(p, self.listener.max_topic_alias) {
            Ok(()) => Ok(()),
            Err(AliasError::OutOfRange) => Err(End::Protocol(
                "topic alias out of range".into(),
                reason::TOPIC_ALIAS_INVALID,
            )),
            // An alias in range but never set: a protocol error
            // (Mosquitto's 0x82), not an invalid alias.
            Err(AliasError::Unknown) => Err(End::Protocol(
                "unknown topic alias".into(),
                reason::PROTOCOL_ERROR,
            )),
        }
    }

    pub(super) fn incoming_publish(&mut self, mut p: Publish) -> Result<(), End> {
        let v5 = self.level == Level::V5;
        if p.retain && !self.shared.config.retain_available {
            return Err(End::Protocol(
                "retained message, but retain_available is false".into(),
                reason::RETAIN_NOT_SUPPORTED,
            ));
        }
        if p.qos as u8 > self.listener.max_qos {
            return Err(End::Protocol(
                format!("QoS {} is above max_qos", p.qos as u8),
                reason::QOS_NOT_SUPPORTED,
            ));
        }
        self.resolve_alias(&mut p)?;
        // A client may not send a Subscription Identifier [MQTT-3.3.4-6]:
        // dropped, as Mosquitto 2.0 does, so that a subscriber only ever
        // gets its own identifiers (docs/MQTT5.md).
        if let Some(pp) = p.props.as_mut().filter(|pp| !pp.sub_ids.is_empty()) {
            Arc::make_mut(pp).sub_ids.clear();
        }
        let limit = self.shared.config.message_size_limit as usize;
        // Oversized messages are dropped, but their QoS flow completes (Mosquitto).
        let mut refusal = None;
        if limit != 0 && p.payload.len() > limit {
            info!(
                "Dropped too large PUBLISH from {} ({} bytes) on {}.",
                self.client_id,
                p.payload.len(),
                p.topic
            );
            // Mosquitto's reason: 0x95, Packet too large.
            refusal = Some(reason::PACKET_TOO_LARGE);
        } else if p.props.as_ref().is_some_and(|pp| pp.utf8)
            && std::str::from_utf8(&p.payload).is_err()
        {
            // Payload format indicator 1: the payload must be UTF-8.
            info!(
                "Dropped PUBLISH from {} on {}: payload is not UTF-8 as its format indicator says.",
                self.client_id, p.topic
            );
            refusal = Some(reason::PAYLOAD_FORMAT_INVALID);
        }
        // memory_limit: the message is dropped; an MQTT 5 publisher of a
        // QoS 1 or 2 message is told Quota exceeded and stays, any other is
        // disconnected, as Mosquitto does.
        let limit = self.shared.config.memory_limit;
        if refusal.is_none() && sys::heap_over(limit, 0) {
            if v5 && p.qos != QoS::AtMostOnce {
                info!(
                    "Dropped PUBLISH from {} on {}: memory_limit ({limit} bytes) reached.",
                    self.client_id, p.topic
                );
                refusal = Some(reason::QUOTA_EXCEEDED);
            } else {
                return Err(End::Quota(format!(
                    "memory_limit ({limit} bytes) reached, its PUBLISH on {} dropped",
                    p.topic
                )));
            }
        }
        // 3.x acknowledgements carry no reason.
        let answer = |id: u16| Ack {
            pkid: id,
            reason: if v5 { refusal.unwrap_or(0) } else { 0 },
        };
        match p.qos {
            QoS::AtMostOnce => {
                if refusal.is_none() {
                    self.forward(p)?;
                }
            }
            QoS::AtLeastOnce => {
                let id = p.pkid;
                // Until its PUBACK is written, whoever sends it.
                self.acks_due += 1;
                if refusal.is_some() || !v5 {
                    if refusal.is_none() {
                        self.forward(p)?;
                    }
                    self.ack(Reply::PubAck(answer(id)), true)?;
                } else {
                    // The router answers: the reason says whether anyone
                    // subscribed and whether the ACL allowed it.
                    self.check_receive_maximum()?;
                    self.forward(p)?;
                }
            }
            QoS::ExactlyOnce => {
                let id = p.pkid;
                // Forward once; a repeat before PUBREL only gets PUBREC again.
                let new = self.inflight.receive_qos2(id);
                if !new && self.inflight.repeated_too_often(id) {
                    return Err(End::Protocol(
                        format!("a third copy of QoS 2 message {id} before its PUBREL"),
                        reason::PROTOCOL_ERROR,
                    ));
                }
                if new && v5 {
                    self.check_receive_maximum()?;
                }
                // An error PUBREC (MQTT 5) ends the flow: no PUBREL follows.
                let refused = refusal.is_some() && v5;
                if new && !refused {
                    self.record(|client_id| Record::IncomingQos2 {
                        client_id,
                        pkid: id,
                    });
                }
                if !new || refusal.is_some() || !v5 {
                    if new && refusal.is_none() {
                        self.forward(p)?;
                    }
                    if refused {
                        self.inflight.release_qos2(id);
                    }
                    self.ack(Reply::PubRec(answer(id)), true)?;
                } else {
                    // The router answers, once the journal has it.
                    self.forward(p)?;
                }
            }
        }
        Ok(())
    }

    /// MQTT 5: the client may have no more QoS 1/2 messages unacknowledged
    /// than the receive maximum the broker sent [MQTT-3.3.4-9].
    pub(super) fn check_receive_maximum(&self) -> Result<(), End> {
        let max = self.shared.config.max_inflight_messages;
        let used = self.acks_due + self.inflight.incoming_qos2().len();
        if max > 0 && used > usize::from(max) {
            return Err(End::Protocol(
                "receive maximum exceeded".into(),
                reason::RECEIVE_MAXIMUM_EXCEEDED,
            ));
        }
        Ok(())
    }

    /// A message for the client, without the mount point.
    pub(super) fn unmounted(&self, mut p: Publish) -> Publish {
        if let Some(mp) = self.mount_point {
            if let Some(t) = p.topic.strip_prefix(mp) {
                p.topic = Arc::from(t);
            }
        }
        p
    }

    /// Whether an MQTT 5 client takes a packet this large; a message it
    /// does not is dropped, as Mosquitto does [MQTT-3.1.2-25].
    pub(super) fn fits(&self, p: &Publish) -> bool {
        let max = self.limits.max_packet;
        max == 0 || crate::codec::publish_len(p, self.level == Level::V5) <= max as usize
    }

    /// A topic or filter from the client, under the mount point.
    pub(super) fn mounted(&self, t: &str) -> String {
        match self.mount_point {
            Some(mp) => format!("{mp}{t}"),
            None => t.to_string(),
        }
    }

    pub(super) fn forward(&mut self, mut publish: Publish) -> Result<(), End> {
        if self.mount_point.is_some() {
            publish.topic = Arc::from(self.mounted(&publish.topic));
        }
        self.to_router(Event::Publish {
            conn: self.conn_id,
            publish,
        })
    }

    /// Sends an acknowledgement: with the journal on and `durable` set,
    /// through the router, which has the journal send it once what it
    /// depends on is on disk; otherwise at once.
    pub(super) fn ack(&mut self, ack: Reply, durable: bool) -> Result<(), End> {
        if durable && self.shared.journal.is_some() {
            self.to_router(Event::Ack {
                conn: self.conn_id,
                ack,
            })
        } else {
            self.control(ack.packet());
            Ok(())
        }
    }

    /// Journals a change of this persistent session.
    pub(super) fn record(&self, r: impl FnOnce(String) -> Record) {
        if let (Some(j), true) = (&self.shared.journal, self.persistent) {
            j.append(r(self.client_id.clone()));
        }
    }

    pub(super) fn record_step(&self, pkid: u16, step: Step) {
        self.record(|client_id| Record::Progress {
            client_id,
            pkid,
            step,
        });
    }

    pub(super) fn to_router(&self, ev: Event) -> Result<(), End> {
        self.shared.router.send(ev).map_err(|_| End::Shutdown)
    }
}
