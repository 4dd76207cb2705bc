//! The verification module with hostile certificates: the legacy path
//! (for the version 1 certificates of the seeds' openssl walkthrough)
//! refuses what OpenSSL refuses, and the verifiers take webpki's answer
//! for everything webpki can judge.

mod common;

use std::path::Path;
use std::time::Duration;

use common::pki::{self, CLIENT_V3, Ca};
use common::*;
use midge::tls::verify::{Invalid, Legacy, ServerVerifier};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};

fn der(p: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(p).expect("a PEM certificate")
}

fn now() -> UnixTime {
    UnixTime::now()
}

fn at_year(y: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs((y - 1970) * 365 * 86400))
}

fn name(n: &str) -> ServerName<'static> {
    ServerName::try_from(n.to_string()).expect("a server name")
}

struct Setup {
    _dir: TempDir,
    ca: Ca,
    leaf: CertificateDer<'static>,
}

/// The seed 003 CA and a version 1 server certificate for "localhost".
fn setup() -> Setup {
    let dir = TempDir::new("tls-verify");
    let ca = pki::seed003(dir.path(), "localhost");
    let leaf = der(&dir.path().join("mqtt_srv.crt"));
    Setup {
        _dir: dir,
        ca,
        leaf,
    }
}

fn legacy(ca: &Ca) -> Legacy {
    Legacy::new(vec![der(&ca.crt())], Vec::new())
}

#[test]
fn a_seed_made_version_1_certificate_passes_the_legacy_path() {
    let s = setup();
    let l = legacy(&s.ca);
    assert_eq!(
        l.verify(&s.leaf, &[], Some(&name("localhost")), now()),
        Ok(())
    );
    assert_eq!(
        l.verify(&s.leaf, &[], Some(&name("LocalHost.")), now()),
        Ok(())
    );
    assert_eq!(l.verify(&s.leaf, &[], None, now()), Ok(()));
}

#[test]
fn hostile_certificates_are_refused() {
    let s = setup();
    let l = legacy(&s.ca);
    let n = name("localhost");
    // Wrong name.
    assert_eq!(
        l.verify(&s.leaf, &[], Some(&name("evil.example")), now()),
        Err(Invalid::WrongName)
    );
    assert_eq!(
        l.verify(&s.leaf, &[], Some(&name("127.0.0.1")), now()),
        Err(Invalid::WrongName)
    );
    // Expired, not yet valid.
    assert_eq!(
        l.verify(&s.leaf, &[], Some(&n), at_year(2200)),
        Err(Invalid::Expired)
    );
    assert_eq!(
        l.verify(&s.leaf, &[], Some(&n), at_year(2001)),
        Err(Invalid::NotYetValid)
    );
    // A wrong signature: the last byte of the signature changed.
    let mut forged = s.leaf.as_ref().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    assert_eq!(
        l.verify(&forged, &[], Some(&n), now()),
        Err(Invalid::BadSignature)
    );
    // Truncated DER, at every length.
    for len in [0, 1, 10, s.leaf.len() / 2, s.leaf.len() - 1] {
        assert_eq!(
            l.verify(&s.leaf[..len], &[], Some(&n), now()),
            Err(Invalid::BadEncoding),
            "truncated to {len}"
        );
    }
    // Another CA.
    let other_dir = TempDir::new("tls-verify-other");
    let other = Ca::new(other_dir.path(), "other", "Other CA");
    let (crt, _) = other.issue("srv", "localhost", None, "365");
    assert_eq!(
        l.verify(&der(&crt), &[], Some(&n), now()),
        Err(Invalid::UnknownIssuer)
    );
    // A version 1 leaf of the CA posing as an intermediate.
    let (inter, _) = s.ca.issue("inter", "Intermediate", None, "365");
    let dir = s.ca.dir.clone();
    pki::openssl(&dir, &["genrsa", "-out", "below.key", "2048"]);
    let subj = format!("{}/CN=localhost", pki::SUBJECT);
    pki::openssl(
        &dir,
        &[
            "req",
            "-new",
            "-key",
            "below.key",
            "-out",
            "below.csr",
            "-subj",
            &subj,
        ],
    );
    pki::openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "below.csr",
            "-CA",
            "inter.crt",
            "-CAkey",
            "inter.key",
            "-CAcreateserial",
            "-out",
            "below.crt",
            "-days",
            "30",
        ],
    );
    let below = der(&dir.join("below.crt"));
    assert_eq!(
        l.verify(&below, &[der(&inter)], Some(&n), now()),
        Err(Invalid::NotACa)
    );
    assert_eq!(
        l.verify(&below, &[], Some(&n), now()),
        Err(Invalid::UnknownIssuer)
    );
}

#[test]
fn crls_revoke_version_1_certificates() {
    let s = setup();
    let (good, _) = s.ca.issue("good", "good", None, "365");
    let (bad, _) = s.ca.issue("bad", "bad", None, "365");
    let crl = s.ca.revoke(&bad);
    let crls = vec![CertificateRevocationListDer::from_pem_file(&crl).expect("a CRL")];
    let l = Legacy::new(vec![der(&s.ca.crt())], crls);
    assert_eq!(l.verify(&der(&good), &[], None, now()), Ok(()));
    assert_eq!(
        l.verify(&der(&bad), &[], None, now()),
        Err(Invalid::Revoked)
    );
    assert_eq!(
        l.verify(&der(&good), &[], None, at_year(2200)),
        Err(Invalid::Expired)
    );
    // A CRL from another CA says nothing about this one's certificates.
    let other_dir = TempDir::new("tls-verify-crl");
    let other = Ca::new(other_dir.path(), "other", "Other CA");
    let (x, _) = other.issue("x", "x", None, "365");
    let other_crl = other.revoke(&x);
    let l = Legacy::new(
        vec![der(&s.ca.crt())],
        vec![CertificateRevocationListDer::from_pem_file(&other_crl).expect("a CRL")],
    );
    assert_eq!(l.verify(&der(&good), &[], None, now()), Err(Invalid::NoCrl));
}

#[test]
fn the_server_verifier_takes_webpki_first_and_insecure_skips_only_the_name() {
    let s = setup();
    let v = ServerVerifier::new(vec![der(&s.ca.crt())], Vec::new(), false).expect("verifier");
    let check = |v: &ServerVerifier, leaf: &CertificateDer, host: &str| {
        v.verify_server_cert(leaf, &[], &name(host), &[], now())
            .is_ok()
    };
    // Seed-made (version 1): the legacy path, name from the CN.
    assert!(check(&v, &s.leaf, "localhost"));
    assert!(!check(&v, &s.leaf, "other.example"));
    // A version 3 certificate with subjectAltName: webpki alone.
    let ext = "basicConstraints=CA:FALSE\nsubjectAltName=DNS:broker.example,IP:127.0.0.1\n";
    let (v3, _) = s.ca.issue("v3", "ignored-cn", Some(ext), "365");
    assert!(check(&v, &der(&v3), "broker.example"));
    assert!(check(&v, &der(&v3), "127.0.0.1"));
    assert!(!check(&v, &der(&v3), "ignored-cn"));
    // A version 3 certificate without subjectAltName: the CN.
    let (nosan, _) = s.ca.issue(
        "nosan",
        "cn.example",
        Some("basicConstraints=CA:FALSE\n"),
        "365",
    );
    assert!(check(&v, &der(&nosan), "cn.example"));
    assert!(!check(&v, &der(&nosan), "other.example"));
    // --insecure: any name, but still the right CA.
    let insecure = ServerVerifier::new(vec![der(&s.ca.crt())], Vec::new(), true).expect("verifier");
    assert!(check(&insecure, &s.leaf, "other.example"));
    assert!(check(&insecure, &der(&v3), "other.example"));
    let other_dir = TempDir::new("tls-verify-insecure");
    let other = Ca::new(other_dir.path(), "other", "Other CA");
    let (crt, _) = other.issue("srv", "localhost", None, "365");
    assert!(!check(&insecure, &der(&crt), "localhost"));
    let (crt3, _) = other.issue("srv3", "localhost", Some(ext), "365");
    assert!(!check(&insecure, &der(&crt3), "broker.example"));
}

#[test]
fn require_certificate_accepts_seed_made_version_1_client_certificates() {
    let dir = TempDir::new("tls-v1-clients");
    let ca = pki::seed003(dir.path(), "localhost");
    let b = Broker::start(&format!(
        "listener 0 127.0.0.1\n{}require_certificate true\nuse_identity_as_username true\n",
        pki::tls_lines(dir.path())
    ));
    let (crt, key) = ca.issue("sensor1", "sensor1", None, "365");
    let cafile = ca.crt().display().to_string();
    let run = |crt: &Path, key: &Path| {
        let mut c = std::process::Command::new(common::tools::MOSQUITTO_PUB);
        c.args([
            "-h",
            "localhost",
            "-p",
            &b.port.to_string(),
            "--cafile",
            &cafile,
            "-t",
            "t",
            "-m",
            "m",
        ]);
        c.arg("--cert").arg(crt).arg("--key").arg(key);
        common::tools::run(c, "mosquitto_pub", common::tools::TOOL_TIMEOUT)
            .status
            .success()
    };
    assert!(run(&crt, &key));
    b.wait_for_log("u'sensor1'", TIMEOUT);
    b.wait_for_log(
        "is an X.509 version 1 certificate: checked the way OpenSSL does",
        TIMEOUT,
    );
    let other_dir = TempDir::new("tls-v1-other");
    let other = Ca::new(other_dir.path(), "other", "Other CA");
    let (crt2, key2) = other.issue("intruder", "intruder", None, "365");
    assert!(!run(&crt2, &key2));
    // And version 3 ones through webpki.
    let (crt3, key3) = ca.issue("sensor3", "sensor3", Some(CLIENT_V3), "365");
    assert!(run(&crt3, &key3));
    b.wait_for_log("u'sensor3'", TIMEOUT);
}
