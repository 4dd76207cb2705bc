//! MQTT over WebSockets (`protocol websockets`): a byte stream like the
//! others, in the client's own thread.
//!
//! [`WsStream`] wraps a plain or TLS [`Stream`] and is read and written by
//! the client thread exactly like one: `read` gives MQTT bytes (frame
//! headers stripped, payloads unmasked in the caller's buffer), `write`
//! sends MQTT bytes as binary frames. Before MQTT starts,
//! [`WsStream::handshake`] reads the HTTP request: a WebSocket upgrade
//! ([`handshake`]) goes on to MQTT, a plain GET is answered from
//! `http_dir` ([`http`]) and the connection ends.
//!
//! Hand-written rather than a crate: the broker needs a byte stream over a
//! non-blocking socket, not messages, and its idle clients hold no buffer
//! here (a few dozen bytes of state; output frames are freed once sent).

pub mod frame;
pub mod handshake;
pub mod http;
#[cfg(test)]
mod tests;

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use log::info;

use crate::config::{Config, Listener};
use crate::logging;
use crate::sys::{POLLIN, POLLOUT};
use crate::transport::{self, HandshakeError, Stream};
use frame::Deframer;
use handshake::{Refusal, Request, Status};

/// libwebsockets log levels, the bits of `websockets_log_level` that
/// midge's WebSockets layer logs at (with `log_type websockets`).
pub const LLL_ERR: u32 = 1;
pub const LLL_WARN: u32 = 1 << 1;
pub const LLL_NOTICE: u32 = 1 << 2;
pub const LLL_INFO: u32 = 1 << 3;

/// MQTT bytes put into one frame: output frames are built in a buffer,
/// and this bounds it.
const WRITE_FRAME: usize = 16 * 1024;

/// File bytes read and sent at a time for `http_dir`.
const FILE_CHUNK: usize = 16 * 1024;

/// Output (pongs mostly) beyond which no more frames are read until the
/// client takes it: a ping flood from a client that does not read stops
/// here. The same as the client thread's write high-water mark.
pub const OUT_HIGH_WATER: usize = 64 * 1024;

/// A WebSockets listener's settings, as one connection needs them.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `http_dir`: the folder plain GET requests are served from.
    pub http_dir: Option<PathBuf>,
    /// The largest request head read (`websockets_headers_size`).
    pub headers_size: usize,
    /// `websockets_log_level`: which of the LLL_* lines are logged.
    pub log_level: u32,
    /// The longest data frame accepted (the largest MQTT packet).
    pub max_frame: u64,
    /// `websockets_origin`: the Origin headers an upgrade may carry; empty,
    /// any. A request without an Origin header (not from a browser) is not
    /// refused, as in Mosquitto 2.1.
    pub origins: Vec<String>,
}

impl Settings {
    /// The settings of WebSockets listener `l`.
    pub fn for_listener(l: &Listener, config: &Config) -> Settings {
        Settings {
            http_dir: l.http_dir.as_ref().map(|d| d.path.clone()),
            headers_size: config.websockets_headers_size,
            log_level: config.websockets_log_level,
            max_frame: config.max_packet_size as u64,
            origins: l.websockets_origins.clone(),
        }
    }
}

/// Logs a line of the WebSockets layer when `websockets_log_level` has
/// `level`; `log_type websockets` decides if it is written.
fn ws_log(settings: &Settings, level: u32, msg: std::fmt::Arguments) {
    if settings.log_level & level != 0 {
        info!(target: logging::WEBSOCKETS, "{msg}");
    }
}

/// MQTT over WebSockets over a plain or TLS stream. Owned and used only by
/// its client thread.
pub struct WsStream {
    pub inner: Stream,
    de: Deframer,
    /// Frames not yet written: `out[opos..]`. 0 <= opos <= out.len()
    out: Vec<u8>,
    opos: usize,
    /// Bytes that came behind the request head, read before the socket.
    early: Vec<u8>,
    /// A close frame came: reads give end of stream.
    closed: bool,
    /// Upgraded, and no close frame sent yet: dropping the stream sends one.
    open: bool,
    /// Until the handshake is done; then dropped.
    settings: Option<Box<Settings>>,
}

impl WsStream {
    pub fn new(inner: Stream, settings: Settings) -> WsStream {
        WsStream {
            inner,
            de: Deframer::new(settings.max_frame),
            out: Vec::new(),
            opos: 0,
            early: Vec::new(),
            closed: false,
            open: false,
            settings: Some(Box::new(settings)),
        }
    }

    /// Whether frames wait to be written.
    pub fn wants_write(&self) -> bool {
        self.opos < self.out.len() || self.inner.wants_write()
    }

    /// Bytes of frames waiting to be written (1 for output waiting below,
    /// in TLS).
    pub fn backlog(&self) -> usize {
        self.out.len() - self.opos + usize::from(self.inner.wants_write())
    }

    /// Whether received bytes wait that poll(2) cannot see.
    pub fn buffered(&mut self) -> bool {
        !self.early.is_empty() || self.inner.buffered()
    }

    /// Writes waiting frames, as far as the socket takes them.
    pub fn push(&mut self) -> io::Result<()> {
        while self.opos < self.out.len() {
            match self.inner.write(&self.out[self.opos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.opos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Sent: an idle client holds no output buffer.
        self.out = Vec::new();
        self.opos = 0;
        self.inner.push()
    }

    /// Runs the TLS handshake if any, then reads the HTTP request by
    /// `deadline`. Ok once upgraded to WebSocket; an error otherwise,
    /// [`HandshakeError::Http`] when a plain HTTP request was answered.
    pub fn handshake(&mut self, deadline: Instant) -> Result<(), HandshakeError> {
        self.inner.handshake(deadline)?;
        let Some(settings) = self.settings.take() else {
            return Ok(());
        };
        let mut head = self.read_head(&settings, deadline)?;
        let Some(end) = handshake::head_end(&head) else {
            let r = Refusal::new(
                Status::HeadersTooLarge,
                format!(
                    "request head over {} bytes (websockets_headers_size)",
                    settings.headers_size
                ),
            );
            return Err(self.refuse(r, deadline));
        };
        self.early = head.split_off(end);
        match handshake::parse(&head) {
            Ok(Request::Upgrade {
                origin: Some(o), ..
            }) if !settings.origins.is_empty() && !settings.origins.contains(&o) => {
                let r = Refusal::new(
                    Status::Forbidden,
                    format!("origin '{o}' is not allowed (websockets_origin)"),
                );
                Err(self.refuse(r, deadline))
            }
            Ok(Request::Upgrade { response, .. }) => {
                self.send_all(response.as_bytes(), deadline)?;
                self.open = true;
                Ok(())
            }
            Ok(Request::Get { target }) => {
                self.serve(&settings, &target, deadline);
                Err(HandshakeError::Http)
            }
            Err(r) => Err(self.refuse(r, deadline)),
        }
    }

    /// Reads until the end of the request head, the size limit or the
    /// deadline.
    fn read_head(&mut self, s: &Settings, deadline: Instant) -> Result<Vec<u8>, HandshakeError> {
        let mut head = Vec::new();
        while handshake::head_end(&head).is_none() && head.len() < s.headers_size {
            let start = head.len();
            head.resize(start + (s.headers_size - start).min(1024), 0);
            let got = self.inner.read(&mut head[start..]);
            head.truncate(start + *got.as_ref().unwrap_or(&0));
            match got {
                Ok(0) => return Err(HandshakeError::Closed("WebSocket")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.inner.buffered() {
                        transport::wait(self.inner.socket(), POLLIN, deadline, "WebSocket")?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(HandshakeError::Io(e)),
            }
        }
        Ok(head)
    }

    /// Answers a refused upgrade with its status; the error to report.
    fn refuse(&mut self, r: Refusal, deadline: Instant) -> HandshakeError {
        let _ = self.send_all(handshake::error_response(r.status).as_bytes(), deadline);
        self.end_http();
        HandshakeError::WebSocket(r.to_string())
    }

    /// Answers a plain GET from `http_dir`, or with 404 without one.
    fn serve(&mut self, s: &Settings, target: &str, deadline: Instant) {
        let found = match &s.http_dir {
            None => Err(Refusal::new(
                Status::NotFound,
                "no http_dir on this listener",
            )),
            Some(dir) => http::resolve(dir, target),
        };
        let peer = self.inner.peer().map(|a| a.to_string()).unwrap_or_default();
        match found {
            Ok(mut f) => {
                ws_log(
                    s,
                    LLL_INFO,
                    format_args!("http: {peer} GET {target}: 200, {} bytes", f.len),
                );
                if self.send_file(&mut f, deadline).is_err() {
                    ws_log(
                        s,
                        LLL_ERR,
                        format_args!("http: {peer} GET {target}: not sent in full"),
                    );
                }
            }
            Err(r) => {
                let level = if r.status == Status::Forbidden {
                    LLL_WARN
                } else {
                    LLL_NOTICE
                };
                ws_log(s, level, format_args!("http: {peer} GET {target}: {r}"));
                let _ = self.send_all(handshake::error_response(r.status).as_bytes(), deadline);
            }
        }
        self.end_http();
    }

    fn send_file(&mut self, f: &mut http::Found, deadline: Instant) -> Result<(), HandshakeError> {
        self.send_all(http::ok_head(f).as_bytes(), deadline)?;
        let mut buf = vec![0; FILE_CHUNK];
        let mut left = f.len;
        while left > 0 {
            let n = match f.file.read(&mut buf) {
                Ok(0) => return Err(HandshakeError::Closed("HTTP")),
                Ok(n) => n.min(left as usize),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(HandshakeError::Io(e)),
            };
            self.send_all(&buf[..n], deadline)?;
            left -= n as u64;
        }
        Ok(())
    }

    /// Ends an HTTP answer: TLS close_notify, then no more writes.
    fn end_http(&mut self) {
        if let Stream::Tls(t) = &mut self.inner {
            t.tls.send_close_notify();
            let _ = self.inner.push();
        }
        let sock = self.inner.socket();
        let _ = sock.shutdown(std::net::Shutdown::Write);
        // Closing with unread bytes would reset the connection and could
        // destroy the answer before the client reads it: drop what has
        // arrived (a request over the size limit), without waiting.
        let mut sink = [0u8; 512];
        for _ in 0..128 {
            match (&*sock).read(&mut sink) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }

    /// Writes all of `bytes` by `deadline`, waiting for room as needed.
    fn send_all(&mut self, mut bytes: &[u8], deadline: Instant) -> Result<(), HandshakeError> {
        let wait = |s: &Stream| transport::wait(s.socket(), POLLOUT, deadline, "WebSocket");
        while !bytes.is_empty() {
            match self.inner.write(bytes) {
                Ok(0) => return Err(HandshakeError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait(&self.inner)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(HandshakeError::Io(e)),
            }
        }
        while self.inner.wants_write() {
            match self.inner.push() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait(&self.inner)?,
                Err(e) => return Err(HandshakeError::Io(e)),
            }
        }
        Ok(())
    }

    /// Bytes from before the socket's: what came behind the request head.
    fn read_raw(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.early.is_empty() {
            return self.inner.read(buf);
        }
        let n = buf.len().min(self.early.len());
        buf[..n].copy_from_slice(&self.early[..n]);
        self.early.drain(..n);
        if self.early.is_empty() {
            self.early = Vec::new();
        }
        Ok(n)
    }
}

impl Read for WsStream {
    /// MQTT bytes; Ok(0) once the peer closed (a close frame or the socket);
    /// WouldBlock when nothing waits. A bad frame is an InvalidData error,
    /// after a close frame that says why is queued.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.closed || buf.is_empty() {
                return Ok(0);
            }
            if self.backlog() >= OUT_HIGH_WATER {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.read_raw(buf)?;
            if n == 0 {
                return Ok(0);
            }
            let decoded = self.de.decode(&mut buf[..n], &mut self.out);
            let d = match decoded {
                Ok(d) => d,
                Err(e) => {
                    frame::encode_close(e.close_code(), &mut self.out);
                    self.open = false;
                    let _ = self.push();
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("WebSocket protocol error: {e}"),
                    ));
                }
            };
            if self.wants_write() {
                // A pong or the answer to a close: best effort now; the
                // client thread polls for the rest (`wants_write`).
                match self.push() {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                    _ => {}
                }
            }
            self.closed = d.closed;
            // The answer to a close frame is queued.
            self.open &= !d.closed;
            if d.data > 0 {
                return Ok(d.data);
            }
            // Only headers or control frames: read on.
        }
    }
}

impl Drop for WsStream {
    /// The broker ends the connection (DISCONNECT, keepalive, takeover,
    /// shutdown): a close frame first, so that the browser sees a normal
    /// close (1000) rather than a lost connection; best effort.
    fn drop(&mut self) {
        if self.open {
            frame::encode_close(frame::CLOSE_NORMAL, &mut self.out);
            let _ = self.push();
        }
    }
}

impl Write for WsStream {
    /// Sends up to [`WRITE_FRAME`] bytes of `buf` as one binary frame, once
    /// the frames before it are out; WouldBlock while they are not.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.opos < self.out.len() {
            self.push()?;
        }
        let n = buf.len().min(WRITE_FRAME);
        frame::encode(frame::BINARY, &buf[..n], &mut self.out);
        match self.push() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.push()
    }
}
