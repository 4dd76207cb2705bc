//! One client's socket with its read and write buffers.
//!
//! The socket is non-blocking: the client thread waits in poll(2), reads
//! what has arrived, decodes whole packets and writes as much of its output
//! buffer as the kernel takes. Buffers are freed as soon as they drain (a
//! malloc per burst is cheaper than a read(2)), so an idle client holds no
//! heap memory for I/O, and no stack page for it either.

use std::io::{self, Read, Write};

use crate::codec::{self, DecodeError, Level, Packet, PacketType};
use crate::transport::Stream;

/// Bytes read per read(2) call.
const READ_CHUNK: usize = 4096;

#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection (read returned 0).
    Closed,
    Io(io::Error),
    Decode(DecodeError),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        ReadError::Io(e)
    }
}

impl From<DecodeError> for ReadError {
    fn from(e: DecodeError) -> ReadError {
        ReadError::Decode(e)
    }
}

pub struct Conn {
    pub sock: Stream,
    /// Received bytes not yet decoded: `rbuf[rpos..]`. 0 <= rpos <= rbuf.len()
    rbuf: Vec<u8>,
    rpos: usize,
    /// Encoded bytes not yet written: `wbuf[wpos..]`. 0 <= wpos <= wbuf.len()
    wbuf: Vec<u8>,
    wpos: usize,
    max_packet: usize,
    pub level: Level,
    /// The client's address from a PROXY header, in place of the socket's
    /// peer (the proxy).
    pub proxied_peer: Option<crate::transport::Peer>,
    /// Bytes and packets read and written since [`Conn::take_counts`].
    counts: Counts,
}

/// Traffic of one connection, handed to the broker's `$SYS` counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub packets_out: u64,
}

impl Conn {
    pub fn new(sock: Stream, max_packet: usize) -> io::Result<Conn> {
        sock.socket().set_nonblocking(true)?;
        Ok(Conn {
            sock,
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
            wpos: 0,
            max_packet,
            level: Level::V311,
            proxied_peer: None,
            counts: Counts::default(),
        })
    }

    /// Reads what the socket has. Ok(false) when nothing was available.
    ///
    /// Reads go straight into the heap buffer, never through a chunk on the
    /// stack: a stack page once touched stays resident for the thread's
    /// life, while the buffer is freed as soon as it is drained.
    pub fn fill(&mut self) -> Result<bool, ReadError> {
        let mut any = false;
        loop {
            let start = self.rbuf.len();
            self.rbuf.resize(start + READ_CHUNK, 0);
            let got = self.sock.read(&mut self.rbuf[start..]);
            let n = match &got {
                Ok(n) => *n,
                Err(_) => 0,
            };
            self.rbuf.truncate(start + n);
            match got {
                // Packets that came before the close are handled first;
                // the next call sees the close again.
                Ok(0) if any => return Ok(true),
                Ok(0) => return Err(ReadError::Closed),
                Ok(n) => {
                    any = true;
                    self.counts.bytes_in += n as u64;
                    // A short plain read drained the socket (TLS and
                    // WebSockets go on until they have nothing more).
                    if n < READ_CHUNK && self.sock.short_read_drains() {
                        return Ok(true);
                    }
                    // Give other work a turn after a large burst.
                    if self.rbuf.len() - self.rpos >= 16 * READ_CHUNK {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(any),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    /// Decodes the next whole packet from what has been read, if any.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, DecodeError> {
        let buf = &self.rbuf[self.rpos..];
        let Some(h) = codec::check(buf, self.max_packet)? else {
            self.compact();
            return Ok(None);
        };
        let total = h.total_len();
        let Some(body) = buf.get(h.header_len..total) else {
            self.compact();
            return Ok(None);
        };
        let p = codec::decode(&h, body, self.level)?;
        self.rpos += total;
        self.counts.packets_in += 1;
        Ok(Some(p))
    }

    /// The type of the packet at the start of the undecoded bytes: after a
    /// decode error, the packet that failed.
    pub fn failing_kind(&self) -> Option<PacketType> {
        self.rbuf
            .get(self.rpos)
            .and_then(|b| PacketType::from_nibble(b >> 4))
    }

    /// Bytes read and not yet decoded.
    pub fn undecoded(&self) -> usize {
        self.rbuf.len() - self.rpos
    }

    /// Whether undecoded bytes are buffered (a packet is partly received).
    pub fn has_partial(&self) -> bool {
        self.rpos < self.rbuf.len()
    }

    fn compact(&mut self) {
        if self.rpos == self.rbuf.len() {
            // Drained: an idle client holds no read buffer.
            self.rbuf = Vec::new();
            self.rpos = 0;
        } else if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
    }

    /// Appends one encoded packet to the output buffer.
    pub fn queue(&mut self, p: &Packet) {
        codec::encode(p, self.level, &mut self.wbuf);
        self.counts.packets_out += 1;
    }

    /// The traffic since the last call.
    pub fn take_counts(&mut self) -> Counts {
        std::mem::take(&mut self.counts)
    }

    /// Bytes waiting to be written: ours and the stream's (WebSocket frames,
    /// or 1 more while TLS output waits in rustls).
    pub fn pending_write(&self) -> usize {
        self.wbuf.len() - self.wpos + self.sock.backlog()
    }

    /// Whether received bytes wait to be read that poll(2) does not see.
    pub fn buffered(&mut self) -> bool {
        self.sock.buffered()
    }

    /// The packet type of the first undecoded byte, once one has come.
    pub fn first_type(&self) -> Option<u8> {
        self.rbuf.get(self.rpos).map(|b| b >> 4)
    }

    /// Whether the first bytes received open a TLS handshake record: a TLS
    /// client on a plain port.
    pub fn starts_with_tls(&self) -> bool {
        self.rbuf.len() >= 3 && self.rbuf[0] == 0x16 && self.rbuf[1] == 0x03 && self.rbuf[2] <= 0x04
    }

    /// Writes as much as the socket takes without blocking.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.wpos < self.wbuf.len() {
            match self.sock.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.wpos += n;
                    self.counts.bytes_out += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        match self.sock.push() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            _ => {}
        }
        if self.wpos == self.wbuf.len() {
            // Drained: an idle client holds no write buffer.
            self.wbuf = Vec::new();
            self.wpos = 0;
        }
        Ok(())
    }
}
