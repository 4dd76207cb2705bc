//! `midge`: the broker's command line, as `mosquitto`'s.

#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, error, info, warn};
use midge::auth::Auth;
use midge::client::ClientShared;
use midge::config::Config;
use midge::persist::{self, journal::Journal, writer::Writer};
use midge::router::{Event, Metrics, Router};
use midge::tls::ServerTls;
use midge::{VERSION, listener, logging, notify, sys};

/// The router's walks over topic levels recurse once per level; topics and
/// filters are at most 201 levels deep (`topic::too_deep`), which takes
/// under 128 KiB of stack in a release build and under 512 KiB in a debug
/// one (tests/hostile.rs `the_deepest_topics_...`). Only touched pages cost
/// memory; the rest is address space.
const ROUTER_STACK: usize = 4 * 1024 * 1024;
/// listen(2) backlog, as the listener module binds with.
const LISTEN_BACKLOG: i32 = 1024;

fn usage() -> String {
    format!(
        "midge version {VERSION}\n\n\
         midge is an MQTT v5.0/v3.1.1/v3.1 broker.\n\n\
         Usage: midge [-c config_file] [-d] [-h] [-p port] [-t] [-v]\n\n \
         -c : specify the broker config file.\n \
         -d : put the broker into the background after starting.\n \
         -h : display this help.\n \
         -p : start the broker listening on the specified port.\n      \
         Ignored when the config file defines a listener.\n \
         -t : test the configuration (and every file it names), then exit.\n \
         -v : verbose mode - enable all logging types. This overrides\n      \
         any logging options given in the config file.\n \
         --version : print the version and exit.\n"
    )
}

/// Counts heap bytes for `memory_limit` and `$SYS/broker/heap/current`.
#[global_allocator]
static HEAP: midge::sys::CountingAlloc = midge::sys::CountingAlloc;

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    if let Some(tool) = args.next().as_deref().and_then(midge::tools::by_name) {
        return tool(args.collect());
    }
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
    let verbose = m.opt_present("v");
    let mut config = load(path.as_deref())?;
    let mut ignored_port = None;
    if let Some(p) = m.opt_str("p") {
        let port: u16 = p
            .parse()
            .map_err(|_| format!("invalid port '{p}' given to -p"))?;
        // As Mosquitto (2.0 and 2.1): -p sets the port of the local-only
        // listeners when the config defines no listener, and is ignored
        // when it does.
        if config.local_only {
            config.listen_local_only(port);
        } else {
            ignored_port = Some(port);
        }
    }
    let auth = Arc::new(Auth::load(&config).map_err(|e| e.to_string())?);
    // Keys and certificates are read now, before privileges are dropped
    // (a key is usually readable by root only).
    let (tls, tls_notes) = load_tls(&config)?;
    let bridge_tls = midge::bridge::load_tls(&config.bridges)?;
    let auth_notes = auth.notes();
    if m.opt_present("t") {
        for n in auth_notes.iter().chain(&tls_notes) {
            eprintln!("{n}");
        }
        if config.persistence.enabled {
            if let Some(w) = persist::check(&config.persistence)? {
                eprintln!("{w}");
            }
        }
        println!("configuration ok");
        return Ok(ExitCode::SUCCESS);
    }

    // Signals first: a SIGTERM during start-up must still stop cleanly.
    let signals = sys::Signals::install().map_err(|e| format!("unable to set up signals: {e}"))?;
    logging::init(verbose);
    logging::configure(&config.log, verbose).map_err(|e| format!("unable to open log: {e}"))?;
    info!("midge version {VERSION} starting");
    match &config.path {
        Some(p) => info!("Config loaded from {}.", p.display()),
        None => info!("Using default config."),
    }
    for w in &config.warnings {
        warn!("{w}");
    }
    if let Some(port) = ignored_port {
        info!("-p {port} is ignored: the configuration defines its listeners (as in Mosquitto).");
    }
    log_notes(&auth_notes);
    log_notes(&tls_notes);
    if config.local_only {
        info!(
            "Starting in local only mode. Connections will only be possible from clients running on this machine."
        );
        info!("Create a configuration file which defines a listener to allow remote access.");
    }
    sys::limit_malloc_arenas(2);
    match sys::raise_fd_limit() {
        Ok((before, after)) if before != after => debug!(
            "Raised the open file limit from {} to {}.",
            before.soft, after.soft
        ),
        Ok(_) => {}
        Err(e) => warn!("Warning: unable to raise the open file limit: {e}."),
    }

    // Bound now (a port in use stops the start here, and a port below 1024
    // needs root), listening only once the state is loaded.
    sys::defer_listen();
    let mut sockets = Vec::new();
    for (l, t) in config.listeners.iter().zip(&tls) {
        match listener::bind(l, t.clone()) {
            Ok(b) => sockets.extend(b),
            // In local-only mode a machine without IPv6 loopback still runs.
            Err(e) if config.local_only && l.address.as_deref() == Some("::1") => {
                info!("Not listening on ::1 port {}: {e}.", l.port);
            }
            Err(e) => {
                match &l.unix_socket {
                    Some(u) => error!(
                        "Error: unable to listen on unix socket {}: {e}.",
                        u.path.display()
                    ),
                    None => {
                        let addr = l.address.as_deref().unwrap_or("*");
                        error!("Error: unable to listen on {addr} port {}: {e}.", l.port);
                    }
                }
                listener::remove_unix_sockets(&sockets);
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    if m.opt_present("d") {
        sys::daemonize().map_err(|e| format!("unable to run in the background: {e}"))?;
    }
    // From here on no log line waits for its destination.
    logging::start_writer().map_err(|e| format!("unable to start the log thread: {e}"))?;
    if let Some(p) = &config.pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .map_err(|e| format!("unable to write pid file {}: {e}", p.display()))?;
    }
    let notifier = notify::Notifier::from_env().unwrap_or_else(|e| {
        warn!("Warning: unable to reach the service manager: {e}.");
        None
    });
    drop_privileges(&config.user, &sockets)?;

    let config = Arc::new(config);
    let (tx, rx) = midge::sys::parked::channel(midge::router::QUEUE);
    let metrics = Arc::new(Metrics::default());
    let (users, acls) = auth.summary();
    if users > 0 || acls > 0 {
        info!("Loaded {users} user(s) and {acls} ACL file(s).");
    }
    let mut router = Router::new(config.clone(), metrics.clone(), auth.clone());
    let mut journal = None;
    if config.persistence.enabled {
        // Restored before any listener accepts: the first client finds its
        // session.
        // Mosquitto's file is read, never written: `path` is where midge
        // saves.
        let (path, loaded) = persist::load_start(&persist::file_path(&config.persistence))?;
        router.restore(loaded.model.to_restored());
        if config.persistence.journal {
            let commit = Duration::from_millis(config.persistence.journal_commit_ms.into());
            let j = Journal::spawn(path, loaded.model, loaded.last_generation, commit)
                .map_err(|e| format!("unable to start the journal thread: {e}"))?;
            router.journal_with(j.clone(), &config.persistence);
            journal = Some(j);
        } else {
            persist::fold_journals(&path, &loaded)?;
            // The router holds the state now.
            drop(loaded);
            let writer = Writer::spawn(path)
                .map_err(|e| format!("unable to start the persistence thread: {e}"))?;
            router.persist_with(writer, &config.persistence);
        }
    }
    if let (Some(n), Some(every)) = (&notifier, notify::watchdog_interval()) {
        match n.try_clone() {
            Ok(n) => {
                info!("Watchdog: pinging the service manager every {every:?}.");
                router.watchdog_with(n, every);
            }
            Err(e) => warn!("Warning: unable to set up the watchdog: {e}."),
        }
    }
    sys::trim_heap();
    // Only now do connections get in: the first client finds its session.
    for b in &sockets {
        sys::listen(&b.socket, LISTEN_BACKLOG)
            .map_err(|e| format!("unable to listen on {}: {e}", b.socket.describe()))?;
    }
    let router_thread = std::thread::Builder::new()
        .name("router".into())
        .stack_size(ROUTER_STACK)
        .spawn(move || router.run(rx))
        .map_err(|e| format!("unable to start the router thread: {e}"))?;
    midge::router::publish_log(tx.clone());
    let shared = Arc::new(
        ClientShared::new(config.clone(), tx.clone(), metrics, auth).with_journal(journal),
    );
    info!("midge version {VERSION} running");
    midge::bridge::start(&shared, bridge_tls)
        .map_err(|e| format!("unable to start a bridge thread: {e}"))?;
    if let Some(Err(e)) = notifier.as_ref().map(notify::Notifier::ready) {
        warn!("Warning: unable to notify the service manager: {e}.");
    }

    let tls: Vec<Arc<ServerTls>> = tls.into_iter().flatten().collect();
    let stop = listener::accept_loop(&sockets, &signals, &shared, |sig| match sig {
        sys::SIGUSR1 if config.persistence.enabled => {
            info!("Saving in-memory database (SIGUSR1).");
            let _ = tx.send(Event::Save);
        }
        sys::SIGUSR1 => debug!("SIGUSR1 ignored: persistence is off."),
        s if s == sys::sigrtmin() => match logging::reopen() {
            Ok(()) => info!("Log files reopened (SIGRTMIN)."),
            Err(e) => error!("Error: unable to reopen a log file: {e}; writing to the old one."),
        },
        _ => reload(&config, &shared, verbose, &tls),
    })
    .map_err(|e| format!("accept loop failed: {e}"))?;
    info!("midge version {VERSION} terminating ({stop:?})");
    if let Some(Err(e)) = notifier.as_ref().map(notify::Notifier::stopping) {
        warn!("Warning: unable to notify the service manager: {e}.");
    }
    listener::remove_unix_sockets(&sockets);
    drop(sockets);
    let _ = tx.send(Event::Shutdown);
    // Give client threads a moment to flush and hand back their state;
    // with persistence the router then saves, and a slow SD card may need
    // longer than the flush.
    let wait = if config.persistence.enabled {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(2)
    };
    let deadline = std::time::Instant::now() + wait;
    while !router_thread.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(p) = &config.pid_file {
        if let Err(e) = std::fs::remove_file(p) {
            warn!("Unable to remove pid file {}: {e}.", p.display());
        }
    }
    // The last lines, unless their destination has stalled.
    logging::drain(Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}

fn load(path: Option<&Path>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Ok(Config::default()),
    }
}

/// Per listener, its TLS state if it is a TLS listener.
type ListenerTls = Vec<Option<Arc<ServerTls>>>;

/// The TLS files of every listener, in the order of `config.listeners`,
/// and the remarks to log about them.
fn load_tls(config: &Config) -> Result<(ListenerTls, Vec<String>), String> {
    let mut all = Vec::new();
    let mut notes = Vec::new();
    for l in &config.listeners {
        if !l.tls.enabled() {
            all.push(None);
            continue;
        }
        let (t, n) = ServerTls::load(&l.tls)?;
        notes.extend(n);
        all.push(Some(Arc::new(t)));
    }
    Ok((all, notes))
}

fn log_notes(notes: &[String]) {
    for n in notes {
        if n.starts_with("Warning") {
            warn!("{n}");
        } else {
            info!("{n}");
        }
    }
}

/// SIGHUP: re-reads the config file and applies the log settings, and
/// re-reads the certificates and keys of TLS listeners. A file that no
/// longer reads keeps what was in use, as Mosquitto does.
/// Password and ACL files are read again too: a file that cannot be read
/// keeps the previous rules in force, never none.
fn reload(config: &Config, shared: &ClientShared, verbose: bool, tls: &[Arc<ServerTls>]) {
    info!("Reloading config.");
    for t in tls {
        match t.reload() {
            Ok(notes) => log_notes(&notes),
            Err(e) => error!("Error: {e}; keeping the previous certificate and key."),
        }
    }
    let fresh = match load(config.path.as_deref()) {
        Ok(mut c) => {
            c.number_listeners();
            c
        }
        Err(e) => {
            error!("Error: {e}; keeping the previous settings.");
            return;
        }
    };
    if let Err(e) = logging::configure(&fresh.log, verbose) {
        error!("Error: unable to open log: {e}; keeping the previous log settings.");
    }
    if fresh.listeners.len() != config.listeners.len()
        || fresh.per_listener_settings != config.per_listener_settings
    {
        warn!(
            "Warning: listeners and per_listener_settings only change on a restart; \
             password and ACL files are read as they were configured at start-up."
        );
    }
    let mut basis = config.clone();
    if fresh.per_listener_settings == config.per_listener_settings {
        basis.security = fresh.security.clone();
        for (l, f) in basis.listeners.iter_mut().zip(&fresh.listeners) {
            l.security = f.security.clone();
        }
    }
    match Auth::load(&basis) {
        Ok(auth) => {
            log_notes(&auth.notes());
            let (users, acls) = auth.summary();
            info!("Loaded {users} user(s) and {acls} ACL file(s).");
            shared.replace_auth(Arc::new(auth));
        }
        Err(e) => error!("Error: {e}; keeping the previous password and ACL rules."),
    }
}

/// Started as root, becomes `user` (Mosquitto's rule: a user that does not
/// exist falls back to `nobody`; `user root` stays root, with a warning).
/// The files of Unix socket listeners go to that user first.
fn drop_privileges(user: &str, sockets: &[listener::Bound]) -> Result<(), String> {
    if sys::euid() != 0 {
        return Ok(());
    }
    if user == "root" {
        warn!("Warning: midge should not be run as root/administrator.");
        return Ok(());
    }
    let lookup = |name: &str| {
        sys::lookup_user(name).map_err(|e| format!("unable to look up user '{name}': {e}"))
    };
    let (name, ids) = match lookup(user)? {
        Some(ids) => (user, ids),
        None => {
            warn!(
                "Warning: Unable to drop privileges to '{user}' because this user does not exist. Trying 'nobody' instead."
            );
            match lookup("nobody")? {
                Some(ids) => ("nobody", ids),
                None => return Err("unable to drop privileges to 'nobody'".into()),
            }
        }
    };
    listener::hand_over(sockets, ids.0, ids.1);
    sys::become_user(name, ids.0, ids.1)
        .map_err(|e| format!("unable to drop privileges to '{name}': {e}"))?;
    info!("Running as user {name} (uid {}, gid {}).", ids.0, ids.1);
    Ok(())
}
