//! mosquitto.conf reading: the broker's settings, before anything starts.
//!
//! The grammar is Mosquitto 2.0's: one option per line, `#` comments, blank
//! lines, and `listener PORT [ADDRESS]` opening a listener. Every problem is
//! reported as `FILE:LINE: option: what is wrong`, and nothing is silently
//! ignored: an option midge does not implement yet stops the start-up.

use std::fmt;
use std::path::{Path, PathBuf};

/// Mosquitto's default port.
pub const DEFAULT_PORT: u16 = 1883;

/// One listening socket set (`listener PORT [ADDRESS]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub port: u16,
    /// None: every address, IPv4 and IPv6 (Mosquitto opens both).
    pub address: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file it came from, for log lines; None for the built-in default.
    pub path: Option<PathBuf>,
    pub listeners: Vec<Listener>,
    /// True when no listener was configured: loopback only, like Mosquitto 2.
    pub local_only: bool,
    pub allow_anonymous: bool,
    /// QoS 1/2 messages in flight to one client at once (0 = no limit).
    pub max_inflight_messages: u16,
    /// Messages queued per client beyond those in flight (0 = no limit).
    pub max_queued_messages: usize,
    /// Largest PUBLISH payload accepted (0 = no limit).
    pub message_size_limit: u32,
    /// Largest keepalive a client may ask for.
    pub max_keepalive: u16,
    /// Largest packet read from a client, in bytes (MQTT's own maximum).
    pub max_packet_size: usize,
    /// Stack size of each client thread, in bytes.
    pub client_stack_size: usize,
    /// Seconds a new connection has to send its CONNECT.
    pub connect_timeout: u32,
}

/// The largest packet MQTT can express: 1 byte type, 4 bytes length, 268,435,455 bytes body.
pub const MQTT_MAX_PACKET: usize = 268_435_455 + 5;

impl Default for Config {
    fn default() -> Config {
        Config {
            path: None,
            listeners: Vec::new(),
            local_only: true,
            allow_anonymous: true,
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            message_size_limit: 0,
            max_keepalive: 65535,
            max_packet_size: MQTT_MAX_PACKET,
            client_stack_size: 64 * 1024,
            connect_timeout: 30,
        }
    }
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
    /// A Mosquitto option that midge will implement but does not yet.
    NotSupportedYet,
    /// Not a Mosquitto 2.0 option at all.
    Unknown,
    MissingValue,
    BadValue(String),
    ExtraArguments,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        match &self.kind {
            ErrorKind::Unreadable(e) => write!(f, "{p}: cannot read config file: {e}"),
            ErrorKind::NotSupportedYet => write!(
                f,
                "{p}:{}: option '{}' is not supported yet",
                self.line, self.option
            ),
            ErrorKind::Unknown => write!(f, "{p}:{}: unknown option '{}'", self.line, self.option),
            ErrorKind::MissingValue => {
                write!(f, "{p}:{}: {}: missing value", self.line, self.option)
            }
            ErrorKind::BadValue(why) => write!(f, "{p}:{}: {}: {why}", self.line, self.option),
            ErrorKind::ExtraArguments => {
                write!(f, "{p}:{}: {}: too many arguments", self.line, self.option)
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Options of `man mosquitto.conf` (2.0) that midge does not read yet.
const MOSQUITTO_OPTIONS: &[&str] = &[
    "acl_file",
    "allow_duplicate_messages",
    "allow_zero_length_clientid",
    "auth_plugin",
    "auth_plugin_deny_special_chars",
    "auto_id_prefix",
    "autosave_interval",
    "autosave_on_changes",
    "bind_address",
    "bind_interface",
    "cafile",
    "capath",
    "certfile",
    "check_retain_source",
    "ciphers",
    "ciphers_tls1.3",
    "clientid_prefixes",
    "connection_messages",
    "crlfile",
    "dhparamfile",
    "http_dir",
    "include_dir",
    "keyfile",
    "log_dest",
    "log_facility",
    "log_timestamp",
    "log_timestamp_format",
    "log_type",
    "max_connections",
    "max_inflight_bytes",
    "max_packet_size",
    "max_queued_bytes",
    "memory_limit",
    "mount_point",
    "password_file",
    "per_listener_settings",
    "persistence",
    "persistence_file",
    "persistence_location",
    "persistent_client_expiration",
    "pid_file",
    "plugin",
    "plugin_opt",
    "protocol",
    "psk_file",
    "psk_hint",
    "queue_qos0_messages",
    "require_certificate",
    "retain_available",
    "set_tcp_nodelay",
    "socket_domain",
    "sys_interval",
    "tls_engine",
    "tls_engine_kpass_sha1",
    "tls_keyform",
    "tls_version",
    "upgrade_outgoing_qos",
    "use_identity_as_username",
    "use_subject_as_username",
    "use_username_as_clientid",
    "user",
    "websockets_headers_size",
    "websockets_log_level",
    // Bridges.
    "address",
    "addresses",
    "bridge_attempt_unsubscribe",
    "bridge_bind_address",
    "bridge_cafile",
    "bridge_capath",
    "bridge_certfile",
    "bridge_identity",
    "bridge_insecure",
    "bridge_keyfile",
    "bridge_max_packet_size",
    "bridge_outgoing_retain",
    "bridge_protocol_version",
    "bridge_psk",
    "bridge_require_ocsp",
    "bridge_tls_version",
    "cleansession",
    "clientid",
    "connection",
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

impl Config {
    /// Reads a config file. The listener list stays empty, and `local_only`
    /// true, when the file opens no listener.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: 0,
            option: String::new(),
            kind: ErrorKind::Unreadable(e.to_string()),
        })?;
        let mut c = Config::parse(&text, path)?;
        c.path = Some(path.to_path_buf());
        Ok(c)
    }

    /// Parses config text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        let mut anonymous: Option<bool> = None;
        // `port` sets the default listener, which has no address.
        let mut default_port: Option<u16> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let Some(option) = words.next() else { continue };
            let args: Vec<&str> = words.collect();
            let err = |kind| ConfigError {
                path: path.to_path_buf(),
                line: i + 1,
                option: option.to_string(),
                kind,
            };
            let one = || -> Result<&str, ConfigError> {
                match args.as_slice() {
                    [] => Err(err(ErrorKind::MissingValue)),
                    [v] => Ok(v),
                    _ => Err(err(ErrorKind::ExtraArguments)),
                }
            };
            match option {
                "listener" => {
                    let (port, address) = match args.as_slice() {
                        [] => return Err(err(ErrorKind::MissingValue)),
                        [p] => (*p, None),
                        [p, a] => (*p, Some(a.to_string())),
                        _ => return Err(err(ErrorKind::ExtraArguments)),
                    };
                    let port = parse_num::<u16>(port).map_err(|e| err(ErrorKind::BadValue(e)))?;
                    c.listeners.push(Listener { port, address });
                }
                "port" => {
                    let v = one()?;
                    default_port =
                        Some(parse_num::<u16>(v).map_err(|e| err(ErrorKind::BadValue(e)))?);
                }
                "allow_anonymous" => {
                    anonymous = Some(parse_bool(one()?).map_err(|e| err(ErrorKind::BadValue(e)))?);
                }
                "max_inflight_messages" => {
                    c.max_inflight_messages =
                        parse_num(one()?).map_err(|e| err(ErrorKind::BadValue(e)))?;
                }
                "max_queued_messages" => {
                    c.max_queued_messages =
                        parse_num(one()?).map_err(|e| err(ErrorKind::BadValue(e)))?;
                }
                "message_size_limit" => {
                    let v: u32 = parse_num(one()?).map_err(|e| err(ErrorKind::BadValue(e)))?;
                    if v > 268_435_455 {
                        return Err(err(ErrorKind::BadValue(
                            "must be at most 268435455 bytes".into(),
                        )));
                    }
                    c.message_size_limit = v;
                }
                "max_keepalive" => {
                    c.max_keepalive = parse_num(one()?).map_err(|e| err(ErrorKind::BadValue(e)))?;
                }
                o if MOSQUITTO_OPTIONS.contains(&o) => return Err(err(ErrorKind::NotSupportedYet)),
                _ => return Err(err(ErrorKind::Unknown)),
            }
        }
        if let Some(port) = default_port {
            c.listeners.insert(
                0,
                Listener {
                    port,
                    address: None,
                },
            );
        }
        c.local_only = c.listeners.is_empty();
        // Mosquitto 2: anonymous clients are allowed by default only in
        // local-only mode; once a listener is configured they must be allowed
        // explicitly.
        c.allow_anonymous = anonymous.unwrap_or(c.local_only);
        Ok(c)
    }

    /// The sockets to open: the configured listeners, or loopback only.
    pub fn effective_listeners(&self) -> Vec<Listener> {
        if self.listeners.is_empty() {
            vec![
                Listener {
                    port: DEFAULT_PORT,
                    address: Some("127.0.0.1".into()),
                },
                Listener {
                    port: DEFAULT_PORT,
                    address: Some("::1".into()),
                },
            ]
        } else {
            self.listeners.clone()
        }
    }
}

fn parse_num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.parse::<T>()
        .map_err(|_| format!("'{v}' is not a valid number here"))
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("'{v}' is not 'true' or 'false'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("/etc/midge/midge.conf"))
    }

    #[test]
    fn defaults_are_local_only_and_anonymous() {
        let c = parse("# nothing\n\n").expect("parse");
        assert!(c.local_only);
        assert!(c.allow_anonymous);
        assert_eq!(c.effective_listeners().len(), 2);
        assert_eq!(c.max_inflight_messages, 20);
        assert_eq!(c.max_queued_messages, 1000);
    }

    #[test]
    fn listener_turns_anonymous_off_unless_set() {
        let c = parse("listener 1883\n").expect("parse");
        assert!(!c.allow_anonymous);
        assert!(!c.local_only);
        let c = parse("listener 1883 127.0.0.1\nallow_anonymous true\n").expect("parse");
        assert!(c.allow_anonymous);
        assert_eq!(c.listeners[0].address.as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn port_is_the_default_listener() {
        let c = parse("port 8883\nlistener 1884 ::1\n").expect("parse");
        assert_eq!(
            c.listeners[0],
            Listener {
                port: 8883,
                address: None
            }
        );
        assert_eq!(c.listeners[1].port, 1884);
    }

    #[test]
    fn errors_name_file_line_and_option() {
        let e = parse("\nallow_anonymous true\npersistence true\n").expect_err("refused");
        assert_eq!(
            e.to_string(),
            "/etc/midge/midge.conf:3: option 'persistence' is not supported yet"
        );
        let e = parse("frobnicate 1\n").expect_err("refused");
        assert_eq!(
            e.to_string(),
            "/etc/midge/midge.conf:1: unknown option 'frobnicate'"
        );
        let e = parse("max_inflight_messages abc\n").expect_err("refused");
        assert_eq!(
            e.to_string(),
            "/etc/midge/midge.conf:1: max_inflight_messages: 'abc' is not a valid number here"
        );
        let e = parse("listener 70000\n").expect_err("refused");
        assert_eq!(e.line, 1);
        let e = parse("allow_anonymous\n").expect_err("refused");
        assert_eq!(e.kind, ErrorKind::MissingValue);
        let e = parse("allow_anonymous yes\n").expect_err("refused");
        assert!(matches!(e.kind, ErrorKind::BadValue(_)));
    }
}
