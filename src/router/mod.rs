//! The router thread: the one owner of sessions, subscriptions and retained
//! messages.
//!
//! Client threads send [`Event`]s over one channel; the router handles them
//! in order and answers by pushing onto each client's [`Outbox`]. It never
//! blocks on a client: a full outbox drops the message (Mosquitto's policy).
//! It stops when it receives [`Event::Shutdown`] or when every sender is gone.
//!
//! Here: the router's state and its event loop. Its work is in the files
//! beside: `sessions.rs` (attach, takeover, disconnect), `delivery.rs`
//! (routing a message and queueing its copies, with pacing),
//! `subscriptions.rs`, `timers.rs` (the tick, delayed wills, session
//! expiry) and `checks.rs` (ACLs).

mod checks;
mod delivery;
pub mod dollar_sys;
pub mod event;
mod persist;
pub mod retain;
mod sessions;
mod shared;
mod stream;
mod subscriptions;
mod timers;
pub mod trie;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

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
use checks::{source_may_write, source_of, source_of_sid};
use delivery::with_sub_id;
pub use dollar_sys::Metrics;
use dollar_sys::{Snapshot, SysTree};
pub use event::{
    ConnId, ConnectReply, ConnectRequest, DisconnectKind, Event, Reply, RouterRx, RouterTx,
    publish_log,
};
use retain::{Retained, Source};
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
    /// Retained messages still to send for its new subscriptions, filter
    /// by filter ([`stream`]).
    streams: VecDeque<stream::Stream>,
    /// With the journal: the ticket of the last streamed batch, which what
    /// follows it waits for.
    stream_ticket: u64,
}

/// What ACL rules depend on.
#[derive(Debug, Default)]
struct Identity {
    username: Option<String>,
    scope: usize,
    /// The local session of one of this broker's own bridges: no ACL
    /// applies to it, as Mosquitto exempts its bridges.
    own_bridge: bool,
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
    shared: shared::SharedGroups,
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
    /// The sessions that may have streams ([`stream`]).
    streaming: Vec<SessionId>,
    /// When to look at them next; since when none moved.
    stream_poll: Option<Instant>,
    stream_since: Instant,
    /// With `retain_expiry_interval`: when the next sweep of expired
    /// retained messages is due (None: at the next tick).
    next_retain_sweep: Option<Instant>,
    /// With `WatchdogSec=`: where the loop pings, and how often.
    watchdog: Option<(crate::notify::Notifier, Duration)>,
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
            shared: shared::SharedGroups::default(),
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
            streaming: Vec::new(),
            stream_poll: None,
            stream_since: Instant::now(),
            watchdog: None,
            next_retain_sweep: None,
        }
    }

    /// Pings the service manager through `notifier` every `every` from
    /// the loop (`WatchdogSec=`).
    pub fn watchdog_with(&mut self, notifier: crate::notify::Notifier, every: Duration) {
        self.watchdog = Some((notifier, every));
    }

    /// Runs until [`Event::Shutdown`] or until every sender is dropped.
    pub fn run(mut self, rx: RouterRx) {
        rx.attach();
        let mut watchdog = self.watchdog.take();
        let mut next_ping = watchdog.as_ref().map(|_| Instant::now());
        let interval = self.tick_interval();
        let mut next_tick = interval.map(|d| Instant::now() + d);
        if interval.is_some() {
            self.tick();
        }
        'run: loop {
            let timer = self.timers.peek().map(|Reverse(t)| t.0);
            if let (Some(t), Some((n, every))) = (next_ping, watchdog.as_mut()) {
                let now = Instant::now();
                if now >= t {
                    if let Err(e) = n.watchdog() {
                        warn!("Warning: unable to notify the service manager: {e}.");
                    }
                    next_ping = Some(now + *every);
                }
            }
            let wake = [
                next_ping,
                next_tick,
                self.autosave_deadline(),
                timer,
                self.stream_deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Ok(first) = rx.recv_until(wake) else {
                break;
            };
            if let Some(ev) = first {
                if !self.handle(ev) {
                    break;
                }
                // Drain what else is waiting before blocking again.
                for _ in 0..BATCH {
                    match rx.try_recv() {
                        Ok(Some(ev)) => {
                            if !self.handle(ev) {
                                break 'run;
                            }
                        }
                        _ => break,
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
            self.stream_if_due();
        }
        self.shutdown();
        self.save_at_shutdown(&rx);
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
            Event::SessionCopy { conn, state } => self.session_copy(conn, *state),
            Event::Shutdown => return false,
        }
        true
    }

    fn session(&mut self, sid: SessionId) -> Option<&mut Session> {
        session_mut(&mut self.sessions, sid)
    }

    fn queue_limits(&self) -> QueueLimits {
        QueueLimits::of(&self.config)
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

/// Session `sid` of the session table, if it is still there. A function of
/// the table, not a method of the router, so that the router's other
/// fields can be borrowed beside it.
fn session_ref(sessions: &[Option<Session>], sid: SessionId) -> Option<&Session> {
    sessions.get(sid as usize)?.as_ref()
}

/// [`session_ref`], to change the session.
fn session_mut(sessions: &mut [Option<Session>], sid: SessionId) -> Option<&mut Session> {
    sessions.get_mut(sid as usize)?.as_mut()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Level;

    fn connect(r: &mut Router, conn: ConnId, id: &str, clean: bool) {
        let (tx, rx) = crate::sys::parked::channel(1);
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
            own_bridge: false,
            reply: tx,
        })));
        assert!(matches!(rx.try_recv(), Ok(Some(_))), "attached at once");
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

    #[test]
    fn retain_expiry_interval_sweeps_expired_retained_messages() {
        let config = Config {
            retain_expiry_minutes: 1,
            sys_interval: 0,
            ..Config::default()
        };
        let mut r = Router::new(Arc::new(config), Arc::default(), Arc::default());
        let expiring = |topic: &str| {
            let mut p = Publish::retained(topic, b"v");
            p.props = Some(Arc::new(crate::codec::PubProps {
                expiry: Some(1),
                expires_at: Some(Instant::now()),
                ..Default::default()
            }));
            p
        };
        r.route(expiring("gone/1"), None, None);
        r.route(Publish::retained("kept/1", b"v"), None, None);
        assert_eq!(r.retained.len(), 2);
        r.tick();
        assert_eq!(r.retained.len(), 1, "the expired one is swept");
        // The next sweep waits for the interval (a minute).
        r.route(expiring("gone/2"), None, None);
        r.tick();
        assert_eq!(r.retained.len(), 2, "not before its time");
        r.next_retain_sweep = Some(Instant::now());
        r.tick();
        assert_eq!(r.retained.len(), 1);
        let mut left = Vec::new();
        r.retained
            .for_each(|s| left.push(s.publish.topic.to_string()));
        assert_eq!(left, ["kept/1"]);
    }
}
