//! Listening sockets and the accept loop: the entrance of the data path.
//!
//! The main thread binds every configured listener (TCP, or a Unix domain
//! socket for `listener 0 /path`), then waits in poll(2) on all of them and
//! on the signal pipe. Each accepted connection is handed to
//! [`client::spawn`], which starts its own thread.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};

use crate::client::connecting::Room;
use crate::client::{self, ClientShared, ListenerState};
use crate::config::{Domain, Listener};
use crate::sys::{self, POLLIN, PollFd, Signals};
use crate::tls::ServerTls;
use crate::transport::{Peer, Socket};

/// The mode of a Unix socket listener's file, as Mosquitto leaves it (it
/// binds under umask 0007): its owner and group may connect, others not.
pub const UNIX_SOCKET_MODE: u32 = 0o770;

/// A bound socket and the listener it belongs to.
pub struct Bound {
    pub socket: Listening,
    pub listener: Arc<ListenerState>,
}

/// A bound listening socket.
pub enum Listening {
    Tcp(TcpListener),
    /// A Unix domain socket and the path of its file.
    Unix(UnixListener, Arc<Path>),
}

impl Listening {
    /// A connection and who is at its other end; WouldBlock when none waits.
    fn accept(&self) -> io::Result<(Socket, Peer)> {
        match self {
            Listening::Tcp(l) => l.accept().map(|(s, a)| (Socket::Tcp(s), Peer::Ip(a))),
            Listening::Unix(l, path) => l
                .accept()
                .map(|(s, _)| (Socket::Unix(s), Peer::Unix(path.clone()))),
        }
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Listening::Tcp(l) => l.set_nonblocking(on),
            Listening::Unix(l, _) => l.set_nonblocking(on),
        }
    }

    /// The path of a Unix socket's file.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Listening::Tcp(_) => None,
            Listening::Unix(_, path) => Some(path),
        }
    }

    /// Where it listens, for error messages.
    pub fn describe(&self) -> String {
        match self {
            Listening::Tcp(l) => match l.local_addr() {
                Ok(a) => a.to_string(),
                Err(_) => "a TCP socket".into(),
            },
            Listening::Unix(_, path) => path.display().to_string(),
        }
    }
}

impl AsRawFd for Listening {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listening::Tcp(l) => l.as_raw_fd(),
            Listening::Unix(l, _) => l.as_raw_fd(),
        }
    }
}

/// Opens the sockets of one `listener` line. With no address it opens IPv4
/// and IPv6 on every interface, as Mosquitto does (`socket_domain` keeps
/// one of them); with port 0 both share the port the kernel picked for the
/// first. `tls` holds the files of a TLS listener, read beforehand.
pub fn bind(l: &Listener, tls: Option<Arc<ServerTls>>) -> io::Result<Vec<Bound>> {
    if let Some(unix) = &l.unix_socket {
        let socket = bind_unix(&unix.path)?;
        return Ok(vec![Bound {
            socket,
            listener: Arc::new(ListenerState::new(l.clone(), 0, tls)),
        }]);
    }
    let mut addrs: Vec<IpAddr> = match &l.address {
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
    match l.socket_domain {
        Some(Domain::Ipv4) => addrs.retain(|a| a.is_ipv4()),
        Some(Domain::Ipv6) => addrs.retain(|a| a.is_ipv6()),
        None => {}
    }
    let mut sockets: Vec<TcpListener> = Vec::new();
    let mut last_err = None;
    let mut port = l.port;
    for ip in addrs {
        let family = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
        match bind_one(SocketAddr::new(ip, port), l.bind_interface.as_deref()) {
            Ok(socket) => {
                port = socket.local_addr()?.port();
                // A WebSockets listener has one line, as in Mosquitto.
                if !l.websockets {
                    info!("Opening {family} listen socket on port {port}.");
                }
                sockets.push(socket);
            }
            Err(e) => {
                // A machine without IPv6 still serves IPv4, like Mosquitto.
                if l.address.is_none() && ip.is_ipv6() && !sockets.is_empty() {
                    warn!("Warning: unable to open {family} listen socket on port {port}: {e}.");
                } else {
                    last_err = Some(e);
                }
            }
        }
    }
    if let Some(e) = last_err {
        return Err(e);
    }
    if sockets.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "no address to listen on",
        ));
    }
    if l.websockets {
        info!("Opening websockets listen socket on port {port}.");
    }
    let state = Arc::new(ListenerState::new(l.clone(), port, tls));
    Ok(sockets
        .into_iter()
        .map(|socket| Bound {
            socket: Listening::Tcp(socket),
            listener: state.clone(),
        })
        .collect())
}

/// Opens a Unix socket listener at `path`, as Mosquitto does: a socket
/// file left there by an earlier run is removed first, and the new one
/// gets mode [`UNIX_SOCKET_MODE`]. Unlike Mosquitto, which removes
/// whatever the path names, it refuses a path that is not a socket, or a
/// socket that a running process still answers on.
fn bind_unix(path: &Path) -> io::Result<Listening> {
    remove_stale(path)?;
    info!("Opening unix listen socket on path {}.", path.display());
    let socket = sys::bind_listen_unix(path, 1024)?;
    // Not yet listening (`sys::defer_listen`): nobody connects before this.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(UNIX_SOCKET_MODE))?;
    Ok(Listening::Unix(socket, Arc::from(path)))
}

/// Removes a stale socket file at `path`.
fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another process listens on {}", path.display()),
        ));
    }
    std::fs::remove_file(path)
}

/// Gives the files of Unix socket listeners to the user the broker is
/// about to become and its group, who may then connect; Mosquitto, which
/// binds them after dropping privileges, leaves them owned the same way.
pub fn hand_over(sockets: &[Bound], uid: u32, gid: u32) {
    for path in sockets.iter().filter_map(|b| b.socket.unix_path()) {
        if let Err(e) = std::os::unix::fs::chown(path, Some(uid), Some(gid)) {
            warn!(
                "Warning: unable to give {} to uid {uid}: {e}.",
                path.display()
            );
        }
    }
}

/// Removes the files of Unix socket listeners, at exit (as Mosquitto).
pub fn remove_unix_sockets(sockets: &[Bound]) {
    for path in sockets.iter().filter_map(|b| b.socket.unix_path()) {
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != io::ErrorKind::NotFound {
                warn!("Warning: unable to remove {}: {e}.", path.display());
            }
        }
    }
}

fn bind_one(addr: SocketAddr, interface: Option<&str>) -> io::Result<TcpListener> {
    let fd = sys::tcp_socket(addr.is_ipv6())?;
    sys::setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if addr.is_ipv6() {
        // IPv6 sockets take IPv6 only, so the IPv4 socket can share the port.
        sys::setsockopt_int(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    if let Some(name) = interface {
        sys::bind_to_device(fd.as_raw_fd(), name)?;
    }
    let listener = TcpListener::from(fd);
    sys::bind_listen(&listener, addr, 1024)?;
    Ok(listener)
}

/// What stopped the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Terminate,
}

/// Accepts connections until SIGINT or SIGTERM. `on_signal` runs for
/// SIGHUP and SIGUSR1, with the signal's number.
pub fn accept_loop(
    sockets: &[Bound],
    signals: &Signals,
    shared: &Arc<ClientShared>,
    mut on_signal: impl FnMut(i32),
) -> io::Result<Stop> {
    let mut fds: Vec<PollFd> = sockets
        .iter()
        .map(|b| PollFd::new(b.socket.as_raw_fd(), POLLIN))
        .collect();
    fds.push(PollFd::new(signals.as_raw_fd(), POLLIN));
    for b in sockets {
        b.socket.set_nonblocking(true)?;
    }
    // Set while the threads for connections before CONNECT are all taken:
    // new ones wait in the backlog, the listeners are not polled.
    let mut paused: Option<Duration> = None;
    loop {
        let events = if paused.is_some() { 0 } else { POLLIN };
        for f in fds.iter_mut().take(sockets.len()) {
            f.set_events(events);
        }
        // Until the oldest may be closed, or a connection completes.
        let timeout = paused.map(|d| d.min(Duration::from_millis(10)));
        sys::poll(&mut fds, timeout)?;
        while let Some(sig) = signals.next() {
            match sig {
                sys::SIGINT | sys::SIGTERM => return Ok(Stop::Terminate),
                sys::SIGHUP | sys::SIGUSR1 => on_signal(sig),
                s if s == sys::sigrtmin() => on_signal(s),
                _ => {}
            }
        }
        let was_paused = paused.take();
        for (i, b) in sockets.iter().enumerate() {
            if was_paused.is_none() && fds[i].revents() & POLLIN == 0 {
                continue;
            }
            loop {
                if let Room::Wait(d) = shared.connecting.make_room() {
                    paused = Some(d);
                    break;
                }
                match b.socket.accept() {
                    Ok((sock, peer)) => {
                        let slot = b.listener.enter().filter(|_| shared.admit());
                        let Some(slot) = slot else {
                            // Mosquitto's words; the socket closes on drop.
                            info!(
                                "Client connection from {} denied: max_connections exceeded.",
                                peer.host()
                            );
                            continue;
                        };
                        if let Err(e) = client::spawn(sock, peer.clone(), slot, shared.clone()) {
                            warn!("Unable to start a thread for {peer}: {e}.");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // Out of descriptors and the like: log, keep serving.
                        warn!(
                            "Unable to accept a connection on {}: {e}.",
                            b.socket.describe()
                        );
                        // Do not spin while the condition lasts.
                        std::thread::sleep(Duration::from_millis(50));
                        break;
                    }
                }
            }
        }
    }
}
