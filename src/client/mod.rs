//! One OS thread per client: read, decode, forward to the router; drain the
//! outbox, encode, write.
//!
//! The thread blocks in poll(2) on two descriptors: its socket and its
//! outbox's wake fd. It never waits on a timer to deliver: the router's push
//! wakes it. QoS 1/2 state lives here ([`crate::session::inflight`]) and
//! goes back to the router when the connection ends. Every error ends in
//! [`run`], which logs it once and tells the router.
//!
//! Here: the thread, the connection's set-up until CONNECT is accepted
//! ([`connect`]), and the session it then serves ([`Connected`]), whose
//! loop and end are in `session_loop.rs`, its handling of the client's
//! packets in `incoming.rs` and its output pump in `output.rs`.

pub mod conn;
pub mod connect;
pub mod connecting;
mod incoming;
mod output;
pub mod pool;
pub mod proxy;
mod session_loop;
mod slot;
pub mod tasks;

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::router::RouterTx;
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
use crate::transport::{HandshakeError, Peer, Socket, Stream};
use crate::websockets;
use conn::{Conn, ReadError};
use connect::{Accepted, ClientLimits, Refused};
use parking_lot::RwLock;
pub use slot::{ListenerState, Slot};

/// Output buffered beyond this waits until the socket drains, so a client
/// that does not read holds its backlog in the bounded outbox, not here.
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// Control packets from the router (SUBACK, UNSUBACK, MQTT 5 acks) that
/// may wait unsent behind a full in-flight window before the client's
/// packets are left unread.
const MAX_PENDING_CONTROLS: usize = 1024;

/// The least stack of a TLS client's thread.
const TLS_STACK: usize = 256 * 1024;

/// What every client thread shares: settings and the router's channel.
pub struct ClientShared {
    pub config: Arc<Config>,
    pub router: RouterTx,
    pub metrics: Arc<Metrics>,
    /// Password and ACL files; replaced whole by a reload.
    auth: RwLock<Arc<Auth>>,
    next_conn: AtomicU64,
    /// With `persistence_journal`: where durable changes go.
    pub journal: Option<Arc<Journal>>,
    /// Bytes buffered by connections that have not completed CONNECT,
    /// counted against `max_connect_buffer` ([`connect::Reserved`]).
    connecting_bytes: AtomicUsize,
    /// The connections before CONNECT, their threads capped.
    pub connecting: connecting::Connecting,
    /// Connections open, each with its thread, and how many may be: below
    /// the service's task limit ([`tasks`]).
    open: AtomicUsize,
    max_open: usize,
    /// Client threads whose connection ended, waiting for the next.
    pool: pool::Pool<Job>,
}

/// A connection for a client thread to serve.
struct Job {
    sock: Socket,
    peer: Peer,
    slot: Slot,
    id: ConnId,
}

impl ClientShared {
    pub fn new(
        config: Arc<Config>,
        router: RouterTx,
        metrics: Arc<Metrics>,
        auth: Arc<Auth>,
    ) -> ClientShared {
        let connecting = connecting::Connecting::new(config.max_connecting);
        let limit = tasks::task_limit();
        let max_open = tasks::connection_cap(limit);
        if let (Some(limit), Some(max)) = (limit, max_open) {
            info!("Task limit {limit}: at most {max} connections at once.");
        }
        // global_max_connections (Mosquitto 2.1) caps it further.
        let max_open = match (max_open, config.global_max_connections) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        ClientShared {
            config,
            router,
            metrics,
            auth: RwLock::new(auth),
            next_conn: AtomicU64::new(1),
            journal: None,
            connecting_bytes: AtomicUsize::new(0),
            connecting,
            open: AtomicUsize::new(0),
            max_open: max_open.unwrap_or(usize::MAX),
            pool: pool::Pool::new(),
        }
    }

    /// Takes a place for a new connection and its thread, unless the cap
    /// below the task limit is reached.
    pub fn admit(&self) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_open).then_some(n + 1)
            })
            .is_ok()
    }

    /// A connection taken by [`ClientShared::admit`] ended.
    fn release(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// A connection id for a thread that attaches to the router without a
    /// socket of its own (a bridge).
    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Client threads journal their sessions' changes and hold back
    /// acknowledgements until they are durable.
    pub fn with_journal(mut self, journal: Option<Arc<Journal>>) -> ClientShared {
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
        match c.proxied_peer.clone().map_or_else(|| c.sock.peer(), Ok) {
            Ok(p) => p.with_port(),
            Err(_) => "unknown".into(),
        }
    }
}

/// Starts the thread for a freshly accepted connection.
pub fn spawn(sock: Socket, peer: Peer, slot: Slot, shared: Arc<ClientShared>) -> io::Result<()> {
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut stack = shared.config.client_stack_size;
    if slot.listener().tls.is_some() {
        // Certificate checks (RSA, X.509 parsing) need more room than
        // MQTT; only the pages touched cost memory.
        stack = stack.max(TLS_STACK);
    }
    shared.connecting.enter(id, peer.clone(), &sock);
    let job = Job {
        sock,
        peer,
        slot,
        id,
    };
    // A thread whose connection ended takes it, or a new one.
    let Err(job) = shared.pool.hand_off(stack, job) else {
        return Ok(());
    };
    let started = std::thread::Builder::new()
        .name(format!("client-{id}"))
        .stack_size(stack)
        .spawn({
            let shared = shared.clone();
            move || serve_jobs(job, stack, &shared)
        });
    if started.is_err() {
        shared.connecting.leave(id);
        shared.release();
    }
    started.map(drop)
}

/// A client thread's life: its connection, then each one it takes from
/// the pool, until none comes in time. Kept lean: every byte of its frame
/// sits above an idle client's session on the stack.
fn serve_jobs(mut job: Job, stack: usize, shared: &ClientShared) {
    loop {
        let Job {
            sock,
            peer,
            slot,
            id,
        } = job;
        run(sock, peer, &slot, id, shared);
        drop(slot);
        match wait_for_job(stack, shared) {
            Some(next) => job = next,
            None => return,
        }
    }
}

/// Waits in the pool for the next connection, with what the last one
/// alone needed out of memory meanwhile.
#[inline(never)]
fn wait_for_job(stack: usize, shared: &ClientShared) -> Option<Job> {
    sys::trim_stack();
    let next = shared.pool.next_job(stack, pool::KEEP)?;
    sys::set_thread_name(&format!("client-{}", next.id));
    Some(next)
}

/// The one place where a connection's errors end.
///
/// Its two halves are out of line so that each has its own stack frames:
/// handling CONNECT (TLS, WebSockets, decoding, the CONNACK, log lines)
/// goes deeper than the session that follows, and once it is done the
/// stack pages it alone used are given back ([`sys::trim_stack`]), so an
/// idle client keeps only what its session needs.
fn run(sock: Socket, peer: Peer, slot: &Slot, id: ConnId, shared: &ClientShared) {
    let opened = open(sock, peer, slot, id, shared);
    shared.connecting.leave(id);
    if let Some((c, accepted)) = opened {
        Metrics::add(&shared.metrics.connections, 1);
        sys::trim_stack();
        serve(c, accepted, id, shared, &slot.listener().conf);
    }
    shared.release();
}

/// Sets the connection up until its CONNECT is accepted; None when it
/// ended before (logged).
#[inline(never)]
fn open(
    mut sock: Socket,
    mut peer: Peer,
    slot: &Slot,
    id: ConnId,
    shared: &ClientShared,
) -> Option<(Conn, Accepted)> {
    let listener = &slot.listener().conf;
    let port = slot.listener().port;
    Metrics::add(&shared.metrics.sockets, 1);
    // The PROXY header, the TLS and WebSocket handshakes and the CONNECT
    // share one deadline.
    let timeout = Duration::from_secs(u64::from(shared.config.connect_timeout));
    let deadline = Instant::now() + timeout;
    let mut proxied = None;
    if listener.proxy_protocol != 0 {
        match proxy::read_header(&mut sock, listener.proxy_protocol, deadline) {
            Ok(h) if listener.proxy_require_tls.is_some() && !h.tls => {
                info!(
                    "Client <unknown> from {peer} on port {port} disconnected: its PROXY \
                     header does not say the client used TLS (proxy_protocol_v2_require_tls)."
                );
                return None;
            }
            Ok(proxy::Header {
                client: Some(client),
                ..
            }) => {
                debug!("PROXY header from {peer}: the client is {client}.");
                peer = Peer::Ip(client);
                proxied = Some(peer.clone());
            }
            Ok(_) => {}
            Err(e) => {
                info!("Client <unknown> from {peer} on port {port} disconnected: {e}.");
                return None;
            }
        }
    }
    if shared.config.connection_messages {
        info!("New connection from {} on port {port}.", peer.with_port());
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
    c.proxied_peer = proxied;
    match c.sock.handshake(deadline) {
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
    let handshake = connect::handshake(&mut c, shared, listener, (id, deadline), identity);
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
                Refused::Buffer => warn!(
                    "Client <unknown> from {peer} disconnected: its CONNECT would take more \
                     than the {} bytes that connections not yet connected may buffer \
                     (max_connect_buffer).",
                    shared.config.max_connect_buffer
                ),
                Refused::RouterGone => debug!("Connection from {peer} dropped during shutdown."),
                Refused::ConnAckTooLarge { client_id, max } => info!(
                    "Client {client_id} from {peer} disconnected: its maximum packet size \
                     ({max} bytes) is too small for the CONNACK."
                ),
            }
            None
        }
    }
}

/// Runs an accepted connection's session to its end.
#[inline(never)]
fn serve(c: Conn, accepted: Accepted, id: ConnId, shared: &ClientShared, listener: &Listener) {
    let chatty = shared.config.connection_messages;
    let mut s = Connected::new(c, accepted, id, shared, listener);
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
        End::Quota(why) => warn!("Client {} disconnected: {why}.", s.client_id),
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

/// Waits until the socket is readable or `timeout` passes. While output
/// is at its bound (WebSocket pongs the client does not read), nothing
/// more is read: it waits until the socket takes some of that output.
fn wait_readable(c: &mut Conn, timeout: Duration) -> io::Result<bool> {
    let full = c.pending_write() >= WRITE_HIGH_WATER;
    if c.buffered() && !full {
        return Ok(true);
    }
    let events = if full { POLLOUT } else { POLLIN };
    let mut fds = [PollFd::new(c.sock.as_raw_fd(), events)];
    let ready = sys::poll(&mut fds, Some(timeout))? > 0;
    if ready && full {
        c.flush()?;
    }
    Ok(ready)
}

/// Why the session loop ended.
/// The reason code of an [`End::Protocol`] after which no DISCONNECT is
/// sent: the connection just closes (0 is never a protocol error's code).
const CLOSE_ONLY: u8 = 0;

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
    /// `memory_limit` reached by what the client sent; MQTT 5 clients are
    /// told Quota exceeded.
    Quota(String),
}

/// A connected client: the socket plus this session's QoS state.
struct Connected<'a> {
    c: Conn,
    shared: &'a ClientShared,
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
    aliases: crate::session::aliases::Aliases,
    /// MQTT 5 QoS 1 messages forwarded whose PUBACK the router has not
    /// sent yet: with those awaiting PUBREL, the client's use of the
    /// broker's receive maximum.
    acks_due: usize,
    /// SUBSCRIBEs whose filters at these places were refused, by packet
    /// id, until their SUBACK comes back from the router.
    refused_filters: Vec<(u16, Vec<usize>)>,
    /// The control packets in `pending`.
    controls_pending: usize,
    /// A persistent session's changes go to the journal (when it is on).
    persistent: bool,
}

impl<'a> Connected<'a> {
    /// Boxed and out of line, so that the session lives on the heap and not
    /// in the frame under its loop (see [`run`]).
    #[inline(never)]
    fn new(
        c: Conn,
        a: Accepted,
        conn_id: ConnId,
        shared: &'a ClientShared,
        listener: &'a Listener,
    ) -> Box<Connected<'a>> {
        let SessionState {
            mut inflight,
            pending,
        } = a.reply.state;
        // Repeats of unreleased QoS 2 messages count per connection.
        inflight.new_connection();
        let silence_limit =
            (a.keep_alive > 0).then(|| Duration::from_millis(u64::from(a.keep_alive) * 1500));
        // Messages queued while offline count against the outbox limit too.
        let outbox = a.outbox;
        let queued = pending.len();
        let queued_bytes = pending.iter().map(|p| p.payload.len()).sum();
        let level = c.level;
        let mut s = Box::new(Connected {
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
            aliases: crate::session::aliases::Aliases::default(),
            acks_due: 0,
            controls_pending: 0,
            refused_filters: Vec::new(),
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
}
