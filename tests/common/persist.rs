//! Helpers of the persistence tests (`tests/persistence.rs`,
//! `tests/journal.rs`): a persistence directory the broker may write, the
//! clients that use it, and the check that a restarted broker gave back
//! the state both suites build before they stop it.

use std::fs;
use std::path::{Path, PathBuf};

use super::packets::{Connect, PUBLISH, Publish, publish, pubrel};
use super::{Broker, QUIET, RawClient, TIMEOUT, TempDir};

/// Writable by anyone: started as root, the broker runs as `nobody`.
pub fn open_to_all(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).expect("chmod");
}

/// `persistence true` in `dir`, then `extra`.
pub fn conf(dir: &TempDir, extra: &str) -> String {
    open_to_all(dir.path());
    format!(
        "persistence true\npersistence_location {}/\n{extra}",
        dir.path().display()
    )
}

/// A client with a persistent session (clean session 0).
pub fn persistent(b: &Broker, id: &str, session_present: bool) -> RawClient {
    RawClient::connect_with(b.addr(), &Connect::new(id).clean(false), session_present).named(id)
}

/// The files in `dir` whose path contains `part`, sorted.
pub fn files(dir: &Path, part: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains(part))
        .collect();
    v.sort();
    v
}

/// The retained messages a fresh subscriber to `#` gets, sorted.
pub fn retained_topics(b: &Broker) -> Vec<String> {
    let mut c = b.client("peek");
    c.subscribe(1, &[("#", 0)]);
    let mut topics: Vec<String> = c
        .read_for(QUIET)
        .into_iter()
        .filter(|p| p.kind() == PUBLISH)
        .map(|p| p.publish().topic)
        .collect();
    topics.sort();
    topics
}

/// The persistent session "online" subscribed to `o/#` (with
/// `max_inflight_messages 1`): `o/1` in flight and never acknowledged,
/// `o/2` queued behind it. Returns the subscriber, the publisher and `o/1`
/// as it came.
pub fn one_in_flight_one_queued(b: &Broker) -> (RawClient, RawClient, Publish) {
    let mut s = persistent(b, "online", false);
    s.subscribe(1, &[("o/#", 1)]);
    let mut p = b.client("pub");
    p.publish("o/1", b"in flight", 1, false, 1);
    p.publish("o/2", b"queued", 1, false, 2);
    let first = s.expect_publish_eq("o/1", b"in flight", 1, false);
    (s, p, first)
}

/// Leaves an inbound QoS 2 message whose PUBREL has not come (PUBREC
/// sent) in the persistent session "half"; returns its connection.
pub fn half_received_qos2(b: &Broker) -> RawClient {
    let mut half = persistent(b, "half", false);
    half.send(&publish("q/3", b"three", 2, false, false, 9));
    half.expect_pubrec(9);
    half
}

/// After a restart: the retained message `r/1`, the persistent session
/// "sub" (subscribed to `q/#` at QoS 2) with `q/1` at QoS 1 and `q/2` at
/// QoS 2 queued, and "half" from [`half_received_qos2`], whose repeated
/// PUBLISH gets only PUBREC again (no second copy: exactly once across the
/// restart) and whose PUBREL completes it.
pub fn check_restored(b: &Broker) {
    b.wait_for_log(
        "Restored 1 retained message(s) and 2 persistent session(s).",
        TIMEOUT,
    );
    let mut s = persistent(b, "sub", true);
    for (t, pl, q) in [("q/1", "one", 1), ("q/2", "two", 2), ("q/3", "three", 2)] {
        let m = s.expect_publish_eq(t, pl.as_bytes(), q, false);
        s.ack(&m);
    }
    let mut half = persistent(b, "half", true);
    half.send(&publish("q/3", b"three", 2, false, true, 9));
    half.expect_pubrec(9);
    half.send(&pubrel(9));
    half.expect_pubcomp(9);
    s.expect_nothing(QUIET);
    assert_eq!(retained_topics(b), vec!["r/1".to_string()]);
}
