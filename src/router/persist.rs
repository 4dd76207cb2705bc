//! The router's side of persistence: restoring a saved state at start-up,
//! taking snapshots, and deciding when to save (`autosave_interval`,
//! `autosave_on_changes`, SIGUSR1, shutdown). The bytes go to the
//! [`Writer`] thread; the router never touches the disk.
//!
//! A snapshot holds every retained message (but `$SYS`) and every
//! persistent session with its subscriptions. An offline session also has
//! its queued messages and its in-flight state in both directions. A
//! connected session's in-flight and queued messages live in its client
//! thread, so a snapshot taken while it is connected holds only the session
//! and its subscriptions; on a clean shutdown every client thread hands its
//! state back first, so the final snapshot has everything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{debug, info};

use super::retain::Source;
use super::{Event, Identity, Router};
use crate::config::Persistence;
use crate::persist::Restored;
use crate::persist::format::{Encoder, Record, SavedSource};
use crate::persist::writer::Writer;

/// How long a shutdown waits for client threads to hand back their
/// in-flight state before the final snapshot.
const DRAIN: Duration = Duration::from_secs(1);

/// Persistence state of the router.
pub(super) struct Autosave {
    writer: Writer,
    /// `autosave_interval`: seconds, or changes with `autosave_on_changes`;
    /// 0 saves only on SIGUSR1 and shutdown.
    interval: u32,
    on_changes: bool,
    /// Changes since the last snapshot.
    changes: u64,
    /// When the next timed save is due (timed mode only).
    next: Option<Instant>,
}

impl Router {
    /// Writes snapshots through `writer` from now on, as `p` says.
    pub fn persist_with(&mut self, writer: Writer, p: &Persistence) {
        let timed = p.autosave_interval > 0 && !p.autosave_on_changes;
        self.autosave = Some(Autosave {
            writer,
            interval: p.autosave_interval,
            on_changes: p.autosave_on_changes,
            changes: 0,
            next: timed
                .then(|| Instant::now() + Duration::from_secs(u64::from(p.autosave_interval))),
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
            };
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
        self.autosave.as_ref().and_then(|a| a.next)
    }

    /// Saves if the interval has passed (with changes) or enough changes
    /// were counted.
    pub(super) fn autosave_if_due(&mut self) {
        let Some(a) = &mut self.autosave else { return };
        let due = if a.on_changes {
            a.interval > 0 && a.changes >= u64::from(a.interval)
        } else {
            match a.next {
                Some(t) if Instant::now() >= t => {
                    a.next = Some(Instant::now() + Duration::from_secs(u64::from(a.interval)));
                    a.changes > 0
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
        let bytes = self.snapshot_bytes();
        if let Some(a) = &mut self.autosave {
            a.changes = 0;
            a.writer.save(bytes);
        }
    }

    /// At shutdown: waits (bounded) for the client threads to hand back
    /// their state, saves, and waits for the writer to finish.
    pub(super) fn save_at_shutdown(&mut self, rx: &Receiver<Event>) {
        if self.autosave.is_none() {
            return;
        }
        self.stopping = true;
        let deadline = Instant::now() + DRAIN;
        while !self.by_conn.is_empty() {
            match rx.recv_deadline(deadline) {
                Ok(ev) => {
                    self.handle(ev);
                }
                Err(RecvTimeoutError::Timeout) => {
                    info!(
                        "{} client(s) did not hand back their state in time; their in-flight \
                         messages are not saved.",
                        self.by_conn.len()
                    );
                    break;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let bytes = self.snapshot_bytes();
        if let Some(a) = self.autosave.take() {
            a.writer.save(bytes);
            a.writer.finish();
        }
    }

    fn snapshot_bytes(&self) -> Vec<u8> {
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
        for s in self.sessions.iter().flatten().filter(|s| !s.clean) {
            let client_id = || s.client_id.clone();
            let offline = s.live.is_none().then_some(&s.offline);
            e.record(&Record::Session {
                client_id: client_id(),
                username: s.identity.username.clone(),
                scope: s.identity.scope as u32,
                last_id: offline.map_or(0, |o| o.inflight.last_id()),
                expiry: s.expiry,
            });
            for (filter, opts) in &s.subs {
                e.record(&Record::Subscription {
                    client_id: client_id(),
                    filter: filter.clone(),
                    opts: *opts,
                });
            }
            let Some(state) = offline else { continue };
            for out in state.inflight.outgoing() {
                e.record(&Record::Outgoing {
                    client_id: client_id(),
                    state: out.clone(),
                });
            }
            for &pkid in state.inflight.incoming_qos2() {
                e.record(&Record::IncomingQos2 {
                    client_id: client_id(),
                    pkid,
                });
            }
            for p in &state.pending {
                e.record(&Record::Queued {
                    client_id: client_id(),
                    publish: p.clone(),
                });
            }
        }
        e.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::inflight::{Inflight, OutState, SessionState};
    use crate::codec::{Publish, QoS};
    use crate::config::Config;
    use crate::persist::SavedSession;
    use crate::persist::format::decode;

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
                subs: vec![("a/#".into(), crate::router::SubOpts::qos(QoS::ExactlyOnce))],
                state,
            }],
        });
        assert_eq!(r.session_count(), 1);
        let bytes = r.snapshot_bytes();
        let d = decode(&bytes);
        assert_eq!(d.damage, None);
        // Session, subscription, 2 outgoing, 1 incoming, 1 queued, 1 retained.
        assert_eq!(d.records.len(), 7, "{:?}", d.records);
        let (again, orphans) = Restored::from_records(d.records);
        assert_eq!(orphans, 0);
        let mut r2 = router();
        r2.restore(again);
        assert_eq!(r2.snapshot_bytes(), bytes);
    }
}
