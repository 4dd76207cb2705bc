//! Comparisons with Debian's Mosquitto, for behaviours that the MQTT
//! specification leaves to the broker and where midge promises to do what
//! Mosquitto 2.0 does (one copy or two for overlapping subscriptions, ...).
//!
//! The same scenario runs against `/usr/sbin/mosquitto` and against midge,
//! each with its own fresh broker and the same config, and must observe the
//! same thing. The scenario should return something small and comparable
//! (the packets a client saw, as text).

use std::fmt::Debug;

use super::broker::{Broker, BrokerKind};

/// Runs `scenario` against Mosquitto, then midge, both started with
/// `conf` (see `Broker::start` for what is added), asserts that both
/// observed the same, and returns Mosquitto's observation.
pub fn same_as_mosquitto<T, F>(what: &str, conf: &str, scenario: F) -> T
where
    T: PartialEq + Debug,
    F: Fn(&Broker) -> T,
{
    let expected = {
        let m = Broker::start_kind(BrokerKind::Mosquitto, conf, &[]);
        scenario(&m)
    };
    let got = {
        // (MIDGE_TEST_BROKER=mosquitto runs Mosquitto here too, to check
        // the scenario and the recorded observation themselves.)
        let b = Broker::start_kind(BrokerKind::default_kind(), conf, &[]);
        scenario(&b)
    };
    assert_eq!(
        got, expected,
        "{what}: midge (left) differs from Debian's mosquitto (right)"
    );
    expected
}
