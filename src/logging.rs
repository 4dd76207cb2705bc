//! Log lines in Mosquitto's form: `1700000000: message`, to the
//! destinations and of the types that `log_dest` and `log_type` choose.
//!
//! Mosquitto users grep their logs for lines like `New client connected
//! from ...`; midge prints the same words with the same prefix. A log call
//! picks its Mosquitto type by level (error, warning, notice, debug) or by
//! target: `info!(target: SUBSCRIBE, ...)` and the like.
//!
//! The settings can be replaced while the broker runs (SIGHUP).
//!
//! Logging never stalls the broker. Once [`start_writer`] has run, a log
//! call only formats its line and hands it to the log writer thread
//! through a queue of [`QUEUE_LINES`] lines; when the destination does not
//! keep up (a full disk, a pipe nobody reads) and the queue is full, lines
//! are dropped and counted, and one line says how many when the writer
//! catches up. Before that (start-up), lines are written at once.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::TrySendError;
use parking_lot::RwLock;

use crate::config::{LogDest, Logging, log_type};
use crate::sys;
use crate::sys::parked::{self, Rx, Tx};

/// Targets that select a Mosquitto log type other than the level's.
pub const INFORMATION: &str = "information";
pub const SUBSCRIBE: &str = "subscribe";
pub const UNSUBSCRIBE: &str = "unsubscribe";
pub const WEBSOCKETS: &str = "websockets";

enum Sink {
    Stderr,
    Stdout,
    /// The file, and its path for a reopen (SIGRTMIN).
    File(File, std::path::PathBuf),
    Syslog,
    Topic,
}

struct State {
    types: u32,
    timestamp: bool,
    format: Option<CString>,
    /// Shared with the writer thread, which writes without holding the
    /// lock (a reload never waits for a stalled destination).
    sinks: Arc<Vec<Sink>>,
}

struct Logger {
    state: RwLock<State>,
    /// Where `log_dest topic` lines go; installed once the router runs.
    topic: OnceLock<TopicSink>,
    /// The writer thread's queue, once it runs.
    queue: OnceLock<Tx<Line>>,
    /// Lines dropped because the queue was full, not yet reported.
    dropped: AtomicU64,
}

/// The lines the log writer thread may have waiting: at most about 1 MB
/// (a line is cut at [`MAX_LINE`] bytes).
pub const QUEUE_LINES: usize = 1024;

/// A formatted log line on its way to the writer thread.
struct Line {
    /// With its timestamp and newline, for files, stdout and stderr.
    text: String,
    /// The message alone, for syslog.
    msg: String,
    priority: i32,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Installs the logger with Mosquitto's defaults (stderr; every type with
/// `verbose`), for the lines printed before the config is applied.
pub fn init(verbose: bool) {
    let types = if verbose {
        log_type::ALL
    } else {
        log_type::DEFAULT
    };
    let logger = LOGGER.get_or_init(|| Logger {
        state: RwLock::new(State {
            types,
            timestamp: true,
            format: None,
            sinks: Arc::new(vec![Sink::Stderr]),
        }),
        topic: OnceLock::new(),
        queue: OnceLock::new(),
        dropped: AtomicU64::new(0),
    });
    // A second init (tests) keeps the first logger.
    let _ = log::set_logger(logger);
    set_max_level(types);
}

/// Applies `log_dest`, `log_type` and the timestamp options. `verbose`
/// (`-v`) turns every type on, whatever the file says, as in Mosquitto.
/// Opens log files now, before privileges are dropped.
pub fn configure(cfg: &Logging, verbose: bool) -> io::Result<()> {
    let mut sinks = Vec::new();
    for d in &cfg.dest {
        sinks.push(match d {
            LogDest::Stderr => Sink::Stderr,
            LogDest::Stdout => Sink::Stdout,
            LogDest::File(p) => Sink::File(open_log(p)?, p.clone()),
            LogDest::Syslog => {
                sys::openlog(cfg.facility);
                Sink::Syslog
            }
            LogDest::Topic => Sink::Topic,
        });
    }
    let format = match &cfg.timestamp_format {
        Some(f) => Some(CString::new(f.as_str()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "log_timestamp_format holds NUL",
            )
        })?),
        None => None,
    };
    let types = if verbose { log_type::ALL } else { cfg.types };
    if let Some(l) = LOGGER.get() {
        *l.state.write() = State {
            types,
            timestamp: cfg.timestamp,
            format,
            sinks: Arc::new(sinks),
        };
    }
    set_max_level(types);
    Ok(())
}

fn open_log(p: &std::path::Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
}

/// SIGRTMIN (Mosquitto 2.1): the log files are opened again by name, so
/// that after logrotate moved them the broker writes to new ones. A file
/// that cannot be opened keeps the old one.
pub fn reopen() -> io::Result<()> {
    let Some(l) = LOGGER.get() else {
        return Ok(());
    };
    let mut state = l.state.write();
    let mut result = Ok(());
    let sinks = state
        .sinks
        .iter()
        .map(|s| match s {
            Sink::Stderr => Ok(Sink::Stderr),
            Sink::Stdout => Ok(Sink::Stdout),
            Sink::Syslog => Ok(Sink::Syslog),
            Sink::Topic => Ok(Sink::Topic),
            Sink::File(old, p) => match open_log(p) {
                Ok(f) => Ok(Sink::File(f, p.clone())),
                Err(e) => {
                    result = Err(e);
                    old.try_clone().map(|f| Sink::File(f, p.clone()))
                }
            },
        })
        .collect::<io::Result<Vec<Sink>>>()?;
    state.sinks = Arc::new(sinks);
    result
}

/// Starts the log writer thread: from now on no log call waits for a
/// destination. Called once the broker runs in its final process (after
/// `-d` forks).
pub fn start_writer() -> io::Result<()> {
    let Some(l) = LOGGER.get() else {
        return Ok(());
    };
    let (tx, rx) = parked::channel(QUEUE_LINES);
    std::thread::Builder::new()
        .name("log".into())
        .stack_size(64 * 1024)
        .spawn(move || write_lines(l, rx))?;
    let _ = l.queue.set(tx);
    Ok(())
}

/// Waits until the writer thread has written what was queued, or until
/// `timeout`: the last lines before the broker exits, without waiting
/// for a destination that has stalled.
pub fn drain(timeout: Duration) {
    let Some(q) = LOGGER.get().and_then(|l| l.queue.get()) else {
        return;
    };
    let deadline = Instant::now() + timeout;
    while !q.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The writer thread: writes each line to the destinations in force,
/// and says how many lines were dropped when it had fallen behind.
fn write_lines(l: &Logger, rx: Rx<Line>) {
    rx.attach();
    while let Ok(Some(line)) = rx.recv_until(None) {
        let sinks = l.state.read().sinks.clone();
        write_to(&sinks, &line);
        let dropped = l.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let msg = format!(
                "Warning: {dropped} log line(s) dropped: the log destination did not keep up."
            );
            let secs = unix_now();
            let text = format!("{secs}: {msg}\n");
            write_to(
                &sinks,
                &Line {
                    text,
                    msg,
                    priority: sys::LOG_WARNING,
                },
            );
        }
    }
}

fn write_to(sinks: &[Sink], line: &Line) {
    for sink in sinks {
        // A log line that cannot be written is lost; there is nowhere
        // left to report it.
        let _ = match sink {
            Sink::Stderr => io::stderr().lock().write_all(line.text.as_bytes()),
            Sink::Stdout => io::stdout().lock().write_all(line.text.as_bytes()),
            Sink::File(f, _) => (&*f).write_all(line.text.as_bytes()),
            Sink::Syslog => {
                sys::syslog(line.priority, &line.msg);
                Ok(())
            }
            // Published by the caller, never queued.
            Sink::Topic => Ok(()),
        };
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Where `log_dest topic` sends a line: called with the log type's letter
/// and the message. The router installs it ([`crate::router::publish_log`]);
/// it must not block.
pub type TopicSink = Box<dyn Fn(&str, &str) + Send + Sync>;

/// Lets `log_dest topic` publish through `sink`.
pub fn set_topic_sink(sink: TopicSink) {
    if let Some(l) = LOGGER.get() {
        let _ = l.topic.set(sink);
    }
}

fn set_max_level(types: u32) {
    log::set_max_level(if types & log_type::DEBUG != 0 {
        log::LevelFilter::Debug
    } else if types == 0 {
        log::LevelFilter::Off
    } else {
        log::LevelFilter::Info
    });
}

/// The Mosquitto log type of a record, its syslog priority and the letter
/// of its `$SYS/broker/log/` topic.
fn classify(r: &log::Metadata) -> (u32, i32, &'static str) {
    match (r.level(), r.target()) {
        (log::Level::Error, _) => (log_type::ERROR, sys::LOG_ERR, "E"),
        (log::Level::Warn, _) => (log_type::WARNING, sys::LOG_WARNING, "W"),
        (log::Level::Info, SUBSCRIBE) => (log_type::SUBSCRIBE, sys::LOG_NOTICE, "M"),
        (log::Level::Info, UNSUBSCRIBE) => (log_type::UNSUBSCRIBE, sys::LOG_NOTICE, "M"),
        (log::Level::Info, INFORMATION) => (log_type::INFORMATION, sys::LOG_INFO, "I"),
        (log::Level::Info, WEBSOCKETS) => (log_type::WEBSOCKETS, sys::LOG_DEBUG, "WS"),
        (log::Level::Info, _) => (log_type::NOTICE, sys::LOG_NOTICE, "N"),
        _ => (log_type::DEBUG, sys::LOG_DEBUG, "D"),
    }
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        self.state.read().types & classify(m).0 != 0
    }

    fn log(&self, record: &log::Record) {
        let (kind, priority, letter) = classify(record.metadata());
        let state = self.state.read();
        if state.types & kind == 0 || state.sinks.is_empty() {
            return;
        }
        let msg = clean(record.args().to_string());
        let secs = unix_now();
        let text = match (state.timestamp, &state.format) {
            (false, _) => format!("{msg}\n"),
            (true, None) => format!("{secs}: {msg}\n"),
            (true, Some(f)) => {
                let ts = sys::strftime_local(f, secs).unwrap_or_else(|| secs.to_string());
                format!("{ts}: {msg}\n")
            }
        };
        if state.sinks.iter().any(|s| matches!(s, Sink::Topic)) {
            self.to_topic(letter, &msg);
        }
        let line = Line {
            text,
            msg,
            priority,
        };
        match self.queue.get() {
            Some(q) => match q.try_send(line) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            },
            None => {
                let sinks = state.sinks.clone();
                drop(state);
                write_to(&sinks, &line);
            }
        }
    }

    fn flush(&self) {
        let sinks = self.state.read().sinks.clone();
        for sink in sinks.iter() {
            if let Sink::File(f, _) = sink {
                let _ = (&*f).flush();
            }
        }
    }
}

/// The most bytes of one log message; the rest is cut, with a marker.
/// Client ids, user names and topics can be 65,535 bytes long: uncut, 400
/// refused CONNECTs with such ids wrote 37 MiB of log.
pub const MAX_LINE: usize = 1_000;

/// A log message as it is written: control characters escaped (`\n`,
/// `\r`, `\t`, `\xNN`), so that a client id, user name or topic cannot
/// start a forged line or send escape sequences to a terminal, and cut at
/// [`MAX_LINE`] bytes with a marker saying how much was left out.
pub fn clean(msg: String) -> String {
    let needs_escape = msg.chars().any(|c| c.is_control());
    if !needs_escape && msg.len() <= MAX_LINE {
        return msg;
    }
    let mut out = String::with_capacity(msg.len().min(MAX_LINE + 40));
    for (i, c) in msg.char_indices() {
        if out.len() >= MAX_LINE {
            out.push_str(&format!("... ({} bytes more)", msg.len() - i));
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

impl Logger {
    /// Publishes a log line to `$SYS/broker/log/X`, through the sink.
    fn to_topic(&self, letter: &str, msg: &str) {
        if let Some(sink) = self.topic.get() {
            sink(letter, msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let forged = "evil\n1796623000: Client admin connected\r\x1b[2J\t\u{85}".to_string();
        assert_eq!(
            clean(forged),
            "evil\\n1796623000: Client admin connected\\r\\x1b[2J\\t\\x85"
        );
        assert_eq!(clean("plain ünïcode".into()), "plain ünïcode");
    }

    #[test]
    fn long_messages_are_cut_with_a_marker() {
        let long = format!("New client connected as {}.", "x".repeat(65_000));
        let out = clean(long.clone());
        assert!(out.len() < MAX_LINE + 40, "{}", out.len());
        assert!(out.starts_with("New client connected as xxx"));
        let more = long.len() - MAX_LINE;
        assert!(out.ends_with(&format!("... ({more} bytes more)")), "{out}");
        // Cut on a character boundary, escapes counted as written.
        let wide = "é".repeat(MAX_LINE);
        let out = clean(wide);
        assert!(out.is_char_boundary(out.len()));
        assert!(out.contains("bytes more"));
        let exact = "y".repeat(MAX_LINE);
        assert_eq!(clean(exact.clone()), exact);
    }
}
