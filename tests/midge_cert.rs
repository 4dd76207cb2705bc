//! `midge_cert`, run through its symbolic link as installed: its files
//! serve TLS for midge and for Debian's Mosquitto, and its client
//! certificates pass require_certificate.

mod common;

use std::path::Path;
use std::process::Command;

use common::broker::tool_command;
use common::tools::{self, Finished, MOSQUITTO_PUB, TOOL_TIMEOUT};
use common::*;

fn midge_cert(dir: &Path, args: &[&str]) -> Finished {
    let mut c = tool_command("midge_cert");
    c.args(args).arg("--dir").arg(dir);
    tools::run(c, "midge_cert", TOOL_TIMEOUT)
}

fn ok(f: Finished) -> Finished {
    assert!(f.status.success(), "failed:\n{}\n{}", f.stdout, f.stderr);
    f
}

/// A CA, a server certificate for localhost and 127.0.0.1, a client.
fn make(dir: &Path) {
    ok(midge_cert(dir, &["ca", "--cn", "Test CA"]));
    ok(midge_cert(
        dir,
        &["server", "--host", "localhost", "--host", "127.0.0.1"],
    ));
    ok(midge_cert(dir, &["client", "--cn", "sensor1"]));
}

fn publish(port: u16, host: &str, dir: &Path, extra: &[&str]) -> bool {
    tools::require(MOSQUITTO_PUB);
    let mut c = Command::new(MOSQUITTO_PUB);
    c.args([
        "-h",
        host,
        "-p",
        &port.to_string(),
        "-t",
        "t",
        "-m",
        "m",
        "--cafile",
    ])
    .arg(dir.join("ca.crt"))
    .args(extra);
    tools::run(c, "mosquitto_pub", TOOL_TIMEOUT)
        .status
        .success()
}

fn listener(dir: &Path, extra: &str) -> String {
    format!(
        "listener 0 127.0.0.1\ncafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n{extra}",
        d = dir.display()
    )
}

#[test]
fn its_files_serve_midge_by_name_and_by_address() {
    let dir = TempDir::new("midge-cert");
    make(dir.path());
    let b = Broker::start(&listener(dir.path(), ""));
    b.wait_for_log(
        "the certificate is for CN=localhost, DNS:localhost, IP:127.0.0.1;",
        TIMEOUT,
    );
    assert!(publish(b.port, "localhost", dir.path(), &[]));
    assert!(publish(b.port, "127.0.0.1", dir.path(), &[]));
}

#[test]
fn its_client_certificates_pass_require_certificate() {
    let dir = TempDir::new("midge-cert-client");
    make(dir.path());
    let b = Broker::start(&listener(
        dir.path(),
        "require_certificate true\nuse_identity_as_username true\n",
    ));
    let d = dir.path();
    let (crt, key) = (d.join("sensor1.crt"), d.join("sensor1.key"));
    let (crt, key) = (crt.to_str().unwrap(), key.to_str().unwrap());
    assert!(publish(
        b.port,
        "localhost",
        d,
        &["--cert", crt, "--key", key]
    ));
    b.wait_for_log("u'sensor1'", TIMEOUT);
    assert!(!publish(b.port, "localhost", d, &[]));
}

#[test]
fn debians_mosquitto_reads_its_files() {
    let dir = TempDir::new("midge-cert-mosquitto");
    make(dir.path());
    // Mosquitto reads the key after dropping to its own user.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("server.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let b = Broker::mosquitto(&listener(dir.path(), ""));
    assert!(publish(b.port, "localhost", dir.path(), &[]));
}

#[test]
fn it_refuses_to_overwrite_and_explains_a_missing_ca() {
    let dir = TempDir::new("midge-cert-errors");
    let f = midge_cert(dir.path(), &["server", "--host", "localhost"]);
    assert!(!f.status.success());
    assert!(
        f.stderr.contains("ca.key") && f.stderr.contains("make the CA first: midge_cert ca"),
        "{}",
        f.stderr
    );
    ok(midge_cert(dir.path(), &["ca"]));
    let f = midge_cert(dir.path(), &["ca"]);
    assert!(!f.status.success());
    assert!(
        f.stderr.contains("exists (use --force to replace it)"),
        "{}",
        f.stderr
    );
    ok(midge_cert(dir.path(), &["ca", "--force"]));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let f = midge_cert(dir.path(), &["--help"]);
    assert!(f.stdout.contains("Usage: midge_cert ca"), "{}", f.stdout);
}
