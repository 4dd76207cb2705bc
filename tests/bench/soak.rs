//! `make soak` (SOAK_SECONDS, default 600; `make soak-short`: 60): the
//! release broker under mixed load for a while, clients joining and
//! leaving. Not a test: it reports, and exits non-zero only when a QoS 1
//! or 2 message was lost, the broker died or logged a panic.
//!
//! - 2 persistent subscribers (QoS 1 on `soak/q1/#`, QoS 2 on
//!   `soak/q2/#`) that drop their connection now and then and come back;
//! - 2 publishers, reconnecting every 200 messages, each message once at
//!   QoS 1 and once at QoS 2, with its number as payload;
//! - 4 churning clients with fresh ids: connect, subscribe, publish at
//!   QoS 0, read a little, disconnect or drop the socket.
//!
//! Every tenth of the run it prints the broker's RSS, threads and open
//! descriptors; at the end it compares them with the start and counts the
//! messages that never arrived.

#[path = "../common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::packets::{Connect, publish};
use common::*;

struct Shared {
    stop: AtomicBool,
    /// Messages published (and acknowledged) by publisher N: each was sent
    /// at QoS 1 and at QoS 2, numbered from 1.
    published: [AtomicU64; 2],
    /// Per QoS (1, 2) and publisher: which numbers arrived.
    received: Mutex<[[Vec<bool>; 2]; 3]>,
    churn_connections: AtomicU64,
    redelivered: AtomicU64,
}

impl Shared {
    /// Records payload `pN-SEQ` at `qos`; false if it had arrived before.
    fn arrived(&self, qos: u8, payload: &str) -> bool {
        let parsed = payload
            .strip_prefix('p')
            .and_then(|r| r.split_once('-'))
            .and_then(|(n, seq)| Some((n.parse::<usize>().ok()?, seq.parse::<usize>().ok()?)));
        let Some((n, seq)) = parsed.filter(|(n, _)| *n < 2) else {
            panic!("unexpected payload {payload:?}");
        };
        let mut r = self.received.lock().expect("lock");
        let v = &mut r[usize::from(qos)][n];
        if v.len() <= seq {
            v.resize(seq + 1, false);
        }
        !std::mem::replace(&mut v[seq], true)
    }

    /// Messages of `qos` published and never received.
    fn lost(&self, qos: usize) -> u64 {
        let r = self.received.lock().expect("lock");
        (0..2)
            .map(|n| {
                let got = &r[qos][n];
                (1..=self.published[n].load(Ordering::Relaxed) as usize)
                    .filter(|&seq| !got.get(seq).copied().unwrap_or(false))
                    .count() as u64
            })
            .sum()
    }
}

fn subscriber(b: std::net::SocketAddr, s: Arc<Shared>, qos: u8) {
    let id = format!("soak-sub-q{qos}");
    let filter = format!("soak/q{qos}/#");
    let c = Connect::new(&id).clean(false);
    let first = RawClient::connect_with(b, &Connect::new(&id), false);
    first.disconnect();
    let mut conn = RawClient::connect_with(b, &c, false);
    conn.subscribe(1, &[(&filter, qos)]);
    let mut round = 0u64;
    let drain_until = |conn: &mut RawClient, until: Instant, quiet_ends: bool| loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match conn.try_read(left.min(Duration::from_secs(2))) {
            ReadOutcome::Packet(p) if p.kind() == 3 => {
                let m = p.publish();
                if !s.arrived(qos, &m.payload_str()) {
                    s.redelivered.fetch_add(1, Ordering::Relaxed);
                }
                conn.ack(&m);
            }
            ReadOutcome::Packet(_) => {}
            ReadOutcome::Timeout if quiet_ends => return,
            ReadOutcome::Timeout => {}
            ReadOutcome::Closed => panic!("{id}: closed by the broker"),
        }
    };
    while !s.stop.load(Ordering::Relaxed) {
        round += 1;
        let secs = 1 + (round * 7 + u64::from(qos)) % 4;
        drain_until(&mut conn, Instant::now() + Duration::from_secs(secs), false);
        // Away for a moment: the session keeps what comes meanwhile.
        conn.drop_connection();
        thread::sleep(Duration::from_millis(200));
        conn = RawClient::connect_with(b, &c, true);
    }
    // The publishers have stopped: take everything that is left.
    drain_until(&mut conn, Instant::now() + Duration::from_secs(30), true);
    conn.disconnect();
}

fn publisher(b: std::net::SocketAddr, s: Arc<Shared>, n: usize) {
    let mut seq = 0u64;
    while !s.stop.load(Ordering::Relaxed) {
        let mut c = RawClient::connect(b, &format!("soak-pub-{n}"));
        for i in 0..200u16 {
            seq += 1;
            for qos in [1u8, 2] {
                let payload = format!("p{n}-{seq}");
                c.publish(
                    &format!("soak/q{qos}/{n}"),
                    payload.as_bytes(),
                    qos,
                    false,
                    i + 1,
                );
            }
            s.published[n].store(seq, Ordering::Relaxed);
            // A steady load, not a benchmark: about 1,000 messages a second.
            thread::sleep(Duration::from_millis(1));
        }
        c.disconnect();
    }
}

fn churn(b: std::net::SocketAddr, s: Arc<Shared>, n: usize) {
    let mut k = 0u64;
    while !s.stop.load(Ordering::Relaxed) {
        k += 1;
        let mut c = RawClient::connect(b, &format!("churn-{n}-{k}"));
        c.subscribe(1, &[("soak/churn/#", 0)]);
        for _ in 0..5 {
            c.send(&publish("soak/churn/x", b"hello", 0, false, false, 0));
        }
        let _ = c.read_for(Duration::from_millis(20));
        if k % 2 == 0 {
            c.disconnect();
        } else {
            c.drop_connection();
        }
        s.churn_connections.fetch_add(1, Ordering::Relaxed);
    }
}

fn sample(b: &Broker) -> (u64, u64, usize) {
    (
        proc_status(b.pid(), "VmRSS"),
        proc_status(b.pid(), "Threads"),
        open_fds(b.pid()),
    )
}

fn main() -> ExitCode {
    let secs: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let mut b = Broker::start("max_queued_messages 1000000\nmax_queued_bytes 0\n");
    let addr = b.addr();
    thread::sleep(Duration::from_millis(500));
    let start = sample(&b);
    println!(
        "soak: {secs} s against {addr}; start: RSS {} KiB, {} threads, {} fds",
        start.0, start.1, start.2
    );
    let s = Arc::new(Shared {
        stop: AtomicBool::new(false),
        published: Default::default(),
        received: Mutex::default(),
        churn_connections: AtomicU64::new(0),
        redelivered: AtomicU64::new(0),
    });
    let mut workers = Vec::new();
    for qos in [1, 2] {
        let s = s.clone();
        workers.push(thread::spawn(move || subscriber(addr, s, qos)));
    }
    thread::sleep(Duration::from_millis(500));
    for n in 0..2 {
        let s = s.clone();
        workers.push(thread::spawn(move || publisher(addr, s, n)));
    }
    for n in 0..4 {
        let s = s.clone();
        workers.push(thread::spawn(move || churn(addr, s, n)));
    }
    let t0 = Instant::now();
    let step = Duration::from_secs((secs / 10).max(1));
    let mut peak = start.0;
    while t0.elapsed() < Duration::from_secs(secs) {
        thread::sleep(step.min(Duration::from_secs(secs).saturating_sub(t0.elapsed())));
        let (rss, threads, fds) = sample(&b);
        peak = peak.max(rss);
        let published: u64 = s.published.iter().map(|p| p.load(Ordering::Relaxed)).sum();
        println!(
            "soak: {:4} s  RSS {rss} KiB  threads {threads}  fds {fds}  published {published} x2  churn {}",
            t0.elapsed().as_secs(),
            s.churn_connections.load(Ordering::Relaxed)
        );
    }
    s.stop.store(true, Ordering::Relaxed);
    let mut failed = false;
    for w in workers {
        if w.join().is_err() {
            failed = true;
        }
    }
    thread::sleep(Duration::from_secs(1));
    let end = sample(&b);
    let mut lost_total = 0;
    let published: u64 = s.published.iter().map(|p| p.load(Ordering::Relaxed)).sum();
    for qos in [1usize, 2] {
        let lost = s.lost(qos);
        lost_total += lost;
        println!("soak: QoS {qos}: {published} published, {lost} lost");
    }
    println!(
        "soak: {} redelivered (DUP after a dropped connection), {} churn connections",
        s.redelivered.load(Ordering::Relaxed),
        s.churn_connections.load(Ordering::Relaxed)
    );
    println!(
        "soak: end vs start: RSS {} -> {} KiB (peak {peak}), threads {} -> {}, fds {} -> {}",
        start.0, end.0, start.1, end.1, start.2, end.2
    );
    let alive = !b.has_exited();
    let panicked = b.has_log("panicked");
    if failed || lost_total > 0 || !alive || panicked {
        println!(
            "soak: FAILED (worker failed: {failed}, lost: {lost_total}, broker alive: {alive}, panic logged: {panicked})"
        );
        return ExitCode::FAILURE;
    }
    println!("soak: ok");
    ExitCode::SUCCESS
}
