//! Retained messages, stored by topic level so that a wildcard subscription
//! finds its matches without scanning every retained topic.
//!
//! Owned by the router thread. A retained message with an empty payload
//! clears the topic [MQTT-3.3.1-10].

use std::collections::HashMap;
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
    children: HashMap<Box<str>, Node>,
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
        assert_eq!(topics(&r, "a/#"), vec!["a", "a/b", "a/b/c", "a/c"]);
        assert_eq!(topics(&r, "a/+"), vec!["a/b", "a/c"]);
        assert_eq!(topics(&r, "+/b"), vec!["a/b", "b/b"]);
        assert_eq!(topics(&r, "+"), vec!["a"]);
        assert_eq!(topics(&r, "$SYS/#"), vec!["$SYS/x"]);
        assert_eq!(topics(&r, "+/x"), Vec::<String>::new());
    }
}
