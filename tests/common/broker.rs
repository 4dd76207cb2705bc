//! Starting a broker for one test, after mini-redis's `start_server` and
//! Mosquitto's `mosq_test.py`: write a config into a fresh temp dir, spawn
//! the binary with `-c`, read its stderr in a thread, and take the port from
//! the `Opening ipv4 listen socket on port N.` line.
//!
//! `Broker::start` runs midge. `Broker::mosquitto` runs Debian's
//! `/usr/sbin/mosquitto` with the same config, for tests that compare the two
//! on a behaviour the MQTT specification leaves to the broker. Setting
//! `MIDGE_TEST_BROKER=mosquitto` makes `Broker::start` run Mosquitto too: a
//! way to check a test itself against the reference broker.
//!
//! `MIDGE_TEST_RUNNER` names a command that runs the midge binary, split on
//! whitespace: `make qemu-test` sets it to `qemu-arm -L ...`, so the
//! armv7 broker runs under the emulator like the armv7 tests themselves.
//! `MIDGE_TEST_BINARY` replaces the binary cargo built for the tests with
//! another one, such as the armv7 release build that goes into the package.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::TIMEOUT;
use super::packets::RawClient;
use super::tools;

/// Where Debian's broker is installed (`apt-get install mosquitto`).
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// How long a broker may take to open its listener on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    Midge,
    Mosquitto,
}

impl BrokerKind {
    /// The broker `Broker::start` runs: midge, unless
    /// `MIDGE_TEST_BROKER=mosquitto` asks for the reference broker.
    pub fn default_kind() -> BrokerKind {
        match std::env::var("MIDGE_TEST_BROKER").as_deref() {
            Ok("mosquitto") => BrokerKind::Mosquitto,
            _ => BrokerKind::Midge,
        }
    }
}

/// A directory under the system temp dir, unique to this process and call,
/// removed with everything in it on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("{prefix}-{}-{n}-{nanos}", std::process::id()));
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `text` to `name` inside the dir and returns the full path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path.join(name);
        fs::write(&p, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A loopback port that was free a moment ago (bind 127.0.0.1:0, release).
/// Another process may take it before it is used: callers retry.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// The lines a process wrote to one of its pipes, filled by a reader thread.
#[derive(Clone, Default)]
pub struct Lines {
    inner: Arc<(Mutex<LinesState>, Condvar)>,
}

#[derive(Default)]
struct LinesState {
    lines: Vec<String>,
    eof: bool,
}

impl Lines {
    /// Starts a thread that reads `r` line by line until EOF.
    pub fn spawn_reader<R: Read + Send + 'static>(r: R, name: &str) -> (Lines, JoinHandle<()>) {
        let lines = Lines::default();
        let l2 = lines.clone();
        let h = std::thread::Builder::new()
            .name(format!("read-{name}"))
            .spawn(move || {
                let mut r = BufReader::new(r);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            while buf.last() == Some(&b'\n') || buf.last() == Some(&b'\r') {
                                buf.pop();
                            }
                            let line = String::from_utf8_lossy(&buf).into_owned();
                            let (m, cv) = &*l2.inner;
                            m.lock().unwrap().lines.push(line);
                            cv.notify_all();
                        }
                    }
                }
                let (m, cv) = &*l2.inner;
                m.lock().unwrap().eof = true;
                cv.notify_all();
            })
            .expect("spawn reader thread");
        (lines, h)
    }

    pub fn all(&self) -> Vec<String> {
        self.inner.0.lock().unwrap().lines.clone()
    }

    pub fn len(&self) -> usize {
        self.inner.0.lock().unwrap().lines.len()
    }

    pub fn is_eof(&self) -> bool {
        self.inner.0.lock().unwrap().eof
    }

    /// Waits until a line at index `from` or later satisfies `pred`; returns
    /// its index and text, or None at the deadline or when the pipe closed
    /// with no such line.
    pub fn wait_from(
        &self,
        from: usize,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Option<(usize, String)> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.inner;
        let mut st = m.lock().unwrap();
        let mut next = from;
        loop {
            while next < st.lines.len() {
                if pred(&st.lines[next]) {
                    return Some((next, st.lines[next].clone()));
                }
                next += 1;
            }
            if st.eof {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// Waits until the pipe is closed (the process exited).
    pub fn wait_eof(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.inner;
        let mut st = m.lock().unwrap();
        while !st.eof {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = cv.wait_timeout(st, deadline - now).unwrap().0;
        }
        true
    }
}

/// Why a broker did not come up.
struct StartError {
    message: String,
    /// Still running, and printed nothing at all.
    silent: bool,
}

impl From<String> for StartError {
    fn from(message: String) -> StartError {
        StartError {
            message,
            silent: false,
        }
    }
}

/// The scheduler state and kernel wait channel of each thread of `pid`.
fn process_state(pid: u32) -> String {
    let mut out = String::from("\nprocess state:");
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        let state = status
            .lines()
            .find(|l| l.starts_with("State:"))
            .unwrap_or("");
        let wchan = std::fs::read_to_string(path.join("wchan")).unwrap_or_default();
        out.push_str(&format!(
            "\n  task {}: {state}, wchan {wchan}",
            task.file_name().to_string_lossy()
        ));
    }
    out
}

/// A running broker, killed and reaped on drop.
pub struct Broker {
    pub kind: BrokerKind,
    child: Child,
    pub port: u16,
    pub conf_path: PathBuf,
    log: Lines,
    reader: Option<JoinHandle<()>>,
    dir: TempDir,
    /// Set by [`Broker::stop`]: the exit was asked for.
    stopped: bool,
}

/// Whether `conf` has its own listener (then the harness adds none).
fn has_option(conf: &str, name: &str) -> bool {
    conf.lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

/// `conf` with `listener 0 127.0.0.1` unless it has a `listener` or `port`
/// line, and `allow_anonymous true` unless it sets `allow_anonymous`.
fn with_test_defaults(conf: &str) -> String {
    let mut text = String::new();
    if !has_option(conf, "listener") && !has_option(conf, "port") {
        text.push_str("listener 0 127.0.0.1\n");
    }
    if !has_option(conf, "allow_anonymous") {
        text.push_str("allow_anonymous true\n");
    }
    text.push_str(conf);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// `text` with each `listener 0 ADDRESS` on `port` instead, for
/// Mosquitto; `listener 0 /path` stays a unix socket (in both brokers).
fn on_port(text: &str, port: u16) -> String {
    text.lines()
        .map(|l| match l.strip_prefix("listener 0 ") {
            Some(rest) if !rest.starts_with('/') => format!("listener {port} {rest}\n"),
            _ => format!("{l}\n"),
        })
        .collect()
}

impl Broker {
    /// Starts midge (or Mosquitto, see the module doc) with `conf`, adding
    /// `listener 0 127.0.0.1` unless `conf` has a `listener` or `port` line,
    /// and `allow_anonymous true` unless `conf` sets `allow_anonymous` (as in
    /// Mosquitto 2, a configured listener otherwise refuses anonymous
    /// clients).
    pub fn start(conf: &str) -> Broker {
        Broker::start_kind(BrokerKind::default_kind(), conf, &[])
    }

    /// As `start`, with extra command-line arguments (e.g. `-v`).
    pub fn start_with_args(conf: &str, args: &[&str]) -> Broker {
        Broker::start_kind(BrokerKind::default_kind(), conf, args)
    }

    /// Debian's Mosquitto with the same config handling as `start`.
    pub fn mosquitto(conf: &str) -> Broker {
        Broker::start_kind(BrokerKind::Mosquitto, conf, &[])
    }

    pub fn start_kind(kind: BrokerKind, conf: &str, args: &[&str]) -> Broker {
        let text = with_test_defaults(conf);
        match kind {
            BrokerKind::Midge => Broker::spawn(kind, Some(&text), args)
                .unwrap_or_else(|e| panic!("midge did not start: {e}")),
            BrokerKind::Mosquitto => {
                tools::require(MOSQUITTO);
                // Mosquitto reads `listener 0 ADDRESS` as a unix socket:
                // give it a free port (a path stays a unix socket), and
                // retry if someone takes the port first.
                let mut last = String::new();
                for _ in 0..5 {
                    let port = free_port();
                    let t = on_port(&text, port);
                    match Broker::spawn(kind, Some(&t), args) {
                        Ok(b) => return b,
                        Err(e) => last = e,
                    }
                }
                panic!("mosquitto did not start: {last}");
            }
        }
    }

    /// Starts midge with `conf` written exactly as given (it must open a
    /// listener on an ephemeral port, e.g. `listener 0 127.0.0.1`).
    pub fn start_exact(conf: &str) -> Broker {
        Broker::spawn(BrokerKind::Midge, Some(conf), &[])
            .unwrap_or_else(|e| panic!("midge did not start: {e}"))
    }

    /// Starts midge with these arguments and no `-c` (e.g. `-p PORT`).
    /// Returns the error text when it does not come up.
    pub fn start_without_config(args: &[&str]) -> Result<Broker, String> {
        Broker::spawn(BrokerKind::Midge, None, args)
    }

    /// Starts midge with `conf` (completed as by `start`) in the process
    /// environment `launch` describes.
    pub fn start_launch(conf: &str, launch: &Launch) -> Broker {
        let text = with_test_defaults(conf);
        Broker::spawn_launch(BrokerKind::Midge, Some(&text), launch)
            .unwrap_or_else(|e| panic!("midge did not start: {e}"))
    }

    fn spawn(kind: BrokerKind, conf_text: Option<&str>, args: &[&str]) -> Result<Broker, String> {
        let launch = Launch {
            args,
            ..Launch::default()
        };
        Broker::spawn_launch(kind, conf_text, &launch)
    }

    /// Starts the broker; under `MIDGE_TEST_RUNNER` (qemu-arm), once more
    /// when the first process printed nothing at all before the deadline.
    /// The emulator rarely hangs a process before its first instruction
    /// reaches `main` (seen once in hundreds of CI starts, never natively);
    /// what the hung process was doing is printed to the test's stderr.
    fn spawn_launch(
        kind: BrokerKind,
        conf_text: Option<&str>,
        launch: &Launch,
    ) -> Result<Broker, String> {
        match Broker::spawn_once(kind, conf_text, launch) {
            Err(e) if e.silent && std::env::var_os("MIDGE_TEST_RUNNER").is_some() => {
                eprintln!("{}\nstarting it once more under the emulator", e.message);
                Broker::spawn_once(kind, conf_text, launch).map_err(|e| e.message)
            }
            other => other.map_err(|e| e.message),
        }
    }

    fn spawn_once(
        kind: BrokerKind,
        conf_text: Option<&str>,
        launch: &Launch,
    ) -> Result<Broker, StartError> {
        let dir = TempDir::new(match kind {
            BrokerKind::Midge => "midge-test",
            BrokerKind::Mosquitto => "mosquitto-test",
        });
        let conf_path = match conf_text {
            Some(text) => dir.write(
                match kind {
                    BrokerKind::Midge => "midge.conf",
                    BrokerKind::Mosquitto => "mosquitto.conf",
                },
                text,
            ),
            None => PathBuf::new(),
        };
        let program = match kind {
            BrokerKind::Midge => PathBuf::from(env!("CARGO_BIN_EXE_midge")),
            BrokerKind::Mosquitto => PathBuf::from(MOSQUITTO),
        };
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if conf_text.is_some() {
            argv.push("-c".into());
            argv.push(conf_path.clone().into());
        }
        argv.extend(launch.args.iter().map(|a| a.into()));
        let mut cmd = match kind {
            BrokerKind::Midge => midge_command(&argv, launch.shell_prefix),
            BrokerKind::Mosquitto => {
                let mut c = Command::new(&program);
                c.args(&argv);
                c
            }
        };
        // Not under a service manager unless a test says so.
        cmd.env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        cmd.envs(launch.env.iter().copied());
        let mut child = cmd
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let stderr = child.stderr.take().expect("stderr piped");
        let (log, reader) = Lines::spawn_reader(stderr, "broker-log");
        let mut b = Broker {
            kind,
            child,
            port: 0,
            conf_path,
            log,
            reader: Some(reader),
            dir,
            stopped: false,
        };
        const MARK: &str = "Opening ipv4 listen socket on port ";
        match b.log.wait_from(0, START_TIMEOUT, |l| l.contains(MARK)) {
            Some((_, line)) => {
                let rest = &line[line.find(MARK).unwrap() + MARK.len()..];
                let port: u16 = rest
                    .trim_end_matches('.')
                    .trim()
                    .parse()
                    .map_err(|_| format!("cannot read the port in {line:?}"))?;
                if port == 0 {
                    return Err(format!("the broker printed port 0: {line:?}").into());
                }
                b.port = port;
            }
            None => {
                // Stopped before listening (or hung): report its log and,
                // when it is still there, its state. Killed by drop.
                let log = b.log.all();
                let silent = log.is_empty() && !b.has_exited();
                let state = if silent {
                    process_state(b.pid())
                } else {
                    String::new()
                };
                return Err(StartError {
                    message: format!(
                        "it exited or printed no {MARK:?} line within {START_TIMEOUT:?}; log:\n{}{state}",
                        log.join("\n")
                    ),
                    silent,
                });
            }
        }
        // Mosquitto prints the line before it listens; wait until it accepts.
        // (midge prints it after listen(2), so this returns at once.)
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match std::net::TcpStream::connect_timeout(&b.addr(), Duration::from_secs(2)) {
                Ok(_) => break,
                Err(e) => {
                    if Instant::now() >= deadline || b.has_exited() {
                        return Err(StartError::from(format!(
                            "port {} does not accept connections: {e}; log:\n{}",
                            b.port,
                            b.log.all().join("\n")
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        Ok(b)
    }

    /// Runs midge with `conf` (written as is, nothing added) and expects it
    /// to stop on its own with a failure. Returns its exit status, its
    /// stderr, and the config path used.
    pub fn start_expect_fail(conf: &str) -> (ExitStatus, String, PathBuf) {
        let dir = TempDir::new("midge-test");
        let path = dir.write("midge.conf", conf);
        let (status, stderr) = run_midge_to_end(&["-c", path.to_str().unwrap()]);
        assert!(
            !status.success(),
            "midge accepted this config and exited with success:\n{conf}\nstderr:\n{stderr}"
        );
        (status, stderr, path)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A raw TCP connection to the broker, no CONNECT sent yet.
    pub fn raw(&self) -> RawClient {
        RawClient::open(self.addr())
    }

    /// A raw client connected with MQTT 3.1.1, clean session, keepalive 60,
    /// after a CONNACK 0.
    pub fn client(&self, client_id: &str) -> RawClient {
        RawClient::connect(self.addr(), client_id)
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.log.all()
    }

    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// Waits for a log line containing `needle`; returns it. Panics with the
    /// whole log at the deadline.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_log_from(0, needle, timeout)
    }

    /// As `wait_for_log`, among the lines from index `from` on.
    pub fn wait_for_log_from(&self, from: usize, needle: &str, timeout: Duration) -> String {
        match self.log.wait_from(from, timeout, |l| l.contains(needle)) {
            Some((_, l)) => l,
            None => panic!(
                "no log line containing {needle:?} within {timeout:?}; {:?} log:\n{}",
                self.kind,
                self.logs().join("\n")
            ),
        }
    }

    /// Whether some log line so far contains `needle`.
    pub fn has_log(&self, needle: &str) -> bool {
        self.log.all().iter().any(|l| l.contains(needle))
    }

    /// Number of log lines containing `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log.all().iter().filter(|l| l.contains(needle)).count()
    }

    /// The broker's process id (the emulator's under `MIDGE_TEST_RUNNER`,
    /// which runs the broker in its own process).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Panics if the broker process is gone (crashed).
    pub fn assert_running(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("the broker exited ({st}); log:\n{}", self.logs().join("\n"));
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends `sig` (libc::SIGHUP, ...) to the broker process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill({sig}) failed");
    }

    /// Sends `sig` and waits (bounded) for the broker to exit by itself.
    pub fn stop(&mut self, sig: i32) -> ExitStatus {
        self.signal(sig);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.stopped = true;
                return st;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the broker did not exit after signal {sig}; log:\n{}",
                    self.logs().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The ports of every `Opening ipv4 listen socket` line, in order:
    /// those logged before the `... version X running` line, which both
    /// brokers print once every listener is open (the log arrives through
    /// a pipe, and may lag behind the first port accepting connections).
    pub fn ipv4_ports(&self) -> Vec<u16> {
        let running = |l: &str| l.contains(" version ") && l.ends_with(" running");
        self.log.wait_from(0, START_TIMEOUT, |l| running(l));
        self.logs()
            .iter()
            .filter_map(|l| l.split("Opening ipv4 listen socket on port ").nth(1))
            .filter_map(|r| r.trim_end_matches('.').parse().ok())
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let crashed = match self.child.try_wait() {
            Ok(Some(st)) if !self.stopped => Some(st),
            _ => None,
        };
        // Where each thread waited when the test failed: a broker (or
        // emulator) that stopped answering shows here.
        let threads = if std::thread::panicking() && crashed.is_none() {
            thread_states(self.child.id())
        } else {
            String::new()
        };
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
        if std::thread::panicking() || crashed.is_some() {
            eprintln!(
                "---- {:?} log (port {}{}) ----\n{}\n---- end of log ----\n{threads}",
                self.kind,
                self.port,
                match crashed {
                    Some(st) => format!(", exited by itself: {st}"),
                    None => String::new(),
                },
                self.logs().join("\n")
            );
        }
        // (port 0: it never came up, and `spawn` reports that itself.)
        if let Some(st) = crashed {
            if !std::thread::panicking() && self.port != 0 && !self.stopped {
                panic!("the broker exited during the test ({st})");
            }
        }
    }
}

/// One line per thread of process `pid`: its name, state and the kernel
/// function it waits in (`/proc/PID/task/*/stat` and `wchan`).
fn thread_states(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return String::new();
    };
    let mut out = String::from("---- threads: tid (name) state wchan ----\n");
    for t in tasks.flatten() {
        let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
        let stat = read("stat");
        // "tid (name) S ...": the state follows the last ')'.
        let (head, rest) = stat.rsplit_once(')').unwrap_or((&stat, ""));
        let state = rest.split_whitespace().next().unwrap_or("?");
        out += &format!("{head}) {state} {}\n", read("wchan"));
    }
    out
}

/// How a test wants midge started, beyond its config.
#[derive(Default)]
pub struct Launch<'a> {
    /// Command-line arguments after `-c CONF`.
    pub args: &'a [&'a str],
    /// Environment variables set for the broker.
    pub env: &'a [(&'a str, &'a str)],
    /// Shell commands run just before the broker replaces the shell, e.g.
    /// `ulimit -S -n 256`.
    pub shell_prefix: Option<&'a str>,
}

/// A command that runs the midge binary under test (`MIDGE_TEST_BINARY`,
/// see the module doc) with `args`: directly, or through
/// `MIDGE_TEST_RUNNER`, after
/// `shell_prefix` when one is given.
pub fn midge_command<S: AsRef<std::ffi::OsStr>>(args: &[S], shell_prefix: Option<&str>) -> Command {
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    if let Ok(runner) = std::env::var("MIDGE_TEST_RUNNER") {
        argv.extend(runner.split_whitespace().map(|w| w.into()));
    }
    argv.push(
        std::env::var_os("MIDGE_TEST_BINARY").unwrap_or_else(|| env!("CARGO_BIN_EXE_midge").into()),
    );
    argv.extend(args.iter().map(|a| a.as_ref().to_os_string()));
    let mut cmd = match shell_prefix {
        // "$0" "$@" are the program and its arguments, so nothing is quoted.
        Some(prefix) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!("{prefix} && exec \"$0\" \"$@\""));
            c
        }
        None => Command::new(&argv[0]),
    };
    match shell_prefix {
        Some(_) => cmd.args(&argv),
        None => cmd.args(&argv[1..]),
    };
    cmd
}

/// A command that runs the client tool `name` (`midge_passwd`, ...): the
/// midge binary under test started through a symbolic link of that name,
/// as the package installs it, through `MIDGE_TEST_RUNNER` when one is set.
pub fn tool_command(name: &str) -> Command {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("tools-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the tools directory");
        dir
    });
    let link = dir.join(name);
    if !link.exists() {
        let target = std::env::var_os("MIDGE_TEST_BINARY")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_midge")));
        let target = std::fs::canonicalize(&target).unwrap_or(target);
        // Two tests may race to make the same link; either link will do.
        let _ = std::os::unix::fs::symlink(&target, &link);
    }
    match std::env::var("MIDGE_TEST_RUNNER") {
        Ok(runner) => {
            let mut words = runner.split_whitespace();
            let mut c = Command::new(words.next().expect("MIDGE_TEST_RUNNER is empty"));
            c.args(words).arg(&link);
            c
        }
        Err(_) => Command::new(&link),
    }
}

/// Runs the midge binary with `args` until it exits (bounded: killed after
/// 30 s) and returns its status and stderr.
pub fn run_midge_to_end(args: &[&str]) -> (ExitStatus, String) {
    let (status, _stdout, stderr) = run_midge_output(args);
    (status, stderr)
}

/// As `run_midge_to_end`, also returning stdout.
pub fn run_midge_output(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = midge_command(args, None)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run midge");
    let (out, h1) = Lines::spawn_reader(child.stdout.take().unwrap(), "midge-stdout");
    let (err, h2) = Lines::spawn_reader(child.stderr.take().unwrap(), "midge-stderr");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "midge {args:?} did not exit within 30 s; stderr:\n{}",
                err.all().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = h1.join();
    let _ = h2.join();
    (status, out.all().join("\n"), err.all().join("\n"))
}
