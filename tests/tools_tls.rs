//! midge_pub and midge_sub over TLS, with certificates made the seed 003
//! way (X.509 version 1, Common Name only): against midge and against
//! Debian's mosquitto, as `mosquitto_pub`/`mosquitto_sub --cafile` work.

mod common;

use std::path::Path;
use std::process::Command;

use common::broker::tool_command;
use common::pki::{self, CLIENT_V3};
use common::tools::{self, Finished, Proc, TOOL_TIMEOUT, ok};
use common::*;

fn tool(name: &str, host: &str, port: u16, args: &[&str]) -> Command {
    let mut c = tool_command(name);
    c.args(["-h", host, "-p", &port.to_string()]).args(args);
    c
}

fn midge_pub(host: &str, port: u16, args: &[&str]) -> Finished {
    tools::run(
        tool("midge_pub", host, port, args),
        "midge_pub",
        TOOL_TIMEOUT,
    )
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Publishes a retained message with TLS `args` and reads it back with
/// midge_sub and the same arguments.
fn round_trip(host: &str, port: u16, args: &[&str], topic: &str) {
    let mut a = args.to_vec();
    a.extend(["-t", topic, "-m", "over tls", "-r", "-q", "1"]);
    ok(&midge_pub(host, port, &a));
    let mut a = args.to_vec();
    a.extend(["-t", topic, "-C", "1", "-W", "20", "-v"]);
    let mut sub = Proc::spawn(tool("midge_sub", host, port, &a), "midge_sub", false);
    sub.wait_line(&format!("{topic} over tls"), TIMEOUT);
    assert!(sub.wait_exit(TIMEOUT).success());
}

#[test]
fn seed003_certificates_with_cafile_and_insecure() {
    let dir = TempDir::new("tools-tls-seed003");
    let ca = pki::seed003(dir.path(), "localhost");
    let b = Broker::start(&format!(
        "listener 0 127.0.0.1\n{}",
        pki::tls_lines(dir.path())
    ));
    let cafile = ca.crt();
    round_trip("localhost", b.port, &["--cafile", s(&cafile)], "seed/003");
    // -L mqtts:// with the port in the URL.
    let url = format!("mqtts://localhost:{}/seed/url", b.port);
    let mut c = tool_command("midge_pub");
    c.args(["-L", &url, "--cafile", s(&cafile), "-m", "m"]);
    ok(&tools::run(c, "midge_pub -L", TOOL_TIMEOUT));

    // 127.0.0.1 is not the certificate's name: a TLS error, exit 1, as
    // mosquitto_pub; --insecure skips only that check.
    let f = midge_pub(
        "127.0.0.1",
        b.port,
        &["--cafile", s(&cafile), "-t", "x", "-m", "y"],
    );
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr);
    assert!(
        f.stderr.contains("Error: A TLS error occurred."),
        "{}",
        f.stderr
    );
    round_trip(
        "127.0.0.1",
        b.port,
        &["--cafile", s(&cafile), "--insecure"],
        "seed/insecure",
    );

    // Another CA is refused even with --insecure.
    let other_dir = TempDir::new("tools-tls-other");
    let other = pki::Ca::new(other_dir.path(), "other", "Other CA");
    let f = midge_pub(
        "127.0.0.1",
        b.port,
        &[
            "--cafile",
            s(&other.crt()),
            "--insecure",
            "-t",
            "x",
            "-m",
            "y",
        ],
    );
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr);
    assert!(f.stderr.contains("A TLS error occurred"), "{}", f.stderr);
    // A plain client on the TLS port gets nowhere, and the broker lives on.
    let f = midge_pub("localhost", b.port, &["-t", "x", "-m", "y"]);
    assert!(!f.status.success());
    round_trip("localhost", b.port, &["--cafile", s(&cafile)], "seed/after");
}

#[test]
fn client_certificates_against_midge_and_mosquitto() {
    let dir = TempDir::new("tools-tls-client-cert");
    let ca = pki::seed003(dir.path(), "localhost");
    let ca_crt = ca.crt();
    let (crt, key) = ca.issue("client1", "client1", Some(CLIENT_V3), "30");
    // Mosquitto reads its key after dropping privileges.
    let srv_key = dir.path().join("mqtt_srv.key");
    std::fs::set_permissions(
        &srv_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let conf = format!(
        "listener 0 127.0.0.1\n{}require_certificate true\nallow_anonymous true\n",
        pki::tls_lines(dir.path())
    );
    let with_cert = ["--cafile", s(&ca_crt), "--cert", s(&crt), "--key", s(&key)];
    for kind in [BrokerKind::Midge, BrokerKind::Mosquitto] {
        let b = Broker::start_kind(kind, &conf, &[]);
        round_trip("localhost", b.port, &with_cert, "certs/ok");
        let f = midge_pub(
            "localhost",
            b.port,
            &["--cafile", s(&ca_crt), "-t", "x", "-m", "y"],
        );
        assert!(
            !f.status.success(),
            "{kind:?} accepted a client without a certificate"
        );
    }
}

#[test]
fn tls_option_errors_are_clear() {
    let dir = TempDir::new("tools-tls-errors");
    let ca = pki::seed003(dir.path(), "localhost");
    let ca_crt = ca.crt();
    // An encrypted key: the tool cannot ask for the pass phrase.
    let ca_key = dir.path().join("mqtt_ca.key");
    let f = midge_pub(
        "localhost",
        1,
        &[
            "--cafile",
            s(&ca_crt),
            "--cert",
            s(&ca_crt),
            "--key",
            s(&ca_key),
            "-t",
            "x",
            "-m",
            "y",
        ],
    );
    assert_eq!(f.status.code(), Some(1));
    assert!(
        f.stderr.contains("protected by a pass phrase") && f.stderr.contains("openssl pkey"),
        "{}",
        f.stderr
    );
    for (args, want) in [
        (
            vec!["--cafile", "/nonexistent/ca.crt"],
            "Error: Problem setting TLS options: File not found.",
        ),
        (
            vec!["--cafile", s(&ca_crt), "--cert", s(&ca_crt)],
            "Error: Both certfile and keyfile must be provided if one of them is set.",
        ),
        (
            vec!["--cafile", s(&ca_crt), "--tls-version", "tlsv9"],
            "Error: Problem setting TLS options, check the options are valid.",
        ),
        (
            vec!["--cafile", s(&ca_crt), "--ciphers", "NOPE-CIPHER"],
            "Error: Problem setting TLS options, check the options are valid.",
        ),
    ] {
        let mut a = args.clone();
        a.extend(["-t", "x", "-m", "y"]);
        let f = midge_pub("localhost", 1, &a);
        assert_eq!(f.status.code(), Some(1), "{args:?}");
        assert!(f.stderr.starts_with(want), "{args:?}: {}", f.stderr);
        // mosquitto_pub says the same first line.
        let mut m = Command::new(tools::MOSQUITTO_PUB);
        m.args(["-h", "localhost", "-p", "1"]).args(&a);
        let mf = tools::run(m, "mosquitto_pub", TOOL_TIMEOUT);
        if !want.contains("check the options") {
            assert!(
                mf.stderr.starts_with(want),
                "mosquitto_pub {args:?}: {}",
                mf.stderr
            );
        }
    }
}
