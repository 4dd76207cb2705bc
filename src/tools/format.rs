//! What `midge_sub` prints for a message: the payload, `-v`'s topic and
//! payload, or a `-F` format with every specifier of `mosquitto_sub` 2.0
//! (`%` message fields and helpers, `@` strftime(3) fields, `\` escapes),
//! byte for byte as it prints them.

use std::ffi::CString;
use std::time::{SystemTime, UNIX_EPOCH};

use super::args::Config;
use super::json::{self, Value};
use crate::codec::props::id;
use crate::codec::{Properties, Publish};
use crate::sys;

/// Checks a `-F` format as `mosquitto_sub` does before connecting; the
/// error is its message.
pub fn check(format: &str) -> Result<(), String> {
    let s = format.as_bytes();
    let len = s.len();
    let incomplete = || Err("Error: Incomplete format specifier.\n".to_string());
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    let mut i = 0;
    while i < len {
        match s[i] {
            b'%' => {
                if i == len - 1 {
                    return incomplete();
                }
                // Flag, width and precision; the format may not end in them.
                let step = |i: &mut usize| {
                    *i += 1;
                    if *i == len - 1 { incomplete() } else { Ok(()) }
                };
                if matches!(at(i + 1), b'0' | b'-') {
                    step(&mut i)?;
                }
                while at(i + 1).is_ascii_digit() {
                    step(&mut i)?;
                }
                if at(i + 1) == b'.' {
                    step(&mut i)?;
                    while at(i + 1).is_ascii_digit() {
                        step(&mut i)?;
                    }
                }
                let c = at(i + 1);
                if !b"%ACDEFIlmPpqRSrtjJUxX".contains(&c) {
                    return Err(format!(
                        "Error: Invalid format specifier '{}'.\n",
                        char::from(c)
                    ));
                }
                i += 1;
            }
            b'@' => {
                if i == len - 1 {
                    return incomplete();
                }
                i += 1;
            }
            b'\\' => {
                if i == len - 1 {
                    return Err("Error: Incomplete escape specifier.\n".into());
                }
                let c = s[i + 1];
                if !b"\\0aenrtv".contains(&c) {
                    return Err(format!(
                        "Error: Invalid escape specifier '{}'.\n",
                        char::from(c)
                    ));
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The moment a message is printed: seconds and nanoseconds since 1970.
#[derive(Clone, Copy)]
struct Now {
    secs: i64,
    nanos: u32,
}

impl Now {
    fn get() -> Now {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Now {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        }
    }

    /// Local time through strftime(3); empty when it gives nothing.
    fn strftime(self, format: &str) -> String {
        CString::new(format)
            .ok()
            .and_then(|f| sys::strftime_local(&f, self.secs))
            .unwrap_or_default()
    }
}

/// Appends what `mosquitto_sub` prints for `m`, newline included unless `-N`.
/// Errors for stderr (a `%J` payload that is not JSON) go to `errors`.
pub fn message(cfg: &Config, m: &Publish, out: &mut Vec<u8>, errors: &mut Vec<String>) {
    if let Some(f) = &cfg.format {
        formatted(cfg, f.as_bytes(), m, out, errors);
        if cfg.eol {
            out.push(b'\n');
        }
    } else if cfg.verbose {
        if m.payload.is_empty() {
            if cfg.eol {
                out.extend_from_slice(m.topic.as_bytes());
                out.extend_from_slice(b" (null)\n");
            }
        } else {
            out.extend_from_slice(m.topic.as_bytes());
            out.push(b' ');
            out.extend_from_slice(&m.payload);
            if cfg.eol {
                out.push(b'\n');
            }
        }
    } else if !m.payload.is_empty() {
        out.extend_from_slice(&m.payload);
        if cfg.eol {
            out.push(b'\n');
        }
    }
}

/// How one `%` specifier is to be laid out.
#[derive(Clone, Copy)]
struct Spec {
    left: bool,
    pad: u8,
    width: usize,
    precision: Option<usize>,
}

fn formatted(cfg: &Config, f: &[u8], m: &Publish, out: &mut Vec<u8>, errors: &mut Vec<String>) {
    let len = f.len();
    let now = Now::get();
    let mut i = 0;
    while i < len {
        match f[i] {
            b'%' => {
                let mut spec = Spec {
                    left: false,
                    pad: b' ',
                    width: 0,
                    precision: None,
                };
                if i < len - 1 {
                    i += 1;
                    if f[i] == b'-' {
                        spec.left = true;
                        if i < len - 1 {
                            i += 1;
                        }
                    }
                    if f[i] == b'0' {
                        spec.pad = b'0';
                        if i < len - 1 {
                            i += 1;
                        }
                    }
                    while i < len - 1 && f[i].is_ascii_digit() {
                        spec.width = spec
                            .width
                            .saturating_mul(10)
                            .saturating_add(usize::from(f[i] - b'0'));
                        i += 1;
                    }
                    if f[i] == b'.' && i < len - 1 {
                        i += 1;
                        let mut p = 0usize;
                        while i < len - 1 && f[i].is_ascii_digit() {
                            p = p
                                .saturating_mul(10)
                                .saturating_add(usize::from(f[i] - b'0'));
                            i += 1;
                        }
                        spec.precision = Some(p);
                    }
                    // Widths beyond any screen are a typo, not a request
                    // for gigabytes of padding.
                    spec.width = spec.width.min(1 << 16);
                    percent(cfg, f[i], spec, m, now, out, errors);
                }
            }
            b'@' => {
                if i < len - 1 {
                    i += 1;
                    match f[i] {
                        b'@' => out.push(b'@'),
                        b'N' => out.extend_from_slice(format!("{:09}", now.nanos).as_bytes()),
                        c => {
                            let fmt = format!("%{}", char::from(c));
                            out.extend_from_slice(now.strftime(&fmt).as_bytes());
                        }
                    }
                }
            }
            b'\\' => {
                if i < len - 1 {
                    i += 1;
                    let e = match f[i] {
                        b'\\' => Some(b'\\'),
                        b'0' => Some(0),
                        b'a' => Some(7),
                        b'e' => Some(0x1B),
                        b'n' => Some(b'\n'),
                        b'r' => Some(b'\r'),
                        b't' => Some(b'\t'),
                        b'v' => Some(0x0B),
                        _ => None,
                    };
                    out.extend(e);
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
}

fn percent(
    cfg: &Config,
    c: u8,
    spec: Spec,
    m: &Publish,
    now: Now,
    out: &mut Vec<u8>,
    errors: &mut Vec<String>,
) {
    match c {
        b'%' => out.push(b'%'),
        // MQTT 5 properties; a message without one prints blanks (or
        // nothing), as mosquitto_sub does.
        b'A' | b'E' | b'F' | b'S' => {
            let pp = m.props.as_deref();
            let v = match c {
                b'A' => pp.and_then(|p| p.topic_alias).map(u32::from),
                b'E' => pp.and_then(|p| p.expiry),
                b'F' => prop(m, id::PAYLOAD_FORMAT).and_then(|p| p.int(id::PAYLOAD_FORMAT)),
                _ => pp.and_then(|p| p.sub_ids.first().copied()),
            };
            match v {
                Some(v) => put_int(i64::from(v), spec, out),
                None => out.resize(out.len() + spec.width, spec.pad),
            }
        }
        b'C' | b'R' => {
            let pid = if c == b'C' {
                id::CONTENT_TYPE
            } else {
                id::RESPONSE_TOPIC
            };
            match prop(m, pid).as_ref().and_then(|p| p.str(pid)) {
                Some(s) => put_str(s.as_bytes(), spec, out),
                None if c == b'C' => out.resize(out.len() + spec.width, b' '),
                None => {}
            }
        }
        b'D' => {
            if let Some(p) = prop(m, id::CORRELATION_DATA) {
                out.extend_from_slice(p.bin(id::CORRELATION_DATA).unwrap_or_default());
            }
        }
        b'P' => {
            if let Some(p) = prop(m, id::USER_PROPERTY) {
                for (i, (k, v)) in p.user().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    out.extend_from_slice(format!("{k}:{v}").as_bytes());
                }
            }
        }
        b'I' => put_str(now.strftime("%FT%T%z").as_bytes(), spec, out),
        b'j' | b'J' => {
            if let Err(e) = json_line(m, now, c == b'j', cfg.pretty, out) {
                errors.push(e);
            }
        }
        b'l' => put_int(m.payload.len() as i64, spec, out),
        b'm' => put_int(i64::from(m.pkid), spec, out),
        b'p' => put_payload(&m.payload, Hex::No, spec, out),
        b'q' => out.push(b'0' + m.qos as u8),
        b'r' => out.push(if m.retain { b'1' } else { b'0' }),
        b't' => put_str(m.topic.as_bytes(), spec, out),
        b'U' => {
            let s = now.strftime("%s");
            if !s.is_empty() {
                out.extend_from_slice(format!("{s}.{:09}", now.nanos).as_bytes());
            }
        }
        b'x' => put_payload(&m.payload, Hex::Lower, spec, out),
        b'X' => put_payload(&m.payload, Hex::Upper, spec, out),
        _ => {}
    }
}

/// The forwarded MQTT 5 properties of `m`, when it has one `pid`.
fn prop(m: &Publish, pid: u8) -> Option<Properties> {
    let p = m.props.as_ref()?.forwarded();
    p.get(pid).is_some().then_some(p)
}

/// printf's `%d` with the spec's flags and width.
fn put_int(v: i64, spec: Spec, out: &mut Vec<u8>) {
    let w = spec.width;
    let s = if spec.left {
        format!("{v:<w$}")
    } else if spec.pad == b'0' {
        format!("{v:0w$}")
    } else {
        format!("{v:>w$}")
    };
    out.extend_from_slice(s.as_bytes());
}

/// printf's `%*.*s` over bytes.
fn put_str(s: &[u8], spec: Spec, out: &mut Vec<u8>) {
    let s = match spec.precision {
        Some(p) if p < s.len() => &s[..p],
        _ => s,
    };
    let pad = spec.width.saturating_sub(s.len());
    if !spec.left {
        out.resize(out.len() + pad, b' ');
    }
    out.extend_from_slice(s);
    if spec.left {
        out.resize(out.len() + pad, b' ');
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hex {
    No,
    Lower,
    Upper,
}

/// The payload, raw or in hex, within the field width as Mosquitto's
/// write_payload lays it out (a width also cuts the payload).
fn put_payload(payload: &[u8], hex: Hex, spec: Spec, out: &mut Vec<u8>) {
    let w = spec.width;
    let (shown, pad) = if w > 0 {
        let n = payload.len().min(w);
        if hex == Hex::No {
            (n, w - n)
        } else {
            (n / 2, w - (n / 2) * 2)
        }
    } else {
        (payload.len(), 0)
    };
    if !spec.left {
        out.resize(out.len() + pad, spec.pad);
    }
    for &b in &payload[..shown] {
        match hex {
            Hex::No => out.push(b),
            Hex::Lower => out.extend_from_slice(format!("{b:02x}").as_bytes()),
            Hex::Upper => out.extend_from_slice(format!("{b:02X}").as_bytes()),
        }
    }
    if spec.left {
        out.resize(out.len() + pad, b' ');
    }
}

/// `%j` (payload as an escaped string) and
/// `%J` (payload that is itself JSON), with Mosquitto's members in order.
fn json_line(
    m: &Publish,
    now: Now,
    escaped: bool,
    pretty: bool,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let tst = format!(
        "{}.{:06}Z{}",
        now.strftime("%Y-%m-%dT%H:%M:%S"),
        now.nanos / 1000,
        now.strftime("%z")
    );
    let mut members = vec![
        (b"tst".to_vec(), Value::Str(tst.into_bytes())),
        (b"topic".to_vec(), Value::Str(m.topic.as_bytes().to_vec())),
        (b"qos".to_vec(), Value::Number(f64::from(m.qos as u8))),
        (
            b"retain".to_vec(),
            Value::Number(f64::from(u8::from(m.retain))),
        ),
        (
            b"payloadlen".to_vec(),
            Value::Number(m.payload.len() as f64),
        ),
    ];
    if m.qos as u8 > 0 {
        members.push((b"mid".to_vec(), Value::Number(f64::from(m.pkid))));
    }
    let payload = if m.payload.is_empty() {
        Value::Null
    } else if !escaped {
        json::parse(&m.payload).ok_or_else(|| {
            format!(
                "Error: Message payload is not valid JSON on topic {}.\n",
                m.topic
            )
        })?
    } else {
        // cJSON takes the payload as a C string: it ends at a NUL byte.
        let end = m
            .payload
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(m.payload.len());
        Value::Str(m.payload[..end].to_vec())
    };
    members.push((b"payload".to_vec(), payload));
    Value::Object(members).print(pretty, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::codec::QoS;

    #[test]
    fn check_reports_mosquitto_s_errors() {
        assert!(check("%t %p @Y \\n %-10.3t %05l").is_ok());
        assert_eq!(
            check("%z"),
            Err("Error: Invalid format specifier 'z'.\n".into())
        );
        assert_eq!(
            check("%"),
            Err("Error: Incomplete format specifier.\n".into())
        );
        assert_eq!(
            check("%10"),
            Err("Error: Incomplete format specifier.\n".into())
        );
        assert_eq!(
            check("\\q"),
            Err("Error: Invalid escape specifier 'q'.\n".into())
        );
    }

    #[test]
    fn widths_and_hex() {
        let m = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: Arc::from("r/1"),
            pkid: 7,
            payload: Arc::from(&b"one"[..]),
            props: None,
        };
        let mut cfg = Config::load(
            super::super::args::Kind::Sub,
            &["-t".into(), "a".into(), "-o".into(), "/nonexistent".into()],
        )
        .unwrap();
        cfg.format = Some("%t|%p|%r|%q|%l|%m|%x|%X|%%|%10t|%-10t|%.1t|%05l|%-5l|%8p|%-8x|".into());
        let mut out = Vec::new();
        message(&cfg, &m, &mut out, &mut Vec::new());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "r/1|one|1|1|3|7|6f6e65|6F6E65|%|       r/1|r/1       |r|00003|3    |     one|6f      |\n"
        );
    }
}
