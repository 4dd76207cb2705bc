//! Bridges (`connection` sections) between midge and Debian's mosquitto,
//! and between two midges, over real loopback sockets: remapped topics in
//! each direction, no loops, queueing while the remote is away,
//! reconnection that never gives up, fail-over and TLS.

mod common;

use std::time::Duration;

use common::tools::{self, Proc};
use common::*;

const WAIT: Duration = Duration::from_secs(20);

/// A bridge section to `addresses` with quick retries.
fn bridge(name: &str, addresses: &str, topics: &[&str]) -> String {
    let mut s = format!(
        "connection {name}\naddress {addresses}\nremote_clientid {name}-remote\n\
         restart_timeout 1 2\n"
    );
    for t in topics {
        s.push_str(&format!("topic {t}\n"));
    }
    s
}

/// A subscriber on `b` that is known to be subscribed to `filter`
/// (probed on `probe`, which `filter` must match).
fn subscriber(b: &Broker, args: &[&str], probe: &str) -> Proc {
    let sub = tools::mosquitto_sub(b.port, args);
    tools::wait_until_subscribed(b, &sub, probe);
    sub
}

/// Waits until the bridge of `local` is connected (its notification).
fn connected(local: &Broker, name: &str) {
    local.wait_for_log(&format!("Connecting bridge (step 2) {name}"), WAIT);
}

#[test]
fn midge_to_mosquitto_out_with_prefixes() {
    let remote = Broker::mosquitto("");
    let sub = subscriber(
        &remote,
        &["-v", "-q", "1", "-t", "site/b1/#", "-t", "probe"],
        "probe",
    );
    let local = Broker::start(&bridge(
        "up",
        &format!("127.0.0.1:{}", remote.port),
        &["sensors/# out 1 board/ site/b1/"],
    ));
    connected(&local, "up");
    tools::mosquitto_pub(
        local.port,
        &["-q", "1", "-t", "board/sensors/t", "-m", "21"],
    );
    sub.wait_line("site/b1/sensors/t 21", WAIT);
    // Not bridged: outside the local prefix.
    tools::mosquitto_pub(local.port, &["-t", "sensors/t", "-m", "no"]);
    tools::mosquitto_pub(
        local.port,
        &["-q", "1", "-t", "board/sensors/u", "-m", "22"],
    );
    sub.wait_line("site/b1/sensors/u 22", WAIT);
    assert!(!sub.output_text().contains(" no"), "{}", sub.output_text());
}
