//! Delivery: a PUBLISH routed to every matching subscription, each copy
//! queued on its subscriber's outbox (or its offline session), and the
//! publisher paced when a queue it fills presses ([`crate::outbox::pacing`]).

use super::*;

impl Router {
    /// A PUBLISH from a client: checked, routed, and for MQTT 5 at QoS 1
    /// and 2 acknowledged here, where the reason is known (no matching
    /// subscribers, not authorised), as Mosquitto answers.
    pub(super) fn incoming(&mut self, conn: ConnId, publish: Publish) {
        self.stats.messages_received += 1;
        self.stats.bytes_received += publish.payload.len() as u64;
        let (pkid, qos) = (publish.pkid, publish.qos);
        let allowed = self.may_publish(conn, &publish);
        let mut matched = false;
        if allowed {
            let source = self.source(conn, &publish);
            let from = if self.no_local_subs > 0 {
                self.by_conn.get(&conn).copied()
            } else {
                None
            };
            matched = self.route(publish, source, from);
        }
        self.pace(conn);
        if qos == QoS::AtMostOnce {
            return;
        }
        let Some(live) = self
            .by_conn
            .get(&conn)
            .and_then(|&sid| session_ref(&self.sessions, sid)?.live.as_ref())
        else {
            return;
        };
        if live.level != Level::V5 {
            return;
        }
        let outbox = live.outbox.clone();
        let code = match (allowed, qos) {
            (false, _) => reason::NOT_AUTHORIZED,
            (true, QoS::AtLeastOnce) if !matched => reason::NO_MATCHING_SUBSCRIBERS,
            _ => reason::SUCCESS,
        };
        let ack = Ack { pkid, reason: code };
        let packet = match qos {
            QoS::AtLeastOnce => Packet::PubAck(ack),
            _ => Packet::PubRec(ack),
        };
        // With the journal, once what the message changed is on disk.
        self.hand_over(
            &outbox,
            vec![Outgoing::Packet(packet)],
            true,
            self.queue_limits(),
        );
    }

    /// Holds back the client `conn` on the queues its message filled, if it
    /// pressed one ([`pacing::hold_publisher`]).
    pub(super) fn pace(&mut self, conn: ConnId) {
        if self.fed.iter().any(|&(_, pressing)| pressing) {
            let limits = self.queue_limits();
            let live = |sid: SessionId| session_ref(&self.sessions, sid)?.live.as_ref();
            let publisher = self.by_conn.get(&conn).and_then(|&sid| live(sid));
            if let Some(p) = publisher {
                let fed = self
                    .fed
                    .iter()
                    .filter_map(|&(sid, pressing)| Some((&live(sid)?.outbox, pressing)));
                pacing::hold_publisher(&p.outbox, fed, limits);
            }
        }
        self.fed.clear();
    }

    /// Routes one message from the broker itself or a will.
    pub(super) fn publish(&mut self, p: Publish, source: Option<Arc<Source>>) {
        self.route(p, source, None);
    }

    /// Publishes a will, its expiry interval counted from now.
    pub(super) fn publish_will(&mut self, will: Will, source: Option<Arc<Source>>) {
        let mut props = will.props;
        if let Some(p) = props.as_mut() {
            let p = Arc::make_mut(p);
            if let Some(e) = p.expiry {
                p.expires_at = Instant::now().checked_add(Duration::from_secs(u64::from(e)));
            }
        }
        self.publish(
            Publish {
                dup: false,
                qos: will.qos,
                retain: will.retain,
                topic: will.topic,
                pkid: 0,
                payload: will.payload,
                props,
            },
            source,
        );
    }

    /// Routes one message to every matching subscription and returns
    /// whether any matched. `from` is the publisher's session, for no-local
    /// subscriptions.
    pub(super) fn route(
        &mut self,
        mut p: Publish,
        source: Option<Arc<Source>>,
        from: Option<SessionId>,
    ) -> bool {
        p.dup = false;
        p.pkid = 0;
        self.fed.clear();
        // With retain_available false, clients cannot retain (they are
        // disconnected first); wills with retain set are sent unretained.
        let retained = p.retain && self.config.retain_available;
        if retained {
            // `$SYS` is published again after a restart, never saved.
            if !p.topic.starts_with("$SYS/") {
                persist::journal_retained(&self.journal, &p, source.as_deref());
                self.changed();
            }
            self.retained.set(p.clone(), source);
        }
        let mut targets = std::mem::take(&mut self.scratch);
        targets.clear();
        self.subs
            .for_each_match(&p.topic, |sid, opts| targets.push((sid, opts, false)));
        self.shared
            .for_each_match(&p.topic, |sid, opts| targets.push((sid, opts, true)));
        self.seq += 1;
        self.highest_qos_per_session(&mut targets);
        for &(sid, opts, shared) in &targets {
            if opts.no_local && from == Some(sid) {
                continue;
            }
            // [MQTT-3.3.1-9]: a message sent to an established subscription
            // carries retain 0, unless it asked for retain as published.
            let retain = retained && opts.retain_as_published;
            self.deliver(sid, &p, opts, retain, shared);
        }
        // A subscription that matched counts, even where no-local or the
        // ACL kept the message back (Mosquitto's "no matching
        // subscribers" is about subscriptions).
        let matched = !targets.is_empty();
        self.scratch = targets;
        matched
    }

    /// A 3.x session matched by several of its (not shared) filters gets
    /// one copy at the highest QoS of those filters [MQTT-3.3.5-1]: each of
    /// its matches is raised to that QoS, so the one delivered has it.
    /// (Mosquitto 2.0 sends the QoS of the filter its walk meets first;
    /// MQTT requires the highest, docs/CONFORMANCE.md.)
    fn highest_qos_per_session(&mut self, targets: &mut [(SessionId, SubOpts, bool)]) {
        if targets.len() < 2 {
            return;
        }
        targets.sort_unstable_by_key(|&(sid, _, shared)| (shared, sid));
        let mut start = 0;
        while start < targets.len() {
            let (sid, _, shared) = targets[start];
            let end = start
                + targets[start..]
                    .iter()
                    .take_while(|t| t.0 == sid && t.2 == shared)
                    .count();
            if !shared
                && end - start > 1
                && session_mut(&mut self.sessions, sid).is_some_and(|s| s.level != Level::V5)
            {
                let best = targets[start..end].iter().map(|t| t.1.qos).max();
                for t in &mut targets[start..end] {
                    t.1.qos = best.unwrap_or(t.1.qos);
                }
            }
            start = end;
        }
    }

    /// Queues `p` for one session at most `opts.qos`. A 3.x session
    /// matched by several of its filters gets one copy (see
    /// [`Router::highest_qos_per_session`]). An MQTT 5 session gets
    /// one copy per matching subscription, each with that subscription's
    /// QoS and identifier [MQTT-3.3.4-5], as Mosquitto 2.0 sends; a shared
    /// subscription's pick gets its own copy.
    pub(super) fn deliver(
        &mut self,
        sid: SessionId,
        p: &Publish,
        opts: SubOpts,
        retain: bool,
        shared: bool,
    ) {
        let limits = self.queue_limits();
        let Some(s) = session_mut(&mut self.sessions, sid) else {
            return;
        };
        if !shared && s.level != Level::V5 {
            if s.last_seq == self.seq {
                return;
            }
            s.last_seq = self.seq;
        }
        if s.acl
            .as_ref()
            .is_some_and(|a| !a.allows(&p.topic, acl::READ))
        {
            return;
        }
        // A stream of this session that has not reached the topic yet
        // (stream.rs): the live message keeps its place after the stored one.
        let stored_now = p.retain && self.config.retain_available;
        let overtaken = !s.streams.is_empty() && self.overtake(sid, p, stored_now);
        let Some(s) = session_mut(&mut self.sessions, sid) else {
            return;
        };
        let topic = overtaken.then(|| p.topic.clone());
        let mut p = p.clone();
        p.retain = retain || overtaken;
        p.qos = if self.config.upgrade_outgoing_qos {
            opts.qos
        } else {
            p.qos.min(opts.qos)
        };
        if opts.sub_id != 0 && s.level == Level::V5 {
            with_sub_id(&mut p, opts.sub_id);
        }
        let len = p.payload.len();
        let mut queued_offline = false;
        // Journaled before the client thread can see it, so that the
        // record of its sending comes after.
        let journaled = !s.clean && p.qos != QoS::AtMostOnce;
        let delivered = match &s.live {
            Some(live) => {
                // Pacing (outbox/pacing.rs): a queue above its low-water
                // mark is remembered for holding the publisher back, and
                // one that presses may take more than its limit.
                let pressure = live.outbox.pressure(limits);
                if pressure != Pressure::Low {
                    self.fed.push((sid, pressure == Pressure::Pressing));
                }
                let limits = live.outbox.limits_under(pressure, limits, QUEUE);
                if journaled && live.outbox.has_room(len, limits) {
                    persist::journal_queued(&self.journal, &s.client_id, &p);
                }
                // Behind a streamed batch still waiting for the journal.
                let behind = match &self.journal {
                    Some(j) if s.stream_ticket > 0 && !j.released(s.stream_ticket) => Some(j),
                    _ => None,
                };
                match behind {
                    Some(j) if live.outbox.has_room(len, limits) => {
                        s.stream_ticket = j.after_durable(&live.outbox, vec![Outgoing::Publish(p)]);
                        true
                    }
                    Some(_) => false,
                    None => live.outbox.push_publish(p, limits),
                }
            }
            // Offline persistent session: QoS 1/2 are queued, QoS 0 only
            // with queue_qos0_messages.
            None if !s.clean
                && (p.qos != QoS::AtMostOnce || self.config.queue_qos0_messages)
                && limits.room(s.offline.pending.len(), s.offline_bytes, len) =>
            {
                if journaled {
                    persist::journal_queued(&self.journal, &s.client_id, &p);
                }
                s.offline.pending.push_back(p);
                s.offline_bytes += len;
                queued_offline = true;
                true
            }
            None => false,
        };
        if let (Some(topic), false) = (topic, delivered) {
            // Dropped: the stream sends the stored one (this one) after all.
            for st in s.streams.iter_mut() {
                st.unskip(&topic);
            }
        }
        if delivered {
            self.stats.messages_sent += 1;
            self.stats.bytes_sent += len as u64;
        } else {
            self.stats.messages_dropped += 1;
            debug!(
                "Outgoing messages are being dropped for client {}.",
                s.client_id
            );
        }
        if queued_offline {
            self.changed();
        }
    }
}

/// Sets the subscription identifier of one delivery [MQTT-3.3.4-3]; the
/// message's other properties are shared, not copied.
pub(super) fn with_sub_id(p: &mut Publish, id: u32) {
    let props = p.props.get_or_insert_with(|| Arc::new(PubProps::default()));
    Arc::make_mut(props).sub_ids = vec![id];
}
