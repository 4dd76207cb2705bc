//! midge against Mosquitto and rumqttd, side by side on loopback: `make
//! bench` (about five minutes) or `make bench-quick` (about one).
//!
//! Every scenario starts each broker fresh, in its own memory cgroup, with
//! the same settings, and rotates their order (A B C, B C A, ...) so that
//! drift on a shared machine hits all of them. The table gives the median
//! with min and max of each number and the ratios midge/Mosquitto (the one
//! the targets are about) and midge/rumqttd; a scenario rumqttd cannot run
//! with equivalent settings says so in its cells, and so does every row when
//! its binary was not built (`make bench` builds it once, outside the tree,
//! and names it in `MIDGE_BENCH_RUMQTTD`). The last section checks the
//! targets of docs/PERFORMANCE.md. Nothing here is a test: the numbers vary
//! with the machine and nothing fails on them.

mod broker;
mod durable;
mod floor;
mod load;
mod mqtt;
mod storm;
mod syscalls;

use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use broker::{Broker, Kind, Persistence, Settings};
use load::Flow;

const MIDGE: &str = env!("CARGO_BIN_EXE_midge");
/// midge's client thread stack size, for the bare-thread floor
/// (`MIDGE_BENCH_STACK` overrides it when the broker was built with another).
const CLIENT_STACK: usize = 64 * 1024;
const MB: f64 = 1024.0 * 1024.0;

/// The client stack size midge was built with, as far as the benchmark knows.
fn client_stack() -> usize {
    std::env::var("MIDGE_BENCH_STACK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CLIENT_STACK)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--floor") {
        return floor::child(&args[1..]);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    match run(quick, &only) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Which way a number is better, for the reader of the table.
#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
}

struct Row {
    scenario: String,
    metric: &'static str,
    better: Better,
    /// Samples for midge (0), Mosquitto (1) and rumqttd (2).
    vals: [Vec<f64>; 3],
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
    /// Scenarios a broker did not run, with the reason, written in its
    /// cells instead of numbers.
    not_run: Vec<(String, Kind, String)>,
    /// Whether the rumqttd binary was found; every rumqttd cell says so
    /// when it was not.
    rumqttd_built: bool,
}

impl Table {
    fn add(&mut self, scenario: &str, metric: &'static str, better: Better, k: Kind, v: f64) {
        let i = match self
            .rows
            .iter()
            .position(|r| r.scenario == scenario && r.metric == metric)
        {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    scenario: scenario.to_string(),
                    metric,
                    better,
                    vals: [Vec::new(), Vec::new(), Vec::new()],
                });
                self.rows.len() - 1
            }
        };
        self.rows[i].vals[idx(k)].push(v);
    }

    /// Marks `scenario` as not run by `k`, for `reason`.
    fn not_run(&mut self, scenario: &str, k: Kind, reason: &str) {
        self.not_run
            .push((scenario.to_string(), k, reason.to_string()));
    }

    /// What a cell of `k` says when it has no numbers.
    fn missing(&self, scenario: &str, k: Kind) -> String {
        if k == Kind::Rumqttd && !self.rumqttd_built {
            return "n/a: rumqttd not built".into();
        }
        match self
            .not_run
            .iter()
            .find(|(s, kind, _)| s == scenario && *kind == k)
        {
            Some((_, _, reason)) => format!("n/a: {reason}"),
            None => "-".into(),
        }
    }

    fn median(&self, scenario: &str, metric: &str, k: Kind) -> Option<f64> {
        let r = self
            .rows
            .iter()
            .find(|r| r.scenario == scenario && r.metric == metric)?;
        stats(&r.vals[idx(k)]).map(|s| s.0)
    }

    fn ratio(&self, scenario: &str, metric: &str) -> Option<f64> {
        let a = self.median(scenario, metric, Kind::Midge)?;
        let b = self.median(scenario, metric, Kind::Mosquitto)?;
        (b != 0.0).then(|| a / b)
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        s.push_str("| scenario | metric | midge median (min-max) | Mosquitto median (min-max) | midge/Mosquitto | rumqttd median (min-max) | midge/rumqttd |\n");
        s.push_str("|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let cell = |k: Kind| match stats(&r.vals[idx(k)]) {
                Some((m, lo, hi)) => format!("{} ({}-{})", num(m), num(lo), num(hi)),
                None if r.vals[0].is_empty() => "-".into(),
                None => self.missing(&r.scenario, k),
            };
            let ratio = |k: Kind| match (stats(&r.vals[0]), stats(&r.vals[idx(k)])) {
                (Some((a, ..)), Some((b, ..))) if b != 0.0 => {
                    let arrow = match r.better {
                        Better::Higher => "higher is better",
                        Better::Lower => "lower is better",
                    };
                    format!("{:.2} ({arrow})", a / b)
                }
                _ => "-".into(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.scenario,
                r.metric,
                cell(Kind::Midge),
                cell(Kind::Mosquitto),
                ratio(Kind::Mosquitto),
                cell(Kind::Rumqttd),
                ratio(Kind::Rumqttd),
            );
        }
        s
    }
}

fn idx(k: Kind) -> usize {
    match k {
        Kind::Midge => 0,
        Kind::Mosquitto => 1,
        Kind::Rumqttd => 2,
    }
}

/// (median, min, max)
fn stats(v: &[f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some((med, s[0], s[n - 1]))
}

fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The order of the brokers in repetition `rep` of scenario number `n`:
/// `kinds` rotated by one more each time (A B C, B C A, C A B, ...; with two
/// brokers, A B, B A).
fn order(kinds: &[Kind], n: usize, rep: usize) -> Vec<Kind> {
    let mut v = kinds.to_vec();
    if !v.is_empty() {
        let len = v.len();
        v.rotate_left((n + rep) % len);
    }
    v
}

/// Runs one broker's share of a scenario. A failure of rumqttd is written
/// into its cells (a scenario its settings or protocol handling cannot
/// take) and the benchmark goes on; a failure of midge or Mosquitto stops
/// it.
fn attempt(
    t: &mut Table,
    scens: &[&str],
    k: Kind,
    run: impl FnOnce(&mut Table) -> io::Result<()>,
) -> io::Result<()> {
    match run(t) {
        Err(e) if k == Kind::Rumqttd => {
            eprintln!("bench: {}: rumqttd failed: {e}", scens.join(", "));
            for scen in scens {
                t.not_run(scen, k, &format!("failed: {e}"));
            }
            Ok(())
        }
        r => r,
    }
}

/// Lets the 5,000-connection scenario open enough descriptors; brokers
/// started from here inherit the limit (Mosquitto's `ulimit -n`).
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

struct Plan {
    /// The brokers measured: midge, Mosquitto, and rumqttd when built.
    kinds: Vec<Kind>,
    reps: usize,
    /// Divides message counts.
    scale: usize,
    idle_steps: &'static [usize],
    latency_secs: u32,
    retained: usize,
}

fn run(quick: bool, only: &[&str]) -> io::Result<()> {
    if !Path::new(broker::MOSQUITTO).exists() {
        return Err(io::Error::other(format!(
            "{} not found (apt-get install mosquitto)",
            broker::MOSQUITTO
        )));
    }
    raise_nofile();
    let rumqttd = broker::rumqttd();
    let mut kinds = vec![Kind::Midge, Kind::Mosquitto];
    if rumqttd.is_some() {
        kinds.push(Kind::Rumqttd);
    } else {
        eprintln!(
            "bench: rumqttd not built ({} unset or missing; `make bench` builds it)",
            broker::RUMQTTD_ENV
        );
    }
    let plan = if quick {
        Plan {
            kinds,
            reps: 2,
            scale: 4,
            idle_steps: &[100, 1000],
            latency_secs: 2,
            retained: 100_000,
        }
    } else {
        Plan {
            kinds,
            reps: 5,
            scale: 1,
            idle_steps: &[100, 1000, 5000],
            latency_secs: 4,
            retained: 100_000,
        }
    };
    let stack = client_stack();
    let want = |name: &str| only.is_empty() || only.contains(&name);
    let t_all = Instant::now();
    let mut t = Table {
        rumqttd_built: rumqttd.is_some(),
        ..Table::default()
    };
    let mut notes = Vec::new();
    // Another build of midge, for a lever's before and after.
    let other = std::env::var_os("MIDGE_BENCH_BINARY");
    let midge = other.as_deref().map(Path::new).unwrap_or(Path::new(MIDGE));

    if want("idle") {
        idle(&mut t, &plan, midge, stack, &mut notes)?;
    }
    if want("storm") {
        storm::storm(&mut t, &plan, midge)?;
    }
    if want("throughput") {
        throughput(&mut t, &plan, midge)?;
    }
    if want("latency") {
        latency(&mut t, &plan, midge)?;
    }
    if want("syscalls") {
        notes.push(syscalls::table(midge, 2 * plan.latency_secs)?);
    }
    if want("retained") {
        retained(&mut t, &plan, midge)?;
    }
    if want("slow") {
        slow(&mut t, &plan, midge)?;
    }
    if want("durable") {
        durable(&mut t, &plan, midge)?;
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "midge {} vs {} and {} ({} reps, {}), {:.0} s\n",
        midge.display(),
        mosquitto_version(),
        rumqttd_version(rumqttd.as_deref()),
        plan.reps,
        if quick { "quick" } else { "full" },
        t_all.elapsed().as_secs_f64()
    );
    out.push_str(&t.markdown());
    out.push('\n');
    for n in &notes {
        let _ = writeln!(out, "{n}");
    }
    out.push_str(&targets(&t));
    print!("{out}");
    let report = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-report.md");
    if std::fs::write(&report, &out).is_ok() {
        eprintln!("bench: report written to {}", report.display());
    }
    Ok(())
}

fn mosquitto_version() -> String {
    let out = std::process::Command::new(broker::MOSQUITTO)
        .arg("-h")
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("mosquitto")
            .to_string(),
        Err(_) => "mosquitto".into(),
    }
}

fn rumqttd_version(bin: Option<&Path>) -> String {
    let Some(bin) = bin else {
        return "rumqttd (not built)".into();
    };
    match std::process::Command::new(bin).arg("--version").output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Err(_) => "rumqttd".into(),
    }
}

fn progress(what: &str) {
    eprintln!("bench: {what}");
}

fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

const UNPRIVILEGED: &str = "empty broker, started as a non-root user";

/// The empty broker started as `nobody`, as a service unit runs it.
fn empty_unprivileged(t: &mut Table, k: Kind, midge: &Path) -> io::Result<()> {
    let settings = Settings {
        unprivileged: true,
        ..Settings::default()
    };
    let b = Broker::start(k, midge, settings)?;
    settle();
    let scen = UNPRIVILEGED;
    t.add(
        scen,
        "cgroup usage KiB",
        Better::Lower,
        k,
        b.proc.usage().unwrap_or(0) as f64 / 1024.0,
    );
    t.add(
        scen,
        "RSS KiB",
        Better::Lower,
        k,
        b.proc.status("VmRSS") as f64 / 1024.0,
    );
    Ok(())
}

/// Start-up, idle memory, and 100 / 1,000 / 5,000 idle subscribed
/// connections, plus the bare-thread floor.
fn idle(
    t: &mut Table,
    plan: &Plan,
    midge: &Path,
    stack: usize,
    notes: &mut Vec<String>,
) -> io::Result<()> {
    progress("floor: bare threads blocked in poll");
    let n_floor = 1000;
    let f0 = floor::measure(0, stack)?;
    let f1 = floor::measure(n_floor, stack)?;
    let per = |a: u64, b: u64| (b as f64 - a as f64) / n_floor as f64;
    let floor_usage = per(f0.usage, f1.usage);
    notes.push(format!(
        "Bare-thread floor ({n_floor} threads, {} KiB stacks, blocked in poll on an eventfd each): \
         {:.0} B cgroup usage per thread, of which {:.0} B kmem; {:.0} B RSS per thread.\n",
        stack / 1024,
        floor_usage,
        per(f0.kmem, f1.kmem),
        per(f0.rss, f1.rss)
    ));
    let idle_scens: Vec<String> = plan
        .idle_steps
        .iter()
        .map(|n| format!("{n} idle clients"))
        .collect();
    let mut scens = vec!["start-up", "empty broker"];
    scens.extend(idle_scens.iter().map(String::as_str));
    for rep in 0..plan.reps {
        for k in order(&plan.kinds, 0, rep) {
            progress(&format!("idle: {} rep {}", k.name(), rep + 1));
            attempt(t, &[UNPRIVILEGED], k, |t| empty_unprivileged(t, k, midge))?;
            attempt(t, &scens, k, |t| idle_one(t, plan, midge, k, floor_usage))?;
        }
    }
    Ok(())
}

/// One broker's share of `idle`.
fn idle_one(t: &mut Table, plan: &Plan, midge: &Path, k: Kind, floor_usage: f64) -> io::Result<()> {
    let b = Broker::start(k, midge, Settings::default())?;
    settle();
    let base_usage = b.proc.usage().unwrap_or(0);
    let base_kmem = b.proc.kmem().unwrap_or(0);
    let base_rss = b.proc.status("VmRSS");
    t.add(
        "start-up",
        "time to first CONNACK ms",
        Better::Lower,
        k,
        b.startup.as_secs_f64() * 1e3,
    );
    t.add(
        "empty broker",
        "cgroup usage KiB",
        Better::Lower,
        k,
        base_usage as f64 / 1024.0,
    );
    t.add(
        "empty broker",
        "cgroup anon KiB",
        Better::Lower,
        k,
        b.proc.anon().unwrap_or(0) as f64 / 1024.0,
    );
    t.add(
        "empty broker",
        "kmem KiB",
        Better::Lower,
        k,
        base_kmem as f64 / 1024.0,
    );
    t.add(
        "empty broker",
        "RSS KiB",
        Better::Lower,
        k,
        base_rss as f64 / 1024.0,
    );
    t.add(
        "empty broker",
        "threads",
        Better::Lower,
        k,
        b.proc.status("Threads") as f64,
    );
    let mut conns = Vec::new();
    for &n in plan.idle_steps {
        let have = conns.len();
        let (mut more, secs) = load::idle(&b, n - have, have)?;
        conns.append(&mut more);
        settle();
        let scen = format!("{n} idle clients");
        let usage = b.proc.usage().unwrap_or(0);
        let kmem = b.proc.kmem().unwrap_or(0);
        let rss = b.proc.status("VmRSS");
        t.add(
            &scen,
            "cgroup usage KiB",
            Better::Lower,
            k,
            usage as f64 / 1024.0,
        );
        t.add(&scen, "kmem KiB", Better::Lower, k, kmem as f64 / 1024.0);
        t.add(&scen, "RSS KiB", Better::Lower, k, rss as f64 / 1024.0);
        t.add(
            &scen,
            "threads",
            Better::Lower,
            k,
            b.proc.status("Threads") as f64,
        );
        let per = |a: u64, b: u64| (b as f64 - a as f64) / n as f64;
        t.add(
            &scen,
            "usage B/client",
            Better::Lower,
            k,
            per(base_usage, usage),
        );
        t.add(
            &scen,
            "kmem B/client",
            Better::Lower,
            k,
            per(base_kmem, kmem),
        );
        t.add(&scen, "RSS B/client", Better::Lower, k, per(base_rss, rss));
        if k == Kind::Midge {
            t.add(
                &scen,
                "usage B/client minus bare thread",
                Better::Lower,
                k,
                per(base_usage, usage) - floor_usage,
            );
        }
        t.add(
            &scen,
            "connects/s (connect+subscribe)",
            Better::Higher,
            k,
            (n - have) as f64 / secs,
        );
    }
    Ok(())
}

fn flow_rows(t: &mut Table, scen: &str, k: Kind, r: &load::FlowResult) {
    if k == Kind::Midge {
        if let Some(d) = r.deepest_stack {
            t.add(
                scen,
                "deepest client stack KiB",
                Better::Lower,
                k,
                d as f64 / 1024.0,
            );
        }
    }
    let rate = r.delivered as f64 / r.secs.max(1e-9);
    t.add(scen, "msgs/s delivered", Better::Higher, k, rate);
    cpu_and_loss_rows(t, scen, k, r);
    if let Some(p) = r.peak {
        t.add(
            scen,
            "peak cgroup usage MiB",
            Better::Lower,
            k,
            p as f64 / MB,
        );
    }
}

/// The broker's CPU per million messages delivered, and the messages lost.
fn cpu_and_loss_rows(t: &mut Table, scen: &str, k: Kind, r: &load::FlowResult) {
    t.add(
        scen,
        CPU,
        Better::Lower,
        k,
        r.cpu / (r.delivered.max(1) as f64 / 1e6),
    );
    t.add(
        scen,
        "lost",
        Better::Lower,
        k,
        (r.expected - r.delivered.min(r.expected)) as f64,
    );
}

/// Scenario number `n`: flow `f` against each broker, `plan.reps` times.
fn flow_scenario(
    t: &mut Table,
    plan: &Plan,
    midge: &Path,
    n: usize,
    scen: &str,
    settings: Settings,
    f: &Flow,
) -> io::Result<()> {
    for rep in 0..plan.reps {
        for k in order(&plan.kinds, n, rep) {
            progress(&format!("{scen}: {} rep {}", k.name(), rep + 1));
            attempt(t, &[scen], k, |t| {
                let b = Broker::start(k, midge, settings)?;
                let r = load::flow(&b, f)?;
                flow_rows(t, scen, k, &r);
                Ok(())
            })?;
        }
    }
    Ok(())
}

fn throughput(t: &mut Table, plan: &Plan, midge: &Path) -> io::Result<()> {
    let mut n = 0;
    for fan_in in [true, false] {
        for (size, label) in [(32usize, "32 B"), (16 * 1024, "16 KB")] {
            for qos in 0u8..=2 {
                // Roughly a second each on a 2-core machine.
                let total: usize = match (size > 1024, qos) {
                    (false, 0) => 200_000,
                    (false, 1) => 60_000,
                    (false, _) => 30_000,
                    (true, 0) => 8_000,
                    (true, _) => 4_000,
                } / plan.scale;
                let (pubs, subs) = if fan_in { (4, 1) } else { (1, 4) };
                let f = Flow {
                    publishers: pubs,
                    subscribers: subs,
                    stalled: 0,
                    qos,
                    size,
                    per_publisher: if fan_in { total / pubs } else { total / subs },
                    rate: None,
                    fan_in,
                };
                let scen = format!(
                    "{} QoS {qos} {label}",
                    if fan_in {
                        "fan-in 4->1"
                    } else {
                        "fan-out 1->4"
                    }
                );
                let settings = Settings {
                    message_size: size,
                    ..Settings::default()
                };
                flow_scenario(t, plan, midge, n, &scen, settings, &f)?;
                n += 1;
            }
        }
    }
    Ok(())
}

fn latency(t: &mut Table, plan: &Plan, midge: &Path) -> io::Result<()> {
    // A busy board, then a quiet one (run longer, for enough messages).
    for (rate, secs, qos) in [
        (2000, plan.latency_secs, 0u8),
        (2000, plan.latency_secs, 1),
        (100, 2 * plan.latency_secs, 0),
        (100, 2 * plan.latency_secs, 1),
    ] {
        let f = Flow::paced(qos, rate, secs);
        let scen = format!("latency QoS {qos}, {rate} msg/s, 32 B");
        for rep in 0..plan.reps {
            for k in order(&plan.kinds, qos as usize, rep) {
                progress(&format!("{scen}: {} rep {}", k.name(), rep + 1));
                attempt(t, &[&scen], k, |t| latency_one(t, midge, k, &f, &scen))?;
            }
        }
    }
    Ok(())
}

/// One broker's share of a `latency` scenario.
fn latency_one(t: &mut Table, midge: &Path, k: Kind, f: &Flow, scen: &str) -> io::Result<()> {
    let b = Broker::start(k, midge, Settings::default())?;
    let mut r = load::flow(&b, f)?;
    r.latencies.sort_unstable();
    let us = |p: f64| load::percentile(&r.latencies, p) as f64 / 1e3;
    t.add(scen, "p50 us", Better::Lower, k, us(50.0));
    t.add(scen, "p99 us", Better::Lower, k, us(99.0));
    t.add(scen, "p99.9 us", Better::Lower, k, us(99.9));
    t.add(scen, "max us", Better::Lower, k, us(100.0));
    cpu_and_loss_rows(t, scen, k, &r);
    Ok(())
}

fn retained(t: &mut Table, plan: &Plan, midge: &Path) -> io::Result<()> {
    let n = plan.retained;
    let scen = format!("{}k retained", n / 1000);
    let settings = Settings {
        max_queued: 2 * n,
        ..Settings::default()
    };
    for rep in 0..plan.reps {
        for k in order(&plan.kinds, 0, rep) {
            progress(&format!("{scen}: {} rep {}", k.name(), rep + 1));
            attempt(t, &[&scen], k, |t| {
                retained_one(t, midge, k, settings, n, &scen)
            })?;
        }
    }
    Ok(())
}

/// One broker's share of `retained`.
fn retained_one(
    t: &mut Table,
    midge: &Path,
    k: Kind,
    settings: Settings,
    n: usize,
    scen: &str,
) -> io::Result<()> {
    let b = Broker::start(k, midge, settings)?;
    let r = load::retained(&b, n, 50)?;
    t.add(scen, "store all, s", Better::Lower, k, r.store_secs);
    t.add(
        scen,
        "subscribe ret/# until all arrived, s",
        Better::Lower,
        k,
        r.wildcard_secs,
    );
    t.add(
        scen,
        "retained lost on ret/#",
        Better::Lower,
        k,
        (n as u64 - r.wildcard_got.min(n as u64)) as f64,
    );
    t.add(
        scen,
        "subscribe one exact topic, us",
        Better::Lower,
        k,
        r.exact_us,
    );
    t.add(scen, "broker CPU s", Better::Lower, k, r.cpu);
    t.add(
        scen,
        "cgroup usage MiB",
        Better::Lower,
        k,
        b.proc.usage().unwrap_or(0) as f64 / MB,
    );
    t.add(
        scen,
        "RSS MiB",
        Better::Lower,
        k,
        b.proc.status("VmRSS") as f64 / MB,
    );
    Ok(())
}

/// Fan-out to three subscribers that keep up, with and without a fourth
/// that never reads. Mosquitto's default queue limit (1,000) for both.
fn slow(t: &mut Table, plan: &Plan, midge: &Path) -> io::Result<()> {
    let settings = Settings {
        max_queued: 1000,
        ..Settings::default()
    };
    for stalled in [0, 1] {
        let f = Flow {
            publishers: 1,
            subscribers: 3,
            stalled,
            qos: 1,
            size: 32,
            per_publisher: 40_000 / plan.scale,
            rate: None,
            fan_in: false,
        };
        let scen = format!("fan-out QoS 1 32 B to 3 readers + {stalled} stalled");
        flow_scenario(t, plan, midge, stalled, &scen, settings, &f)?;
    }
    Ok(())
}

/// QoS 1 to an offline persistent subscriber, midge with its snapshot
/// (Mosquitto-compatible) persistence and with the journal, each beside
/// Mosquitto with `persistence true` (which writes nothing until it saves).
/// rumqttd keeps nothing across a restart: it is marked, not run.
fn durable(t: &mut Table, plan: &Plan, midge: &Path) -> io::Result<()> {
    let n = 20_000 / plan.scale;
    let kinds: Vec<Kind> = plan
        .kinds
        .iter()
        .copied()
        .filter(|&k| k != Kind::Rumqttd)
        .collect();
    for (i, (mode, what)) in [
        (Persistence::Snapshot, "snapshot only"),
        (Persistence::Journal, "midge journal on (commit interval 0)"),
    ]
    .into_iter()
    .enumerate()
    {
        let scen = format!("QoS 1 32 B to offline persistent sub, {what}");
        // The journal's speed with its fsyncs back to back; its wear, and
        // the default interval's speed, are in the `wear` bench.
        let settings = Settings {
            max_queued: 0,
            persistence: mode,
            journal_commit_ms: Some(0),
            ..Settings::default()
        };
        t.not_run(&scen, Kind::Rumqttd, "no persistence");
        for rep in 0..plan.reps {
            for k in order(&kinds, i, rep) {
                progress(&format!("{scen}: {} rep {}", k.name(), rep + 1));
                let r = durable::run(k, midge, settings, n, 32)?;
                t.add(
                    &scen,
                    "msgs/s acknowledged",
                    Better::Higher,
                    k,
                    r.msgs_per_sec,
                );
                t.add(
                    &scen,
                    "storage bytes per msg",
                    Better::Lower,
                    k,
                    r.bytes_per_msg,
                );
                t.add(
                    &scen,
                    "lost across the restart",
                    Better::Lower,
                    k,
                    r.lost as f64,
                );
                if let Some(f) = r.fsyncs_per_sec {
                    t.add(&scen, "journal fsyncs/s", Better::Lower, k, f);
                }
            }
        }
    }
    Ok(())
}

/// The targets of docs/PERFORMANCE.md as (scenario, metric, limit of the
/// ratio midge/Mosquitto, whether the ratio must reach the limit rather
/// than stay under it).
const TARGETS: &[(&str, &str, f64, bool)] = &[
    // Saturation: what the batching client threads won.
    ("fan-in 4->1 QoS 0 32 B", "msgs/s delivered", 5.0, true),
    ("fan-in 4->1 QoS 1 32 B", "msgs/s delivered", 5.0, true),
    ("fan-out 1->4 QoS 0 32 B", "msgs/s delivered", 5.0, true),
    ("fan-out 1->4 QoS 1 32 B", "msgs/s delivered", 5.0, true),
    ("fan-in 4->1 QoS 0 32 B", CPU, 0.5, false),
    ("fan-in 4->1 QoS 1 32 B", CPU, 0.5, false),
    ("fan-out 1->4 QoS 0 32 B", CPU, 0.5, false),
    ("fan-out 1->4 QoS 1 32 B", CPU, 0.5, false),
    // A board's rates.
    ("latency QoS 0, 2000 msg/s, 32 B", CPU, 1.0, false),
    ("latency QoS 1, 2000 msg/s, 32 B", CPU, 1.0, false),
    ("latency QoS 0, 100 msg/s, 32 B", CPU, 1.0, false),
    ("latency QoS 1, 100 msg/s, 32 B", CPU, 1.0, false),
    ("latency QoS 0, 2000 msg/s, 32 B", "p50 us", 1.5, false),
    ("latency QoS 0, 2000 msg/s, 32 B", "p99 us", 1.5, false),
    ("latency QoS 1, 2000 msg/s, 32 B", "p50 us", 1.5, false),
    ("latency QoS 1, 2000 msg/s, 32 B", "p99 us", 1.5, false),
    (
        "1000 idle clients",
        "connects/s (connect+subscribe)",
        1.0,
        true,
    ),
    // Memory.
    (
        "fan-in 4->1 QoS 0 32 B",
        "peak cgroup usage MiB",
        2.0,
        false,
    ),
    (
        "fan-out 1->4 QoS 0 32 B",
        "peak cgroup usage MiB",
        2.0,
        false,
    ),
    (
        "fan-in 4->1 QoS 0 16 KB",
        "peak cgroup usage MiB",
        2.0,
        false,
    ),
    (
        "fan-out 1->4 QoS 0 16 KB",
        "peak cgroup usage MiB",
        2.0,
        false,
    ),
    (
        "fan-in 4->1 QoS 1 32 B",
        "peak cgroup usage MiB",
        0.5,
        false,
    ),
    (
        "fan-in 4->1 QoS 1 16 KB",
        "peak cgroup usage MiB",
        0.5,
        false,
    ),
    ("empty broker", "cgroup usage KiB", 0.5, false),
    ("empty broker", "cgroup anon KiB", 0.5, false),
    ("empty broker", "RSS KiB", 0.5, false),
];

/// The metric of broker CPU time per message.
const CPU: &str = "broker CPU s per M msgs";

/// The targets, each with its measured ratio.
fn targets(t: &Table) -> String {
    let mut s = String::from("\nTargets (ratio midge/Mosquitto of medians):\n\n");
    for &(scen, metric, limit, at_least) in TARGETS {
        let (val, verdict) = match t.ratio(scen, metric) {
            Some(v) if (at_least && v >= limit) || (!at_least && v <= limit) => {
                (format!("{v:.2}"), "met")
            }
            Some(v) => (format!("{v:.2}"), "NOT met"),
            None => ("-".into(), "not measured"),
        };
        let goal = if at_least { ">=" } else { "<=" };
        let _ = writeln!(
            s,
            "- {scen}, {metric}: {val} (target {goal} {limit}): {verdict}"
        );
    }
    let extra = t.median(
        "1000 idle clients",
        "usage B/client minus bare thread",
        Kind::Midge,
    );
    let mosq = t.median("1000 idle clients", "usage B/client", Kind::Mosquitto);
    let _ = writeln!(
        s,
        "- per idle client at 1,000 (cgroup usage beyond one bare thread): midge {} B, Mosquitto's whole per-client cost {} B (target: midge <= Mosquitto)",
        extra.map(num).unwrap_or("-".into()),
        mosq.map(num).unwrap_or("-".into()),
    );
    let rss = t.median(UNPRIVILEGED, "RSS KiB", Kind::Midge);
    let _ = writeln!(
        s,
        "- idle broker started as a non-root user, as the service runs it: midge {} KiB RSS (target: under 4,096 KiB on a board)",
        rss.map(num).unwrap_or("-".into()),
    );
    s
}
