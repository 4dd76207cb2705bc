//! One OS thread per client: read, decode, forward to the router; drain the
//! outbox, encode, write.
//!
//! The thread blocks in poll(2) on two descriptors: its socket and its
//! outbox's wake fd. It never waits on a timer to deliver: the router's push
//! wakes it. QoS 1/2 state lives here ([`inflight`]) and goes back to the
//! router when the connection ends. Every error ends in [`run`], which logs
//! it once and tells the router.

pub mod conn;
pub mod connect;
pub mod inflight;

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use log::{debug, info, warn};

use crate::auth::Auth;
use crate::codec::{Packet, Publish, QoS};
use crate::config::{Config, Listener};
use crate::listener::Slot;
use crate::outbox::{CloseReason, Outbox, Outgoing};
use crate::router::{ConnId, DisconnectKind, Event, Metrics};
use crate::sys::{self, POLLERR, POLLIN, POLLOUT, PollFd};
use crate::transport::{HandshakeError, Stream};
use conn::{Conn, ReadError};
use connect::{Accepted, Refused};
use inflight::{Inflight, Resend, SessionState};
use parking_lot::RwLock;

/// Output buffered beyond this waits until the socket drains, so a client
/// that does not read holds its backlog in the bounded outbox, not here.
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// The least stack of a TLS client's thread.
const TLS_STACK: usize = 256 * 1024;

/// What every client thread shares: settings and the router's channel.
pub struct Shared {
    pub config: Arc<Config>,
    pub router: Sender<Event>,
    pub metrics: Arc<Metrics>,
    /// Password and ACL files; replaced whole by a reload.
    auth: RwLock<Arc<Auth>>,
    next_conn: AtomicU64,
}

impl Shared {
    pub fn new(
        config: Arc<Config>,
        router: Sender<Event>,
        metrics: Arc<Metrics>,
        auth: Arc<Auth>,
    ) -> Shared {
        Shared {
            config,
            router,
            metrics,
            auth: RwLock::new(auth),
            next_conn: AtomicU64::new(1),
        }
    }

    /// The password and ACL rules in force.
    pub fn auth(&self) -> Arc<Auth> {
        self.auth.read().clone()
    }

    /// Puts freshly read rules in force: new connections check passwords
    /// with them, and the router applies the ACLs to every client.
    pub fn replace_auth(&self, auth: Arc<Auth>) {
        *self.auth.write() = auth.clone();
        let _ = self.router.send(Event::Auth(auth));
    }

    /// Adds a connection's traffic to the `$SYS` counters.
    fn report(&self, c: &mut Conn) {
        let n = c.take_counts();
        let m = &self.metrics;
        Metrics::add(&m.bytes_received, n.bytes_in);
        Metrics::add(&m.bytes_sent, n.bytes_out);
        Metrics::add(&m.packets_received, n.packets_in);
        Metrics::add(&m.packets_sent, n.packets_out);
    }

    fn peer_text(&self, c: &Conn) -> String {
        match c.sock.peer_addr() {
            Ok(SocketAddr::V4(a)) => format!("{}:{}", a.ip(), a.port()),
            Ok(SocketAddr::V6(a)) => format!("{}:{}", a.ip(), a.port()),
            Err(_) => "unknown".into(),
        }
    }
}

/// Starts the thread for a freshly accepted connection.
pub fn spawn(sock: TcpStream, peer: SocketAddr, slot: Slot, shared: Arc<Shared>) -> io::Result<()> {
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut stack = shared.config.client_stack_size;
    if slot.listener().tls.is_some() {
        // Certificate checks (RSA, X.509 parsing) need more room than
        // MQTT; only the pages touched cost memory.
        stack = stack.max(TLS_STACK);
    }
    std::thread::Builder::new()
        .name(format!("client-{id}"))
        .stack_size(stack)
        .spawn(move || run(sock, peer, &slot, id, &shared))?;
    Ok(())
}

/// The one place where a connection's errors end.
fn run(sock: TcpStream, peer: SocketAddr, slot: &Slot, id: ConnId, shared: &Shared) {
    let listener = &slot.listener().conf;
    let port = slot.listener().port;
    let chatty = shared.config.connection_messages;
    Metrics::add(&shared.metrics.sockets, 1);
    if chatty {
        info!(
            "New connection from {}:{} on port {port}.",
            peer.ip(),
            peer.port()
        );
    }
    if shared.config.set_tcp_nodelay {
        let _ = sock.set_nodelay(true);
    }
    let stream = match Stream::new(sock, slot.listener(), &shared.config) {
        Ok(s) => s,
        Err(e) => {
            warn!("Unable to set up TLS for {peer}: {e}.");
            return;
        }
    };
    let mut c = match Conn::new(stream, shared.config.max_packet_size) {
        Ok(c) => c,
        Err(e) => {
            warn!("Unable to set up connection from {peer}: {e}.");
            return;
        }
    };
    // The TLS handshake has the time a client has for its CONNECT.
    let timeout = Duration::from_secs(u64::from(shared.config.connect_timeout));
    match c.sock.handshake(Instant::now() + timeout) {
        Ok(()) => {}
        // A plain HTTP request on a WebSockets listener, answered.
        Err(HandshakeError::Http) => return,
        Err(e) => {
            info!("Client <unknown> from {peer} on port {port} disconnected: {e}.");
            return;
        }
    }
    let identity = match &slot.listener().tls {
        Some(t)
            if t.settings().use_identity_as_username || t.settings().use_subject_as_username =>
        {
            Some(crate::tls::cert::identity(
                c.sock.peer_certificate(),
                t.settings().use_subject_as_username,
            ))
        }
        _ => None,
    };
    let handshake = connect::handshake(&mut c, shared, listener, id, identity);
    shared.report(&mut c);
    let accepted = match handshake {
        Ok(a) => a,
        Err(r) => {
            match r {
                Refused::Timeout => {
                    info!("Client <unknown> from {peer} sent no CONNECT in time, disconnecting.")
                }
                // A bad WebSocket frame or TLS record.
                Refused::Read(ReadError::Io(e)) if e.kind() == io::ErrorKind::InvalidData => {
                    warn!("Client <unknown> from {peer} disconnected due to protocol error: {e}.")
                }
                Refused::Read(ReadError::Closed) | Refused::Read(ReadError::Io(_)) => {
                    info!("Client <unknown> closed its connection.")
                }
                Refused::Read(ReadError::Decode(_)) if c.starts_with_tls() => info!(
                    "Client <unknown> from {peer} disconnected: it sent a TLS handshake to \
                     port {port}, which is not a TLS listener."
                ),
                Refused::Read(ReadError::Decode(e)) => {
                    warn!("Client <unknown> from {peer} disconnected due to protocol error: {e}.")
                }
                Refused::NotConnect => {
                    warn!(
                        "Client <unknown> from {peer} disconnected due to protocol error: first packet is not CONNECT."
                    )
                }
                Refused::Code { code, client_id } => {
                    info!(
                        "Client {client_id} from {peer} refused: {}.",
                        refusal_text(code)
                    )
                }
                Refused::RouterGone => debug!("Connection from {peer} dropped during shutdown."),
            }
            return;
        }
    };
    Metrics::add(&shared.metrics.connections, 1);
    let mut s = Session::new(c, accepted, id, shared, listener);
    let (kind, why) = s.run();
    shared.report(&mut s.c);
    match why {
        End::Graceful if chatty => info!("Client {} disconnected.", s.client_id),
        End::Closed if chatty => info!("Client {} closed its connection.", s.client_id),
        End::KeepAlive if chatty => info!(
            "Client {} has exceeded timeout, disconnecting.",
            s.client_id
        ),
        End::Graceful | End::Closed | End::KeepAlive => {}
        End::Protocol(msg) => warn!(
            "Client {} disconnected due to protocol error: {msg}.",
            s.client_id
        ),
        End::SecondConnect => warn!(
            "Client {} disconnected due to protocol error: second CONNECT.",
            s.client_id
        ),
        End::Io(e) => info!("Client {} disconnected: {e}.", s.client_id),
        End::TakenOver => debug!("Client {} taken over.", s.client_id),
        End::Shutdown => debug!("Client {} closed for shutdown.", s.client_id),
    }
    let state = s.into_state();
    let _ = shared.router.send(Event::Disconnect {
        conn: id,
        kind,
        state: Box::new(state),
    });
}

fn refusal_text(code: u8) -> &'static str {
    use crate::codec::connack::*;
    match code {
        BAD_PROTOCOL_VERSION => "unacceptable protocol version",
        IDENTIFIER_REJECTED => "identifier rejected",
        SERVER_UNAVAILABLE => "server unavailable",
        BAD_USERNAME_OR_PASSWORD => "bad user name or password",
        NOT_AUTHORIZED => "not authorised",
        _ => "refused",
    }
}

/// Waits until the socket is readable or `timeout` passes.
fn wait_readable(c: &mut Conn, timeout: Duration) -> io::Result<bool> {
    if c.buffered() {
        return Ok(true);
    }
    let mut fds = [PollFd::new(c.sock.as_raw_fd(), POLLIN)];
    Ok(sys::poll(&mut fds, Some(timeout))? > 0)
}

/// Why the session loop ended.
enum End {
    Graceful,
    Closed,
    KeepAlive,
    Protocol(String),
    SecondConnect,
    Io(io::Error),
    TakenOver,
    Shutdown,
}

/// A connected client: the socket plus this session's QoS state.
struct Session<'a> {
    c: Conn,
    shared: &'a Shared,
    client_id: String,
    conn_id: ConnId,
    /// Time without a packet from the client after which it is dropped:
    /// 1.5 x keepalive [MQTT-3.1.2-24]; None when keepalive is 0.
    silence_limit: Option<Duration>,
    last_heard: Instant,
    outbox: Arc<Outbox>,
    inflight: Inflight,
    /// Taken from the outbox, not yet written: behind the in-flight window
    /// or behind a full write buffer.
    pending: VecDeque<Outgoing>,
    /// The listener's `mount_point`: added to every topic and filter from
    /// the client, taken off every topic sent to it.
    mount_point: Option<&'a str>,
}

impl<'a> Session<'a> {
    fn new(
        c: Conn,
        a: Accepted,
        conn_id: ConnId,
        shared: &'a Shared,
        listener: &'a Listener,
    ) -> Session<'a> {
        let SessionState { inflight, pending } = a.reply.state;
        let silence_limit =
            (a.keep_alive > 0).then(|| Duration::from_millis(u64::from(a.keep_alive) * 1500));
        // Messages queued while offline count against the outbox limit too.
        let outbox = a.outbox;
        let queued = pending.len();
        let queued_bytes = pending.iter().map(|p| p.payload.len()).sum();
        let mut s = Session {
            c,
            shared,
            client_id: a.client_id,
            conn_id,
            silence_limit,
            last_heard: Instant::now(),
            outbox,
            inflight,
            pending: pending.into_iter().map(Outgoing::Publish).collect(),
            mount_point: listener.mount_point.as_deref(),
        };
        s.outbox.add_queued(queued, queued_bytes);
        // Resend what was in flight, in order, before anything new [MQTT-4.4.0-1].
        let resend: Vec<Resend> = s.inflight.resend().collect();
        for r in resend {
            match r {
                Resend::Publish(p) => s.send_publish(p),
                Resend::PubRel(id) => s.c.queue(&Packet::PubRel(id)),
            }
        }
        s
    }

    fn run(&mut self) -> (DisconnectKind, End) {
        match self.run_inner() {
            Ok(end) => {
                let kind = match end {
                    End::Graceful | End::SecondConnect => DisconnectKind::Graceful,
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

    fn run_inner(&mut self) -> Result<End, End> {
        let mut fds = [
            PollFd::new(self.c.sock.as_raw_fd(), POLLIN),
            PollFd::new(self.outbox.wake_fd().as_raw_fd(), POLLIN),
        ];
        // Anything queued before we registered our wake fd.
        let mut woken = true;
        loop {
            // Packets may already be buffered: CONNECT and what followed it
            // in the same segment, or the rest of a large burst.
            loop {
                match self.c.next_packet() {
                    Ok(Some(p)) => {
                        if let Some(end) = self.handle(p)? {
                            return Ok(end);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return Err(End::Protocol(e.to_string())),
                }
            }
            if woken {
                match self.outbox.close_requested() {
                    Some(CloseReason::TakenOver) => return Ok(End::TakenOver),
                    Some(CloseReason::Shutdown) => {
                        self.pump();
                        let _ = self.c.flush();
                        return Ok(End::Shutdown);
                    }
                    None => {}
                }
                self.outbox.take(&mut self.pending);
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

            let mut events = POLLIN;
            if self.c.pending_write() > 0 {
                events |= POLLOUT;
            }
            fds[0].set_events(events);
            let buffered = self.c.buffered();
            let timeout = match self.silence_limit {
                _ if buffered => Some(Duration::ZERO),
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
            woken = fds[1].revents() & POLLIN != 0;
            if buffered || fds[0].revents() & (POLLIN | POLLERR) != 0 {
                match self.c.fill() {
                    Ok(true) => self.last_heard = Instant::now(),
                    Ok(false) => {}
                    Err(ReadError::Closed) => return Err(End::Closed),
                    Err(ReadError::Io(e)) => return Err(End::Io(e)),
                    Err(ReadError::Decode(e)) => return Err(End::Protocol(e.to_string())),
                }
            }
        }
    }

    /// Handles one packet from the client. Ok(Some) ends the session.
    fn handle(&mut self, p: Packet) -> Result<Option<End>, End> {
        match p {
            Packet::Publish(p) => self.incoming_publish(p)?,
            Packet::PubAck(id) => {
                if !self.inflight.puback(id) {
                    debug!("Client {} sent PUBACK for unknown id {id}.", self.client_id);
                }
            }
            Packet::PubRec(id) => {
                if self.inflight.pubrec(id) {
                    self.c.queue(&Packet::PubRel(id));
                } else {
                    debug!("Client {} sent PUBREC for unknown id {id}.", self.client_id);
                }
            }
            Packet::PubComp(id) => {
                self.inflight.pubcomp(id);
            }
            Packet::PubRel(id) => {
                // Always answered, known id or not [MQTT-4.3.3-2].
                self.inflight.release_qos2(id);
                self.c.queue(&Packet::PubComp(id));
            }
            Packet::Subscribe(mut subscribe) => {
                if self.mount_point.is_some() {
                    for f in &mut subscribe.filters {
                        f.filter = self.mounted(&f.filter);
                    }
                }
                self.to_router(Event::Subscribe {
                    conn: self.conn_id,
                    subscribe,
                })?
            }
            Packet::Unsubscribe(mut unsubscribe) => {
                if self.mount_point.is_some() {
                    for f in &mut unsubscribe.filters {
                        *f = self.mounted(f);
                    }
                }
                self.to_router(Event::Unsubscribe {
                    conn: self.conn_id,
                    unsubscribe,
                })?
            }
            Packet::PingReq => self.c.queue(&Packet::PingResp),
            Packet::Disconnect => return Ok(Some(End::Graceful)),
            // [MQTT-3.1.0-2]: a second CONNECT is a protocol violation.
            Packet::Connect(_) => return Err(End::SecondConnect),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(End::Protocol(format!(
                    "unexpected {} from a client",
                    p.kind()
                )));
            }
        }
        Ok(None)
    }

    fn incoming_publish(&mut self, p: Publish) -> Result<(), End> {
        if p.retain && !self.shared.config.retain_available {
            return Err(End::Protocol(
                "retained message, but retain_available is false".into(),
            ));
        }
        let limit = self.shared.config.message_size_limit as usize;
        // Oversized messages are dropped, but their QoS flow completes (Mosquitto).
        let accept = limit == 0 || p.payload.len() <= limit;
        if !accept {
            info!(
                "Dropped too large PUBLISH from {} ({} bytes) on {}.",
                self.client_id,
                p.payload.len(),
                p.topic
            );
        }
        match p.qos {
            QoS::AtMostOnce => {
                if accept {
                    self.forward(p)?;
                }
            }
            QoS::AtLeastOnce => {
                let id = p.pkid;
                if accept {
                    self.forward(p)?;
                }
                self.c.queue(&Packet::PubAck(id));
            }
            QoS::ExactlyOnce => {
                let id = p.pkid;
                // Forward once; a repeat before PUBREL only gets PUBREC again.
                if self.inflight.receive_qos2(id) && accept {
                    self.forward(p)?;
                }
                self.c.queue(&Packet::PubRec(id));
            }
        }
        Ok(())
    }

    /// Encodes a message for the client, without the mount point.
    fn send_publish(&mut self, mut p: Publish) {
        if let Some(mp) = self.mount_point {
            if let Some(t) = p.topic.strip_prefix(mp) {
                p.topic = Arc::from(t);
            }
        }
        self.c.queue(&Packet::Publish(p));
    }

    /// A topic or filter from the client, under the mount point.
    fn mounted(&self, t: &str) -> String {
        match self.mount_point {
            Some(mp) => format!("{mp}{t}"),
            None => t.to_string(),
        }
    }

    fn forward(&mut self, mut publish: Publish) -> Result<(), End> {
        if self.mount_point.is_some() {
            publish.topic = Arc::from(self.mounted(&publish.topic));
        }
        self.to_router(Event::Publish {
            conn: self.conn_id,
            publish,
        })
    }

    fn to_router(&self, ev: Event) -> Result<(), End> {
        self.shared.router.send(ev).map_err(|_| End::Shutdown)
    }

    /// Whether the next pending item may go out now (the in-flight window
    /// has room for it), buffer space aside.
    fn can_pump(&self) -> bool {
        let max = self.shared.config.max_inflight_messages;
        let max_bytes = self.shared.config.max_inflight_bytes;
        match self.pending.front() {
            None => false,
            Some(Outgoing::Publish(p)) => {
                p.qos == QoS::AtMostOnce || self.inflight.has_room(max, max_bytes)
            }
            Some(Outgoing::Packet(_)) => true,
        }
    }

    /// Moves pending output into the write buffer as far as the in-flight
    /// window and the buffer's high-water mark allow.
    fn pump(&mut self) {
        while self.c.pending_write() < WRITE_HIGH_WATER && self.can_pump() {
            let Some(item) = self.pending.pop_front() else {
                break;
            };
            match item {
                Outgoing::Publish(p) => {
                    self.outbox.dequeued(1, p.payload.len());
                    let p = if p.qos == QoS::AtMostOnce {
                        p
                    } else {
                        self.inflight.start(p)
                    };
                    self.send_publish(p);
                }
                Outgoing::Packet(p) => self.c.queue(&p),
            }
        }
    }

    /// The state a persistent session keeps: in-flight messages and what was
    /// taken from the outbox but not sent.
    fn into_state(self) -> SessionState {
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
        SessionState {
            inflight: self.inflight,
            pending,
        }
    }
}
