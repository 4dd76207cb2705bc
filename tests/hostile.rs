//! Hostile traffic that is well-formed MQTT, or no MQTT at all: silent and
//! half-open connections, huge announced lengths, connection floods, slow
//! consumers, sessions from random client ids, takeover storms and names
//! built to widen ACL patterns. Each must cost the broker a bounded amount
//! of memory and threads and leave the other clients unharmed.
//!
//! Memory is the broker's resident set (VmRSS of /proc/PID/status). The
//! bounds asserted are loose (several times what was measured, see
//! docs/SECURITY.md), so that a leak or an unbounded queue fails the test
//! and allocator noise does not. Measurements are printed (`--nocapture`).

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::packets::{
    Connect, connect, pingreq, publish, remaining_length, subscribe, unsubscribe,
};
use common::*;

/// Resident memory of the broker in KiB.
fn rss(b: &Broker) -> u64 {
    proc_status(b.pid(), "VmRSS")
}

fn threads(b: &Broker) -> u64 {
    proc_status(b.pid(), "Threads")
}

/// A subscriber and a publisher that must keep working.
fn round_trip(b: &Broker, case: &str) {
    let mut sub = b.client(&format!("rt-sub-{case}"));
    sub.subscribe(1, &[("rt/t", 1)]);
    let mut publ = b.client(&format!("rt-pub-{case}"));
    publ.publish("rt/t", case.as_bytes(), 1, false, 1);
    let m = sub.expect_publish_eq("rt/t", case.as_bytes(), 1, false);
    sub.ack(&m);
}

/// Waits until the broker's thread count is back to `want` (client threads
/// end a moment after their socket closes).
fn threads_back_to(b: &Broker, want: u64, case: &str) {
    wait_until(&format!("{case}: threads back to {want}"), TIMEOUT, || {
        threads(b) <= want
    });
}

#[test]
fn a_silent_connection_and_half_a_connect_are_closed_at_connect_timeout() {
    let b = Broker::start("connect_timeout 1\n");
    let mut silent = b.raw().named("silent");
    let mut half = b.raw().named("half a CONNECT");
    let c = connect("half");
    half.send(&c[..c.len() / 2]);
    silent.expect_closed();
    half.expect_closed();
    wait_until("two timeout lines", TIMEOUT, || {
        b.count_log("sent no CONNECT in time, disconnecting.") == 2
    });
    round_trip(&b, "after-timeouts");
}

#[test]
fn an_announced_256_mb_packet_allocates_nothing_before_its_bytes() {
    // No limit: by default (2,000,000 bytes) the header alone refuses it.
    let b = Broker::start("max_packet_size 0\n");
    round_trip(&b, "warm-up");
    let before = rss(&b);
    let mut big = b.client("big");
    // PUBLISH with the largest remaining length there is, then a topic and
    // the first kilobyte of a payload that never comes.
    let mut head = vec![0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0, 3, b'a', b'/', b'b'];
    head.extend_from_slice(&[b'x'; 1024]);
    big.send(&head);
    // The rest of it is what the broker would wait for; it reads what came.
    std::thread::sleep(QUIET);
    let after = rss(&b);
    eprintln!("RSS before {before} KiB, after a 256 MB announcement {after} KiB");
    assert!(
        after < before + 1024,
        "256 MB announced, 1 KiB sent: RSS grew from {before} to {after} KiB"
    );
    // Still waiting for the rest, not closed; everyone else unaffected.
    big.expect_nothing(Duration::ZERO);
    round_trip(&b, "during-a-huge-packet");
}

#[test]
fn a_packet_above_max_packet_size_is_refused_from_its_header() {
    let b = Broker::start("max_packet_size 1000\n");
    let mut c = b.client("too-big");
    // Remaining length 1,048,576 (0x80 0x80 0x40): the header alone.
    c.send_lossy(&[0x30, 0x80, 0x80, 0x40]);
    c.expect_closed();
    b.wait_for_log(
        "Client too-big disconnected due to protocol error: packet of 1048580 bytes exceeds \
         the limit of 1000.",
        TIMEOUT,
    );
    round_trip(&b, "after-too-big");
}

#[test]
fn a_connection_flood_beyond_max_connections_is_refused_and_harms_nobody() {
    let b = Broker::start_exact("listener 0 127.0.0.1\nmax_connections 4\nallow_anonymous true\n");
    let mut sub = b.client("keep-sub");
    sub.subscribe(1, &[("flood/#", 1)]);
    let mut publ = b.client("keep-pub");
    let threads_before = threads(&b);
    // 200 attempts while two of the four slots are taken. Each refused
    // socket is closed by the broker at once; keep the accepted ones open.
    let mut kept = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        let mut c = b.raw().named(&format!("flood-{i}"));
        match c.try_read(Duration::from_millis(20)) {
            ReadOutcome::Closed => refused += 1,
            _ => kept.push(c),
        }
    }
    // A refusal slower than 20 ms (a loaded machine) shows up here.
    kept.retain_mut(|c| {
        let closed = matches!(c.try_read(Duration::from_millis(300)), ReadOutcome::Closed);
        refused += usize::from(closed);
        !closed
    });
    eprintln!("flood: {refused} refused, {} accepted", kept.len());
    assert_eq!(kept.len(), 2, "two slots were free");
    wait_until("198 refusals logged", TIMEOUT, || {
        b.count_log("denied: max_connections exceeded.") == 198
    });
    assert!(
        threads(&b) <= threads_before + 2,
        "a refused connection costs no thread"
    );
    // The existing clients go on.
    publ.publish("flood/t", b"still here", 1, false, 1);
    let m = sub.expect_publish_eq("flood/t", b"still here", 1, false);
    sub.ack(&m);
    // Freed slots are given again.
    drop(kept);
    wait_until("slots freed", TIMEOUT, || threads(&b) <= threads_before);
    b.client("after-flood").disconnect();
}

/// Publishes `batches` x `per_batch` QoS 0 messages of `size` bytes on
/// `topic` as fast as the socket takes them; after each batch, `reader`
/// reads all of it. Returns the highest RSS seen.
fn publish_while_reading(
    b: &Broker,
    publ: &mut RawClient,
    reader: &mut RawClient,
    topic: &str,
    (batches, per_batch, size): (usize, usize, usize),
) -> u64 {
    let payload = vec![b'p'; size];
    let one = publish(topic, &payload, 0, false, false, 0);
    let batch: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * per_batch)
        .collect();
    let mut peak = 0;
    for _ in 0..batches {
        publ.send(&batch);
        for _ in 0..per_batch {
            let m = reader.expect_publish();
            assert_eq!(m.payload.len(), size);
        }
        peak = peak.max(rss(b));
    }
    peak
}

#[test]
fn a_subscriber_that_never_reads_costs_bounded_memory() {
    // 200 messages of 1 KiB: the queue of one client is at most ~200 KiB.
    let b = Broker::start("max_queued_messages 200\nmax_inflight_messages 20\n");
    let mut fast = b.client("fast");
    fast.subscribe(1, &[("load/#", 0)]);
    let mut publ = b.client("publisher");
    // Warm up the allocator with the same traffic, no slow client yet.
    publish_while_reading(&b, &mut publ, &mut fast, "load/t", (20, 100, 1024));
    let before = rss(&b);
    // Two that never read, at QoS 0 and QoS 1, and shrink their receive
    // buffers so the backlog stays in the broker.
    let mut slow: Vec<RawClient> = Vec::new();
    for (id, qos) in [("slow0", 0), ("slow1", 1)] {
        let mut s = b.client(id);
        s.subscribe(1, &[("load/#", qos)]);
        slow.push(s);
    }
    // 20 MiB through the broker, 10,000 messages: 50 times the queue.
    let peak = publish_while_reading(&b, &mut publ, &mut fast, "load/t", (100, 100, 1024));
    let after = rss(&b);
    eprintln!(
        "slow subscribers: RSS before {before} KiB, peak {peak} KiB, after {after} KiB \
         (10,000 x 1 KiB published, max_queued_messages 200)"
    );
    // Two queues of 200 KiB, two write buffers of 64 KiB, and slack.
    assert!(
        peak < before + 8 * 1024,
        "RSS grew from {before} to {peak} KiB with two stalled subscribers"
    );
    fast.ping();
    for s in slow {
        s.drop_connection();
    }
}

#[test]
fn persistent_sessions_with_random_ids_are_held_by_the_queue_limits() {
    const SESSIONS: usize = 300;
    let b = Broker::start("max_queued_messages 20\n");
    round_trip(&b, "warm-up");
    let start = rss(&b);
    let ids: Vec<String> = (0..SESSIONS)
        .map(|i| {
            format!(
                "dev-{:016x}",
                (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            )
        })
        .collect();
    for id in &ids {
        let mut c = RawClient::connect_with(b.addr(), &Connect::new(id).clean(false), false);
        c.subscribe(1, &[("fleet/#", 1)]);
        c.drop_connection();
    }
    let sessions = rss(&b);
    // 100 messages of 1 KiB for each offline session; 20 are kept each.
    let mut publ = b.client("fleet-pub");
    let payload = [b'f'; 1024];
    for i in 0..100u16 {
        publ.publish("fleet/cmd", &payload, 1, false, i + 1);
    }
    publ.ping();
    let queued = rss(&b);
    eprintln!(
        "{SESSIONS} persistent sessions: RSS {start} KiB at start, {sessions} KiB with the \
         sessions, {queued} KiB with 100 messages published to each (20 queued each)"
    );
    let per_session = (queued.saturating_sub(start)) * 1024 / SESSIONS as u64;
    eprintln!("about {per_session} bytes per offline session with a full queue");
    // 100 messages x 300 sessions unbounded would be 30,000 entries; the
    // limit holds 6,000, sharing 100 payloads.
    assert!(
        queued < start + 12 * 1024,
        "RSS grew from {start} to {queued} KiB"
    );
    // The queue limit is what the sessions hold: reconnecting gets 20.
    let mut one = RawClient::connect_with(b.addr(), &Connect::new(&ids[0]).clean(false), true);
    for _ in 0..20 {
        let m = one.expect_publish();
        one.ack(&m);
    }
    one.expect_nothing(QUIET);
    drop(one);
    // Clean connects remove them all; memory is given back.
    for id in &ids {
        RawClient::connect_with(b.addr(), &Connect::new(id), false).disconnect();
    }
    let end = rss(&b);
    eprintln!("after removing them: {end} KiB");
    assert!(
        end < start + 4 * 1024,
        "RSS {start} KiB at start, {end} KiB at the end"
    );
}

/// Two clients with one client id connecting in turn `rounds` times each,
/// each taking the session over from the other; returns when both are done.
fn takeover_storm(b: &Broker, rounds: usize) {
    let addr = b.addr();
    let twin = |clean: bool| {
        std::thread::spawn(move || {
            for i in 0..rounds {
                let mut c = RawClient::open(addr);
                c.send_lossy(&Connect::new("twin").clean(clean).build());
                c.send_lossy(&publish(
                    "storm/t",
                    format!("{i}").as_bytes(),
                    0,
                    false,
                    false,
                    0,
                ));
                // The other twin may already have taken over: no reads.
                let _ = c.stream.shutdown(Shutdown::Write);
            }
        })
    };
    let (a, z) = (twin(true), twin(false));
    a.join().expect("twin a");
    z.join().expect("twin b");
}

#[test]
fn a_client_id_takeover_storm_leaks_neither_memory_nor_threads() {
    const ROUNDS: usize = 300;
    // RSS as a leak detector: glibc keeps the stacks of ended threads for
    // reuse (their touched pages stay resident) and keeps freed heap for
    // reuse too, so RSS follows the most connections ever alive at once
    // (up to 20 MiB more over 6 storms here). With the stack cache off and
    // every allocation its own mapping, freed memory goes back at once and
    // RSS is what is live: a leaked allocation costs a page.
    let b = Broker::start_launch(
        "",
        &Launch {
            env: &[(
                "GLIBC_TUNABLES",
                "glibc.pthread.stack_cache_size=0:glibc.malloc.mmap_threshold=0",
            )],
            ..Launch::default()
        },
    );
    let mut watcher = b.client("watcher");
    watcher.subscribe(1, &[("quiet/#", 0)]);
    let threads_start = threads(&b);
    round_trip(&b, "warm-up");
    threads_back_to(&b, threads_start, "warm-up");
    // Measured: flat to within 100 KiB over 6 x 600 connections. One
    // leaked allocation per connection would add 14 MiB.
    let mut seen = vec![rss(&b)];
    for i in 0..6 {
        takeover_storm(&b, ROUNDS);
        threads_back_to(&b, threads_start, &format!("takeover storm {i}"));
        seen.push(rss(&b));
    }
    eprintln!(
        "takeover storms of {} connections each: RSS {seen:?} KiB, threads {threads_start} \
         -> {}",
        2 * ROUNDS,
        threads(&b)
    );
    assert!(
        seen[6] < seen[0] + 1024,
        "RSS kept growing through the storms: {seen:?} KiB"
    );
    assert!(b.count_log("as twin") > 0, "{:?}", b.logs());
    round_trip(&b, "after-storm");
    watcher.ping();
}

#[test]
fn hostile_names_never_widen_patterns_and_failed_logins_name_the_peer() {
    let dir = TempDir::new("hostile-names");
    let acl = dir.write(
        "acl",
        "pattern readwrite dev/%c/#\npattern readwrite user/%u/#\nuser admin\ntopic read #\n",
    );
    let b = Broker::start(&format!(
        "allow_anonymous true\nacl_file {}\n",
        acl.display()
    ));
    let mut victim = b.client("victim");
    victim.subscribe(1, &[("dev/victim/#", 0), ("user/victim/#", 0)]);
    let long = "v".repeat(60_000);
    let cases: Vec<(String, Option<String>)> = vec![
        ("%c".into(), Some("%u".into())),
        ("%u".into(), Some("%c".into())),
        ("victim/..".into(), None),
        ("x".into(), Some("victim/#".into())),
        (long.clone(), Some(long.clone())),
        (format!("victim{long}"), None),
    ];
    for (id, user) in &cases {
        let mut c = Connect::new(id);
        if let Some(u) = user {
            c = c.username(u);
        }
        let mut evil = RawClient::connect_with(b.addr(), &c, false).named("evil");
        // A name that is a pattern's own placeholder or longer than any
        // topic: everything a pattern could open must stay closed.
        evil.subscribe(1, &[("#", 0), ("dev/+/#", 0), ("user/+/#", 0)]);
        evil.publish("dev/victim/cmd", b"pwn", 0, false, 0);
        evil.publish("user/victim/cmd", b"pwn", 0, false, 0);
        victim.publish("dev/victim/state", b"private", 0, false, 0);
        let m = victim.expect_publish_eq("dev/victim/state", b"private", 0, false);
        victim.ack(&m);
        evil.expect_nothing(QUIET);
    }
    victim.expect_nothing(Duration::ZERO);
    // NUL in a client id or user name is malformed [MQTT-1.5.3-2].
    for c in [Connect::new("a\0b"), Connect::new("n").username("vic\0tim")] {
        let mut nul = b.raw().named("NUL");
        nul.send_lossy(&c.build());
        nul.expect_closed();
    }
    wait_until("two lines for the NUL names", TIMEOUT, || {
        b.count_log("disconnected due to protocol error: malformed UTF-8") == 2
    });

    // A failed login names the address it came from.
    let pw = dir.write(
        "passwd",
        "admin:$6$c2FsdDEyMzRzYWx0$I7WFtbgRQB05B2AiBrcR2B28Jz6nVhAw6ZzzUpxwaXtUrdbOilNDlwVmK47jp17cVkCd9e6csCTQz60JfKmFVA==\n",
    );
    let b2 = Broker::start(&format!(
        "allow_anonymous false\npassword_file {}\n",
        pw.display()
    ));
    let mut bad = b2.raw();
    bad.send(
        &Connect::new("guesser")
            .username("admin")
            .password(b"guess")
            .build(),
    );
    bad.expect_connack(5, false);
    let local = bad.stream.local_addr().expect("local address");
    b2.wait_for_log(
        &format!("Client guesser from {local} refused: not authorised."),
        TIMEOUT,
    );
}

/// A client id, user name or topic cannot forge log lines or flood the
/// log: control characters are escaped, and a message is cut at 1,000
/// bytes with a marker. A 65,000-byte client id costs the log about a
/// kilobyte per line.
#[test]
fn names_from_the_network_cannot_forge_or_flood_log_lines() {
    let b = Broker::start("");
    let forged = "a\n1796000000: Client admin connected\r\x1b[2J";
    let mut c = b.raw();
    c.send(&Connect::new(forged).build());
    c.expect_connack(0, false);
    c.disconnect();
    b.wait_for_log("\\n1796000000: Client admin connected\\r\\x1b[2J", TIMEOUT);
    assert!(
        !b.logs()
            .iter()
            .any(|l| l.starts_with("1796000000: Client admin")),
        "a forged line was written: {:?}",
        b.logs()
    );
    let long = "L".repeat(65_000);
    let from = b.log_len();
    let mut c = b.raw();
    c.send(&Connect::new(&long).build());
    c.expect_connack(0, false);
    c.disconnect();
    let line = b.wait_for_log_from(from, "LLLL", TIMEOUT);
    assert!(line.len() < 1_100, "{} bytes", line.len());
    assert!(line.contains("bytes more)"), "{line}");
    round_trip(&b, "after hostile names");
}

#[test]
fn a_pingreq_flood_from_a_client_that_never_reads_is_left_unread() {
    let b = Broker::start("");
    round_trip(&b, "warm-up");
    let before = rss(&b);
    let mut flooder = b.client("flooder");
    // 64 MiB of PINGREQ in 64 KiB writes, never reading a PINGRESP. The
    // broker stops reading once its answers fill the output bound; then
    // the write times out.
    let chunk = pingreq().repeat(32 * 1024);
    flooder
        .stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .expect("write timeout");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sent = 0usize;
    let mut peak = before;
    while sent < 64 << 20 && Instant::now() < deadline {
        match flooder.stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
        peak = peak.max(rss(&b));
    }
    std::thread::sleep(QUIET);
    peak = peak.max(rss(&b));
    eprintln!(
        "PINGREQ flood: {} KiB accepted, RSS before {before} KiB, peak {peak} KiB",
        sent / 1024
    );
    // The write high-water mark, a read burst, and slack for the allocator.
    assert!(
        peak < before + 4 * 1024,
        "a PINGREQ flood grew RSS from {before} to {peak} KiB"
    );
    round_trip(&b, "during-a-pingreq-flood");
    flooder.drop_connection();
}

/// A topic of `levels` levels.
fn deep_topic(levels: usize) -> String {
    vec!["d"; levels].join("/")
}

/// The deepest topics and filters the broker accepts, through every walk
/// over topic levels (the router's stack is sized for them): retained
/// set, matched by all-wildcard filters, streamed, cleared; subscriptions
/// added and removed.
#[test]
fn the_deepest_topics_and_filters_go_through_every_walk() {
    let b = Broker::start("");
    let topic = deep_topic(201);
    let plus = vec!["+"; 201].join("/");
    let hash = format!("{}/#", vec!["+"; 200].join("/"));
    let mut p = b.client("deepest-pub");
    p.publish(&topic, b"kept", 1, true, 1);
    let mut s = b.client("deepest-sub");
    s.subscribe(1, &[(&plus, 0), (&hash, 0), (&topic, 0), ("#", 0)]);
    // One retained copy per subscription, one live copy per client
    // [MQTT-3.3.5-1].
    for _ in 0..4 {
        s.expect_publish_eq(&topic, b"kept", 0, true);
    }
    p.publish(&topic, b"live", 0, false, 0);
    s.expect_publish_eq(&topic, b"live", 0, false);
    s.send(&unsubscribe(2, &[&plus, &hash, &topic]));
    s.expect_unsuback(2);
    p.publish(&topic, b"", 1, true, 2);
    s.expect_publish_eq(&topic, b"", 0, false);
    round_trip(&b, "after-the-deepest");

    // Saved and restored.
    let dir = TempDir::new("deepest");
    // The broker runs as nobody.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let conf = format!(
        "persistence true\npersistence_location {}/\n",
        dir.path().display()
    );
    let mut b = Broker::start(&conf);
    b.client("deepest-keep")
        .publish(&topic, b"saved", 1, true, 1);
    assert!(b.stop(libc::SIGTERM).success());
    let b = Broker::start(&conf);
    let mut s = b.client("deepest-back");
    s.subscribe(1, &[(&plus, 0)]);
    s.expect_publish_eq(&topic, b"saved", 0, true);
}

#[test]
fn a_publish_deeper_than_201_levels_closes_the_connection() {
    let b = Broker::start("");
    let mut sub = b.client("deep-sub");
    sub.subscribe(1, &[("#", 0)]);
    // 201 levels (200 separators) is as deep as Mosquitto goes.
    let mut publ = b.client("deep-pub");
    let ok = deep_topic(201);
    publ.publish(&ok, b"deep enough", 0, false, 0);
    sub.expect_publish_eq(&ok, b"deep enough", 0, false);
    let mut deep = b.client("deeper-pub");
    deep.send_lossy(&publish(&deep_topic(202), b"x", 0, true, false, 0));
    deep.expect_closed();
    b.wait_for_log(
        "Client deeper-pub disconnected due to protocol error",
        TIMEOUT,
    );
    // Neither delivered nor retained.
    sub.expect_nothing(QUIET);
    let mut late = b.client("deep-late");
    late.subscribe(1, &[("#", 0)]);
    late.expect_nothing(QUIET);
    round_trip(&b, "after-deep-publish");
}

#[test]
fn a_subscribe_filter_deeper_than_201_levels_is_refused_and_the_others_granted() {
    let b = Broker::start("");
    let mut c = b.client("deep-filters");
    let deep = format!("{}/#", deep_topic(201));
    c.send(&subscribe(7, &[("ok/1", 1), (&deep, 1), ("ok/2", 0)]));
    c.expect_suback(7, &[1, 0x80, 0]);
    b.wait_for_log(
        "Client deep-filters subscribed to 1 filter(s) deeper than",
        TIMEOUT,
    );
    // The granted ones work.
    let mut publ = b.client("deep-filters-pub");
    publ.publish("ok/2", b"granted", 0, false, 0);
    c.expect_publish_eq("ok/2", b"granted", 0, false);
    round_trip(&b, "after-deep-filter");
}

#[test]
fn half_sent_connects_announcing_200_mb_are_held_within_the_connect_buffer() {
    let b = Broker::start("");
    round_trip(&b, "warm-up");
    let before = rss(&b);
    // 100 connections, each with 1 MiB of a CONNECT that announces 200 MB.
    let announced = 200_000_000;
    let mut head = vec![0x10];
    head.extend(remaining_length(announced));
    head.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0xFF, 0xFF]);
    let mut body = head.clone();
    body.resize(1 << 20, b'x');
    let mut crowd = Vec::new();
    let mut peak = before;
    for i in 0..100 {
        let mut c = b.raw().named(&format!("half-{i}"));
        c.send_lossy(&body);
        crowd.push(c);
        if i % 10 == 9 {
            peak = peak.max(rss(&b));
        }
    }
    std::thread::sleep(QUIET);
    peak = peak.max(rss(&b));
    eprintln!("100 half-sent 200 MB CONNECTs: RSS before {before} KiB, peak {peak} KiB");
    // midge: max_connect_buffer (16 MiB) and 100 threads' stacks.
    assert!(
        peak < before + 32 * 1024,
        "half-sent CONNECTs grew RSS from {before} to {peak} KiB"
    );
    round_trip(&b, "during-half-sent-connects");
    drop(crowd);
}

#[test]
fn two_thousand_connections_without_connect_hold_few_threads_and_let_a_client_in() {
    let b = Broker::start("");
    round_trip(&b, "warm-up");
    let (rss_before, threads_before) = (rss(&b), threads(&b));
    let mut crowd = Vec::new();
    let (mut peak_rss, mut peak_threads) = (rss_before, threads_before);
    for i in 0..2000 {
        crowd.push(b.raw().named(&format!("silent-{i}")));
        if i % 100 == 99 {
            peak_rss = peak_rss.max(rss(&b));
            peak_threads = peak_threads.max(threads(&b));
        }
    }
    round_trip(&b, "behind-2000-silent");
    peak_rss = peak_rss.max(rss(&b));
    peak_threads = peak_threads.max(threads(&b));
    eprintln!(
        "2,000 silent connections: RSS {rss_before} -> peak {peak_rss} KiB, \
         threads {threads_before} -> peak {peak_threads}"
    );
    // midge: max_connecting (256) threads at most, a few closing beside.
    assert!(
        peak_threads < threads_before + 300,
        "2,000 silent connections took {peak_threads} threads"
    );
    assert!(
        peak_rss < rss_before + 16 * 1024,
        "2,000 silent connections grew RSS from {rss_before} to {peak_rss} KiB"
    );
    drop(crowd);
}

/// The thread ids of the broker's threads.
fn thread_ids(b: &Broker) -> std::collections::BTreeSet<u32> {
    std::fs::read_dir(format!("/proc/{}/task", b.pid()))
        .expect("/proc/PID/task")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// A client thread whose connection ended serves the next connection, and
/// leaves once none came for a while (2 s, src/client/pool.rs): clients
/// that come and go one after another reuse a thread or two instead of
/// one each, and hold none afterwards.
#[test]
fn ended_client_threads_serve_the_next_connections_then_leave() {
    let b = Broker::start("");
    // The start-up probe's thread leaves first.
    std::thread::sleep(Duration::from_secs(3));
    let own = threads(&b);
    let mut seen = thread_ids(&b);
    let mut new = 0;
    for i in 0..20 {
        b.client(&format!("comer-{i}")).disconnect();
        wait_until("the disconnect line", TIMEOUT, || {
            b.count_log(&format!("Client comer-{i} disconnected")) == 1
        });
        let now = thread_ids(&b);
        new += now.difference(&seen).count();
        seen.extend(now);
    }
    eprintln!("20 clients one after another: {new} threads started");
    assert!(new < 10, "{new} threads started for 20 clients in a row");
    threads_back_to(&b, own, "after the last client");
    round_trip(&b, "after");
}
