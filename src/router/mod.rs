//! The router thread: the one owner of sessions, subscriptions and retained
//! messages.
//!
//! Client threads send [`Event`]s over one channel; the router handles them
//! in order and answers by pushing onto each client's [`Outbox`]. It never
//! blocks on a client: a full outbox drops the message (Mosquitto's policy).
//! It stops when it receives [`Event::Shutdown`] or when every sender is gone.

pub mod event;
mod persist;
pub mod retain;
mod shared;
pub mod sys;
pub mod trie;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{debug, info};

use crate::auth::Auth;
use crate::auth::acl::{self, Subject};
use crate::codec::{
    Ack, Level, Packet, PubProps, Publish, QoS, SubAck, Subscribe, UnsubAck, Unsubscribe, Will,
    reason,
};
use crate::config::Config;
use crate::logging;
use crate::outbox::{CloseReason, Outbox, Outgoing, Pressure, QueueLimits, pacing};
use crate::persist::journal::Journal;
use crate::session::SubOpts;
use crate::session::inflight::SessionState;
use crate::topic;
pub use event::{ConnId, ConnectReply, ConnectRequest, DisconnectKind, Event, Reply, publish_log};
use retain::{Retained, Source};
pub use sys::Metrics;
use sys::{Snapshot, SysTree};
use trie::{SessionId, Trie};

/// Events handled before the router looks at its channel length again.
const BATCH: usize = 256;

/// Depth of the channel from client threads to the router. When the router
/// falls behind, publishers wait here, which pushes back on their sockets.
/// It also bounds how far publishers run ahead of the router, and so how
/// far beyond its limit a queue that paces them may grow. Every slot is
/// allocated at start-up: 8,192 cost 450 KiB of an idle broker's memory for
/// no measurable throughput; 128 or 256 cost fan-out throughput (a third at
/// 128) for less peak memory (docs/PERFORMANCE.md).
pub const QUEUE: usize = 1024;

/// A live connection attached to a session.
#[derive(Debug)]
struct Live {
    outbox: Arc<Outbox>,
    will: Option<Will>,
    level: Level,
}

/// What a [`Timer`] does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// Publish the session's delayed will.
    Will,
    /// End the session (its will first, if still delayed).
    Expiry,
}

/// A deadline for one offline session, void once the session has been
/// connected again (its `generation` moved on).
type Timer = Reverse<(Instant, SessionId, u64, TimerKind)>;

/// One client id's session. Owned by the router.
#[derive(Debug)]
struct Session {
    client_id: String,
    /// Clean session: everything is discarded when the connection ends.
    clean: bool,
    live: Option<Live>,
    /// This session's filters and options, mirrored in the trie (or in
    /// the shared groups, for `$share/...` filters).
    subs: HashMap<String, SubOpts>,
    /// While offline: in-flight state and queued messages, in order.
    offline: SessionState,
    /// A CONNECT for this client id waiting for the old connection to end.
    takeover: Option<Box<ConnectRequest>>,
    /// The last message routed to this session ([`Router::seq`]), so that
    /// overlapping subscriptions of a 3.x session deliver one copy.
    last_seq: u64,
    /// Payload bytes of `offline.pending`, for `max_queued_bytes`.
    offline_bytes: usize,
    /// When a persistent session lost its connection.
    offline_since: Option<Instant>,
    /// Who connected last, for ACL checks.
    identity: Identity,
    /// The ACL rules compiled for that identity; None when its scope has no
    /// ACL file (everything allowed).
    acl: Option<Subject>,
    /// The session expiry interval: seconds it outlives its connection
    /// (u32::MAX never; `clean` is true for 0).
    expiry: u32,
    /// The protocol level of the last connection.
    level: Level,
    /// An MQTT 5 will waiting out its delay interval.
    delayed_will: Option<Will>,
    /// Counts connections, so timers set for an earlier absence are void.
    generation: u64,
    /// A bridge's session (one of this broker's, or another broker's that
    /// set the bridge bit): its subscriptions are no-local and
    /// retain-as-published (Mosquitto's bridge subscriptions), so a message
    /// is not sent back where it came from and keeps its retain flag.
    bridge: bool,
}

/// What ACL rules depend on.
#[derive(Debug, Default)]
struct Identity {
    username: Option<String>,
    scope: usize,
}

/// Counters kept by the router, for `$SYS`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub messages_received: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Persistent sessions removed by `persistent_client_expiration`.
    pub expired: u64,
}

pub struct Router {
    config: Arc<Config>,
    /// Session table; a `SessionId` indexes it. Freed slots are reused.
    sessions: Vec<Option<Session>>,
    free: Vec<SessionId>,
    by_client_id: HashMap<String, SessionId>,
    by_conn: HashMap<ConnId, SessionId>,
    subs: Trie<SubOpts>,
    /// `$share/GROUP/FILTER` subscriptions.
    shared: shared::Shared,
    /// Subscriptions with no-local set; while there are none, a PUBLISH
    /// costs no lookup of its publisher's session.
    no_local_subs: usize,
    retained: Retained,
    /// Reused for every fan-out so matching allocates nothing; the flag
    /// marks a shared subscription's pick.
    scratch: Vec<(SessionId, SubOpts, bool)>,
    /// The sessions whose queues the message being routed found above
    /// their low-water mark, and whether it pressed each (see
    /// [`Outbox::pressure`]). If it pressed one, its publisher is held back
    /// on all of them, so that it goes on only once all have drained.
    fed: Vec<(SessionId, bool)>,
    /// Delayed wills and session expiries, soonest first.
    timers: BinaryHeap<Timer>,
    /// Counts routed messages; see `Session::last_seq`.
    seq: u64,
    stats: Stats,
    metrics: Arc<Metrics>,
    sys: SysTree,
    auth: Arc<Auth>,
    /// Set with persistence on: where snapshots go and when.
    autosave: Option<persist::Autosave>,
    /// Set with `persistence_journal`: where every durable change goes.
    journal: Option<Arc<Journal>>,
    /// Shutting down: no new connection is attached.
    stopping: bool,
}

impl Router {
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>, auth: Arc<Auth>) -> Router {
        Router {
            auth,
            config,
            sessions: Vec::new(),
            free: Vec::new(),
            by_client_id: HashMap::new(),
            by_conn: HashMap::new(),
            subs: Trie::default(),
            shared: shared::Shared::default(),
            no_local_subs: 0,
            retained: Retained::default(),
            scratch: Vec::new(),
            fed: Vec::new(),
            timers: BinaryHeap::new(),
            seq: 0,
            stats: Stats::default(),
            metrics,
            sys: SysTree::new(),
            autosave: None,
            journal: None,
            stopping: false,
        }
    }

    /// Runs until [`Event::Shutdown`] or until every sender is dropped.
    pub fn run(mut self, rx: Receiver<Event>) {
        let interval = self.tick_interval();
        let mut next_tick = interval.map(|d| Instant::now() + d);
        if interval.is_some() {
            self.tick();
        }
        'run: loop {
            let timer = self.timers.peek().map(|Reverse(t)| t.0);
            let wake = [next_tick, self.autosave_deadline(), timer]
                .into_iter()
                .flatten()
                .min();
            let first = match wake {
                Some(t) => match rx.recv_deadline(t) {
                    Ok(ev) => Some(ev),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(ev) => Some(ev),
                    Err(_) => break,
                },
            };
            if let Some(ev) = first {
                if !self.handle(ev) {
                    break;
                }
                // Drain what else is waiting before blocking again.
                for _ in 0..BATCH {
                    match rx.try_recv() {
                        Ok(ev) => {
                            if !self.handle(ev) {
                                break 'run;
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
            if let (Some(t), Some(d)) = (next_tick, interval) {
                let now = Instant::now();
                if now >= t {
                    self.tick();
                    next_tick = Some(now + d);
                }
            }
            self.autosave_if_due();
            self.fire_timers();
        }
        self.shutdown();
        self.save_at_shutdown(&rx);
    }

    /// How often [`Router::tick`] runs: every `sys_interval`, or every
    /// minute when only `persistent_client_expiration` needs it.
    fn tick_interval(&self) -> Option<Duration> {
        match self.config.sys_interval {
            0 if self.config.persistent_client_expiration.is_some() => {
                Some(Duration::from_secs(60))
            }
            0 => None,
            n => Some(Duration::from_secs(u64::from(n))),
        }
    }

    /// Expires old persistent sessions and publishes `$SYS`.
    fn tick(&mut self) {
        if let Some(max) = self.config.persistent_client_expiration {
            self.expire(max);
        }
        if self.config.sys_interval == 0 {
            return;
        }
        let snapshot = self.snapshot();
        for (topic, value) in self.sys.update(&self.metrics, &snapshot) {
            self.publish(Publish::retained(&topic, value.as_bytes()), None);
        }
    }

    fn snapshot(&self) -> Snapshot {
        let (stored, stored_bytes) = self.sessions.iter().flatten().fold((0, 0), |(n, b), s| {
            (n + s.offline.pending.len(), b + s.offline_bytes)
        });
        Snapshot {
            clients_connected: self.by_conn.len(),
            clients_total: self.by_client_id.len(),
            clients_expired: self.stats.expired,
            publish_received: self.stats.messages_received,
            publish_sent: self.stats.messages_sent,
            publish_dropped: self.stats.messages_dropped,
            publish_bytes_received: self.stats.bytes_received,
            publish_bytes_sent: self.stats.bytes_sent,
            retained: self.retained.len(),
            stored: stored + self.retained.len(),
            stored_bytes,
            subscriptions: self.subs.len() + self.shared.len(),
        }
    }

    /// Removes persistent sessions offline for longer than `max`.
    fn expire(&mut self, max: Duration) {
        let now = Instant::now();
        let old: Vec<SessionId> = self
            .sessions
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let s = s.as_ref()?;
                let since = s.offline_since?;
                // Sessions with an expiry interval of their own end by it.
                let never = s.expiry == u32::MAX;
                (never && s.live.is_none() && now.duration_since(since) > max)
                    .then_some(i as SessionId)
            })
            .collect();
        for sid in old {
            if let Some(s) = self.session(sid) {
                info!("Expiring client {} due to timeout.", s.client_id);
            }
            self.stats.expired += 1;
            self.remove_session(sid);
        }
    }

    /// Handles one event; false means stop.
    pub fn handle(&mut self, ev: Event) -> bool {
        match ev {
            Event::Connect(req) => self.connect(req),
            Event::Publish { conn, publish } => self.incoming(conn, publish),
            Event::Auth(auth) => self.replace_auth(auth),
            Event::Subscribe { conn, subscribe } => self.subscribe(conn, *subscribe),
            Event::Unsubscribe { conn, unsubscribe } => self.unsubscribe(conn, unsubscribe),
            Event::Disconnect {
                conn,
                kind,
                state,
                session_expiry,
            } => self.disconnect(conn, kind, *state, session_expiry),
            Event::Ack { conn, ack } => self.ack(conn, ack),
            Event::Save => self.save(),
            Event::Shutdown => return false,
        }
        true
    }

    fn session(&mut self, sid: SessionId) -> Option<&mut Session> {
        self.sessions.get_mut(sid as usize).and_then(|s| s.as_mut())
    }

    fn connect(&mut self, req: Box<ConnectRequest>) {
        // A session or will delay that ran out while events queued ends
        // before this connection can revive or cancel it.
        self.fire_timers();
        if self.stopping {
            // Dropping the reply sender closes that connection.
            return;
        }
        let Some(&sid) = self.by_client_id.get(&req.client_id) else {
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

    fn new_session(&mut self, client_id: &str) -> SessionId {
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
    fn attach(&mut self, sid: SessionId, req: ConnectRequest, existed: bool) {
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
        } = req;
        let identity = Identity { username, scope };
        let acl = self.subject(&identity, &client_id);
        let Some(s) = self.sessions.get_mut(sid as usize).and_then(|s| s.as_mut()) else {
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
        let state = std::mem::take(&mut s.offline);
        s.live = Some(Live {
            outbox,
            will,
            level,
        });
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
        };
        if let Err(e) = reply.send(answer) {
            // The client thread gave up waiting: treat it as gone at once.
            let state = e.into_inner().state;
            self.disconnect(conn, DisconnectKind::Abnormal, state, session_expiry);
        }
    }

    fn disconnect(
        &mut self,
        conn: ConnId,
        kind: DisconnectKind,
        mut state: SessionState,
        session_expiry: u32,
    ) {
        let Some(sid) = self.by_conn.remove(&conn) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(sid as usize).and_then(|s| s.as_mut()) else {
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

    fn remove_session(&mut self, sid: SessionId) {
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

    /// A PUBLISH from a client: checked, routed, and for MQTT 5 at QoS 1
    /// and 2 acknowledged here, where the reason is known (no matching
    /// subscribers, not authorised), as Mosquitto answers.
    fn incoming(&mut self, conn: ConnId, publish: Publish) {
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
            .and_then(|&sid| self.sessions.get(sid as usize)?.as_ref()?.live.as_ref())
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
    fn pace(&mut self, conn: ConnId) {
        if self.fed.iter().any(|&(_, pressing)| pressing) {
            let limits = self.queue_limits();
            let live = |sid: SessionId| self.sessions.get(sid as usize)?.as_ref()?.live.as_ref();
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
    fn publish(&mut self, p: Publish, source: Option<Arc<Source>>) {
        self.route(p, source, None);
    }

    /// Publishes a will, its expiry interval counted from now.
    fn publish_will(&mut self, will: Will, source: Option<Arc<Source>>) {
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
    fn route(
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

    /// Queues `p` for one session at most `opts.qos`. A 3.x session
    /// matched by several of its filters gets one copy, at the QoS of the
    /// filter the trie walk meets first (literal level, then `+`, then
    /// `#`), which is what Mosquitto 2.0 delivers. An MQTT 5 session gets
    /// one copy per matching subscription, each with that subscription's
    /// QoS and identifier [MQTT-3.3.4-5], as Mosquitto 2.0 sends; a shared
    /// subscription's pick gets its own copy.
    fn deliver(&mut self, sid: SessionId, p: &Publish, opts: SubOpts, retain: bool, shared: bool) {
        let limits = self.queue_limits();
        let Some(s) = self.sessions.get_mut(sid as usize).and_then(|s| s.as_mut()) else {
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
        let mut p = p.clone();
        p.retain = retain;
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
                live.outbox.push_publish(p, limits)
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

    /// Adds a subscription to the trie or to its shared group; `old` is
    /// the options it replaces, if any.
    fn index(&mut self, filter: &str, sid: SessionId, opts: SubOpts, old: Option<SubOpts>) {
        match topic::shared(filter) {
            Some((group, f)) => {
                self.shared.insert(group, f, sid, opts);
            }
            None => {
                if old.is_some_and(|o| o.no_local) {
                    self.no_local_subs -= 1;
                }
                if opts.no_local {
                    self.no_local_subs += 1;
                }
                self.subs.insert(filter, sid, opts);
            }
        }
    }

    /// Takes a subscription out of the trie or its shared group.
    fn unindex(&mut self, filter: &str, sid: SessionId, opts: SubOpts) -> bool {
        match topic::shared(filter) {
            Some((group, f)) => self.shared.remove(group, f, sid),
            None => {
                if opts.no_local {
                    self.no_local_subs = self.no_local_subs.saturating_sub(1);
                }
                self.subs.remove(filter, sid)
            }
        }
    }

    /// Starts the expiry interval of an offline session that has one.
    fn start_expiry(&mut self, sid: SessionId, now: Instant) {
        let Some(s) = self.session(sid) else { return };
        if s.expiry != u32::MAX {
            let at = now + Duration::from_secs(u64::from(s.expiry));
            let generation = s.generation;
            self.timers
                .push(Reverse((at, sid, generation, TimerKind::Expiry)));
        }
    }

    /// Fires the timers that are due: delayed wills, then session ends.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, sid, generation, kind))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(s) = self.session(sid) else { continue };
            if s.generation != generation || s.live.is_some() {
                continue;
            }
            let will = s.delayed_will.take();
            let client_id = s.client_id.clone();
            let source = self
                .config
                .check_retain_source
                .then(|| source_of_sid(self, sid))
                .flatten();
            if let Some(will) = will {
                debug!("Sending delayed will of {client_id}.");
                self.publish_will(will, source);
            }
            if kind == TimerKind::Expiry {
                debug!("Session of {client_id} expired.");
                self.stats.expired += 1;
                self.remove_session(sid);
            }
        }
    }

    fn queue_limits(&self) -> QueueLimits {
        QueueLimits::of(&self.config)
    }

    fn subscribe(&mut self, conn: ConnId, sub: Subscribe) {
        let Some(&sid) = self.by_conn.get(&conn) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(sid as usize).and_then(|s| s.as_mut()) else {
            return;
        };
        let Some(live) = &s.live else { return };
        let outbox = live.outbox.clone();
        let v5 = live.level == Level::V5;
        let subject = s.acl.clone();
        let persistent = !s.clean;
        let mut codes = Vec::with_capacity(sub.filters.len());
        // Per filter: whether retained messages follow (retain handling).
        let mut send_retained = Vec::with_capacity(sub.filters.len());
        let mut added = Vec::with_capacity(sub.filters.len());
        for f in &sub.filters {
            info!(target: logging::SUBSCRIBE, "{} {} {}", s.client_id, f.qos as u8, f.filter);
            let opts = SubOpts {
                qos: f.qos,
                no_local: f.no_local || s.bridge,
                retain_as_published: f.retain_as_published || s.bridge,
                sub_id: sub.sub_id.unwrap_or(0),
            };
            let old = s.subs.insert(f.filter.clone(), opts);
            added.push((f.filter.clone(), opts, old));
            if persistent {
                persist::journal_subscription(&self.journal, &s.client_id, &f.filter, Some(opts));
            }
            codes.push(f.qos as u8);
            // Retained messages are never sent for a shared subscription.
            let shared = topic::shared(&f.filter).is_some();
            send_retained.push(
                !shared
                    && match f.retain_handling {
                        0 => true,
                        1 => old.is_none(),
                        _ => false,
                    },
            );
        }
        for (filter, opts, old) in added {
            self.index(&filter, sid, opts, old);
        }
        let mut out = vec![Outgoing::Packet(Packet::SubAck(SubAck {
            pkid: sub.pkid,
            codes,
        }))];
        if persistent {
            self.changed();
        }
        // Retained messages follow the SUBACK, with retain set [MQTT-3.3.1-8].
        let limits = self.queue_limits();
        let auth = self.auth.clone();
        let now = Instant::now();
        for (f, send) in sub.filters.iter().zip(send_retained) {
            if !send {
                continue;
            }
            self.retained.for_each_match(&f.filter, |stored| {
                let m = &stored.publish;
                if m.expired(now)
                    || subject
                        .as_ref()
                        .is_some_and(|a| !a.allows(&m.topic, acl::READ))
                {
                    return;
                }
                // check_retain_source: its publisher must still be allowed.
                if let Some(src) = stored.source.as_deref() {
                    if !source_may_write(&auth, src, &m.topic) {
                        return;
                    }
                }
                let mut copy = m.clone();
                copy.qos = copy.qos.min(f.qos);
                copy.retain = true;
                if let (true, Some(id)) = (v5, sub.sub_id) {
                    with_sub_id(&mut copy, id);
                }
                out.push(Outgoing::Publish(copy));
            });
        }
        self.hand_over(&outbox, out, persistent, limits);
    }

    fn unsubscribe(&mut self, conn: ConnId, unsub: Unsubscribe) {
        let Some(&sid) = self.by_conn.get(&conn) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(sid as usize).and_then(|s| s.as_mut()) else {
            return;
        };
        let Some(live) = &s.live else { return };
        let outbox = live.outbox.clone();
        let v5 = live.level == Level::V5;
        let persistent = !s.clean;
        let mut removed = Vec::new();
        let mut codes = Vec::new();
        for f in &unsub.filters {
            info!(target: logging::UNSUBSCRIBE, "{} {}", s.client_id, f);
            let old = s.subs.remove(f);
            if let Some(opts) = old {
                removed.push((f.clone(), opts));
                if persistent {
                    persist::journal_subscription(&self.journal, &s.client_id, f, None);
                }
            }
            if v5 {
                codes.push(match old {
                    Some(_) => reason::SUCCESS,
                    None => reason::NO_SUBSCRIPTION_EXISTED,
                });
            }
        }
        for (f, opts) in removed {
            self.unindex(&f, sid, opts);
        }
        let unsuback = vec![Outgoing::Packet(Packet::UnsubAck(UnsubAck {
            pkid: unsub.pkid,
            codes,
        }))];
        self.hand_over(&outbox, unsuback, persistent, self.queue_limits());
        if persistent {
            self.changed();
        }
    }

    /// The compiled ACL of a client, or None when its scope has none.
    fn subject(&self, who: &Identity, client_id: &str) -> Option<Subject> {
        let scope = self.auth.scope(who.scope);
        let acl = scope.acl.as_ref()?;
        let subject = acl.subject(who.username.as_deref(), client_id);
        if subject.refused_patterns {
            info!(
                "ACL patterns do not apply to client {client_id}: its user name or client id \
                 holds '/', '+' or '#'."
            );
        }
        Some(subject)
    }

    /// Write access for a PUBLISH from `conn` (Mosquitto drops a denied
    /// message silently; its QoS flow has already been completed).
    fn may_publish(&mut self, conn: ConnId, p: &Publish) -> bool {
        let dollar_ok = acl::dollar_write_allowed(&p.topic);
        // The common case costs no session lookup: no ACL file anywhere.
        if conn == event::BROKER || (dollar_ok && !self.auth.has_acl()) {
            return true;
        }
        let sid = self.by_conn.get(&conn).copied();
        let s = sid.and_then(|sid| self.sessions.get(sid as usize)?.as_ref());
        let allowed = dollar_ok
            && s.is_none_or(|s| {
                s.acl
                    .as_ref()
                    .is_none_or(|a| a.allows(&p.topic, acl::WRITE))
            });
        if !allowed {
            let id = s.map_or("?", |s| s.client_id.as_str());
            debug!(
                "Denied PUBLISH from {id} (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
                p.dup as u8,
                p.qos as u8,
                p.retain as u8,
                p.pkid,
                p.topic,
                p.payload.len()
            );
        }
        allowed
    }

    /// The publisher of a retained message, kept with it when
    /// `check_retain_source` is on.
    fn source(&self, conn: ConnId, p: &Publish) -> Option<Arc<Source>> {
        if !p.retain || !self.config.check_retain_source {
            return None;
        }
        let sid = *self.by_conn.get(&conn)?;
        self.sessions.get(sid as usize)?.as_ref().map(source_of)
    }

    /// New password and ACL files: recompile every session's rules.
    fn replace_auth(&mut self, auth: Arc<Auth>) {
        self.auth = auth;
        for i in 0..self.sessions.len() {
            let Some(s) = &self.sessions[i] else { continue };
            let acl = self.subject(&s.identity, &s.client_id);
            if let Some(s) = self.sessions[i].as_mut() {
                s.acl = acl;
            }
        }
    }

    /// Asks every connected client thread to close.
    fn shutdown(&mut self) {
        for s in self.sessions.iter().flatten() {
            if let Some(live) = &s.live {
                live.outbox.request_close(CloseReason::Shutdown);
            }
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Number of sessions, connected or not.
    pub fn session_count(&self) -> usize {
        self.by_client_id.len()
    }
}

/// Sets the subscription identifier of one delivery [MQTT-3.3.4-3]; the
/// message's other properties are shared, not copied.
fn with_sub_id(p: &mut Publish, id: u32) {
    let props = p.props.get_or_insert_with(|| Arc::new(PubProps::default()));
    Arc::make_mut(props).sub_ids = vec![id];
}

fn source_of_sid(r: &Router, sid: SessionId) -> Option<Arc<Source>> {
    r.sessions.get(sid as usize)?.as_ref().map(source_of)
}

fn source_of(s: &Session) -> Arc<Source> {
    Arc::new(Source {
        client_id: s.client_id.clone(),
        username: s.identity.username.clone(),
        scope: s.identity.scope,
    })
}

/// `check_retain_source`: whether the client that published a retained
/// message may still write its topic under the rules in force now.
fn source_may_write(auth: &Auth, src: &Source, topic: &str) -> bool {
    let scope = auth.scope(src.scope);
    scope.acl.as_ref().is_none_or(|acl| {
        acl.subject(src.username.as_deref(), &src.client_id)
            .allows(topic, acl::WRITE)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Level;

    fn connect(r: &mut Router, conn: ConnId, id: &str, clean: bool) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        r.handle(Event::Connect(Box::new(ConnectRequest {
            conn,
            client_id: id.into(),
            level: Level::V311,
            clean,
            session_expiry: if clean { 0 } else { u32::MAX },
            will: None,
            username: None,
            scope: 0,
            outbox: Arc::new(Outbox::new().expect("outbox")),
            bridge: false,
            reply: tx,
        })));
        rx.try_recv().expect("attached at once");
    }

    fn gone(r: &mut Router, conn: ConnId) {
        r.handle(Event::Disconnect {
            conn,
            kind: DisconnectKind::Graceful,
            state: Box::default(),
            session_expiry: u32::MAX,
        });
    }

    #[test]
    fn persistent_sessions_expire_after_the_configured_time() {
        let config = Config {
            persistent_client_expiration: Some(Duration::from_millis(50)),
            sys_interval: 0,
            ..Config::default()
        };
        let mut r = Router::new(Arc::new(config), Arc::default(), Arc::default());
        connect(&mut r, 1, "old", false);
        connect(&mut r, 2, "online", false);
        gone(&mut r, 1);
        r.tick();
        assert_eq!(r.session_count(), 2, "not expired yet");
        std::thread::sleep(Duration::from_millis(80));
        r.tick();
        assert_eq!(
            r.session_count(),
            1,
            "the offline session expired, the online one stays"
        );
        assert_eq!(r.stats().expired, 1);
        // A session that came back in time is not expired.
        connect(&mut r, 3, "back", false);
        gone(&mut r, 3);
        connect(&mut r, 4, "back", false);
        std::thread::sleep(Duration::from_millis(80));
        r.tick();
        assert_eq!(r.session_count(), 2);
    }
}
