//! A connection's place on its listener: the listener's settings while
//! the broker runs, and the count that `max_connections` limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::Listener;
use crate::tls::ServerTls;

/// One configured listener while the broker runs: its settings and how
/// many connections it has, for `max_connections`.
#[derive(Debug)]
pub struct ListenerState {
    pub conf: Listener,
    /// The port actually bound (differs from `conf.port` for port 0).
    pub port: u16,
    /// TLS settings and files, for a TLS listener.
    pub tls: Option<Arc<ServerTls>>,
    active: AtomicUsize,
}

impl ListenerState {
    pub fn new(conf: Listener, port: u16, tls: Option<Arc<ServerTls>>) -> ListenerState {
        ListenerState {
            conf,
            port,
            tls,
            active: AtomicUsize::new(0),
        }
    }

    /// Takes a connection slot, unless `max_connections` are already taken.
    pub fn enter(self: &Arc<Self>) -> Option<Slot> {
        let max = self.conf.max_connections.unwrap_or(usize::MAX);
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }
}

/// A connection's place on its listener; freed when the connection ends.
#[derive(Debug)]
pub struct Slot(Arc<ListenerState>);

impl Slot {
    pub fn listener(&self) -> &ListenerState {
        &self.0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}
