//! Shared subscriptions `$share/GROUP/FILTER` [MQTT-4.8.2]: each message
//! matching FILTER goes to one member of GROUP, in turn.
//!
//! Groups live in a trie of their own, keyed by the filter after the group
//! name, so matching costs one walk however many groups there are. A
//! member that leaves keeps what was already sent or queued to it (its
//! session's in-flight and queued messages), as in Mosquitto; later
//! messages go to the members that remain.

use std::collections::HashMap;

use super::trie::{SessionId, Trie};
use crate::session::SubOpts;

#[derive(Debug)]
struct Group {
    members: Vec<(SessionId, SubOpts)>,
    /// The member next in turn.
    next: usize,
}

#[derive(Debug, Default)]
pub struct SharedGroups {
    /// Group ids by filter (the trie's "session id" is the group id).
    trie: Trie<()>,
    groups: Vec<Option<Group>>,
    free: Vec<u32>,
    by_name: HashMap<(String, String), u32>,
    /// Memberships, for `$SYS/broker/subscriptions/count`.
    count: usize,
}

impl SharedGroups {
    /// Adds or updates `sid` in `group` for `filter`; true when it was
    /// already a member.
    pub fn insert(&mut self, group: &str, filter: &str, sid: SessionId, opts: SubOpts) -> bool {
        let key = (group.to_string(), filter.to_string());
        let gid = match self.by_name.get(&key) {
            Some(&gid) => gid,
            None => {
                let g = Group {
                    members: Vec::new(),
                    next: 0,
                };
                let gid = match self.free.pop() {
                    Some(gid) => {
                        self.groups[gid as usize] = Some(g);
                        gid
                    }
                    None => {
                        self.groups.push(Some(g));
                        (self.groups.len() - 1) as u32
                    }
                };
                self.trie.insert(filter, gid, ());
                self.by_name.insert(key, gid);
                gid
            }
        };
        let Some(g) = self.groups.get_mut(gid as usize).and_then(|g| g.as_mut()) else {
            return false;
        };
        match g.members.iter_mut().find(|(id, _)| *id == sid) {
            Some(m) => {
                m.1 = opts;
                true
            }
            None => {
                g.members.push((sid, opts));
                self.count += 1;
                false
            }
        }
    }

    /// Removes `sid` from `group`; true when it was a member. An empty
    /// group is dropped.
    pub fn remove(&mut self, group: &str, filter: &str, sid: SessionId) -> bool {
        let key = (group.to_string(), filter.to_string());
        let Some(&gid) = self.by_name.get(&key) else {
            return false;
        };
        let Some(g) = self.groups.get_mut(gid as usize).and_then(|g| g.as_mut()) else {
            return false;
        };
        let before = g.members.len();
        g.members.retain(|(id, _)| *id != sid);
        let removed = g.members.len() != before;
        if removed {
            self.count -= 1;
        }
        if g.members.is_empty() {
            self.groups[gid as usize] = None;
            self.free.push(gid);
            self.by_name.remove(&key);
            self.trie.remove(filter, gid);
        } else if g.next >= g.members.len() {
            g.next = 0;
        }
        removed
    }

    /// Calls `f` with the member whose turn it is, once per group whose
    /// filter matches `topic`.
    pub fn for_each_match(&mut self, topic: &str, mut f: impl FnMut(SessionId, SubOpts)) {
        let groups = &mut self.groups;
        self.trie.for_each_match(topic, |gid, ()| {
            let Some(g) = groups.get_mut(gid as usize).and_then(|g| g.as_mut()) else {
                return;
            };
            if let Some(&(sid, opts)) = g.members.get(g.next) {
                g.next = (g.next + 1) % g.members.len();
                f(sid, opts);
            }
        });
    }

    /// Number of memberships.
    pub fn len(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;

    fn turns(s: &mut SharedGroups, topic: &str, n: usize) -> Vec<SessionId> {
        let mut v = Vec::new();
        for _ in 0..n {
            s.for_each_match(topic, |sid, _| v.push(sid));
        }
        v
    }

    #[test]
    fn round_robin_and_leaving() {
        let mut s = SharedGroups::default();
        let o = SubOpts::qos(QoS::AtLeastOnce);
        assert!(!s.insert("g", "a/+", 1, o));
        s.insert("g", "a/+", 2, o);
        s.insert("g", "a/+", 3, o);
        assert!(s.insert("g", "a/+", 3, o), "already a member");
        assert_eq!(turns(&mut s, "a/x", 4), vec![1, 2, 3, 1]);
        assert!(s.remove("g", "a/+", 2));
        assert_eq!(turns(&mut s, "a/x", 4), vec![3, 1, 3, 1]);
        assert!(turns(&mut s, "b/x", 1).is_empty());
        s.remove("g", "a/+", 1);
        s.remove("g", "a/+", 3);
        assert_eq!(s.len(), 0);
        assert!(turns(&mut s, "a/x", 1).is_empty());
    }

    #[test]
    fn groups_are_independent() {
        let mut s = SharedGroups::default();
        let o = SubOpts::qos(QoS::AtMostOnce);
        s.insert("g1", "t", 1, o);
        s.insert("g2", "t", 2, o);
        s.insert("g2", "#", 3, o);
        let mut got = turns(&mut s, "t", 1);
        got.sort();
        assert_eq!(got, vec![1, 2, 3]);
    }
}
