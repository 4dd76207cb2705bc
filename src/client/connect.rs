//! CONNECT: the first packet, checked in the client thread before the
//! connection is registered with the router (Mosquitto's handle_connect.c).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::sys::parked;
use log::{debug, info};

use super::conn::{Conn, ReadError};
use super::{ClientShared, wait_readable};
use crate::codec::props::id;
use crate::codec::{ConnAck, Connect, Level, Packet, Properties, Value, connack, reason};
use crate::config::Listener;
use crate::outbox::Outbox;
use crate::router::{ConnId, ConnectReply, ConnectRequest, Event};
use crate::tls::cert::NoIdentity;

/// Why a connection ended before it became a session.
#[derive(Debug)]
pub enum Refused {
    /// Nothing (or no whole CONNECT) within the connect timeout.
    Timeout,
    Read(ReadError),
    /// The first packet was not CONNECT.
    NotConnect,
    /// CONNACK with this non-zero return code was sent.
    Code {
        code: u8,
        client_id: String,
    },
    /// Its CONNECT, still incomplete, would take more than what is left of
    /// `max_connect_buffer`.
    Buffer,
    /// The router is gone (shutting down).
    RouterGone,
    /// MQTT 5: the CONNACK would exceed the Maximum Packet Size the client
    /// asked for, so none can be sent [MQTT-3.1.2-24]: closed, as Mosquitto.
    ConnAckTooLarge {
        client_id: String,
        max: u32,
    },
}

/// Bytes a connection may buffer before its CONNECT is complete without
/// counting against `max_connect_buffer`: a CONNECT is small, so a real
/// client never waits for the crowd.
const FREE_CONNECT_BYTES: usize = 4096;

/// What one connection holds of the budget of bytes buffered before
/// CONNECT (`max_connect_buffer`); given back when dropped.
pub struct Reserved<'a> {
    pool: &'a AtomicUsize,
    limit: usize,
    held: usize,
}

impl<'a> Reserved<'a> {
    fn new(pool: &'a AtomicUsize, limit: usize) -> Reserved<'a> {
        Reserved {
            pool,
            limit,
            held: 0,
        }
    }

    /// Holds what `buffered` bytes need; false when the budget has no room.
    fn hold(&mut self, buffered: usize) -> bool {
        let want = buffered.saturating_sub(FREE_CONNECT_BYTES);
        if want > self.held {
            let more = want - self.held;
            let before = self.pool.fetch_add(more, Ordering::Relaxed);
            if self.limit != 0 && before + more > self.limit {
                self.pool.fetch_sub(more, Ordering::Relaxed);
                return false;
            }
        } else {
            self.pool.fetch_sub(self.held - want, Ordering::Relaxed);
        }
        self.held = want;
        true
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.pool.fetch_sub(self.held, Ordering::Relaxed);
    }
}

/// An accepted connection, ready for the session loop.
pub struct Accepted {
    pub client_id: String,
    /// The keepalive in force (MQTT 5: the server keep alive, if one was sent).
    pub keep_alive: u16,
    pub outbox: Arc<Outbox>,
    pub reply: ConnectReply,
    /// What an MQTT 5 client asked for; the defaults for 3.x.
    pub limits: ClientLimits,
}

/// The MQTT 5 CONNECT properties that bound what the broker sends.
#[derive(Clone, Copy, Debug)]
pub struct ClientLimits {
    /// QoS 1/2 messages the client takes in flight at once.
    pub receive_maximum: u16,
    /// The largest packet the client accepts; 0 for no limit.
    pub max_packet: u32,
    /// The session expiry interval it asked for (3.x: 0 with a clean
    /// session, otherwise "never", u32::MAX).
    pub session_expiry: u32,
}

impl ClientLimits {
    fn of(c: &Connect) -> ClientLimits {
        let p = &c.props;
        let session_expiry = match c.level {
            Level::V5 => p.int(id::SESSION_EXPIRY).unwrap_or(0),
            _ if c.clean => 0,
            _ => u32::MAX,
        };
        ClientLimits {
            receive_maximum: p.int(id::RECEIVE_MAXIMUM).map_or(u16::MAX, |n| n as u16),
            max_packet: p.int(id::MAXIMUM_PACKET_SIZE).unwrap_or(0),
            session_expiry,
        }
    }
}

/// Waits for CONNECT, checks it, registers with the router and sends CONNACK.
/// `tls_identity` is the user name a TLS listener with
/// `use_identity_as_username` or `use_subject_as_username` takes from the
/// client's certificate (or why there is none); None elsewhere.
pub fn handshake(
    c: &mut Conn,
    shared: &ClientShared,
    listener: &Listener,
    (conn_id, deadline): (ConnId, Instant),
    tls_identity: Option<Result<String, NoIdentity>>,
) -> Result<Accepted, Refused> {
    let mut reserved = Reserved::new(&shared.connecting_bytes, shared.config.max_connect_buffer);
    let connect = loop {
        match c.next_packet() {
            Ok(Some(Packet::Connect(p))) => break p,
            Ok(Some(_)) => return Err(Refused::NotConnect),
            // The first byte already says it is not a CONNECT [MQTT-3.1.0-1]:
            // closed without waiting for the rest (a PROXY header on a
            // listener without enable_proxy_protocol, a stray protocol).
            Ok(None) if c.first_type().is_some_and(|t| t != 1) => {
                return Err(Refused::NotConnect);
            }
            Ok(None) => {}
            Err(e) => {
                // An unknown protocol level or name gets its CONNACK first
                // [MQTT-3.1.2-2], as Mosquitto does.
                if let Some(code) = e.connack_code() {
                    send_connack(c, Level::V311, code, false, Properties::default());
                }
                return Err(Refused::Read(ReadError::Decode(e)));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Refused::Timeout);
        }
        match wait_readable(c, deadline - now) {
            Ok(true) => {
                c.fill().map_err(Refused::Read)?;
                if !reserved.hold(c.undecoded()) {
                    return Err(Refused::Buffer);
                }
            }
            Ok(false) => return Err(Refused::Timeout),
            Err(e) => return Err(Refused::Read(ReadError::Io(e))),
        }
    };
    drop(reserved);
    c.level = connect.level;
    // accept_protocol_versions (Mosquitto 2.1): refused as an unknown
    // protocol level is.
    let level_number = connect.level as u8;
    if listener.accept_protocols & (1 << level_number) == 0 {
        info!(
            "Client {} refused: protocol level {level_number} is not in this listener's \
             accept_protocol_versions.",
            connect.client_id
        );
        let code = connack::BAD_PROTOCOL_VERSION;
        return Err(refuse(c, listener, connect.level, code, &connect.client_id));
    }
    let mut connect = connect;
    // The certificate names the user and has authenticated the client
    // (Mosquitto: a missing certificate is a bad user name, a missing CN
    // is not authorised).
    let tls_user = match tls_identity {
        None => false,
        Some(Ok(name)) => {
            connect.username = Some(name);
            connect.password = None;
            true
        }
        Some(Err(why)) => {
            let code = match why {
                NoIdentity::NoCertificate => connack::BAD_USERNAME_OR_PASSWORD,
                NoIdentity::NoCommonName => connack::NOT_AUTHORIZED,
            };
            return Err(refuse(c, listener, connect.level, code, &connect.client_id));
        }
    };
    // midge offers no enhanced authentication method: Mosquitto without an
    // auth plugin answers 0x8C.
    if connect.props.get(id::AUTH_METHOD).is_some() {
        let code = reason::BAD_AUTHENTICATION_METHOD;
        return Err(refuse(c, listener, connect.level, code, &connect.client_id));
    }
    let (client_id, assigned) = check(c, shared, listener, &connect, tls_user)?;
    // memory_limit: no new client while the heap is above it.
    let limit = shared.config.memory_limit;
    if crate::sys::heap_over(limit, 0) {
        info!("Client {client_id} refused: memory_limit ({limit} bytes) reached.");
        let code = match connect.level {
            Level::V5 => reason::QUOTA_EXCEEDED,
            _ => connack::SERVER_UNAVAILABLE,
        };
        return Err(refuse(c, listener, connect.level, code, &client_id));
    }
    // MQTT 5 gets the server's keepalive instead of a refusal when it asks
    // for none or for more than max_keepalive (Mosquitto 2.0).
    let max_keepalive = shared.config.max_keepalive;
    let server_keep_alive = (connect.level == Level::V5
        && (connect.keep_alive == 0 || connect.keep_alive > max_keepalive))
        .then_some(max_keepalive);
    let keep_alive = server_keep_alive.unwrap_or(connect.keep_alive);
    let mut will = connect.will.clone();
    if let (Some(w), Some(mp)) = (&mut will, &listener.mount_point) {
        w.topic = Arc::from(format!("{mp}{}", w.topic));
    }

    let outbox = match Outbox::for_client() {
        Ok(o) => Arc::new(o),
        Err(_) => {
            let code = connack::SERVER_UNAVAILABLE;
            return Err(refuse(c, listener, connect.level, code, &client_id));
        }
    };
    let limits = ClientLimits::of(&connect);
    let props = connack_properties(
        shared,
        listener,
        server_keep_alive,
        assigned.then_some(client_id.as_str()),
    );
    if limits.max_packet != 0 {
        let mut bytes = Vec::new();
        let ack = ConnAck {
            session_present: false,
            code: reason::SUCCESS,
            props: props.clone(),
        };
        crate::codec::encode(&Packet::ConnAck(ack), connect.level, &mut bytes);
        if bytes.len() > limits.max_packet as usize {
            return Err(Refused::ConnAckTooLarge {
                client_id,
                max: limits.max_packet,
            });
        }
    }
    let (tx, rx) = parked::channel(1);
    rx.attach();
    let req = ConnectRequest {
        conn: conn_id,
        client_id: client_id.clone(),
        level: connect.level,
        clean: connect.clean,
        session_expiry: limits.session_expiry,
        will,
        username: connect.username.clone(),
        scope: shared.auth().index(listener),
        outbox: outbox.clone(),
        bridge: connect.bridge,
        own_bridge: false,
        reply: tx,
    };
    if shared.router.send(Event::Connect(Box::new(req))).is_err() {
        return Err(Refused::RouterGone);
    }
    // A takeover waits for the old connection to hand its state back; that
    // takes one poll round of the old thread, far less than this bound.
    let Ok(Some(reply)) = rx.recv_until(Some(Instant::now() + Duration::from_secs(30))) else {
        return Err(Refused::RouterGone);
    };
    if reply.busy {
        info!(
            "Client {client_id} refused: global_max_clients ({}) sessions exist.",
            shared.config.global_max_clients.unwrap_or(0)
        );
        let code = match connect.level {
            Level::V5 => reason::SERVER_BUSY,
            _ => connack::SERVER_UNAVAILABLE,
        };
        return Err(refuse(c, listener, connect.level, code, &client_id));
    }
    send_connack(
        c,
        connect.level,
        connack::ACCEPTED,
        reply.session_present,
        props,
    );
    let mut line = format!(
        "New {} connected from {} as {} (p{}, c{}, k{}",
        if connect.bridge { "bridge" } else { "client" },
        shared.peer_text(c),
        client_id,
        connect.level.log_number(),
        connect.clean as u8,
        keep_alive
    );
    if let Some(u) = &connect.username {
        let _ = write!(line, ", u'{u}'");
    }
    if shared.config.connection_messages {
        info!("{line}).");
        // Mosquitto 2.1 names the TLS version and cipher of each client.
        if let Some((version, cipher)) = c.sock.tls_session() {
            info!("Client {client_id} negotiated {version} cipher {cipher}");
        }
    }
    Ok(Accepted {
        client_id,
        keep_alive,
        outbox,
        reply,
        limits,
    })
}

/// The CONNACK properties of an accepted MQTT 5 client, in the order and
/// with the choices of Mosquitto 2.0: what is not sent is available or
/// unlimited.
fn connack_properties(
    shared: &ClientShared,
    l: &Listener,
    server_keep_alive: Option<u16>,
    assigned_id: Option<&str>,
) -> Properties {
    let config = &shared.config;
    let mut p = Properties::default();
    if l.max_topic_alias > 0 {
        p.push(id::TOPIC_ALIAS_MAXIMUM, Value::Two(l.max_topic_alias));
    }
    if let Some(k) = server_keep_alive {
        p.push(id::SERVER_KEEP_ALIVE, Value::Two(k));
    }
    if let Some(a) = assigned_id {
        p.push(id::ASSIGNED_CLIENT_ID, Value::Str(a.to_string()));
    }
    if !config.retain_available {
        p.push(id::RETAIN_AVAILABLE, Value::Byte(0));
    }
    if config.max_packet_size != crate::config::MQTT_MAX_PACKET {
        p.push(
            id::MAXIMUM_PACKET_SIZE,
            Value::Four(config.max_packet_size as u32),
        );
    }
    if config.max_inflight_messages > 0 {
        p.push(
            id::RECEIVE_MAXIMUM,
            Value::Two(config.max_inflight_messages),
        );
    }
    if l.max_qos < 2 {
        p.push(id::MAXIMUM_QOS, Value::Byte(l.max_qos));
    }
    p
}

/// Sends a refusing CONNACK and says why the connection ends. `code` is
/// the 3.1.1 return code; MQTT 5 clients get Mosquitto's reason code for it.
fn refuse(c: &mut Conn, l: &Listener, level: Level, code: u8, client_id: &str) -> Refused {
    // Mosquitto tells a refused MQTT 5 client the maximum QoS too.
    let mut props = Properties::default();
    if l.max_qos < 2 {
        props.push(id::MAXIMUM_QOS, Value::Byte(l.max_qos));
    }
    send_connack(c, level, code, false, props);
    Refused::Code {
        code,
        client_id: client_id.to_string(),
    }
}

/// Client id, keepalive and credential checks, in Mosquitto's order.
/// Returns the client id to use and whether the broker assigned it.
/// `tls_user`: the TLS certificate gave the user name and authenticated
/// the client.
fn check(
    c: &mut Conn,
    shared: &ClientShared,
    l: &Listener,
    p: &Connect,
    tls_user: bool,
) -> Result<(String, bool), Refused> {
    let refuse = |c: &mut Conn, code: u8, id: &str| Err(refuse(c, l, p.level, code, id));
    let config = &shared.config;
    let security = config.security(l);
    let mut client_id = p.client_id.clone();
    let assigned = client_id.is_empty();
    if assigned {
        // 3.1 requires an id; 3.1.1 allows an empty one only with a clean
        // session, and the broker assigns one [MQTT-3.1.3-7, 3.1.3-8]; 5.0
        // with either [MQTT-3.1.3-6].
        let clean_ok = p.clean || p.level == Level::V5;
        if p.level == Level::V31 || !clean_ok || !security.allow_zero_length_clientid {
            return refuse(c, connack::IDENTIFIER_REJECTED, "<unknown>");
        }
        client_id = auto_id(config.auto_id_prefix(l));
    }
    // A will larger than message_size_limit could never be published:
    // Mosquitto refuses the CONNECT (MQTT 5: Packet too large).
    let limit = config.message_size_limit as usize;
    if limit != 0 && p.will.as_ref().is_some_and(|w| w.payload.len() > limit) {
        debug!("Client {client_id} connected with too large Will payload.");
        let code = match p.level {
            Level::V5 => reason::PACKET_TOO_LARGE,
            _ => connack::NOT_AUTHORIZED,
        };
        return refuse(c, code, &client_id);
    }
    if let Some(prefix) = &config.clientid_prefixes {
        if !client_id.starts_with(prefix.as_str()) {
            return refuse(c, connack::NOT_AUTHORIZED, &client_id);
        }
    }
    if p.keep_alive > config.max_keepalive && p.level != Level::V5 {
        // Refused for 3.x (MQTT 5 is told the server keep alive instead).
        return refuse(c, connack::IDENTIFIER_REJECTED, &client_id);
    }
    if l.use_username_as_clientid {
        match &p.username {
            Some(u) => client_id = u.clone(),
            None => return refuse(c, connack::NOT_AUTHORIZED, &client_id),
        }
    }
    // Mosquitto 2.0 answers 5 (not authorised) to every failed login, a
    // wrong password included, under 3.1 and 3.1.1 alike.
    let auth = shared.auth();
    let scope = auth.scope(auth.index(l));
    // A client certificate used as the user name is the authentication
    // (use_identity_as_username): no password is asked, as in Mosquitto.
    // listener_allow_anonymous decides for its listener; a scope the
    // configuration lacks lets nobody in whatever it says.
    let anonymous = match l.allow_anonymous {
        Some(v) if auth.has_scope(auth.index(l)) => v,
        _ => scope.allow_anonymous,
    };
    if !tls_user
        && !scope.authenticate_with(anonymous, p.username.as_deref(), p.password.as_deref())
    {
        match &p.username {
            Some(u) => info!("Client {client_id} (u'{u}') failed authentication."),
            None => info!("Client {client_id} refused: anonymous access is off."),
        }
        return refuse(c, connack::NOT_AUTHORIZED, &client_id);
    }
    Ok((client_id, assigned))
}

/// A client id like Mosquitto's: `auto_id_prefix` (`auto-`) and a random UUID.
fn auto_id(prefix: &str) -> String {
    let mut b = [0u8; 16];
    if crate::sys::random_bytes(&mut b).is_err() {
        // No randomness: fall back to time and a counter, still unique.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = t.to_le_bytes();
    }
    let mut s = String::with_capacity(prefix.len() + 36);
    s.push_str(prefix);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{x:02X}");
    }
    s
}

/// Writes a CONNACK and pushes it out. `level` decides whether the
/// session-present flag exists (3.1.1 and later) and the form of the
/// return code: `code` is a 3.1.1 one, which MQTT 5 clients get as
/// Mosquitto's reason code.
fn send_connack(c: &mut Conn, level: Level, code: u8, session_present: bool, props: Properties) {
    let code = match level {
        Level::V5 => v5_reason(code),
        _ => code,
    };
    c.queue(&Packet::ConnAck(ConnAck {
        session_present: session_present && level >= Level::V311,
        code,
        props,
    }));
    // Best effort: a refused client is closed right after.
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.pending_write() > 0 && Instant::now() < deadline {
        if c.flush().is_err() {
            return;
        }
        if c.pending_write() > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The MQTT 5 reason code Mosquitto 2.0 sends for a 3.1.1 CONNACK code
/// (reason codes themselves pass through).
fn v5_reason(code: u8) -> u8 {
    match code {
        connack::ACCEPTED => reason::SUCCESS,
        connack::BAD_PROTOCOL_VERSION => reason::UNSUPPORTED_PROTOCOL_VERSION,
        // Only an empty client id is refused this way in 5.0.
        connack::IDENTIFIER_REJECTED => reason::UNSPECIFIED,
        connack::SERVER_UNAVAILABLE => reason::SERVER_UNAVAILABLE,
        connack::BAD_USERNAME_OR_PASSWORD => reason::BAD_USERNAME_OR_PASSWORD,
        connack::NOT_AUTHORIZED => reason::NOT_AUTHORIZED,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn auto_ids_look_like_mosquittos() {
        let a = super::auto_id("auto-");
        let b = super::auto_id("auto-");
        assert_ne!(a, b);
        assert!(a.starts_with("auto-"));
        assert_eq!(a.len(), 5 + 36);
        assert_eq!(a.matches('-').count(), 5);
    }
}
