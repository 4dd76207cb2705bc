//! Log lines in Mosquitto's form: `1700000000: message`, on stderr.
//!
//! Mosquitto users grep their logs for lines like `New client connected
//! from ...`; midge prints the same words with the same Unix timestamp prefix.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Installs the logger. `verbose` is `-v`: every log type, debug included.
/// `RUST_LOG` still overrides both for developers.
pub fn init(verbose: bool) {
    let level = if verbose {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    let mut b = env_logger::Builder::new();
    b.filter_level(level)
        .format(|out, record| {
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            writeln!(out, "{ts}: {}", record.args())
        })
        .target(env_logger::Target::Stderr);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    // A second init (tests) keeps the first logger.
    let _ = b.try_init();
}
