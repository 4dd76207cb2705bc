//! Other MQTT clients as child processes: Debian's `mosquitto_pub` and
//! `mosquitto_sub`, and Python scripts (paho-mqtt) from `tests/py/`.
//!
//! These are what midge's users run. When one is missing the test fails and
//! says to run `make test` (which runs `tests/setup.sh`): a test that
//! quietly passed without its client would prove nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::broker::{Broker, Lines};
use super::packets::{Connect, RawClient};

pub const MOSQUITTO_PUB: &str = "/usr/bin/mosquitto_pub";
pub const MOSQUITTO_SUB: &str = "/usr/bin/mosquitto_sub";

/// How long a one-shot client (mosquitto_pub, a Python script) may run.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Panics unless `path` exists, telling how to install it.
pub fn require(path: &str) {
    if !Path::new(path).exists() {
        panic!(
            "{path} is missing: run `make test` (tests/setup.sh installs Debian's \
             mosquitto and mosquitto-clients and the Python venv the tests need)"
        );
    }
}

/// The Python interpreter of the test venv: `$MIDGE_TEST_PYTHON`, else
/// `$CARGO_MANIFEST_DIR/.venv/bin/python`. Panics when it is missing.
pub fn python() -> PathBuf {
    let p = match std::env::var_os("MIDGE_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    };
    if !p.exists() {
        panic!(
            "the test Python interpreter {} is missing: run `make test` \
             (tests/setup.sh creates .venv with paho-mqtt 2.1.0)",
            p.display()
        );
    }
    p
}

/// Path of a script in `tests/py/`.
pub fn py_script(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name);
    assert!(p.exists(), "{} does not exist", p.display());
    p
}

/// A child process with its output read line by line, killed (with its
/// process group when it has one) and reaped on drop.
pub struct Proc {
    pub what: String,
    child: Child,
    pub stdout: Lines,
    pub stderr: Lines,
    group: bool,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr piped. With `group`, the child
    /// leads a new process group, and drop kills the whole group (a shell
    /// pipeline).
    pub fn spawn(mut cmd: Command, what: &str, group: bool) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if group {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let (stdout, h1) = Lines::spawn_reader(child.stdout.take().unwrap(), "stdout");
        let (stderr, h2) = Lines::spawn_reader(child.stderr.take().unwrap(), "stderr");
        Proc {
            what: what.to_string(),
            child,
            stdout,
            stderr,
            group,
            readers: vec![h1, h2],
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stdout line equal to `line` at index `from` or later;
    /// returns its index. Panics with all output at the deadline.
    pub fn wait_line_from(&self, from: usize, line: &str, timeout: Duration) -> usize {
        match self.stdout.wait_from(from, timeout, |l| l == line) {
            Some((i, _)) => i,
            None => panic!(
                "{}: no stdout line {line:?} (from line {from}) within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                self.what,
                self.stdout.all().join("\n"),
                self.stderr.all().join("\n")
            ),
        }
    }

    pub fn wait_line(&self, line: &str, timeout: Duration) -> usize {
        self.wait_line_from(0, line, timeout)
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                // Let the readers see EOF so all output is in.
                self.stdout.wait_eof(Duration::from_secs(5));
                self.stderr.wait_eof(Duration::from_secs(5));
                return st;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.what,
                    self.stdout.all().join("\n"),
                    self.stderr.all().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn output_text(&self) -> String {
        format!(
            "{}\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.stdout.all().join("\n"),
            self.stderr.all().join("\n")
        )
    }

    /// Kills the process (and its group) now.
    pub fn kill(&mut self) {
        if self.group {
            // The group id is the leader's pid (process_group(0)).
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg("--")
                .arg(format!("-{}", self.child.id()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        // The readers end when every writer of the pipes is gone; with the
        // group killed that is at once. Do not hang a test on a straggler.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !(self.stdout.is_eof() && self.stderr.is_eof()) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.stdout.is_eof() && self.stderr.is_eof() {
            for h in self.readers.drain(..) {
                let _ = h.join();
            }
        }
    }
}

/// Output of a finished command.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Panics unless the command succeeded, showing its output.
pub fn ok(f: &Finished) {
    assert!(
        f.status.success(),
        "failed ({}):\n{}\n{}",
        f.status,
        f.stdout,
        f.stderr
    );
}

/// Runs `cmd` to its end, within `timeout` (killed and a panic after).
pub fn run(cmd: Command, what: &str, timeout: Duration) -> Finished {
    let mut p = Proc::spawn(cmd, what, false);
    let status = p.wait_exit(timeout);
    Finished {
        status,
        stdout: p.stdout.all().join("\n"),
        stderr: p.stderr.all().join("\n"),
    }
}

/// `mosquitto_sub -h 127.0.0.1 -p PORT ARGS...`, running until dropped.
pub fn mosquitto_sub(port: u16, args: &[&str]) -> Proc {
    require(MOSQUITTO_SUB);
    let mut cmd = Command::new(MOSQUITTO_SUB);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    Proc::spawn(cmd, &format!("mosquitto_sub {}", args.join(" ")), false)
}

/// `mosquitto_pub -h 127.0.0.1 -p PORT ARGS...`, run to its end; panics
/// unless it succeeds.
pub fn mosquitto_pub(port: u16, args: &[&str]) -> Finished {
    require(MOSQUITTO_PUB);
    let mut cmd = Command::new(MOSQUITTO_PUB);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    let what = format!("mosquitto_pub {}", args.join(" "));
    let f = run(cmd, &what, TOOL_TIMEOUT);
    ok(&f);
    f
}

/// `sh -c SCRIPT` as the leader of its own process group; drop kills the
/// whole pipeline.
pub fn shell(script: &str) -> Proc {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    Proc::spawn(cmd, &format!("sh -c {script:?}"), true)
}

fn py_command(script: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg("-u").arg(py_script(script)).args(args);
    cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// Runs `tests/py/SCRIPT ARGS...` with the venv's Python to its end and
/// panics unless it exits 0. Returns its stdout.
pub fn run_py(script: &str, args: &[&str]) -> String {
    let what = format!("python {script} {}", args.join(" "));
    let f = run(py_command(script, args), &what, TOOL_TIMEOUT);
    assert!(
        f.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        f.status,
        f.stdout,
        f.stderr
    );
    f.stdout
}

/// Starts `tests/py/SCRIPT ARGS...` in the background.
pub fn spawn_py(script: &str, args: &[&str]) -> Proc {
    let what = format!("python {script} {}", args.join(" "));
    Proc::spawn(py_command(script, args), &what, false)
}

/// Publishes probes on `probe_topic` until the running `sub` prints one:
/// from then on its subscription is in place. Probes are QoS 0 from a raw
/// client, so callers should ignore lines starting with `probe_topic`.
pub fn wait_until_subscribed(b: &Broker, sub: &Proc, probe_topic: &str) {
    wait_until_subscribed_as(b, sub, probe_topic, &Connect::new("prober"));
}

/// As `wait_until_subscribed`, probing as the client `connect` describes
/// (a user name and password, when the broker asks for them).
pub fn wait_until_subscribed_as(b: &Broker, sub: &Proc, probe_topic: &str, connect: &Connect) {
    let mut p = RawClient::connect_with(b.addr(), connect, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        p.publish(probe_topic, b"probe", 0, false, 0);
        if sub
            .stdout
            .wait_from(0, Duration::from_millis(200), |l| {
                l.starts_with(probe_topic)
            })
            .is_some()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the subscriber never became ready; {}",
            sub.output_text()
        );
    }
}

/// The `mqtt` npm package (MQTT.js) the browser and Node tests use.
pub const MQTT_JS: &str = "mqtt@5.16.0";

/// The node_modules directory holding [`MQTT_JS`], installed with npm into
/// a cache under target/ on first use (once at a time: tests run in
/// parallel).
pub fn mqtt_js() -> PathBuf {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cache = root.join("target/npm").join(MQTT_JS.replace('@', "-"));
    let modules = cache.join("node_modules");
    if !modules.join("mqtt/dist/mqtt.min.js").exists() {
        let mut cmd = Command::new("npm");
        cmd.args([
            "install",
            "--no-save",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
        ])
        .arg("--prefix")
        .arg(&cache)
        .arg(MQTT_JS);
        let f = run(cmd, "npm install", Duration::from_secs(300));
        assert!(
            f.status.success() && modules.join("mqtt/dist/mqtt.min.js").exists(),
            "npm install {MQTT_JS} failed (run `make test`, tests/setup.sh installs npm):\n{}\n{}",
            f.stdout,
            f.stderr
        );
    }
    modules
}
