//! The session loop of one connection: poll the socket and the wake fd,
//! read and handle packets (unless the publisher is paced), take what the
//! router queued, write it; and the connection's end: the last words to
//! the client and the session state handed back to the router.

use super::*;
use crate::codec::{DecodeError, PacketType};

impl Connected<'_> {
    pub(super) fn run(&mut self) -> (DisconnectKind, End) {
        match self.run_inner() {
            Ok(end) => {
                let kind = match end {
                    End::Graceful | End::SecondConnect => DisconnectKind::Graceful,
                    End::GracefulWithWill => DisconnectKind::Abnormal,
                    End::TakenOver => DisconnectKind::TakenOver,
                    End::Shutdown => DisconnectKind::Shutdown,
                    _ => DisconnectKind::Abnormal,
                };
                (kind, end)
            }
            // Mosquitto 2.0 drops the will of a client that sends CONNECT
            // twice, unlike every other protocol error.
            Err(End::SecondConnect) => (DisconnectKind::Graceful, End::SecondConnect),
            Err(e) => (DisconnectKind::Abnormal, e),
        }
    }

    pub(super) fn run_inner(&mut self) -> Result<End, End> {
        let mut fds = [
            PollFd::new(self.c.sock.as_raw_fd(), POLLIN),
            PollFd::new(self.outbox.wake_fd().as_raw_fd(), POLLIN),
        ];
        // Anything queued before we registered our wake fd.
        let mut woken = true;
        loop {
            // Packets may already be buffered: CONNECT and what followed it
            // in the same segment, or the rest of a large burst. A paced
            // client's packets stay there until it may go on.
            let paced = loop {
                if let Some(left) = self.outbox.recheck_hold(self.queue_limits()) {
                    break Some(left);
                }
                // Output full: the client's packets wait until it reads
                // what it was sent (its answers would pile up here).
                if self.output_full() {
                    break None;
                }
                match self.c.next_packet() {
                    Ok(Some(p)) => {
                        if let Some(end) = self.handle(p)? {
                            return Ok(end);
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => return Err(self.decode_end(e)),
                }
            };
            if woken {
                match self.outbox.close_requested() {
                    Some(CloseReason::TakenOver) => {
                        // What the client sent before the new connection
                        // came (a PUBLISH, then its close) still counts.
                        self.handle_what_arrived()?;
                        return Ok(End::TakenOver);
                    }
                    Some(CloseReason::Shutdown) => {
                        self.pump();
                        let _ = self.c.flush();
                        return Ok(End::Shutdown);
                    }
                    None => {}
                }
                self.take_outbox();
                if self.outbox.take_copy_request() {
                    self.send_copy();
                }
            }
            // pump() stops at the write high-water mark: while the socket
            // takes everything, keep going, or nothing would wake us for
            // what is still pending.
            loop {
                self.pump();
                self.c.flush().map_err(End::Io)?;
                if self.c.pending_write() > 0 || !self.can_pump() {
                    break;
                }
            }
            self.shared.report(&mut self.c);

            // Paced, or its output full: the socket is left unread (TCP
            // slows the client down) until a subscriber that drained wakes
            // us, the pace ends, or the client reads.
            let full = self.output_full();
            let mut events = if paced.is_some() || full { 0 } else { POLLIN };
            if self.c.pending_write() > 0 {
                events |= POLLOUT;
            }
            fds[0].set_events(events);
            let buffered = paced.is_none() && !full && self.c.buffered();
            let timeout = match self.silence_limit {
                _ if buffered => Some(Duration::ZERO),
                // A pace follows a PUBLISH just read and is short: the
                // time it takes does not count as the client's silence.
                _ if paced.is_some() => paced,
                Some(limit) => {
                    let elapsed = self.last_heard.elapsed();
                    if elapsed >= limit {
                        return Ok(End::KeepAlive);
                    }
                    Some(limit - elapsed)
                }
                None => None,
            };
            sys::poll(&mut fds, timeout).map_err(End::Io)?;
            if paced.is_some() {
                self.last_heard = Instant::now();
            }
            woken = fds[1].revents() & POLLIN != 0;
            if buffered || fds[0].revents() & (POLLIN | POLLERR) != 0 {
                match self.c.fill() {
                    Ok(true) => self.last_heard = Instant::now(),
                    Ok(false) => {}
                    Err(ReadError::Closed) => return Err(End::Closed),
                    Err(ReadError::Io(e)) => return Err(End::Io(e)),
                    Err(ReadError::Decode(e)) => return Err(self.decode_end(e)),
                }
            }
        }
    }

    /// Tells an MQTT 5 client why the broker closes its connection
    /// [MQTT-3.14]; 3.x has no way to say it.
    /// Reads what the socket holds now, without waiting, and handles the
    /// whole packets buffered.
    fn handle_what_arrived(&mut self) -> Result<(), End> {
        // A read error or a close: what was buffered is handled all the same.
        let _ = self.c.fill();
        while let Ok(Some(p)) = self.c.next_packet() {
            if self.handle(p)?.is_some() {
                break;
            }
        }
        Ok(())
    }

    /// How a packet that does not decode ends the session. As Mosquitto,
    /// an MQTT 5 client is told why (DISCONNECT with the reason) only for
    /// a PUBLISH, SUBSCRIBE or UNSUBSCRIBE, or a packet of no known type;
    /// for the others (acknowledgements, PINGREQ, or packets only a
    /// server sends) the connection just closes.
    fn decode_end(&self, e: DecodeError) -> End {
        let told = match self.c.failing_kind() {
            None => true,
            Some(k) => matches!(
                k,
                PacketType::Publish | PacketType::Subscribe | PacketType::Unsubscribe
            ),
        };
        let code = if told { e.reason_code() } else { CLOSE_ONLY };
        End::Protocol(e.to_string(), code)
    }

    pub(super) fn say_goodbye(&mut self, why: &End) {
        if self.level != Level::V5 {
            return;
        }
        let code = match why {
            End::TakenOver => reason::SESSION_TAKEN_OVER,
            End::Shutdown => reason::SERVER_SHUTTING_DOWN,
            End::KeepAlive => reason::KEEP_ALIVE_TIMEOUT,
            End::Protocol(_, CLOSE_ONLY) => return,
            End::Protocol(_, code) => *code,
            End::Quota(_) => reason::QUOTA_EXCEEDED,
            _ => return,
        };
        self.c.queue(&Packet::Disconnect(Disconnect::with(code)));
        // Best effort: the socket is closed right after.
        let _ = self.c.flush();
        // A client refused for what it sent may have sent more behind it.
        if matches!(why, End::Protocol(..)) {
            linger(self.c.sock.socket());
        }
    }

    /// A snapshot is being taken: the router gets a copy of what
    /// [`Self::into_state`] would hand back, and the connection goes on.
    fn send_copy(&self) {
        let pending = self
            .pending
            .iter()
            .filter_map(|item| match item {
                Outgoing::Publish(p) => Some(p.clone()),
                Outgoing::Packet(_) => None,
            })
            .collect();
        let state = SessionState {
            inflight: self.inflight.clone(),
            pending,
        };
        let _ = self.shared.router.send(Event::SessionCopy {
            conn: self.conn_id,
            state: Box::new(state),
        });
    }

    /// The state a persistent session keeps: in-flight messages and what was
    /// taken from the outbox but not sent.
    pub(super) fn into_state(self) -> SessionState {
        let pending: VecDeque<Publish> = self
            .pending
            .into_iter()
            .filter_map(|item| match item {
                Outgoing::Publish(p) => Some(p),
                Outgoing::Packet(_) => None,
            })
            .collect();
        // Messages in the outbox are taken by the router itself.
        let bytes = pending.iter().map(|p| p.payload.len()).sum();
        self.outbox.dequeued(pending.len(), bytes);
        // Publishers held back on this queue need not wait for it.
        self.outbox.release();
        SessionState {
            inflight: self.inflight,
            pending,
        }
    }
}

/// How long, and how many bytes, a connection closed after a DISCONNECT
/// is still read from: the cost one client's end may have.
const LINGER_TIME: Duration = Duration::from_millis(200);
const LINGER_BYTES: usize = 64 * 1024;

/// Ends the write side, then reads and drops what the client still sends
/// for a moment (at most [`LINGER_TIME`] and [`LINGER_BYTES`]): a socket
/// closed with unread input is reset by Linux, and a reset can reach the
/// client before it has read the DISCONNECT, whose reason code is then
/// lost. Only this client's thread waits.
fn linger(sock: &Socket) {
    let _ = sock.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + LINGER_TIME;
    let mut buf = [0u8; 4096];
    let mut read = 0;
    while read < LINGER_BYTES {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let mut fds = [PollFd::new(sock.as_raw_fd(), POLLIN)];
        match sys::poll(&mut fds, Some(deadline - now)) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
        match std::io::Read::read(&mut &*sock, &mut buf) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}
