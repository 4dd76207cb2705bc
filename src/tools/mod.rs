//! The client tools (`midge_passwd`, `midge_pub`, ...) live in the broker's
//! binary: one executable, installed once, with a symbolic link per tool.
//! `main` looks at the name it was started under and runs the tool of that
//! name. On a board this keeps rustls, ring and the codec on disk once.

pub mod cert;
pub mod passwd;

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::ExitCode;

/// A tool's entry point: its arguments without the program name.
pub type Main = fn(Vec<OsString>) -> ExitCode;

/// Every tool, by the name it is installed under.
const TOOLS: &[(&str, Main)] = &[("midge_passwd", passwd::main), ("midge_cert", cert::main)];

/// The tool `argv0` names (by its file name), or `None` for the broker.
pub fn by_name(argv0: &OsStr) -> Option<Main> {
    let name = Path::new(argv0).file_name()?.to_str()?;
    TOOLS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// The names of every tool, for packaging and tests.
pub fn names() -> impl Iterator<Item = &'static str> {
    TOOLS.iter().map(|(n, _)| *n)
}
