//! Starting a broker (midge, Mosquitto or rumqttd) for one measurement: its
//! config in a temp dir, a free loopback port, its own memory cgroup, and the numbers
//! /proc and the cgroup give about it. Every process started here is killed
//! and waited for on drop.

use std::fs;
use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::mqtt;

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// The environment variable naming the rumqttd binary that `make bench`
/// builds once from crates.io and caches outside the tree.
pub const RUMQTTD_ENV: &str = "MIDGE_BENCH_RUMQTTD";
const CGROUP_ROOT: &str = "/sys/fs/cgroup/memory";
const START_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Midge,
    Mosquitto,
    /// The Rust broker of the rumqtt project (crate `rumqttd`).
    Rumqttd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Midge => "midge",
            Kind::Mosquitto => "mosquitto",
            Kind::Rumqttd => "rumqttd",
        }
    }
}

/// The rumqttd binary named by `MIDGE_BENCH_RUMQTTD`, if it exists.
pub fn rumqttd() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os(RUMQTTD_ENV)?);
    p.is_file().then_some(p)
}

/// The `main` of a bench that takes `--quick` alone (`wear`, `retained`):
/// runs `run(quick)` and reports its error.
#[allow(dead_code)]
pub fn main_quick(run: impl FnOnce(bool) -> io::Result<()>) -> std::process::ExitCode {
    let quick = std::env::args().any(|a| a == "--quick");
    match run(quick) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The settings both brokers get, written in each one's config syntax.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub max_queued: usize,
    pub max_inflight: u16,
    pub persistence: Persistence,
    /// Started as user and group `nobody` rather than as root, as the
    /// service unit runs midge (root brokers drop privileges themselves,
    /// and the user lookup maps the NSS libraries).
    pub unprivileged: bool,
    /// midge's `persistence_journal_commit_interval` (ms), when set.
    pub journal_commit_ms: Option<u32>,
    /// Payload bytes of the scenario's messages: rumqttd bounds its
    /// per-filter log in bytes, not messages, so `max_queued` becomes
    /// bytes through this.
    pub message_size: usize,
}

/// `persistence true` in the broker's folder; the journal is midge's own
/// (Mosquitto gets `persistence true` alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    Off,
    Snapshot,
    Journal,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            max_queued: 100_000,
            max_inflight: 20,
            persistence: Persistence::Off,
            unprivileged: false,
            journal_commit_ms: None,
            message_size: 32,
        }
    }
}

/// The uid and gid of `nobody` and `nogroup` on Debian.
const NOBODY: u32 = 65534;

/// midge's log, with persistence on (for the journal's counters).
pub const LOG: &str = "broker.log";

/// The config file text. The options are the same for midge and Mosquitto:
/// midge reads Mosquitto's syntax. rumqttd gets its own TOML.
pub fn config_text(port: u16, s: Settings, kind: Kind, dir: &Path) -> String {
    if kind == Kind::Rumqttd {
        return rumqttd_config(port, s);
    }
    let mut text = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages {}\nmax_inflight_messages {}\n",
        s.max_queued, s.max_inflight
    );
    if s.persistence != Persistence::Off {
        text.push_str(&format!(
            "persistence true\npersistence_location {}/\nautosave_interval 0\n",
            dir.display()
        ));
    }
    if s.persistence == Persistence::Journal && kind == Kind::Midge {
        text.push_str("persistence_journal true\n");
        if let Some(ms) = s.journal_commit_ms {
            text.push_str(&format!("persistence_journal_commit_interval {ms}\n"));
        }
    }
    if s.persistence != Persistence::Off && kind == Kind::Midge {
        text.push_str(&format!("log_dest file {}/{LOG}\n", dir.display()));
    }
    text
}

/// rumqttd 0.20's config (the crate's `rumqttd.toml` is the model), as
/// close to the Mosquitto settings as its options allow:
///
/// - one MQTT 3.1.1 (`v4`) listener on the loopback port; no v5 or
///   WebSocket listener, no console, no Prometheus endpoint, no metrics;
/// - `next_connection_delay_ms = 0`: the shipped 1 ms sleep after every
///   accept would cap the connect rate, and the others have none;
/// - `max_payload_size` the MQTT maximum, as Mosquitto's default
///   `message_size_limit 0`;
/// - `max_connections` above the largest scenario (5,000 clients), where
///   the others have no limit;
/// - `max_queued_messages` has no per-client counterpart: every topic
///   filter has one in-memory log shared by its subscribers, which keeps
///   even delivered messages until it is full and then drops its oldest
///   segment (a subscriber that far behind skips ahead and loses them). It
///   is sized to hold `max_queued` messages of the scenario's size (4 bytes
///   + topic + payload each, as rumqttd counts), in 10 segments;
/// - `max_outgoing_packet_count` (how many QoS 0 messages, and retained
///   messages on SUBSCRIBE, the router hands a connection at once) is
///   `max_queued` too, so that a subscription matching 100,000 retained
///   messages gets all of them, as with the others;
/// - `max_inflight_messages` cannot be set: rumqttd's window of QoS 1/2
///   messages towards a client is 100 in its code. Its `max_inflight_count`
///   is the number of incoming packets read per batch; it keeps the
///   shipped 100.
fn rumqttd_config(port: u16, s: Settings) -> String {
    // 4 bytes of rumqttd's own per message, and room for the topic.
    let per_message = 4 + 16 + s.message_size;
    let segments = 10;
    let segment_size = (s.max_queued.max(1) * per_message)
        .div_ceil(segments)
        .max(1024);
    format!(
        "id = 0\n\
         \n\
         [router]\n\
         max_connections = 10010\n\
         max_outgoing_packet_count = {queued}\n\
         max_segment_size = {segment_size}\n\
         max_segment_count = {segments}\n\
         \n\
         [v4.1]\n\
         name = \"v4-1\"\n\
         listen = \"127.0.0.1:{port}\"\n\
         next_connection_delay_ms = 0\n\
         \x20   [v4.1.connections]\n\
         \x20   connection_timeout_ms = 60000\n\
         \x20   max_payload_size = 268435455\n\
         \x20   max_inflight_count = 100\n\
         \x20   dynamic_filters = true\n",
        queued = s.max_queued.max(1),
    )
}

/// A fresh directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> io::Result<TempDir> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child memory cgroup (v1) that one process is moved into.
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// None when the memory hierarchy is not writable (not root).
    pub fn new(name: &str) -> Option<Cgroup> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(CGROUP_ROOT).join(format!("{name}-{}-{n}", std::process::id()));
        fs::create_dir(&path).ok()?;
        Some(Cgroup { path })
    }

    fn read(&self, file: &str) -> Option<u64> {
        fs::read_to_string(self.path.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn usage(&self) -> Option<u64> {
        self.read("memory.usage_in_bytes")
    }

    pub fn kmem(&self) -> Option<u64> {
        self.read("memory.kmem.usage_in_bytes")
    }

    pub fn max_usage(&self) -> Option<u64> {
        self.read("memory.max_usage_in_bytes")
    }

    /// Anonymous memory charged here (`rss` of memory.stat): the heap and
    /// stacks, without page cache, which depends on who read a file first.
    pub fn anon(&self) -> Option<u64> {
        let s = fs::read_to_string(self.path.join("memory.stat")).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("rss "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Restarts the peak at the current usage.
    pub fn reset_max(&self) {
        let _ = fs::write(self.path.join("memory.max_usage_in_bytes"), "0");
    }

    /// Makes `cmd` move itself into this cgroup between fork and exec, so
    /// everything the program allocates is charged here.
    fn enter_on_exec(&self, cmd: &mut Command) -> io::Result<fs::File> {
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(self.path.join("cgroup.procs"))?;
        let fd = procs.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only
        // calls async-signal-safe functions (getpid, write) on a stack
        // buffer; `fd` stays open in the parent until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                let mut pid = libc::getpid() as u32;
                let mut digits = [0u8; 12];
                let mut i = digits.len();
                loop {
                    i -= 1;
                    digits[i] = b'0' + (pid % 10) as u8;
                    pid /= 10;
                    if pid == 0 {
                        break;
                    }
                }
                let len = digits.len() - i;
                if libc::write(fd, digits[i..].as_ptr().cast(), len) != len as isize {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(procs)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // The process is gone, but the kernel may take a moment to notice.
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A running process, killed and reaped on drop.
pub struct Proc {
    child: Child,
    pub cg: Option<Cgroup>,
}

impl Proc {
    /// Spawns `cmd`, inside a new cgroup when one can be made.
    pub fn spawn(mut cmd: Command, cg_name: &str) -> io::Result<Proc> {
        let cg = Cgroup::new(cg_name);
        let guard = match &cg {
            Some(c) => Some(c.enter_on_exec(&mut cmd)?),
            None => None,
        };
        let child = cmd.spawn()?;
        drop(guard);
        Ok(Proc { child, cg })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    pub fn usage(&self) -> Option<u64> {
        self.cg.as_ref().and_then(Cgroup::usage)
    }

    pub fn kmem(&self) -> Option<u64> {
        self.cg.as_ref().and_then(Cgroup::kmem)
    }

    pub fn max_usage(&self) -> Option<u64> {
        self.cg.as_ref().and_then(Cgroup::max_usage)
    }

    pub fn anon(&self) -> Option<u64> {
        self.cg.as_ref().and_then(Cgroup::anon)
    }

    pub fn reset_max(&self) {
        if let Some(c) = &self.cg {
            c.reset_max();
        }
    }

    /// User plus system CPU seconds of the process's threads, from /proc.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(self.pid())
    }

    /// A field of /proc/PID/status in bytes ("VmRSS", "VmHWM") or as a count
    /// ("Threads").
    pub fn status(&self, field: &str) -> u64 {
        status(self.pid(), field)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds of the live threads of `pid`, in nanoseconds' resolution
/// (/proc/PID/task/*/schedstat), or from /proc/PID/stat in clock ticks when
/// schedstat is missing. Threads that ended are not counted: callers keep
/// every connection open until they have read it.
pub fn cpu_secs(pid: u32) -> f64 {
    let mut ns = 0u64;
    let mut any = false;
    if let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) {
        for e in dir.flatten() {
            let Ok(s) = fs::read_to_string(e.path().join("schedstat")) else {
                continue;
            };
            if let Some(v) = s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
            {
                ns += v;
                any = true;
            }
        }
    }
    if any {
        return ns as f64 / 1e9;
    }
    cpu_ticks_secs(pid)
}

fn cpu_ticks_secs(pid: u32) -> f64 {
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// The largest resident size among the anonymous mappings of exactly
/// `size` bytes: with `size` the client stack size, the deepest any client
/// thread's stack has reached (a touched stack page stays resident).
pub fn deepest_stack(pid: u32, size: usize) -> Option<u64> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut this = false;
    let mut deepest = None;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                // An address range line: anonymous when it names no file.
                this = b - a == size as u64 && f.nth(4).is_none();
                continue;
            }
        }
        if this && first == "Rss:" {
            let kb: u64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            deepest = Some(deepest.unwrap_or(0).max(kb * 1024));
        }
    }
    deepest
}

pub fn status(pid: u32, field: &str) -> u64 {
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    for line in s.lines() {
        if let Some(v) = line.strip_prefix(field).and_then(|v| v.strip_prefix(':')) {
            let mut it = v.split_whitespace();
            let n: u64 = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            return match it.next() {
                Some("kB") => n * 1024,
                _ => n,
            };
        }
    }
    0
}

/// A broker running on a loopback port in its own cgroup.
pub struct Broker {
    pub port: u16,
    pub proc: Proc,
    /// From spawn to the first CONNACK.
    pub startup: Duration,
    /// Its config, log and persistence files.
    pub dir: TempDir,
}

impl Broker {
    pub fn start(kind: Kind, midge: &Path, settings: Settings) -> io::Result<Broker> {
        let mut last = None;
        // A port found free may be taken before the broker binds it: retry.
        for _ in 0..3 {
            match Broker::try_start(kind, midge, settings) {
                Ok(b) => return Ok(b),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("broker did not start")))
    }

    fn try_start(kind: Kind, midge: &Path, settings: Settings) -> io::Result<Broker> {
        let dir = TempDir::new("midge-bench")?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Broker::start_in(kind, midge, settings, dir, port)
    }

    /// Stops the broker with SIGTERM (it saves its state) and starts it
    /// again on the same port with the same folder.
    pub fn restart(mut self, kind: Kind, midge: &Path, settings: Settings) -> io::Result<Broker> {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.proc.pid() as i32, libc::SIGTERM) };
        self.proc.child().wait()?;
        Broker::start_in(kind, midge, settings, self.dir, self.port)
    }

    /// Kills the broker with SIGKILL (nothing saved) and starts it again
    /// on the same port with the same folder (the `wear` bench).
    #[allow(dead_code)]
    pub fn crash_restart(
        mut self,
        kind: Kind,
        midge: &Path,
        settings: Settings,
    ) -> io::Result<Broker> {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.proc.pid() as i32, libc::SIGKILL) };
        self.proc.child().wait()?;
        Broker::start_in(kind, midge, settings, self.dir, self.port)
    }

    fn start_in(
        kind: Kind,
        midge: &Path,
        settings: Settings,
        dir: TempDir,
        port: u16,
    ) -> io::Result<Broker> {
        let conf = dir.path().join(match kind {
            Kind::Rumqttd => "rumqttd.toml".to_string(),
            _ => format!("{}.conf", kind.name()),
        });
        fs::write(&conf, config_text(port, settings, kind, dir.path()))?;
        if settings.persistence != Persistence::Off {
            use std::os::unix::fs::PermissionsExt;
            // Started as root, midge runs as `nobody` and must write here.
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777))?;
        }
        let program = match kind {
            Kind::Midge => midge.to_path_buf(),
            Kind::Mosquitto => PathBuf::from(MOSQUITTO),
            Kind::Rumqttd => rumqttd().ok_or_else(|| {
                io::Error::other(format!("rumqttd not built (set {RUMQTTD_ENV})"))
            })?,
        };
        let program = if kind == Kind::Rumqttd && settings.unprivileged {
            // `nobody` cannot reach the cache under root's home: run a copy
            // from the broker's folder, as a package would install it
            // somewhere readable.
            let copy = dir.path().join("rumqttd");
            fs::copy(&program, &copy)?;
            copy
        } else {
            program
        };
        let mut cmd = Command::new(program);
        if kind == Kind::Rumqttd {
            // No banner; its log level stays at the default, warnings only.
            cmd.arg("-q");
        }
        cmd.arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if settings.unprivileged {
            cmd.uid(NOBODY).gid(NOBODY);
        }
        let t0 = Instant::now();
        let mut proc = Proc::spawn(cmd, kind.name())?;
        loop {
            if let Some(st) = proc.child().try_wait()? {
                return Err(io::Error::other(format!("{} exited: {st}", kind.name())));
            }
            if t0.elapsed() > START_TIMEOUT {
                return Err(io::Error::other(format!(
                    "{} did not accept connections within {START_TIMEOUT:?}",
                    kind.name()
                )));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // Listening is not serving: wait for a CONNACK.
        let (mut s, _) = mqtt::client(port, "bench-probe", None, 4096)?;
        let startup = t0.elapsed();
        let _ = s.write_all(&[0xe0, 0]);
        drop(s);
        Ok(Broker {
            port,
            proc,
            startup,
            dir,
        })
    }
}
