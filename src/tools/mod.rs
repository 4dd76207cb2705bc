//! The client tools (`midge_passwd`, `midge_pub`, ...) live in the broker's
//! binary: one executable, installed once, with a symbolic link per tool.
//! `main` looks at the name it was started under and runs the tool of that
//! name. On a board this keeps rustls, ring and the codec on disk once.
//!
//! `midge_pub`, `midge_sub` and `midge_rr` are Mosquitto's `mosquitto_pub`,
//! `mosquitto_sub` and `mosquitto_rr`: the same options, output, messages
//! and exit codes.
//! [`args`] reads their command line, [`client`] holds the connection,
//! [`format`] prints `-F` formats and [`sign`] signs and verifies payloads.

pub mod args;
pub mod client;
pub mod format;
mod json;
mod r#pub;
mod rr;
pub mod sign;
mod sub;
pub mod tls;

pub mod cert;
pub mod passwd;

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::VERSION;
use args::{Config, Kind, Stop};
use client::Exit;

/// A tool's entry point: its arguments without the program name.
pub type Main = fn(Vec<OsString>) -> ExitCode;

/// Every tool, by the name it is installed under.
const TOOLS: &[(&str, Main)] = &[
    ("midge_passwd", passwd::main),
    ("midge_cert", cert::main),
    ("midge_pub", r#pub::main),
    ("midge_sub", sub::main),
    ("midge_rr", rr::main),
];

/// The tool `argv0` names (by its file name), or `None` for the broker.
pub fn by_name(argv0: &OsStr) -> Option<Main> {
    let name = Path::new(argv0).file_name()?.to_str()?;
    TOOLS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// The names of every tool, for packaging and tests.
pub fn names() -> impl Iterator<Item = &'static str> {
    TOOLS.iter().map(|(n, _)| *n)
}

/// Reads the command line as Mosquitto's tools do, printing help, the
/// version or the error and the "Use ... --help" line; `Err` is the exit.
fn load(kind: Kind, args: &[OsString], usage: &str) -> Result<Config, ExitCode> {
    match Config::load(kind, args) {
        Ok(c) => Ok(c),
        Err(Stop::Help) => {
            print!("{usage}{}", tls::HELP);
            Err(ExitCode::from(1))
        }
        Err(Stop::Version) => {
            println!("{} version {VERSION}.", kind.name());
            Err(ExitCode::from(1))
        }
        Err(Stop::Error(msg)) => {
            eprint!("{msg}\nUse '{} --help' to see usage.\n", kind.name());
            Err(ExitCode::from(1))
        }
    }
}

/// Prints `e`'s message unless `--quiet`, and gives its exit code.
fn finish(cfg: &Config, e: Exit) -> ExitCode {
    if !cfg.quiet && !e.msg.is_empty() {
        eprint!("{}", e.msg);
    }
    let _ = std::io::stdout().flush();
    ExitCode::from(e.code)
}
