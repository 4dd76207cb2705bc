//! Persistence (`persistence true`): what a restart gives back after a
//! clean stop, a SIGUSR1 or an autosave followed by `kill -9`, and start-up
//! with a damaged file. Each test keeps the persistence directory in its
//! own temp dir and starts a second broker on it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::broker::run_midge_output;
use common::packets::{Connect, PUBLISH};
use common::persist::*;
use common::*;

fn db(dir: &TempDir) -> PathBuf {
    dir.path().join("midge.db")
}

/// Files in `dir` whose name starts with `midge.db.corrupt-`.
fn set_aside(dir: &Path) -> Vec<PathBuf> {
    files(dir, "midge.db.corrupt-")
}

fn save_now(b: &Broker) {
    let from = b.log_len();
    b.signal(libc::SIGUSR1);
    b.wait_for_log_from(from, "Saved in-memory database", TIMEOUT);
}

#[test]
fn sigterm_then_restart_restores_retained_sessions_and_queued_messages() {
    let dir = TempDir::new("persist");
    let mut b = Broker::start(&conf(&dir, ""));
    let mut s = persistent(&b, "sub", false);
    s.subscribe(1, &[("q/#", 2)]);
    s.disconnect();
    b.wait_for_log("Client sub disconnected.", TIMEOUT);
    let mut p = b.client("pub");
    p.publish("r/1", b"retained", 1, true, 1);
    p.publish("q/1", b"one", 1, false, 2);
    p.publish("q/2", b"two", 2, false, 3);
    // An inbound QoS 2 message whose PUBREL has not come: PUBREC sent.
    half_received_qos2(&b).drop_connection();
    b.wait_for_log("Client half closed its connection.", TIMEOUT);
    b.stop(libc::SIGTERM);
    assert!(db(&dir).exists(), "no file after SIGTERM");

    check_restored(&Broker::start(&conf(&dir, "")));
}

#[test]
fn unacknowledged_messages_of_an_offline_session_survive_a_restart() {
    let dir = TempDir::new("persist");
    let mut b = Broker::start(&conf(&dir, ""));
    let mut s = persistent(&b, "flaky", false);
    s.subscribe(1, &[("f/#", 1)]);
    let mut p = b.client("pub");
    p.publish("f/1", b"unacked", 1, false, 1);
    let first = s.expect_publish_eq("f/1", b"unacked", 1, false);
    s.drop_connection();
    b.wait_for_log("Client flaky closed its connection.", TIMEOUT);
    b.stop(libc::SIGTERM);

    let b = Broker::start(&conf(&dir, ""));
    let mut s = persistent(&b, "flaky", true);
    let again = s.expect_publish_eq("f/1", b"unacked", 1, false);
    assert!(again.dup, "a redelivery carries DUP: {again:?}");
    assert_eq!(again.pkid, first.pkid, "same packet id after the restart");
    s.ack(&again);
    s.expect_nothing(QUIET);
}

#[test]
fn a_connected_client_is_saved_with_its_state_on_sigterm() {
    let dir = TempDir::new("persist");
    let mut b = Broker::start(&conf(&dir, ""));
    let mut s = persistent(&b, "online", false);
    s.subscribe(1, &[("o/#", 1)]);
    let mut p = b.client("pub");
    p.publish("o/1", b"in flight", 1, false, 1);
    s.expect_publish_eq("o/1", b"in flight", 1, false);
    // Still connected, PUBACK never sent, when the broker stops.
    b.stop(libc::SIGTERM);

    let b = Broker::start(&conf(&dir, ""));
    let mut s = persistent(&b, "online", true);
    let m = s.expect_publish_eq("o/1", b"in flight", 1, false);
    assert!(m.dup);
    s.ack(&m);
}

/// An autosave holds a connected persistent client's in-flight and queued
/// messages too (its client thread sends a copy), as Mosquitto's does:
/// kill -9 after it loses only what came later.
#[test]
fn an_autosave_holds_a_connected_clients_queued_and_in_flight_messages() {
    let dir = TempDir::new("persist");
    let text = conf(&dir, "autosave_interval 1\nmax_inflight_messages 1\n");
    let mut b = Broker::start(&text);
    let (_s, mut p, first) = one_in_flight_one_queued(&b);
    // Connected, never acknowledging: an autosave (every second while a
    // persistent client is connected) begun after this point holds both;
    // the second save from here on has surely begun after it.
    for _ in 0..2 {
        let from = b.log_len();
        b.wait_for_log_from(from, "Saved in-memory database", TIMEOUT);
    }
    p.publish("o/3", b"after the save", 1, false, 3);
    b.stop(libc::SIGKILL);

    let b = Broker::start(&conf(
        &dir,
        "max_inflight_messages 1
",
    ));
    let mut s = persistent(&b, "online", true);
    let m = s.expect_publish_eq("o/1", b"in flight", 1, false);
    assert!(m.dup, "a redelivery carries DUP: {m:?}");
    assert_eq!(m.pkid, first.pkid, "same packet id after the restart");
    s.ack(&m);
    let m = s.expect_publish_eq("o/2", b"queued", 1, false);
    s.ack(&m);
    s.expect_nothing(QUIET);
}

#[test]
fn sigusr1_saves_and_kill_9_keeps_what_was_saved() {
    let dir = TempDir::new("persist");
    let mut b = Broker::start(&conf(&dir, "autosave_interval 0\n"));
    let mut p = b.client("pub");
    p.publish("saved", b"1", 1, true, 1);
    save_now(&b);
    p.publish("not/saved", b"2", 1, true, 2);
    b.stop(libc::SIGKILL);

    let b = Broker::start(&conf(&dir, ""));
    assert_eq!(retained_topics(&b), vec!["saved".to_string()]);
}

#[test]
fn autosave_interval_saves_changes_without_a_signal() {
    let dir = TempDir::new("persist");
    let mut b = Broker::start(&conf(&dir, "autosave_interval 1\n"));
    let mut p = b.client("pub");
    p.publish("auto", b"1", 1, true, 1);
    b.wait_for_log("Saved in-memory database", TIMEOUT);
    b.stop(libc::SIGKILL);
    let b = Broker::start(&conf(&dir, ""));
    assert_eq!(retained_topics(&b), vec!["auto".to_string()]);
}

#[test]
fn autosave_on_changes_saves_after_that_many_changes() {
    let dir = TempDir::new("persist");
    let b = Broker::start(&conf(
        &dir,
        "autosave_interval 3\nautosave_on_changes true\n",
    ));
    let mut p = b.client("pub");
    p.publish("c/1", b"1", 1, true, 1);
    p.publish("c/2", b"2", 1, true, 2);
    p.ping();
    assert!(
        !b.has_log("Saved in-memory database"),
        "saved after 2 changes"
    );
    p.publish("c/3", b"3", 1, true, 3);
    b.wait_for_log("Saved in-memory database", TIMEOUT);
}

/// Saves two retained messages, stops, damages the file with `damage`,
/// restarts; returns the new broker and the file's bytes before the
/// restart.
fn restart_with_damage(dir: &TempDir, damage: impl FnOnce(&mut Vec<u8>)) -> (Broker, Vec<u8>) {
    let mut b = Broker::start(&conf(dir, ""));
    let mut p = b.client("pub");
    p.publish("d/1", b"first", 1, true, 1);
    p.publish("d/2", b"second", 1, true, 2);
    b.stop(libc::SIGTERM);
    let mut bytes = fs::read(db(dir)).expect("read the saved file");
    damage(&mut bytes);
    fs::write(db(dir), &bytes).expect("write the damaged file");
    (Broker::start(&conf(dir, "")), bytes)
}

#[test]
fn a_truncated_file_gives_back_its_intact_records_and_is_moved_aside() {
    let dir = TempDir::new("persist");
    // Cut in the middle of the second record: the end record is 17 bytes.
    let (b, damaged) = restart_with_damage(&dir, |b| b.truncate(b.len() - 20));
    b.wait_for_log("is damaged (truncated record at byte", TIMEOUT);
    b.wait_for_log("moved the damaged file to", TIMEOUT);
    assert_eq!(retained_topics(&b).len(), 1, "the intact first record");
    let aside = set_aside(dir.path());
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        fs::read(&aside[0]).expect("read"),
        damaged,
        "kept as it was"
    );
}

#[test]
fn zeros_random_bytes_and_other_versions_do_not_stop_the_start() {
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage); 3] = [
        ("zeros", |b| {
            let n = b.len();
            b[20..n].fill(0);
        }),
        ("random", |b| {
            let mut x: u32 = 0x1234_5678;
            for byte in b.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *byte = x as u8;
            }
        }),
        ("version", |b| b[9] = 99),
    ];
    for (what, damage) in cases {
        let dir = TempDir::new("persist");
        let (mut b, _) = restart_with_damage(&dir, damage);
        b.wait_for_log("is damaged (", TIMEOUT);
        assert!(retained_topics(&b).is_empty(), "{what}");
        assert_eq!(set_aside(dir.path()).len(), 1, "{what}");
        // And the broker saves a good file again.
        save_now(&b);
        b.stop(libc::SIGTERM);
        let b = Broker::start(&conf(&dir, ""));
        b.wait_for_log("Restored 0 retained message(s)", TIMEOUT);
        assert!(!b.has_log("is damaged"), "{what}");
    }
}

#[test]
fn a_failing_save_is_logged_once_and_the_broker_keeps_serving() {
    let dir = TempDir::new("persist");
    let loc = dir.path().join("state");
    fs::create_dir(&loc).expect("mkdir");
    open_to_all(&loc);
    let conf = format!(
        "persistence true\npersistence_location {}/\nautosave_interval 0\n",
        loc.display()
    );
    let b = Broker::start(&conf);
    // The file is looked for after the listeners open: wait for that.
    b.wait_for_log("No persistence file", TIMEOUT);
    // The directory disappears and a file takes its name: every save fails.
    fs::remove_dir(&loc).expect("rmdir");
    fs::write(&loc, b"").expect("write");
    for _ in 0..3 {
        let from = b.log_len();
        b.signal(libc::SIGUSR1);
        b.wait_for_log_from(from, "Saving in-memory database (SIGUSR1)", TIMEOUT);
    }
    let mut p = b.client("still-serving");
    p.publish("x", b"y", 1, false, 1);
    p.ping();
    wait_until("the save error", TIMEOUT, || {
        b.has_log("unable to save the in-memory database")
    });
    // Three failures, one line; it says what is at stake.
    wait_until("three saves tried", TIMEOUT, || {
        b.count_log("Saving in-memory database (SIGUSR1)") == 3
    });
    p.ping();
    assert_eq!(b.count_log("unable to save the in-memory database"), 1);
    assert!(b.has_log("not durable"));
    // Fixed: the next save works and says so.
    fs::remove_file(&loc).expect("rm");
    fs::create_dir(&loc).expect("mkdir");
    open_to_all(&loc);
    save_now(&b);
    b.wait_for_log("works again", TIMEOUT);
}

/// `kill -9` while a save may be under way: the file is always one whole
/// snapshot, the older or the newer, never a damaged mix.
#[test]
fn kill_9_during_a_save_leaves_the_old_or_the_new_snapshot() {
    const N: usize = 5;
    const M: usize = 5;
    let dir = TempDir::new("persist");
    let extra = "autosave_interval 0\n";
    let mut expected_before: Option<Vec<String>> = None;
    for round in 0..6u64 {
        let mut b = Broker::start(&conf(&dir, extra));
        assert!(!b.has_log("is damaged"), "round {round}");
        let mut s = persistent(&b, "crash-sub", round > 0);
        let got: Vec<String> = s
            .read_for(QUIET)
            .into_iter()
            .filter(|p| p.kind() == PUBLISH)
            .map(|p| {
                let m = p.publish();
                s.ack(&m);
                m.payload_str()
            })
            .collect();
        if let Some(first) = expected_before.take() {
            // Either snapshot: the first N of the last round, or all N + M.
            let all: Vec<String> = (0..N + M).map(|j| format!("{}-{j}", round - 1)).collect();
            assert!(
                got == first || got == all,
                "round {round}: got {got:?}, expected {first:?} or {all:?}"
            );
        }
        if round == 0 {
            s.subscribe(1, &[("crash/#", 2)]);
        }
        s.ping();
        s.disconnect();
        b.wait_for_log("Client crash-sub disconnected.", TIMEOUT);
        let mut p = b.client("crash-pub");
        let mut id = 1;
        let mut send = |p: &mut RawClient, j: usize| {
            p.publish(
                "crash/x",
                format!("{round}-{j}").as_bytes(),
                1 + (j % 2) as u8,
                false,
                id,
            );
            id += 1;
        };
        for j in 0..N {
            send(&mut p, j);
        }
        save_now(&b);
        for j in N..N + M {
            send(&mut p, j);
        }
        b.signal(libc::SIGUSR1);
        // Somewhere in or around the second save.
        std::thread::sleep(std::time::Duration::from_micros(round * 700));
        b.stop(libc::SIGKILL);
        expected_before = Some((0..N).map(|j| format!("{round}-{j}")).collect());
    }
}

#[test]
fn check_mode_reads_the_persistence_folder_and_file() {
    let dir = TempDir::new("persist-check");
    let check = |text: &str| {
        let c = dir.write("check.conf", text);
        run_midge_output(&["-t", "-c", c.to_str().expect("utf-8")])
    };
    // A folder that does not exist: named, and no "configuration ok".
    let missing = dir.path().join("nowhere");
    let (st, out, err) = check(&format!(
        "persistence true\npersistence_location {}/\n",
        missing.display()
    ));
    assert!(!st.success() && out.is_empty(), "{out}");
    assert!(
        err.contains(&format!(
            "persistence_location {}: no such directory",
            missing.display()
        )),
        "{err}"
    );
    // A damaged file: reported, the configuration is still good (the
    // broker restores what is intact), and the file is left alone.
    let (b, damaged) = restart_with_damage(&dir, |b| b.truncate(b.len() - 20));
    drop(b);
    fs::write(db(&dir), &damaged).expect("write the damaged file");
    let (st, out, err) = check(&conf(&dir, ""));
    assert!(st.success(), "{err}");
    assert_eq!(out.trim(), "configuration ok");
    assert!(err.contains("is damaged"), "{err}");
    assert_eq!(fs::read(db(&dir)).expect("read"), damaged, "left as it was");
}

/// A session saved under a listener's own security scope
/// (`per_listener_settings true`), restored by a configuration that no
/// longer has that scope. It is not left unchecked: it gets nothing until
/// its client connects again and takes the rules of the listener it comes
/// in on. A missing scope means no access.
#[test]
fn a_session_whose_scope_is_gone_receives_nothing() {
    let dir = TempDir::new("persist-scope");
    let mut b = Broker::start_exact(&conf(
        &dir,
        "per_listener_settings true\nlistener 0 127.0.0.1\nallow_anonymous true\n\
         listener 0 127.0.0.1\nallow_anonymous true\n",
    ));
    wait_until("two listeners", TIMEOUT, || b.ipv4_ports().len() >= 2);
    let second = std::net::SocketAddr::from(([127, 0, 0, 1], b.ipv4_ports()[1]));
    let mut alice = RawClient::connect_with(second, &Connect::new("alice").clean(false), false);
    alice.subscribe(1, &[("secret/#", 1), ("public/#", 1)]);
    alice.disconnect();
    b.stop(libc::SIGTERM);

    // One scope now (index 0): its ACL lets anonymous clients write
    // secret/# but read only public/#.
    let acl = dir.write("acl", "topic write secret/#\ntopic readwrite public/#\n");
    let b = Broker::start_exact(&conf(
        &dir,
        &format!(
            "listener 0 127.0.0.1\nallow_anonymous true\nacl_file {}\n",
            acl.display()
        ),
    ));
    b.wait_for_log(
        "the saved session of client alice belongs to security scope 1",
        TIMEOUT,
    );
    let mut publisher = b.client("publisher");
    publisher.publish("secret/1", b"not for alice", 1, false, 1);
    publisher.publish("public/1", b"while away", 1, false, 2);
    let mut alice = persistent(&b, "alice", true);
    alice.expect_nothing(QUIET);
    // Connected again, alice has the rules of her listener now.
    publisher.publish("secret/2", b"not for alice", 1, false, 3);
    publisher.publish("public/2", b"now", 1, false, 4);
    alice.expect_publish_eq("public/2", b"now", 1, false);
    alice.expect_nothing(QUIET);
}

/// The listener accepts only once the saved state is loaded: while the
/// persistence file cannot be read to its end (a FIFO nobody writes yet),
/// the port is bound and refuses connections; once the state is there,
/// the first client finds it.
#[test]
fn the_port_accepts_connections_only_once_the_state_is_loaded() {
    use std::net::TcpStream;
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new("persist-ready");
    let port = free_port();
    let text = conf(&dir, &format!("listener {port} 127.0.0.1\n"));
    let mut b = Broker::start(&text);
    b.client("pub").publish("ready/1", b"loaded", 1, true, 1);
    b.stop(libc::SIGTERM);
    let saved = fs::read(db(&dir)).expect("read the file");
    fs::remove_file(db(&dir)).expect("remove");
    let fifo = std::ffi::CString::new(db(&dir).as_os_str().as_bytes()).expect("path");
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0, "mkfifo");

    let path = db(&dir);
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // The broker opens the file to read it and waits for us: the port
        // must refuse then. We write the file once, then wait for the port.
        let deadline = std::time::Instant::now() + TIMEOUT;
        let mut f = loop {
            let open = fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path);
            match open {
                Ok(f) => break f,
                // ENXIO: no reader yet.
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("the broker never opened the FIFO: {e}"),
            }
        };
        let refused_while_loading = TcpStream::connect(("127.0.0.1", port)).is_err();
        f.write_all(&saved).expect("write the FIFO");
        drop(f);
        while std::time::Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return refused_while_loading;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("the broker read the FIFO but never accepted");
    });
    let b = Broker::start(&text);
    assert!(
        feeder.join().expect("feeder"),
        "a connection got in before the state was loaded"
    );
    assert_eq!(retained_topics(&b), vec!["ready/1".to_string()]);
}

/// Builds 20,000 retained messages and 100 persistent sessions with 10
/// subscriptions each, then returns the broker's resident memory (KiB).
fn build_state(b: &Broker) -> u64 {
    let mut p = b.client("pub");
    for chunk in 0..20u16 {
        let mut burst = Vec::new();
        for i in 0..1000u32 {
            let topic = format!("home/{chunk}/device{i}/state");
            burst.extend(common::packets::publish(
                &topic,
                &[b'v'; 64],
                0,
                true,
                false,
                0,
            ));
        }
        p.send(&burst);
        // A QoS 1 message after them: the router has handled the burst.
        p.publish("barrier", b"", 1, false, chunk + 1);
    }
    for s in 0..100 {
        let mut c = persistent(b, &format!("session{s}"), false);
        let filters: Vec<String> = (0..10).map(|f| format!("home/{f}/+/cmd{s}")).collect();
        let subs: Vec<(&str, u8)> = filters.iter().map(|f| (f.as_str(), 1)).collect();
        c.subscribe(1, &subs);
        c.disconnect();
    }
    b.client("probe").disconnect();
    proc_status(b.pid(), "VmRSS")
}

/// After a restart the restored state costs no more than 1.2x what it
/// cost built by clients (the decoded file and its records are freed).
#[test]
fn a_restored_state_costs_about_what_it_cost_live() {
    for (what, extra) in [("snapshot", ""), ("journal", "persistence_journal true\n")] {
        let dir = TempDir::new("persist-rss");
        let text = conf(&dir, &format!("autosave_interval 0\n{extra}"));
        let mut b = Broker::start(&text);
        let live = build_state(&b);
        b.stop(libc::SIGTERM);
        let b = Broker::start(&text);
        let mut c = b.client("probe");
        c.subscribe(1, &[("home/19/device999/state", 0)]);
        c.expect_publish_eq("home/19/device999/state", &[b'v'; 64], 0, true);
        let restored = proc_status(b.pid(), "VmRSS");
        eprintln!("{what}: {live} KiB built live, {restored} KiB restored");
        assert!(
            restored * 10 <= live * 12,
            "{what}: {restored} KiB after the restore, {live} KiB built live"
        );
    }
}
