//! The load generator: publishers and subscribers on plain threads with
//! blocking sockets, each scenario measured from the first publish to the
//! last delivery, with every delivered message counted.

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::broker::Broker;
use crate::mqtt::{self, Framer};

/// In-flight window of a QoS 1/2 publisher (libmosquitto's default).
const PUB_WINDOW: usize = 20;
/// A subscriber gives up after this long without a message.
const QUIET: Duration = Duration::from_secs(3);
/// QoS 0 publishers write this much per write(2).
const PUB_BATCH: usize = 64 * 1024;

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// One publish/subscribe run.
#[derive(Clone, Debug)]
pub struct Flow {
    pub publishers: usize,
    /// Subscribers that read as fast as they can.
    pub subscribers: usize,
    /// Subscribers that never read.
    pub stalled: usize,
    pub qos: u8,
    pub size: usize,
    pub per_publisher: usize,
    /// Messages per second per publisher; None is as fast as possible.
    pub rate: Option<u32>,
    /// Fan-in: publisher i uses topic bench/i and subscribers bench/#.
    /// Otherwise every publisher uses bench/x and subscribers bench/x.
    pub fan_in: bool,
}

impl Flow {
    /// One publisher at `rate` msg/s for `secs`, one subscriber, 32 B
    /// messages: the latency scenario.
    pub fn paced(qos: u8, rate: u32, secs: u32) -> Flow {
        Flow {
            publishers: 1,
            subscribers: 1,
            stalled: 0,
            qos,
            size: 32,
            per_publisher: (rate * secs) as usize,
            rate: Some(rate),
            fan_in: false,
        }
    }
}

#[derive(Debug, Default)]
pub struct FlowResult {
    pub secs: f64,
    pub delivered: u64,
    pub expected: u64,
    pub cpu: f64,
    /// Peak cgroup usage during the run.
    pub peak: Option<u64>,
    /// Peak RSS over the broker's life (VmHWM).
    pub hwm: u64,
    /// Publish-to-delivery times in nanoseconds.
    pub latencies: Vec<u64>,
    /// Resident size of the deepest client thread stack (midge).
    pub deepest_stack: Option<u64>,
}

struct SubResult {
    /// Kept open until the broker's CPU time has been read.
    sock: TcpStream,
    count: u64,
    last: Instant,
    latencies: Vec<u64>,
}

fn subscriber(
    mut s: TcpStream,
    mut fr: Framer,
    expected: u64,
    keep_latency: bool,
) -> io::Result<SubResult> {
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut count = 0u64;
    let mut last = Instant::now();
    let mut latencies = Vec::new();
    let mut acks = Vec::with_capacity(4096);
    loop {
        let t = now_ns();
        fr.drain(|first, body| {
            match first & 0xf0 {
                mqtt::PUBLISH => {
                    let Some(m) = mqtt::parse_publish(first, body) else {
                        return true;
                    };
                    count += 1;
                    if keep_latency && m.payload.len() >= 8 {
                        let mut ts = [0u8; 8];
                        ts.copy_from_slice(&m.payload[..8]);
                        latencies.push(t.saturating_sub(u64::from_le_bytes(ts)));
                    }
                    match m.qos {
                        1 => mqtt::ack(&mut acks, mqtt::PUBACK, m.pkid),
                        2 => mqtt::ack(&mut acks, mqtt::PUBREC, m.pkid),
                        _ => {}
                    }
                }
                0x60 => mqtt::ack(&mut acks, mqtt::PUBCOMP, mqtt::ack_id(body)),
                _ => {}
            }
            true
        });
        if !acks.is_empty() {
            s.write_all(&acks)?;
            acks.clear();
        }
        if count >= expected {
            break;
        }
        match fr.fill(&mut s) {
            Ok(0) => break,
            Ok(_) => last = Instant::now(),
            Err(e) if mqtt::is_timeout(&e) => {
                if last.elapsed() > QUIET {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(SubResult {
        sock: s,
        count,
        last,
        latencies,
    })
}

fn publisher(
    mut s: TcpStream,
    mut fr: Framer,
    topic: String,
    f: Flow,
    start: Arc<Barrier>,
) -> io::Result<TcpStream> {
    let mut payload = vec![0x5a; f.size.max(8)];
    let mut out = Vec::with_capacity(PUB_BATCH + f.size + 64);
    let interval = f
        .rate
        .map(|r| Duration::from_secs_f64(1.0 / f64::from(r.max(1))));
    start.wait();
    let t0 = Instant::now();
    let n = f.per_publisher;
    let (mut sent, mut done, mut inflight) = (0usize, 0usize, 0usize);
    let mut pkid: u16 = 0;
    while done < n {
        while sent < n && (f.qos == 0 || inflight < PUB_WINDOW) {
            if let Some(iv) = interval {
                let due = t0 + iv * sent as u32;
                let now = Instant::now();
                if due > now {
                    if !out.is_empty() {
                        break;
                    }
                    std::thread::sleep(due - now);
                }
            }
            payload[..8].copy_from_slice(&now_ns().to_le_bytes());
            pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
            mqtt::publish(&mut out, &topic, f.qos, false, pkid, &payload);
            sent += 1;
            if f.qos == 0 {
                done += 1;
            } else {
                inflight += 1;
            }
            if out.len() >= PUB_BATCH || interval.is_some() {
                break;
            }
        }
        if !out.is_empty() {
            s.write_all(&out)?;
            out.clear();
        }
        if f.qos == 0 || (inflight < PUB_WINDOW && sent < n && interval.is_none()) {
            continue;
        }
        if inflight == 0 {
            continue;
        }
        if fr.fill(&mut s)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "broker closed a publisher",
            ));
        }
        fr.drain(|first, body| {
            match first & 0xf0 {
                0x40 | 0x70 => {
                    inflight -= 1;
                    done += 1;
                }
                0x50 => mqtt::ack(&mut out, mqtt::PUBREL, mqtt::ack_id(body)),
                _ => {}
            }
            true
        });
    }
    Ok(s)
}

fn join<T>(h: JoinHandle<io::Result<T>>) -> io::Result<T> {
    h.join()
        .map_err(|_| io::Error::other("load thread panicked"))?
}

/// Runs one flow against `b`.
pub fn flow(b: &Broker, f: &Flow) -> io::Result<FlowResult> {
    let filter = if f.fan_in { "bench/#" } else { "bench/x" };
    let per_sub = (f.publishers * f.per_publisher) as u64;
    let latency = f.rate.is_some();
    let mut subs = Vec::new();
    for i in 0..f.subscribers {
        let (s, fr) = mqtt::client(
            b.port,
            &format!("sub-{i}"),
            Some((filter, f.qos)),
            256 << 10,
        )?;
        subs.push((s, fr));
    }
    // Stalled subscribers: a small receive buffer, never read.
    let mut stalled = Vec::new();
    for i in 0..f.stalled {
        let (s, _) = mqtt::client(b.port, &format!("stalled-{i}"), Some((filter, f.qos)), 4096)?;
        stalled.push(s);
    }
    let start = Arc::new(Barrier::new(f.publishers + 1));
    let mut pubs = Vec::new();
    for i in 0..f.publishers {
        let (s, fr) = mqtt::client(b.port, &format!("pub-{i}"), None, 64 << 10)?;
        let topic = if f.fan_in {
            format!("bench/{i}")
        } else {
            "bench/x".to_string()
        };
        let (f2, start2) = (f.clone(), start.clone());
        pubs.push(std::thread::spawn(move || {
            publisher(s, fr, topic, f2, start2)
        }));
    }
    let sub_threads: Vec<_> = subs
        .into_iter()
        .map(|(s, fr)| std::thread::spawn(move || subscriber(s, fr, per_sub, latency)))
        .collect();
    b.proc.reset_max();
    let cpu0 = b.proc.cpu_secs();
    let t0 = Instant::now();
    start.wait();
    let mut r = FlowResult {
        expected: per_sub * f.subscribers as u64,
        ..FlowResult::default()
    };
    let mut last = t0;
    let mut first_err = None;
    let mut keep = Vec::new();
    for h in sub_threads {
        match join(h) {
            Ok(s) => {
                keep.push(s.sock);
                r.delivered += s.count;
                last = last.max(s.last);
                r.latencies.extend(s.latencies);
            }
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    r.cpu = b.proc.cpu_secs() - cpu0;
    r.peak = b.proc.max_usage();
    r.hwm = b.proc.status("VmHWM");
    r.deepest_stack = crate::broker::deepest_stack(b.proc.pid(), crate::client_stack());
    r.secs = (last - t0).as_secs_f64();
    for h in pubs {
        if let Err(e) = join(h) {
            first_err = first_err.or(Some(e));
        }
    }
    drop(stalled);
    drop(keep);
    match first_err {
        Some(e) => Err(e),
        None => Ok(r),
    }
}

/// Opens `n` connections with one subscription each, one after another.
/// Returns them (to keep them open) and the time it took.
pub fn idle(b: &Broker, n: usize, from: usize) -> io::Result<(Vec<TcpStream>, f64)> {
    let t0 = Instant::now();
    let mut v = Vec::with_capacity(n);
    for i in from..from + n {
        let id = format!("idle-{i}");
        let filter = format!("idle/{i}");
        let (s, _) = mqtt::client(b.port, &id, Some((&filter, 1)), 4096)?;
        v.push(s);
    }
    Ok((v, t0.elapsed().as_secs_f64()))
}

#[derive(Debug, Default)]
pub struct RetainResult {
    /// Storing every retained message (until the last one's PUBACK).
    pub store_secs: f64,
    /// Subscribing to a filter matching all of them until the last arrived.
    pub wildcard_secs: f64,
    pub wildcard_got: u64,
    /// Mean SUBSCRIBE round trip for one exact topic, with its one message.
    pub exact_us: f64,
    pub cpu: f64,
}

/// Stores `n` retained messages, then looks them up by subscribing.
pub fn retained(b: &Broker, n: usize, lookups: usize) -> io::Result<RetainResult> {
    let mut r = RetainResult::default();
    let topic = |i: usize| format!("ret/{}/{}", i / 1000, i % 1000);
    let (mut s, mut fr) = mqtt::client(b.port, "ret-pub", None, 64 << 10)?;
    let cpu0 = b.proc.cpu_secs();
    let t0 = Instant::now();
    let mut out = Vec::with_capacity(PUB_BATCH + 256);
    let payload = [0x5au8; 32];
    for i in 0..n {
        // The last one is QoS 1: its PUBACK comes after all the others.
        let q = u8::from(i + 1 == n);
        mqtt::publish(&mut out, &topic(i), q, true, 1, &payload);
        if out.len() >= PUB_BATCH {
            s.write_all(&out)?;
            out.clear();
        }
    }
    s.write_all(&out)?;
    mqtt::expect(&mut s, &mut fr, &[mqtt::PUBACK])?;
    r.store_secs = t0.elapsed().as_secs_f64();

    // midge and Mosquitto both route in arrival order, but the PUBACK may
    // leave before the last message is stored: wait until it can be read.
    let last = topic(n - 1);
    let (mut probe, mut pf) = mqtt::client(b.port, "ret-probe", Some((&last, 0)), 4096)?;
    mqtt::expect(&mut probe, &mut pf, &[mqtt::PUBLISH])?;

    let t1 = Instant::now();
    let (sub, sfr) = mqtt::client(b.port, "ret-sub", Some(("ret/#", 0)), 256 << 10)?;
    let got = subscriber(sub, sfr, n as u64, false)?;
    r.wildcard_got = got.count;
    r.wildcard_secs = (got.last - t1).as_secs_f64();

    let (mut one, mut ofr) = mqtt::client(b.port, "ret-one", None, 4096)?;
    let t2 = Instant::now();
    let mut buf = Vec::with_capacity(64);
    for k in 0..lookups {
        buf.clear();
        let i = (k * 7919) % n;
        mqtt::subscribe(&mut buf, (k % 60000 + 1) as u16, &topic(i), 0);
        one.write_all(&buf)?;
        mqtt::expect(&mut one, &mut ofr, &[mqtt::SUBACK, mqtt::PUBLISH])?;
    }
    r.exact_us = t2.elapsed().as_secs_f64() * 1e6 / lookups.max(1) as f64;
    r.cpu = b.proc.cpu_secs() - cpu0;
    Ok(r)
}

/// The p-th percentile (0..=100) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
