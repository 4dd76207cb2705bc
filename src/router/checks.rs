//! ACL checks: who may publish what, whose retained messages still stand
//! (`check_retain_source`), and new rules put in force.

use super::*;

impl Router {
    /// The compiled ACL of a client, or None when its scope has none (or it
    /// is one of this broker's own bridges).
    pub(super) fn subject(&self, who: &Identity, client_id: &str) -> Option<Subject> {
        if who.own_bridge {
            return None;
        }
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
    pub(super) fn may_publish(&mut self, conn: ConnId, p: &Publish) -> bool {
        let dollar_ok = acl::dollar_write_allowed(&p.topic);
        // The common case costs no session lookup: no ACL file anywhere.
        if conn == event::BROKER || (dollar_ok && !self.auth.has_acl()) {
            return true;
        }
        let sid = self.by_conn.get(&conn).copied();
        let s = sid.and_then(|sid| session_ref(&self.sessions, sid));
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
    pub(super) fn source(&self, conn: ConnId, p: &Publish) -> Option<Arc<Source>> {
        if !p.retain || !self.config.check_retain_source {
            return None;
        }
        let sid = *self.by_conn.get(&conn)?;
        session_ref(&self.sessions, sid).map(source_of)
    }

    /// New password and ACL files: recompile every session's rules.
    pub(super) fn replace_auth(&mut self, auth: Arc<Auth>) {
        self.auth = auth;
        for i in 0..self.sessions.len() {
            let Some(s) = &self.sessions[i] else { continue };
            let acl = self.subject(&s.identity, &s.client_id);
            if let Some(s) = self.sessions[i].as_mut() {
                s.acl = acl;
            }
        }
    }
}

pub(super) fn source_of_sid(r: &Router, sid: SessionId) -> Option<Arc<Source>> {
    session_ref(&r.sessions, sid).map(source_of)
}

pub(super) fn source_of(s: &Session) -> Arc<Source> {
    Arc::new(Source {
        client_id: s.client_id.clone(),
        username: s.identity.username.clone(),
        scope: s.identity.scope,
    })
}

/// `check_retain_source`: whether the client that published a retained
/// message may still write its topic under the rules in force now.
pub(super) fn source_may_write(auth: &Auth, src: &Source, topic: &str) -> bool {
    let scope = auth.scope(src.scope);
    scope.acl.as_ref().is_none_or(|acl| {
        acl.subject(src.username.as_deref(), &src.client_id)
            .allows(topic, acl::WRITE)
    })
}
