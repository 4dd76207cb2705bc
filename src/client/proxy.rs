//! The PROXY protocol (HAProxy's, versions 1 and 2) on listeners with
//! `enable_proxy_protocol` (Mosquitto 2.1): a proxy in front of the broker
//! opens each connection with a header naming the client's real address,
//! which the broker then logs and uses in place of the proxy's.
//!
//! The header is read before anything else (TLS, WebSockets, MQTT), byte
//! by byte for version 1 and by its announced length for version 2, so not
//! one byte of what follows is taken. A listener accepts only the version
//! it names; a connection without a valid header is closed with one line.
//! On other listeners a header is not looked for, and the bytes fail as the
//! first MQTT packet (Mosquitto does the same).

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use crate::transport::Socket;

/// Version 2's first 12 bytes.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest version 1 line, CRLF included (the specification's 107).
const V1_MAX: usize = 107;

/// The most address and TLV bytes a version 2 header may carry here: the
/// addresses take at most 216 (Unix sockets); TLVs (TLS details, a unique
/// id) fit well within the rest.
const V2_MAX_BODY: usize = 1024;

/// What a PROXY header says of the client.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Its address; None when the header says the connection is the
    /// proxy's own (v1 `UNKNOWN`, v2 `LOCAL`, or an address family other
    /// than TCP over IPv4 or IPv6): then the socket's peer stands.
    pub client: Option<SocketAddr>,
    /// Version 2 only: the client reached the proxy over TLS (a PP2_TYPE_SSL
    /// TLV with its PP2_CLIENT_SSL bit).
    pub tls: bool,
}

/// Why a connection's PROXY header was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Bad {
    /// Not a header of the version the listener accepts.
    Malformed(&'static str),
    /// The connection ended or failed before the header did.
    Io(String),
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Malformed(why) => write!(f, "bad PROXY header: {why}"),
            Bad::Io(e) => write!(f, "no PROXY header: {e}"),
        }
    }
}

/// Reads the PROXY header of `version` (1 or 2) from `sock` before
/// `deadline`.
pub fn read_header(sock: &mut Socket, version: u8, deadline: Instant) -> Result<Header, Bad> {
    let mut next = |buf: &mut [u8]| -> Result<(), Bad> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Bad::Io("timed out".into()));
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| Bad::Io(e.to_string()))?;
        sock.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Bad::Io("timed out".into()),
            io::ErrorKind::UnexpectedEof => Bad::Io("connection closed".into()),
            _ => Bad::Io(e.to_string()),
        })
    };
    let found = if version == 1 {
        let mut line = Vec::with_capacity(V1_MAX);
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            if line.len() == V1_MAX {
                return Err(Bad::Malformed("version 1 line too long"));
            }
            next(&mut byte)?;
            line.push(byte[0]);
            if !b"PROXY ".starts_with(&line[..line.len().min(6)]) {
                return Err(Bad::Malformed("not a version 1 header"));
            }
        }
        parse_v1(&line).map(|client| Header { client, tls: false })
    } else {
        let mut head = [0u8; 16];
        next(&mut head)?;
        let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
        if head[..12] != V2_SIGNATURE {
            return Err(Bad::Malformed("not a version 2 header"));
        }
        if len > V2_MAX_BODY {
            return Err(Bad::Malformed("version 2 header too long"));
        }
        let mut body = vec![0u8; len];
        next(&mut body)?;
        parse_v2(&head, &body)
    };
    sock.set_read_timeout(None)
        .map_err(|e| Bad::Io(e.to_string()))?;
    found
}

/// `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN ...\r\n`.
pub fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, Bad> {
    let bad = |why| Err(Bad::Malformed(why));
    let Some(text) = line
        .strip_suffix(b"\r\n")
        .and_then(|l| std::str::from_utf8(l).ok())
    else {
        return bad("version 1 line is not text ending in CRLF");
    };
    let words: Vec<&str> = text.split(' ').collect();
    match words.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let (Ok(src), Ok(_), Ok(sport), Ok(_)) = (
                src.parse::<IpAddr>(),
                dst.parse::<IpAddr>(),
                sport.parse::<u16>(),
                dport.parse::<u16>(),
            ) else {
                return bad("version 1 addresses or ports do not read");
            };
            if src.is_ipv4() != (*family == "TCP4") {
                return bad("version 1 address of the wrong family");
            }
            Ok(Some(SocketAddr::new(src, sport)))
        }
        _ => bad("version 1 line is not PROXY TCP4, TCP6 or UNKNOWN"),
    }
}

/// Version 2: the 16-byte head (signature, version and command, family,
/// length) and the `body` it announced: the addresses, then TLVs.
pub fn parse_v2(head: &[u8; 16], body: &[u8]) -> Result<Header, Bad> {
    if head[12] >> 4 != 2 {
        return Err(Bad::Malformed("version 2 header of another version"));
    }
    match head[12] & 0x0F {
        // LOCAL: the proxy's own connection (a health check).
        0 => return Ok(Header::default()),
        1 => {}
        _ => {
            return Err(Bad::Malformed(
                "version 2 command is neither LOCAL nor PROXY",
            ));
        }
    }
    let (client, tlvs) = v2_addresses(head[13], body)?;
    Ok(Header {
        client,
        tls: client_tls(tlvs)?,
    })
}

/// The client's address of a version 2 body of `family`, and the TLVs
/// after the addresses.
fn v2_addresses(family: u8, body: &[u8]) -> Result<(Option<SocketAddr>, &[u8]), Bad> {
    let bad = |why| Err(Bad::Malformed(why));
    let skip = |n: usize| {
        body.get(n..)
            .ok_or(Bad::Malformed("version 2 addresses cut short"))
    };
    match family {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let Some(a) = body.get(..12) else {
                return bad("version 2 IPv4 addresses cut short");
            };
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let client = SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]]));
            Ok((Some(client), skip(12)?))
        }
        // TCP over IPv6.
        0x21 => {
            let Some(a) = body.get(..36) else {
                return bad("version 2 IPv6 addresses cut short");
            };
            let mut src = [0u8; 16];
            src.copy_from_slice(&a[..16]);
            let port = u16::from_be_bytes([a[32], a[33]]);
            Ok((
                Some(SocketAddr::new(Ipv6Addr::from(src).into(), port)),
                skip(36)?,
            ))
        }
        // Unix sockets (stream or datagram): the connection's own peer
        // stands.
        0x31 | 0x32 => Ok((None, skip(216)?)),
        // UDP over IPv4 and IPv6 take as much room as TCP.
        0x12 => Ok((None, skip(12)?)),
        0x22 => Ok((None, skip(36)?)),
        // UNSPEC: no addresses.
        _ => Ok((None, body)),
    }
}

/// Whether the TLVs of a version 2 header say the client used TLS: a
/// PP2_TYPE_SSL (0x20) whose first byte has PP2_CLIENT_SSL (0x01).
fn client_tls(mut tlvs: &[u8]) -> Result<bool, Bad> {
    let mut tls = false;
    while !tlvs.is_empty() {
        let (Some(&kind), Some(len)) = (tlvs.first(), tlvs.get(1..3)) else {
            return Err(Bad::Malformed("version 2 TLV cut short"));
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let Some(value) = tlvs.get(3..3 + len) else {
            return Err(Bad::Malformed("version 2 TLV cut short"));
        };
        if kind == 0x20 {
            tls |= value.first().is_some_and(|c| c & 0x01 != 0);
        }
        tlvs = &tlvs[3 + len..];
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_lines() {
        assert_eq!(
            parse_v1(b"PROXY TCP4 203.0.113.7 192.0.2.1 4321 1883\r\n"),
            Ok(Some("203.0.113.7:4321".parse().expect("addr")))
        );
        assert_eq!(
            parse_v1(b"PROXY TCP6 2001:db8::7 2001:db8::1 4321 1883\r\n"),
            Ok(Some("[2001:db8::7]:4321".parse().expect("addr")))
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n"), Ok(None));
        for bad in [
            &b"PROXY TCP4 203.0.113.7 192.0.2.1 4321\r\n"[..],
            b"PROXY TCP4 2001:db8::7 192.0.2.1 4321 1883\r\n",
            b"PROXY TCP4 203.0.113.300 192.0.2.1 4321 1883\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 70000 1883\r\n",
            b"PROXY UDP4 203.0.113.7 192.0.2.1 4321 1883\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 4321 1883\n",
        ] {
            assert!(parse_v1(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    fn head(ver_cmd: u8, family: u8, len: u16) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[..12].copy_from_slice(&V2_SIGNATURE);
        h[12] = ver_cmd;
        h[13] = family;
        h[14..].copy_from_slice(&len.to_be_bytes());
        h
    }

    #[test]
    fn version_2_headers() {
        let v4 = [198, 51, 100, 9, 192, 0, 2, 1, 0x10, 0xE1, 0x07, 0x5B];
        let client = |a: &str| Some(a.parse().expect("addr"));
        let seen = |tls: bool| {
            Ok(Header {
                client: client("198.51.100.9:4321"),
                tls,
            })
        };
        assert_eq!(parse_v2(&head(0x21, 0x11, 12), &v4), seen(false));
        // A PP2_TYPE_SSL TLV with the client bit, after a unique id TLV.
        let mut with_tls = v4.to_vec();
        with_tls.extend([0x05, 0, 2, 0xAB, 0xCD, 0x20, 0, 5, 0x01, 0, 0, 0, 0]);
        assert_eq!(parse_v2(&head(0x21, 0x11, 25), &with_tls), seen(true));
        // The SSL TLV without the client bit; a TLV cut short.
        let mut no_tls = v4.to_vec();
        no_tls.extend([0x20, 0, 5, 0x00, 0, 0, 0, 0]);
        assert_eq!(
            parse_v2(&head(0x21, 0x11, 20), &no_tls).map(|h| h.tls),
            Ok(false)
        );
        assert!(parse_v2(&head(0x21, 0x11, 19), &with_tls[..19]).is_err());
        let mut v6 = vec![0u8; 36];
        v6[0] = 0x20;
        v6[1] = 0x01;
        v6[15] = 7;
        v6[32..34].copy_from_slice(&4321u16.to_be_bytes());
        assert_eq!(
            parse_v2(&head(0x21, 0x21, 36), &v6).map(|h| h.client),
            Ok(client("[2001::7]:4321"))
        );
        assert_eq!(parse_v2(&head(0x20, 0x00, 0), &[]), Ok(Header::default()));
        assert!(parse_v2(&head(0x21, 0x11, 4), &v4[..4]).is_err());
        assert!(parse_v2(&head(0x11, 0x11, 12), &v4).is_err());
        assert!(parse_v2(&head(0x22, 0x11, 12), &v4).is_err());
    }
}
