//! Switching from Mosquitto: Debian's mosquitto writes its persistence
//! file, midge starts on it with the same `persistence_file` and gives
//! back its retained messages and sessions, and Mosquitto, started again
//! on its untouched file, still has everything. A Mosquitto file midge
//! cannot read, or a damaged one, is never renamed.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::persist::*;
use common::tools::{mosquitto_pub, mosquitto_sub};
use common::*;

const FILE: &str = "persistence_file mosquitto.db\n";
/// midge runs as Mosquitto's user, as on a board where it takes over
/// `/var/lib/mosquitto` (Mosquitto's file is readable by its user only).
const AS_MOSQUITTO: &str = "persistence_file mosquitto.db\nuser mosquitto\n";

/// The retained messages: three Home Assistant discovery configs and one
/// MQTT 5 message with properties.
const RETAINED: [&str; 4] = [
    "homeassistant/light/lamp/config|{\"name\":\"lamp\"}|1||",
    "homeassistant/sensor/humidity/config|{\"name\":\"humidity\"}|1||",
    "homeassistant/sensor/temp/config|{\"name\":\"temp\"}|1||",
    "v5/retained|with properties|1|application/json|origin:board",
];

/// Everything a fresh MQTT 5 subscriber to `#` gets, as
/// `topic|payload|retain|content type|user properties`, sorted; the
/// message expiry interval (`%E`) is checked and left out.
fn retained_lines(port: u16) -> Vec<String> {
    let n = RETAINED.len().to_string();
    let mut sub = mosquitto_sub(
        port,
        &words(&format!("-V 5 -t # -C {n} -W 10 -F %t|%p|%r|%C|%P|%E")),
    );
    sub.wait_exit(TIMEOUT);
    let mut lines: Vec<String> = sub
        .stdout
        .all()
        .into_iter()
        .map(|l| {
            let (rest, expiry) = l.rsplit_once('|').expect("format");
            if rest.starts_with("v5/") {
                let left: u32 = expiry.parse().expect("message expiry interval");
                assert!((3_000..=3_600).contains(&left), "expiry {left}: {l}");
            } else {
                assert_eq!(expiry, "", "{l}");
            }
            rest.to_string()
        })
        .collect();
    lines.sort();
    lines
}

/// `s` split at spaces, for the client tools' arguments.
fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

/// The MQTT 5 persistent session of `mosquitto_sub`, subscribed to `p/#`.
const SESS5: &str = "-V 5 -i sess5 -c -x 86400 -q 1 -t p/#";

/// The MQTT 5 session "sess5" resumes and gets its two queued messages, as
/// `topic|payload|qos|content type|user properties`.
fn sess5_queue(port: u16) -> Vec<String> {
    let mut sub = mosquitto_sub(
        port,
        &words(&format!("{SESS5} -C 2 -W 10 -F %t|%p|%q|%C|%P")),
    );
    sub.wait_exit(TIMEOUT);
    sub.stdout.all()
}

const SESS5_QUEUE: [&str; 2] = ["p/1|plain|1||", "p/2|props|1|text/plain|k:v"];

/// The MQTT 3.1.1 session "sess" resumes (session present) and gets
/// `q/1` and `q/2`, then nothing more.
fn check_sess(b: &Broker) {
    let mut s = persistent(b, "sess", true);
    for (t, pl) in [("q/1", "one"), ("q/2", "two")] {
        let m = s.expect_publish_eq(t, pl.as_bytes(), 1, false);
        s.ack(&m);
    }
    s.expect_nothing(QUIET);
    s.disconnect();
}

fn unchanged(path: &Path, bytes: &[u8]) {
    assert_eq!(
        fs::read(path).expect("Mosquitto's file"),
        bytes,
        "Mosquitto's file changed"
    );
}

#[test]
fn mosquitto_then_midge_then_mosquitto_keep_retained_messages_and_sessions() {
    let dir = TempDir::new("mosqdb");
    let db = dir.path().join("mosquitto.db");

    // Mosquitto holds the state and saves it at SIGTERM.
    let mut m = Broker::mosquitto(&conf(&dir, FILE));
    let mut s = persistent(&m, "sess", false);
    s.subscribe(1, &[("q/#", 1)]);
    s.disconnect();
    let mut s5 = mosquitto_sub(m.port, &words(&format!("{SESS5} -E")));
    s5.wait_exit(TIMEOUT);
    for line in RETAINED {
        let f: Vec<&str> = line.split('|').collect();
        let mut args = vec!["-V", "5", "-r", "-q", "1", "-t", f[0], "-m", f[1]];
        if !f[3].is_empty() {
            let (k, v) = f[4].split_once(':').expect("user property");
            args.extend([
                "-D",
                "publish",
                "content-type",
                f[3],
                "-D",
                "publish",
                "user-property",
                k,
                v,
                "-D",
                "publish",
                "message-expiry-interval",
                "3600",
            ]);
        }
        mosquitto_pub(m.port, &args);
    }
    for (t, pl) in [("q/1", "one"), ("q/2", "two")] {
        mosquitto_pub(m.port, &["-q", "1", "-t", t, "-m", pl]);
    }
    mosquitto_pub(m.port, &["-V", "5", "-q", "1", "-t", "p/1", "-m", "plain"]);
    mosquitto_pub(
        m.port,
        &words(
            "-V 5 -q 1 -t p/2 -m props -D publish content-type text/plain \
             -D publish user-property k v",
        ),
    );
    assert_eq!(retained_lines(m.port), RETAINED);
    m.stop(libc::SIGTERM);
    let original = fs::read(&db).expect("Mosquitto saved no file");

    // midge restores all of it and writes its own file beside it.
    let mut b = Broker::start(&conf(&dir, AS_MOSQUITTO));
    b.wait_for_log("(db format version 6)", TIMEOUT);
    b.wait_for_log(
        "Restored 4 retained message(s) and 2 persistent session(s).",
        TIMEOUT,
    );
    b.wait_for_log("is left untouched, for a switch back", TIMEOUT);
    assert!(!b.has_log("damaged"), "{:?}", b.logs());
    assert_eq!(retained_lines(b.port), RETAINED);
    check_sess(&b);
    assert_eq!(sess5_queue(b.port), SESS5_QUEUE);
    b.stop(libc::SIGTERM);
    unchanged(&db, &original);
    assert!(dir.path().join("mosquitto.db.midge").exists());
    assert!(files(dir.path(), "corrupt").is_empty());

    // A restart reads midge's own file: the queues were delivered.
    let mut b = Broker::start(&conf(&dir, AS_MOSQUITTO));
    b.wait_for_log("reading midge's own state from", TIMEOUT);
    b.wait_for_log(
        "Restored 4 retained message(s) and 2 persistent session(s).",
        TIMEOUT,
    );
    assert_eq!(retained_lines(b.port), RETAINED);
    let mut s = persistent(&b, "sess", true);
    s.expect_nothing(QUIET);
    s.disconnect();
    b.stop(libc::SIGTERM);
    unchanged(&db, &original);

    // Back to Mosquitto: its file is as it left it.
    let mut m = Broker::mosquitto(&conf(&dir, FILE));
    assert_eq!(retained_lines(m.port), RETAINED);
    check_sess(&m);
    assert_eq!(sess5_queue(m.port), SESS5_QUEUE);
    // A newer save makes the next switch read Mosquitto's file again.
    std::thread::sleep(Duration::from_millis(20));
    mosquitto_pub(m.port, &["-r", "-t", "after/switch", "-m", "back"]);
    m.stop(libc::SIGTERM);
    let b = Broker::start(&conf(&dir, AS_MOSQUITTO));
    b.wait_for_log("(db format version 6)", TIMEOUT);
    b.wait_for_log(
        "Restored 5 retained message(s) and 2 persistent session(s).",
        TIMEOUT,
    );
}

#[test]
fn a_mosquitto_file_midge_cannot_read_is_never_renamed() {
    let saved = include_bytes!("fixtures/mosquitto-2.0.11.db");
    let mut future = saved.to_vec();
    future[22] = 7; // a db format version midge does not know
    // Cut inside the chunk after the first two messages.
    let cut = saved[..200].to_vec();
    for (bytes, log) in [
        (
            future,
            "db format version 7: a db format version midge does not know",
        ),
        (
            cut,
            "Restored 0 retained message(s) and 0 persistent session(s).",
        ),
    ] {
        let dir = TempDir::new("mosqdb");
        let db = dir.path().join("mosquitto.db");
        fs::write(&db, &bytes).expect("write");
        let mut b = Broker::start(&conf(&dir, FILE));
        b.wait_for_log(log, TIMEOUT);
        let mut p = b.client("pub");
        p.publish("new/retained", b"1", 1, true, 1);
        b.stop(libc::SIGTERM);
        assert_eq!(fs::read(&db).expect("file kept"), bytes);
        assert!(files(dir.path(), "corrupt").is_empty());
        let b = Broker::start(&conf(&dir, FILE));
        b.wait_for_log("reading midge's own state from", TIMEOUT);
        b.wait_for_log("Restored 1 retained message(s)", TIMEOUT);
    }
}
