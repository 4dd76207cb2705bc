//! Retained messages, stored by topic level so that a wildcard subscription
//! finds its matches without scanning every retained topic.
//!
//! Owned by the router thread. A retained message with an empty payload
//! clears the topic [MQTT-3.3.1-10].
//!
//! The store's order is the topics' order level by level (a topic before
//! the topics below it, siblings sorted by name), which does not change as
//! topics come and go: a subscription's retained messages are streamed in
//! it from a cursor, the last topic sent ([`Retained::next_after`]).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use crate::codec::Publish;

/// Who published a retained message, for `check_retain_source`.
#[derive(Debug)]
pub struct Source {
    pub client_id: String,
    pub username: Option<String>,
    /// The security scope (listener) it connected through.
    pub scope: usize,
}

/// A retained message and, when `check_retain_source` is on, its source.
#[derive(Debug)]
pub struct Stored {
    pub publish: Publish,
    pub source: Option<Arc<Source>>,
}

#[derive(Debug, Default)]
struct Node {
    children: BTreeMap<Box<str>, Node>,
    msg: Option<Stored>,
}

#[derive(Debug, Default)]
pub struct Retained {
    root: Node,
    count: usize,
}

impl Retained {
    /// Stores `p` as the retained message of its topic, or clears the topic
    /// when the payload is empty.
    pub fn set(&mut self, p: Publish, source: Option<Arc<Source>>) {
        if p.payload.is_empty() {
            let topic = p.topic.clone();
            if clear_in(&mut self.root, &topic) {
                self.count -= 1;
            }
            return;
        }
        let mut node = &mut self.root;
        for level in p.topic.split('/') {
            node = node.children.entry(Box::from(level)).or_default();
        }
        let stored = Stored { publish: p, source };
        if node.msg.replace(stored).is_none() {
            self.count += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Calls `f` for every retained message (for persistence).
    pub fn for_each(&self, mut f: impl FnMut(&Stored)) {
        all_below(&self.root, &mut f);
    }

    /// Calls `f` for each retained message whose topic matches `filter`.
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&Stored)) {
        match_in(&self.root, filter, true, &mut f);
    }

    /// The retained message of `topic`, if any.
    pub fn get(&self, topic: &str) -> Option<&Stored> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.msg.as_ref()
    }

    /// Up to `limit` of the messages matching `filter` that come after the
    /// topic `after` in the store's order (from the first with None), in
    /// that order. Fewer than `limit` means there are no more.
    pub fn next_after<'a>(
        &'a self,
        filter: &str,
        after: Option<&str>,
        limit: usize,
        out: &mut Vec<&'a Stored>,
    ) {
        let filter: Vec<&str> = filter.split('/').collect();
        let after: Option<Vec<&str>> = after.map(|a| a.split('/').collect());
        let mut walk = Walk { out, limit };
        walk.node(&self.root, &filter, after.as_deref(), true);
    }
}

/// Whether topic `a` comes before topic `b` in the store's order.
pub fn before(a: &str, b: &str) -> bool {
    a.split('/').cmp(b.split('/')) == Ordering::Less
}

/// An ordered walk for [`Retained::next_after`]: `after` is the cursor
/// relative to the node walked (None: everything below it is after it;
/// an empty slice: the node's own message was the last one sent).
struct Walk<'a, 'o> {
    out: &'o mut Vec<&'a Stored>,
    limit: usize,
}

impl<'a> Walk<'a, '_> {
    fn full(&self) -> bool {
        self.out.len() >= self.limit
    }

    fn emit(&mut self, node: &'a Node, after: Option<&[&str]>) {
        if after.is_none() {
            if let Some(m) = &node.msg {
                self.out.push(m);
            }
        }
    }

    /// The children of `node` from the cursor on, each with the cursor
    /// relative to it.
    fn children<'n>(
        node: &'a Node,
        after: Option<&'n [&'n str]>,
    ) -> impl Iterator<Item = (&'a str, &'a Node, Option<&'n [&'n str]>)> + 'n
    where
        'a: 'n,
    {
        let (from, at) = match after {
            Some([first, rest @ ..]) => (Bound::Included(*first), Some((*first, rest))),
            _ => (Bound::Unbounded, None),
        };
        node.children
            .range::<str, _>((from, Bound::Unbounded))
            .map(move |(name, child)| {
                let rel = match at {
                    Some((first, rest)) if &**name == first => Some(rest),
                    _ => None,
                };
                (&**name, child, rel)
            })
    }

    /// Everything below `node` (itself included) after the cursor.
    fn all(&mut self, node: &'a Node, after: Option<&[&str]>) {
        self.emit(node, after);
        let after = match after {
            Some([]) => None,
            a => a,
        };
        for (_, child, rel) in Self::children(node, after) {
            if self.full() {
                return;
            }
            self.all(child, rel);
        }
    }

    fn node(&mut self, node: &'a Node, filter: &[&str], after: Option<&[&str]>, first: bool) {
        if self.full() {
            return;
        }
        let Some((&level, rest)) = filter.split_first() else {
            return;
        };
        // A wildcard in the first level skips topics that start with '$'.
        let visible = |name: &str| !(first && name.starts_with('$'));
        // The node's own message was sent: all its children come after.
        let own = after;
        let after = match after {
            Some([]) => None,
            a => a,
        };
        match level {
            "#" => {
                // "a/#" matches "a" itself as well as everything below it.
                if !first {
                    self.emit(node, own);
                }
                for (name, child, rel) in Self::children(node, after) {
                    if self.full() {
                        return;
                    }
                    if visible(name) {
                        self.all(child, rel);
                    }
                }
            }
            "+" => {
                for (name, child, rel) in Self::children(node, after) {
                    if self.full() {
                        return;
                    }
                    if visible(name) {
                        self.level(child, rest, rel);
                    }
                }
            }
            literal => {
                let Some(child) = node.children.get(literal) else {
                    return;
                };
                let rel = match after {
                    None => None,
                    Some([first, more @ ..]) => match literal.cmp(*first) {
                        Ordering::Less => return,
                        Ordering::Equal => Some(more),
                        Ordering::Greater => None,
                    },
                    Some([]) => None,
                };
                self.level(child, rest, rel);
            }
        }
    }

    /// The part of the filter below a level it matched at `child`.
    fn level(&mut self, child: &'a Node, rest: &[&str], after: Option<&[&str]>) {
        if rest.is_empty() {
            self.emit(child, after);
        } else {
            self.node(child, rest, after, false);
        }
    }
}

fn clear_in(node: &mut Node, topic: &str) -> bool {
    let (level, rest) = match topic.split_once('/') {
        Some((l, r)) => (l, Some(r)),
        None => (topic, None),
    };
    let Some(child) = node.children.get_mut(level) else {
        return false;
    };
    let cleared = match rest {
        Some(rest) => clear_in(child, rest),
        None => child.msg.take().is_some(),
    };
    if child.msg.is_none() && child.children.is_empty() {
        node.children.remove(level);
    }
    cleared
}

fn all_below(node: &Node, f: &mut impl FnMut(&Stored)) {
    if let Some(m) = &node.msg {
        f(m);
    }
    for child in node.children.values() {
        all_below(child, f);
    }
}

fn match_in(node: &Node, filter: &str, first: bool, f: &mut impl FnMut(&Stored)) {
    let (level, rest) = match filter.split_once('/') {
        Some((l, r)) => (l, Some(r)),
        None => (filter, None),
    };
    // A wildcard in the first level skips topics that start with '$'.
    let visible = |name: &str| !(first && name.starts_with('$'));
    match level {
        "#" => {
            // "a/#" matches "a" itself as well as everything below it.
            if !first {
                if let Some(m) = &node.msg {
                    f(m);
                }
            }
            for (name, child) in &node.children {
                if visible(name) {
                    all_below(child, f);
                }
            }
        }
        "+" => {
            for (name, child) in &node.children {
                if visible(name) {
                    match rest {
                        Some(rest) => match_in(child, rest, false, f),
                        None => {
                            if let Some(m) = &child.msg {
                                f(m);
                            }
                        }
                    }
                }
            }
        }
        literal => {
            if let Some(child) = node.children.get(literal) {
                match rest {
                    Some(rest) => match_in(child, rest, false, f),
                    None => {
                        if let Some(m) = &child.msg {
                            f(m);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, body: &str) -> Publish {
        Publish::retained(topic, body.as_bytes())
    }

    fn topics(r: &Retained, filter: &str) -> Vec<String> {
        let mut v = Vec::new();
        r.for_each_match(filter, |s| v.push(s.publish.topic.to_string()));
        v.sort();
        v
    }

    #[test]
    fn set_replace_clear() {
        let mut r = Retained::default();
        r.set(msg("a/b", "1"), None);
        r.set(msg("a/b", "2"), None);
        assert_eq!(r.len(), 1);
        let mut got = Vec::new();
        r.for_each_match("a/b", |s| got.push(s.publish.payload.to_vec()));
        assert_eq!(got, vec![b"2".to_vec()]);
        r.set(msg("a/b", ""), None);
        assert!(r.is_empty());
        assert!(r.root.children.is_empty(), "cleared branches are pruned");
    }

    #[test]
    fn wildcard_lookups() {
        let mut r = Retained::default();
        for t in ["a", "a/b", "a/c", "a/b/c", "$SYS/x", "b/b"] {
            r.set(msg(t, "x"), None);
        }
        assert_eq!(topics(&r, "#"), vec!["a", "a/b", "a/b/c", "a/c", "b/b"]);
        assert_eq!(r.get("a/b").map(|s| &*s.publish.topic), Some("a/b"));
        assert!(r.get("a/x").is_none());
        assert_eq!(topics(&r, "a/#"), vec!["a", "a/b", "a/b/c", "a/c"]);
        assert_eq!(topics(&r, "a/+"), vec!["a/b", "a/c"]);
        assert_eq!(topics(&r, "+/b"), vec!["a/b", "b/b"]);
        assert_eq!(topics(&r, "+"), vec!["a"]);
        assert_eq!(topics(&r, "$SYS/#"), vec!["$SYS/x"]);
        assert_eq!(topics(&r, "+/x"), Vec::<String>::new());
    }

    /// The whole walk for `filter`, `limit` at a time from the cursor.
    fn streamed(r: &Retained, filter: &str, limit: usize) -> Vec<String> {
        let mut got: Vec<String> = Vec::new();
        loop {
            let mut out = Vec::new();
            r.next_after(filter, got.last().map(String::as_str), limit, &mut out);
            let n = out.len();
            got.extend(out.iter().map(|s| s.publish.topic.to_string()));
            if n < limit {
                return got;
            }
        }
    }

    #[test]
    fn ordered_walk_from_a_cursor() {
        let mut r = Retained::default();
        let all = [
            "a", "a/b", "a/b/c", "a/b/d", "a/c", "a/c/x", "b", "b/b", "b/c/x", "$SYS/x",
        ];
        for t in all {
            r.set(msg(t, "x"), None);
        }
        for filter in [
            "#", "a/#", "+/b", "+/+/x", "a/+", "a/b/c", "+", "$SYS/#", "+/c/#",
        ] {
            let mut want: Vec<String> = all
                .iter()
                .filter(|t| crate::topic::matches(filter, t))
                .map(|t| t.to_string())
                .collect();
            want.sort_by(|a, b| a.split('/').cmp(b.split('/')));
            for limit in 1..4 {
                assert_eq!(streamed(&r, filter, limit), want, "{filter} by {limit}");
            }
        }
        // A cursor on a topic cleared meanwhile still resumes after it.
        let mut out = Vec::new();
        r.set(msg("a/b/c", ""), None);
        r.next_after("#", Some("a/b/c"), 10, &mut out);
        let got: Vec<&str> = out.iter().map(|s| &*s.publish.topic).collect();
        assert_eq!(got, vec!["a/b/d", "a/c", "a/c/x", "b", "b/b", "b/c/x"]);
        assert!(before("a/b", "a/b/c") && before("a/b/c", "a/c") && !before("b", "a/z"));
    }
}
