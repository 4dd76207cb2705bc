//! mosquitto.conf reading: the broker's settings, before anything starts.
//!
//! The grammar is Mosquitto 2.0's ([`parse`]): one option per line, `#`
//! comments, `listener PORT [ADDRESS]` opening a listener section,
//! `include_dir`, and `per_listener_settings`. Every problem is reported as
//! `FILE:LINE: ...` naming the option, and nothing is silently ignored: an
//! option midge does not implement stops the start-up ([`options`]).

mod bridge;
pub mod ciphers;
mod options;
mod parse;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use bridge::{Bridge, BridgeProtocol, BridgeTls, BridgeTopic, Direction, Restart, StartType};
pub use options::Refusal;

/// Mosquitto's default port.
pub const DEFAULT_PORT: u16 = 1883;

/// The largest packet MQTT can express: 1 byte type, 4 bytes length, 268,435,455 bytes body.
pub const MQTT_MAX_PACKET: usize = 268_435_455 + 5;

/// `max_packet_size` unset: Mosquitto 2.1's 2,000,000 bytes (2.0 had no
/// limit below MQTT's own). It bounds what one client can make the broker
/// buffer; MQTT 5 clients are told in CONNACK.
pub const DEFAULT_MAX_PACKET: usize = 2_000_000;

/// `socket_domain`: which address family a listener without an address opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    Ipv4,
    Ipv6,
}

/// Options that `per_listener_settings true` makes per listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Security {
    /// None: Mosquitto 2's default, true only in local-only mode.
    pub allow_anonymous: Option<bool>,
    pub allow_zero_length_clientid: bool,
    pub auto_id_prefix: String,
    /// `password_file`: users and password hashes (src/auth/passwd.rs).
    pub password_file: Option<PathBuf>,
    /// `acl_file`: who may read and write which topics (src/auth/acl.rs).
    pub acl_file: Option<PathBuf>,
}

impl Default for Security {
    fn default() -> Security {
        Security {
            allow_anonymous: None,
            allow_zero_length_clientid: true,
            auto_id_prefix: "auto-".into(),
            password_file: None,
            acl_file: None,
        }
    }
}

/// One listening socket set (`listener PORT [ADDRESS]`) and its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// Position in `Config::listeners` ([`Config::number_listeners`]).
    pub index: usize,
    pub port: u16,
    /// None: every address, IPv4 and IPv6 (Mosquitto opens both).
    pub address: Option<String>,
    /// `listener 0 /absolute/path`: a Unix domain socket at this path, with
    /// the `listener` line that named it (port 0 with an address that is
    /// not a path stays a free TCP port).
    pub unix_socket: Option<FileSetting>,
    pub socket_domain: Option<Domain>,
    /// Only connections arriving on this network interface (SO_BINDTODEVICE).
    pub bind_interface: Option<String>,
    /// Connections at once on this listener; None for no limit.
    pub max_connections: Option<usize>,
    /// Prefix added to every topic of this listener's clients.
    pub mount_point: Option<String>,
    pub use_username_as_clientid: bool,
    /// The highest QoS this listener's clients may publish and subscribe
    /// with (`max_qos`; MQTT 5 clients are told in CONNACK).
    pub max_qos: u8,
    /// Topic aliases an MQTT 5 client may set up (`max_topic_alias`).
    pub max_topic_alias: u16,
    /// Used when `per_listener_settings true`.
    pub security: Security,
    /// TLS options; the listener speaks TLS when `certfile` is set.
    pub tls: TlsSettings,
    /// `protocol websockets`: MQTT over WebSockets (RFC 6455).
    pub websockets: bool,
    /// `http_dir`: static files served to plain HTTP GET requests on a
    /// WebSockets listener.
    pub http_dir: Option<FileSetting>,
    /// `websockets_origin` (Mosquitto 2.1, repeatable): the only Origin
    /// headers a WebSocket upgrade may carry; empty, any.
    pub websockets_origins: Vec<String>,
    /// `listener_allow_anonymous` (Mosquitto 2.1): this listener's own
    /// answer, over `allow_anonymous`.
    pub allow_anonymous: Option<bool>,
    /// `listener_auto_id_prefix` (Mosquitto 2.1): over `auto_id_prefix`.
    pub auto_id_prefix: Option<String>,
    /// `enable_proxy_protocol` (Mosquitto 2.1): each connection opens with
    /// a PROXY header of this version (1 or 2); 0, none is looked for.
    pub proxy_protocol: u8,
    /// `proxy_protocol_v2_require_tls` (Mosquitto 2.1): a version 2 header
    /// must say that the client reached the proxy over TLS. Where it was
    /// set, for the check that the listener reads version 2.
    pub proxy_require_tls: Option<Origin>,
    /// `accept_protocol_versions` (Mosquitto 2.1): bit N for protocol
    /// level N (3 = 3.1, 4 = 3.1.1, 5 = 5.0).
    pub accept_protocols: u8,
}

/// `accept_protocol_versions` unset: every protocol level.
pub const ALL_PROTOCOLS: u8 = 1 << 3 | 1 << 4 | 1 << 5;

impl Listener {
    pub fn new(port: u16, address: Option<String>) -> Listener {
        Listener {
            index: 0,
            port,
            address,
            unix_socket: None,
            socket_domain: None,
            bind_interface: None,
            max_connections: None,
            mount_point: None,
            use_username_as_clientid: false,
            max_qos: 2,
            max_topic_alias: 10,
            security: Security::default(),
            tls: TlsSettings::default(),
            websockets: false,
            http_dir: None,
            websockets_origins: Vec::new(),
            allow_anonymous: None,
            auto_id_prefix: None,
            accept_protocols: ALL_PROTOCOLS,
            proxy_protocol: 0,
            proxy_require_tls: None,
        }
    }
}

/// A file named by an option, with where it was named, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSetting {
    pub path: PathBuf,
    pub option: &'static str,
    /// The config line that named it.
    pub at: Origin,
}

/// A line of a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub path: PathBuf,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// `tls_version`: the lowest TLS version a listener accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (also what `tlsv1.1` and `tlsv1` give, with a warning).
    #[default]
    Tls12,
    Tls13,
}

/// A listener's TLS options (Mosquitto 2.0's, see `man mosquitto.conf`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub cafile: Option<FileSetting>,
    pub capath: Option<FileSetting>,
    pub certfile: Option<FileSetting>,
    pub keyfile: Option<FileSetting>,
    pub crlfile: Option<FileSetting>,
    pub require_certificate: bool,
    pub use_identity_as_username: bool,
    pub use_subject_as_username: bool,
    pub min_version: TlsVersion,
    /// TLS 1.2 suites by OpenSSL name, checked; None for all.
    pub ciphers: Option<Vec<&'static str>>,
    /// TLS 1.3 suites by OpenSSL name, checked; None for all.
    pub ciphers_tls13: Option<Vec<&'static str>>,
    /// `disable_client_cert_date_checks` (Mosquitto 2.1): a client
    /// certificate outside its validity dates is accepted; every other
    /// check still holds.
    pub disable_client_cert_date_checks: bool,
    /// The first TLS option of the listener, with its option name.
    pub at: Option<(Origin, &'static str)>,
}

impl TlsSettings {
    /// Whether the listener speaks TLS.
    pub fn enabled(&self) -> bool {
        self.certfile.is_some()
    }
}

/// `log_dest` values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogDest {
    Stderr,
    Stdout,
    File(PathBuf),
    Syslog,
    Topic,
}

/// The request head a client may send when `websockets_headers_size` is
/// 0 or unset. Mosquitto's 1,024 bytes count only the header values that
/// libwebsockets keeps; midge counts the whole head, request line and
/// header names included, so it allows more.
pub const DEFAULT_HEADERS_SIZE: usize = 4096;

/// Log types of `log_type`, as bits.
pub mod log_type {
    pub const ERROR: u32 = 1;
    pub const WARNING: u32 = 1 << 1;
    pub const NOTICE: u32 = 1 << 2;
    pub const INFORMATION: u32 = 1 << 3;
    pub const SUBSCRIBE: u32 = 1 << 4;
    pub const UNSUBSCRIBE: u32 = 1 << 5;
    pub const WEBSOCKETS: u32 = 1 << 6;
    pub const DEBUG: u32 = 1 << 7;
    pub const ALL: u32 = (1 << 8) - 1;
    /// Mosquitto's default.
    pub const DEFAULT: u32 = ERROR | WARNING | NOTICE | INFORMATION;

    pub fn from_name(name: &str) -> Option<u32> {
        Some(match name {
            "error" => ERROR,
            "warning" => WARNING,
            "notice" => NOTICE,
            "information" => INFORMATION,
            "subscribe" => SUBSCRIBE,
            "unsubscribe" => UNSUBSCRIBE,
            "websockets" => WEBSOCKETS,
            "debug" => DEBUG,
            "all" => ALL,
            "none" => 0,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logging {
    /// Empty after `log_dest none`.
    pub dest: Vec<LogDest>,
    pub types: u32,
    pub timestamp: bool,
    /// strftime(3) format; None prints Unix seconds.
    pub timestamp_format: Option<String>,
    /// syslog facility: `log_facility N` is LOG_LOCALN.
    pub facility: Option<u8>,
}

impl Default for Logging {
    fn default() -> Logging {
        Logging {
            dest: vec![LogDest::Stderr],
            types: log_type::DEFAULT,
            timestamp: true,
            timestamp_format: None,
            facility: None,
        }
    }
}

/// The default of `persistence_journal_commit_interval` (docs/CONFIG.md).
pub const DEFAULT_JOURNAL_COMMIT_MS: u32 = 200;

/// Persistence options, acted on by `crate::persist` (docs/PERSISTENCE.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Persistence {
    pub enabled: bool,
    pub location: Option<PathBuf>,
    pub file: String,
    pub autosave_interval: u32,
    pub autosave_on_changes: bool,
    /// `persistence_journal` (midge's own): every acknowledged change is
    /// fsynced to a journal before its acknowledgement goes out.
    pub journal: bool,
    /// `persistence_journal_commit_interval` (midge's own), milliseconds:
    /// how long the journal gathers records before one fsync.
    pub journal_commit_ms: u32,
}

impl Default for Persistence {
    fn default() -> Persistence {
        Persistence {
            enabled: false,
            location: None,
            file: "midge.db".into(),
            autosave_interval: 1800,
            autosave_on_changes: false,
            journal: false,
            journal_commit_ms: DEFAULT_JOURNAL_COMMIT_MS,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file it came from, for log lines; None for the built-in default.
    pub path: Option<PathBuf>,
    /// The listeners to open. In local-only mode, loopback on port 1883.
    pub listeners: Vec<Listener>,
    /// True when no listener was configured: loopback only, like Mosquitto 2.
    pub local_only: bool,
    pub per_listener_settings: bool,
    /// Security options for every listener (per_listener_settings false).
    pub security: Security,
    /// The user to run as when started as root.
    pub user: String,
    pub pid_file: Option<PathBuf>,
    /// QoS 1/2 messages in flight to one client at once (0 = no limit).
    pub max_inflight_messages: u16,
    /// Payload bytes in flight to one client at once (0 = no limit).
    pub max_inflight_bytes: usize,
    /// Messages queued per client beyond those in flight (0 = no limit).
    pub max_queued_messages: usize,
    /// Payload bytes queued per client beyond those in flight (0 = no limit).
    pub max_queued_bytes: usize,
    /// Queue QoS 0 messages for offline persistent sessions too.
    pub queue_qos0_messages: bool,
    /// Largest PUBLISH payload accepted (0 = no limit).
    pub message_size_limit: u32,
    /// Largest keepalive a client may ask for.
    pub max_keepalive: u16,
    /// Largest packet read from a client, in bytes ([`DEFAULT_MAX_PACKET`];
    /// `max_packet_size 0`: MQTT's own maximum).
    pub max_packet_size: usize,
    pub retain_available: bool,
    /// Deliver at the subscription's QoS even when the message's is lower.
    pub upgrade_outgoing_qos: bool,
    /// Only client ids starting with this are accepted.
    pub clientid_prefixes: Option<String>,
    /// Persistent sessions offline longer than this are removed.
    pub persistent_client_expiration: Option<Duration>,
    pub set_tcp_nodelay: bool,
    pub check_retain_source: bool,
    /// Seconds between `$SYS` updates; 0 turns them off.
    pub sys_interval: u32,
    /// Log connects and disconnects.
    pub connection_messages: bool,
    pub log: Logging,
    pub persistence: Persistence,
    /// Stack size of each client thread, in bytes.
    pub client_stack_size: usize,
    /// Seconds a new connection has to send its CONNECT (and to finish
    /// its TLS and WebSocket handshakes).
    pub connect_timeout: u32,
    /// Bytes that the connections which have not completed CONNECT may
    /// hold buffered together, beyond a few KiB each; 0 for no limit.
    pub max_connect_buffer: usize,
    /// Threads for connections that have not completed CONNECT; past it
    /// the oldest is closed once it has waited a moment. 0 for no cap.
    pub max_connecting: usize,
    /// `websockets_headers_size`: the largest WebSocket request head.
    pub websockets_headers_size: usize,
    /// `websockets_log_level`: libwebsockets' bit mask of log levels.
    pub websockets_log_level: u32,
    /// Non-fatal remarks found while reading, logged once logging is up.
    pub warnings: Vec<String>,
    /// `connection` sections (src/bridge).
    pub bridges: Vec<Bridge>,
    /// `global_max_clients` (Mosquitto 2.1): sessions at once, connected
    /// or kept for a later connection; None for no limit.
    pub global_max_clients: Option<usize>,
    /// `retain_expiry_interval` (Mosquitto 2.0.21 and 2.1): minutes between
    /// sweeps that remove retained messages whose message expiry interval
    /// has run out; 0, none (they go when next touched).
    pub retain_expiry_minutes: u32,
    /// `memory_limit`: heap bytes (counted by `sys::CountingAlloc`) above
    /// which new messages and connections are refused; 0 for no limit.
    pub memory_limit: usize,
    /// `global_max_connections` (Mosquitto 2.1): network connections at
    /// once over every listener; None for no limit.
    pub global_max_connections: Option<usize>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            path: None,
            listeners: local_only_listeners(DEFAULT_PORT),
            local_only: true,
            per_listener_settings: false,
            security: Security::default(),
            user: "midge".into(),
            pid_file: None,
            max_inflight_messages: 20,
            max_inflight_bytes: 0,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            queue_qos0_messages: false,
            message_size_limit: 0,
            max_keepalive: 65535,
            max_packet_size: DEFAULT_MAX_PACKET,
            retain_available: true,
            upgrade_outgoing_qos: false,
            clientid_prefixes: None,
            persistent_client_expiration: None,
            // midge writes whole batches, so Nagle's delay only costs latency.
            set_tcp_nodelay: true,
            check_retain_source: false,
            sys_interval: 10,
            connection_messages: true,
            log: Logging::default(),
            persistence: Persistence::default(),
            client_stack_size: 64 * 1024,
            connect_timeout: 30,
            max_connect_buffer: 16 * 1024 * 1024,
            max_connecting: 256,
            websockets_headers_size: DEFAULT_HEADERS_SIZE,
            websockets_log_level: 0,
            warnings: Vec::new(),
            bridges: Vec::new(),
            global_max_clients: None,
            global_max_connections: None,
            memory_limit: 0,
            retain_expiry_minutes: 0,
        }
    }
}

impl Config {
    /// Mosquitto 2's local-only mode on `port`. The loopback listeners take
    /// the security options given outside any listener section: with
    /// `per_listener_settings true` they have no other listener to go to,
    /// and leaving them out would open the broker to anonymous clients.
    pub fn listen_local_only(&mut self, port: u16) {
        self.listeners = local_only_listeners(port);
        for l in &mut self.listeners {
            l.security = self.security.clone();
        }
        self.local_only = true;
        self.number_listeners();
    }
}

/// Mosquitto 2's local-only mode: loopback, IPv4 and IPv6.
pub fn local_only_listeners(port: u16) -> Vec<Listener> {
    let mut v6 = Listener::new(port, Some("::1".into()));
    v6.index = 1;
    vec![Listener::new(port, Some("127.0.0.1".into())), v6]
}

/// A problem in one line of a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based; 0 when the file itself could not be read.
    pub line: usize,
    pub option: String,
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    Unreadable(String),
    /// A Mosquitto option that midge refuses.
    Refused(Refusal),
    /// Not a Mosquitto 2.0 option at all.
    Unknown,
    MissingValue,
    BadValue(String),
    ExtraArguments,
    /// A string option given twice in one scope (Mosquitto refuses it too).
    Duplicate,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        let (line, option) = (self.line, &self.option);
        match &self.kind {
            ErrorKind::Unreadable(e) => write!(f, "{p}: cannot read config file: {e}"),
            ErrorKind::Refused(Refusal::NotYet) => {
                write!(f, "{p}:{line}: option '{option}' is not supported yet")
            }
            ErrorKind::Refused(Refusal::Never(why)) => {
                write!(
                    f,
                    "{p}:{line}: option '{option}' is not supported by midge: {why}"
                )
            }
            ErrorKind::Unknown => write!(f, "{p}:{line}: unknown option '{option}'"),
            ErrorKind::MissingValue => write!(f, "{p}:{line}: {option}: missing value"),
            ErrorKind::BadValue(why) => write!(f, "{p}:{line}: {option}: {why}"),
            ErrorKind::ExtraArguments => write!(f, "{p}:{line}: {option}: too many arguments"),
            ErrorKind::Duplicate => write!(f, "{p}:{line}: {option}: duplicate value"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads a config file and every file it includes.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut c = parse::Parser::default().run(path)?;
        c.path = Some(path.to_path_buf());
        Ok(c)
    }

    /// Parses config text; `path` names the file in errors and is where
    /// relative `include_dir` paths start.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        parse::Parser::default().run_text(text, path)
    }

    /// The security options that apply to connections on `listener`.
    pub fn security<'a>(&'a self, listener: &'a Listener) -> &'a Security {
        if self.per_listener_settings {
            &listener.security
        } else {
            &self.security
        }
    }

    /// Sets each listener's `index` to its position; called whenever the
    /// list changes.
    pub fn number_listeners(&mut self) {
        for (i, l) in self.listeners.iter_mut().enumerate() {
            l.index = i;
        }
    }

    /// Whether `listener` accepts clients without a user name:
    /// `listener_allow_anonymous`, else the scope's `allow_anonymous`.
    pub fn allow_anonymous(&self, listener: &Listener) -> bool {
        listener.allow_anonymous.unwrap_or_else(|| {
            self.security(listener)
                .allow_anonymous
                .unwrap_or(self.local_only)
        })
    }

    /// The prefix of client ids the broker assigns on `listener`.
    pub fn auto_id_prefix<'a>(&'a self, listener: &'a Listener) -> &'a str {
        listener
            .auto_id_prefix
            .as_deref()
            .unwrap_or(&self.security(listener).auto_id_prefix)
    }
}

#[cfg(test)]
mod tests;
