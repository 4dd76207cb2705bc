//! RFC 6455 framing, server side, sans-I/O: client frames in, MQTT bytes out.
//!
//! MQTT over WebSockets carries a byte stream: a packet may span frames and
//! a frame may hold several packets [MQTT-6.0.0-2]. So the [`Deframer`]
//! does not collect messages. It strips frame headers and unmasks payloads
//! in place, in the buffer the bytes were read into, and leaves only MQTT
//! bytes at its front. The only state kept between reads is a partial
//! header (at most 14 bytes) and a partial control frame (at most 125).

use std::fmt;

/// Opcodes (RFC 6455 5.2).
pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;

/// Control frames carry at most this many payload bytes (RFC 6455 5.5).
const MAX_CONTROL: u64 = 125;

/// Close status codes (RFC 6455 7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Why a client's frame ends its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// RSV1-3 set: no extension was agreed.
    Reserved,
    UnknownOpcode(u8),
    /// Client frames must be masked (RFC 6455 5.1).
    Unmasked,
    /// MQTT travels in binary frames only [MQTT-6.0.0-1].
    Text,
    /// A control frame longer than 125 bytes or not final.
    BadControl,
    /// Longer than the broker takes (or than 2^63, which RFC 6455 forbids).
    TooLarge {
        len: u64,
        max: u64,
    },
    /// A continuation with no message begun.
    Continuation,
    /// A new data frame while a fragmented message is still open.
    Unfinished,
    /// A close frame with a one-byte payload.
    BadClose,
}

impl FrameError {
    /// The status code the close frame that answers this error carries.
    pub fn close_code(self) -> u16 {
        match self {
            FrameError::Text => CLOSE_UNSUPPORTED_DATA,
            FrameError::TooLarge { .. } => CLOSE_TOO_BIG,
            _ => CLOSE_PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Reserved => write!(f, "reserved bits set in a frame"),
            FrameError::UnknownOpcode(op) => write!(f, "unknown frame opcode {op:#x}"),
            FrameError::Unmasked => write!(f, "client frame not masked"),
            FrameError::Text => write!(f, "text frame (MQTT needs binary frames)"),
            FrameError::BadControl => write!(f, "control frame fragmented or over 125 bytes"),
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes, more than {max}")
            }
            FrameError::Continuation => write!(f, "continuation frame with no message begun"),
            FrameError::Unfinished => write!(f, "new message before the last one's final frame"),
            FrameError::BadClose => write!(f, "close frame with a one-byte payload"),
        }
    }
}

/// A parsed client frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: u8,
    len: u64,
    mask: [u8; 4],
}

/// Parses a frame header from the front of `buf`: Ok(None) when more bytes
/// are needed, else the header and its length in bytes.
fn parse_header(buf: &[u8], max: u64) -> Result<Option<(Header, usize)>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    let control = match opcode {
        CONTINUATION | BINARY => false,
        TEXT => return Err(FrameError::Text),
        CLOSE | PING | PONG => true,
        op => return Err(FrameError::UnknownOpcode(op)),
    };
    if b1 & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let (len, at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(b);
                (u64::from_be_bytes(n), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if control && (!fin || len > MAX_CONTROL) {
        return Err(FrameError::BadControl);
    }
    // The most significant bit must be 0 (RFC 6455 5.2); `max` is below.
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let Some(m) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let mask = [m[0], m[1], m[2], m[3]];
    Ok(Some((
        Header {
            fin,
            opcode,
            len,
            mask,
        },
        at + 4,
    )))
}

/// XORs `data` with `mask`, `offset` bytes into the frame's payload.
fn unmask(data: &mut [u8], mask: [u8; 4], offset: u64) {
    let start = (offset % 4) as usize;
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(start + i) % 4];
    }
}

/// Appends the header of a server frame (final, unmasked) with `len`
/// payload bytes to `out`.
pub fn encode_header(opcode: u8, len: usize, out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(n) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Appends a server frame with `payload` to `out`.
pub fn encode(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    encode_header(opcode, payload.len(), out);
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` (none when 0) to `out`.
pub fn encode_close(code: u16, out: &mut Vec<u8>) {
    if code == 0 {
        encode(CLOSE, &[], out);
    } else {
        encode(CLOSE, &code.to_be_bytes(), out);
    }
}

/// Where the deframer is within the client's frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between frames; `hdr[..hdr_len]` holds a partial header.
    Header,
    /// In a data frame's payload: `left` bytes to go, `done` already seen.
    Data { left: u64, done: u64, mask: [u8; 4] },
    /// In a control frame's payload, collected in `ctrl`.
    Control {
        opcode: u8,
        left: u64,
        mask: [u8; 4],
    },
    /// A close frame came: nothing more is read.
    Closed,
}

/// What one call to [`Deframer::decode`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// MQTT bytes now at the front of the buffer.
    pub data: usize,
    /// The client sent a close frame (its answer is queued).
    pub closed: bool,
}

/// The reading half of a server's WebSocket connection. Owned by the
/// client thread's stream; written only by [`Deframer::decode`].
#[derive(Debug)]
pub struct Deframer {
    state: State,
    /// A header split across reads: `hdr[..hdr_len]`. 0 <= hdr_len < 14
    hdr: [u8; MAX_HEADER],
    hdr_len: u8,
    /// Inside a fragmented binary message (a non-final frame was seen).
    fragmented: bool,
    /// A control frame's payload so far (at most 125 bytes; freed after).
    ctrl: Vec<u8>,
    /// The longest data frame accepted.
    max_frame: u64,
}

impl Deframer {
    pub fn new(max_frame: u64) -> Deframer {
        Deframer {
            state: State::Header,
            hdr: [0; MAX_HEADER],
            hdr_len: 0,
            fragmented: false,
            ctrl: Vec::new(),
            max_frame,
        }
    }

    /// Decodes the raw bytes `buf` in place: frame headers go, payloads are
    /// unmasked and moved to the front. Answers to pings and closes are
    /// appended to `out`. After a close frame the rest of `buf` is ignored.
    pub fn decode(&mut self, buf: &mut [u8], out: &mut Vec<u8>) -> Result<Decoded, FrameError> {
        // Payload bytes kept so far are `buf[..kept]`; raw bytes not yet
        // looked at are `buf[pos..]`. 0 <= kept <= pos <= buf.len()
        let mut kept = 0;
        let mut pos = 0;
        while pos < buf.len() {
            match self.state {
                State::Closed => break,
                State::Header => {
                    pos += self.header(&buf[pos..])?;
                    // An empty control frame is complete with its header.
                    if let State::Control {
                        opcode, left: 0, ..
                    } = self.state
                    {
                        self.control(opcode, out)?;
                    }
                }
                State::Data { left, done, mask } => {
                    let n = left.min((buf.len() - pos) as u64) as usize;
                    buf.copy_within(pos..pos + n, kept);
                    unmask(&mut buf[kept..kept + n], mask, done);
                    kept += n;
                    pos += n;
                    let left = left - n as u64;
                    self.state = match left {
                        0 => State::Header,
                        _ => State::Data {
                            left,
                            done: done + n as u64,
                            mask,
                        },
                    };
                }
                State::Control { opcode, left, mask } => {
                    let n = left.min((buf.len() - pos) as u64) as usize;
                    let done = self.ctrl.len() as u64;
                    let start = self.ctrl.len();
                    self.ctrl.extend_from_slice(&buf[pos..pos + n]);
                    unmask(&mut self.ctrl[start..], mask, done);
                    pos += n;
                    let left = left - n as u64;
                    self.state = State::Control { opcode, left, mask };
                    if left == 0 {
                        self.control(opcode, out)?;
                    }
                }
            }
        }
        Ok(Decoded {
            data: kept,
            closed: self.state == State::Closed,
        })
    }

    /// Takes header bytes from `raw`; returns how many were used.
    fn header(&mut self, raw: &[u8]) -> Result<usize, FrameError> {
        let have = usize::from(self.hdr_len);
        let take = raw.len().min(MAX_HEADER - have);
        self.hdr[have..have + take].copy_from_slice(&raw[..take]);
        let Some((h, len)) = parse_header(&self.hdr[..have + take], self.max_frame)? else {
            self.hdr_len = (have + take) as u8;
            return Ok(take);
        };
        self.hdr_len = 0;
        match h.opcode {
            CONTINUATION if !self.fragmented => return Err(FrameError::Continuation),
            BINARY if self.fragmented => return Err(FrameError::Unfinished),
            CONTINUATION | BINARY => self.fragmented = !h.fin,
            _ => {}
        }
        self.state = match h.opcode {
            CONTINUATION | BINARY if h.len == 0 => State::Header,
            CONTINUATION | BINARY => State::Data {
                left: h.len,
                done: 0,
                mask: h.mask,
            },
            opcode => State::Control {
                opcode,
                left: h.len,
                mask: h.mask,
            },
        };
        // Bytes of `raw` that belonged to the header: all but those the
        // partial header had before.
        Ok(len - have)
    }

    /// Acts on a complete control frame whose payload is in `ctrl`.
    fn control(&mut self, opcode: u8, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let payload = std::mem::take(&mut self.ctrl);
        self.state = State::Header;
        match opcode {
            PING => encode(PONG, &payload, out),
            CLOSE => {
                if payload.len() == 1 {
                    return Err(FrameError::BadClose);
                }
                // Echo the status code, as endpoints usually do (7.4).
                encode(CLOSE, payload.get(..2).unwrap_or(&[]), out);
                self.state = State::Closed;
            }
            _ => {} // PONG: unsolicited or not, nothing to do.
        }
        Ok(())
    }
}
