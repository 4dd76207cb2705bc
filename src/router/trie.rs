//! The subscription trie: topic filters by level, and who subscribed to each.
//!
//! Owned and used by the router thread only. Each subscription carries a
//! small `Copy` value: its options, or nothing for shared groups. Matching a topic walks the
//! trie once per level, looking at the literal child, `+` and `#`; it
//! allocates nothing. `$`-topics are not matched by a filter that starts
//! with a wildcard [MQTT-4.7.2-1].

use std::collections::HashMap;

/// Index of a session in the router's session table.
pub type SessionId = u32;

/// One trie level. `T` is what each subscription carries (its options).
#[derive(Debug)]
struct Node<T> {
    children: HashMap<Box<str>, Node<T>>,
    /// Subscribers whose filter ends at this node, with their options.
    subs: Vec<(SessionId, T)>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            children: HashMap::new(),
            subs: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subs.is_empty()
    }
}

#[derive(Debug)]
pub struct Trie<T> {
    root: Node<T>,
    count: usize,
}

impl<T> Default for Trie<T> {
    fn default() -> Self {
        Trie {
            root: Node::default(),
            count: 0,
        }
    }
}

impl<T: Copy> Trie<T> {
    /// Adds or replaces `sid`'s subscription to `filter`. Returns true when
    /// it replaced an existing one.
    pub fn insert(&mut self, filter: &str, sid: SessionId, opts: T) -> bool {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.entry(Box::from(level)).or_default();
        }
        if let Some(s) = node.subs.iter_mut().find(|(id, _)| *id == sid) {
            s.1 = opts;
            return true;
        }
        node.subs.push((sid, opts));
        self.count += 1;
        false
    }

    /// Removes `sid`'s subscription to `filter`; true when there was one.
    /// Empty branches are pruned so random topics cannot grow memory forever.
    pub fn remove(&mut self, filter: &str, sid: SessionId) -> bool {
        let removed = remove_in(&mut self.root, filter, sid);
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Number of (filter, session) subscriptions.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Calls `f` once per matching subscription, in Mosquitto's walk order:
    /// at each level the literal child, then `+`, then `#`, depth first. A
    /// session subscribed with two matching filters is called twice; the
    /// router keeps the first.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(SessionId, T)) {
        match_in(&self.root, Some(topic), true, &mut f);
    }
}

fn remove_in<T>(node: &mut Node<T>, filter: &str, sid: SessionId) -> bool {
    let (level, rest) = match filter.split_once('/') {
        Some((l, r)) => (l, Some(r)),
        None => (filter, None),
    };
    let Some(child) = node.children.get_mut(level) else {
        return false;
    };
    let removed = match rest {
        Some(rest) => remove_in(child, rest, sid),
        None => {
            let before = child.subs.len();
            child.subs.retain(|(id, _)| *id != sid);
            child.subs.len() != before
        }
    };
    if child.is_empty() {
        node.children.remove(level);
    }
    removed
}

/// `rest` is the part of the topic not yet matched; None once every level
/// has been consumed.
fn match_in<T: Copy>(
    node: &Node<T>,
    rest: Option<&str>,
    first: bool,
    f: &mut impl FnMut(SessionId, T),
) {
    let Some(rest) = rest else {
        for &(sid, qos) in &node.subs {
            f(sid, qos);
        }
        // "a/#" also matches "a" [MQTT-4.7.1-2].
        if let Some(hash) = node.children.get("#") {
            for &(sid, qos) in &hash.subs {
                f(sid, qos);
            }
        }
        return;
    };
    let (level, next) = match rest.split_once('/') {
        Some((l, r)) => (l, Some(r)),
        None => (rest, None),
    };
    if let Some(child) = node.children.get(level) {
        match_in(child, next, false, f);
    }
    if first && level.starts_with('$') {
        return;
    }
    if let Some(child) = node.children.get("+") {
        match_in(child, next, false, f);
    }
    if let Some(hash) = node.children.get("#") {
        for &(sid, qos) in &hash.subs {
            f(sid, qos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;

    fn matches(t: &Trie<QoS>, topic: &str) -> Vec<(SessionId, QoS)> {
        let mut v = Vec::new();
        t.for_each_match(topic, |s, q| v.push((s, q)));
        v.sort();
        v
    }

    #[test]
    fn wildcards_and_literals() {
        let mut t = Trie::default();
        t.insert("a/b", 1, QoS::AtMostOnce);
        t.insert("a/+", 2, QoS::AtLeastOnce);
        t.insert("a/#", 3, QoS::ExactlyOnce);
        t.insert("#", 4, QoS::AtMostOnce);
        t.insert("+/+", 5, QoS::AtMostOnce);
        assert_eq!(matches(&t, "a/b").len(), 5);
        assert_eq!(
            matches(&t, "a"),
            vec![(3, QoS::ExactlyOnce), (4, QoS::AtMostOnce)]
        );
        assert_eq!(
            matches(&t, "a/b/c").iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(matches(&t, "a/").len(), 4, "empty level is matched by +");
    }

    #[test]
    fn dollar_topics_skip_leading_wildcards() {
        let mut t = Trie::default();
        t.insert("#", 1, QoS::AtMostOnce);
        t.insert("+/x", 2, QoS::AtMostOnce);
        t.insert("$SYS/#", 3, QoS::AtMostOnce);
        assert_eq!(
            matches(&t, "$SYS/x")
                .iter()
                .map(|x| x.0)
                .collect::<Vec<_>>(),
            vec![3]
        );
        assert_eq!(matches(&t, "$x").len(), 0);
        assert_eq!(matches(&t, "a/x").len(), 2);
    }

    #[test]
    fn overlapping_subscriptions_of_one_session_match_twice() {
        let mut t = Trie::default();
        t.insert("a/#", 1, QoS::AtMostOnce);
        t.insert("a/+", 1, QoS::AtLeastOnce);
        assert_eq!(matches(&t, "a/b").len(), 2);
    }

    #[test]
    fn replace_and_remove_prune() {
        let mut t = Trie::default();
        assert!(!t.insert("x/y/z", 1, QoS::AtMostOnce));
        assert!(t.insert("x/y/z", 1, QoS::ExactlyOnce));
        assert_eq!(t.len(), 1);
        assert_eq!(matches(&t, "x/y/z"), vec![(1, QoS::ExactlyOnce)]);
        assert!(!t.remove("x/y", 1));
        assert!(t.remove("x/y/z", 1));
        assert!(!t.remove("x/y/z", 1));
        assert!(t.root.is_empty());
        assert!(t.is_empty());
    }
}
