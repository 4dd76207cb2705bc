//! The process side: check mode, pid file, privileges, SIGHUP and SIGTERM.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::broker::{run_midge_output, run_midge_to_end};
use common::*;

#[test]
fn check_mode_reads_the_config_and_starts_nothing() {
    let dir = TempDir::new("midge-check");
    let port = free_port();
    let good = dir.write(
        "good.conf",
        &format!("listener {port} 127.0.0.1\nsys_interval 5\n"),
    );
    let (st, out, _) = run_midge_output(&["-t", "-c", good.to_str().unwrap()]);
    assert!(st.success());
    assert_eq!(out.trim(), "configuration ok");
    // Nothing listens on the port it names.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    let bad = dir.write("bad.conf", "listener 1883\n\nmax_keepalive forever\n");
    let (st, err) = run_midge_to_end(&["--test-config", "-c", bad.to_str().unwrap()]);
    assert!(!st.success());
    assert!(
        err.contains(&format!("{}:3: max_keepalive:", bad.display())),
        "{err}"
    );
}

#[test]
fn pid_file_is_written_and_removed_on_sigterm() {
    let dir = TempDir::new("midge-pid");
    // The broker drops root before it removes the file: let it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let pid_file = dir.path().join("midge.pid");
    let mut b = Broker::start(&format!("pid_file {}\n", pid_file.display()));
    b.wait_for_log(" running", TIMEOUT);
    let text = std::fs::read_to_string(&pid_file).expect("pid file");
    assert_eq!(text.trim(), b.pid().to_string());
    let mut c = b.client("bye");
    let st = b.stop(libc::SIGTERM);
    assert!(st.success(), "{st}");
    c.expect_closed();
    assert!(!pid_file.exists(), "pid file left behind");
    assert!(b.has_log("terminating"), "{:?}", b.logs());
}

#[test]
fn sigint_stops_cleanly_too() {
    let mut b = Broker::start("");
    b.wait_for_log(" running", TIMEOUT);
    let st = b.stop(libc::SIGINT);
    assert!(st.success(), "{st}");
}

/// The uid in /proc/PID/status.
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("uid")
}

fn uid_in_passwd(user: &str) -> Option<u32> {
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find(|l| l.split(':').next() == Some(user))?
        .split(':')
        .nth(2)?
        .parse()
        .ok()
}

#[test]
fn started_as_root_it_runs_as_the_configured_user() {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test needs root, as the broker only drops privileges when started as root");
    }
    let nobody = uid_in_passwd("nobody").expect("a nobody user");
    let b = Broker::start("user nobody\n");
    b.wait_for_log("Running as user nobody", TIMEOUT);
    assert_eq!(uid_of(b.pid()), nobody);
    let mut c = b.client("works");
    c.ping();

    // A user that does not exist falls back to nobody, as in Mosquitto.
    let b = Broker::start("user no-such-user-here\n");
    b.wait_for_log("Running as user nobody", TIMEOUT);
    assert!(b.has_log("Trying 'nobody' instead."), "{:?}", b.logs());
    assert_eq!(uid_of(b.pid()), nobody);

    // user root keeps root, with a warning.
    let b = Broker::start("user root\n");
    b.wait_for_log(" running", TIMEOUT);
    assert_eq!(uid_of(b.pid()), 0);
    b.wait_for_log("should not be run as root", TIMEOUT);
}

#[test]
fn sighup_reloads_log_settings_without_dropping_clients() {
    let b = Broker::start("");
    b.wait_for_log(" running", TIMEOUT);
    let mut c = b.client("stays");
    c.subscribe(1, &[("before", 0)]);
    assert!(!b.has_log("stays 0 before"));
    let conf = std::fs::read_to_string(&b.conf_path).expect("conf");
    std::fs::write(&b.conf_path, format!("{conf}log_type all\n")).expect("rewrite conf");
    let from = b.log_len();
    b.signal(libc::SIGHUP);
    b.wait_for_log_from(from, "Reloading config.", TIMEOUT);
    // The new settings apply right after that line: subscribe until the
    // subscription is logged.
    let mut pkid = 1;
    wait_until("a logged subscription after SIGHUP", TIMEOUT, || {
        pkid += 1;
        c.subscribe(pkid, &[("after", 0)]);
        b.has_log("stays 0 after")
    });
    c.ping();

    // A config that no longer reads keeps the old settings.
    std::fs::write(
        &b.conf_path,
        format!("{conf}log_type all\nbogus_option 1\n"),
    )
    .expect("rewrite conf");
    let from = b.log_len();
    b.signal(libc::SIGHUP);
    b.wait_for_log_from(from, "keeping the previous settings", TIMEOUT);
    c.subscribe(pkid + 1, &[("still", 0)]);
    b.wait_for_log("stays 0 still", TIMEOUT);
    c.ping();
}

#[test]
fn unopenable_log_file_and_pid_file_stop_the_start_with_their_path() {
    let (st, err, _) = Broker::start_expect_fail(
        "listener 0 127.0.0.1\nlog_dest file /nonexistent-dir/midge.log\n",
    );
    assert!(!st.success());
    assert!(
        err.contains("unable to open log") && err.contains("/nonexistent-dir/midge.log"),
        "{err}"
    );
    let (st, err, _) =
        Broker::start_expect_fail("listener 0 127.0.0.1\npid_file /nonexistent-dir/midge.pid\n");
    assert!(!st.success());
    assert!(
        err.contains("unable to write pid file /nonexistent-dir/midge.pid"),
        "{err}"
    );
}
