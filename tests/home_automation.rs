//! The home-automation stack with its own client libraries: Home Assistant
//! (paho-mqtt) and a zigbee2mqtt-like bridge, thousands of retained
//! discovery configs. Every config reaches a hub that subscribes after them.
//!
//! Run against Mosquitto too (`MIDGE_TEST_BROKER=mosquitto`): it delivers
//! only about 1,020 of them (its issue #2887), which the tests state.

mod common;

use common::tools::run_py;
use common::*;

/// The value of the line `KEY value` in a script's output.
fn value(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {key} line in:\n{out}"))
        .to_string()
}

fn count(out: &str, key: &str) -> usize {
    value(out, key)
        .parse()
        .unwrap_or_else(|e| panic!("{key}: {e} in:\n{out}"))
}

#[test]
fn paho_home_assistant_sees_every_config_and_the_republish() {
    let b = Broker::start("");
    let n = 3000;
    let out = run_py(
        "paho_home_assistant.py",
        &[&b.port.to_string(), &n.to_string()],
    );
    eprintln!("{:?}:\n{out}", b.kind);
    let configs = count(&out, "CONFIGS");
    if b.kind == BrokerKind::Mosquitto {
        assert!(configs < n, "Mosquitto stops short of the burst: {configs}");
        return;
    }
    assert_eq!(configs, n, "every retained config");
    assert_eq!(count(&out, "RETAIN_FLAGS"), n, "sent for the subscription");
    assert_eq!(value(&out, "STATE"), "online", "the bridge state");
    assert_eq!(count(&out, "REPUBLISHED"), n, "after the birth message");
}
