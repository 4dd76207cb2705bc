//! One OS thread per client: read, decode, forward to the router; drain the
//! outbox, encode, write.
//!
//! The thread blocks in poll(2) on two descriptors: its socket and its
//! outbox's wake fd. It never waits on a timer to deliver: the router's push
//! wakes it. QoS 1/2 state lives here ([`crate::session::inflight`]) and goes back to the
//! router when the connection ends. Every error ends in [`run`], which logs
//! it once and tells the router.

pub mod conn;
pub mod connect;
mod slot;

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
use crate::codec::props::id;
use crate::codec::{Ack, Disconnect, Level, Packet, Publish, QoS, reason};
use crate::config::{Config, Listener};
use crate::outbox::{CloseReason, Outbox, Outgoing, QueueLimits};
use crate::persist::format::{Record, Step, message_check};
use crate::persist::journal::Journal;
use crate::router::{ConnId, DisconnectKind, Event, Metrics, Reply};
use crate::session::inflight::{Inflight, Resend, SessionState};
use crate::sys::{self, POLLERR, POLLIN, POLLOUT, PollFd};
use crate::transport::{HandshakeError, Stream};
use crate::websockets;
use conn::{Conn, ReadError};
use connect::{Accepted, ClientLimits, Refused};
use parking_lot::RwLock;
pub use slot::{ListenerState, Slot};

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
    /// With `persistence_journal`: where durable changes go.
    pub journal: Option<Arc<Journal>>,
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
            journal: None,
        }
    }

    /// A connection id for a thread that attaches to the router without a
    /// socket of its own (a bridge).
    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Client threads journal their sessions' changes and hold back
    /// acknowledgements until they are durable.
    pub fn with_journal(mut self, journal: Option<Arc<Journal>>) -> Shared {
        self.journal = journal;
        self
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
///
/// Its two halves are out of line so that each has its own stack frames:
/// handling CONNECT (TLS, WebSockets, decoding, the CONNACK, log lines)
/// goes deeper than the session that follows, and once it is done the
/// stack pages it alone used are given back ([`sys::trim_stack`]), so an
/// idle client keeps only what its session needs.
fn run(sock: TcpStream, peer: SocketAddr, slot: &Slot, id: ConnId, shared: &Shared) {
    if let Some((c, accepted)) = open(sock, peer, slot, id, shared) {
        Metrics::add(&shared.metrics.connections, 1);
        sys::trim_stack();
        serve(c, accepted, id, shared, &slot.listener().conf);
    }
}

/// Sets the connection up until its CONNECT is accepted; None when it
/// ended before (logged).
#[inline(never)]
fn open(
    sock: TcpStream,
    peer: SocketAddr,
    slot: &Slot,
    id: ConnId,
    shared: &Shared,
) -> Option<(Conn, Accepted)> {
    let listener = &slot.listener().conf;
    let port = slot.listener().port;
    Metrics::add(&shared.metrics.sockets, 1);
    if shared.config.connection_messages {
        info!(
            "New connection from {}:{} on port {port}.",
            peer.ip(),
            peer.port()
        );
    }
    if shared.config.set_tcp_nodelay {
        let _ = sock.set_nodelay(true);
    }
    let tls = slot.listener().tls.as_ref().map(|t| t.config());
    let ws = listener
        .websockets
        .then(|| websockets::Settings::for_listener(listener, &shared.config));
    let stream = match Stream::new(sock, tls, ws) {
        Ok(s) => s,
        Err(e) => {
            warn!("Unable to set up TLS for {peer}: {e}.");
            return None;
        }
    };
    let mut c = match Conn::new(stream, shared.config.max_packet_size) {
        Ok(c) => c,
        Err(e) => {
            warn!("Unable to set up connection from {peer}: {e}.");
            return None;
        }
    };
    // The TLS handshake has the time a client has for its CONNECT.
    let timeout = Duration::from_secs(u64::from(shared.config.connect_timeout));
    match c.sock.handshake(Instant::now() + timeout) {
        Ok(()) => {}
        // A plain HTTP request on a WebSockets listener, answered.
        Err(HandshakeError::Http) => return None,
        Err(e) => {
            info!("Client <unknown> from {peer} on port {port} disconnected: {e}.");
            return None;
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
    match handshake {
        Ok(a) => Some((c, a)),
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
            None
        }
    }
}

/// Runs an accepted connection's session to its end.
#[inline(never)]
fn serve(c: Conn, accepted: Accepted, id: ConnId, shared: &Shared, listener: &Listener) {
    let chatty = shared.config.connection_messages;
    let mut s = Session::new(c, accepted, id, shared, listener);
    let (kind, why) = s.run();
    s.say_goodbye(&why);
    shared.report(&mut s.c);
    match why {
        End::Graceful | End::GracefulWithWill if chatty => {
            info!("Client {} disconnected.", s.client_id)
        }
        End::Closed if chatty => info!("Client {} closed its connection.", s.client_id),
        End::KeepAlive if chatty => info!(
            "Client {} has exceeded timeout, disconnecting.",
            s.client_id
        ),
        End::Graceful | End::GracefulWithWill | End::Closed | End::KeepAlive => {}
        End::Protocol(msg, _) => warn!(
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
    let session_expiry = s.session_expiry;
    let state = s.into_state();
    let _ = shared.router.send(Event::Disconnect {
        conn: id,
        kind,
        state: Box::new(state),
        session_expiry,
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
        crate::codec::reason::BAD_AUTHENTICATION_METHOD => "bad authentication method",
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
    /// MQTT 5 DISCONNECT with reason 0x04: publish the will all the same.
    GracefulWithWill,
    Closed,
    KeepAlive,
    /// A protocol violation, and the reason code an MQTT 5 client is told.
    Protocol(String, u8),
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
    level: Level,
    listener: &'a Listener,
    /// What an MQTT 5 client allows the broker to send.
    limits: ClientLimits,
    /// The session expiry interval, as the client last set it.
    session_expiry: u32,
    /// MQTT 5 topic aliases the client set up, by alias - 1.
    aliases: Vec<Option<Arc<str>>>,
    /// MQTT 5 QoS 1 messages forwarded whose PUBACK the router has not
    /// sent yet: with those awaiting PUBREL, the client's use of the
    /// broker's receive maximum.
    acks_due: usize,
    /// A persistent session's changes go to the journal (when it is on).
    persistent: bool,
}

impl<'a> Session<'a> {
    /// Boxed and out of line, so that the session lives on the heap and not
    /// in the frame under its loop (see [`run`]).
    #[inline(never)]
    fn new(
        c: Conn,
        a: Accepted,
        conn_id: ConnId,
        shared: &'a Shared,
        listener: &'a Listener,
    ) -> Box<Session<'a>> {
        let SessionState { inflight, pending } = a.reply.state;
        let silence_limit =
            (a.keep_alive > 0).then(|| Duration::from_millis(u64::from(a.keep_alive) * 1500));
        // Messages queued while offline count against the outbox limit too.
        let outbox = a.outbox;
        let queued = pending.len();
        let queued_bytes = pending.iter().map(|p| p.payload.len()).sum();
        let level = c.level;
        let mut s = Box::new(Session {
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
            level,
            listener,
            limits: a.limits,
            session_expiry: a.limits.session_expiry,
            aliases: Vec::new(),
            acks_due: 0,
            persistent: a.limits.session_expiry != 0,
        });
        s.outbox.add_queued(queued, queued_bytes);
        // Resend what was in flight, in order, before anything new [MQTT-4.4.0-1].
        let resend: Vec<Resend> = s.inflight.resend().collect();
        for r in resend {
            match r {
                Resend::Publish(p) => {
                    let p = s.unmounted(p);
                    s.c.queue(&Packet::Publish(p))
                }
                Resend::PubRel(id) => s.c.queue(&Packet::PubRel(Ack::ok(id))),
            }
        }
        s
    }

    fn run(&mut self) -> (DisconnectKind, End) {
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

    fn run_inner(&mut self) -> Result<End, End> {
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
                match self.c.next_packet() {
                    Ok(Some(p)) => {
                        if let Some(end) = self.handle(p)? {
                            return Ok(end);
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => return Err(End::Protocol(e.to_string(), e.reason_code())),
                }
            };
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
                self.take_outbox();
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

            // Paced: the socket is left unread (TCP slows the client down)
            // until a subscriber that drained wakes us, or the pace ends.
            let mut events = if paced.is_some() { 0 } else { POLLIN };
            if self.c.pending_write() > 0 {
                events |= POLLOUT;
            }
            fds[0].set_events(events);
            let buffered = paced.is_none() && self.c.buffered();
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
                    Err(ReadError::Decode(e)) => {
                        return Err(End::Protocol(e.to_string(), e.reason_code()));
                    }
                }
            }
        }
    }

    /// Handles one packet from the client. Ok(Some) ends the session.
    fn handle(&mut self, p: Packet) -> Result<Option<End>, End> {
        match p {
            Packet::Publish(p) => self.incoming_publish(p)?,
            Packet::PubAck(a) => {
                if self.inflight.puback(a.pkid) {
                    self.record_step(a.pkid, Step::Acked);
                } else {
                    debug!(
                        "Client {} sent PUBACK for unknown id {}.",
                        self.client_id, a.pkid
                    );
                }
            }
            // A PUBREC with an error reason ends that message's flow
            // [MQTT-4.3.3]: no PUBREL follows.
            Packet::PubRec(a) if a.reason >= 0x80 => {
                if self.inflight.refused(a.pkid) {
                    self.record_step(a.pkid, Step::Refused);
                }
            }
            Packet::PubRec(a) => {
                if self.inflight.pubrec(a.pkid) {
                    self.record_step(a.pkid, Step::Received);
                    // Not before the journal knows: a PUBLISH sent again
                    // after a crash would be a second copy to a receiver
                    // that has forgotten the id.
                    self.ack(Reply::PubRel(Ack::ok(a.pkid)), self.persistent)?;
                } else {
                    debug!(
                        "Client {} sent PUBREC for unknown id {}.",
                        self.client_id, a.pkid
                    );
                }
            }
            Packet::PubComp(a) => {
                if self.inflight.pubcomp(a.pkid) {
                    self.record_step(a.pkid, Step::Completed);
                }
            }
            Packet::PubRel(a) => {
                // Always answered, known id or not [MQTT-4.3.3-2].
                self.inflight.release_qos2(a.pkid);
                self.record_step(a.pkid, Step::Released);
                self.ack(Reply::PubComp(Ack::ok(a.pkid)), self.persistent)?;
            }
            Packet::Subscribe(mut subscribe) => {
                let max_qos = QoS::from_u8(self.listener.max_qos).unwrap_or(QoS::ExactlyOnce);
                for f in &mut subscribe.filters {
                    f.qos = f.qos.min(max_qos);
                    if self.mount_point.is_some() {
                        f.filter = self.mounted(&f.filter);
                    }
                }
                self.to_router(Event::Subscribe {
                    conn: self.conn_id,
                    subscribe: Box::new(subscribe),
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
            Packet::Disconnect(d) => return self.disconnect(&d).map(Some),
            // [MQTT-3.1.0-2]: a second CONNECT is a protocol violation.
            Packet::Connect(_) => return Err(End::SecondConnect),
            Packet::Auth(_) => {
                return Err(End::Protocol(
                    "AUTH, but no authentication method is offered".into(),
                    reason::BAD_AUTHENTICATION_METHOD,
                ));
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(End::Protocol(
                    format!("unexpected {} from a client", p.kind()),
                    reason::PROTOCOL_ERROR,
                ));
            }
        }
        Ok(None)
    }

    /// DISCONNECT from the client. MQTT 5 may change the session expiry
    /// interval, but not from 0 [MQTT-3.14.2-2], and may ask for its will.
    fn disconnect(&mut self, d: &Disconnect) -> Result<End, End> {
        if let Some(expiry) = d.props.int(id::SESSION_EXPIRY) {
            if self.session_expiry == 0 && expiry != 0 {
                return Err(End::Protocol(
                    "session expiry set in DISCONNECT after 0 in CONNECT".into(),
                    reason::PROTOCOL_ERROR,
                ));
            }
            self.session_expiry = expiry;
        }
        Ok(match d.reason {
            reason::DISCONNECT_WITH_WILL => End::GracefulWithWill,
            _ => End::Graceful,
        })
    }

    /// MQTT 5: the topic of a PUBLISH that uses a topic alias, and the
    /// alias recorded for later ones [MQTT-3.3.2.3.4].
    fn resolve_alias(&mut self, p: &mut Publish) -> Result<(), End> {
        let Some(alias) = p.props.as_ref().and_then(|pp| pp.topic_alias) else {
            return Ok(());
        };
        let invalid = |why: &str| End::Protocol(why.into(), reason::TOPIC_ALIAS_INVALID);
        if alias == 0 || alias > self.listener.max_topic_alias {
            return Err(invalid("topic alias out of range"));
        }
        let slot = usize::from(alias - 1);
        if p.topic.is_empty() {
            match self.aliases.get(slot).cloned().flatten() {
                Some(t) => p.topic = t,
                None => return Err(invalid("unknown topic alias")),
            }
        } else {
            if self.aliases.len() <= slot {
                self.aliases.resize(slot + 1, None);
            }
            self.aliases[slot] = Some(p.topic.clone());
        }
        // The alias is this connection's; it is not forwarded.
        if let Some(pp) = p.props.as_mut() {
            Arc::make_mut(pp).topic_alias = None;
        }
        Ok(())
    }

    fn incoming_publish(&mut self, mut p: Publish) -> Result<(), End> {
        let v5 = self.level == Level::V5;
        if p.retain && !self.shared.config.retain_available {
            return Err(End::Protocol(
                "retained message, but retain_available is false".into(),
                reason::RETAIN_NOT_SUPPORTED,
            ));
        }
        if p.qos as u8 > self.listener.max_qos {
            return Err(End::Protocol(
                format!("QoS {} is above max_qos", p.qos as u8),
                reason::QOS_NOT_SUPPORTED,
            ));
        }
        self.resolve_alias(&mut p)?;
        let limit = self.shared.config.message_size_limit as usize;
        // Oversized messages are dropped, but their QoS flow completes (Mosquitto).
        let mut refusal = None;
        if limit != 0 && p.payload.len() > limit {
            info!(
                "Dropped too large PUBLISH from {} ({} bytes) on {}.",
                self.client_id,
                p.payload.len(),
                p.topic
            );
            refusal = Some(reason::IMPLEMENTATION_SPECIFIC);
        } else if p.props.as_ref().is_some_and(|pp| pp.utf8)
            && std::str::from_utf8(&p.payload).is_err()
        {
            // Payload format indicator 1: the payload must be UTF-8.
            info!(
                "Dropped PUBLISH from {} on {}: payload is not UTF-8 as its format indicator says.",
                self.client_id, p.topic
            );
            refusal = Some(reason::PAYLOAD_FORMAT_INVALID);
        }
        // 3.x acknowledgements carry no reason.
        let answer = |id: u16| Ack {
            pkid: id,
            reason: if v5 { refusal.unwrap_or(0) } else { 0 },
        };
        match p.qos {
            QoS::AtMostOnce => {
                if refusal.is_none() {
                    self.forward(p)?;
                }
            }
            QoS::AtLeastOnce => {
                let id = p.pkid;
                // Until its PUBACK is written, whoever sends it.
                self.acks_due += 1;
                if refusal.is_some() || !v5 {
                    if refusal.is_none() {
                        self.forward(p)?;
                    }
                    self.ack(Reply::PubAck(answer(id)), true)?;
                } else {
                    // The router answers: the reason says whether anyone
                    // subscribed and whether the ACL allowed it.
                    self.check_receive_maximum()?;
                    self.forward(p)?;
                }
            }
            QoS::ExactlyOnce => {
                let id = p.pkid;
                // Forward once; a repeat before PUBREL only gets PUBREC again.
                let new = self.inflight.receive_qos2(id);
                if new && v5 {
                    self.check_receive_maximum()?;
                }
                // An error PUBREC (MQTT 5) ends the flow: no PUBREL follows.
                let refused = refusal.is_some() && v5;
                if new && !refused {
                    self.record(|client_id| Record::IncomingQos2 {
                        client_id,
                        pkid: id,
                    });
                }
                if !new || refusal.is_some() || !v5 {
                    if new && refusal.is_none() {
                        self.forward(p)?;
                    }
                    if refused {
                        self.inflight.release_qos2(id);
                    }
                    self.ack(Reply::PubRec(answer(id)), true)?;
                } else {
                    // The router answers, once the journal has it.
                    self.forward(p)?;
                }
            }
        }
        Ok(())
    }

    /// MQTT 5: the client may have no more QoS 1/2 messages unacknowledged
    /// than the receive maximum the broker sent [MQTT-3.3.4-9].
    fn check_receive_maximum(&self) -> Result<(), End> {
        let max = self.shared.config.max_inflight_messages;
        let used = self.acks_due + self.inflight.incoming_qos2().len();
        if max > 0 && used > usize::from(max) {
            return Err(End::Protocol(
                "receive maximum exceeded".into(),
                reason::RECEIVE_MAXIMUM_EXCEEDED,
            ));
        }
        Ok(())
    }

    /// Tells an MQTT 5 client why the broker closes its connection
    /// [MQTT-3.14]; 3.x has no way to say it.
    fn say_goodbye(&mut self, why: &End) {
        if self.level != Level::V5 {
            return;
        }
        let code = match why {
            End::TakenOver => reason::SESSION_TAKEN_OVER,
            End::Shutdown => reason::SERVER_SHUTTING_DOWN,
            End::KeepAlive => reason::KEEP_ALIVE_TIMEOUT,
            End::Protocol(_, code) => *code,
            _ => return,
        };
        self.c.queue(&Packet::Disconnect(Disconnect::with(code)));
        // Best effort: the socket is closed right after.
        let _ = self.c.flush();
    }

    /// A message for the client, without the mount point.
    fn unmounted(&self, mut p: Publish) -> Publish {
        if let Some(mp) = self.mount_point {
            if let Some(t) = p.topic.strip_prefix(mp) {
                p.topic = Arc::from(t);
            }
        }
        p
    }

    /// Whether an MQTT 5 client takes a packet this large; a message it
    /// does not is dropped, as Mosquitto does [MQTT-3.1.2-25].
    fn fits(&self, p: &Publish) -> bool {
        let max = self.limits.max_packet;
        max == 0 || crate::codec::publish_len(p, self.level == Level::V5) <= max as usize
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

    /// Takes what the router queued. Acknowledgements that the journal
    /// released go out at once: behind a full in-flight window they would
    /// wait for themselves (a PUBREL frees the window's QoS 2 slots).
    fn take_outbox(&mut self) {
        if self.shared.journal.is_none() {
            self.outbox.take(&mut self.pending);
            return;
        }
        let mut fresh = VecDeque::new();
        self.outbox.take(&mut fresh);
        for item in fresh {
            match item {
                Outgoing::Packet(
                    p @ (Packet::PubAck(_)
                    | Packet::PubRec(_)
                    | Packet::PubRel(_)
                    | Packet::PubComp(_)),
                ) => self.control(p),
                other => self.pending.push_back(other),
            }
        }
    }

    /// Sends an acknowledgement: with the journal on and `durable` set,
    /// through the router, which has the journal send it once what it
    /// depends on is on disk; otherwise at once.
    fn ack(&mut self, ack: Reply, durable: bool) -> Result<(), End> {
        if durable && self.shared.journal.is_some() {
            self.to_router(Event::Ack {
                conn: self.conn_id,
                ack,
            })
        } else {
            self.control(ack.packet());
            Ok(())
        }
    }

    /// Journals a change of this persistent session.
    fn record(&self, r: impl FnOnce(String) -> Record) {
        if let (Some(j), true) = (&self.shared.journal, self.persistent) {
            j.append(r(self.client_id.clone()));
        }
    }

    fn record_step(&self, pkid: u16, step: Step) {
        self.record(|client_id| Record::Progress {
            client_id,
            pkid,
            step,
        });
    }

    /// A queued message went into flight. A retained copy sent after a
    /// SUBACK (retain set) was never queued in the journal.
    fn record_sent(&self, p: &Publish) {
        if !p.retain {
            self.record(|client_id| Record::Sent {
                client_id,
                pkid: p.pkid,
                check: message_check(p),
            });
        }
    }

    fn queue_limits(&self) -> QueueLimits {
        QueueLimits::of(&self.shared.config)
    }

    fn to_router(&self, ev: Event) -> Result<(), End> {
        self.shared.router.send(ev).map_err(|_| End::Shutdown)
    }

    /// Whether the next pending item may go out now (the in-flight window
    /// has room for it), buffer space aside.
    fn can_pump(&self) -> bool {
        let max = self.shared.config.max_inflight_messages;
        // An MQTT 5 client's receive maximum narrows the window.
        let max = match (max, self.limits.receive_maximum) {
            (0, r) => r,
            (m, r) => m.min(r),
        };
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
        let now = Instant::now();
        let mut drained = false;
        while self.c.pending_write() < WRITE_HIGH_WATER && self.can_pump() {
            let Some(item) = self.pending.pop_front() else {
                break;
            };
            match item {
                Outgoing::Publish(p) => {
                    self.outbox.dequeued(1, p.payload.len());
                    drained = true;
                    // Expired while queued [MQTT-3.3.2-5], or too large
                    // for the client: dropped.
                    let p = self.unmounted(p);
                    if p.expired(now) || !self.fits(&p) {
                        continue;
                    }
                    let p = if p.qos == QoS::AtMostOnce {
                        p
                    } else {
                        let p = self.inflight.start(p);
                        self.record_sent(&p);
                        p
                    };
                    self.c.queue(&Packet::Publish(p));
                }
                Outgoing::Packet(p) => self.control(p),
            }
        }
        if drained {
            self.outbox.drained(self.queue_limits());
        }
    }

    /// Writes a control packet from the router (or one the journal
    /// released) after the acknowledgement bookkeeping it closes.
    fn control(&mut self, p: Packet) {
        match &p {
            Packet::PubAck(_) => self.acks_due = self.acks_due.saturating_sub(1),
            // An error PUBREC ends the flow: no PUBREL follows.
            Packet::PubRec(a) if a.reason >= 0x80 => self.inflight.release_qos2(a.pkid),
            _ => {}
        }
        self.c.queue(&p);
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
        // Publishers held back on this queue need not wait for it.
        self.outbox.release();
        SessionState {
            inflight: self.inflight,
            pending,
        }
    }
}
