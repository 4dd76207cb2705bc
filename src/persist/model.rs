//! The saved state as records build it up: the one place that says what a
//! record means. Start-up applies the snapshot's records and then the
//! journals' to an empty [`Model`]; with the journal on, the journal thread
//! keeps applying every record it writes, so a compaction snapshot is the
//! model's, which holds connected clients' queued and in-flight messages
//! too (the router only knows them once the client thread hands them back).

use std::collections::{BTreeMap, HashMap};

use super::format::{Encoder, Record, SavedSource, Step, message_check};
use super::{Restored, SavedSession, encode_session};
use crate::codec::{Publish, QoS};
use crate::session::SubOpts;
use crate::session::inflight::{Inflight, OutState, SessionState};

/// One persistent session as the records left it.
#[derive(Debug, Default)]
struct Kept {
    username: Option<String>,
    scope: u32,
    /// The session expiry interval (u32::MAX: never).
    expiry: u32,
    /// By filter, with the order of its first subscription: restoring one
    /// record is a lookup, not a search through every filter.
    subs: HashMap<String, (u64, SubOpts)>,
    /// The order the next new filter gets.
    next_sub: u64,
    state: SessionState,
}

impl Kept {
    /// The subscriptions in the order they were first made.
    fn ordered_subs(&self) -> Vec<(&String, &SubOpts)> {
        let mut subs: Vec<_> = self.subs.iter().map(|(f, (n, o))| (*n, f, o)).collect();
        subs.sort_unstable_by_key(|(n, _, _)| *n);
        subs.into_iter().map(|(_, f, o)| (f, o)).collect()
    }
}

#[derive(Debug, Default)]
pub struct Model {
    /// Retained messages by topic.
    retained: BTreeMap<String, (Publish, Option<SavedSource>)>,
    sessions: BTreeMap<String, Kept>,
    /// From the snapshot: journals of an older generation are in it.
    pub generation: u64,
    /// Records that named a session the model does not hold.
    pub orphans: usize,
}

impl Model {
    /// Applies one record. Never panics: a record that does not fit (an
    /// unknown session, an unknown packet id) changes nothing.
    pub fn apply(&mut self, rec: Record) {
        let (client_id, change) = match rec {
            Record::Retained { publish, source } => {
                let topic = publish.topic.to_string();
                if publish.payload.is_empty() {
                    self.retained.remove(&topic);
                } else {
                    self.retained.insert(topic, (publish, source));
                }
                return;
            }
            Record::JournalGen(g) => {
                self.generation = g;
                return;
            }
            Record::Session {
                client_id,
                username,
                scope,
                last_id,
                expiry,
            } => {
                let s = self.sessions.entry(client_id).or_insert_with(|| Kept {
                    state: SessionState {
                        inflight: Inflight::restore(Vec::new(), Vec::new(), last_id),
                        ..SessionState::default()
                    },
                    ..Kept::default()
                });
                s.username = username;
                s.scope = scope;
                s.expiry = expiry;
                return;
            }
            Record::SessionEnd { client_id } => {
                if self.sessions.remove(&client_id).is_none() {
                    self.orphans += 1;
                }
                return;
            }
            Record::Subscription {
                client_id,
                filter,
                opts,
            } => (client_id, Change::Sub(filter, opts)),
            Record::Unsubscription { client_id, filter } => (client_id, Change::Unsub(filter)),
            Record::Queued { client_id, publish } => (client_id, Change::Queued(publish)),
            Record::Outgoing { client_id, state } => (client_id, Change::Out(state)),
            Record::IncomingQos2 { client_id, pkid } => (client_id, Change::In(pkid)),
            Record::Sent {
                client_id,
                pkid,
                check,
            } => (client_id, Change::Sent(pkid, check)),
            Record::Progress {
                client_id,
                pkid,
                step,
            } => (client_id, Change::Step(pkid, step)),
        };
        let Some(Kept {
            subs,
            next_sub,
            state,
            ..
        }) = self.sessions.get_mut(&client_id)
        else {
            self.orphans += 1;
            return;
        };
        let SessionState { inflight, pending } = state;
        match change {
            Change::Sub(filter, qos) => match subs.get_mut(&filter) {
                Some(entry) => entry.1 = qos,
                None => {
                    subs.insert(filter, (*next_sub, qos));
                    *next_sub += 1;
                }
            },
            Change::Unsub(filter) => {
                subs.remove(&filter);
            }
            Change::Queued(p) => pending.push_back(p),
            Change::Out(state) => inflight.push_restored(state),
            Change::In(pkid) => {
                inflight.receive_qos2(pkid);
            }
            Change::Sent(pkid, check) => {
                // The client thread sends in queue order; a message it sent
                // that was never queued (a retained copy) matches nothing.
                let at = pending
                    .iter()
                    .position(|p| p.qos != QoS::AtMostOnce && message_check(p) == check);
                if let Some(mut p) = at.and_then(|i| pending.remove(i)) {
                    p.pkid = pkid;
                    inflight.push_restored(OutState::Sent(p));
                }
                inflight.set_last_id(pkid);
            }
            Change::Step(pkid, step) => {
                match step {
                    Step::Acked => {
                        inflight.puback(pkid);
                    }
                    Step::Received => {
                        inflight.pubrec(pkid);
                    }
                    Step::Completed => {
                        inflight.pubcomp(pkid);
                    }
                    Step::Released => inflight.release_qos2(pkid),
                    Step::Refused => {
                        inflight.refused(pkid);
                    }
                };
            }
        }
    }

    /// A whole snapshot of the model, telling that journals from
    /// `generation` on are not in it.
    pub fn snapshot(&self, generation: u64) -> Vec<u8> {
        let mut e = Encoder::new();
        e.record(&Record::JournalGen(generation));
        for (publish, source) in self.retained.values() {
            e.record(&Record::Retained {
                publish: publish.clone(),
                source: source.clone(),
            });
        }
        for (id, s) in &self.sessions {
            let subs = s.ordered_subs().into_iter();
            encode_session(
                &mut e,
                id,
                (s.username.as_deref(), s.scope),
                s.expiry,
                subs,
                Some(&s.state),
            );
        }
        e.finish()
    }

    /// A copy for the router (the payloads are shared, not copied).
    pub fn to_restored(&self) -> Restored {
        Restored {
            retained: self.retained.values().cloned().collect(),
            sessions: self
                .sessions
                .iter()
                .map(|(id, s)| SavedSession {
                    client_id: id.clone(),
                    username: s.username.clone(),
                    scope: s.scope,
                    expiry: s.expiry,
                    subs: s
                        .ordered_subs()
                        .into_iter()
                        .map(|(f, o)| (f.clone(), *o))
                        .collect(),
                    state: SessionState {
                        inflight: s.state.inflight.clone(),
                        pending: s.state.pending.clone(),
                    },
                })
                .collect(),
        }
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }
}

enum Change {
    Sub(String, SubOpts),
    Unsub(String),
    Queued(Publish),
    Out(OutState),
    In(u16),
    Sent(u16, u32),
    Step(u16, Step),
}

/// Appends an outgoing entry, keeping the incoming ids.
#[cfg(test)]
mod tests {
    use super::*;
    fn msg(topic: &str, qos: QoS) -> Publish {
        Publish {
            qos,
            retain: false,
            ..Publish::retained(topic, topic.as_bytes())
        }
    }

    fn step(pkid: u16, step: Step) -> Record {
        Record::Progress {
            client_id: "s".into(),
            pkid,
            step,
        }
    }

    fn sent(pkid: u16, p: &Publish) -> Record {
        Record::Sent {
            client_id: "s".into(),
            pkid,
            check: message_check(p),
        }
    }

    /// A session's journal, from creation through each step of both QoS
    /// flows, and what a snapshot of the result holds.
    #[test]
    fn journal_records_replay_to_the_session_state() {
        let (a, b, c) = (
            msg("a", QoS::AtLeastOnce),
            msg("b", QoS::ExactlyOnce),
            msg("c", QoS::ExactlyOnce),
        );
        let queued = |p: &Publish| Record::Queued {
            client_id: "s".into(),
            publish: p.clone(),
        };
        let mut m = Model::default();
        for r in [
            Record::Session {
                client_id: "s".into(),
                username: None,
                scope: 0,
                last_id: 0,
                expiry: u32::MAX,
            },
            Record::Subscription {
                client_id: "s".into(),
                filter: "#".into(),
                opts: SubOpts::qos(QoS::ExactlyOnce),
            },
            queued(&a),
            queued(&b),
            queued(&c),
            sent(1, &a),
            sent(2, &b),
            sent(3, &c),
            step(1, Step::Acked),
            step(2, Step::Received),
            step(3, Step::Received),
            step(3, Step::Completed),
            Record::IncomingQos2 {
                client_id: "s".into(),
                pkid: 9,
            },
            Record::IncomingQos2 {
                client_id: "s".into(),
                pkid: 10,
            },
            step(9, Step::Released),
            Record::Retained {
                publish: Publish::retained("r", b"1"),
                source: None,
            },
            Record::Retained {
                publish: Publish::retained("gone", b"1"),
                source: None,
            },
            Record::Retained {
                publish: Publish::retained("gone", b""),
                source: None,
            },
        ] {
            m.apply(r);
        }
        assert_eq!(m.orphans, 0);
        let r = m.to_restored();
        assert_eq!(r.retained.len(), 1);
        let s = &r.sessions[0];
        assert_eq!(
            s.subs,
            vec![("#".to_string(), SubOpts::qos(QoS::ExactlyOnce))]
        );
        assert!(s.state.pending.is_empty());
        let out: Vec<_> = s.state.inflight.outgoing().cloned().collect();
        assert_eq!(out, vec![OutState::Released(2)]);
        assert_eq!(s.state.inflight.incoming_qos2(), &[10]);
        assert_eq!(s.state.inflight.last_id(), 3);

        // The snapshot of the model reads back to the same model.
        let bytes = m.snapshot(7);
        let mut again = Model::default();
        for r in super::super::format::decode(&bytes).records {
            again.apply(r);
        }
        assert_eq!(again.generation, 7);
        assert_eq!(again.snapshot(7), bytes);

        // A retained copy sent after a SUBACK was never queued: nothing
        // moves, and the session ends cleanly.
        m.apply(sent(4, &Publish::retained("r", b"1")));
        m.apply(Record::SessionEnd {
            client_id: "s".into(),
        });
        assert_eq!(m.session_count(), 0);
        m.apply(step(1, Step::Acked));
        assert_eq!(m.orphans, 1, "a record after the end names no session");
    }

    /// One session with 300,000 filters, then 300,000 in-flight messages:
    /// each record is a lookup, so this is quick (it took minutes when
    /// every record searched all those before it).
    #[test]
    fn restoring_300_000_subscriptions_and_in_flight_messages_is_linear() {
        let mut m = Model::default();
        m.apply(Record::Session {
            client_id: "s".into(),
            username: None,
            scope: 0,
            last_id: 0,
            expiry: u32::MAX,
        });
        let sub = |filter: String, qos| Record::Subscription {
            client_id: "s".into(),
            filter,
            opts: SubOpts::qos(qos),
        };
        for i in 0..300_000 {
            m.apply(sub(format!("f/{i}"), QoS::AtLeastOnce));
        }
        // A second subscription to a filter changes it in place.
        m.apply(sub("f/0".into(), QoS::ExactlyOnce));
        for i in 0..60_000u16 {
            let mut p = msg("t", QoS::AtLeastOnce);
            p.pkid = i + 1;
            m.apply(Record::Outgoing {
                client_id: "s".into(),
                state: OutState::Sent(p),
            });
        }
        let r = m.to_restored();
        let s = &r.sessions[0];
        assert_eq!(s.subs.len(), 300_000);
        assert_eq!(
            s.subs[0],
            ("f/0".to_string(), SubOpts::qos(QoS::ExactlyOnce))
        );
        assert_eq!(s.subs[299_999].0, "f/299999");
        assert_eq!(s.state.inflight.len(), 60_000);
    }
}
