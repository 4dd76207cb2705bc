//! The command line of `midge_pub` and `midge_sub`, read as Mosquitto's
//! client_shared.c reads it: the options file first (one option per line),
//! then argv, left to right, each error a line on stderr that scripts may
//! already match on.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::codec::{Level, Properties, QoS};
use crate::topic;

/// Which tool is parsing: options that belong to the other one are unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pub,
    Sub,
    /// `midge_rr`: one request, one response.
    Rr,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pub => "midge_pub",
            Kind::Sub => "midge_sub",
            Kind::Rr => "midge_rr",
        }
    }
}

/// The `-D command identifier value` properties, per packet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolProps {
    pub connect: Properties,
    pub publish: Properties,
    pub subscribe: Properties,
    pub unsubscribe: Properties,
    pub disconnect: Properties,
    pub will: Properties,
}

/// Where `midge_pub` takes its message from (`-m -f -s -l -n`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PubMode {
    None,
    Message(Vec<u8>),
    File(PathBuf),
    StdinFile,
    StdinLine,
    Null,
}

/// The digest signed by `--sign-key` and checked by `--verify-key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Digest {
    Sha1,
    Sha256,
}

/// Everything the command line and the options file say.
#[derive(Clone, Debug)]
pub struct Config {
    pub kind: Kind,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// `--unix`: a socket path instead of host and port.
    pub unix: Option<PathBuf>,
    pub bind_address: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub id: Option<String>,
    pub id_prefix: Option<String>,
    pub keepalive: u16,
    pub clean: bool,
    pub level: Level,
    /// `-x`: the MQTT 5 session expiry interval.
    pub session_expiry: Option<u32>,
    /// `-D`: MQTT 5 properties.
    pub props: ToolProps,
    /// `midge_rr -e`: where the response is awaited.
    pub response_topic: Option<String>,
    pub debug: bool,
    pub quiet: bool,
    pub nodelay: bool,
    pub max_inflight: usize,
    pub will_topic: Option<String>,
    pub will_payload: Option<Vec<u8>>,
    pub will_qos: QoS,
    pub will_retain: bool,
    pub qos: QoS,
    // midge_pub
    pub topic: Option<String>,
    pub mode: PubMode,
    pub retain: bool,
    pub repeat_count: u32,
    pub repeat_delay: Duration,
    // midge_sub
    pub topics: Vec<String>,
    pub filter_outs: Vec<String>,
    pub unsub_topics: Vec<String>,
    pub verbose: bool,
    pub msg_count: u32,
    pub timeout: Option<u32>,
    pub exit_after_sub: bool,
    pub no_retain: bool,
    pub eol: bool,
    pub format: Option<String>,
    pub pretty: bool,
    pub retained_only: bool,
    pub remove_retained: bool,
    /// Out of 10,000: the share of messages printed.
    pub random_filter: u32,
    // Signed messages.
    pub sign_key: Option<PathBuf>,
    pub verify_key: Option<PathBuf>,
    pub digest: Digest,
    /// `--cafile`, `--insecure`, ...: TLS when a CA is given.
    pub tls: crate::link::tls::Options,
}

/// Why parsing stopped short of a config.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// `--help`.
    Help,
    /// `--version`.
    Version,
    /// The message for stderr, newlines included, as Mosquitto prints it.
    Error(String),
}

type Res = Result<(), Stop>;

fn err<T>(msg: impl Into<String>) -> Result<T, Stop> {
    Err(Stop::Error(msg.into()))
}

/// C's atoi: optional blanks and sign, then digits; anything else ends it.
pub fn atoi(s: &str) -> i64 {
    let s = s.trim_start();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut v: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        v = v.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg { -v } else { v }
}

/// C's atof, enough for the tools' arguments: the longest prefix that reads
/// as a decimal number, else 0.
pub fn atof(s: &str) -> f64 {
    let s = s.trim_start();
    let end = s
        .char_indices()
        .take_while(|(i, c)| c.is_ascii_digit() || *c == '.' || (*i == 0 && matches!(c, '-' | '+')))
        .map(|(i, c)| i + c.len_utf8())
        .last()
        .unwrap_or(0);
    (0..=end)
        .rev()
        .find_map(|n| s[..n].parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// TLS options of Mosquitto's tools that rustls cannot offer.
const NO_TLS_ENGINE: &[&str] = &["--keyform", "--tls-engine", "--tls-engine-kpass-sha1"];
const NO_PSK: &[&str] = &["--psk", "--psk-identity"];

impl Config {
    fn new(kind: Kind) -> Config {
        Config {
            kind,
            host: None,
            port: None,
            unix: None,
            bind_address: None,
            username: None,
            password: None,
            id: None,
            id_prefix: None,
            keepalive: 60,
            clean: true,
            // mosquitto_rr speaks MQTT 5 unless told otherwise.
            level: if kind == Kind::Rr {
                Level::V5
            } else {
                Level::V311
            },
            session_expiry: None,
            props: ToolProps::default(),
            response_topic: None,
            debug: false,
            quiet: false,
            nodelay: false,
            max_inflight: 20,
            will_topic: None,
            will_payload: None,
            will_qos: QoS::AtMostOnce,
            will_retain: false,
            qos: QoS::AtMostOnce,
            topic: None,
            mode: PubMode::None,
            retain: false,
            repeat_count: 1,
            repeat_delay: Duration::ZERO,
            topics: Vec::new(),
            filter_outs: Vec::new(),
            unsub_topics: Vec::new(),
            verbose: false,
            msg_count: 0,
            timeout: None,
            exit_after_sub: false,
            no_retain: false,
            eol: true,
            format: None,
            pretty: false,
            retained_only: false,
            remove_retained: false,
            random_filter: 10_000,
            sign_key: None,
            verify_key: None,
            digest: Digest::Sha256,
            tls: crate::link::tls::Options::default(),
        }
    }

    /// Reads the options file (`-o FILE`, else `$XDG_CONFIG_HOME/<tool>`,
    /// else `~/.config/<tool>`), then `args`, then checks what only the
    /// whole can tell.
    pub fn load(kind: Kind, args: &[OsString]) -> Result<Config, Stop> {
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut cfg = Config::new(kind);
        let mut options_file = None;
        for (i, a) in args.iter().enumerate() {
            if a == "-o" {
                if options_file.is_some() {
                    return err("Error: Duplicate -o argument given.\n\n");
                }
                match args.get(i + 1) {
                    Some(f) => options_file = Some(PathBuf::from(f)),
                    None => {
                        return err("Error: -o argument given but no options file specified.\n\n");
                    }
                }
            }
        }
        let file = options_file.or_else(|| {
            let name = kind.name();
            match std::env::var_os("XDG_CONFIG_HOME") {
                Some(dir) => Some(PathBuf::from(dir).join(name)),
                None => std::env::var_os("HOME")
                    .map(|home| PathBuf::from(home).join(".config").join(name)),
            }
        });
        if let Some(text) = file.and_then(|f| std::fs::read(f).ok()) {
            for line in String::from_utf8_lossy(&text).lines() {
                if line.starts_with('#') {
                    continue;
                }
                let line = line.trim_end_matches(['\r', '\n']).trim_start_matches(' ');
                if line.is_empty() {
                    continue;
                }
                let words: Vec<String> = match line.split_once(' ') {
                    Some((opt, rest)) => vec![opt.to_string(), rest.to_string()],
                    None => vec![line.to_string()],
                };
                cfg.parse(&words)?;
            }
        }
        cfg.parse(&args)?;
        cfg.finish()?;
        Ok(cfg)
    }

    /// `-D command identifier value [value]`: returns how many arguments
    /// after `-D` it took.
    fn property(&mut self, rest: &[String]) -> Result<usize, Stop> {
        use crate::codec::props::{self, Context};
        let (Some(cmd), Some(name), Some(text)) = (rest.first(), rest.get(1), rest.get(2)) else {
            return err("Error: --property argument given but not enough arguments specified.\n\n");
        };
        let (list, ctx) = match cmd.as_str() {
            "connect" => (&mut self.props.connect, Context::Connect),
            "publish" => (&mut self.props.publish, Context::Publish),
            "subscribe" => (&mut self.props.subscribe, Context::Subscribe),
            "unsubscribe" => (&mut self.props.unsubscribe, Context::Unsubscribe),
            "disconnect" => (&mut self.props.disconnect, Context::Disconnect),
            "will" => (&mut self.props.will, Context::Will),
            "auth" => {
                return err("Error: auth properties are not supported (midge offers no AUTH).\n\n");
            }
            _ => return err("Error: Invalid command given in --property argument.\n\n"),
        };
        let Some(pid) = props::by_name(name) else {
            return err("Error: Invalid property name given in --property argument.\n\n");
        };
        if !props::allowed(pid, ctx) {
            return err(format!(
                "Error: {name} property not allowed for {cmd} in --property argument.\n\n"
            ));
        }
        let pair = pid == props::id::USER_PROPERTY;
        let second = match (pair, rest.get(3)) {
            (false, _) => "",
            (true, Some(v)) => v.as_str(),
            (true, None) => {
                return err(
                    "Error: --property argument given but not enough arguments specified.\n\n",
                );
            }
        };
        let value = props::parse_value(pid, text, second).or_else(|n| {
            err(format!(
                "Error: Property value ({n}) out of range for property {name}.\n\n"
            ))
        })?;
        list.push(pid, value);
        Ok(if pair { 4 } else { 3 })
    }

    fn finish(&mut self) -> Res {
        use crate::codec::props::{Context, has_duplicate};
        let p = &self.props;
        for (list, ctx, cmd) in [
            (&p.connect, Context::Connect, "CONNECT"),
            (&p.publish, Context::Publish, "PUBLISH"),
            (&p.subscribe, Context::Subscribe, "SUBSCRIBE"),
            (&p.unsubscribe, Context::Unsubscribe, "UNSUBSCRIBE"),
            (&p.disconnect, Context::Disconnect, "DISCONNECT"),
            (&p.will, Context::Will, "WILL"),
        ] {
            if has_duplicate(list, ctx) {
                return err(format!(
                    "Error in {cmd} properties: Duplicate property in property list\n"
                ));
            }
        }
        if self.kind == Kind::Rr
            && (self.topic.is_none() || self.mode == PubMode::None || self.response_topic.is_none())
        {
            return err("Error: All of topic, message, and response topic must be supplied.\n");
        }
        if self.will_payload.is_some() && self.will_topic.is_none() {
            return err("Error: Will payload given, but no will topic given.\n");
        }
        if self.will_retain && self.will_topic.is_none() {
            return err("Error: Will retain given, but no will topic given.\n");
        }
        if !self.clean && (self.id_prefix.is_some() || self.id.is_none()) {
            return err("Error: You must provide a client id if you are using the -c option.\n");
        }
        if self.kind == Kind::Sub && self.topics.is_empty() {
            return err("Error: You must specify a topic to subscribe to.\n");
        }
        if let Err(e) = self.tls.check() {
            return err(e);
        }
        if self.sign_key.is_some() && self.kind == Kind::Sub {
            return err("Error: Unknown option '--sign-key'.\n");
        }
        Ok(())
    }

    fn parse(&mut self, argv: &[String]) -> Res {
        let rr = self.kind == Kind::Rr;
        // midge_rr takes the message options of midge_pub and the output
        // options of midge_sub.
        let pubs = self.kind == Kind::Pub || rr;
        let subs = self.kind == Kind::Sub || rr;
        let pub_only = self.kind == Kind::Pub;
        let sub_only = self.kind == Kind::Sub;
        let mut i = 0;
        while i < argv.len() {
            let opt = argv[i].as_str();
            // The option's argument, or the "given but no ..." error.
            let mut value = |what: &str| -> Result<String, Stop> {
                match argv.get(i + 1) {
                    Some(v) => {
                        i += 1;
                        Ok(v.clone())
                    }
                    None => err(format!(
                        "Error: {opt} argument given but no {what} specified.\n\n"
                    )),
                }
            };
            match opt {
                "-A" => self.bind_address = Some(value("address")?),
                "-C" if sub_only => {
                    let v = atoi(&value("count")?);
                    if v < 1 {
                        return err(format!("Error: Invalid message count \"{v}\".\n\n"));
                    }
                    self.msg_count = u32::try_from(v).unwrap_or(u32::MAX);
                }
                "-c" | "--disable-clean-session" => self.clean = false,
                "-d" | "--debug" => self.debug = true,
                "-x" => {
                    // MQTT 5 only; "∞" or -1 is "never expires".
                    let v = value("session expiry interval")?;
                    let n = if v == "∞" {
                        -1
                    } else {
                        let Ok(n) = v.parse::<i64>() else {
                            return err("Error: session-expiry-interval not a number.\n\n");
                        };
                        if !(-1..=i64::from(u32::MAX)).contains(&n) {
                            return err("Error: session-expiry-interval out of range.\n\n");
                        }
                        n
                    };
                    self.session_expiry = Some(u32::try_from(n).unwrap_or(u32::MAX));
                }
                "-D" | "--property" => {
                    let n = self.property(&argv[i + 1..])?;
                    i += n;
                }
                "-e" if rr => self.response_topic = Some(value("response topic")?),
                "-E" if sub_only => self.exit_after_sub = true,
                "-f" | "--file" if pubs => {
                    self.set_mode(PubMode::None)?;
                    let f = value("file")?;
                    self.mode = PubMode::File(PathBuf::from(f));
                }
                "-F" if subs => {
                    let f = value("format")?;
                    if let Err(e) = super::format::check(&f) {
                        return err(e);
                    }
                    self.format = Some(f);
                }
                "--help" => return Err(Stop::Help),
                "-h" | "--host" => self.host = Some(value("host")?),
                "-i" | "--id" => {
                    if self.id_prefix.is_some() {
                        return err("Error: -i and -I argument cannot be used together.\n\n");
                    }
                    self.id = Some(value("id")?);
                }
                "-I" | "--id-prefix" => {
                    if self.id.is_some() {
                        return err("Error: -i and -I argument cannot be used together.\n\n");
                    }
                    self.id_prefix = Some(value("id prefix")?);
                }
                "-k" | "--keepalive" => {
                    let k = atoi(&value("keepalive")?);
                    if !(5..=65535).contains(&k) {
                        return err(
                            "Error: Invalid keepalive given, it must be between 5 and 65535 inclusive.\n\n",
                        );
                    }
                    self.keepalive = k as u16;
                }
                "-L" | "--url" => {
                    let url = value("URL")?;
                    self.url(&url)?;
                }
                "-l" | "--stdin-line" if pub_only => self.set_mode(PubMode::StdinLine)?,
                "-m" | "--message" if pubs => {
                    self.set_mode(PubMode::None)?;
                    let m = value("message")?;
                    self.mode = PubMode::Message(m.into_bytes());
                }
                "-M" => {
                    let m = atoi(&value("max_inflight")?);
                    if m < 1 {
                        return err("Error: Maximum inflight messages must be greater than 0.\n\n");
                    }
                    self.max_inflight = usize::try_from(m).unwrap_or(usize::MAX);
                }
                "--nodelay" => self.nodelay = true,
                "-n" | "--null-message" if pubs => self.set_mode(PubMode::Null)?,
                "-N" if subs => self.eol = false,
                "-o" => {
                    value("options file")?; // Read before the rest.
                }
                "-p" | "--port" => {
                    let p = atoi(&value("port")?);
                    if !(0..=65535).contains(&p) {
                        return err(format!("Error: Invalid port given: {p}\n"));
                    }
                    self.port = Some(p as u16);
                    self.unix = None;
                }
                "--pretty" if subs => self.pretty = true,
                "-P" | "--pw" => self.password = Some(value("password")?),
                "-q" | "--qos" => {
                    self.qos = qos(atoi(&value("QoS")?), "Error: Invalid QoS given: {}\n")?
                }
                "--quiet" => self.quiet = true,
                "-r" | "--retain" if pub_only => self.retain = true,
                "-R" if subs => self.no_retain = true,
                "--random-filter" if sub_only => {
                    let f = (10.0 * atof(&value("chance")?)) as i64;
                    if !(1..=10_000).contains(&f) {
                        return err("Error: --random-filter chance must be between 0.1-100.0\n\n");
                    }
                    self.random_filter = f as u32;
                }
                "--remove-retained" if sub_only => self.remove_retained = true,
                "--repeat" if pub_only => {
                    let n = atoi(&value("count")?);
                    if n < 1 {
                        return err("Error: --repeat argument must be >0.\n\n");
                    }
                    self.repeat_count = u32::try_from(n).unwrap_or(u32::MAX);
                }
                "--repeat-delay" if pub_only => {
                    let f = atof(&value("time")?);
                    if f < 0.0 || !f.is_finite() {
                        return err("Error: --repeat-delay argument must be >=0.0.\n\n");
                    }
                    self.repeat_delay = Duration::from_micros((f * 1e6) as u64);
                }
                "--retained-only" if sub_only => self.retained_only = true,
                "-s" | "--stdin-file" if pubs => self.set_mode(PubMode::StdinFile)?,
                "-t" | "--topic" => {
                    let t = value("topic")?;
                    self.add_topic(t)?;
                }
                "-T" | "--filter-out" if sub_only => {
                    let t = value("topic filter")?;
                    if !topic::valid_filter(&t) {
                        return err(format!(
                            "Error: Invalid filter topic '{t}', are all '+' and '#' wildcards correct?\n"
                        ));
                    }
                    self.filter_outs.push(t);
                }
                "-U" | "--unsubscribe" if sub_only => {
                    let t = value("unsubscribe topic")?;
                    if !topic::valid_filter(&t) {
                        return err(format!(
                            "Error: Invalid unsubscribe topic '{t}', are all '+' and '#' wildcards correct?\n"
                        ));
                    }
                    self.unsub_topics.push(t);
                }
                "-u" | "--username" => self.username = Some(value("username")?),
                "--unix" => {
                    self.unix = Some(PathBuf::from(value("socket path")?));
                }
                "-V" | "--protocol-version" => {
                    let v = match argv.get(i + 1) {
                        Some(v) => v.clone(),
                        None => {
                            return err(
                                "Error: --protocol-version argument given but no version specified.\n\n",
                            );
                        }
                    };
                    i += 1;
                    self.level = match v.as_str() {
                        "mqttv31" | "31" => Level::V31,
                        "mqttv311" | "311" => Level::V311,
                        "mqttv5" | "5" => Level::V5,
                        _ => return err("Error: Invalid protocol version argument given.\n\n"),
                    };
                }
                "-v" | "--verbose" if subs => self.verbose = true,
                "--version" => return Err(Stop::Version),
                "-W" if subs => {
                    let w = atoi(&value("timeout")?);
                    if w < 1 {
                        return err(format!("Error: Invalid timeout \"{w}\".\n\n"));
                    }
                    self.timeout = Some(u32::try_from(w).unwrap_or(u32::MAX));
                }
                "--will-payload" => {
                    self.will_payload = Some(value("will payload")?.into_bytes());
                }
                "--will-qos" => {
                    self.will_qos =
                        qos(atoi(&value("will QoS")?), "Error: Invalid will QoS {}.\n\n")?;
                }
                "--will-retain" => self.will_retain = true,
                "--will-topic" => {
                    let t = value("will topic")?;
                    if !topic::valid_name(&t) {
                        return err(format!(
                            "Error: Invalid will topic '{t}', does it contain '+' or '#'?\n"
                        ));
                    }
                    self.will_topic = Some(t);
                }
                "--sign-key" if pub_only => self.sign_key = Some(PathBuf::from(value("key file")?)),
                "--verify-key" if sub_only => {
                    self.verify_key = Some(PathBuf::from(value("key file")?));
                }
                "--sign-digest" => {
                    self.digest = match value("digest")?.as_str() {
                        "sha1" => Digest::Sha1,
                        "sha256" => Digest::Sha256,
                        d => {
                            return err(format!(
                                "Error: Invalid digest '{d}', it must be sha1 or sha256.\n\n"
                            ));
                        }
                    };
                }
                "--cafile" => self.tls.cafile = Some(PathBuf::from(value("cafile")?)),
                "--capath" => self.tls.capath = Some(PathBuf::from(value("capath")?)),
                "--cert" => self.tls.cert = Some(PathBuf::from(value("cert")?)),
                "--key" => self.tls.key = Some(PathBuf::from(value("key")?)),
                "--ciphers" => self.tls.ciphers = Some(value("ciphers")?),
                "--tls-version" => self.tls.version = Some(value("TLS version")?),
                "--tls-alpn" => self.tls.alpn = Some(value("TLS ALPN protocol")?),
                "--insecure" => self.tls.insecure = true,
                "--tls-use-os-certs" => self.tls.os_certs = true,
                o if NO_TLS_ENGINE.contains(&o) => {
                    return err(format!(
                        "Error: {o}: OpenSSL engines do not exist in rustls, the TLS library of {}.\n",
                        self.kind.name()
                    ));
                }
                o if NO_PSK.contains(&o) => {
                    return err(format!(
                        "Error: {o}: rustls, the TLS library of {}, has no TLS-PSK; use certificates.\n",
                        self.kind.name()
                    ));
                }
                "--proxy" => {
                    return err(format!(
                        "Error: --proxy: SOCKS proxies are not supported by {}.\n",
                        self.kind.name()
                    ));
                }
                o => return err(format!("Error: Unknown option '{o}'.\n")),
            }
            i += 1;
        }
        Ok(())
    }

    fn set_mode(&mut self, mode: PubMode) -> Res {
        if self.mode != PubMode::None {
            return err("Error: Only one type of message can be sent at once.\n\n");
        }
        self.mode = mode;
        Ok(())
    }

    fn add_topic(&mut self, t: String) -> Res {
        match self.kind {
            Kind::Pub => {
                if !topic::valid_name(&t) {
                    return err(format!(
                        "Error: Invalid publish topic '{t}', does it contain '+' or '#'?\n"
                    ));
                }
                self.topic = Some(t);
            }
            Kind::Rr => {
                if !topic::valid_name(&t) {
                    return err(format!(
                        "Error: Invalid publish topic '{t}', does it contain '+' or '#'?\n"
                    ));
                }
                self.topic = Some(t);
            }
            Kind::Sub => {
                if !topic::valid_filter(&t) {
                    return err(format!(
                        "Error: Invalid subscription topic '{t}', are all '+' and '#' wildcards correct?\n"
                    ));
                }
                self.topics.push(t);
            }
        }
        Ok(())
    }

    /// `-L mqtt://[user[:password]@]host[:port]/topic`.
    fn url(&mut self, url: &str) -> Res {
        let lower = url.to_ascii_lowercase();
        let rest = if lower.starts_with("mqtt://") {
            self.port = Some(1883);
            &url[7..]
        } else if lower.starts_with("mqtts://") {
            // libmosquitto: port 8883, and the system's roots unless a CA
            // file or directory is given.
            self.port = Some(8883);
            self.tls.os_certs = true;
            &url[8..]
        } else {
            return err("Error: Unsupported URL scheme.\n\n");
        };
        let Some((mut authority, topic)) = rest.split_once('/') else {
            return err("Error: Invalid URL for -L argument specified - topic missing.\n");
        };
        self.add_topic(topic.to_string())?;
        if let Some((creds, host)) = authority.split_once('@') {
            match creds.split_once(':') {
                Some((u, p)) => {
                    self.username = Some(u.to_string());
                    self.password = Some(p.to_string());
                }
                None => self.username = Some(creds.to_string()),
            }
            authority = host;
        }
        match authority.split_once(':') {
            Some((h, p)) => {
                self.host = Some(h.to_string());
                self.port = Some(atoi(p).clamp(0, 65535) as u16);
            }
            None => self.host = Some(authority.to_string()),
        }
        Ok(())
    }

    /// The client id sent in CONNECT: `-i`, `-I` plus the pid, or empty
    /// (the broker then assigns one, as with Mosquitto's tools).
    pub fn client_id(&self) -> String {
        match (&self.id, &self.id_prefix) {
            (Some(id), _) => id.clone(),
            (None, Some(prefix)) => format!("{prefix}{}", std::process::id()),
            (None, None) => String::new(),
        }
    }
}

fn qos(v: i64, msg: &str) -> Result<QoS, Stop> {
    match u8::try_from(v).ok().and_then(QoS::from_u8) {
        Some(q) => Ok(q),
        None => err(msg.replace("{}", &v.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(kind: Kind, args: &[&str]) -> Result<Config, Stop> {
        let mut v: Vec<OsString> = vec!["-o".into(), "/nonexistent/options".into()];
        v.extend(args.iter().map(OsString::from));
        Config::load(kind, &v)
    }

    #[test]
    fn atoi_reads_as_c_does() {
        assert_eq!(atoi("12abc"), 12);
        assert_eq!(atoi("  -3"), -3);
        assert_eq!(atoi("x"), 0);
        assert_eq!(atof("0.5s"), 0.5);
        assert_eq!(atof("abc"), 0.0);
    }

    #[test]
    fn url_sets_credentials_host_port_and_topic() {
        let c = load(
            Kind::Pub,
            &["-L", "mqtt://u:p@example.org:1884/a/b", "-m", "x"],
        )
        .unwrap();
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password.as_deref(), Some("p"));
        assert_eq!(c.host.as_deref(), Some("example.org"));
        assert_eq!(c.port, Some(1884));
        assert_eq!(c.topic.as_deref(), Some("a/b"));
    }

    #[test]
    fn errors_read_as_mosquitto_s() {
        assert_eq!(
            load(Kind::Sub, &["-t", "a", "-q", "3"]).unwrap_err(),
            Stop::Error("Error: Invalid QoS given: 3\n".into())
        );
        assert_eq!(
            load(Kind::Sub, &["-t", "a", "-p"]).unwrap_err(),
            Stop::Error("Error: -p argument given but no port specified.\n\n".into())
        );
        assert_eq!(
            load(Kind::Pub, &["-t", "a", "-v"]).unwrap_err(),
            Stop::Error("Error: Unknown option '-v'.\n".into())
        );
        assert_eq!(
            load(Kind::Pub, &["-t", "a", "--cert", "c"]).unwrap_err(),
            Stop::Error(
                "Error: Both certfile and keyfile must be provided if one of them is set.\n".into()
            )
        );
        assert!(matches!(
            load(Kind::Sub, &["-t", "a", "--cafile", "/nonexistent/ca.crt"]),
            Err(Stop::Error(e)) if e == "Error: Problem setting TLS options: File not found.\n"
        ));
    }
}
