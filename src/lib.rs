//! midge: a small MQTT broker for ARM boards, a drop-in for Mosquitto.
//!
//! The data path in ten lines:
//!
//! 1. [`listener`] binds the configured ports and accepts connections.
//! 2. Each connection gets one OS thread with a small stack ([`client`]);
//!    on a TLS listener that thread also runs rustls ([`transport`], [`tls`]),
//!    on a WebSockets listener it unwraps frames ([`websockets`]).
//! 3. That thread reads bytes, and the [`codec`] turns them into packets.
//! 4. CONNECT is checked in the client thread, then registered with the router.
//! 5. PUBLISH, SUBSCRIBE, UNSUBSCRIBE and disconnects travel as [`router::Event`]s
//!    over one crossbeam channel to the single [`router`] thread.
//! 6. The router owns sessions, the subscription trie and retained messages.
//! 7. For each matching subscriber it pushes onto that client's [`outbox`]
//!    (bounded; full queues drop, never block) and wakes its thread.
//! 8. The client thread, blocked in poll(2) on its socket and its wake fd,
//!    drains the outbox, assigns packet ids, encodes and writes.
//! 9. QoS 1/2 in-flight state lives in the client thread ([`session::inflight`])
//!    and goes back to the router when the connection ends.
//! 10. Nothing reachable from the network panics; errors close one connection.
//!
//! The modules form layers; each imports only from its own layer or below,
//! and only transport and websockets import each other (a WebSocket stream
//! wraps a plain or TLS stream, and is one). Lowest first:
//!
//! 1. system calls, topics and the codec: [`sys`], [`topic`], [`codec`],
//!    [`notify`];
//! 2. [`config`];
//! 3. session state, held by the router and the client thread alike:
//!    in-flight windows and subscription options ([`session`]);
//! 4. [`auth`], [`tls`], [`outbox`] and [`logging`] (whose `log_dest
//!    topic` sink the router installs);
//! 5. [`transport`], [`websockets`] and persistence ([`persist`]);
//! 6. [`router`];
//! 7. the client thread ([`client`]), the [`bridge`] and the client link
//!    they and the tools share ([`link`]);
//! 8. [`listener`], the command-line [`tools`] and the fuzzing entry points;
//! 9. the binary, `src/bin/midge.rs`.
//!
//! `cargo test --test layers` checks it (tests/layers.rs).

// Every unsafe block lives in `sys`; the rest of the crate may not have one.
#![deny(unsafe_code)]

pub mod auth;
pub mod bridge;
pub mod client;
pub mod codec;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod link;
pub mod listener;
pub mod logging;
pub mod notify;
pub mod outbox;
pub mod persist;
pub mod router;
pub mod session;
#[allow(unsafe_code)]
pub mod sys;
pub mod tls;
pub mod tools;
pub mod topic;
pub mod transport;
pub mod websockets;

/// The version printed in logs and by `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
