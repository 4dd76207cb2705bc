//! A connect storm: clients that connect, are acknowledged and disconnect
//! at once, one after another, as a fleet does after a network outage or a
//! misconfigured client in a reconnect loop. How fast each broker takes
//! them, and what memory it holds right after and a few seconds later
//! (Mosquitto's issue #2830 reports growth after such storms on boards).

use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::broker::Kind;
use crate::broker::{Broker, Settings};
use crate::{Better, Plan, Table, attempt, mqtt, order, progress};

/// DISCONNECT.
const DISCONNECT: [u8; 2] = [0xe0, 0];

pub fn storm(t: &mut Table, plan: &Plan, midge: &Path) -> io::Result<()> {
    let n = 2000 / plan.scale.clamp(1, 2);
    let scen = format!("connect storm, {n} connect+disconnect");
    for rep in 0..plan.reps {
        for k in order(&plan.kinds, 0, rep) {
            progress(&format!("{scen}: {} rep {}", k.name(), rep + 1));
            attempt(t, &[&scen], k, |t| storm_one(t, midge, k, n, &scen))?;
        }
    }
    Ok(())
}

/// One broker's share of the storm.
fn storm_one(t: &mut Table, midge: &Path, k: Kind, n: usize, scen: &str) -> io::Result<()> {
    let b = Broker::start(k, midge, Settings::default())?;
    // One client first: what any broker in use has touched.
    drop(mqtt::client(b.port, "first", None, 256)?);
    std::thread::sleep(Duration::from_millis(300));
    let before = b.proc.usage().unwrap_or(0);
    let t0 = Instant::now();
    for i in 0..n {
        let (mut s, _) = mqtt::client(b.port, &format!("storm-{i}"), None, 256)?;
        s.write_all(&DISCONNECT)?;
    }
    let secs = t0.elapsed().as_secs_f64();
    t.add(scen, "connects/s", Better::Higher, k, n as f64 / secs);
    // Until the last connection's end is seen by the broker, then once
    // the broker has had time to settle.
    for (pause, usage, threads) in [
        (
            200,
            "cgroup usage KiB grown, right after",
            "threads right after",
        ),
        (
            2800,
            "cgroup usage KiB grown, 3 s later",
            "threads 3 s later",
        ),
    ] {
        std::thread::sleep(Duration::from_millis(pause));
        let grown = b.proc.usage().unwrap_or(0) as f64 - before as f64;
        t.add(scen, usage, Better::Lower, k, grown / 1024.0);
        let n = b.proc.status("Threads") as f64;
        t.add(scen, threads, Better::Lower, k, n);
    }
    Ok(())
}
