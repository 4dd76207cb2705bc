//! Readiness notifications to the service manager (systemd's `Type=notify`,
//! sd_notify(3)): `READY=1` once every listener is bound, `STOPPING=1` when
//! a SIGTERM or SIGINT starts the shutdown, and with `WatchdogSec=`
//! `WATCHDOG=1` from the router thread's loop, so that a router that
//! hangs stops them and the service manager restarts the broker.
//!
//! The protocol is one datagram per message to the Unix socket named by
//! `$NOTIFY_SOCKET`: a path (`/run/systemd/notify`) or, with a leading `@`,
//! a name in Linux's abstract namespace. Without the variable nothing is
//! sent, so running midge by hand is unchanged.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// A socket connected to `$NOTIFY_SOCKET`. It is connected at start-up,
/// while the broker may still be root: a path socket then stays usable
/// after privileges are dropped.
#[derive(Debug)]
pub struct Notifier(UnixDatagram);

impl Notifier {
    /// Connects to `$NOTIFY_SOCKET`; None when the variable is not set (not
    /// started by a service manager that listens).
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let Some(v) = std::env::var_os(NOTIFY_SOCKET) else {
            return Ok(None);
        };
        let name = v.to_str().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is not UTF-8")
        })?;
        let sock = UnixDatagram::unbound()?;
        sock.connect_addr(&parse_addr(name)?)?;
        Ok(Some(Notifier(sock)))
    }

    /// Tells the service manager the broker accepts connections.
    pub fn ready(&self) -> io::Result<()> {
        self.send("READY=1")
    }

    /// Tells the service manager the broker is shutting down.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    /// Tells the service manager the broker is alive (`WatchdogSec=`).
    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }

    /// A second handle on the same socket, for the router's watchdog.
    pub fn try_clone(&self) -> io::Result<Notifier> {
        self.0.try_clone().map(Notifier)
    }

    fn send(&self, state: &str) -> io::Result<()> {
        write_all(self.0.send(state.as_bytes())?, state)
    }
}

/// The interval of `WATCHDOG=1` pings the service manager asks for: half
/// of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises. None without
/// the variable, with 0, or when `$WATCHDOG_PID` names another process.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_str()?.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| std::time::Duration::from_micros(usec / 2))
}

/// Sends one datagram with `state` to the socket named `name`, in
/// `$NOTIFY_SOCKET`'s syntax.
pub fn send(name: &str, state: &str) -> io::Result<()> {
    let addr = parse_addr(name)?;
    let sock = UnixDatagram::unbound()?;
    write_all(sock.send_to_addr(state.as_bytes(), &addr)?, state)
}

fn write_all(sent: usize, state: &str) -> io::Result<()> {
    if sent == state.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short write to NOTIFY_SOCKET",
        ))
    }
}

/// `/path` is a file system socket, `@name` an abstract one. systemd also
/// knows `vsock:`, which a broker on a board has no use for.
fn parse_addr(name: &str) -> io::Result<SocketAddr> {
    if let Some(abs) = name.strip_prefix('@') {
        SocketAddr::from_abstract_name(abs.as_bytes())
    } else if name.starts_with('/') {
        SocketAddr::from_pathname(name)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unsupported NOTIFY_SOCKET address '{name}'"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).expect("recv");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path() {
        let dir = std::env::temp_dir().join(format!("midge-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).expect("bind");
        send(path.to_str().expect("utf-8"), "READY=1").expect("send");
        assert_eq!(recv(&sock), "READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sends_to_an_abstract_name() {
        let name = format!("midge-notify-unit-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let sock = UnixDatagram::bind_addr(&addr).expect("bind");
        send(&format!("@{name}"), "STOPPING=1").expect("send");
        assert_eq!(recv(&sock), "STOPPING=1");
    }

    #[test]
    fn refuses_other_addresses() {
        let e = send("vsock:2:1234", "READY=1").expect_err("vsock");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(send("relative/path", "READY=1").is_err());
    }
}
