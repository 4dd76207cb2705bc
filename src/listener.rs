//! Listening sockets and the accept loop: the entrance of the data path.
//!
//! The main thread binds every configured listener, then waits in poll(2) on
//! all of them and on the signal pipe. Each accepted connection is handed to
//! [`client::spawn`], which starts its own thread.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use log::{info, warn};

use crate::client::{self, Shared};
use crate::config::Listener;
use crate::sys::{self, POLLIN, PollFd, Signals};

/// A bound socket and the port it listens on.
pub struct Bound {
    pub socket: TcpListener,
    pub port: u16,
}

/// Opens the sockets of one `listener` line. With no address it opens IPv4
/// and IPv6 on every interface, as Mosquitto does; with port 0 both share the
/// port the kernel picked for the first.
pub fn bind(l: &Listener) -> io::Result<Vec<Bound>> {
    let addrs: Vec<IpAddr> = match &l.address {
        None => vec![
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ],
        Some(a) => match a.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => {
                let mut v: Vec<IpAddr> = (a.as_str(), l.port)
                    .to_socket_addrs()?
                    .map(|s| s.ip())
                    .collect();
                v.dedup();
                v
            }
        },
    };
    let mut out: Vec<Bound> = Vec::new();
    let mut last_err = None;
    let mut port = l.port;
    for ip in addrs {
        let family = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
        match bind_one(SocketAddr::new(ip, port)) {
            Ok(socket) => {
                let actual = socket.local_addr()?.port();
                port = actual;
                info!("Opening {family} listen socket on port {actual}.");
                out.push(Bound {
                    socket,
                    port: actual,
                });
            }
            Err(e) => {
                // A machine without IPv6 still serves IPv4, like Mosquitto.
                if l.address.is_none() && ip.is_ipv6() && !out.is_empty() {
                    warn!("Warning: unable to open {family} listen socket on port {port}: {e}.");
                } else {
                    last_err = Some(e);
                }
            }
        }
    }
    match (out.is_empty(), last_err) {
        (_, Some(e)) => Err(e),
        (true, None) => Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "no address to listen on",
        )),
        (false, None) => Ok(out),
    }
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the result is checked and owned at once.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if addr.is_ipv6() {
        // IPv6 sockets take IPv6 only, so the IPv4 socket can share the port.
        set_int_opt(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    let listener = TcpListener::from(fd);
    sys::bind_listen(&listener, addr, 1024)?;
    Ok(listener)
}

fn set_int_opt(fd: &OwnedFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    sys::setsockopt_int(fd.as_raw_fd(), level, name, value)
}

/// What stopped the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Terminate,
}

/// Accepts connections until SIGINT or SIGTERM. `on_hup` runs for SIGHUP.
pub fn accept_loop(
    sockets: &[Bound],
    signals: &Signals,
    shared: &Arc<Shared>,
    mut on_hup: impl FnMut(),
) -> io::Result<Stop> {
    let mut fds: Vec<PollFd> = sockets
        .iter()
        .map(|b| PollFd::new(b.socket.as_raw_fd(), POLLIN))
        .collect();
    fds.push(PollFd::new(signals.as_raw_fd(), POLLIN));
    for b in sockets {
        b.socket.set_nonblocking(true)?;
    }
    loop {
        sys::poll(&mut fds, None)?;
        while let Some(sig) = signals.next() {
            match sig {
                sys::SIGINT | sys::SIGTERM => return Ok(Stop::Terminate),
                sys::SIGHUP => on_hup(),
                _ => {}
            }
        }
        for (i, b) in sockets.iter().enumerate() {
            if fds[i].revents() & POLLIN == 0 {
                continue;
            }
            loop {
                match b.socket.accept() {
                    Ok((sock, peer)) => {
                        if let Err(e) = client::spawn(sock, peer, b.port, shared.clone()) {
                            warn!("Unable to start a thread for {peer}: {e}.");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // Out of descriptors and the like: log, keep serving.
                        warn!("Unable to accept a connection on port {}: {e}.", b.port);
                        // Do not spin while the condition lasts.
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        break;
                    }
                }
            }
        }
    }
}
