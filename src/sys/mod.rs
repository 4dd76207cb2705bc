//! Thin, safe wrappers over the few Linux calls the broker needs beyond std:
//! eventfd wake-ups, poll(2), signal delivery through a self-pipe, random
//! bytes, malloc tuning and the open-file limit. Every `unsafe` block of the
//! crate lives here.

pub mod parked;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::time::Duration;

/// An eventfd used to wake a thread blocked in [`poll`].
///
/// Writers add to the counter; the owner reads it back to zero. Non-blocking
/// on both sides, so a wake never blocks the router.
#[derive(Debug)]
pub struct WakeFd {
    fd: OwnedFd,
}

impl WakeFd {
    pub fn new() -> io::Result<WakeFd> {
        // SAFETY: eventfd takes no pointers; a negative result is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(WakeFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Wakes the owner. A full counter (after 2^64-2 unread wakes) is not an
    /// error: the owner is awake anyway.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our own descriptor.
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }

    /// Resets the counter; returns whether any wake was pending.
    pub fn clear(&self) -> bool {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a valid u64.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut v as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        n == 8 && v > 0
    }
}

impl AsRawFd for WakeFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

pub const POLLIN: i16 = libc::POLLIN;
pub const POLLOUT: i16 = libc::POLLOUT;
/// Error, hang-up or invalid descriptor: the socket is finished.
pub const POLLERR: i16 = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;

/// One entry of a [`poll`] call.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct PollFd(libc::pollfd);

impl PollFd {
    pub fn new(fd: RawFd, events: i16) -> PollFd {
        PollFd(libc::pollfd {
            fd,
            events,
            revents: 0,
        })
    }
    pub fn revents(&self) -> i16 {
        self.0.revents
    }
    pub fn set_events(&mut self, events: i16) {
        self.0.events = events;
    }
}

/// poll(2). `None` waits forever. EINTR returns Ok(0) so callers re-check
/// their state (a signal may have arrived).
pub fn poll(fds: &mut [PollFd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms: libc::c_int = match timeout {
        None => -1,
        // Round up so a 0.4 ms deadline does not spin.
        Some(d) => d.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int,
    };
    // SAFETY: PollFd is repr(transparent) over libc::pollfd and the slice is valid.
    let n = unsafe { libc::poll(fds.as_mut_ptr().cast(), fds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}

/// setsockopt(2) for an integer option.
pub fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: passes a pointer to a local c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new TCP socket, IPv4 or IPv6, close-on-exec.
pub fn tcp_socket(ipv6: bool) -> io::Result<OwnedFd> {
    let domain = if ipv6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket(2); the result is checked and owned at once.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// SO_BINDTODEVICE: only traffic of the named interface reaches the socket.
pub fn bind_to_device(fd: RawFd, name: &str) -> io::Result<()> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("'{name}' is not a network interface name"),
        ));
    }
    // SAFETY: passes a pointer to the name's bytes and their length.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `addr` as a C socket address and its length.
fn sockaddr(addr: std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zeroed is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        std::net::SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// bind(2) of `sock` to `addr`.
fn bind(sock: &impl AsRawFd, addr: std::net::SocketAddr) -> io::Result<()> {
    let (storage, len) = sockaddr(addr);
    // SAFETY: storage holds a valid address of `len` bytes.
    if unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Set by [`defer_listen`]: [`bind_listen`] binds only.
static DEFER_LISTEN: AtomicBool = AtomicBool::new(false);

/// From now on [`bind_listen`] only binds (a port in use is still found at
/// once), and the broker calls [`listen`] once it is ready to serve: until
/// then a connection is refused, so a health check that tests the port does
/// not report the broker up while it is still loading its state.
pub fn defer_listen() {
    DEFER_LISTEN.store(true, Ordering::Relaxed);
}

/// listen(2): the bound socket starts accepting connections.
pub fn listen(sock: &impl AsRawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen(2) on our own descriptor.
    if unsafe { libc::listen(sock.as_raw_fd(), backlog) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// bind(2) and listen(2) on a socket created by the caller, so options such
/// as IPV6_V6ONLY can be set before binding (std cannot).
pub fn bind_listen(
    sock: &impl AsRawFd,
    addr: std::net::SocketAddr,
    backlog: i32,
) -> io::Result<()> {
    bind(sock, addr)?;
    if DEFER_LISTEN.load(Ordering::Relaxed) {
        return Ok(());
    }
    listen(sock, backlog)
}

/// The longest path a Unix domain socket may have: `sun_path` less its
/// terminating NUL (107 bytes on Linux).
pub const UNIX_PATH_MAX: usize = 107;

/// A Unix domain stream socket bound to `path`, and listening unless
/// [`defer_listen`] was called (then [`listen`] starts it): std's
/// `UnixListener::bind` cannot bind without listening.
pub fn bind_listen_unix(
    path: &std::path::Path,
    backlog: i32,
) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() > UNIX_PATH_MAX || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("'{}' is not a usable socket path", path.display()),
        ));
    }
    // SAFETY: plain socket(2); the result is checked and owned at once.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_un is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: addr is a valid sockaddr_un; len covers the path and its NUL.
    if unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    if !DEFER_LISTEN.load(Ordering::Relaxed) {
        listen(&sock, backlog)?;
    }
    Ok(std::os::unix::net::UnixListener::from(sock))
}

/// Hands the heap memory freed so far back to the kernel (glibc keeps it
/// otherwise): after a restore, whose decoding freed as much as it kept.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A TCP connection to `remote` from the local address `local` (the client
/// tools' `-A`; std cannot bind before connecting).
pub fn connect_from(
    local: std::net::SocketAddr,
    remote: std::net::SocketAddr,
) -> io::Result<std::net::TcpStream> {
    let sock = tcp_socket(remote.is_ipv6())?;
    bind(&sock, local)?;
    let (storage, len) = sockaddr(remote);
    // SAFETY: storage holds a valid address of `len` bytes.
    let r = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(std::net::TcpStream::from(sock))
}

/// Puts the process in the background (`-d`): the parent exits, the child
/// starts a new session with stdin on /dev/null. Call before any thread starts.
pub fn daemonize() -> io::Result<()> {
    // SAFETY: fork before any other thread exists; the parent only exits.
    match unsafe { libc::fork() } {
        -1 => return Err(io::Error::last_os_error()),
        0 => {}
        // SAFETY: _exit skips atexit handlers meant for the child.
        _ => unsafe { libc::_exit(0) },
    }
    // SAFETY: setsid and dup2 take no pointers but the path literal.
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::close(null);
        }
    }
    Ok(())
}

/// Fills `buf` with random bytes from the kernel.
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: writes at most rest.len() bytes into rest.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// Limits glibc to a few malloc arenas. By default every thread that
/// allocates may get an arena of its own, which costs memory per client
/// thread for nothing: client threads allocate little and briefly.
pub fn limit_malloc_arenas(n: i32) {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, n);
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = n;
}

/// Room left below the caller's frame: this function's own frame and the
/// `madvise` call stay above the pages it releases.
const TRIM_MARGIN: usize = 1024;

/// Gives the calling thread's stack pages below its current frame back to
/// the kernel (`MADV_DONTNEED`; they read as zeros if touched again). A
/// client thread calls it once its CONNECT is handled: that step goes
/// deeper than the session that follows (decoding, the CONNACK, the log
/// line, and glibc's `malloc` under them), and every stack page a thread
/// touches otherwise stays resident for its life (docs/PERFORMANCE.md).
/// Nothing lives below the stack pointer, so nothing is lost; on failure
/// nothing happens.
#[inline(never)]
pub fn trim_stack() {
    let here = 0u8;
    let sp = std::hint::black_box(&here) as *const u8 as usize;
    // SAFETY: pthread_getattr_np fills `attr` for the calling thread, which
    // is destroyed after use. The range given to madvise lies within this
    // thread's own stack, below the frames in use (`sp` less a margin for
    // this call), so no live data is in it.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let got = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        let page = match libc::sysconf(libc::_SC_PAGESIZE) {
            n if n > 0 => n as usize,
            _ => return,
        };
        let low = addr as usize;
        if !got || sp < low || sp - low > size {
            return;
        }
        let high = sp.saturating_sub(TRIM_MARGIN) & !(page - 1);
        if high > low {
            libc::madvise(addr, high - low, libc::MADV_DONTNEED);
        }
    }
}

/// Names the calling thread (as `ps -L` and `top -H` show it; Linux keeps
/// the first 15 bytes).
pub fn set_thread_name(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16
    // bytes; `buf` is 16 bytes and its last byte stays 0.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0);
    }
}

/// The soft and hard limits on open descriptors (RLIMIT_NOFILE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimit {
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft limit on open descriptors to the hard limit, and returns
/// the limits before and after. Each client costs a descriptor, and the
/// usual soft default of 1024 caps a broker at about a thousand clients
/// whatever the service manager's hard limit allows.
pub fn raise_fd_limit() -> io::Result<(FdLimit, FdLimit)> {
    let get = || -> io::Result<libc::rlimit> {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into a valid local.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(lim)
    };
    // rlim_t is u32 on 32-bit ARM and u64 on x86_64.
    #[allow(clippy::useless_conversion)]
    let limit = |l: libc::rlimit| FdLimit {
        soft: u64::from(l.rlim_cur),
        hard: u64::from(l.rlim_max),
    };
    let before = get()?;
    if before.rlim_cur < before.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: before.rlim_max,
            rlim_max: before.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit from a valid local.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((limit(before), limit(get()?)))
}

/// The write end of the signal self-pipe; -1 until [`Signals::install`].
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; one byte from a local.
        unsafe {
            libc::write(fd, (&b as *const u8).cast(), 1);
        }
    }
}

/// SIGRTMIN, which the C library numbers at run time (34 with glibc).
pub fn sigrtmin() -> i32 {
    libc::SIGRTMIN()
}

/// SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGRTMIN delivered as bytes on a pipe, so the
/// main thread can poll for them beside its listening sockets.
pub struct Signals {
    read: OwnedFd,
    _write: OwnedFd,
}

impl Signals {
    pub fn install() -> io::Result<Signals> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors are fresh and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        SIGNAL_PIPE.store(write.as_raw_fd(), Ordering::Relaxed);
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGUSR1,
            sigrtmin(),
        ] {
            // SAFETY: installs a handler that only calls write(2).
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                if libc::sigaction(sig, &sa, std::ptr::null_mut()) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(Signals {
            read,
            _write: write,
        })
    }

    /// Returns the next pending signal number, if any.
    pub fn next(&self) -> Option<i32> {
        let mut b = 0u8;
        // SAFETY: reads at most one byte into a local.
        let n = unsafe { libc::read(self.read.as_raw_fd(), (&mut b as *mut u8).cast(), 1) };
        (n == 1).then_some(b as i32)
    }
}

impl AsRawFd for Signals {
    fn as_raw_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

/// The process's resident set size in bytes, from /proc/self/statm.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf takes no pointers.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Local time formatted with strftime(3); None when the format gives nothing.
pub fn strftime_local(format: &std::ffi::CStr, secs: i64) -> Option<String> {
    let t = secs as libc::time_t;
    // SAFETY: tm is plain data; localtime_r fills it from a valid time_t.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return None;
    }
    let mut buf = [0u8; 256];
    // SAFETY: strftime writes at most buf.len() bytes, NUL included, and
    // returns how many it wrote before the NUL.
    let n = unsafe { libc::strftime(buf.as_mut_ptr().cast(), buf.len(), format.as_ptr(), &tm) };
    (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Opens the connection to syslog with `midge` as the identity.
/// `facility` is N of LOG_LOCALN, or None for LOG_DAEMON.
pub fn openlog(facility: Option<u8>) {
    let f = match facility {
        Some(0) => libc::LOG_LOCAL0,
        Some(1) => libc::LOG_LOCAL1,
        Some(2) => libc::LOG_LOCAL2,
        Some(3) => libc::LOG_LOCAL3,
        Some(4) => libc::LOG_LOCAL4,
        Some(5) => libc::LOG_LOCAL5,
        Some(6) => libc::LOG_LOCAL6,
        Some(_) => libc::LOG_LOCAL7,
        None => libc::LOG_DAEMON,
    };
    // SAFETY: the identity is a static C string, as openlog(3) requires.
    unsafe { libc::openlog(c"midge".as_ptr(), libc::LOG_PID | libc::LOG_NDELAY, f) };
}

/// Syslog priorities used by the logger.
pub const LOG_ERR: i32 = libc::LOG_ERR;
pub const LOG_WARNING: i32 = libc::LOG_WARNING;
pub const LOG_NOTICE: i32 = libc::LOG_NOTICE;
pub const LOG_INFO: i32 = libc::LOG_INFO;
pub const LOG_DEBUG: i32 = libc::LOG_DEBUG;

/// Sends one line to syslog.
pub fn syslog(priority: i32, msg: &str) {
    let Ok(line) = std::ffi::CString::new(msg.replace('\0', " ")) else {
        return;
    };
    // SAFETY: "%s" with one valid C string argument.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), line.as_ptr()) };
}

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// A user's uid, primary gid and name, from the user database.
pub fn lookup_user(name: &str) -> io::Result<Option<(u32, u32)>> {
    let Ok(cname) = std::ffi::CString::new(name) else {
        return Ok(None);
    };
    // SAFETY: passwd is plain data; getpwnam_r fills it and points its
    // strings into buf, which outlives the call.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid and buf.len() is its size.
    let r = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    if out.is_null() {
        return Ok(None);
    }
    Ok(Some((pw.pw_uid, pw.pw_gid)))
}

/// Becomes `name` (uid `uid`, gid `gid`): supplementary groups, then the
/// group, then the user, so that no way back to root remains.
pub fn become_user(name: &str, uid: u32, gid: u32) -> io::Result<()> {
    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "user name with NUL"))?;
    // SAFETY: initgroups, setgid and setuid take a valid C string and ids.
    unsafe {
        if libc::initgroups(cname.as_ptr(), gid) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setgid(gid) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setuid(uid) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub const SIGINT: i32 = libc::SIGINT;
pub const SIGTERM: i32 = libc::SIGTERM;
pub const SIGHUP: i32 = libc::SIGHUP;
pub const SIGUSR1: i32 = libc::SIGUSR1;

/// Turns off echo on a terminal for as long as it lives (password prompts).
/// Does nothing when `fd` is not a terminal.
pub struct EchoOff {
    fd: RawFd,
    saved: Option<libc::termios>,
}

impl EchoOff {
    pub fn new(fd: RawFd) -> EchoOff {
        // SAFETY: termios is plain data that tcgetattr fills.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: isatty and tcgetattr only read the descriptor's state.
        let saved =
            if unsafe { libc::isatty(fd) } == 1 && unsafe { libc::tcgetattr(fd, &mut t) } == 0 {
                let mut quiet = t;
                quiet.c_lflag &= !libc::ECHO;
                // SAFETY: quiet is a valid termios copied from the terminal's own.
                (unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } == 0).then_some(t)
            } else {
                None
            };
        EchoOff { fd, saved }
    }

    /// True when echo was turned off (the input is a terminal).
    pub fn is_terminal(&self) -> bool {
        self.saved.is_some()
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            // SAFETY: restores the settings read from this descriptor.
            unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, t) };
        }
    }
}

/// This machine's host name, as Mosquitto names bridges by default.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// One read(2) of standard input, unbuffered so poll(2) tells the truth
/// about what is left; 0 at end of input or on an error.
pub fn read_stdin(buf: &mut [u8]) -> usize {
    loop {
        // SAFETY: reads at most buf.len() bytes into buf.
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return n as usize;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return 0;
        }
    }
}

/// Heap bytes the process has allocated and not freed, counted by
/// [`CountingAlloc`] when the binary installs it (0 otherwise).
static HEAP_IN_USE: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting the bytes in use for `memory_limit` and
/// `$SYS/broker/heap/current` (Mosquitto counts its heap the same way, in
/// its own allocation wrappers). One relaxed atomic add per allocation.
pub struct CountingAlloc;

// SAFETY: every call goes to the system allocator with the caller's
// arguments unchanged; the count is bookkeeping beside it.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` holds for System too.
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            HEAP_IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let p = unsafe { std::alloc::System.alloc_zeroed(layout) };
        if !p.is_null() {
            HEAP_IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from this allocator, that is from System,
        // with `layout`.
        unsafe { std::alloc::System.dealloc(ptr, layout) };
        HEAP_IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        // SAFETY: as `dealloc` for `ptr` and `layout`; `new` is the
        // caller's valid size.
        let p = unsafe { std::alloc::System.realloc(ptr, layout, new) };
        if !p.is_null() {
            if new >= layout.size() {
                HEAP_IN_USE.fetch_add(new - layout.size(), Ordering::Relaxed);
            } else {
                HEAP_IN_USE.fetch_sub(layout.size() - new, Ordering::Relaxed);
            }
        }
        p
    }
}

/// Heap bytes in use, when [`CountingAlloc`] is the global allocator.
pub fn heap_in_use() -> usize {
    HEAP_IN_USE.load(Ordering::Relaxed)
}

/// Whether `more` bytes beyond what is in use would cross `memory_limit`
/// (`limit` 0: no limit). Always false without [`CountingAlloc`].
pub fn heap_over(limit: usize, more: usize) -> bool {
    limit != 0 && heap_in_use().saturating_add(more) > limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_fd_wakes_poll() {
        let w = WakeFd::new().expect("eventfd");
        let mut fds = [PollFd::new(w.as_raw_fd(), POLLIN)];
        assert_eq!(
            poll(&mut fds, Some(Duration::from_millis(0))).expect("poll"),
            0
        );
        w.wake();
        w.wake();
        assert_eq!(
            poll(&mut fds, Some(Duration::from_millis(100))).expect("poll"),
            1
        );
        assert!(w.clear());
        assert!(!w.clear());
    }

    #[test]
    fn random_bytes_differ() {
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        random_bytes(&mut a).expect("random");
        random_bytes(&mut b).expect("random");
        assert_ne!(a, b);
    }

    #[test]
    fn fd_limit_ends_at_the_hard_limit() {
        let (before, after) = raise_fd_limit().expect("rlimit");
        assert!(before.soft <= before.hard);
        assert_eq!(after.hard, before.hard);
        assert_eq!(after.soft, after.hard);
    }
}
