//! Timers: the periodic tick (`$SYS`, `persistent_client_expiration`),
//! delayed wills and session expiry intervals.

use super::*;

impl Router {
    /// How often [`Router::tick`] runs: every `sys_interval`, or every
    /// minute when only `persistent_client_expiration` or
    /// `retain_expiry_interval` needs it.
    pub(super) fn tick_interval(&self) -> Option<Duration> {
        match self.config.sys_interval {
            0 if self.config.persistent_client_expiration.is_some()
                || self.config.retain_expiry_minutes > 0 =>
            {
                Some(Duration::from_secs(60))
            }
            0 => None,
            n => Some(Duration::from_secs(u64::from(n))),
        }
    }

    /// Expires old persistent sessions and retained messages, and
    /// publishes `$SYS`.
    pub(super) fn tick(&mut self) {
        if let Some(max) = self.config.persistent_client_expiration {
            self.expire(max);
        }
        self.sweep_retained_if_due();
        if self.config.sys_interval == 0 {
            return;
        }
        let snapshot = self.snapshot();
        for (topic, value) in self.sys.update(&self.metrics, &snapshot) {
            self.publish(Publish::retained(&topic, value.as_bytes()), None);
        }
    }

    pub(super) fn snapshot(&self) -> Snapshot {
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

    /// `retain_expiry_interval` (Mosquitto 2.0.21, 2.1): every so many
    /// minutes, retained messages whose message expiry interval has run out
    /// are removed, as a clear would remove them (and so from the journal);
    /// without it they go when a subscription or a new message meets them.
    pub(super) fn sweep_retained_if_due(&mut self) {
        let minutes = self.config.retain_expiry_minutes;
        let now = Instant::now();
        if minutes == 0 || self.next_retain_sweep.is_some_and(|t| now < t) {
            return;
        }
        self.next_retain_sweep = Some(now + Duration::from_secs(u64::from(minutes) * 60));
        let mut expired = Vec::new();
        self.retained.for_each(|s| {
            if s.publish.expired(now) {
                expired.push(s.publish.topic.clone());
            }
        });
        for topic in &expired {
            let clear = Publish::retained(topic, b"");
            if !topic.starts_with("$SYS/") {
                persist::journal_retained(&self.journal, &clear, None);
                self.changed();
            }
            self.retained.set(clear, None);
        }
        if !expired.is_empty() {
            debug!("Removed {} expired retained message(s).", expired.len());
        }
    }

    /// Removes persistent sessions offline for longer than `max`.
    pub(super) fn expire(&mut self, max: Duration) {
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

    /// Starts the expiry interval of an offline session that has one.
    pub(super) fn start_expiry(&mut self, sid: SessionId, now: Instant) {
        let Some(s) = self.session(sid) else { return };
        if s.expiry != u32::MAX {
            let at = now + Duration::from_secs(u64::from(s.expiry));
            let generation = s.generation;
            self.timers
                .push(Reverse((at, sid, generation, TimerKind::Expiry)));
        }
    }

    /// Fires the timers that are due: delayed wills, then session ends.
    pub(super) fn fire_timers(&mut self) {
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
}
