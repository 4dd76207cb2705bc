//! The connections that have not completed CONNECT (nor their TLS or
//! WebSocket handshake): their threads are capped at `max_connecting`.
//!
//! At the cap the accept loop leaves new connections in the listen backlog
//! until one of these completes or ends, or until the oldest has waited
//! [`GRACE`]: then the oldest is closed to make room. A crowd that never
//! sends CONNECT thus holds at most `max_connecting` threads and cannot keep
//! the door shut: a real client sends its CONNECT at once and is through
//! long before it would be the oldest.

use std::collections::VecDeque;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use log::info;
use parking_lot::Mutex;

use crate::router::ConnId;
use crate::transport::{Peer, Socket};

/// How long a connection without CONNECT keeps its thread while others
/// wait for one.
pub const GRACE: Duration = Duration::from_millis(250);

/// One connection still before CONNECT.
#[derive(Debug)]
struct Waiting {
    id: ConnId,
    since: Instant,
    peer: Peer,
    /// A second handle on its socket, to close it from the accept loop.
    sock: Socket,
}

#[derive(Debug)]
pub struct Connecting {
    waiting: Mutex<VecDeque<Waiting>>,
    /// `max_connecting`; 0 for no cap.
    max: usize,
}

/// Whether the accept loop may take one more connection now.
#[derive(Debug, PartialEq, Eq)]
pub enum Room {
    Yes,
    /// Not before this much time (or until a connection completes).
    Wait(Duration),
}

impl Connecting {
    pub fn new(max: usize) -> Connecting {
        Connecting {
            waiting: Mutex::new(VecDeque::new()),
            max,
        }
    }

    /// Makes room for one more connection if there is or can be: at the
    /// cap, the oldest is closed once it has waited [`GRACE`].
    pub fn make_room(&self) -> Room {
        let mut w = self.waiting.lock();
        if self.max == 0 || w.len() < self.max {
            return Room::Yes;
        }
        let Some(oldest) = w.front() else {
            return Room::Yes;
        };
        let waited = oldest.since.elapsed();
        if waited < GRACE {
            return Room::Wait(GRACE - waited);
        }
        if let Some(o) = w.pop_front() {
            // Its thread sees the connection end and goes.
            let _ = o.sock.shutdown(Shutdown::Both);
            info!(
                "Client <unknown> from {} closed: no CONNECT after {} ms while {} other \
                 connections waited to be served (max_connecting).",
                o.peer,
                waited.as_millis(),
                self.max
            );
        }
        Room::Yes
    }

    /// A new connection, before its thread starts.
    pub fn enter(&self, id: ConnId, peer: Peer, sock: &Socket) {
        // Without a second handle it cannot be closed early; the connect
        // timeout still ends it.
        if let Ok(sock) = sock.try_clone() {
            self.waiting.lock().push_back(Waiting {
                id,
                since: Instant::now(),
                peer,
                sock,
            });
        }
    }

    /// The connection completed CONNECT, or ended before.
    pub fn leave(&self, id: ConnId) {
        let mut w = self.waiting.lock();
        if let Some(i) = w.iter().position(|c| c.id == id) {
            w.remove(i);
        }
    }
}
