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
            print!("{usage}{TLS_HELP}");
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

/// The end of `--help` of midge_pub and midge_sub: the TLS options.
pub const TLS_HELP: &str = "
 --cafile : path to a file containing trusted CA certificates to enable encrypted
            communication.
 --capath : path to a directory containing trusted CA certificates to enable encrypted
            communication.
 --cert : client certificate for authentication, if required by server.
 --key : client private key for authentication, if required by server.
 --ciphers : openssl compatible list of TLS 1.2 ciphers to support.
 --tls-version : TLS protocol version, tlsv1.3 or tlsv1.2 (the lowest accepted).
                 Defaults to tlsv1.2. tlsv1.1 and tlsv1 are not available.
 --insecure : do not check that the server certificate hostname matches the remote
              hostname. Using this option means that you cannot be sure that the
              remote host is the server you wish to connect to and so is insecure.
              Do not use this option in a production environment.
 --tls-use-os-certs : Load and trust the CA certificates midge carries (webpki-roots).
 --tls-alpn : TLS application layer protocol negotiation.

Not yet available: MQTT v5 (-V mqttv5, -D).

See docs/TOOLS.md of midge for more information.
";
