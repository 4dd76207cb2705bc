//! What persistence costs the storage, midge beside Mosquitto:
//! `make bench-wear` (or `cargo bench --bench wear -- [--quick]`).
//!
//! Two cases, each paced evenly as real devices publish:
//! - `offline`: QoS 1 messages of 100 B at 200 msg/s to an offline
//!   persistent subscriber, which then comes back and takes them all;
//! - `retained`: 1,000 retained topics each updated once a second (1,000
//!   msg/s), QoS 1, 100 B.
//!
//! For each: bytes written per acknowledged message (`write_bytes` of
//! /proc/PID/io, ext4's own journal and the card's amplification come on
//! top) and per hour at that rate, fsyncs per message, the time from each
//! PUBLISH to its PUBACK, and the messages lost when the broker is killed
//! with SIGKILL right after the last PUBACK and started again. Every fsync
//! can be made slower (5 ms and 20 ms, an SD card's latency) by the
//! LD_PRELOAD shim tests/bench/slowsync.c, built here with cc; the shim also
//! counts the fsyncs. Last, the throughput a publisher with 20 messages in
//! flight reaches with the journal at each latency.
#![allow(dead_code)]

mod broker;
mod durable;
mod mqtt;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use broker::{Broker, Kind, Persistence, Settings};
use durable::{SUBSCRIBER, write_bytes};
use mqtt::Framer;

const MIDGE: &str = env!("CARGO_BIN_EXE_midge");
const PAYLOAD: usize = 100;
const TOPICS: usize = 1000;

fn main() -> ExitCode {
    broker::main_quick(run)
}

/// One broker set-up of the table.
struct Mode {
    name: &'static str,
    kind: Kind,
    settings: Settings,
    /// Worth running with slow fsyncs (only the journal fsyncs as it runs).
    fsyncs: bool,
}

fn modes() -> Vec<Mode> {
    let s = |persistence, journal_commit_ms| Settings {
        persistence,
        journal_commit_ms,
        ..Settings::default()
    };
    vec![
        Mode {
            name: "midge journal, commit interval 0 (before)",
            kind: Kind::Midge,
            settings: s(Persistence::Journal, Some(0)),
            fsyncs: true,
        },
        Mode {
            name: "midge journal, commit interval 200 ms (default)",
            kind: Kind::Midge,
            settings: s(Persistence::Journal, None),
            fsyncs: true,
        },
        Mode {
            name: "midge snapshot",
            kind: Kind::Midge,
            settings: s(Persistence::Snapshot, None),
            fsyncs: false,
        },
        Mode {
            name: "Mosquitto persistence true",
            kind: Kind::Mosquitto,
            settings: s(Persistence::Snapshot, None),
            fsyncs: false,
        },
    ]
}

/// What one run measured.
struct Wear {
    acked: usize,
    /// Written while the messages were published and acknowledged.
    bytes: u64,
    /// Written while the subscriber took them (offline case).
    delivery_bytes: Option<u64>,
    fsyncs: u64,
    mean_ack_ms: f64,
    max_ack_ms: f64,
    lost: usize,
}

fn run(quick: bool) -> io::Result<()> {
    let shim = build_shim()?;
    let count = PathBuf::from(format!("/dev/shm/midge-wear-{}", std::process::id()));
    let (offline_n, retained_secs, window_n) = if quick {
        (2_000, 10, 1_000)
    } else {
        (10_000, 60, 4_000)
    };
    let midge = Path::new(MIDGE);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| case | fsync latency | broker | B per acked msg | + B per msg delivered | MiB per hour | \
         fsyncs per msg | PUBACK after (mean / max ms) | lost to kill -9 |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    let mut windows = String::new();
    for latency_ms in [0u64, 5, 20] {
        for m in modes() {
            if latency_ms > 0 && !m.fsyncs {
                continue;
            }
            set_shim(&shim, &count, latency_ms)?;
            for (case, rate) in [("offline", 200.0), ("retained", 1000.0)] {
                eprintln!("wear: {case}, {} ms, {}", latency_ms, m.name);
                let w = if case == "offline" {
                    offline(m.kind, midge, m.settings, offline_n, &count)?
                } else {
                    retained(m.kind, midge, m.settings, retained_secs, &count)?
                };
                let per = w.bytes as f64 / w.acked.max(1) as f64;
                let delivered = w.delivery_bytes.map(|d| d as f64 / w.acked.max(1) as f64);
                let _ = writeln!(
                    out,
                    "| {case} ({rate:.0} msg/s, {} msgs) | {latency_ms} ms | {} | {per:.0} | {} | {:.1} | {:.3} | {:.1} / {:.1} | {} of {} |",
                    w.acked,
                    m.name,
                    delivered.map_or("-".into(), |d| format!("{d:.0}")),
                    (per + delivered.unwrap_or(0.0)) * rate * 3600.0 / 1048576.0,
                    w.fsyncs as f64 / w.acked.max(1) as f64,
                    w.mean_ack_ms,
                    w.max_ack_ms,
                    w.lost,
                    if case == "offline" { w.acked } else { TOPICS },
                );
            }
            if m.kind == Kind::Midge && m.fsyncs {
                let d = durable::run(m.kind, midge, m.settings, window_n, PAYLOAD)?;
                let _ = writeln!(
                    windows,
                    "| {latency_ms} ms | {} | {:.0} |",
                    m.name, d.msgs_per_sec
                );
            }
        }
    }
    let _ = std::fs::remove_file(&count);
    let _ = writeln!(
        out,
        "\nQoS 1, 100 B, a publisher with 20 in flight, journal on:\n\n\
         | fsync latency | broker | msgs/s acknowledged |\n|---|---|---|\n{windows}"
    );
    print!("{out}");
    let report = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-wear.md");
    if std::fs::write(&report, &out).is_ok() {
        eprintln!("bench: report written to {}", report.display());
    }
    Ok(())
}

/// Compiles tests/bench/slowsync.c into target/.
fn build_shim() -> io::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let so = root.join("target/slowsync.so");
    let st = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&so)
        .arg(root.join("tests/bench/slowsync.c"))
        .arg("-ldl")
        .status()?;
    if !st.success() {
        return Err(io::Error::other(
            "cc could not build tests/bench/slowsync.c",
        ));
    }
    Ok(so)
}

/// The brokers started from now on load the shim with this latency.
fn set_shim(so: &Path, count: &Path, latency_ms: u64) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(count, [0u8; 8])?;
    // Brokers drop privileges and must still count.
    std::fs::set_permissions(count, std::fs::Permissions::from_mode(0o666))?;
    // SAFETY: the benchmark is one thread; only children read these.
    unsafe {
        std::env::set_var("LD_PRELOAD", so);
        std::env::set_var("SLOWSYNC_US", (latency_ms * 1000).to_string());
        std::env::set_var("SLOWSYNC_COUNT", count);
    }
    Ok(())
}

fn fsyncs(count: &Path) -> u64 {
    std::fs::read(count)
        .ok()
        .and_then(|b| Some(u64::from_ne_bytes(b.get(..8)?.try_into().ok()?)))
        .unwrap_or(0)
}

/// A persistent session (clean session 0) subscribes to `d/#` and goes
/// away; [`durable::collect`] brings it back.
fn subscriber(port: u16) -> io::Result<()> {
    let mut out = Vec::new();
    mqtt::connect(&mut out, SUBSCRIBER, 0);
    out[9] = 0; // connect flags: clean session 0
    mqtt::subscribe(&mut out, 1, "d/#", 1);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(&out)?;
    let mut fr = Framer::new(4096);
    mqtt::expect(&mut s, &mut fr, &[mqtt::CONNACK, mqtt::SUBACK])?;
    s.write_all(&[0xe0, 0])
}

/// Publishes `n` QoS 1 messages at `rate` per second, evenly, each to
/// `topic(i)` with `payload(i)`; returns when all are acknowledged, with the
/// mean and longest time to the PUBACK (ms).
fn paced(
    port: u16,
    n: usize,
    rate: f64,
    retain: bool,
    topic: impl Fn(usize) -> String,
    payload: impl Fn(usize) -> Vec<u8>,
) -> io::Result<(f64, f64)> {
    let (mut p, mut fr) = mqtt::client(port, "wear-pub", None, 64 * 1024)?;
    p.set_read_timeout(Some(Duration::from_millis(1)))?;
    let step = Duration::from_secs_f64(1.0 / rate);
    let t0 = Instant::now();
    let deadline = t0 + step * n as u32 + Duration::from_secs(60);
    let (mut sent, mut acked) = (0usize, 0usize);
    let mut times: VecDeque<Instant> = VecDeque::new();
    let (mut sum, mut max) = (0.0f64, 0.0f64);
    let mut buf = Vec::with_capacity(4096);
    while acked < n {
        let now = Instant::now();
        if now > deadline {
            return Err(io::Error::other("PUBACKs did not come"));
        }
        buf.clear();
        while sent < n && t0 + step * sent as u32 <= now {
            let id = (sent % 65000 + 1) as u16;
            mqtt::publish(&mut buf, &topic(sent), 1, retain, id, &payload(sent));
            times.push_back(now);
            sent += 1;
        }
        if !buf.is_empty() {
            p.write_all(&buf)?;
        }
        match fr.fill(&mut p) {
            Ok(0) => return Err(io::Error::other("broker closed the connection")),
            Ok(_) => {}
            Err(e) if mqtt::is_timeout(&e) => continue,
            Err(e) => return Err(e),
        }
        fr.drain(|first, _| {
            if first & 0xf0 == mqtt::PUBACK {
                acked += 1;
                if let Some(t) = times.pop_front() {
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    sum += ms;
                    max = max.max(ms);
                }
            }
            true
        });
    }
    let _ = p.write_all(&[0xe0, 0]);
    Ok((sum / n as f64, max))
}

fn offline(kind: Kind, midge: &Path, s: Settings, n: usize, count: &Path) -> io::Result<Wear> {
    let b = Broker::start(kind, midge, s)?;
    subscriber(b.port)?;
    let (bytes0, f0) = (write_bytes(b.proc.pid()), fsyncs(count));
    let (mean, max) = paced(
        b.port,
        n,
        200.0,
        false,
        |_| "d/t".into(),
        |_| vec![b'x'; PAYLOAD],
    )?;
    let (bytes1, f1) = (write_bytes(b.proc.pid()), fsyncs(count));
    let b = b.crash_restart(kind, midge, s)?;
    // The snapshot a start writes (once per restart) is not the delivery's.
    std::thread::sleep(Duration::from_secs(2));
    let (bytes2, f2) = (write_bytes(b.proc.pid()), fsyncs(count));
    let got = durable::collect(&b, n)?;
    // Its last acknowledgements reach the journal.
    std::thread::sleep(Duration::from_millis(500));
    let (bytes3, f3) = (write_bytes(b.proc.pid()), fsyncs(count));
    Ok(Wear {
        acked: n,
        bytes: bytes1 - bytes0,
        delivery_bytes: Some(bytes3 - bytes2),
        fsyncs: (f1 - f0) + (f3 - f2),
        mean_ack_ms: mean,
        max_ack_ms: max,
        lost: n - got.min(n),
    })
}

fn retained(kind: Kind, midge: &Path, s: Settings, secs: usize, count: &Path) -> io::Result<Wear> {
    let b = Broker::start(kind, midge, s)?;
    let n = secs * TOPICS;
    let value = |i: usize| {
        let mut v = format!("{i:010}").into_bytes();
        v.resize(PAYLOAD, b'x');
        v
    };
    let (bytes0, f0) = (write_bytes(b.proc.pid()), fsyncs(count));
    let (mean, max) = paced(
        b.port,
        n,
        TOPICS as f64,
        true,
        |i| format!("r/{}", i % TOPICS),
        value,
    )?;
    let (bytes1, f1) = (write_bytes(b.proc.pid()), fsyncs(count));
    let b = b.crash_restart(kind, midge, s)?;
    // The last value of each topic is what must come back.
    let (mut c, mut fr) = mqtt::client(b.port, "wear-peek", Some(("r/#", 0)), 256 * 1024)?;
    c.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut back = 0;
    loop {
        // What came with the SUBACK is buffered already.
        fr.drain(|first, body| {
            if first & 0xf0 != mqtt::PUBLISH {
                return true;
            }
            if let Some(m) = mqtt::parse_publish(first, body) {
                let tlen = body
                    .len()
                    .min(2 + u16::from_be_bytes([body[0], body[1]]) as usize);
                let t: usize = std::str::from_utf8(&body[2..tlen])
                    .ok()
                    .and_then(|t| t.strip_prefix("r/")?.parse().ok())
                    .unwrap_or(usize::MAX);
                if t < TOPICS && m.payload == value(n - TOPICS + t).as_slice() {
                    back += 1;
                }
            }
            true
        });
        match fr.fill(&mut c) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if mqtt::is_timeout(&e) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(Wear {
        acked: n,
        bytes: bytes1 - bytes0,
        delivery_bytes: None,
        fsyncs: f1 - f0,
        mean_ack_ms: mean,
        max_ack_ms: max,
        lost: TOPICS - back.min(TOPICS),
    })
}
