//! QoS 1 to an offline persistent subscriber with persistence on: the cost
//! of the journal. One publisher keeps `WINDOW` messages in flight; the
//! numbers are acknowledged messages per second, the fsyncs per second the
//! journal made (midge's `Journal:` log line at shutdown) and the bytes
//! that reached storage per message (`write_bytes` of /proc/PID/io).

use std::io::{self, Write};
use std::time::{Duration, Instant};

use std::path::Path;

use super::broker::{Broker, Kind, LOG, Settings};
use super::mqtt::{self, Framer};

/// The persistent subscriber's client id.
pub const SUBSCRIBER: &str = "durable-sub";

/// Messages the publisher has in flight at once.
const WINDOW: usize = 20;

pub struct Durable {
    pub msgs_per_sec: f64,
    /// None when the broker does not say (Mosquitto).
    pub fsyncs_per_sec: Option<f64>,
    pub bytes_per_msg: f64,
    /// Messages the subscriber did not get after the restart.
    pub lost: usize,
}

/// `/proc/PID/io` `write_bytes`: bytes this process caused to reach storage.
pub fn write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("write_bytes: ")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Sends `n` QoS 1 messages of `size` bytes to an offline persistent
/// session, then restarts the broker (SIGTERM) to read its counters and
/// counts what the subscriber receives when it comes back.
pub fn run(
    kind: Kind,
    midge: &Path,
    settings: Settings,
    n: usize,
    size: usize,
) -> io::Result<Durable> {
    let b = Broker::start(kind, midge, settings)?;
    // The persistent subscriber: clean session 0, subscribes, goes away.
    let mut out = Vec::new();
    mqtt::connect(&mut out, SUBSCRIBER, 0);
    out[9] = 0; // connect flags: clean session 0
    mqtt::subscribe(&mut out, 1, "d/#", 1);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", b.port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(&out)?;
    let mut fr = Framer::new(4096);
    mqtt::expect(&mut s, &mut fr, &[mqtt::CONNACK, mqtt::SUBACK])?;
    s.write_all(&[0xe0, 0])?;
    drop(s);

    let (mut p, mut fr) = mqtt::client(b.port, "durable-pub", None, 64 * 1024)?;
    let payload = vec![b'x'; size];
    let pid = b.proc.pid();
    let bytes0 = write_bytes(pid);
    let t0 = Instant::now();
    mqtt::publish_acked(&mut p, &mut fr, n, WINDOW, |out, _, id| {
        mqtt::publish(out, "d/t", 1, false, id, &payload)
    })?;
    let secs = t0.elapsed().as_secs_f64();
    let bytes = write_bytes(pid).saturating_sub(bytes0);
    drop(p);
    // SIGTERM: the broker saves and stops; then its log holds the counters.
    let b = b.restart(kind, midge, settings)?;
    let log = std::fs::read_to_string(b.dir.path().join(LOG)).unwrap_or_default();
    let fsyncs = log
        .lines()
        .find_map(|l| l.split("Journal: ").nth(1))
        .and_then(|rest| rest.split(" record(s), ").nth(1))
        .and_then(|rest| rest.split(' ').next()?.parse::<f64>().ok());
    Ok(Durable {
        msgs_per_sec: n as f64 / secs,
        fsyncs_per_sec: fsyncs.map(|f| f / secs),
        bytes_per_msg: bytes as f64 / n as f64,
        lost: n - collect(&b, n)?.min(n),
    })
}

/// The persistent subscriber comes back: counts the messages its session
/// kept across the restart (acknowledging each), until `n` arrived or
/// nothing came for a second.
pub fn collect(b: &Broker, n: usize) -> io::Result<usize> {
    let mut out = Vec::new();
    mqtt::connect(&mut out, SUBSCRIBER, 0);
    out[9] = 0; // clean session 0: resume the session
    let mut s = std::net::TcpStream::connect(("127.0.0.1", b.port))?;
    s.write_all(&out)?;
    let mut fr = Framer::new(64 * 1024);
    mqtt::take(&mut s, &mut fr, n, Duration::from_secs(1), |_, _| {})
}
