//! The mosquitto.conf grammar (Mosquitto 2.0's config.c, in data-driven form).
//!
//! Lines are `option [value...]`. Numbers and booleans may repeat (the last
//! wins); string values take the rest of the line, spaces included, and may
//! be given once per scope, as in Mosquitto. `listener` opens a section that
//! listener options apply to; before the first `listener`, they apply to the
//! default listener of `port` and `bind_address`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::bridge::{self, Bridge};
use super::options;
use super::{
    Config, ConfigError, DEFAULT_PORT, Domain, ErrorKind, FileSetting, Listener, LogDest,
    MQTT_MAX_PACKET, Origin, TlsSettings, TlsVersion, log_type,
};

/// Where listener options go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Scope {
    /// The default listener (`port`, `bind_address`).
    Default,
    Listener(usize),
}

#[derive(Default)]
pub(super) struct Parser {
    c: Config,
    default: Option<Listener>,
    listeners: Vec<Listener>,
    scope: Option<Scope>,
    /// String options already given, per scope (None = global).
    seen: HashSet<(Option<Scope>, &'static str)>,
    /// `port`, `bind_address` or a listener option outside any listener
    /// section opens the default listener.
    default_opened: bool,
    log_dest_set: bool,
    log_type_set: bool,
    /// `connection` sections, with the options each was given.
    bridges: Vec<(Bridge, bridge::Given)>,
}

/// One line being read, for error messages.
pub(super) struct Line<'a> {
    pub(super) path: &'a Path,
    pub(super) number: usize,
    pub(super) option: &'a str,
    /// Whitespace-separated values after the option.
    pub(super) args: Vec<&'a str>,
    /// Everything after the option, trimmed: string values may hold spaces.
    rest: &'a str,
}

impl Line<'_> {
    pub(super) fn err(&self, kind: ErrorKind) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            line: self.number,
            option: self.option.to_string(),
            kind,
        }
    }

    pub(super) fn origin(&self) -> Origin {
        Origin {
            path: self.path.to_path_buf(),
            line: self.number,
        }
    }

    pub(super) fn bad(&self, why: impl Into<String>) -> ConfigError {
        self.err(ErrorKind::BadValue(why.into()))
    }

    /// The one value of an option that takes one word.
    pub(super) fn one(&self) -> Result<&str, ConfigError> {
        match self.args.as_slice() {
            [] => Err(self.err(ErrorKind::MissingValue)),
            [v] => Ok(v),
            _ => Err(self.err(ErrorKind::ExtraArguments)),
        }
    }

    /// A string value: the rest of the line.
    pub(super) fn string(&self) -> Result<String, ConfigError> {
        if self.rest.is_empty() {
            return Err(self.err(ErrorKind::MissingValue));
        }
        Ok(self.rest.to_string())
    }

    pub(super) fn bool(&self) -> Result<bool, ConfigError> {
        match self.one()? {
            "true" => Ok(true),
            "false" => Ok(false),
            v => Err(self.bad(format!("'{v}' is not 'true' or 'false'"))),
        }
    }

    /// A whole number in `min..=max`.
    pub(super) fn num<T>(&self, min: T, max: T) -> Result<T, ConfigError>
    where
        T: TryFrom<i128> + Into<i128> + std::fmt::Display + Copy,
    {
        let v = self.one()?;
        let n: i128 = v
            .parse()
            .map_err(|_| self.bad(format!("'{v}' is not a valid number here")))?;
        if n < min.into() || n > max.into() {
            return Err(self.bad(format!("{v} is out of range ({min} to {max})")));
        }
        T::try_from(n).map_err(|_| self.bad(format!("{v} is out of range ({min} to {max})")))
    }
}

impl Parser {
    pub fn run(mut self, path: &Path) -> Result<Config, ConfigError> {
        self.file(path, true)?;
        self.finish()
    }

    pub fn run_text(mut self, text: &str, path: &Path) -> Result<Config, ConfigError> {
        self.text(text, path, true)?;
        self.finish()
    }

    fn file(&mut self, path: &Path, main: bool) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: 0,
            option: String::new(),
            kind: ErrorKind::Unreadable(e.to_string()),
        })?;
        self.text(&text, path, main)
    }

    fn text(&mut self, text: &str, path: &Path, main: bool) -> Result<(), ConfigError> {
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (option, rest) = match line.split_once([' ', '\t']) {
                Some((o, r)) => (o, r.trim()),
                None => (line, ""),
            };
            let l = Line {
                path,
                number: i + 1,
                option,
                args: rest.split_whitespace().collect(),
                rest,
            };
            self.line(&l, main)?;
        }
        Ok(())
    }

    /// The listener that listener options of this line go to.
    fn listener(&mut self) -> &mut Listener {
        match self.scope {
            Some(Scope::Listener(i)) if i < self.listeners.len() => &mut self.listeners[i],
            _ => {
                self.scope = Some(Scope::Default);
                self.default_opened = true;
                self.default
                    .get_or_insert_with(|| Listener::new(DEFAULT_PORT, None))
            }
        }
    }

    /// Refuses a second value for a string option in the same scope.
    fn once(&mut self, l: &Line, name: &'static str, scoped: bool) -> Result<(), ConfigError> {
        let scope = if scoped {
            Some(self.scope.unwrap_or(Scope::Default))
        } else {
            None
        };
        if self.seen.insert((scope, name)) {
            Ok(())
        } else {
            Err(l.err(ErrorKind::Duplicate))
        }
    }

    fn line(&mut self, l: &Line, main: bool) -> Result<(), ConfigError> {
        let c = &mut self.c;
        match l.option {
            // --- listeners -------------------------------------------------
            "listener" => {
                let (port, address) = match l.args.as_slice() {
                    [] => return Err(l.err(ErrorKind::MissingValue)),
                    [p] => (*p, None),
                    [p, a] => (*p, Some(a.to_string())),
                    _ => return Err(l.err(ErrorKind::ExtraArguments)),
                };
                let port = port
                    .parse::<u16>()
                    .map_err(|_| l.bad(format!("'{port}' is not a port number")))?;
                let listener = match address {
                    Some(path) if port == 0 && path.starts_with('/') => unix_listener(l, path)?,
                    address => Listener::new(port, address),
                };
                self.listeners.push(listener);
                self.scope = Some(Scope::Listener(self.listeners.len() - 1));
            }
            "port" => {
                let port = l.num::<u16>(0, u16::MAX)?;
                self.default_opened = true;
                self.default
                    .get_or_insert_with(|| Listener::new(DEFAULT_PORT, None))
                    .port = port;
            }
            "bind_address" => {
                let a = l.one()?.to_string();
                self.default_opened = true;
                self.default
                    .get_or_insert_with(|| Listener::new(DEFAULT_PORT, None))
                    .address = Some(a);
            }
            "bind_interface" => {
                self.once(l, "bind_interface", true)?;
                let v = l.one()?.to_string();
                self.listener().bind_interface = Some(v);
            }
            "max_connections" => {
                let n = l.num::<i64>(-1, i64::from(i32::MAX))?;
                self.listener().max_connections = usize::try_from(n).ok();
            }
            // Mosquitto reads both names.
            "max_qos" | "maximum_qos" => {
                let q = l.num::<u8>(0, 2)?;
                self.listener().max_qos = q;
            }
            "max_topic_alias" => {
                let n = l.num::<u16>(0, u16::MAX)?;
                self.listener().max_topic_alias = n;
            }
            "mount_point" => {
                self.once(l, "mount_point", true)?;
                let m = l.string()?;
                if m.contains(['+', '#']) {
                    return Err(l.bad("a mount point may not contain '+' or '#'"));
                }
                self.listener().mount_point = Some(m);
            }
            "protocol" => match l.one()? {
                "mqtt" => {
                    self.listener();
                }
                "websockets" => {
                    self.not_on_unix_socket(l, "WebSockets")?;
                    self.listener().websockets = true
                }
                v => return Err(l.bad(format!("'{v}' is not 'mqtt' or 'websockets'"))),
            },
            "socket_domain" => {
                let d = match l.one()? {
                    "ipv4" => Domain::Ipv4,
                    "ipv6" => Domain::Ipv6,
                    v => return Err(l.bad(format!("'{v}' is not 'ipv4' or 'ipv6'"))),
                };
                self.listener().socket_domain = Some(d);
            }
            "http_dir" => {
                self.once(l, "http_dir", true)?;
                let dir = FileSetting {
                    path: PathBuf::from(l.string()?),
                    option: "http_dir",
                    at: l.origin(),
                };
                self.listener().http_dir = Some(dir);
            }
            "websockets_origin" => {
                let origin = l.string()?;
                self.listener().websockets_origins.push(origin);
            }
            "websockets_headers_size" => {
                let n = l.num::<u32>(0, 1024 * 1024)? as usize;
                c.websockets_headers_size = match n {
                    0 => super::DEFAULT_HEADERS_SIZE,
                    n => n,
                };
            }
            "websockets_log_level" => c.websockets_log_level = l.num(0, u32::MAX)?,
            // --- Mosquitto 2.1, per listener ------------------------------
            "listener_allow_anonymous" => {
                let v = l.bool()?;
                self.section_listener(l)?.allow_anonymous = Some(v);
            }
            "listener_auto_id_prefix" => {
                self.once(l, "listener_auto_id_prefix", true)?;
                let v = l.string()?;
                if v.len() > 50 {
                    return Err(l.bad("the prefix may be at most 50 bytes long"));
                }
                self.section_listener(l)?.auto_id_prefix = Some(v);
            }
            "accept_protocol_versions" => {
                let mut bits = 0u8;
                for v in l.rest.split([',', ' ', '\t']).filter(|v| !v.is_empty()) {
                    bits |= match v {
                        "3" => 1 << 3,
                        "4" => 1 << 4,
                        "5" => 1 << 5,
                        v => {
                            return Err(l.bad(format!(
                                "'{v}' is not a protocol version (3 for 3.1, 4 for 3.1.1, 5 for 5.0)"
                            )));
                        }
                    };
                }
                if bits == 0 {
                    return Err(l.err(ErrorKind::MissingValue));
                }
                self.section_listener(l)?.accept_protocols = bits;
            }
            "enable_proxy_protocol" => {
                let v = l.num::<u8>(1, 2)?;
                self.section_listener(l)?.proxy_protocol = v;
            }
            "proxy_protocol_v2_require_tls" => {
                let v = l.bool()?.then(|| l.origin());
                self.section_listener(l)?.proxy_require_tls = v;
            }
            // midge creates no topic aliases towards clients, so any
            // maximum holds (docs/CONFIG.md).
            "max_topic_alias_broker" => {
                l.num::<u16>(0, u16::MAX)?;
                self.listener();
            }
            "packet_buffer_size" => {
                l.num::<u32>(1, 1 << 30)?;
                c.warnings.push(format!(
                    "{}: packet_buffer_size has no effect: midge's read buffers grow with \
                     what arrives.",
                    l.origin()
                ));
            }
            "disable_client_cert_date_checks" => {
                let v = l.bool()?;
                self.section_listener(l)?
                    .tls
                    .disable_client_cert_date_checks = v;
            }
            "use_username_as_clientid" => {
                let v = l.bool()?;
                self.listener().use_username_as_clientid = v;
            }
            "per_listener_settings" => c.per_listener_settings = l.bool()?,

            // --- TLS (per listener) ---------------------------------------------
            "cafile"
            | "capath"
            | "certfile"
            | "keyfile"
            | "crlfile"
            | "require_certificate"
            | "use_identity_as_username"
            | "use_subject_as_username"
            | "tls_version"
            | "ciphers"
            | "ciphers_tls1.3" => self.tls_option(l)?,

            // --- security (per listener with per_listener_settings) ---------
            "allow_anonymous" => {
                let v = l.bool()?;
                self.c.security.allow_anonymous = Some(v);
                self.listener_security().allow_anonymous = Some(v);
            }
            "allow_zero_length_clientid" => {
                let v = l.bool()?;
                self.c.security.allow_zero_length_clientid = v;
                self.listener_security().allow_zero_length_clientid = v;
            }
            "auto_id_prefix" => {
                self.once(l, "auto_id_prefix", true)?;
                let v = l.string()?;
                self.c.security.auto_id_prefix = v.clone();
                self.listener_security().auto_id_prefix = v;
            }

            "password_file" => {
                self.once(l, "password_file", true)?;
                let v = Some(PathBuf::from(l.string()?));
                self.c.security.password_file = v.clone();
                self.listener_security().password_file = v;
            }
            "acl_file" => {
                self.once(l, "acl_file", true)?;
                let v = Some(PathBuf::from(l.string()?));
                self.c.security.acl_file = v.clone();
                self.listener_security().acl_file = v;
            }

            // --- general ----------------------------------------------------
            "include_dir" => {
                if !main {
                    return Err(l.bad("include_dir is only allowed in the main config file"));
                }
                let dir = l.string()?;
                self.include(l, Path::new(&dir))?;
            }
            "user" => c.user = l.string()?,
            "pid_file" => {
                self.once(l, "pid_file", false)?;
                self.c.pid_file = Some(PathBuf::from(l.string()?));
            }
            "max_inflight_messages" => c.max_inflight_messages = l.num(0, u16::MAX)?,
            "max_inflight_bytes" => c.max_inflight_bytes = l.num::<u32>(0, u32::MAX)? as usize,
            "max_queued_messages" => c.max_queued_messages = l.num::<u32>(0, u32::MAX)? as usize,
            "max_queued_bytes" => c.max_queued_bytes = l.num::<u32>(0, u32::MAX)? as usize,
            "queue_qos0_messages" => c.queue_qos0_messages = l.bool()?,
            "message_size_limit" => c.message_size_limit = l.num(0, 268_435_455)?,
            "max_keepalive" => c.max_keepalive = l.num(0, u16::MAX)?,
            "max_packet_size" => {
                let n = l.num::<u32>(0, MQTT_MAX_PACKET as u32)? as usize;
                if n != 0 && n < 20 {
                    return Err(l.bad("must be 0 (no limit) or at least 20 bytes"));
                }
                c.max_packet_size = if n == 0 { MQTT_MAX_PACKET } else { n };
            }
            "retain_available" => c.retain_available = l.bool()?,
            "upgrade_outgoing_qos" => c.upgrade_outgoing_qos = l.bool()?,
            "clientid_prefixes" => {
                self.once(l, "clientid_prefixes", false)?;
                self.c.clientid_prefixes = Some(l.string()?);
            }
            "persistent_client_expiration" => {
                c.persistent_client_expiration = Some(parse_expiration(l)?);
            }
            "set_tcp_nodelay" => c.set_tcp_nodelay = l.bool()?,
            "check_retain_source" => c.check_retain_source = l.bool()?,
            "sys_interval" => c.sys_interval = l.num(0, 65535)?,
            "connection_messages" => c.connection_messages = l.bool()?,
            "memory_limit" => c.memory_limit = l.num::<u64>(0, u64::MAX)? as usize,
            "retain_expiry_interval" => c.retain_expiry_minutes = l.num(0, u32::MAX)?,
            "global_max_clients" => {
                let n = l.num::<i64>(-1, i64::from(i32::MAX))?;
                c.global_max_clients = usize::try_from(n).ok();
            }
            "global_max_connections" => {
                let n = l.num::<i64>(-1, i64::from(i32::MAX))?;
                c.global_max_connections = usize::try_from(n).ok();
            }
            // Mosquitto 2.1 reads it with a warning too.
            "dhparamfile" => {
                l.string()?;
                c.warnings.push(format!(
                    "Warning: {}: dhparamfile is not needed: midge offers ECDHE key exchange \
                     only, and the file is not read.",
                    l.origin()
                ));
            }
            "allow_duplicate_messages" => {
                l.bool()?;
                c.warnings.push(format!(
                    "{}:{}: allow_duplicate_messages is deprecated and has no effect.",
                    l.path.display(),
                    l.number
                ));
            }

            // --- logging ------------------------------------------------------
            "log_dest" => {
                if !self.log_dest_set {
                    self.c.log.dest.clear();
                    self.log_dest_set = true;
                }
                let d = match l.args.as_slice() {
                    [] => return Err(l.err(ErrorKind::MissingValue)),
                    ["stderr"] => Some(LogDest::Stderr),
                    ["stdout"] => Some(LogDest::Stdout),
                    ["syslog"] => Some(LogDest::Syslog),
                    ["topic"] => Some(LogDest::Topic),
                    ["none"] => None,
                    ["file", ..] => {
                        let p = l.rest["file".len()..].trim();
                        if p.is_empty() {
                            return Err(l.bad("'file' needs a path"));
                        }
                        Some(LogDest::File(PathBuf::from(p)))
                    }
                    ["dlt"] => return Err(l.bad("'dlt' is not supported by midge")),
                    [v, ..] => {
                        return Err(l.bad(format!(
                            "'{v}' is not one of stderr, stdout, file, syslog, topic, none"
                        )));
                    }
                };
                match d {
                    Some(d) if !self.c.log.dest.contains(&d) => self.c.log.dest.push(d),
                    Some(_) => {}
                    None => self.c.log.dest.clear(),
                }
            }
            "log_type" => {
                if !self.log_type_set {
                    self.c.log.types = 0;
                    self.log_type_set = true;
                }
                let v = l.one()?;
                match log_type::from_name(v) {
                    Some(0) => self.c.log.types = 0,
                    Some(bits) => self.c.log.types |= bits,
                    None => return Err(l.bad(format!("'{v}' is not a log type"))),
                }
            }
            "log_timestamp" => c.log.timestamp = l.bool()?,
            "log_timestamp_format" => {
                self.once(l, "log_timestamp_format", false)?;
                self.c.log.timestamp_format = Some(l.string()?);
            }
            "log_facility" => c.log.facility = Some(l.num(0, 7)?),

            // --- persistence (kept for the persistence layer) ----------------
            "persistence" => c.persistence.enabled = l.bool()?,
            "persistence_location" => {
                self.once(l, "persistence_location", false)?;
                self.c.persistence.location = Some(PathBuf::from(l.string()?));
            }
            "persistence_file" => {
                self.once(l, "persistence_file", false)?;
                self.c.persistence.file = l.string()?;
            }
            "autosave_interval" => c.persistence.autosave_interval = l.num(0, u32::MAX)?,
            "autosave_on_changes" => c.persistence.autosave_on_changes = l.bool()?,

            // --- bridges ------------------------------------------------------
            "connection" => {
                let b = Bridge::new(l)?;
                if self.bridges.iter().any(|(o, _)| o.name == b.name) {
                    return Err(l.bad(format!("a bridge named '{}' is already configured", b.name)));
                }
                self.bridges.push((b, bridge::Given::default()));
            }
            o if bridge::OPTIONS.contains(&o) => match self.bridges.last_mut() {
                Some((b, given)) => b.option(l, given, &mut self.c.warnings)?,
                None => {
                    return Err(l.bad("a bridge option belongs in a 'connection NAME' section"));
                }
            },

            // --- midge's own --------------------------------------------------
            "persistence_journal" => c.persistence.journal = l.bool()?,
            "persistence_journal_commit_interval" => {
                c.persistence.journal_commit_ms = l.num(0, 10_000)?
            }
            "client_stack_size" => {
                c.client_stack_size = l.num::<u32>(16 * 1024, 8 * 1024 * 1024)? as usize
            }
            "connect_timeout" => c.connect_timeout = l.num(1, 3600)?,
            "max_connecting" => c.max_connecting = l.num::<u32>(0, 1_000_000)? as usize,
            "max_connect_buffer" => c.max_connect_buffer = l.num::<u32>(0, u32::MAX)? as usize,

            other => {
                return Err(l.err(match options::refusal(other) {
                    Some(r) => ErrorKind::Refused(r),
                    None => ErrorKind::Unknown,
                }));
            }
        }
        Ok(())
    }

    /// One TLS option, for the current listener.
    fn tls_option(&mut self, l: &Line) -> Result<(), ConfigError> {
        const NAMES: &[&str] = &[
            "cafile",
            "capath",
            "certfile",
            "keyfile",
            "crlfile",
            "require_certificate",
            "use_identity_as_username",
            "use_subject_as_username",
            "tls_version",
            "ciphers",
            "ciphers_tls1.3",
        ];
        let Some(&name) = NAMES.iter().find(|n| **n == l.option) else {
            return Err(l.err(ErrorKind::Unknown));
        };
        let file = |l: &Line| -> Result<Option<FileSetting>, ConfigError> {
            Ok(Some(FileSetting {
                path: PathBuf::from(l.string()?),
                option: name,
                at: l.origin(),
            }))
        };
        self.not_on_unix_socket(l, "TLS")?;
        let mut warning = None;
        let tls: &mut TlsSettings = match name {
            "cafile" | "capath" | "certfile" | "keyfile" | "crlfile" | "ciphers"
            | "ciphers_tls1.3" => {
                self.once(l, name, true)?;
                &mut self.listener().tls
            }
            _ => &mut self.listener().tls,
        };
        match name {
            "cafile" => tls.cafile = file(l)?,
            "capath" => tls.capath = file(l)?,
            "certfile" => tls.certfile = file(l)?,
            "keyfile" => tls.keyfile = file(l)?,
            "crlfile" => tls.crlfile = file(l)?,
            "require_certificate" => tls.require_certificate = l.bool()?,
            "use_identity_as_username" => tls.use_identity_as_username = l.bool()?,
            "use_subject_as_username" => tls.use_subject_as_username = l.bool()?,
            "tls_version" => {
                tls.min_version = match l.one()? {
                    "tlsv1.3" => TlsVersion::Tls13,
                    "tlsv1.2" => TlsVersion::Tls12,
                    v @ ("tlsv1.1" | "tlsv1") => {
                        warning = Some(format!(
                            "Warning: {}: tls_version {v}: midge speaks TLS 1.2 and 1.3 only; \
                             this listener accepts TLS 1.2 and later, and clients limited to \
                             TLS 1.0 or 1.1 cannot connect.",
                            l.origin()
                        ));
                        TlsVersion::Tls12
                    }
                    v => {
                        return Err(l.bad(format!(
                            "'{v}' is not one of tlsv1.3, tlsv1.2, tlsv1.1, tlsv1"
                        )));
                    }
                }
            }
            "ciphers" => {
                tls.ciphers =
                    Some(super::ciphers::check(&l.string()?, false).map_err(|e| l.bad(e))?)
            }
            _ => {
                tls.ciphers_tls13 =
                    Some(super::ciphers::check(&l.string()?, true).map_err(|e| l.bad(e))?)
            }
        }
        if tls.at.is_none() {
            tls.at = Some((l.origin(), name));
        }
        self.c.warnings.extend(warning);
        Ok(())
    }

    /// Refuses an option that a Unix socket listener cannot have (`what`
    /// names what it would turn on).
    fn not_on_unix_socket(&self, l: &Line, what: &str) -> Result<(), ConfigError> {
        match self.scope {
            Some(Scope::Listener(i)) if self.listeners[i].unix_socket.is_some() => Err(l.bad(
                format!("{what} is not available on a Unix socket listener (listener 0 /path)"),
            )),
            _ => Ok(()),
        }
    }

    /// The listener of the current `listener` section, for Mosquitto 2.1's
    /// options that need one.
    fn section_listener(&mut self, l: &Line) -> Result<&mut Listener, ConfigError> {
        match self.scope {
            Some(Scope::Listener(i)) if i < self.listeners.len() => Ok(&mut self.listeners[i]),
            _ => Err(l.bad("this option belongs in a 'listener' section")),
        }
    }

    /// Security options before any listener go to the default listener's
    /// settings without opening it; after one, to the current listener.
    fn listener_security(&mut self) -> &mut super::Security {
        let l = match self.scope {
            Some(Scope::Listener(i)) if i < self.listeners.len() => &mut self.listeners[i],
            _ => self
                .default
                .get_or_insert_with(|| Listener::new(DEFAULT_PORT, None)),
        };
        &mut l.security
    }

    /// `include_dir`: every `*.conf` in `dir`, in sorted order.
    fn include(&mut self, l: &Line, dir: &Path) -> Result<(), ConfigError> {
        let dir = if dir.is_relative() {
            l.path.parent().unwrap_or(Path::new(".")).join(dir)
        } else {
            dir.to_path_buf()
        };
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| l.bad(format!("cannot read {}: {e}", dir.display())))?;
        let mut files = Vec::new();
        for e in entries {
            let e = e.map_err(|e| l.bad(format!("cannot read {}: {e}", dir.display())))?;
            let p = e.path();
            if p.extension().is_some_and(|x| x == "conf") && p.is_file() {
                files.push(p);
            }
        }
        files.sort();
        for f in files {
            self.file(&f, false)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Config, ConfigError> {
        let mut c = self.c;
        let mut listeners = Vec::new();
        // A default listener exists once `port`, `bind_address` or a listener
        // option was given outside a listener section.
        if let Some(d) = self.default.take() {
            if self.default_opened {
                listeners.push(d);
            } else if c.per_listener_settings {
                // Only security options: they have no listener to apply to.
                c.security = d.security;
            }
        }
        listeners.append(&mut self.listeners);
        for l in &listeners {
            check_tls(&l.tls)?;
            check_http_dir(l)?;
            if let (Some(at), false) = (&l.proxy_require_tls, l.proxy_protocol == 2) {
                return Err(ConfigError {
                    path: at.path.clone(),
                    line: at.line,
                    option: "proxy_protocol_v2_require_tls".into(),
                    kind: ErrorKind::BadValue(
                        "it needs 'enable_proxy_protocol 2' on its listener".into(),
                    ),
                });
            }
        }
        if listeners.is_empty() {
            c.listen_local_only(DEFAULT_PORT);
        } else {
            c.local_only = false;
            c.listeners = listeners;
            c.number_listeners();
        }
        if !self.bridges.is_empty() {
            let host = crate::sys::hostname();
            for (mut b, given) in self.bridges {
                b.finish(&given, &host)?;
                c.bridges.push(b);
            }
        }
        Ok(c)
    }
}

/// `listener 0 /path`: a listener on a Unix domain socket at `path`.
fn unix_listener(l: &Line, path: String) -> Result<Listener, ConfigError> {
    if path.len() > crate::sys::UNIX_PATH_MAX {
        return Err(l.bad(format!(
            "the socket path is {} bytes long; a Unix socket path has at most {}",
            path.len(),
            crate::sys::UNIX_PATH_MAX
        )));
    }
    let mut listener = Listener::new(0, None);
    listener.unix_socket = Some(FileSetting {
        path: PathBuf::from(path),
        option: "listener",
        at: l.origin(),
    });
    Ok(listener)
}

/// Options that only make sense together: Mosquitto's start-up checks.
fn check_tls(t: &TlsSettings) -> Result<(), ConfigError> {
    let Some((at, option)) = &t.at else {
        return Ok(());
    };
    let err = |why: &str| ConfigError {
        path: at.path.clone(),
        line: at.line,
        option: option.to_string(),
        kind: ErrorKind::BadValue(why.into()),
    };
    match (&t.certfile, &t.keyfile) {
        (None, None) => {
            return Err(err(
                "a TLS listener needs certfile and keyfile (its certificate and private key)",
            ));
        }
        (None, Some(_)) => return Err(err("keyfile is set, but certfile is missing")),
        (Some(_), None) => return Err(err("certfile is set, but keyfile is missing")),
        (Some(_), Some(_)) => {}
    }
    if t.require_certificate && t.cafile.is_none() && t.capath.is_none() {
        return Err(err(
            "require_certificate true needs cafile or capath (the CA that signs client certificates)",
        ));
    }
    Ok(())
}

/// `http_dir` names a folder, on a WebSockets listener.
fn check_http_dir(l: &Listener) -> Result<(), ConfigError> {
    let Some(dir) = &l.http_dir else {
        return Ok(());
    };
    let err = |why: String| ConfigError {
        path: dir.at.path.clone(),
        line: dir.at.line,
        option: dir.option.to_string(),
        kind: ErrorKind::BadValue(why),
    };
    if !l.websockets {
        return Err(err(
            "http_dir needs 'protocol websockets' on its listener".into()
        ));
    }
    if !dir.path.is_dir() {
        return Err(err(format!("{} is not a folder", dir.path.display())));
    }
    Ok(())
}

/// `persistent_client_expiration`: a number and h, d, w, m (30 days) or y.
fn parse_expiration(l: &Line) -> Result<Duration, ConfigError> {
    let v = l.one()?;
    let bad = || {
        l.bad(format!(
            "'{v}' is not a period like 90s, 2h, 14d, 1w, 6m or 1y"
        ))
    };
    // The unit is the last character, which need not be one byte.
    let unit_at = v.char_indices().last().map_or(0, |(i, _)| i);
    let (num, unit) = v.split_at(unit_at);
    let n: u64 = num.parse().map_err(|_| bad())?;
    // Seconds: Mosquitto 2.1 added "s".
    let seconds = match unit {
        "s" => 1,
        "h" => 3600,
        "d" => 3600 * 24,
        "w" => 3600 * 24 * 7,
        "m" => 3600 * 24 * 30,
        "y" => 3600 * 24 * 365,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(n.saturating_mul(seconds)))
}
