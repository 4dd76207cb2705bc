//! The opening HTTP request of a WebSockets listener, sans-I/O: an upgrade
//! to MQTT over WebSockets (RFC 6455 4.2), or a plain GET for `http_dir`.

use std::fmt;

use base64::Engine;
use sha1::{Digest, Sha1};

/// RFC 6455 1.3: appended to the client's key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The subprotocols MQTT clients ask for: 3.1.1 and later, and 3.1
/// [MQTT-6.0.0-3].
const SUBPROTOCOLS: &[&str] = &["mqtt", "mqttv3.1"];

/// An HTTP status this module answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    UpgradeRequired,
    HeadersTooLarge,
}

impl Status {
    pub fn line(self) -> &'static str {
        match self {
            Status::BadRequest => "400 Bad Request",
            Status::Forbidden => "403 Forbidden",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::UpgradeRequired => "426 Upgrade Required",
            Status::HeadersTooLarge => "431 Request Header Fields Too Large",
        }
    }
}

/// Why a request was refused: the status sent and the reason logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: Status,
    pub why: String,
}

impl Refusal {
    pub fn new(status: Status, why: impl Into<String>) -> Refusal {
        Refusal {
            status,
            why: why.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.why, self.status.line())
    }
}

/// What a well-formed request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A WebSocket upgrade; `response` is the whole 101 answer, `origin`
    /// the request's Origin header (browsers send one).
    Upgrade {
        response: String,
        origin: Option<String>,
    },
    /// A plain GET of this request target (path and query, undecoded).
    Get { target: String },
}

/// The index of the first byte after the request head (after the empty
/// line), once `buf` holds all of it.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Parses a complete request head (as [`head_end`] delimits it).
pub fn parse(head: &[u8]) -> Result<Request, Refusal> {
    let bad = |why: &str| Refusal::new(Status::BadRequest, why);
    let text = std::str::from_utf8(head).map_err(|_| bad("request head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(bad("not an HTTP/1.x request"));
    }
    if method != "GET" {
        return Err(Refusal::new(
            Status::MethodNotAllowed,
            format!("method {method} (only GET is served)"),
        ));
    }
    if !target.starts_with('/') {
        return Err(bad("request target is not a path"));
    }
    let mut upgrade = None;
    let mut connection = None;
    let mut key = None;
    let mut ws_version = None;
    let mut protocols = None;
    let mut origin = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad("malformed header line"));
        };
        let value = value.trim();
        let slot = match name.to_ascii_lowercase().as_str() {
            "upgrade" => &mut upgrade,
            "connection" => &mut connection,
            "sec-websocket-key" => &mut key,
            "sec-websocket-version" => &mut ws_version,
            "origin" => &mut origin,
            "sec-websocket-protocol" => {
                // May repeat: the lists add up.
                let all: &mut String = protocols.get_or_insert_with(String::new);
                all.push(',');
                all.push_str(value);
                continue;
            }
            _ => continue,
        };
        *slot = Some(value);
    }
    let wants_upgrade = upgrade.is_some_and(|u| has_token(u, "websocket"));
    if !wants_upgrade {
        return Ok(Request::Get {
            target: target.to_string(),
        });
    }
    if !connection.is_some_and(|c| has_token(c, "upgrade")) {
        return Err(bad("WebSocket upgrade without 'Connection: Upgrade'"));
    }
    if ws_version != Some("13") {
        return Err(Refusal::new(
            Status::UpgradeRequired,
            format!(
                "WebSocket version {} (13 is spoken)",
                ws_version.unwrap_or("missing")
            ),
        ));
    }
    let key = key.ok_or_else(|| bad("no Sec-WebSocket-Key"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| bad("Sec-WebSocket-Key is not base64"))?;
    if decoded.len() != 16 {
        return Err(bad("Sec-WebSocket-Key is not 16 bytes"));
    }
    let protocol = match &protocols {
        None => None,
        Some(list) => Some(
            list.split(',')
                .map(str::trim)
                .find_map(|p| SUBPROTOCOLS.iter().find(|s| s.eq_ignore_ascii_case(p)))
                .ok_or_else(|| {
                    bad(&format!(
                        "subprotocols '{}' offered, not mqtt or mqttv3.1",
                        list.trim_start_matches(',')
                    ))
                })?,
        ),
    };
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        accept_key(key)
    );
    if let Some(p) = protocol {
        response.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    response.push_str("\r\n");
    Ok(Request::Upgrade {
        response,
        origin: origin.map(str::to_string),
    })
}

/// Whether the comma-separated header value holds `token` (any case).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Sec-WebSocket-Accept for a client's Sec-WebSocket-Key (RFC 6455 4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A short HTTP answer with a status and a text body, then close.
pub fn error_response(status: Status) -> String {
    let body = format!("{}\n", status.line());
    let mut r = format!(
        "HTTP/1.1 {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n",
        status.line(),
        body.len()
    );
    if status == Status::UpgradeRequired {
        r.push_str("Sec-WebSocket-Version: 13\r\n");
    }
    r.push_str("\r\n");
    r.push_str(&body);
    r
}
