//! What client threads tell the router, and what it answers to a CONNECT.

use std::sync::Arc;

use crate::auth::Auth;
use crate::codec::{self, Level, Packet, Publish, QoS, Subscribe, Unsubscribe, Will};
use crate::logging;
use crate::outbox::Outbox;
use crate::session::inflight::SessionState;
use crate::sys::parked;

/// The router's queue: every client thread, bridge and the broker itself
/// send, the router thread receives.
pub type RouterTx = parked::Tx<Event>;
pub type RouterRx = parked::Rx<Event>;

/// Unique per accepted connection, never reused while the broker runs.
pub type ConnId = u64;

/// The broker itself (log lines on `$SYS/broker/log/...`): its messages
/// pass no ACL. Connections are numbered from 1.
pub const BROKER: ConnId = 0;

/// Installs the logger's `log_dest topic` sink: each line becomes a QoS 0
/// message on `$SYS/broker/log/X` from the broker. Never blocks: when the
/// router is busy, the line is not published.
pub fn publish_log(tx: RouterTx) {
    logging::set_topic_sink(Box::new(move |letter, msg| {
        let _ = tx.try_send(Event::Publish {
            conn: BROKER,
            publish: Publish {
                props: None,
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: Arc::from(format!("$SYS/broker/log/{letter}")),
                pkid: 0,
                payload: Arc::from(msg.as_bytes()),
            },
        });
    }));
}

/// A CONNECT that the client thread has already checked (protocol, client
/// id, credentials) and now asks the router to attach to a session.
#[derive(Debug)]
pub struct ConnectRequest {
    pub conn: ConnId,
    pub client_id: String,
    pub level: Level,
    /// Clean session (3.x) or clean start (5.0): discard any old state.
    pub clean: bool,
    /// Seconds the session outlives the connection: 0 it ends with it,
    /// u32::MAX never (3.x persistent sessions).
    pub session_expiry: u32,
    pub will: Option<Will>,
    /// For ACL checks: the user name and the security scope (listener).
    pub username: Option<String>,
    pub scope: usize,
    pub outbox: Arc<Outbox>,
    /// A bridge (Mosquitto's bridge bit, or one of this broker's own):
    /// its subscriptions are no-local and retain-as-published.
    pub bridge: bool,
    /// One of this broker's own bridges: exempt from ACL checks.
    pub own_bridge: bool,
    /// Where the router sends the answer; bounded(1), so it never blocks.
    pub reply: parked::Tx<ConnectReply>,
}

/// The router's answer: the session is attached.
#[derive(Debug)]
pub struct ConnectReply {
    /// The CONNACK session-present flag (3.1.1 and later).
    pub session_present: bool,
    /// In-flight and queued messages of a resumed persistent session.
    pub state: SessionState,
    /// Not attached: the broker already holds `global_max_clients`
    /// sessions.
    pub busy: bool,
}

/// How a connection ended, which decides whether its will is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectKind {
    /// DISCONNECT received: the will is discarded [MQTT-3.14.4-3].
    Graceful,
    /// Socket closed, keepalive expired, protocol error: the will is sent.
    Abnormal,
    /// Another connection took the client id over.
    TakenOver,
    /// The broker is shutting down.
    Shutdown,
}

#[derive(Debug)]
pub enum Event {
    // Every variant stays small: each slot of the bounded channel is
    // allocated up front (see `size_is_small` below).
    Connect(Box<ConnectRequest>),
    Publish {
        conn: ConnId,
        publish: Publish,
    },
    /// Boxed: MQTT 5 options and properties make it the largest packet.
    Subscribe {
        conn: ConnId,
        subscribe: Box<Subscribe>,
    },
    Unsubscribe {
        conn: ConnId,
        unsubscribe: Unsubscribe,
    },
    /// Sent once by a client thread after a successful CONNECT, when it ends.
    /// The state is boxed: it is rare, and the channel's slots are as
    /// large as its largest event.
    Disconnect {
        conn: ConnId,
        kind: DisconnectKind,
        state: Box<SessionState>,
        /// The session expiry interval in force at the end (MQTT 5 may
        /// change it in DISCONNECT).
        session_expiry: u32,
    },
    /// With the journal on: send this acknowledgement once everything the
    /// router did for the client's earlier packets is on disk.
    Ack {
        conn: ConnId,
        ack: Reply,
    },
    /// Password and ACL files were read again: apply the new ACLs.
    Auth(Arc<Auth>),
    /// SIGUSR1: save the in-memory state now (with persistence on).
    Save,
    /// A connected session's queued and in-flight messages, copied by its
    /// client thread when the router asked for a snapshot.
    SessionCopy {
        conn: ConnId,
        state: Box<SessionState>,
    },
    /// Stop: close every connection and return.
    Shutdown,
}

/// An acknowledgement that waits for the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    PubAck(codec::Ack),
    PubRec(codec::Ack),
    PubRel(codec::Ack),
    PubComp(codec::Ack),
}

impl Reply {
    /// The packet to send.
    pub fn packet(self) -> Packet {
        match self {
            Reply::PubAck(a) => Packet::PubAck(a),
            Reply::PubRec(a) => Packet::PubRec(a),
            Reply::PubRel(a) => Packet::PubRel(a),
            Reply::PubComp(a) => Packet::PubComp(a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The router channel holds its slots from the start, so the empty
    /// broker's memory grows with this size.
    #[test]
    fn size_is_small() {
        assert!(
            std::mem::size_of::<Event>() <= 64,
            "{}",
            std::mem::size_of::<Event>()
        );
    }
}
