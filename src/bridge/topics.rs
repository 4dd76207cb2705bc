//! Topic remapping between the two brokers (Mosquitto's bridge_remap.c):
//! an outgoing message loses its local prefix and gains the remote one;
//! an incoming message the other way round. The first `topic` line whose
//! filter matches decides.

use crate::config::BridgeTopic;
use crate::topic;

/// The remote topic for a local message, or None when no outgoing `topic`
/// line of the bridge matches it.
pub fn to_remote(topics: &[BridgeTopic], local: &str) -> Option<String> {
    topics
        .iter()
        .filter(|t| t.direction.outgoing() && topic::matches(&t.local, local))
        .find_map(|t| swap_prefix(local, &t.local_prefix, &t.remote_prefix))
}

/// The local topic for a message from the remote broker, or None when no
/// incoming `topic` line matches it (the remote sent more than asked).
pub fn to_local(topics: &[BridgeTopic], remote: &str) -> Option<String> {
    topics
        .iter()
        .filter(|t| t.direction.incoming() && topic::matches(&t.remote, remote))
        .find_map(|t| swap_prefix(remote, &t.remote_prefix, &t.local_prefix))
}

/// `from` + rest becomes `to` + rest.
fn swap_prefix(t: &str, from: &str, to: &str) -> Option<String> {
    let rest = t.strip_prefix(from)?;
    let out = format!("{to}{rest}");
    // An empty result (pattern "" with empty prefixes) is refused by the
    // config; a topic must not become empty here either.
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Direction;

    fn topic(direction: Direction, pattern: &str, lp: &str, rp: &str) -> BridgeTopic {
        BridgeTopic {
            direction,
            qos: 0,
            local_prefix: lp.into(),
            remote_prefix: rp.into(),
            local: format!("{lp}{pattern}"),
            remote: format!("{rp}{pattern}"),
        }
    }

    #[test]
    fn prefixes_both_ways() {
        let t = [topic(Direction::Both, "sensors/#", "board/", "site/b1/")];
        assert_eq!(
            to_remote(&t, "board/sensors/temp").as_deref(),
            Some("site/b1/sensors/temp")
        );
        assert_eq!(
            to_local(&t, "site/b1/sensors/x").as_deref(),
            Some("board/sensors/x")
        );
        assert_eq!(to_remote(&t, "sensors/temp"), None);
    }

    #[test]
    fn direction_decides() {
        let t = [
            topic(Direction::Out, "up/#", "", "r/"),
            topic(Direction::In, "down/#", "l/", ""),
        ];
        assert_eq!(to_remote(&t, "up/1").as_deref(), Some("r/up/1"));
        assert_eq!(to_local(&t, "r/up/1"), None);
        assert_eq!(to_local(&t, "down/1").as_deref(), Some("l/down/1"));
        assert_eq!(to_remote(&t, "l/down/1"), None);
    }

    #[test]
    fn empty_pattern_maps_one_topic() {
        let t = [topic(Direction::Both, "", "local/t", "remote/t")];
        assert_eq!(to_remote(&t, "local/t").as_deref(), Some("remote/t"));
        assert_eq!(to_local(&t, "remote/t").as_deref(), Some("local/t"));
        assert_eq!(to_remote(&t, "local/t/x"), None);
    }

    #[test]
    fn first_matching_line_wins() {
        let t = [
            topic(Direction::Out, "a/#", "", "first/"),
            topic(Direction::Out, "#", "", "second/"),
        ];
        assert_eq!(to_remote(&t, "a/b").as_deref(), Some("first/a/b"));
        assert_eq!(to_remote(&t, "c").as_deref(), Some("second/c"));
    }
}
