//! The journal (`persistence_journal true`): every change a client got an
//! acknowledgement for survives `kill -9`, a damaged journal tail does not
//! stop the start, and a crash test kills the broker at random moments
//! under QoS 1 and 2 traffic.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::packets::{Connect, PUBLISH, PUBREL, connect, publish, pubrel};
use common::persist::{
    self, check_restored, files, half_received_qos2, one_in_flight_one_queued, persistent,
    retained_topics,
};
use common::*;

/// Snapshot persistence with the journal on, no autosave.
fn conf(dir: &TempDir, extra: &str) -> String {
    persist::conf(
        dir,
        &format!("persistence_journal true\nautosave_interval 0\n{extra}"),
    )
}

#[test]
fn kill_9_keeps_every_acknowledged_change() {
    let dir = TempDir::new("journal");
    let mut b = Broker::start(&conf(&dir, ""));
    // A persistent subscriber with two subscriptions, one dropped again.
    let mut s = persistent(&b, "sub", false);
    s.subscribe(1, &[("q/#", 2), ("x/#", 1)]);
    s.send(&common::packets::unsubscribe(2, &["x/#"]));
    s.expect_unsuback(2);
    s.disconnect();
    // A persistent session that a clean start then discards.
    persistent(&b, "gone", false).disconnect();
    b.client("gone").disconnect();
    let mut p = b.client("pub");
    p.publish("r/1", b"retained", 1, true, 1);
    p.publish("r/2", b"cleared", 1, true, 2);
    p.publish("r/2", b"", 1, true, 3);
    p.publish("q/1", b"one", 1, false, 4);
    p.publish("q/2", b"two", 2, false, 5);
    p.publish("x/1", b"unsubscribed", 1, false, 6);
    // An inbound QoS 2 message whose PUBREL has not come: PUBREC sent.
    let _half = half_received_qos2(&b);
    b.stop(libc::SIGKILL);

    let b = Broker::start(&conf(&dir, ""));
    check_restored(&b);
    // "gone" was discarded: it comes back without a session.
    RawClient::connect_with(b.addr(), &Connect::new("gone").clean(false), false);
}

#[test]
fn a_connected_clients_in_flight_and_queued_messages_survive_a_snapshot_and_kill_9() {
    let dir = TempDir::new("journal");
    let mut b = Broker::start(&conf(&dir, "max_inflight_messages 1\n"));
    let (_s, mut p, first) = one_in_flight_one_queued(&b);
    // A snapshot while the client is connected, never acknowledging.
    let from = b.log_len();
    b.signal(libc::SIGUSR1);
    b.wait_for_log_from(from, "Saved in-memory database", TIMEOUT);
    p.publish("o/3", b"after the snapshot", 1, false, 3);
    b.stop(libc::SIGKILL);

    let b = Broker::start(&conf(&dir, "max_inflight_messages 1\n"));
    let mut s = persistent(&b, "online", true);
    let m = s.expect_publish_eq("o/1", b"in flight", 1, false);
    assert!(m.dup, "a redelivery carries DUP: {m:?}");
    assert_eq!(m.pkid, first.pkid, "same packet id after the restart");
    s.ack(&m);
    for (t, pl) in [("o/2", "queued"), ("o/3", "after the snapshot")] {
        let m = s.expect_publish_eq(t, pl.as_bytes(), 1, false);
        s.ack(&m);
    }
    s.expect_nothing(QUIET);
}

#[test]
fn completed_deliveries_are_not_repeated_after_kill_9() {
    let dir = TempDir::new("journal");
    let mut b = Broker::start(&conf(&dir, ""));
    let mut s = persistent(&b, "sub", false);
    s.subscribe(1, &[("d/#", 2)]);
    let mut p = b.client("pub");
    p.publish("d/1", b"qos1", 1, false, 1);
    p.publish("d/2", b"qos2", 2, false, 2);
    for (t, pl, q) in [("d/1", "qos1", 1), ("d/2", "qos2", 2)] {
        let m = s.expect_publish_eq(t, pl.as_bytes(), q, false);
        s.ack(&m);
    }
    // A SUBACK of a persistent session leaves once everything journaled
    // before it is on disk, the acknowledgements above included.
    s.subscribe(3, &[("other", 0)]);
    b.stop(libc::SIGKILL);

    let b = Broker::start(&conf(&dir, ""));
    let mut s = persistent(&b, "sub", true);
    s.expect_nothing(QUIET);
}

#[test]
fn a_damaged_journal_tail_is_set_aside_and_its_intact_records_restored() {
    for (what, damage) in [
        (
            "cut",
            (|b: &mut Vec<u8>| b.truncate(b.len() - 3)) as fn(&mut Vec<u8>),
        ),
        ("zeros", |b| {
            let n = b.len();
            b[n - 10..].fill(0)
        }),
    ] {
        let dir = TempDir::new("journal");
        let mut b = Broker::start(&conf(&dir, ""));
        let mut p = b.client("pub");
        p.publish("t/1", b"first", 1, true, 1);
        p.publish("t/2", b"second", 1, true, 2);
        b.stop(libc::SIGKILL);
        let journals = files(dir.path(), ".journal.");
        assert_eq!(journals.len(), 1, "{what}: {journals:?}");
        let mut bytes = fs::read(&journals[0]).expect("read journal");
        damage(&mut bytes);
        fs::write(&journals[0], &bytes).expect("write journal");

        let b = Broker::start(&conf(&dir, ""));
        b.wait_for_log("is damaged (", TIMEOUT);
        b.wait_for_log("moved the damaged file to", TIMEOUT);
        assert_eq!(retained_topics(&b), vec!["t/1".to_string()], "{what}");
        let aside = files(dir.path(), ".corrupt-");
        assert_eq!(aside.len(), 1, "{what}: {aside:?}");
        assert_eq!(
            fs::read(&aside[0]).expect("read"),
            bytes,
            "{what}: kept as it was"
        );
    }
}

#[test]
fn switching_the_journal_off_keeps_its_state_once() {
    let dir = TempDir::new("journal");
    let mut b = Broker::start(&conf(&dir, ""));
    b.client("pub").publish("kept", b"1", 1, true, 1);
    b.stop(libc::SIGKILL);
    let compat = conf(&dir, "").replace("persistence_journal true\n", "");
    let mut b = Broker::start(&compat);
    assert_eq!(retained_topics(&b), vec!["kept".to_string()]);
    assert!(
        files(dir.path(), ".journal.").is_empty(),
        "folded into the snapshot"
    );
    b.client("pub").publish("kept", b"", 1, true, 1);
    b.stop(libc::SIGTERM);
    let b = Broker::start(&compat);
    assert!(retained_topics(&b).is_empty(), "not replayed a second time");
}

// --- crash test -----------------------------------------------------------

/// xorshift32: the crash test's moments, from a seed it prints.
struct Rng(u32);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0 % n
    }
}

/// Publishes `prefix-N` at `qos` until the connection fails; returns the
/// payloads whose PUBACK (QoS 1) or PUBCOMP (QoS 2) came back.
fn publish_until_killed(
    addr: std::net::SocketAddr,
    qos: u8,
    prefix: &str,
    stop: &AtomicBool,
) -> Vec<String> {
    let mut acked = Vec::new();
    let Ok(mut sock) = TcpStream::connect(addr) else {
        return acked;
    };
    let _ = sock.set_read_timeout(Some(TIMEOUT));
    let mut ack = [0u8; 4];
    // Sends `bytes` and reads the 4-byte answer into `ack`.
    let step = |sock: &mut TcpStream, ack: &mut [u8; 4], bytes: &[u8]| -> bool {
        sock.write_all(bytes).is_ok() && sock.read_exact(ack).is_ok()
    };
    if !step(&mut sock, &mut ack, &connect(&format!("{prefix}-pub"))) {
        return acked;
    }
    for n in 0u32.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let payload = format!("{prefix}-{n}");
        let id = (n % 60000 + 1) as u16;
        if !step(
            &mut sock,
            &mut ack,
            &publish("c/t", payload.as_bytes(), qos, false, false, id),
        ) {
            break;
        }
        if qos == 2 && (ack[0] >> 4 != 5 || !step(&mut sock, &mut ack, &pubrel(id))) {
            break;
        }
        acked.push(payload);
    }
    acked
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_message() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.subsec_nanos() | 1);
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let dir = TempDir::new("journal-crash");
    // A short commit interval: many commits between the kills.
    let cfg = conf(
        &dir,
        "max_queued_messages 0\npersistence_journal_commit_interval 5\n",
    );
    {
        let b = Broker::start(&cfg);
        let mut s = persistent(&b, "sink", false);
        s.subscribe(1, &[("c/#", 2)]);
        s.disconnect();
    }
    let acked: Arc<Mutex<Vec<(u8, String)>>> = Arc::default();
    let started = Instant::now();
    for round in 0..20 {
        if started.elapsed() > scaled(Duration::from_secs(20)) {
            break;
        }
        let mut b = Broker::start(&cfg);
        let stop = Arc::new(AtomicBool::new(false));
        std::thread::scope(|scope| {
            for qos in [1u8, 2] {
                let (addr, stop, acked) = (b.addr(), stop.clone(), acked.clone());
                scope.spawn(move || {
                    let got = publish_until_killed(addr, qos, &format!("r{round}q{qos}"), &stop);
                    let mut all = acked.lock().unwrap_or_else(|p| p.into_inner());
                    all.extend(got.into_iter().map(|p| (qos, p)));
                });
            }
            // Scaled: under qemu the publishers take longer to get going.
            std::thread::sleep(scaled(Duration::from_millis(u64::from(
                20 + rng.below(150),
            ))));
            if rng.below(4) == 0 {
                // Sometimes a compaction is under way when the kill comes.
                b.signal(libc::SIGUSR1);
                std::thread::sleep(Duration::from_millis(u64::from(rng.below(20))));
            }
            b.stop(libc::SIGKILL);
            stop.store(true, Ordering::Relaxed);
        });
    }
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(
        acked.len() > 20,
        "too few messages to test anything: {}",
        acked.len()
    );

    let b = Broker::start(&cfg);
    let mut s = persistent(&b, "sink", true);
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    loop {
        let p = match s.try_read(QUIET) {
            ReadOutcome::Packet(p) => p,
            ReadOutcome::Timeout => break,
            ReadOutcome::Closed => panic!("sink: connection closed"),
        };
        if p.kind() == PUBREL {
            continue;
        }
        assert_eq!(p.kind(), PUBLISH, "{}", p.describe());
        let m = p.publish();
        *seen
            .entry(String::from_utf8_lossy(&m.payload).into_owned())
            .or_default() += 1;
        s.ack(&m);
    }
    for (qos, payload) in &acked {
        let n = seen.get(payload).copied().unwrap_or(0);
        assert!(
            n >= 1,
            "acknowledged QoS {qos} message {payload} lost (seed {seed})"
        );
    }
    for (payload, n) in &seen {
        if payload.contains("q2-") {
            assert_eq!(
                *n, 1,
                "QoS 2 message {payload} delivered {n} times (seed {seed})"
            );
        }
    }
    eprintln!(
        "crash test: {} acknowledged, {} delivered",
        acked.len(),
        seen.len()
    );
}

/// Unmounts a test's small file system when the test ends.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A full disk: the journal's writes fail, one error line says what is no
/// longer durable, and the broker keeps serving every client.
#[test]
fn a_full_disk_is_logged_once_and_the_broker_keeps_serving() {
    let dir = TempDir::new("journal-full");
    let small = dir.path().join("small");
    fs::create_dir(&small).expect("mkdir");
    // 160 KiB of room, writable by the broker's user (`nobody`).
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=160k,mode=0777", "tmpfs"])
        .arg(&small)
        .status()
        .expect("mount");
    assert!(
        mounted.success(),
        "this test mounts a small tmpfs (as root)"
    );
    let _unmount = Mounted(small.clone());
    let b = Broker::start(&format!(
        "persistence true\npersistence_journal true\nautosave_interval 0\n\
         persistence_location {}/\n",
        small.display()
    ));
    let mut reader = b.client("reader");
    reader.subscribe(1, &[("big/#", 1)]);
    let mut filler = b.client("filler");
    // Eight retained messages of 32 KiB do not fit in 160 KiB: each is
    // still acknowledged and delivered.
    let payload = vec![b'x'; 32 * 1024];
    for i in 0..8u16 {
        filler.publish(&format!("big/{i}"), &payload, 1, true, i + 1);
        let m = reader.expect_publish();
        assert_eq!(m.topic, format!("big/{i}"));
        if let Some(id) = m.pkid {
            reader.send(&common::packets::puback(id));
        }
    }
    wait_until("the journal error", TIMEOUT, || {
        b.has_log("unable to write the journal")
    });
    assert_eq!(b.count_log("unable to write the journal"), 1);
    assert!(b.has_log("not durable"));
    // Still serving: a new client connects, publishes and is answered.
    let mut late = b.client("late");
    late.publish("big/late", b"small", 1, false, 1);
    late.ping();
    assert_eq!(reader.expect_publish().topic, "big/late");
}

/// The numbers of the `Journal: N record(s), M fsync(s), ...` line the
/// broker logs when it stops.
fn journal_counts(b: &Broker) -> (u64, u64) {
    let logs = b.logs();
    let line = logs
        .iter()
        .find_map(|l| l.split("Journal: ").nth(1))
        .unwrap_or_else(|| panic!("no Journal: line in\n{}", logs.join("\n")));
    let mut n = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse::<u64>().expect("a number"));
    (n.next().expect("records"), n.next().expect("fsyncs"))
}

/// Evenly paced QoS 1 messages within one commit interval share one
/// fsync, and every acknowledged one survives kill -9; QoS 0 retained
/// messages are not journaled, yet a snapshot holds them.
#[test]
fn a_commit_interval_gathers_paced_messages_and_qos_0_costs_the_journal_nothing() {
    let dir = TempDir::new("journal-commit");
    let extra = "persistence_journal_commit_interval 5000\n";
    let mut b = Broker::start(&conf(&dir, extra));
    let mut p = b.client("pub");
    for i in 1..=20u16 {
        p.send(&publish(&format!("c/{i}"), b"kept", 1, true, false, i));
        p.send(&publish(&format!("z/{i}"), b"qos0", 0, true, false, 0));
        // Paced, as a sensor publishes.
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 1..=20u16 {
        p.expect_puback(i);
    }
    b.stop(libc::SIGTERM);
    let (records, fsyncs) = journal_counts(&b);
    assert_eq!(records, 20, "only the QoS 1 retained messages are records");
    // A compaction at start and at stop (3 fsyncs each), and the commit:
    // the 20 records came within one interval (one commit; two if the
    // interval began during the first ones).
    assert!(fsyncs <= 6 + 2, "{fsyncs} fsyncs for 20 paced records");

    // The snapshot at the stop holds the QoS 0 ones too.
    let mut b = Broker::start(&conf(&dir, extra));
    let topics = retained_topics(&b);
    assert_eq!(topics.len(), 40, "{topics:?}");
    // Acknowledged means durable with the interval as without it.
    let mut p = b.client("pub");
    p.publish("c/after", b"acknowledged", 1, true, 1);
    b.stop(libc::SIGKILL);
    let b = Broker::start(&conf(&dir, extra));
    assert!(retained_topics(&b).contains(&"c/after".to_string()));
}
