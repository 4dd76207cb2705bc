//! `connection NAME` sections: Mosquitto 2.0's bridge options (see
//! `man mosquitto.conf`, "Configuring Bridges"), acted on by `crate::bridge`.
//!
//! A `connection` line opens a section; every bridge option that follows
//! belongs to it, whatever other options come in between (as in Mosquitto).
//! A bridge option before any `connection` is an error.

use std::path::PathBuf;

use super::parse::Line;
use super::{ConfigError, ErrorKind, Origin, TlsVersion};
use crate::topic;

/// The MQTT version a bridge speaks to its remote broker. The one place
/// that says which versions bridges support.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BridgeProtocol {
    V31,
    #[default]
    V311,
    V5,
}

/// `topic PATTERN [DIRECTION [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    #[default]
    Out,
    In,
    Both,
}

impl Direction {
    pub fn outgoing(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    pub fn incoming(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

/// One `topic` line, with its full local and remote filters worked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeTopic {
    pub direction: Direction,
    /// 0, 1 or 2.
    pub qos: u8,
    pub local_prefix: String,
    pub remote_prefix: String,
    /// The filter on the local broker: local prefix + pattern.
    pub local: String,
    /// The filter on the remote broker: remote prefix + pattern.
    pub remote: String,
}

/// `start_type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartType {
    /// Connect at start-up and again after every loss.
    #[default]
    Automatic,
    /// Connect once `threshold` messages wait; stop after `idle_timeout`.
    Lazy,
    /// Connect at start-up; never again after a loss.
    Once,
}

/// `restart_timeout BASE [CAP]`: a constant delay, or back-off with
/// decorrelated jitter from BASE up to CAP (Mosquitto's default 5 30).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restart {
    pub base: u32,
    pub cap: Option<u32>,
}

/// The bridge's TLS options; TLS is on when any of them is given. Without
/// `bridge_cafile` and `bridge_capath` the remote's certificate is checked
/// against the public roots midge carries (webpki-roots).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeTls {
    pub cafile: Option<PathBuf>,
    pub capath: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub insecure: bool,
    pub version: TlsVersion,
    pub alpn: Option<String>,
    /// `bridge_tls_use_os_certs` (Mosquitto 2.1): trust the public roots
    /// midge carries too, beside `bridge_cafile` and `bridge_capath`.
    pub use_os_certs: bool,
    /// The first TLS option of the section.
    pub at: Option<Origin>,
}

impl BridgeTls {
    pub fn enabled(&self) -> bool {
        self.at.is_some()
    }
}

/// One `connection` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bridge {
    pub name: String,
    /// The `connection` line.
    pub at: Origin,
    /// `address`/`addresses`: host and port, tried in order.
    pub addresses: Vec<(String, u16)>,
    pub round_robin: bool,
    pub topics: Vec<BridgeTopic>,
    /// Client id on the remote broker; default `HOSTNAME.NAME`.
    pub remote_clientid: String,
    /// Client id of the bridge's session on this broker; default
    /// `local.REMOTE_CLIENTID`.
    pub local_clientid: String,
    pub remote_username: Option<String>,
    pub remote_password: Option<String>,
    /// User name of the local session, for ACL checks.
    pub local_username: Option<String>,
    pub local_password: Option<String>,
    pub clean_session: bool,
    /// Defaults to `clean_session`.
    pub local_clean_session: bool,
    pub keepalive: u16,
    pub idle_timeout: u32,
    pub restart: Restart,
    pub start_type: StartType,
    pub threshold: u32,
    pub notifications: bool,
    pub notifications_local_only: bool,
    /// Default `$SYS/broker/connection/REMOTE_CLIENTID/state`.
    pub notification_topic: String,
    pub try_private: bool,
    pub protocol: BridgeProtocol,
    pub outgoing_retain: bool,
    pub attempt_unsubscribe: bool,
    /// Largest packet sent to the remote broker (0 = no limit).
    pub max_packet_size: u32,
    pub bind_address: Option<String>,
    pub tls: BridgeTls,
    /// `bridge_receive_maximum` (Mosquitto 2.1): the Receive Maximum an
    /// MQTT 5 bridge announces.
    pub receive_maximum: u16,
    /// `bridge_session_expiry_interval` (Mosquitto 2.1): the Session
    /// Expiry Interval an MQTT 5 bridge asks for; None, midge's default.
    pub session_expiry_interval: Option<u32>,
    /// `bridge_max_topic_alias` (Mosquitto 2.1): the topic aliases an
    /// MQTT 5 remote may set up towards the bridge.
    pub max_topic_alias: u16,
}

/// The Receive Maximum an MQTT 5 bridge announces unless
/// `bridge_receive_maximum` says otherwise, as Mosquitto's bridges do (its
/// default `max_inflight_messages`).
pub const DEFAULT_RECEIVE_MAXIMUM: u16 = 20;

/// `bridge_max_topic_alias` unset: 0, Mosquitto 2.0's bridges (which set
/// up no aliases) rather than 2.1's 10, so that an MQTT 5 bridge's CONNECT
/// stays what a 2.0 peer and its tests expect (docs/CONFIG.md).
pub const DEFAULT_MAX_TOPIC_ALIAS: u16 = 0;

/// Options given explicitly, for defaults worked out at the end.
#[derive(Debug, Default)]
pub(super) struct Given {
    remote_clientid: bool,
    local_clientid: bool,
    local_clean_session: bool,
    notification_topic: bool,
    seen: Vec<&'static str>,
}

/// Every option of a `connection` section.
pub(super) const OPTIONS: &[&str] = &[
    "address",
    "addresses",
    "bridge_alpn",
    "bridge_attempt_unsubscribe",
    "bridge_bind_address",
    "bridge_cafile",
    "bridge_capath",
    "bridge_certfile",
    "bridge_insecure",
    "bridge_keyfile",
    "bridge_max_packet_size",
    "bridge_max_topic_alias",
    "bridge_outgoing_retain",
    "bridge_protocol_version",
    "bridge_receive_maximum",
    "bridge_require_ocsp",
    "bridge_session_expiry_interval",
    "bridge_tls_use_os_certs",
    "bridge_tls_version",
    "cleansession",
    "clientid",
    "idle_timeout",
    "keepalive_interval",
    "local_cleansession",
    "local_clientid",
    "local_password",
    "local_username",
    "notifications",
    "notifications_local_only",
    "notification_topic",
    "password",
    "remote_clientid",
    "remote_password",
    "remote_username",
    "restart_timeout",
    "round_robin",
    "start_type",
    "threshold",
    "topic",
    "try_private",
    "username",
];

impl Bridge {
    pub(super) fn new(l: &Line) -> Result<Bridge, ConfigError> {
        let name = l.one()?.to_string();
        Ok(Bridge {
            name,
            at: l.origin(),
            addresses: Vec::new(),
            round_robin: false,
            topics: Vec::new(),
            remote_clientid: String::new(),
            local_clientid: String::new(),
            remote_username: None,
            remote_password: None,
            local_username: None,
            local_password: None,
            clean_session: false,
            local_clean_session: false,
            keepalive: 60,
            idle_timeout: 60,
            restart: Restart {
                base: 5,
                cap: Some(30),
            },
            start_type: StartType::Automatic,
            threshold: 10,
            notifications: true,
            notifications_local_only: false,
            notification_topic: String::new(),
            try_private: true,
            protocol: BridgeProtocol::V311,
            outgoing_retain: true,
            attempt_unsubscribe: true,
            max_packet_size: 0,
            bind_address: None,
            tls: BridgeTls::default(),
            receive_maximum: DEFAULT_RECEIVE_MAXIMUM,
            session_expiry_interval: None,
            max_topic_alias: DEFAULT_MAX_TOPIC_ALIAS,
        })
    }

    /// One option of this section. Warnings go to `warnings`.
    pub(super) fn option(
        &mut self,
        l: &Line,
        given: &mut Given,
        warnings: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        let Some(&name) = OPTIONS.iter().find(|n| **n == l.option) else {
            return Err(l.err(ErrorKind::Unknown));
        };
        // String options may be given once per section, as in Mosquitto.
        let once = |given: &mut Given, key: &'static str| {
            if given.seen.contains(&key) {
                return Err(l.err(ErrorKind::Duplicate));
            }
            given.seen.push(key);
            Ok(())
        };
        let path = |l: &Line| l.string().map(|s| Some(PathBuf::from(s)));
        match name {
            "address" | "addresses" => {
                once(given, "address")?;
                if l.args.is_empty() {
                    return Err(l.err(ErrorKind::MissingValue));
                }
                self.addresses = l
                    .args
                    .iter()
                    .map(|a| parse_address(a).map_err(|why| l.bad(why)))
                    .collect::<Result<_, _>>()?;
            }
            "round_robin" => self.round_robin = l.bool()?,
            "topic" => self.topics.push(parse_topic(l)?),
            "remote_clientid" | "clientid" => {
                once(given, "remote_clientid")?;
                self.remote_clientid = l.one()?.to_string();
                given.remote_clientid = true;
            }
            "local_clientid" => {
                once(given, "local_clientid")?;
                self.local_clientid = l.one()?.to_string();
                given.local_clientid = true;
            }
            "remote_username" | "username" => {
                once(given, "remote_username")?;
                self.remote_username = Some(l.string()?);
            }
            "remote_password" | "password" => {
                once(given, "remote_password")?;
                self.remote_password = Some(l.string()?);
            }
            "local_username" => {
                once(given, "local_username")?;
                self.local_username = Some(l.string()?);
            }
            "local_password" => {
                once(given, "local_password")?;
                self.local_password = Some(l.string()?);
            }
            "cleansession" => self.clean_session = l.bool()?,
            "local_cleansession" => {
                self.local_clean_session = l.bool()?;
                given.local_clean_session = true;
            }
            "keepalive_interval" => {
                let n = l.num::<u16>(0, u16::MAX)?;
                if n < 5 {
                    warnings.push(format!(
                        "{}: keepalive interval too low, using 5 seconds.",
                        l.origin()
                    ));
                }
                self.keepalive = n.max(5);
            }
            "idle_timeout" => self.idle_timeout = l.num(1, u32::MAX)?,
            "restart_timeout" => {
                let num = |v: &str| -> Result<u32, ConfigError> {
                    match v.parse::<u32>() {
                        Ok(n) if n > 0 => Ok(n),
                        _ => Err(l.bad(format!("'{v}' is not a number of seconds above 0"))),
                    }
                };
                self.restart = match l.args.as_slice() {
                    [] => return Err(l.err(ErrorKind::MissingValue)),
                    [base] => Restart {
                        base: num(base)?,
                        cap: None,
                    },
                    [base, cap] => {
                        let (base, cap) = (num(base)?, num(cap)?);
                        if cap < base {
                            return Err(l.bad("the cap must not be below the base"));
                        }
                        Restart {
                            base,
                            cap: Some(cap),
                        }
                    }
                    _ => return Err(l.err(ErrorKind::ExtraArguments)),
                };
            }
            "start_type" => {
                self.start_type = match l.one()? {
                    "automatic" => StartType::Automatic,
                    "lazy" => StartType::Lazy,
                    "once" => StartType::Once,
                    v => {
                        return Err(l.bad(format!("'{v}' is not one of automatic, lazy, once")));
                    }
                }
            }
            "threshold" => self.threshold = l.num(1, u32::MAX)?,
            "notifications" => self.notifications = l.bool()?,
            "notifications_local_only" => self.notifications_local_only = l.bool()?,
            "notification_topic" => {
                once(given, "notification_topic")?;
                let t = l.string()?;
                if !topic::valid_name(&t) {
                    return Err(l.bad(format!("'{t}' is not a valid topic name")));
                }
                self.notification_topic = t;
                given.notification_topic = true;
            }
            "try_private" => self.try_private = l.bool()?,
            "bridge_protocol_version" => {
                self.protocol = match l.one()? {
                    "mqttv31" => BridgeProtocol::V31,
                    "mqttv311" => BridgeProtocol::V311,
                    "mqttv50" => BridgeProtocol::V5,
                    v => {
                        return Err(
                            l.bad(format!("'{v}' is not one of mqttv31, mqttv311, mqttv50"))
                        );
                    }
                }
            }
            "bridge_outgoing_retain" => self.outgoing_retain = l.bool()?,
            "bridge_receive_maximum" => self.receive_maximum = l.num(1, u16::MAX)?,
            "bridge_session_expiry_interval" => {
                self.session_expiry_interval = Some(l.num(0, u32::MAX)?)
            }
            "bridge_max_topic_alias" => self.max_topic_alias = l.num(0, u16::MAX)?,
            "bridge_attempt_unsubscribe" => self.attempt_unsubscribe = l.bool()?,
            "bridge_max_packet_size" => self.max_packet_size = l.num(0, u32::MAX)?,
            "bridge_bind_address" => {
                once(given, "bridge_bind_address")?;
                self.bind_address = Some(l.one()?.to_string());
            }
            "bridge_require_ocsp" => {
                if l.bool()? {
                    return Err(
                        l.bad("rustls, the TLS library of midge, does not check OCSP responses")
                    );
                }
            }
            "bridge_tls_use_os_certs" => {
                // True turns TLS on, as any TLS option does; false alone
                // leaves the bridge as it was.
                self.tls.use_os_certs = l.bool()?;
                if self.tls.use_os_certs && self.tls.at.is_none() {
                    self.tls.at = Some(l.origin());
                }
            }
            _ => {
                // The TLS options.
                if matches!(
                    name,
                    "bridge_cafile"
                        | "bridge_capath"
                        | "bridge_certfile"
                        | "bridge_keyfile"
                        | "bridge_alpn"
                ) {
                    once(given, name)?;
                }
                let tls = &mut self.tls;
                match name {
                    "bridge_cafile" => tls.cafile = path(l)?,
                    "bridge_capath" => tls.capath = path(l)?,
                    "bridge_certfile" => tls.certfile = path(l)?,
                    "bridge_keyfile" => tls.keyfile = path(l)?,
                    "bridge_insecure" => tls.insecure = l.bool()?,
                    "bridge_alpn" => tls.alpn = Some(l.one()?.to_string()),
                    _ => {
                        tls.version = match l.one()? {
                            "tlsv1.3" => TlsVersion::Tls13,
                            "tlsv1.2" => TlsVersion::Tls12,
                            "tlsv1.1" => {
                                warnings.push(format!(
                                    "Warning: {}: bridge_tls_version tlsv1.1: midge speaks TLS \
                                     1.2 and 1.3 only; this bridge uses TLS 1.2 or later.",
                                    l.origin()
                                ));
                                TlsVersion::Tls12
                            }
                            v => {
                                return Err(l.bad(format!(
                                    "'{v}' is not one of tlsv1.3, tlsv1.2, tlsv1.1"
                                )));
                            }
                        }
                    }
                }
                if tls.at.is_none() {
                    tls.at = Some(l.origin());
                }
            }
        }
        Ok(())
    }

    /// Defaults that depend on other options, and Mosquitto's start-up
    /// checks of a section.
    pub(super) fn finish(&mut self, given: &Given, hostname: &str) -> Result<(), ConfigError> {
        let err = |why: &str| ConfigError {
            path: self.at.path.clone(),
            line: self.at.line,
            option: format!("connection {}", self.name),
            kind: ErrorKind::BadValue(why.into()),
        };
        if self.addresses.is_empty() {
            return Err(err("a bridge needs an address"));
        }
        if !given.remote_clientid {
            self.remote_clientid = format!("{hostname}.{}", self.name);
        }
        if !given.local_clientid {
            self.local_clientid = format!("local.{}", self.remote_clientid);
        }
        if self.local_clientid == self.remote_clientid {
            return Err(err(
                "local_clientid and remote_clientid must differ (a bridge to this broker itself \
                 would take over its own session)",
            ));
        }
        if !given.local_clean_session {
            self.local_clean_session = self.clean_session;
        }
        if !given.notification_topic {
            self.notification_topic =
                format!("$SYS/broker/connection/{}/state", self.remote_clientid);
        }
        if self.remote_password.is_some() && self.remote_username.is_none() {
            return Err(err("remote_password needs remote_username"));
        }
        if self.tls.certfile.is_some() != self.tls.keyfile.is_some() {
            return Err(err(
                "bridge_certfile and bridge_keyfile must be given together",
            ));
        }
        Ok(())
    }
}

/// `host[:port]`; IPv6 addresses need the port (`::1:1883` or `[::1]:1883`).
fn parse_address(a: &str) -> Result<(String, u16), String> {
    let bad_port = |p: &str| format!("'{p}' is not a port number in '{a}'");
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, p) = rest
            .split_once(']')
            .ok_or_else(|| format!("'{a}' is not host[:port]"))?;
        (h, p.strip_prefix(':'))
    } else if a.matches(':').count() > 1 {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    } else {
        match a.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    if host.is_empty() {
        return Err(format!("'{a}' has no host"));
    }
    let port = match port {
        None => super::DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(bad_port(p)),
        },
    };
    Ok((host.to_string(), port))
}

/// `topic PATTERN [out|in|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]`, with
/// `""` for an empty pattern or prefix (Mosquitto's table of valid forms).
fn parse_topic(l: &Line) -> Result<BridgeTopic, ConfigError> {
    let unquote = |s: &str| {
        if s == "\"\"" {
            String::new()
        } else {
            s.to_string()
        }
    };
    let (pattern, rest) = match l.args.split_first() {
        Some((p, rest)) => (unquote(p), rest),
        None => return Err(l.err(ErrorKind::MissingValue)),
    };
    let direction = match rest.first().copied() {
        None | Some("out") => Direction::Out,
        Some("in") => Direction::In,
        Some("both") => Direction::Both,
        Some(v) => return Err(l.bad(format!("direction '{v}' is not one of out, in, both"))),
    };
    let qos = match rest.get(1) {
        None => 0,
        Some(q) => match q.parse::<u8>() {
            Ok(n) if n <= 2 => n,
            _ => return Err(l.bad(format!("QoS '{q}' is not 0, 1 or 2"))),
        },
    };
    let (local_prefix, remote_prefix) = match rest.get(2..) {
        None | Some([]) => (String::new(), String::new()),
        Some([lp, rp]) => (unquote(lp), unquote(rp)),
        Some([_]) => return Err(l.bad("give both a local and a remote prefix")),
        Some(_) => return Err(l.err(ErrorKind::ExtraArguments)),
    };
    if pattern.is_empty() && (local_prefix.is_empty() || remote_prefix.is_empty()) {
        return Err(l.bad(
            "an empty pattern (\"\") needs both a local and a remote prefix, which are then the \
             whole topics",
        ));
    }
    for p in [&local_prefix, &remote_prefix] {
        if p.contains(['+', '#']) {
            return Err(l.bad(format!("the prefix '{p}' may not contain '+' or '#'")));
        }
    }
    let local = format!("{local_prefix}{pattern}");
    let remote = format!("{remote_prefix}{pattern}");
    for f in [&local, &remote] {
        if !topic::valid_filter(f) {
            return Err(l.bad(format!("'{f}' is not a valid topic filter")));
        }
    }
    Ok(BridgeTopic {
        direction,
        qos,
        local_prefix,
        remote_prefix,
        local,
        remote,
    })
}
