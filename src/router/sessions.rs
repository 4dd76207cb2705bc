//! Sessions: a CONNECT attached to its session (new, resumed or taken
//! over), a connection's end, and a session's removal.

use super::*;

impl Router {
    pub(super) fn connect(&mut self, req: Box<ConnectRequest>) {
        // A session or will delay that ran out while events queued ends
        // before this connection can revive or cancel it.
        self.fire_timers();
        if self.stopping {
            // Dropping the reply sender closes that connection.
            return;
        }
        let Some(&sid) = self.by_client_id.get(&req.client_id) else {
            // global_max_clients (Mosquitto 2.1) counts every session, the
            // persistent ones of absent clients too; a client with a
            // session still gets back to it.
            if self
                .config
                .global_max_clients
                .is_some_and(|max| self.by_client_id.len() >= max)
            {
                let _ = req.reply.send(ConnectReply {
                    session_present: false,
                    state: SessionState::default(),
                    busy: true,
                });
                return;
            }
            let sid = self.new_session(&req.client_id);
            self.attach(sid, *req, false);
            return;
        };
        let Some(s) = self.session(sid) else { return };
        if let Some(live) = &s.live {
            // Session takeover [MQTT-3.1.4-2]: close the old connection; the
            // new one is attached when the old one has handed back its state.
            info!(
                "Client {} already connected, closing old connection.",
                s.client_id
            );
            live.outbox.request_close(CloseReason::TakenOver);
            // A CONNECT already waiting loses: dropping its reply sender
            // closes that connection.
            s.takeover = Some(req);
            return;
        }
        self.attach(sid, *req, true);
    }

    pub(super) fn new_session(&mut self, client_id: &str) -> SessionId {
        let s = Session {
            client_id: client_id.to_string(),
            clean: true,
            live: None,
            subs: HashMap::new(),
            offline: SessionState::default(),
            takeover: None,
            last_seq: 0,
            offline_bytes: 0,
            offline_since: None,
            identity: Identity::default(),
            acl: None,
            expiry: 0,
            level: Level::V311,
            delayed_will: None,
            generation: 0,
            bridge: false,
            streams: VecDeque::new(),
            stream_ticket: 0,
        };
        let sid = match self.free.pop() {
            Some(sid) => {
                self.sessions[sid as usize] = Some(s);
                sid
            }
            None => {
                self.sessions.push(Some(s));
                (self.sessions.len() - 1) as SessionId
            }
        };
        self.by_client_id.insert(client_id.to_string(), sid);
        sid
    }

    /// Attaches a connection to a session that has no live connection.
    pub(super) fn attach(&mut self, sid: SessionId, req: ConnectRequest, existed: bool) {
        let ConnectRequest {
            conn,
            level,
            clean,
            session_expiry,
            will,
            outbox,
            reply,
            username,
            scope,
            client_id,
            bridge,
            own_bridge,
        } = req;
        let identity = Identity {
            username,
            scope,
            own_bridge,
        };
        let acl = self.subject(&identity, &client_id);
        let Some(s) = session_mut(&mut self.sessions, sid) else {
            return;
        };
        let resumed = existed && !s.clean && !clean;
        // A persistent session starts, or one is discarded.
        let persistent_change = !clean || (existed && !s.clean);
        persist::journal_attach(
            &self.journal,
            &client_id,
            existed && !s.clean && !resumed,
            (session_expiry != 0).then_some((&identity, session_expiry)),
        );
        // A new connection within the will delay cancels the will
        // [MQTT-3.1.3-9]; timers of the absence are void.
        s.delayed_will = None;
        s.generation += 1;
        let old_subs = if resumed {
            Vec::new()
        } else {
            // A clean start discards any old state [MQTT-3.1.2-6].
            s.offline = SessionState::default();
            s.streams.clear();
            s.subs.drain().collect()
        };
        s.offline_bytes = 0;
        s.offline_since = None;
        s.clean = session_expiry == 0;
        s.expiry = session_expiry;
        s.level = level;
        s.identity = identity;
        s.acl = acl;
        s.bridge = bridge;
        let mut state = std::mem::take(&mut s.offline);
        // Whoever resumes a session gets only what they may read: the
        // client id is not a credential, and the rules may have changed
        // since (Mosquitto checks each queued message the same way).
        if let Some(acl) = &s.acl {
            let readable = |p: &Publish| acl.allows(&p.topic, acl::READ);
            let now = Instant::now();
            let mut dropped = 0;
            state.pending.retain_mut(|p| {
                if readable(p) {
                    return true;
                }
                dropped += 1;
                if p.qos == QoS::AtMostOnce {
                    return false;
                }
                // Left in its place, expired: the client thread drops it
                // there, and it uses up its packet id in queue order, as
                // Mosquitto numbered it when it queued it.
                let props = p.props.get_or_insert_with(Default::default);
                Arc::make_mut(props).expires_at = Some(now);
                true
            });
            dropped += state.inflight.retain_unacknowledged(readable);
            if dropped > 0 {
                self.stats.messages_dropped += dropped as u64;
                info!(
                    "Client {client_id} resumed a session holding {dropped} message(s) it may \
                     not read: dropped."
                );
            }
        }
        s.live = Some(Live {
            outbox,
            will,
            level,
        });
        // A resumed session's streams go on where they were.
        if !s.streams.is_empty() {
            s.stream_ticket = 0;
            if !self.streaming.contains(&sid) {
                self.streaming.push(sid);
            }
            self.stream_poll = Some(Instant::now());
        }
        for (filter, opts) in old_subs {
            self.unindex(&filter, sid, opts);
        }
        self.by_conn.insert(conn, sid);
        if persistent_change {
            self.changed();
        }
        let answer = ConnectReply {
            // MQTT 3.1 has no session-present flag.
            session_present: resumed && level >= Level::V311,
            state,
            busy: false,
        };
        if let Err(e) = reply.send(answer) {
            // The client thread gave up waiting: treat it as gone at once.
            let state = e.into_inner().state;
            self.disconnect(conn, DisconnectKind::Abnormal, state, session_expiry);
        }
    }

    pub(super) fn disconnect(
        &mut self,
        conn: ConnId,
        kind: DisconnectKind,
        mut state: SessionState,
        session_expiry: u32,
    ) {
        let Some(sid) = self.by_conn.remove(&conn) else {
            return;
        };
        let Some(s) = session_mut(&mut self.sessions, sid) else {
            return;
        };
        let Some(live) = s.live.take() else { return };
        s.expiry = session_expiry;
        s.clean = session_expiry == 0;
        // Whatever the router queued after the client thread's last look.
        let mut rest = VecDeque::new();
        live.outbox.take(&mut rest);
        state
            .pending
            .extend(rest.into_iter().filter_map(|o| match o {
                Outgoing::Publish(p) => Some(p),
                Outgoing::Packet(_) => None,
            }));
        let next = s.takeover.take();
        let send_will = match kind {
            DisconnectKind::Abnormal => true,
            DisconnectKind::Graceful | DisconnectKind::Shutdown => false,
            // Mosquitto sends the old will on takeover unless both the old and
            // the new connection keep a persistent session.
            DisconnectKind::TakenOver => s.clean || next.as_ref().is_none_or(|n| n.clean),
        };
        // A will needs the same write access as a PUBLISH (Mosquitto 2.0
        // drops it silently when sending it).
        let will_source = (self.config.check_retain_source
            && live.will.as_ref().is_some_and(|w| w.retain))
        .then(|| source_of(s));
        let will = live.will.filter(|w| {
            send_will
                && acl::dollar_write_allowed(&w.topic)
                && s.acl
                    .as_ref()
                    .is_none_or(|a| a.allows(&w.topic, acl::WRITE))
        });
        // An MQTT 5 will may wait [MQTT-3.1.3-9]: until its delay ends or
        // the session does, whichever comes first.
        let delay = will
            .as_ref()
            .and_then(|w| w.props.as_ref())
            .map_or(0, |p| p.will_delay)
            .min(s.expiry);
        let now = Instant::now();
        let mut will = will;
        if s.clean {
            self.remove_session(sid);
        } else {
            // Persistent session: keep in-flight state and queued messages,
            // QoS 0 included only while they were already queued.
            s.offline_bytes = state.pending.iter().map(|p| p.payload.len()).sum();
            s.offline = state;
            s.offline_since = Some(now);
            let generation = s.generation;
            if delay > 0 {
                s.delayed_will = will.take();
                let at = now + Duration::from_secs(u64::from(delay));
                self.timers
                    .push(Reverse((at, sid, generation, TimerKind::Will)));
            }
            self.start_expiry(sid, now);
            self.changed();
        }
        if let Some(will) = will {
            debug!("Sending will of {conn}.");
            self.publish_will(will, will_source);
        }
        if let Some(req) = next {
            self.connect(req);
        }
    }

    pub(super) fn remove_session(&mut self, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(sid as usize).and_then(|s| s.take()) else {
            return;
        };
        for (filter, opts) in &s.subs {
            self.unindex(filter, sid, *opts);
        }
        self.by_client_id.remove(&s.client_id);
        self.free.push(sid);
        if !s.clean {
            persist::journal_end(&self.journal, &s.client_id);
            self.changed();
        }
        // A waiting takeover starts a fresh session.
        if let Some(req) = s.takeover {
            self.connect(req);
        }
    }
}
