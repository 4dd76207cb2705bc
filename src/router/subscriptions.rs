//! Subscriptions: SUBSCRIBE and UNSUBSCRIBE, and the index of filters in
//! the trie and the shared groups.

use super::*;

impl Router {
    /// Adds a subscription to the trie or to its shared group; `old` is
    /// the options it replaces, if any.
    pub(super) fn index(
        &mut self,
        filter: &str,
        sid: SessionId,
        opts: SubOpts,
        old: Option<SubOpts>,
    ) {
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
    pub(super) fn unindex(&mut self, filter: &str, sid: SessionId, opts: SubOpts) -> bool {
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

    pub(super) fn subscribe(&mut self, conn: ConnId, sub: Subscribe) {
        let Some(&sid) = self.by_conn.get(&conn) else {
            return;
        };
        let Some(s) = session_mut(&mut self.sessions, sid) else {
            return;
        };
        let Some(live) = &s.live else { return };
        let outbox = live.outbox.clone();
        let v5 = live.level == Level::V5;
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
        let out = vec![Outgoing::Packet(Packet::SubAck(SubAck {
            pkid: sub.pkid,
            codes,
        }))];
        if persistent {
            self.changed();
        }
        // Retained messages follow the SUBACK, with retain set
        // [MQTT-3.3.1-8], streamed from the store (stream.rs). A filter
        // named twice replaces its first subscription: it streams once.
        self.hand_over(&outbox, out, persistent, self.queue_limits());
        let mut streams: Vec<stream::Stream> = Vec::new();
        for (f, send) in sub.filters.iter().zip(send_retained) {
            streams.retain(|st| !st.is_for(&f.filter));
            if send {
                streams.push(stream::Stream::new(
                    &f.filter,
                    f.qos,
                    self.config.upgrade_outgoing_qos,
                    v5.then_some(sub.sub_id).flatten(),
                ));
            }
        }
        if !streams.is_empty() {
            self.start_streams(sid, streams);
        }
    }

    pub(super) fn unsubscribe(&mut self, conn: ConnId, unsub: Unsubscribe) {
        let Some(&sid) = self.by_conn.get(&conn) else {
            return;
        };
        let Some(s) = session_mut(&mut self.sessions, sid) else {
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
            Self::stop_stream(s, f);
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
}
