//! The verification module with hostile certificates: the legacy path
//! (for the version 1 certificates of the seeds' openssl walkthrough)
//! refuses what OpenSSL refuses, and the verifiers take webpki's answer
//! for everything webpki can judge.

mod common;

use std::path::Path;
use std::time::Duration;

use common::pki::{self, CLIENT_V3, Ca};
use common::*;
use midge::tls::verify::{Invalid, Legacy, Purpose, ServerVerifier};
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
    Legacy::new(vec![der(&ca.crt())], Vec::new(), Purpose::Server)
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
    let l = Legacy::new(vec![der(&s.ca.crt())], crls, Purpose::Client);
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
        Purpose::Client,
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

/// Whether `mosquitto_pub` gets a message through the `require_certificate`
/// listener of `b` with the certificate file `crt` (the certificate, then
/// the chain it sends) and `key`, trusting the server by `server_ca`.
fn client_accepted(b: &Broker, server_ca: &Path, crt: &Path, key: &Path) -> bool {
    let mut c = std::process::Command::new(common::tools::MOSQUITTO_PUB);
    c.args(["-h", "localhost", "-p", &b.port.to_string(), "--cafile"])
        .arg(server_ca)
        .args(["-t", "t", "-m", "m", "--cert"])
        .arg(crt)
        .arg("--key")
        .arg(key);
    common::tools::run(c, "mosquitto_pub", common::tools::TOOL_TIMEOUT)
        .status
        .success()
}

/// One client certificate case: a name, the certificate file with the
/// chain the client sends, its key, and whether OpenSSL accepts it.
struct Case {
    name: &'static str,
    crt: std::path::PathBuf,
    key: std::path::PathBuf,
    accepted: bool,
}

/// A certificate of `ca` (None: version 1) with `chain` appended.
fn case(ca: &Ca, name: &'static str, ext: Option<&str>, chain: &[&Path], accepted: bool) -> Case {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let stem = format!(
        "case{}",
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let (crt, key) = ca.issue(&stem, &stem, ext, "365");
    let mut files = vec![crt.as_path()];
    files.extend(chain);
    let full = pki::concat(&ca.dir.join(format!("{stem}.chain.pem")), &files);
    Case {
        name,
        crt: full,
        key,
        accepted,
    }
}

fn ders(p: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(p)
        .expect("a PEM file")
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates")
}

/// The extensions of a client certificate with extendedKeyUsage `eku`
/// and keyUsage `ku`.
fn client_ext(ku: &str, eku: &str) -> String {
    format!("basicConstraints=CA:FALSE\nkeyUsage={ku}\nextendedKeyUsage={eku}\n")
}

/// Chains that OpenSSL refuses for a client certificate are refused by
/// midge too, over a real TLS connection, whether webpki or the legacy
/// path (version 1 certificates) judges them; the seed 003 ones (version
/// 1 CA, version 1 clients) still work. Each case runs against Debian's
/// Mosquitto with the same configuration, and midge must answer as it
/// does.
#[test]
fn client_chains_are_judged_as_mosquitto_judges_them() {
    let dir = TempDir::new("tls-chains");
    let d = dir.path();
    let ca = pki::seed003(d, "localhost");
    let v1ca = Ca::new_v1(d, "v1ca", "Version 1 CA");
    let cafile = pki::concat(&d.join("cas.pem"), &[&ca.crt(), &v1ca.crt()]);
    // Mosquitto reads its key after dropping privileges.
    std::fs::set_permissions(
        d.join("mqtt_srv.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let ca_v3_pathlen0 =
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n";
    let inter0 = ca.sub_ca("inter0", "Intermediate pathlen 0", ca_v3_pathlen0);
    let inter2 = inter0.sub_ca("inter2", "Intermediate below pathlen 0", pki::CA_V3);
    let nonca = ca.sub_ca("nonca", "Not a CA", "basicConstraints=CA:FALSE\n");
    let crit = ca.sub_ca(
        "crit",
        "Intermediate with an unknown critical extension",
        &format!("{}1.2.3.4=critical,ASN1:NULL\n", pki::CA_V3),
    );
    let server_eku = ca.sub_ca(
        "servereku",
        "Intermediate for servers only",
        &format!("{}extendedKeyUsage=serverAuth\n", pki::CA_V3),
    );
    // A version 1 "CA" that is not self-signed: OpenSSL takes it for no CA.
    let (v1inter_crt, _) = v1ca.issue("v1inter", "Version 1 intermediate", None, "3650");
    let v1inter = Ca {
        dir: d.to_path_buf(),
        name: "v1inter".into(),
    };
    let v1client = ca.issue("v1client", "v1client", None, "365").0;
    let server_only = client_ext("digitalSignature,keyEncipherment", "serverAuth");
    let cases = vec![
        case(&ca, "seed 003 version 1 client", None, &[], true),
        case(&ca, "version 3 client", Some(CLIENT_V3), &[], true),
        case(
            &ca,
            "serverAuth only, with a version 1 certificate appended",
            Some(&server_only),
            &[&v1client],
            false,
        ),
        case(
            &ca,
            "serverAuth only, with the version 1 CA appended",
            Some(&server_only),
            &[&v1ca.crt()],
            false,
        ),
        case(
            &ca,
            "anyExtendedKeyUsage only",
            Some(&client_ext("digitalSignature", "anyExtendedKeyUsage")),
            &[],
            false,
        ),
        case(
            &ca,
            "keyUsage without digitalSignature",
            Some(&client_ext("keyEncipherment", "clientAuth")),
            &[],
            false,
        ),
        case(
            &ca,
            "unknown critical extension",
            Some(&format!("{CLIENT_V3}1.2.3.4=critical,ASN1:NULL\n")),
            &[],
            false,
        ),
        case(
            &inter0,
            "version 1 client under an intermediate",
            None,
            &[&inter0.crt()],
            true,
        ),
        case(
            &inter2,
            "version 1 client, pathlen 0 exceeded",
            None,
            &[&inter2.crt(), &inter0.crt()],
            false,
        ),
        case(
            &inter2,
            "version 3 client, pathlen 0 exceeded",
            Some(CLIENT_V3),
            &[&inter2.crt(), &inter0.crt()],
            false,
        ),
        case(
            &nonca,
            "version 1 client under an intermediate with CA:FALSE",
            None,
            &[&nonca.crt()],
            false,
        ),
        case(
            &nonca,
            "version 3 client under an intermediate with CA:FALSE",
            Some(CLIENT_V3),
            &[&nonca.crt()],
            false,
        ),
        case(
            &crit,
            "version 1 client under an intermediate with an unknown critical extension",
            None,
            &[&crit.crt()],
            false,
        ),
        case(
            &server_eku,
            "version 1 client under an intermediate for serverAuth only",
            None,
            &[&server_eku.crt()],
            false,
        ),
        case(
            &v1ca,
            "version 1 client of the version 1 CA",
            None,
            &[],
            true,
        ),
        case(
            &v1ca,
            "version 3 client of the version 1 CA",
            Some(CLIENT_V3),
            &[],
            true,
        ),
        case(
            &v1ca,
            "keyUsage without digitalSignature, version 1 CA",
            Some(&client_ext("keyEncipherment", "clientAuth")),
            &[],
            false,
        ),
        case(
            &v1ca,
            "serverAuth only, version 1 CA",
            Some(&server_only),
            &[],
            false,
        ),
        case(
            &v1inter,
            "version 1 client under a version 1 intermediate",
            None,
            &[&v1inter_crt],
            false,
        ),
    ];
    // midge's verifier itself, so that a refusal is not the client's.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        midge::tls::verify::ClientVerifier::new(ders(&cafile), Vec::new(), provider, false)
            .expect("verifier");
    for c in &cases {
        let chain = ders(&c.crt);
        let r = rustls::server::danger::ClientCertVerifier::verify_client_cert(
            verifier.as_ref(),
            &chain[0],
            &chain[1..],
            now(),
        );
        assert_eq!(r.is_ok(), c.accepted, "{}: {r:?}", c.name);
    }
    // The legacy path is for version 1 certificates of the configured
    // PKI, not for any chain with a version 1 certificate in it.
    let legacy = Legacy::new(ders(&cafile), Vec::new(), Purpose::Client);
    for (i, applies) in [(0, true), (1, false), (2, false), (3, false), (15, true)] {
        let chain = ders(&cases[i].crt);
        assert_eq!(
            legacy.applies(&chain[0], &chain[1..]),
            applies,
            "{}",
            cases[i].name
        );
    }
    // Over TLS, midge as Mosquitto.
    let conf = format!(
        "listener 0 127.0.0.1\ncafile {}\ncertfile {d}/mqtt_srv.crt\nkeyfile {d}/mqtt_srv.key\n\
         require_certificate true\nuse_identity_as_username true\n",
        cafile.display(),
        d = d.display()
    );
    let server_ca = ca.crt();
    let seen = common::same_as_mosquitto("client certificate chains", &conf, |b| {
        let seen = cases
            .iter()
            .map(|c| (c.name, client_accepted(b, &server_ca, &c.crt, &c.key)))
            .collect::<Vec<_>>();
        if b.kind == common::broker::BrokerKind::Midge {
            // The reason is logged in words.
            b.wait_for_log(
                "' refused: a certificate of the chain is not for this use",
                TIMEOUT,
            );
            b.wait_for_log("' refused: a CA's path length constraint", TIMEOUT);
        }
        seen
    });
    let expected: Vec<_> = cases.iter().map(|c| (c.name, c.accepted)).collect();
    assert_eq!(seen, expected, "Mosquitto (left) judged otherwise");
}

/// Of two CRLs from the same CA, the newer counts, whichever comes first
/// in `crlfile`: for version 1 clients (the legacy path) and version 3
/// ones (webpki), in midge as in Mosquitto.
#[test]
fn the_newest_of_several_crls_counts() {
    let dir = TempDir::new("tls-two-crls");
    let d = dir.path();
    let ca = pki::seed003(d, "localhost");
    std::fs::set_permissions(
        d.join("mqtt_srv.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let (v1, v1_key) = ca.issue("v1", "v1", None, "365");
    let (v3, v3_key) = ca.issue("v3", "v3", Some(CLIENT_V3), "365");
    let (fine, fine_key) = ca.issue("fine", "fine", None, "365");
    let (older, newer, later) = (
        pki::utc_in_days(-2),
        pki::utc_in_days(-1),
        pki::utc_in_days(30),
    );
    let old_none = ca.crl("old-none", &[], &older, &later, "01");
    let new_both = ca.crl("new-both", &[&v1, &v3], &newer, &later, "02");
    let old_both = ca.crl("old-both", &[&v1, &v3], &older, &later, "01");
    let new_none = ca.crl("new-none", &[], &newer, &later, "02");
    for (file, parts, revoked) in [
        ("newer-revokes.crl", [&old_none, &new_both], true),
        ("newer-lifts.crl", [&old_both, &new_none], false),
    ] {
        let crlfile = pki::concat(&d.join(file), &[parts[0], parts[1]]);
        let crls: Vec<_> = CertificateRevocationListDer::pem_file_iter(&crlfile)
            .expect("CRL file")
            .collect::<Result<_, _>>()
            .expect("CRLs");
        let l = Legacy::new(vec![der(&ca.crt())], crls, Purpose::Client);
        let want = if revoked {
            Err(Invalid::Revoked)
        } else {
            Ok(())
        };
        assert_eq!(l.verify(&der(&v1), &[], None, now()), want, "{file}");
        let conf = format!(
            "listener 0 127.0.0.1\n{}require_certificate true\ncrlfile {}\n",
            pki::tls_lines(d),
            crlfile.display()
        );
        let seen = common::same_as_mosquitto(file, &conf, |b| {
            [(&v1, &v1_key), (&v3, &v3_key), (&fine, &fine_key)]
                .map(|(c, k)| client_accepted(b, &ca.crt(), c, k))
        });
        assert_eq!(seen, [!revoked, !revoked, true], "{file}: Mosquitto");
    }
}

/// The server certificate, as midge_pub (and so bridges) check it: what
/// mosquitto_pub refuses for purpose or chain, midge_pub refuses too.
#[test]
fn server_chains_are_judged_as_mosquitto_pub_judges_them() {
    let dir = TempDir::new("tls-server-chains");
    let d = dir.path();
    let ca = pki::seed003(d, "localhost");
    let nonca = ca.sub_ca("nonca", "Not a CA", "basicConstraints=CA:FALSE\n");
    let san = "subjectAltName=DNS:localhost\n";
    let server = |ca: &Ca, name: &str, ext: Option<String>, chain: &[&Path]| {
        let (crt, key) = ca.issue(name, "localhost", ext.as_deref(), "365");
        let mut files = vec![crt.as_path()];
        files.extend(chain);
        (
            pki::concat(&d.join(format!("{name}.chain.pem")), &files),
            key,
        )
    };
    let cases = [
        (
            "seed 003 version 1 server",
            server(&ca, "v1srv", None, &[]),
            true,
        ),
        (
            "clientAuth only",
            server(
                &ca,
                "clientonly",
                Some(format!("{san}extendedKeyUsage=clientAuth\n")),
                &[],
            ),
            false,
        ),
        (
            "keyUsage cRLSign only",
            server(
                &ca,
                "crlsign",
                Some(format!("{san}keyUsage=cRLSign\n")),
                &[],
            ),
            false,
        ),
        (
            "version 1 server under an intermediate with CA:FALSE",
            server(&nonca, "undernonca", None, &[&nonca.crt()]),
            false,
        ),
    ];
    let cafile = ca.crt();
    for (name, (crt, key), accepted) in &cases {
        let b = Broker::start(&format!(
            "listener 0 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
            cafile.display(),
            crt.display(),
            key.display()
        ));
        let run = |tool: &str| {
            let mut c = match tool {
                "midge_pub" => common::broker::tool_command("midge_pub"),
                _ => std::process::Command::new(common::tools::MOSQUITTO_PUB),
            };
            c.args(["-h", "localhost", "-p", &b.port.to_string(), "--cafile"])
                .arg(&cafile)
                .args(["-t", "t", "-m", "m"]);
            common::tools::run(c, tool, common::tools::TOOL_TIMEOUT)
                .status
                .success()
        };
        let (midge, mosquitto) = (run("midge_pub"), run("mosquitto_pub"));
        assert_eq!(midge, mosquitto, "{name}: midge_pub (left), mosquitto_pub");
        assert_eq!(mosquitto, *accepted, "{name}: mosquitto_pub");
    }
}
