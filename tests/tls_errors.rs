//! What midge says about TLS files at start-up: every error names the
//! config line, the option, the file and the cause; warnings say what to
//! do. Files are made with openssl as the seeds' users make them, or with
//! rcgen where openssl cannot (dates in the past or future).

mod common;

use std::path::Path;

use common::pki::{self, Ca};
use common::*;

/// A TLS listener config with these three files (line 2: cafile, line 3:
/// certfile, line 4: keyfile).
fn conf(ca: &Path, crt: &Path, key: &Path, extra: &str) -> String {
    format!(
        "listener 0 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nallow_anonymous true\n{extra}",
        ca.display(),
        crt.display(),
        key.display()
    )
}

/// Starts midge expecting it to fail; returns its one error line.
fn start_error(conf: &str) -> (String, std::path::PathBuf) {
    let (_st, stderr, path) = Broker::start_expect_fail(conf);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
    (lines[0].to_string(), path)
}

struct Files {
    _dir: TempDir,
    ca: std::path::PathBuf,
    crt: std::path::PathBuf,
    key: std::path::PathBuf,
    ca_key: std::path::PathBuf,
}

fn seed_files() -> Files {
    let dir = TempDir::new("tls-errors");
    pki::seed003(dir.path(), "localhost");
    let p = dir.path();
    Files {
        ca: p.join("mqtt_ca.crt"),
        crt: p.join("mqtt_srv.crt"),
        key: p.join("mqtt_srv.key"),
        ca_key: p.join("mqtt_ca.key"),
        _dir: dir,
    }
}

#[test]
fn file_errors_name_line_option_file_and_cause() {
    let f = seed_files();
    let missing = f.crt.with_file_name("nowhere.crt");
    let (e, path) = start_error(&conf(&f.ca, &missing, &f.key, ""));
    assert_eq!(
        e,
        format!(
            "Error: {}:3: certfile {}: cannot read: no such file",
            path.display(),
            missing.display()
        )
    );
    // A directory where a file belongs.
    let dir = f.crt.parent().unwrap();
    let (e, _) = start_error(&conf(&f.ca, &f.crt, dir, ""));
    assert!(
        e.contains(&format!(":4: keyfile {}: cannot read: ", dir.display())),
        "{e}"
    );
    // A key where the certificate belongs, and the other way round.
    let (e, _) = start_error(&conf(&f.ca, &f.key, &f.key, ""));
    assert!(
        e.contains(":3: certfile ") && e.contains("no certificate in the file"),
        "{e}"
    );
    let (e, _) = start_error(&conf(&f.ca, &f.crt, &f.crt, ""));
    assert!(
        e.contains(":4: keyfile ") && e.contains("no private key in the file"),
        "{e}"
    );
    // The CA's key is protected by a pass phrase (genrsa -des3).
    let (e, _) = start_error(&conf(&f.ca, &f.crt, &f.ca_key, ""));
    let k = f.ca_key.display();
    assert!(
        e.contains("protected by a pass phrase, and midge cannot ask for one"),
        "{e}"
    );
    assert!(
        e.contains(&format!("openssl pkey -in {k} -out {k}.nopass")),
        "{e}"
    );
    // That command gives a key midge reads (the CA's own, so it does not
    // match the server certificate).
    pki::openssl(
        f.ca_key.parent().unwrap(),
        &[
            "pkey",
            "-in",
            "mqtt_ca.key",
            "-passin",
            pki::PASS,
            "-out",
            "mqtt_ca.key.nopass",
        ],
    );
    let nopass = f.ca_key.with_file_name("mqtt_ca.key.nopass");
    let (e, _) = start_error(&conf(&f.ca, &f.crt, &nopass, ""));
    assert!(
        e.contains(&format!(
            ":4: keyfile {}: the private key does not match the certificate of certfile {}",
            nopass.display(),
            f.crt.display()
        )),
        "{e}"
    );
}

#[test]
fn a_ca_file_without_a_usable_certificate_is_refused() {
    let f = seed_files();
    let bad = f.ca.with_file_name("bad-ca.crt");
    std::fs::write(
        &bad,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (e, _) = start_error(&conf(&bad, &f.crt, &f.key, "require_certificate true\n"));
    assert!(
        e.contains(":2: cafile ") && e.contains("no usable CA certificate in the file"),
        "{e}"
    );
    let (e, _) = start_error(&conf(&f.key, &f.crt, &f.key, "require_certificate true\n"));
    assert!(
        e.contains(":2: cafile ") && e.contains("no certificate in the file"),
        "{e}"
    );
}

#[test]
fn tls_version_and_ciphers() {
    let f = seed_files();
    let (e, _) = start_error(&conf(&f.ca, &f.crt, &f.key, "ciphers DES-CBC3-SHA\n"));
    assert!(
        e.contains(":6: ciphers: 'DES-CBC3-SHA' is not a cipher suite midge offers for TLS 1.2; available: ECDHE-ECDSA-AES256-GCM-SHA384:"),
        "{e}"
    );
    let b = Broker::start(&conf(&f.ca, &f.crt, &f.key, "tls_version tlsv1.1\n"));
    b.wait_for_log(
        "tls_version tlsv1.1: midge speaks TLS 1.2 and 1.3 only; this listener accepts TLS 1.2 and later, and clients limited to TLS 1.0 or 1.1 cannot connect.",
        TIMEOUT,
    );
    // TLS 1.3 only: a TLS 1.2 client is refused, a 1.3 one served.
    let b = Broker::start(&conf(&f.ca, &f.crt, &f.key, "tls_version tlsv1.3\n"));
    let ca = f.ca.to_str().unwrap();
    let handshake = |v: &str| {
        let mut c = std::process::Command::new("openssl");
        c.args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", b.port),
            "-CAfile",
            ca,
            v,
        ]);
        common::tools::run(c, "openssl s_client", common::tools::TOOL_TIMEOUT)
            .status
            .success()
    };
    assert!(!handshake("-tls1_2"));
    assert!(handshake("-tls1_3"));
}

#[test]
fn the_walkthroughs_same_subject_trap_is_explained() {
    // Seed 003 to the letter: the CA and the server have the same subject.
    let dir = TempDir::new("tls-trap");
    let ca = Ca::new(dir.path(), "mqtt_ca", "localhost");
    // The server key, then a request with the CA's very subject.
    ca.issue("mqtt_srv", "localhost", None, "3650");
    let p = dir.path();
    pki::openssl(
        p,
        &[
            "req",
            "-new",
            "-out",
            "same.csr",
            "-key",
            "mqtt_srv.key",
            "-subj",
            &format!("{}/CN=localhost/emailAddress=ca@example.com", pki::SUBJECT),
        ],
    );
    pki::openssl(
        p,
        &[
            "x509",
            "-req",
            "-in",
            "same.csr",
            "-CA",
            "mqtt_ca.crt",
            "-CAkey",
            "mqtt_ca.key",
            "-passin",
            pki::PASS,
            "-CAcreateserial",
            "-out",
            "same.crt",
            "-days",
            "3650",
        ],
    );
    let b = Broker::start(&conf(
        &ca.crt(),
        &p.join("same.crt"),
        &p.join("mqtt_srv.key"),
        "",
    ));
    let line = b.wait_for_log(
        "has the same name as its subject, but it is not self-signed",
        TIMEOUT,
    );
    assert!(
        line.contains("Give the CA a Common Name different from the server's"),
        "{line}"
    );
    b.wait_for_log("the certificate is for CN=localhost;", TIMEOUT);
}

/// A self-signed certificate valid from `from` to `to` (years), with the
/// names of the DNS list and 127.0.0.1.
fn rcgen_cert(
    dir: &Path,
    name: &str,
    from: i32,
    to: i32,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut params = rcgen::CertificateParams::new(vec!["broker.example".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(to, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let crt = dir.join(format!("{name}.crt"));
    let k = dir.join(format!("{name}.key"));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (crt, k)
}

#[test]
fn expired_and_future_certificates_are_warned_about_with_their_names() {
    let dir = TempDir::new("tls-dates");
    let (crt, key) = rcgen_cert(dir.path(), "old", 2001, 2002);
    let b = Broker::start(&conf(&crt, &crt, &key, ""));
    b.wait_for_log("the certificate expired on Jan  1 00:00:00 2002", TIMEOUT);
    b.wait_for_log(
        "the certificate is for CN=rcgen self signed cert, DNS:broker.example, IP:127.0.0.1;",
        TIMEOUT,
    );
    let (crt, key) = rcgen_cert(dir.path(), "future", 2090, 2091);
    let b = Broker::start(&conf(&crt, &crt, &key, ""));
    b.wait_for_log(
        "the certificate is not valid before Jan  1 00:00:00 2090",
        TIMEOUT,
    );
}

#[test]
fn check_mode_reads_the_tls_files() {
    let f = seed_files();
    let dir = TempDir::new("tls-check");
    let path = dir.write("midge.conf", &conf(&f.ca, &f.crt, &f.key, ""));
    let (st, out, err) = common::broker::run_midge_output(&["-t", "-c", path.to_str().unwrap()]);
    assert!(st.success(), "{err}");
    assert_eq!(out.trim(), "configuration ok");
    assert!(err.contains("the certificate is for CN=localhost"), "{err}");
    std::fs::remove_file(&f.key).unwrap();
    let (st, _, err) = common::broker::run_midge_output(&["-t", "-c", path.to_str().unwrap()]);
    assert!(!st.success());
    assert!(
        err.contains(":4: keyfile ") && err.contains("cannot read: no such file"),
        "{err}"
    );
}
