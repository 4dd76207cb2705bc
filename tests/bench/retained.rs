//! A retained burst, midge beside Mosquitto: `make bench-retained` (or
//! `cargo bench --bench retained -- [--quick]`).
//!
//! One client publishes `n` retained Home Assistant discovery messages
//! (`homeassistant/<component>/dev<N>/config`, 200-400 B of JSON, QoS 1,
//! 20 in flight) and waits for every PUBACK. Then one new subscriber (clean
//! session) subscribes to `homeassistant/#` at QoS 1 and acknowledges every
//! PUBLISH, as Home Assistant does when it starts. For each broker: how
//! many retained messages the subscriber received, the time from its
//! SUBSCRIBE to the last one (it stops waiting after 5 s without a new
//! one), and the broker's memory before the SUBSCRIBE and at its peak
//! during the burst: the cgroup's `memory.max_usage_in_bytes`, reset just
//! before the SUBSCRIBE, and VmRSS sampled every 5 ms.
//!
//! Both brokers run with Mosquitto's defaults, `max_queued_messages 1000`
//! and `max_inflight_messages 20`: Mosquitto delivers only about 1,020 of
//! the retained messages, midge streams them all (docs/CONFIG.md).
//! `--quick` runs 5,000 messages; the full run 5,000 and 50,000.
#![allow(dead_code)]

mod broker;
mod mqtt;

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use broker::{Broker, Kind, Settings};

const MIDGE: &str = env!("CARGO_BIN_EXE_midge");
const FILTER: &str = "homeassistant/#";
/// The subscriber gives up after this long without a message.
const QUIET: Duration = Duration::from_secs(5);
/// The publisher's messages in flight (libmosquitto's default).
const WINDOW: usize = 20;
const SAMPLE: Duration = Duration::from_millis(5);
const MB: f64 = 1024.0 * 1024.0;

fn main() -> ExitCode {
    broker::main_quick(run)
}

/// What one burst measured.
struct Burst {
    publish_secs: f64,
    received: usize,
    /// Of those, with the retain flag set.
    retain_flag: usize,
    /// From the SUBSCRIBE to the last message received.
    secs: f64,
    cgroup_before: Option<u64>,
    cgroup_peak: Option<u64>,
    rss_before: u64,
    rss_peak: u64,
}

fn run(quick: bool) -> io::Result<()> {
    let sizes: &[usize] = if quick { &[5_000] } else { &[5_000, 50_000] };
    let settings = Settings {
        max_queued: 1000,
        max_inflight: 20,
        ..Settings::default()
    };
    let midge = Path::new(MIDGE);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| retained | broker | received by the subscriber | SUBSCRIBE to the last received, s | \
         cgroup before / peak, MiB | VmRSS before / peak (sampled), MiB | publish all (acked), s |\n\
         |---|---|---|---|---|---|---|"
    );
    for (i, &n) in sizes.iter().enumerate() {
        // Alternate the order, so that drift on a shared machine hits both.
        let order = if i % 2 == 0 {
            [Kind::Midge, Kind::Mosquitto]
        } else {
            [Kind::Mosquitto, Kind::Midge]
        };
        let mut rows = Vec::new();
        for k in order {
            eprintln!("retained: {n} messages, {}", k.name());
            let b = Broker::start(k, midge, settings)?;
            rows.push((k, burst(&b, n)?));
        }
        rows.sort_by_key(|(k, _)| *k != Kind::Midge);
        for (k, r) in rows {
            // "before / peak (+ growth)": the growth is what the burst took.
            let mem = |before: Option<u64>, peak: Option<u64>| match (before, peak) {
                (Some(a), Some(p)) => format!(
                    "{:.1} / {:.1} (+{} KiB)",
                    a as f64 / MB,
                    p as f64 / MB,
                    p.saturating_sub(a) / 1024
                ),
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "| {n} | {} | {} of {n}{} | {:.2} | {} | {} | {:.2} |",
                k.name(),
                r.received,
                if r.retain_flag == r.received {
                    String::new()
                } else {
                    format!(" ({} with retain set)", r.retain_flag)
                },
                r.secs,
                mem(r.cgroup_before, r.cgroup_peak),
                mem(Some(r.rss_before), Some(r.rss_peak)),
                r.publish_secs,
            );
        }
    }
    print!("{out}");
    let report = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-retained.md");
    if std::fs::write(&report, &out).is_ok() {
        eprintln!("bench: report written to {}", report.display());
    }
    Ok(())
}

fn topic(i: usize) -> String {
    let component = ["sensor", "binary_sensor", "switch", "light"][i % 4];
    format!("homeassistant/{component}/dev{i}/config")
}

/// A discovery config of 200 to 400 bytes, different for every device.
fn payload(i: usize) -> Vec<u8> {
    let mut p = format!(
        "{{\"name\":\"dev{i} value\",\"uniq_id\":\"dev{i}_v\",\"stat_t\":\"midge/dev{i}/state\",\
         \"dev_cla\":\"temperature\",\"unit_of_meas\":\"C\",\"val_tpl\":\"{{{{value_json.v}}}}\",\
         \"dev\":{{\"ids\":[\"dev{i}\"],\"name\":\"dev{i}\"}}"
    );
    let want = 200 + (i * 7919) % 201;
    let pad = want.saturating_sub(p.len() + 10);
    let _ = write!(p, ",\"sw\":\"{}\"}}", "1".repeat(pad));
    p.into_bytes()
}

/// Samples the VmRSS of `pid` until `stop` is set; the thread returns the
/// largest value seen.
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(broker::status(pid, "VmRSS"));
            std::thread::sleep(SAMPLE);
        }
        peak.max(broker::status(pid, "VmRSS"))
    })
}

fn burst(b: &Broker, n: usize) -> io::Result<Burst> {
    let (mut p, mut fr) = mqtt::client(b.port, "burst-pub", None, 64 * 1024)?;
    let t0 = Instant::now();
    mqtt::publish_acked(&mut p, &mut fr, n, WINDOW, |out, i, id| {
        mqtt::publish(out, &topic(i), 1, true, id, &payload(i))
    })?;
    let publish_secs = t0.elapsed().as_secs_f64();
    let _ = p.write_all(&[0xe0, 0]);
    drop(p);
    // A PUBACK may leave before its message is stored: wait until the last
    // one can be read.
    let last = topic(n - 1);
    let (mut probe, mut pf) = mqtt::client(b.port, "burst-probe", Some((&last, 0)), 4096)?;
    mqtt::expect(&mut probe, &mut pf, &[mqtt::PUBLISH])?;
    drop(probe);
    std::thread::sleep(Duration::from_millis(300));

    let (mut s, mut fr) = mqtt::client(b.port, "burst-sub", None, 256 * 1024)?;
    let mut sub = Vec::new();
    mqtt::subscribe(&mut sub, 1, FILTER, 1);
    b.proc.reset_max();
    let cgroup_before = b.proc.usage();
    let rss_before = b.proc.status("VmRSS");
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(b.proc.pid(), stop.clone());
    let t0 = Instant::now();
    let mut last = t0;
    let mut retain_flag = 0;
    let got = s.write_all(&sub).and_then(|()| {
        mqtt::take(&mut s, &mut fr, n, QUIET, |first, _| {
            last = Instant::now();
            retain_flag += usize::from(first & 1 == 1);
        })
    });
    stop.store(true, Ordering::Relaxed);
    let rss_peak = sampler
        .join()
        .map_err(|_| io::Error::other("the memory sampler panicked"))?;
    let cgroup_peak = b.proc.max_usage();
    let received = got?;
    let _ = s.write_all(&[0xe0, 0]);
    Ok(Burst {
        publish_secs,
        received,
        retain_flag,
        secs: (last - t0).as_secs_f64(),
        cgroup_before,
        cgroup_peak,
        rss_before,
        rss_peak,
    })
}
