//! Topic names and topic filters: what is valid, and what matches what
//! (Mosquitto's util_topic.c).
//!
//! A topic name is what a PUBLISH carries: at least one character, no
//! wildcard [MQTT-4.7.3-1, 3.3.2-2]. A filter is what a SUBSCRIBE carries:
//! `+` stands alone in its level, `#` stands alone in the last level
//! [MQTT-4.7.1-2, -3].

/// Topics and filters with more `/` separators than this (201 levels) are
/// refused, as Mosquitto refuses them (its `TOPIC_HIERARCHY_LIMIT`): each
/// level costs a node in the subscription trie and the retained tree.
pub const MAX_SEPARATORS: usize = 200;

/// Whether a topic or filter is deeper than Mosquitto allows
/// ([`MAX_SEPARATORS`]).
///
/// ```
/// use midge::topic::too_deep;
/// assert!(!too_deep(&["a"; 201].join("/")));
/// assert!(too_deep(&["a"; 202].join("/")));
/// ```
pub fn too_deep(t: &str) -> bool {
    t.bytes().filter(|&b| b == b'/').count() > MAX_SEPARATORS
}

/// Whether `t` may be the topic of a PUBLISH or a will.
pub fn valid_name(t: &str) -> bool {
    !t.is_empty() && !t.contains(['+', '#'])
}

/// Whether `f` may be subscribed to. A shared subscription
/// `$share/GROUP/FILTER` needs a group name without wildcards and a valid
/// filter after it [MQTT-4.8.2].
pub fn valid_filter(f: &str) -> bool {
    if f.is_empty() {
        return false;
    }
    if f.starts_with(SHARE) {
        return shared(f).is_some();
    }
    let mut levels = f.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "+" => {}
            "#" if last => {}
            l if l.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

const SHARE: &str = "$share/";

/// The group and the filter of a shared subscription `$share/GROUP/FILTER`,
/// or None when `f` is not a valid one.
///
/// ```
/// use midge::topic::shared;
/// assert_eq!(shared("$share/lights/home/+/state"), Some(("lights", "home/+/state")));
/// assert_eq!(shared("$share/lights"), None);
/// assert_eq!(shared("$share/a+b/home/#"), None);
/// assert_eq!(shared("home/#"), None);
/// ```
pub fn shared(f: &str) -> Option<(&str, &str)> {
    let rest = f.strip_prefix(SHARE)?;
    let (group, filter) = rest.split_once('/')?;
    let ok = !group.is_empty()
        && !group.contains(['+', '#'])
        && !filter.starts_with(SHARE)
        && valid_filter(filter);
    ok.then_some((group, filter))
}

/// Whether the topic name `topic` matches the filter `filter`. Both must be
/// valid. A filter starting with a wildcard does not match a topic starting
/// with `$` [MQTT-4.7.2-1].
///
/// ```
/// use midge::topic::matches;
/// assert!(matches("home/+/temperature", "home/kitchen/temperature"));
/// assert!(matches("home/#", "home"));
/// assert!(!matches("home/+", "home/kitchen/temperature"));
/// assert!(!matches("#", "$SYS/broker/uptime"));
/// assert!(matches("$SYS/#", "$SYS/broker/uptime"));
/// ```
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_filters() {
        assert_eq!(shared("$share/g/a/#"), Some(("g", "a/#")));
        assert_eq!(shared("$share/g/+"), Some(("g", "+")));
        for bad in [
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "$share/#/a",
            "$share/g/a/#/b",
        ] {
            assert!(shared(bad).is_none(), "{bad}");
            assert!(!valid_filter(bad), "{bad}");
        }
        assert!(valid_filter("$share/g/x"));
        assert!(valid_filter("$sharex/g/x"), "not a shared subscription");
    }

    #[test]
    fn names() {
        for ok in ["a", "/", "a/b", "$SYS/x", " ", "a//b"] {
            assert!(valid_name(ok), "{ok:?}");
        }
        for bad in ["", "a/+", "#", "a+b", "a/#/b"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn filters() {
        for ok in ["#", "+", "a/#", "+/+/#", "/+", "a//b", "$SYS/#", "+/"] {
            assert!(valid_filter(ok), "{ok:?}");
        }
        for bad in ["", "a/#/b", "a#", "a+", "+a/b", "#/a", "a/b#"] {
            assert!(!valid_filter(bad), "{bad:?}");
        }
    }

    #[test]
    fn matching() {
        let yes = [
            ("#", "a/b"),
            ("a/#", "a"),
            ("a/#", "a/b/c"),
            ("a/+", "a/"),
            ("+/+", "/x"),
            ("a/+/c", "a/b/c"),
            ("$SYS/#", "$SYS/broker/uptime"),
            ("a", "a"),
        ];
        for (f, t) in yes {
            assert!(matches(f, t), "{f} should match {t}");
        }
        let no = [
            ("a/+", "a"),
            ("a/+", "a/b/c"),
            ("a", "a/b"),
            ("a/b", "a"),
            ("#", "$SYS/x"),
            ("+/x", "$y/x"),
            ("A", "a"),
        ];
        for (f, t) in no {
            assert!(!matches(f, t), "{f} should not match {t}");
        }
    }
}
