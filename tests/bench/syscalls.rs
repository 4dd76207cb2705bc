//! System calls and context switches per message, each broker counted by
//! `perf stat` (the kernel's syscall tracepoints) over one paced
//! publisher-to-subscriber run: what a message costs the kernel, which at
//! a board's rates is most of what it costs at all.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::broker::{Broker, Kind, Settings};
use crate::load::{self, Flow};

/// The calls shown one by one (the total counts every call).
const CALLS: &[&str] = &[
    "futex",
    "poll",
    "ppoll",
    "epoll_wait",
    "epoll_pwait",
    "read",
    "write",
    "readv",
    "writev",
    "recvfrom",
    "sendto",
    "recvmsg",
    "sendmsg",
    "sched_yield",
    "clock_nanosleep",
];

/// Counts per message, by event name, for one broker and one run.
type Counts = BTreeMap<String, f64>;

/// Whether `perf stat` can count syscall tracepoints here.
fn available() -> bool {
    Command::new("perf")
        .args(["stat", "-e", "raw_syscalls:sys_enter", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The tracepoints of [`CALLS`] this kernel has.
fn events() -> Vec<String> {
    let known = std::fs::read_to_string("/sys/kernel/tracing/available_events")
        .or_else(|_| std::fs::read_to_string("/sys/kernel/debug/tracing/available_events"))
        .unwrap_or_default();
    let mut ev = vec![
        "raw_syscalls:sys_enter".to_string(),
        "context-switches".to_string(),
    ];
    for c in CALLS {
        let name = format!("syscalls:sys_enter_{c}");
        if known.lines().any(|l| l == name) {
            ev.push(name);
        }
    }
    ev
}

/// Runs `f` against a fresh broker of kind `k` with `perf stat` attached
/// to it (threads started later included), and returns each event's
/// count divided by the messages delivered.
fn measure(k: Kind, midge: &Path, f: &Flow, events: &[String]) -> io::Result<Counts> {
    let b = Broker::start(k, midge, Settings::default())?;
    let out = b.dir.path().join("perf.csv");
    let mut cmd = Command::new("perf");
    cmd.args(["stat", "-x", ","]).arg("-o").arg(&out);
    for e in events {
        cmd.args(["-e", e]);
    }
    cmd.args(["-p", &b.proc.pid().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut perf = cmd.spawn()?;
    // perf attaches to every thread before the run starts.
    std::thread::sleep(Duration::from_millis(300));
    let r = load::flow(&b, f);
    // SAFETY: kill(2) on our own child; SIGINT makes perf print its counts.
    unsafe { libc::kill(perf.id() as i32, libc::SIGINT) };
    perf.wait()?;
    let r = r?;
    let text = std::fs::read_to_string(&out)?;
    let per = r.delivered.max(1) as f64;
    let mut counts = Counts::new();
    for line in text.lines() {
        // count,unit,event,...
        let mut cols = line.split(',');
        let (Some(n), Some(_), Some(ev)) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<f64>() else { continue };
        let name = ev
            .trim_start_matches("syscalls:sys_enter_")
            .replace("raw_syscalls:sys_enter", "all syscalls");
        counts.insert(name, n / per);
    }
    Ok(counts)
}

/// The table: for 2,000 and 100 msg/s, QoS 0 and 1, one publisher and one
/// subscriber (the latency scenario), calls per delivered message for
/// each broker. Rows where both brokers make fewer than 0.01 calls per
/// message are left out.
pub fn table(midge: &Path, secs: u32) -> io::Result<String> {
    if !available() {
        return Ok(
            "System calls per message: not measured (`perf stat` cannot count \
                   syscall tracepoints here; install linux-perf).\n"
                .into(),
        );
    }
    let events = events();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "System calls and context switches per delivered message (`perf stat -p`, \
         one publisher, one subscriber, 32 B, {secs} s per run)\n"
    );
    s.push_str("| rate, QoS | call | midge | Mosquitto | midge/Mosquitto |\n");
    s.push_str("|---|---|---|---|---|\n");
    for rate in [2000u32, 100] {
        for qos in [0u8, 1] {
            let f = Flow::paced(qos, rate, secs);
            eprintln!("bench: syscalls at {rate} msg/s, QoS {qos}");
            let m = measure(Kind::Midge, midge, &f, &events)?;
            let q = measure(Kind::Mosquitto, midge, &f, &events)?;
            let mut names: Vec<&String> = m.keys().chain(q.keys()).collect();
            names.sort_by_key(|n| {
                (
                    *n != "all syscalls",
                    *n != "context-switches",
                    n.to_string(),
                )
            });
            names.dedup();
            for n in names {
                let a = m.get(n).copied().unwrap_or(0.0);
                let b = q.get(n).copied().unwrap_or(0.0);
                if a < 0.01 && b < 0.01 {
                    continue;
                }
                let ratio = if b > 0.0 {
                    format!("{:.2}", a / b)
                } else {
                    "-".into()
                };
                let _ = writeln!(
                    s,
                    "| {rate}/s QoS {qos} | {n} | {a:.2} | {b:.2} | {ratio} |"
                );
            }
        }
    }
    Ok(s)
}
