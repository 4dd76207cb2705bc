//! Shared harness of the integration tests.
//!
//! - [`broker`]: start the real `midge` binary (or Debian's `mosquitto`, for
//!   comparisons) on an ephemeral loopback port, with its log kept for
//!   assertions.
//! - [`packets`]: MQTT packets built and parsed by hand, and [`RawClient`], a
//!   blocking client over a `TcpStream`. Nothing here uses midge's codec, so
//!   a codec bug cannot hide itself.
//! - [`compare`]: run one scenario against Debian's Mosquitto and midge and
//!   require the same observation.
//! - [`persist`]: the persistence tests' directory, clients and checks.
//! - [`tools`]: Debian's `mosquitto_pub`/`mosquitto_sub` and the Python
//!   (paho-mqtt) scripts of `tests/py/` as child processes.
//!
//! Every test starts its own broker on its own port, so tests are
//! independent and run in parallel (`cargo test`, `cargo nextest`).
//!
//! Each test binary uses only part of this module.
#![allow(dead_code, unused_imports)]

pub mod broker;
pub mod compare;
pub mod packets;
pub mod persist;
pub mod pki;
pub mod tools;
pub mod ws;

use std::time::{Duration, Instant};

pub use broker::{Broker, BrokerKind, Launch, TempDir, free_port, midge_command};
pub use compare::same_as_mosquitto;
pub use packets::{Packet, Publish, RawClient, ReadOutcome};

/// Generous bound for anything that should happen "at once" on a loaded,
/// shared two-core machine.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// How long to watch for something that must NOT happen (a message that
/// must not be delivered, a connection that must stay open).
pub const QUIET: Duration = Duration::from_millis(700);

/// `d` stretched by `MIDGE_TEST_TIME_SCALE` (a whole number, default 1):
/// `make qemu-test` sets it, since an emulated broker on a busy machine
/// can take longer than a native one to send what a test waits for.
pub fn scaled(d: Duration) -> Duration {
    let k = std::env::var("MIDGE_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    d * k
}

/// Polls `cond` every 10 ms until it is true; panics with `what` after
/// `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the broker runs under an emulator (`MIDGE_TEST_RUNNER`, set by
/// `make qemu-test`): its resident set is then the emulator's, which grows
/// with the code it translates, so resident-memory bounds hold natively
/// only.
pub fn emulated() -> bool {
    std::env::var_os("MIDGE_TEST_RUNNER").is_some()
}

/// A field of /proc/PID/status as a number: `VmRSS` in KiB, `Threads`.
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Open file descriptors of process `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .expect("/proc/PID/fd")
}
