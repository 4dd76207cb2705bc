//! CONNECT: the first packet, checked in the client thread before the
//! connection is registered with the router (Mosquitto's handle_connect.c).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use log::info;

use super::conn::{Conn, ReadError};
use super::{Shared, wait_readable};
use crate::codec::{ConnAck, Connect, Level, Packet, connack};
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
    /// The router is gone (shutting down).
    RouterGone,
}

/// An accepted connection, ready for the session loop.
pub struct Accepted {
    pub client_id: String,
    /// Clean session: nothing of it is persisted.
    pub clean: bool,
    pub keep_alive: u16,
    pub outbox: Arc<Outbox>,
    pub reply: ConnectReply,
}

/// Waits for CONNECT, checks it, registers with the router and sends CONNACK.
/// `tls_identity` is the user name a TLS listener with
/// `use_identity_as_username` or `use_subject_as_username` takes from the
/// client's certificate (or why there is none); None elsewhere.
pub fn handshake(
    c: &mut Conn,
    shared: &Shared,
    listener: &Listener,
    conn_id: ConnId,
    tls_identity: Option<Result<String, NoIdentity>>,
) -> Result<Accepted, Refused> {
    let timeout = Duration::from_secs(u64::from(shared.config.connect_timeout));
    let deadline = Instant::now() + timeout;
    let connect = loop {
        match c.next_packet() {
            Ok(Some(Packet::Connect(p))) => break p,
            Ok(Some(_)) => return Err(Refused::NotConnect),
            Ok(None) => {}
            Err(e) => {
                // An unknown protocol level or name gets its CONNACK first
                // [MQTT-3.1.2-2], as Mosquitto does.
                if let Some(code) = e.connack_code() {
                    send_connack(c, 0, code, false);
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
            }
            Ok(false) => return Err(Refused::Timeout),
            Err(e) => return Err(Refused::Read(ReadError::Io(e))),
        }
    };
    c.level = connect.level;
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
            send_connack(c, connect.level as u8, code, false);
            return Err(Refused::Code {
                code,
                client_id: connect.client_id,
            });
        }
    };
    let client_id = check(c, shared, listener, &connect, tls_user)?;
    let mut will = connect.will.clone();
    if let (Some(w), Some(mp)) = (&mut will, &listener.mount_point) {
        w.topic = Arc::from(format!("{mp}{}", w.topic));
    }

    let outbox = match Outbox::new() {
        Ok(o) => Arc::new(o),
        Err(_) => {
            send_connack(c, connect.level as u8, connack::SERVER_UNAVAILABLE, false);
            return Err(Refused::Code {
                code: connack::SERVER_UNAVAILABLE,
                client_id,
            });
        }
    };
    let (tx, rx) = crossbeam_channel::bounded(1);
    let req = ConnectRequest {
        conn: conn_id,
        client_id: client_id.clone(),
        level: connect.level,
        clean: connect.clean,
        will,
        username: connect.username.clone(),
        scope: shared.auth().index(listener),
        outbox: outbox.clone(),
        reply: tx,
    };
    if shared.router.send(Event::Connect(Box::new(req))).is_err() {
        return Err(Refused::RouterGone);
    }
    // A takeover waits for the old connection to hand its state back; that
    // takes one poll round of the old thread, far less than this bound.
    let reply = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(r) => r,
        Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
            return Err(Refused::RouterGone);
        }
    };
    send_connack(
        c,
        connect.level as u8,
        connack::ACCEPTED,
        reply.session_present,
    );
    let mut line = format!(
        "New client connected from {} as {} (p{}, c{}, k{}",
        shared.peer_text(c),
        client_id,
        connect.level.log_number(),
        connect.clean as u8,
        connect.keep_alive
    );
    if let Some(u) = &connect.username {
        let _ = write!(line, ", u'{u}'");
    }
    if shared.config.connection_messages {
        info!("{line}).");
    }
    Ok(Accepted {
        client_id,
        clean: connect.clean,
        keep_alive: connect.keep_alive,
        outbox,
        reply,
    })
}

/// Client id, keepalive and credential checks, in Mosquitto's order.
/// Returns the client id to use. `tls_user`: the TLS certificate gave the
/// user name and authenticated the client.
fn check(
    c: &mut Conn,
    shared: &Shared,
    l: &Listener,
    p: &Connect,
    tls_user: bool,
) -> Result<String, Refused> {
    let refuse = |c: &mut Conn, code: u8, id: &str| {
        send_connack(c, p.level as u8, code, false);
        Err(Refused::Code {
            code,
            client_id: id.to_string(),
        })
    };
    let config = &shared.config;
    let security = config.security(l);
    let mut client_id = p.client_id.clone();
    if client_id.is_empty() {
        // 3.1 requires an id; 3.1.1 allows an empty one only with a clean
        // session, and the broker assigns one [MQTT-3.1.3-7, 3.1.3-8].
        if p.level == Level::V31 || !p.clean || !security.allow_zero_length_clientid {
            return refuse(c, connack::IDENTIFIER_REJECTED, "<unknown>");
        }
        client_id = auto_id(&security.auto_id_prefix);
    }
    if let Some(prefix) = &config.clientid_prefixes {
        if !client_id.starts_with(prefix.as_str()) {
            return refuse(c, connack::NOT_AUTHORIZED, &client_id);
        }
    }
    if p.keep_alive > config.max_keepalive {
        // Mosquitto 2.0 refuses a 3.x keepalive above max_keepalive.
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
    if !tls_user && !scope.authenticate(p.username.as_deref(), p.password.as_deref()) {
        match &p.username {
            Some(u) => info!("Client {client_id} (u'{u}') failed authentication."),
            None => info!("Client {client_id} refused: anonymous access is off."),
        }
        return refuse(c, connack::NOT_AUTHORIZED, &client_id);
    }
    Ok(client_id)
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
/// session-present flag exists (3.1.1 and later).
fn send_connack(c: &mut Conn, level: u8, code: u8, session_present: bool) {
    c.queue(&Packet::ConnAck(ConnAck {
        session_present: session_present && level >= Level::V311 as u8,
        code,
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
