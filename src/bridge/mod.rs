//! Bridges (`connection NAME` sections): one thread per bridge that is a
//! client of the remote broker and, like a client thread, a client of the
//! local router, which stays the one owner of routing state.
//!
//! Locally the thread attaches to the session `local_clientid` for its
//! whole life and subscribes to the local side of every `out`/`both` topic.
//! The router pushes matching messages onto its outbox; while the remote
//! is connected they are remapped and sent, and QoS 1/2 state lives in the
//! session's [`Inflight`](crate::session::inflight::Inflight), as for a
//! client. While the remote is away, QoS 1/2 messages wait in the session
//! (counted against the queue limits, and saved with it on shutdown when
//! `local_cleansession` is false); QoS 0 messages are dropped, as Mosquitto
//! drops them. Messages from the remote are remapped and published
//! locally; the router does not send them back over the bridge they came
//! in on.
//!
//! Reconnection never gives up (`start_type automatic`): after a failed
//! attempt or a lost connection the thread waits `restart_timeout`, with
//! decorrelated jitter between base and cap, and tries the next address.

mod remote;
pub mod topics;

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use rustls::ClientConfig;

use crate::client::ClientShared;
use crate::codec::{
    Ack, Packet, Properties, Publish, QoS, Subscribe, SubscribeFilter, Unsubscribe,
};
use crate::config::{Bridge, StartType};
use crate::link::connack_string;
use crate::outbox::{Outbox, Outgoing};
use crate::router::{ConnId, ConnectRequest, DisconnectKind, Event, event::BROKER};
use crate::session::inflight::{Resend, SessionState};
use crate::sys::{self, PollFd, parked};
use remote::{Failure, Lost, Next, Remote, Sent};

pub use remote::tls_config;

/// A bridge thread's stack: TLS certificate checks need room.
const STACK: usize = 256 * 1024;

/// Every bridge's TLS set-up, read at start-up (before privileges drop): a
/// bad file is a start-up error, not a reconnection loop.
pub type TlsConfigs = Vec<Option<Arc<ClientConfig>>>;

pub fn load_tls(bridges: &[Bridge]) -> Result<TlsConfigs, String> {
    bridges.iter().map(tls_config).collect()
}

/// Starts one thread per configured bridge. Each bridge's local session
/// and subscriptions are set up here, before the listeners accept anyone,
/// so a message published right after start-up is queued for the bridge.
pub fn start(shared: &Arc<ClientShared>, tls: TlsConfigs) -> io::Result<()> {
    for (b, tls) in shared.config.bridges.iter().zip(tls) {
        let name = format!("bridge-{}", b.name);
        let Some(link) = BridgeThread::attach(b.clone(), shared) else {
            error!("Error: unable to start bridge: the broker is stopping.");
            continue;
        };
        std::thread::Builder::new()
            .name(name)
            .stack_size(STACK)
            .spawn(move || run(link, tls))?;
    }
    Ok(())
}

/// Why the connected phase ended.
enum End {
    Lost,
    /// The first address answers again (`round_robin false`).
    Primary,
    /// Lazy bridge with nothing to do for `idle_timeout`.
    Idle,
    Shutdown,
}

/// One bridge's thread state.
struct BridgeThread {
    b: Bridge,
    shared: Arc<ClientShared>,
    conn: ConnId,
    outbox: Arc<Outbox>,
    /// The local session's QoS 1/2 state towards the remote, and the
    /// messages waiting for the remote (both counted by the outbox).
    state: SessionState,
    /// Whether the remote accepted the bridge bit; cleared by a CONNACK
    /// refusing the protocol version, as Mosquitto does.
    private: bool,
    /// MQTT 5: the topic aliases the remote set up on this connection
    /// (at most `bridge_max_topic_alias`), by alias - 1.
    aliases: crate::session::aliases::Aliases,
}

fn run(mut link: BridgeThread, tls: Option<Arc<ClientConfig>>) {
    link.notify_local(false);
    let mut backoff = Backoff::new(link.b.restart.base, link.b.restart.cap);
    let mut index = 0;
    let mut first = true;
    loop {
        // Wait until it is time to (re)connect, keeping QoS 1/2 messages.
        let now = Instant::now();
        let wake = match link.b.start_type {
            StartType::Once if !first => None,
            _ if first => Some(now),
            _ => Some(now + backoff.next()),
        };
        first = false;
        if !link.wait_offline(wake) {
            break;
        }
        let (host, port) = link.b.addresses[index].clone();
        info!("Connecting bridge (step 1) {} ({host}:{port})", link.b.name);
        let r = Remote::connect(&link.b, &host, port, tls.as_ref(), link.private);
        let remote = match r {
            Ok(r) => r,
            Err(f) => {
                match f {
                    Failure::Lookup(e) => {
                        warn!("Warning: Error resolving bridge address: {e}.")
                    }
                    Failure::Io(e) => error!("Error creating bridge: {e}."),
                    Failure::Refused(code) => {
                        error!("{}", connack_string(code));
                        if code == crate::codec::connack::BAD_PROTOCOL_VERSION && link.private {
                            // Not a broker that knows the bridge bit.
                            link.private = false;
                        }
                    }
                }
                index = (index + 1) % link.b.addresses.len();
                continue;
            }
        };
        backoff.reset();
        info!("Connecting bridge (step 2) {} ({host}:{port})", link.b.name);
        let end = link.connected(remote, index);
        link.notify_local(false);
        if link.b.local_clean_session {
            link.forget_outgoing();
        }
        match end {
            End::Shutdown => break,
            End::Idle => {}
            // As Mosquitto: after a loss the next address, in both modes.
            End::Lost => index = (index + 1) % link.b.addresses.len(),
            End::Primary => index = 0,
        }
    }
    link.detach();
}

impl BridgeThread {
    /// Attaches to the local session and subscribes to the outgoing topics.
    fn attach(b: Bridge, shared: &Arc<ClientShared>) -> Option<BridgeThread> {
        let conn = shared.next_conn_id();
        let outbox = Arc::new(Outbox::new().ok()?);
        let (tx, rx) = parked::channel(1);
        rx.attach();
        let req = ConnectRequest {
            conn,
            client_id: b.local_clientid.clone(),
            level: remote::level(b.protocol),
            clean: b.local_clean_session,
            session_expiry: if b.local_clean_session { 0 } else { u32::MAX },
            will: None,
            username: b.local_username.clone(),
            scope: 0,
            outbox: outbox.clone(),
            bridge: true,
            own_bridge: true,
            reply: tx,
        };
        shared.router.send(Event::Connect(Box::new(req))).ok()?;
        let reply = rx.recv_until(None).ok()??;
        if reply.busy {
            error!(
                "Bridge {}: no local session: global_max_clients sessions exist.",
                b.name
            );
            return None;
        }
        let state = reply.state;
        let bytes = state.pending.iter().map(|p| p.payload.len()).sum();
        outbox.add_queued(state.pending.len(), bytes);
        let filters: Vec<SubscribeFilter> = b
            .topics
            .iter()
            .filter(|t| t.direction.outgoing())
            .map(|t| {
                debug!(
                    "Bridge {} doing local SUBSCRIBE on topic {}",
                    b.local_clientid, t.local
                );
                SubscribeFilter::new(&t.local, qos(t.qos))
            })
            .collect();
        if !filters.is_empty() {
            let subscribe = Box::new(Subscribe {
                pkid: 1,
                filters,
                sub_id: None,
                props: Properties::default(),
            });
            shared
                .router
                .send(Event::Subscribe { conn, subscribe })
                .ok()?;
        }
        Some(BridgeThread {
            private: b.try_private,
            aliases: crate::session::aliases::Aliases::default(),
            b,
            shared: shared.clone(),
            conn,
            outbox,
            state,
        })
    }

    /// Hands the session state back to the router (saved with persistence
    /// when the local session is persistent).
    fn detach(&mut self) {
        let state = std::mem::take(&mut self.state);
        let bytes = state.pending.iter().map(|p| p.payload.len()).sum();
        self.outbox.dequeued(state.pending.len(), bytes);
        let _ = self.shared.router.send(Event::Disconnect {
            conn: self.conn,
            kind: DisconnectKind::Shutdown,
            state: Box::new(state),
            session_expiry: if self.b.local_clean_session {
                0
            } else {
                u32::MAX
            },
        });
    }

    fn shutdown_requested(&self) -> bool {
        self.outbox.close_requested().is_some()
    }

    /// Messages waiting for the remote, in flight or not.
    fn backlog(&self) -> usize {
        self.state.pending.len() + self.state.inflight.len()
    }

    /// With `local_cleansession true` the local session ends with each
    /// connection, as Mosquitto's does: the messages waiting for the remote
    /// are dropped when it goes away (PUBRELs due stay).
    fn forget_outgoing(&mut self) {
        let bytes = self.state.pending.iter().map(|p| p.payload.len()).sum();
        self.outbox.dequeued(self.state.pending.len(), bytes);
        let dropped =
            self.state.pending.len() + self.state.inflight.retain_unacknowledged(|_| false);
        self.state.pending.clear();
        if dropped > 0 {
            info!(
                "Bridge {} dropped {dropped} message(s) for the remote: its local session is clean.",
                self.b.local_clientid
            );
        }
    }

    /// Moves what the router queued into `pending`; QoS 0 is dropped while
    /// the remote is away, and everything with `local_cleansession true`.
    fn take_outbox(&mut self, online: bool) -> Vec<Publish> {
        let mut items = VecDeque::new();
        self.outbox.take(&mut items);
        let mut now = Vec::new();
        for item in items {
            let Outgoing::Publish(p) = item else { continue };
            if p.qos == QoS::AtMostOnce || (!online && self.b.local_clean_session) {
                self.outbox.dequeued(1, p.payload.len());
                if online {
                    now.push(p);
                }
            } else {
                self.state.pending.push_back(p);
            }
        }
        now
    }

    /// Waits while the remote is not connected, until `wake` (None: until
    /// shutdown) and, for a lazy bridge, until `threshold` messages wait.
    /// False: shut down.
    fn wait_offline(&mut self, wake: Option<Instant>) -> bool {
        let lazy = self.b.start_type == StartType::Lazy;
        loop {
            if self.shutdown_requested() {
                return false;
            }
            self.take_outbox(false);
            let now = Instant::now();
            let due = wake.is_some_and(|w| now >= w);
            if due && (!lazy || self.backlog() >= self.b.threshold as usize) {
                return true;
            }
            let mut fds = [PollFd::new(
                std::os::fd::AsRawFd::as_raw_fd(self.outbox.wake_fd()),
                libc::POLLIN,
            )];
            // Past the wake time only new messages matter (lazy bridges).
            let timeout = wake.filter(|_| !due).map(|w| w - now);
            if sys::poll(&mut fds, timeout).is_err() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The connected phase: until the remote is lost, the bridge idles
    /// out, or the broker stops.
    fn connected(&mut self, mut r: Remote, index: usize) -> End {
        // Aliases belong to one network connection [MQTT-3.3.2-7].
        self.aliases.clear();
        let end = match self.start_remote(&mut r) {
            Ok(()) => self.pump(&mut r, index),
            Err(e) => Err(e),
        };
        match end {
            Ok(end) => {
                if !self.b.notifications_local_only && self.b.notifications {
                    // A clean DISCONNECT drops the will: say it here.
                    let _ = r.send(&notification(
                        &self.b.notification_topic,
                        false,
                        QoS::AtMostOnce,
                    ));
                }
                r.close();
                end
            }
            Err(lost) => {
                match lost {
                    Lost::Closed => {
                        info!("Client {} closed its connection.", self.b.local_clientid)
                    }
                    Lost::Timeout => info!(
                        "Client {} has exceeded timeout, disconnecting.",
                        self.b.local_clientid
                    ),
                    Lost::Protocol(e) => warn!(
                        "Client {} disconnected due to protocol error: {e}.",
                        self.b.local_clientid
                    ),
                }
                End::Lost
            }
        }
    }

    /// After CONNACK: notifications, remote subscriptions, and what was in
    /// flight or waiting.
    fn start_remote(&mut self, r: &mut Remote) -> Result<(), Lost> {
        if self.b.notifications {
            if !self.b.notifications_local_only {
                r.send(&notification(
                    &self.b.notification_topic,
                    true,
                    QoS::AtMostOnce,
                ))?;
            }
            self.notify_local(true);
        }
        for t in &self.b.topics {
            if t.direction.incoming() {
                let pkid = self.state.inflight.take_id();
                debug!(
                    "Bridge {} sending SUBSCRIBE (Mid: {pkid}, Topic: {}, QoS: {}, Options: 0x00)",
                    self.b.local_clientid, t.remote, t.qos
                );
                // MQTT 5 has no bridge bit: the remote subscription is
                // no-local and retain-as-published instead.
                let v5 = self.b.protocol == crate::config::BridgeProtocol::V5;
                let mut f = SubscribeFilter::new(&t.remote, qos(t.qos));
                // No Local is refused on a shared subscription
                // [MQTT-3.8.3-4]: a `$share/` remote topic goes without it.
                f.no_local = v5 && !t.remote.starts_with("$share/");
                f.retain_as_published = v5;
                r.send(&Packet::Subscribe(Subscribe {
                    pkid,
                    filters: vec![f],
                    sub_id: None,
                    props: Properties::default(),
                }))?;
            } else if self.b.attempt_unsubscribe {
                let pkid = self.state.inflight.take_id();
                debug!(
                    "Bridge {} sending UNSUBSCRIBE (Mid: {pkid}, Topic: {})",
                    self.b.local_clientid, t.remote
                );
                r.send(&Packet::Unsubscribe(Unsubscribe {
                    pkid,
                    filters: vec![t.remote.clone()],
                }))?;
            }
        }
        let resend: Vec<Resend> = self.state.inflight.resend().collect();
        for item in resend {
            match item {
                Resend::Publish(p) => self.send_inflight(r, p)?,
                Resend::PubRel(id) => {
                    r.send(&Packet::PubRel(Ack::ok(id)))?;
                }
            }
        }
        self.fill_window(r)
    }

    /// Sends a message with its remote topic. False: dropped, because it
    /// maps to no topic (its `topic` line was removed) or is larger than
    /// `bridge_max_packet_size`.
    fn send_publish(&self, r: &mut Remote, mut p: Publish) -> Result<bool, Lost> {
        let Some(t) = topics::to_remote(&self.b.topics, &p.topic) else {
            return Ok(false);
        };
        p.topic = Arc::from(t);
        if !self.b.outgoing_retain {
            p.retain = false;
        }
        match r.send(&Packet::Publish(p))? {
            Sent::Written => Ok(true),
            Sent::TooLarge(len) => {
                info!(
                    "Dropping too large outgoing PUBLISH for {} ({len} bytes)",
                    self.b.local_clientid
                );
                Ok(false)
            }
        }
    }

    /// Sends a QoS 1/2 message that is in flight; one that cannot be sent
    /// leaves the window at once (nothing would acknowledge it).
    fn send_inflight(&mut self, r: &mut Remote, p: Publish) -> Result<(), Lost> {
        let id = p.pkid;
        if !self.send_publish(r, p)? {
            self.state.inflight.refused(id);
        }
        Ok(())
    }

    /// Moves waiting QoS 1/2 messages into flight while there is room.
    fn fill_window(&mut self, r: &mut Remote) -> Result<(), Lost> {
        let (max, max_bytes) = (
            self.shared.config.max_inflight_messages,
            self.shared.config.max_inflight_bytes,
        );
        while self.state.inflight.has_room(max, max_bytes) {
            let Some(p) = self.state.pending.pop_front() else {
                break;
            };
            self.outbox.dequeued(1, p.payload.len());
            let p = self.state.inflight.start(p);
            self.send_inflight(r, p)?;
        }
        Ok(())
    }

    /// Moves messages both ways until the connection ends.
    fn pump(&mut self, r: &mut Remote, index: usize) -> Result<End, Lost> {
        let wake = std::os::fd::AsRawFd::as_raw_fd(self.outbox.wake_fd());
        let idle = Duration::from_secs(u64::from(self.b.idle_timeout));
        let mut last_traffic = Instant::now();
        // A bridge on a secondary address looks for its primary again.
        let mut primary_check = (index != 0 && !self.b.round_robin)
            .then(|| Instant::now() + Duration::from_secs(u64::from(self.b.restart.base)));
        loop {
            if self.shutdown_requested() {
                return Ok(End::Shutdown);
            }
            for p in self.take_outbox(true) {
                last_traffic = Instant::now();
                self.send_publish(r, p)?;
            }
            if !self.state.pending.is_empty() {
                last_traffic = Instant::now();
                self.fill_window(r)?;
            }
            let lazy = self.b.start_type == StartType::Lazy;
            let mut deadline = lazy.then(|| last_traffic + idle);
            if let Some(t) = primary_check {
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
            match r.next(Some(wake), deadline)? {
                Next::Input => {}
                Next::Deadline => {
                    let now = Instant::now();
                    if lazy && now >= last_traffic + idle && self.backlog() == 0 {
                        info!(
                            "Bridge {} stopping: idle for {}s.",
                            self.b.name,
                            idle.as_secs()
                        );
                        return Ok(End::Idle);
                    }
                    if primary_check.is_some_and(|t| now >= t) {
                        let (host, port) = &self.b.addresses[0];
                        if std::net::TcpStream::connect((host.as_str(), *port)).is_ok() {
                            info!(
                                "Bridge {}: primary address {host}:{port} is back.",
                                self.b.name
                            );
                            return Ok(End::Primary);
                        }
                        primary_check =
                            Some(now + Duration::from_secs(u64::from(self.b.restart.base)));
                    }
                }
                Next::Packet(p) => {
                    if matches!(p, Packet::Publish(_)) {
                        last_traffic = Instant::now();
                    }
                    self.handle_remote(r, p)?;
                }
            }
        }
    }

    /// One packet from the remote broker.
    fn handle_remote(&mut self, r: &mut Remote, p: Packet) -> Result<(), Lost> {
        match p {
            Packet::Publish(mut m) => {
                self.resolve_alias(&mut m)?;
                let (id, q) = (m.pkid, m.qos);
                let deliver = q != QoS::ExactlyOnce || self.state.inflight.receive_qos2(id);
                if deliver {
                    self.publish_local(m);
                }
                match q {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => {
                        r.send(&Packet::PubAck(Ack::ok(id)))?;
                    }
                    QoS::ExactlyOnce => {
                        r.send(&Packet::PubRec(Ack::ok(id)))?;
                    }
                }
            }
            Packet::PubRel(a) => {
                self.state.inflight.release_qos2(a.pkid);
                r.send(&Packet::PubComp(Ack::ok(a.pkid)))?;
            }
            Packet::PubAck(a) => {
                self.state.inflight.puback(a.pkid);
                self.fill_window(r)?;
            }
            // An error PUBREC (MQTT 5) ends the exchange.
            Packet::PubRec(a) if a.reason >= 0x80 => {
                self.state.inflight.refused(a.pkid);
                self.fill_window(r)?;
            }
            Packet::PubRec(a) => {
                // Answered for an unknown id too, as Mosquitto does: the
                // remote may hold a flow this side forgot (a restart
                // without persistence).
                self.state.inflight.pubrec(a.pkid);
                r.send(&Packet::PubRel(Ack::ok(a.pkid)))?;
            }
            Packet::PubComp(a) => {
                self.state.inflight.pubcomp(a.pkid);
                self.fill_window(r)?;
            }
            Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {}
            // A remote broker has no reason to ping, but Mosquitto's bridge
            // answers one, and so does midge's.
            Packet::PingReq => {
                r.send(&Packet::PingResp)?;
            }
            other => {
                return Err(Lost::Protocol(crate::codec::DecodeError::BadFlags(
                    other.kind(),
                )));
            }
        }
        Ok(())
    }

    /// MQTT 5: the topic of a PUBLISH from the remote that uses a topic
    /// alias, and the alias recorded for later ones. An alias above
    /// `bridge_max_topic_alias` (the Topic Alias Maximum the bridge
    /// announced), or one never set, ends the connection.
    fn resolve_alias(&mut self, m: &mut Publish) -> Result<(), Lost> {
        self.aliases
            .resolve(m, self.b.max_topic_alias)
            .map_err(|_| Lost::Protocol(crate::codec::DecodeError::BadTopic))
    }

    /// A message from the remote, remapped and routed locally.
    fn publish_local(&self, mut m: Publish) {
        let Some(t) = topics::to_local(&self.b.topics, &m.topic) else {
            debug!(
                "Bridge {}: message on unbridged topic {} dropped.",
                self.b.name, m.topic
            );
            return;
        };
        m.topic = Arc::from(t);
        let _ = self.shared.router.send(Event::Publish {
            conn: self.conn,
            publish: m,
        });
    }

    /// The local state notification, retained, as the broker itself.
    fn notify_local(&self, up: bool) {
        if !self.b.notifications {
            return;
        }
        let Packet::Publish(publish) =
            notification(&self.b.notification_topic, up, QoS::AtLeastOnce)
        else {
            return;
        };
        let _ = self.shared.router.send(Event::Publish {
            conn: BROKER,
            publish,
        });
    }
}

/// `1` (connected) or `0`, retained. At QoS 0 to the remote: its packet
/// id could collide with the session's in-flight ones (the will, `0`, is
/// QoS 1); at QoS 1 locally, where the router assigns ids.
fn notification(topic: &str, up: bool, qos: QoS) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: true,
        topic: Arc::from(topic),
        pkid: 0,
        payload: Arc::from(if up { &b"1"[..] } else { &b"0"[..] }),
        props: None,
    })
}

fn qos(n: u8) -> QoS {
    QoS::from_u8(n).unwrap_or(QoS::AtMostOnce)
}

/// `restart_timeout`: a constant delay, or Mosquitto's decorrelated jitter
/// (`sleep = min(cap, random_between(base, sleep * 3))`).
struct Backoff {
    base: u64,
    cap: Option<u64>,
    sleep: u64,
}

impl Backoff {
    fn new(base: u32, cap: Option<u32>) -> Backoff {
        Backoff {
            base: u64::from(base),
            cap: cap.map(u64::from),
            sleep: u64::from(base),
        }
    }

    fn next(&mut self) -> Duration {
        let Some(cap) = self.cap else {
            return Duration::from_secs(self.base);
        };
        let hi = (self.sleep * 3).max(self.base + 1);
        let mut r = [0u8; 8];
        let _ = sys::random_bytes(&mut r);
        let span = hi - self.base;
        self.sleep = (self.base + u64::from_le_bytes(r) % span).min(cap);
        Duration::from_secs(self.sleep)
    }

    fn reset(&mut self) {
        self.sleep = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_between_base_and_cap() {
        let mut b = Backoff::new(2, Some(7));
        for _ in 0..100 {
            let s = b.next().as_secs();
            assert!((2..=7).contains(&s), "{s}");
        }
        let mut c = Backoff::new(3, None);
        assert_eq!(c.next(), Duration::from_secs(3));
    }
}
