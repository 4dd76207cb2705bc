//! `midge`: the broker's command line, as `mosquitto`'s.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use log::{error, info};
use midge::client::Shared;
use midge::config::{Config, Listener};
use midge::router::{Event, Router};
use midge::{VERSION, listener, logging, sys};

/// Channel depth between client threads and the router. When the router
/// falls behind, publishers wait here, which pushes back on their sockets.
/// Every slot is allocated at start-up: 8,192 cost 450 KiB of an idle
/// broker's memory for no measurable throughput (docs/PERFORMANCE.md).
const ROUTER_QUEUE: usize = 1024;

/// The router's recursion over topic levels needs room for very deep topics
/// (a topic may have up to 65,535 levels); only touched pages cost memory.
const ROUTER_STACK: usize = 32 * 1024 * 1024;

fn usage() -> String {
    format!(
        "midge version {VERSION}\n\n\
         midge is an MQTT v3.1.1/v3.1 broker.\n\n\
         Usage: midge [-c config_file] [-d] [-h] [-p port] [-t] [-v]\n\n \
         -c : specify the broker config file.\n \
         -d : put the broker into the background after starting.\n \
         -h : display this help.\n \
         -p : start the broker listening on the specified port.\n      \
         Not recommended in conjunction with the -c option.\n \
         -t : test the configuration, then exit.\n \
         -v : verbose mode - enable all logging types.\n \
         --version : print the version and exit.\n"
    )
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("Error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = getopts::Options::new();
    opts.optopt("c", "config-file", "config file", "FILE");
    opts.optflag("d", "daemon", "run in the background");
    opts.optflag("h", "help", "show help");
    opts.optopt("p", "port", "port", "PORT");
    opts.optflag("t", "test-config", "check the configuration and exit");
    opts.optflag("v", "verbose", "verbose logging");
    opts.optflag("", "version", "print the version");
    let m = opts
        .parse(&args)
        .map_err(|e| format!("{e}\n\n{}", usage()))?;
    if m.opt_present("h") {
        print!("{}", usage());
        return Ok(ExitCode::SUCCESS);
    }
    if m.opt_present("version") {
        println!("midge version {VERSION}");
        return Ok(ExitCode::SUCCESS);
    }
    let path = m.opt_str("c").map(PathBuf::from);
    let mut config = match &path {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(p) = m.opt_str("p") {
        let port: u16 = p
            .parse()
            .map_err(|_| format!("invalid port '{p}' given to -p"))?;
        if config.local_only {
            // Like Mosquitto 2, -p alone keeps the local-only mode.
            config.listeners = vec![
                Listener {
                    port,
                    address: Some("127.0.0.1".into()),
                },
                Listener {
                    port,
                    address: Some("::1".into()),
                },
            ];
        } else {
            config.listeners.push(Listener {
                port,
                address: None,
            });
        }
    }
    if m.opt_present("t") {
        println!("configuration ok");
        return Ok(ExitCode::SUCCESS);
    }

    logging::init(m.opt_present("v"));
    info!("midge version {VERSION} starting");
    match &config.path {
        Some(p) => info!("Config loaded from {}.", p.display()),
        None => info!("Using default config."),
    }
    if config.local_only {
        info!(
            "Starting in local only mode. Connections will only be possible from clients running on this machine."
        );
        info!("Create a configuration file which defines a listener to allow remote access.");
    }
    sys::limit_malloc_arenas(2);

    let listeners = if config.local_only && config.listeners.is_empty() {
        config.effective_listeners()
    } else {
        config.listeners.clone()
    };
    let mut sockets = Vec::new();
    for l in &listeners {
        match listener::bind(l) {
            Ok(b) => sockets.extend(b),
            // In local-only mode a machine without IPv6 loopback still runs.
            Err(e) if config.local_only && l.address.as_deref() == Some("::1") => {
                info!("Not listening on ::1 port {}: {e}.", l.port);
            }
            Err(e) => {
                let addr = l.address.as_deref().unwrap_or("*");
                error!("Error: unable to listen on {addr} port {}: {e}.", l.port);
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    if m.opt_present("d") {
        sys::daemonize().map_err(|e| format!("unable to run in the background: {e}"))?;
    }
    let signals = sys::Signals::install().map_err(|e| format!("unable to set up signals: {e}"))?;

    let config = Arc::new(config);
    let (tx, rx) = crossbeam_channel::bounded(ROUTER_QUEUE);
    let router = Router::new(config.clone());
    let router_thread = std::thread::Builder::new()
        .name("router".into())
        .stack_size(ROUTER_STACK)
        .spawn(move || router.run(rx))
        .map_err(|e| format!("unable to start the router thread: {e}"))?;
    let shared = Arc::new(Shared::new(config, tx.clone()));
    info!("midge version {VERSION} running");

    let stop = listener::accept_loop(&sockets, &signals, &shared, || {
        info!("Reloading config.");
    })
    .map_err(|e| format!("accept loop failed: {e}"))?;
    info!("midge version {VERSION} terminating ({stop:?})");
    drop(sockets);
    let _ = tx.send(Event::Shutdown);
    // Give client threads a moment to flush and hand back their state.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !router_thread.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(ExitCode::SUCCESS)
}
