//! What a session is made of, below the router and the client thread that
//! both hold it: the QoS 1 and 2 in-flight window ([`inflight`]), the
//! messages queued while offline, and the options of each subscription.
//! Persistence writes and reads the same types.

pub mod aliases;
pub mod inflight;

use crate::codec::QoS;

/// The options of one subscription, kept in the trie with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubOpts {
    pub qos: QoS,
    /// MQTT 5: not sent the subscriber's own messages.
    pub no_local: bool,
    /// MQTT 5: delivered with the retain flag they were published with.
    pub retain_as_published: bool,
    /// MQTT 5 subscription identifier; 0 for none.
    pub sub_id: u32,
}

impl SubOpts {
    /// A 3.1.1 subscription.
    pub fn qos(qos: QoS) -> SubOpts {
        SubOpts {
            qos,
            no_local: false,
            retain_as_published: false,
            sub_id: 0,
        }
    }
}
