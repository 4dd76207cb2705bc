//! The bridge's connection to the remote broker, over the client link
//! ([`crate::link`]): open TCP (and TLS, through the link's rustls set-up
//! and midge's certificate checks), CONNECT with Mosquitto's bridge bit,
//! and the link's packet reader polling the socket together with the
//! bridge's outbox wake fd.
//!
//! Packets are built in [`connect_packet`] and by the caller; the protocol
//! version comes from [`level`], the one place that maps the config to it.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Instant;

use rustls::ClientConfig;

use crate::codec::{self, Connect, Disconnect, Level, Packet, Properties, QoS, Will};
use crate::config::{Bridge, BridgeProtocol, TlsVersion};
use crate::link::{self, CONNECT_TIMEOUT, DialError, Link, LinkStream, NoConnAck, strerror, tls};
pub use crate::link::{Lost, Next};

/// The MQTT version for a bridge's configured protocol.
pub fn level(p: BridgeProtocol) -> Level {
    match p {
        BridgeProtocol::V31 => Level::V31,
        BridgeProtocol::V311 => Level::V311,
        BridgeProtocol::V5 => Level::V5,
    }
}

/// The rustls configuration of a TLS bridge, read at start-up so that a
/// bad file stops the broker with its message.
pub fn tls_config(b: &Bridge) -> Result<Option<Arc<ClientConfig>>, String> {
    if !b.tls.enabled() {
        return Ok(None);
    }
    let t = &b.tls;
    let opts = tls::Options {
        cafile: t.cafile.clone(),
        capath: t.capath.clone(),
        cert: t.certfile.clone(),
        key: t.keyfile.clone(),
        insecure: t.insecure,
        version: Some(match t.version {
            TlsVersion::Tls12 => "tlsv1.2".into(),
            TlsVersion::Tls13 => "tlsv1.3".into(),
        }),
        ciphers: None,
        alpn: t.alpn.clone(),
        // No CA file or directory: the public roots midge carries; with
        // bridge_tls_use_os_certs, those beside the CAs given.
        os_certs: t.cafile.is_none() && t.capath.is_none(),
        os_certs_and_cas: t.use_os_certs,
    };
    opts.client_config()
        .map(Some)
        .map_err(|e| format!("bridge {}: {}", b.name, e.replace('\n', " ")))
}

/// Why a connection attempt failed; the text is the log line's.
#[derive(Debug)]
pub enum Failure {
    /// The host name did not resolve.
    Lookup(String),
    /// TCP connect, TLS or the CONNECT exchange failed.
    Io(String),
    /// CONNACK with a non-zero return code.
    Refused(u8),
}

/// A connected session with the remote broker.
pub struct Remote {
    link: Link,
    /// `bridge_max_packet_size`: larger outgoing packets are not sent.
    max_packet: usize,
    pub session_present: bool,
}

/// What [`Remote::send`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Written,
    /// Larger than `bridge_max_packet_size`, so not sent; its remaining
    /// length, the size Mosquitto's log line gives.
    TooLarge(usize),
}

/// MQTT 5: the bridge's Receive Maximum (`bridge_receive_maximum`, 20)
/// and Topic Alias Maximum (`bridge_max_topic_alias`, 10; none sent for
/// 0); a persistent remote session (cleansession false) must also ask for
/// a session expiry, or it ends with the connection, so midge's bridges
/// ask for `bridge_session_expiry_interval`, by default "never".
fn connect_properties(b: &Bridge) -> Properties {
    let mut p = Properties::default();
    let v5 = level(b.protocol) == Level::V5;
    if v5 {
        p.push(
            codec::props::id::RECEIVE_MAXIMUM,
            codec::props::Value::Two(b.receive_maximum),
        );
    }
    link::add_session_expiry(
        &mut p,
        level(b.protocol),
        b.clean_session,
        b.session_expiry_interval,
    );
    if v5 && b.max_topic_alias != 0 {
        p.push(
            codec::props::id::TOPIC_ALIAS_MAXIMUM,
            codec::props::Value::Two(b.max_topic_alias),
        );
    }
    p
}

/// The CONNECT a bridge sends: its client id, credentials, and the will
/// that tells the remote side the bridge is gone.
pub fn connect_packet(b: &Bridge) -> Connect {
    let will = (b.notifications && !b.notifications_local_only).then(|| Will {
        topic: Arc::from(b.notification_topic.as_str()),
        payload: Arc::from(&b"0"[..]),
        qos: QoS::AtLeastOnce,
        retain: true,
        props: None,
    });
    Connect {
        level: level(b.protocol),
        client_id: b.remote_clientid.clone(),
        clean: b.clean_session,
        keep_alive: b.keepalive,
        username: b.remote_username.clone(),
        password: link::password(&b.remote_username, &b.remote_password),
        will,
        bridge: false,
        props: connect_properties(b),
    }
}

/// Opens a TCP connection to `host:port`, from `bind` if given.
fn open_tcp(host: &str, port: u16, bind: Option<&str>) -> Result<std::net::TcpStream, Failure> {
    link::dial(host, port, bind).map_err(|e| match e {
        DialError::Lookup(e) => Failure::Lookup(strerror(&e)),
        DialError::NoAddress => Failure::Io(strerror(&io::Error::from(io::ErrorKind::NotFound))),
        DialError::Connect(e) => Failure::Io(strerror(&e)),
    })
}

impl Remote {
    /// Connects to `host:port` and exchanges CONNECT and CONNACK.
    /// `private`: set Mosquitto's bridge bit on the protocol level.
    pub fn connect(
        b: &Bridge,
        host: &str,
        port: u16,
        tls: Option<&Arc<ClientConfig>>,
        private: bool,
    ) -> Result<Remote, Failure> {
        let tcp = open_tcp(host, port, b.bind_address.as_deref())?;
        let _ = tcp.set_nodelay(true);
        let _ = tcp.set_read_timeout(Some(CONNECT_TIMEOUT));
        let _ = tcp.set_write_timeout(Some(CONNECT_TIMEOUT));
        let stream = match tls {
            None => LinkStream::Tcp(tcp),
            Some(config) => {
                let s = tls::connect(config.clone(), host, tcp).map_err(|e| {
                    // The tools' text is two lines; the first says why.
                    Failure::Io(e.lines().next().unwrap_or("TLS error").to_string())
                })?;
                LinkStream::Tls(Box::new(s))
            }
        };
        let mut r = Remote {
            link: Link::new(stream, level(b.protocol), b.keepalive, None),
            max_packet: if b.max_packet_size == 0 {
                usize::MAX
            } else {
                b.max_packet_size as usize
            },
            session_present: false,
        };
        let mut connect = connect_packet(b);
        // MQTT 5 has no bridge bit (no-local subscriptions instead).
        connect.bridge = private && connect.level != Level::V5;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let ack = match r.link.handshake(connect, Some(deadline)) {
            Ok(a) => a,
            Err(NoConnAck::Write(e)) => return Err(Failure::Io(strerror(&e))),
            Err(NoConnAck::Unexpected) => return Err(Failure::Io("protocol error".into())),
            Err(NoConnAck::Deadline) => return Err(Failure::Io("no CONNACK in time".into())),
            Err(NoConnAck::Lost(Lost::Protocol(e))) => {
                return Err(Failure::Io(format!("protocol error: {e}")));
            }
            Err(NoConnAck::Lost(_)) => {
                return Err(Failure::Io("connection closed by the remote broker".into()));
            }
        };
        if ack.code != 0 {
            return Err(Failure::Refused(ack.code));
        }
        r.session_present = ack.session_present;
        if let LinkStream::Tcp(s) = &r.link.stream {
            let _ = s.set_read_timeout(None);
        } else if let LinkStream::Tls(s) = &r.link.stream {
            let _ = s.sock.set_read_timeout(None);
        }
        Ok(r)
    }

    /// Sends one packet. A packet over `bridge_max_packet_size` is dropped,
    /// as Mosquitto drops it.
    pub fn send(&mut self, p: &Packet) -> Result<Sent, Lost> {
        let mut out = Vec::new();
        codec::encode(p, self.link.level(), &mut out);
        // Mosquitto counts the remaining length and its own length bytes,
        // not the first byte, against the limit.
        if out.len() - 1 > self.max_packet {
            let length_bytes = 1 + out[1..].iter().take_while(|b| *b & 0x80 != 0).count();
            return Ok(Sent::TooLarge(out.len() - 1 - length_bytes));
        }
        self.link.write(&out).map_err(|_| Lost::Closed)?;
        Ok(Sent::Written)
    }

    /// Sends DISCONNECT and closes.
    pub fn close(mut self) {
        let _ = self.send(&Packet::Disconnect(Disconnect::default()));
        self.link.stream.shutdown();
    }

    /// The next packet from the remote; `Input` when `extra` is readable,
    /// `Deadline` at `deadline`.
    pub fn next(&mut self, extra: Option<RawFd>, deadline: Option<Instant>) -> Result<Next, Lost> {
        self.link.next(extra, deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::props::{Value, id};
    use crate::config::Config;
    use std::path::Path;

    fn bridge(extra: &str) -> Bridge {
        let text = format!("connection b\naddress 127.0.0.1:1883\ntopic # out\n{extra}");
        let config = Config::parse(&text, Path::new("test.conf")).expect("config parses");
        config.bridges.into_iter().next().expect("one bridge")
    }

    #[test]
    fn an_mqtt5_bridge_announces_receive_maximum_20_and_keeps_its_session() {
        let c = connect_packet(&bridge("bridge_protocol_version mqttv50\n"));
        assert_eq!(c.level, Level::V5);
        assert_eq!(c.props.get(id::RECEIVE_MAXIMUM), Some(&Value::Two(20)));
        assert_eq!(
            c.props.get(id::SESSION_EXPIRY),
            Some(&Value::Four(u32::MAX))
        );

        let clean = connect_packet(&bridge(
            "bridge_protocol_version mqttv50\ncleansession true\n",
        ));
        assert_eq!(clean.props.get(id::RECEIVE_MAXIMUM), Some(&Value::Two(20)));
        assert_eq!(clean.props.get(id::SESSION_EXPIRY), None);
    }

    #[test]
    fn the_mosquitto_2_1_options_set_the_connect_properties() {
        let c = connect_packet(&bridge(
            "bridge_protocol_version mqttv50\nbridge_receive_maximum 9\n\
             bridge_max_topic_alias 4\nbridge_session_expiry_interval 0\n",
        ));
        assert_eq!(c.props.get(id::RECEIVE_MAXIMUM), Some(&Value::Two(9)));
        assert_eq!(c.props.get(id::TOPIC_ALIAS_MAXIMUM), Some(&Value::Two(4)));
        // 0: the remote session ends with the connection.
        assert_eq!(c.props.get(id::SESSION_EXPIRY), None);
        let c = connect_packet(&bridge(
            "bridge_protocol_version mqttv50\nbridge_session_expiry_interval 63\n",
        ));
        assert_eq!(c.props.get(id::SESSION_EXPIRY), Some(&Value::Four(63)));
        assert_eq!(c.props.get(id::TOPIC_ALIAS_MAXIMUM), None);
    }

    #[test]
    fn an_mqtt311_bridge_sends_no_properties() {
        let c = connect_packet(&bridge(""));
        assert_eq!(c.level, Level::V311);
        assert_eq!(c.props.get(id::RECEIVE_MAXIMUM), None);
    }
}
