//! The router's side of persistence: restoring a saved state at start-up,
//! taking snapshots, and deciding when to save (`autosave_interval`,
//! `autosave_on_changes`, SIGUSR1, shutdown). The bytes go to the
//! [`Writer`] thread; the router never touches the disk.
//!
//! A snapshot holds every retained message (but `$SYS`) and every
//! persistent session with its subscriptions. An offline session also has
//! its queued messages and its in-flight state in both directions. A
//! connected session's in-flight and queued messages live in its client
//! thread: for an autosave or SIGUSR1 each such thread sends a copy
//! ([`Event::SessionCopy`]) and the snapshot is written once all came (at
//! most [`DRAIN`] later); on a clean shutdown every client thread hands its
//! state back first. Either way the snapshot has everything.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::RouterRx;
use crate::sys::parked::Disconnected;
use log::{debug, info, warn};

use super::retain::Source;
use super::trie::SessionId;
use super::{ConnId, Identity, Reply, Router};
use crate::codec::{Publish, QoS};
use crate::config::Persistence;
use crate::outbox::{Outbox, Outgoing, QueueLimits};
use crate::persist::format::{Encoder, Record, SavedSource};
use crate::persist::journal::Journal;
use crate::persist::writer::Writer;
use crate::persist::{Restored, encode_session};
use crate::session::SubOpts;
use crate::session::inflight::SessionState;

/// How long a shutdown waits for client threads to hand back their
/// in-flight state before the final snapshot.
const DRAIN: Duration = Duration::from_secs(1);

/// Persistence state of the router.
pub(super) struct Autosave {
    /// None with the journal on: the journal thread writes the snapshots.
    writer: Option<Writer>,
    /// `autosave_interval`: seconds, or changes with `autosave_on_changes`;
    /// 0 saves only on SIGUSR1 and shutdown.
    interval: u32,
    on_changes: bool,
    /// Changes since the last snapshot.
    changes: u64,
    /// When the next timed save is due (timed mode only).
    next: Option<Instant>,
    /// A snapshot waiting for connected sessions' copies of their state.
    copying: Option<Copying>,
}

/// Snapshot mode: the copies connected sessions' client threads sent for
/// the snapshot being taken.
struct Copying {
    states: HashMap<SessionId, SessionState>,
    /// Sessions asked and not yet answered.
    waiting: usize,
    /// Written with what came by then.
    deadline: Instant,
}

impl Router {
    /// Writes snapshots through `writer` from now on, as `p` says.
    pub fn persist_with(&mut self, writer: Writer, p: &Persistence) {
        self.autosave_with(Some(writer), p);
    }

    /// Journals every durable change through `journal`, which also writes
    /// the snapshots, as `p` says.
    pub fn journal_with(&mut self, journal: Arc<Journal>, p: &Persistence) {
        self.journal = Some(journal);
        self.autosave_with(None, p);
    }

    fn autosave_with(&mut self, writer: Option<Writer>, p: &Persistence) {
        let timed = p.autosave_interval > 0 && !p.autosave_on_changes;
        self.autosave = Some(Autosave {
            writer,
            interval: p.autosave_interval,
            on_changes: p.autosave_on_changes,
            changes: 0,
            next: timed
                .then(|| Instant::now() + Duration::from_secs(u64::from(p.autosave_interval))),
            copying: None,
        });
    }

    /// Puts a saved state back, before any client connects.
    pub fn restore(&mut self, r: Restored) {
        let check_source = self.config.check_retain_source;
        for (p, source) in r.retained {
            let source = source.filter(|_| check_source).map(|s| {
                Arc::new(Source {
                    client_id: s.client_id,
                    username: s.username,
                    scope: s.scope as usize,
                })
            });
            self.retained.set(p, source);
        }
        let now = Instant::now();
        for saved in r.sessions {
            if self.by_client_id.contains_key(&saved.client_id) {
                continue;
            }
            let identity = Identity {
                username: saved.username,
                scope: saved.scope as usize,
                // A bridge's session is exempt again when it attaches.
                own_bridge: false,
            };
            if !self.auth.has_scope(identity.scope) {
                warn!(
                    "Warning: the saved session of client {} belongs to security scope {} \
                     (a listener with per_listener_settings true) that the configuration no \
                     longer has: it receives nothing until the client connects again.",
                    saved.client_id, identity.scope
                );
            }
            let acl = self.subject(&identity, &saved.client_id);
            let sid = self.new_session(&saved.client_id);
            for (filter, opts) in &saved.subs {
                self.index(filter, sid, *opts, None);
            }
            if let Some(s) = self.session(sid) {
                s.clean = false;
                s.expiry = saved.expiry;
                s.subs = saved.subs.into_iter().collect();
                s.offline_bytes = saved.state.pending.iter().map(|p| p.payload.len()).sum();
                s.offline = saved.state;
                s.offline_since = Some(now);
                s.identity = identity;
                s.acl = acl;
            }
            self.start_expiry(sid, now);
        }
    }

    /// One more change that a snapshot would hold.
    pub(super) fn changed(&mut self) {
        if let Some(a) = &mut self.autosave {
            a.changes += 1;
        }
    }

    /// When the run loop must wake for a timed save.
    pub(super) fn autosave_deadline(&self) -> Option<Instant> {
        let a = self.autosave.as_ref()?;
        let copy = a.copying.as_ref().map(|c| c.deadline);
        [a.next, copy].into_iter().flatten().min()
    }

    /// Saves if the interval has passed (with changes) or enough changes
    /// were counted.
    pub(super) fn autosave_if_due(&mut self) {
        let Some(a) = &mut self.autosave else { return };
        if a.copying
            .as_ref()
            .is_some_and(|c| Instant::now() >= c.deadline)
        {
            self.write_snapshot();
            return;
        }
        let due = if a.on_changes {
            a.interval > 0 && a.changes >= u64::from(a.interval)
        } else {
            match a.next {
                Some(t) if Instant::now() >= t => {
                    a.next = Some(Instant::now() + Duration::from_secs(u64::from(a.interval)));
                    // A connected persistent session's queue and in-flight
                    // window change without counting: saved each time.
                    a.changes > 0
                        || self
                            .sessions
                            .iter()
                            .flatten()
                            .any(|s| !s.clean && s.live.is_some())
                }
                _ => false,
            }
        };
        if due {
            debug!("Autosaving in-memory database.");
            self.save();
        }
    }

    /// Takes a snapshot and hands it to the writer (SIGUSR1, autosave).
    pub(super) fn save(&mut self) {
        if self.autosave.is_none() {
            return;
        }
        if let Some(j) = &self.journal {
            // The journal thread's model holds connected clients' messages
            // too: its snapshot is the complete one.
            j.compact();
        } else if self.autosave.as_ref().is_some_and(|a| a.copying.is_none()) {
            // Connected sessions' queued and in-flight messages are in their
            // client threads: each sends a copy, and the snapshot is written
            // once all came (or after DRAIN with those that did).
            let mut waiting = 0;
            for s in self.sessions.iter().flatten().filter(|s| !s.clean) {
                if let Some(live) = &s.live {
                    live.outbox.request_copy();
                    waiting += 1;
                }
            }
            if let Some(a) = &mut self.autosave {
                a.copying = Some(Copying {
                    states: HashMap::new(),
                    waiting,
                    deadline: Instant::now() + DRAIN,
                });
            }
            if waiting == 0 {
                self.write_snapshot();
            }
        }
        if let Some(a) = &mut self.autosave {
            a.changes = 0;
        }
    }

    /// [`Event::SessionCopy`]: one connected session's state for the
    /// snapshot being taken; the last one writes it.
    pub(super) fn session_copy(&mut self, conn: ConnId, state: SessionState) {
        let Some(&sid) = self.by_conn.get(&conn) else {
            return;
        };
        let Some(c) = self.autosave.as_mut().and_then(|a| a.copying.as_mut()) else {
            return;
        };
        if c.states.insert(sid, state).is_none() {
            c.waiting = c.waiting.saturating_sub(1);
        }
        if c.waiting == 0 {
            self.write_snapshot();
        }
    }

    /// Writes the snapshot with the copies that came.
    fn write_snapshot(&mut self) {
        let copies = self
            .autosave
            .as_mut()
            .and_then(|a| a.copying.take())
            .map(|c| c.states)
            .unwrap_or_default();
        let bytes = self.snapshot_bytes(&copies);
        if let Some(w) = self.autosave.as_ref().and_then(|a| a.writer.as_ref()) {
            w.save(bytes);
        }
    }

    /// At shutdown: waits (bounded) for the client threads to hand back
    /// their state, saves, and waits for the writer to finish.
    pub(super) fn save_at_shutdown(&mut self, rx: &RouterRx) {
        if self.autosave.is_none() {
            return;
        }
        self.stopping = true;
        let deadline = Instant::now() + DRAIN;
        while !self.by_conn.is_empty() {
            match rx.recv_until(Some(deadline)) {
                Ok(Some(ev)) => {
                    self.handle(ev);
                }
                Ok(None) => {
                    info!(
                        "{} client(s) did not hand back their state in time; their in-flight \
                         messages are not saved.",
                        self.by_conn.len()
                    );
                    break;
                }
                Err(Disconnected) => break,
            }
        }
        if let Some(j) = self.journal.take() {
            j.finish();
            return;
        }
        // Every client thread handed its state back (or is not saved).
        let bytes = self.snapshot_bytes(&HashMap::new());
        if let Some(w) = self.autosave.take().and_then(|a| a.writer) {
            w.save(bytes);
            w.finish();
        }
    }

    /// Hands `items` to a client: with the journal on and `durable` set,
    /// once the journal has everything so far on disk; otherwise now.
    pub(super) fn hand_over(
        &self,
        outbox: &Arc<Outbox>,
        items: Vec<Outgoing>,
        durable: bool,
        limits: QueueLimits,
    ) {
        if let (Some(j), true) = (&self.journal, durable) {
            j.after_durable(outbox, items);
            return;
        }
        for item in items {
            match item {
                Outgoing::Publish(p) => {
                    outbox.push_publish(p, limits);
                }
                other => outbox.push(other),
            }
        }
    }

    /// [`Event::Ack`]: the client's acknowledgement goes out once what the
    /// router did for its packets before it is on disk.
    pub(super) fn ack(&self, conn: ConnId, ack: Reply) {
        let Some(&sid) = self.by_conn.get(&conn) else {
            return;
        };
        let Some(live) = self
            .sessions
            .get(sid as usize)
            .and_then(|s| s.as_ref()?.live.as_ref())
        else {
            return;
        };
        let items = vec![Outgoing::Packet(ack.packet())];
        self.hand_over(&live.outbox.clone(), items, true, QueueLimits::default());
    }

    /// The snapshot; `copies` holds connected sessions' state (else only
    /// their subscriptions are saved).
    fn snapshot_bytes(&self, copies: &HashMap<SessionId, SessionState>) -> Vec<u8> {
        let mut e = Encoder::new();
        self.retained.for_each(|stored| {
            // Recomputed by the broker; Mosquitto does not keep them either.
            if stored.publish.topic.starts_with("$SYS/") {
                return;
            }
            e.record(&Record::Retained {
                publish: stored.publish.clone(),
                source: stored.source.as_deref().map(|s| SavedSource {
                    client_id: s.client_id.clone(),
                    username: s.username.clone(),
                    scope: s.scope as u32,
                }),
            });
        });
        for (sid, s) in self.sessions.iter().enumerate() {
            let Some(s) = s.as_ref().filter(|s| !s.clean) else {
                continue;
            };
            let state = match &s.live {
                None => Some(&s.offline),
                Some(_) => copies.get(&(sid as SessionId)),
            };
            encode_session(
                &mut e,
                &s.client_id,
                (s.identity.username.as_deref(), s.identity.scope as u32),
                s.expiry,
                &s.subs,
                state,
            );
        }
        e.finish()
    }
}

/// Appends a record when the journal is on.
fn journal(j: &Option<Arc<Journal>>, r: impl FnOnce() -> Record) {
    if let Some(j) = j {
        j.append(r());
    }
}

/// A session attached: `discarded` when a persistent session was dropped
/// by a clean start, `persistent` with the identity of a persistent one.
pub(super) fn journal_attach(
    j: &Option<Arc<Journal>>,
    client_id: &str,
    discarded: bool,
    persistent: Option<(&Identity, u32)>,
) {
    if discarded {
        journal_end(j, client_id);
    }
    if let Some((who, expiry)) = persistent {
        journal(j, || Record::Session {
            client_id: client_id.to_string(),
            username: who.username.clone(),
            scope: who.scope as u32,
            last_id: 0,
            expiry,
        });
    }
}

pub(super) fn journal_end(j: &Option<Arc<Journal>>, client_id: &str) {
    journal(j, || Record::SessionEnd {
        client_id: client_id.to_string(),
    });
}

/// A retained message set (or cleared, with an empty payload). At QoS 0 it
/// promises nothing: the snapshot gets it, the journal does not.
pub(super) fn journal_retained(j: &Option<Arc<Journal>>, p: &Publish, source: Option<&Source>) {
    let Some(j) = j else { return };
    let r = Record::Retained {
        publish: p.clone(),
        source: source.map(|s| SavedSource {
            client_id: s.client_id.clone(),
            username: s.username.clone(),
            scope: s.scope as u32,
        }),
    };
    if p.qos == QoS::AtMostOnce {
        j.note(r);
    } else {
        j.append(r);
    }
}

/// A QoS 1/2 message queued for a persistent session.
pub(super) fn journal_queued(j: &Option<Arc<Journal>>, client_id: &str, p: &Publish) {
    journal(j, || Record::Queued {
        client_id: client_id.to_string(),
        publish: p.clone(),
    });
}

/// A subscription of a persistent session added (`Some(qos)`) or removed.
pub(super) fn journal_subscription(
    j: &Option<Arc<Journal>>,
    client_id: &str,
    filter: &str,
    opts: Option<SubOpts>,
) {
    journal(j, || match opts {
        Some(opts) => Record::Subscription {
            client_id: client_id.to_string(),
            filter: filter.to_string(),
            opts,
        },
        None => Record::Unsubscription {
            client_id: client_id.to_string(),
            filter: filter.to_string(),
        },
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Publish, QoS};
    use crate::config::Config;
    use crate::persist::SavedSession;
    use crate::persist::format::decode;
    use crate::session::inflight::{Inflight, OutState};

    fn router() -> Router {
        let config = Config {
            sys_interval: 0,
            ..Config::default()
        };
        Router::new(Arc::new(config), Arc::default(), Arc::default())
    }

    fn msg(topic: &str, qos: QoS, pkid: u16) -> Publish {
        Publish {
            pkid,
            qos,
            retain: false,
            ..Publish::retained(topic, b"payload")
        }
    }

    #[test]
    fn sys_topics_are_not_changes() {
        let mut r = router();
        let dir = std::env::temp_dir().join(format!("midge-changes-{}", std::process::id()));
        let writer = Writer::spawn(dir.join("midge.db")).expect("spawn");
        r.persist_with(writer, &Persistence::default());
        r.publish(Publish::retained("$SYS/broker/uptime", b"1"), None);
        assert_eq!(r.autosave.as_ref().map(|a| a.changes), Some(0));
        r.publish(Publish::retained("kept", b"1"), None);
        assert_eq!(r.autosave.as_ref().map(|a| a.changes), Some(1));
    }

    #[test]
    fn a_restored_state_snapshots_to_the_same_bytes() {
        let mut state = SessionState {
            inflight: Inflight::restore(
                vec![
                    OutState::Sent(msg("a/1", QoS::AtLeastOnce, 1)),
                    OutState::Released(2),
                ],
                vec![7],
                2,
            ),
            ..SessionState::default()
        };
        state.pending.push_back(msg("a/3", QoS::ExactlyOnce, 0));
        let mut r = router();
        r.restore(Restored {
            retained: vec![
                (Publish::retained("keep", b"1"), None),
                (Publish::retained("$SYS/broker/uptime", b"9"), None),
            ],
            sessions: vec![SavedSession {
                client_id: "s".into(),
                username: Some("u".into()),
                scope: 0,
                expiry: u32::MAX,
                subs: vec![("a/#".into(), crate::session::SubOpts::qos(QoS::ExactlyOnce))],
                state,
            }],
        });
        assert_eq!(r.session_count(), 1);
        let bytes = r.snapshot_bytes(&HashMap::new());
        let d = decode(&bytes);
        assert_eq!(d.damage, None);
        // Session, subscription, 2 outgoing, 1 incoming, 1 queued, 1 retained.
        assert_eq!(d.records.len(), 7, "{:?}", d.records);
        let (again, orphans) = Restored::from_records(d.records);
        assert_eq!(orphans, 0);
        let mut r2 = router();
        r2.restore(again);
        assert_eq!(r2.snapshot_bytes(&HashMap::new()), bytes);
    }
}
