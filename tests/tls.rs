//! TLS listeners, with certificates made the way the seeds' users make
//! them (tests/common/pki.rs): Debian's mosquitto_pub/mosquitto_sub and
//! Python paho-mqtt against midge over real loopback sockets.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::pki::{self, CLIENT_V3, Ca};
use common::tools::{self, Finished, MOSQUITTO_PUB, MOSQUITTO_SUB, Proc, TOOL_TIMEOUT, ok};
use common::*;

fn on(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A mosquitto client command for `host:port` with TLS `args`.
fn client(tool: &str, host: &str, port: u16, args: &[&str]) -> Command {
    tools::require(tool);
    let mut c = Command::new(tool);
    c.args(["-h", host, "-p", &port.to_string()]).args(args);
    c
}

fn publish(host: &str, port: u16, args: &[&str]) -> Finished {
    tools::run(
        client(MOSQUITTO_PUB, host, port, args),
        "mosquitto_pub",
        TOOL_TIMEOUT,
    )
}

/// `mosquitto_sub -C 1` for one message, running until it exits.
fn subscribe_one(host: &str, port: u16, args: &[&str]) -> Proc {
    let mut a = vec!["-C", "1", "-W", "20"];
    a.extend(args);
    Proc::spawn(
        client(MOSQUITTO_SUB, host, port, &a),
        "mosquitto_sub",
        false,
    )
}

/// The seed 003 listener on an ephemeral port, with the PKI in `dir`.
fn seed003_broker(dir: &TempDir, extra: &str) -> Broker {
    pki::seed003(dir.path(), "localhost");
    Broker::start(&format!(
        "listener 0 127.0.0.1\n{}{extra}",
        pki::tls_lines(dir.path())
    ))
}

#[test]
fn seed003_walkthrough_works_with_the_mosquitto_clients() {
    let dir = TempDir::new("tls-seed003");
    let b = seed003_broker(&dir, "");
    b.wait_for_log("the certificate is for CN=localhost", TIMEOUT);
    let ca = dir.path().join("mqtt_ca.crt");
    let ca = ca.to_str().unwrap();
    // A retained message over TLS, read back over TLS.
    ok(&publish(
        "localhost",
        b.port,
        &[
            "--cafile", ca, "-t", "seed/003", "-m", "hello", "-r", "-q", "1",
        ],
    ));
    let mut sub = subscribe_one("localhost", b.port, &["--cafile", ca, "-t", "seed/003"]);
    sub.wait_line("hello", TIMEOUT);
    sub.wait_exit(TIMEOUT);
    // 127.0.0.1 is not the certificate's name: refused, unless --insecure.
    let f = publish("127.0.0.1", b.port, &["--cafile", ca, "-t", "x", "-m", "y"]);
    assert!(!f.status.success(), "a name mismatch was accepted");
    ok(&publish(
        "127.0.0.1",
        b.port,
        &[
            "--cafile",
            ca,
            "--insecure",
            "-t",
            "seed/003",
            "-m",
            "insecure",
            "-r",
        ],
    ));
    let mut sub = subscribe_one("localhost", b.port, &["--cafile", ca, "-t", "seed/003"]);
    sub.wait_line("insecure", TIMEOUT);
    sub.wait_exit(TIMEOUT);
}

/// Seed 004's layout: a plain listener, then a TLS one. Returns the
/// broker and both ports.
fn seed004_broker(dir: &TempDir) -> (Broker, u16, u16) {
    pki::seed003(dir.path(), "localhost");
    let b = Broker::start(&format!(
        "listener 0 127.0.0.1\nlistener 0 127.0.0.1\n{}allow_anonymous true\n",
        pki::tls_lines(dir.path())
    ));
    wait_until("two listeners", TIMEOUT, || b.ipv4_ports().len() >= 2);
    let (plain, tls) = (b.ipv4_ports()[0], b.ipv4_ports()[1]);
    (b, plain, tls)
}

#[test]
fn seed004_plain_and_tls_listeners_work_at_once() {
    let dir = TempDir::new("tls-seed004");
    let (b, plain, tls) = seed004_broker(&dir);
    let ca = dir.path().join("mqtt_ca.crt");
    let ca = ca.to_str().unwrap();
    // A raw plain subscriber sees what a TLS client publishes, and back.
    let mut raw = RawClient::connect(on(plain), "plain-sub");
    raw.subscribe(1, &[("both/#", 0)]);
    ok(&publish(
        "localhost",
        tls,
        &["--cafile", ca, "-t", "both/tls", "-m", "from tls"],
    ));
    raw.expect_publish_eq("both/tls", b"from tls", 0, false);
    let sub = Proc::spawn(
        client(
            MOSQUITTO_SUB,
            "localhost",
            tls,
            &["--cafile", ca, "-v", "-t", "both/plain", "-t", "both/probe"],
        ),
        "mosquitto_sub",
        false,
    );
    tools::wait_until_subscribed(&b, &sub, "both/probe");
    raw.publish("both/plain", b"from plain", 0, false, 0);
    sub.wait_line("both/plain from plain", TIMEOUT);
}

/// A server certificate signed by an intermediate CA, with `certfile`
/// holding only the server's certificate and `cafile` the root and the
/// intermediate (a two-level CA as users build them): the broker sends
/// the intermediate too, as Mosquitto does (OpenSSL completes the chain
/// from `cafile`), so a client that trusts only the root connects.
#[test]
fn a_server_signed_by_an_intermediate_ca_sends_the_intermediate() {
    let dir = TempDir::new("tls-intermediate");
    let d = dir.path();
    let root = Ca::new(d, "root", "Root CA");
    let ca_ext = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
                  subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";
    root.issue("inter", "Intermediate CA", Some(ca_ext), "3650");
    let inter = Ca {
        dir: d.to_path_buf(),
        name: "inter".into(),
    };
    let srv_ext = "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost\n\
                   subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";
    let (crt, key) = inter.issue("server", "localhost", Some(srv_ext), "3650");
    let mut both = std::fs::read(root.crt()).unwrap();
    both.extend(std::fs::read(inter.crt()).unwrap());
    let cafile = d.join("cas.pem");
    std::fs::write(&cafile, both).unwrap();
    let b = Broker::start(&format!(
        "listener 0 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nallow_anonymous true\n",
        cafile.display(),
        crt.display(),
        key.display()
    ));
    let root_crt = root.crt();
    let root_crt = root_crt.to_str().unwrap();
    ok(&publish(
        "localhost",
        b.port,
        &[
            "--cafile", root_crt, "-t", "chain/1", "-m", "verified", "-r",
        ],
    ));
    let mut sub = subscribe_one(
        "localhost",
        b.port,
        &["--cafile", root_crt, "-t", "chain/#"],
    );
    sub.wait_line("verified", TIMEOUT);
    sub.wait_exit(TIMEOUT);
    // A client that trusts another CA is still refused.
    let other = Ca::new(d, "other", "Other CA");
    let other_crt = other.crt();
    let f = publish(
        "localhost",
        b.port,
        &[
            "--cafile",
            other_crt.to_str().unwrap(),
            "-t",
            "chain/2",
            "-m",
            "x",
        ],
    );
    assert!(
        !f.status.success(),
        "a client trusting another CA connected"
    );
}

#[test]
fn paho_connects_with_tls_set() {
    let dir = TempDir::new("tls-paho");
    let b = seed003_broker(&dir, "");
    let ca = dir.path().join("mqtt_ca.crt");
    let out = tools::run_py(
        "paho_tls.py",
        &[
            &b.port.to_string(),
            "localhost",
            ca.to_str().unwrap(),
            "",
            "",
        ],
    );
    assert!(out.contains("MSG paho/tls q1 r0 hello"), "{out}");
}

#[test]
fn wrong_protocol_on_either_port_closes_that_connection_with_one_line() {
    let dir = TempDir::new("tls-mixed");
    let (b, plain, tls) = seed004_broker(&dir);
    // A plain MQTT client on the TLS port.
    let mut c = RawClient::open(on(tls));
    c.send(&common::packets::connect("plain-on-tls"));
    c.expect_closed();
    b.wait_for_log(
        "does not speak TLS (a plain MQTT client on a TLS port?)",
        TIMEOUT,
    );
    // A TLS client on the plain port.
    let ca = dir.path().join("mqtt_ca.crt");
    let f = publish(
        "localhost",
        plain,
        &["--cafile", ca.to_str().unwrap(), "-t", "x", "-m", "y"],
    );
    assert!(!f.status.success());
    b.wait_for_log(
        &format!("sent a TLS handshake to port {plain}, which is not a TLS listener"),
        TIMEOUT,
    );
    // Everyone else is unaffected.
    let mut ok_client = RawClient::connect(on(plain), "fine");
    ok_client.subscribe(1, &[("a", 0)]);
    assert_eq!(b.count_log("does not speak TLS"), 1);
}

#[test]
fn a_handshake_that_does_not_finish_is_closed_at_connect_timeout() {
    let dir = TempDir::new("tls-slow");
    let b = seed003_broker(&dir, "connect_timeout 1\n");
    let mut c = RawClient::open(b.addr());
    c.expect_closed_within(scaled(TIMEOUT));
    b.wait_for_log("TLS handshake not finished in time", TIMEOUT);
}

/// A CA, the broker's seed-made files, and client certificates.
fn client_cert_broker(dir: &TempDir, extra: &str) -> (Broker, Ca) {
    let ca = pki::seed003(dir.path(), "localhost");
    let b = Broker::start(&format!(
        "listener 0 127.0.0.1\n{}require_certificate true\n{extra}",
        pki::tls_lines(dir.path())
    ));
    (b, ca)
}

fn with_cert(crt: &Path, key: &Path) -> Vec<String> {
    vec![
        "--cert".into(),
        crt.display().to_string(),
        "--key".into(),
        key.display().to_string(),
    ]
}

#[test]
fn require_certificate_accepts_the_cas_clients_only() {
    let dir = TempDir::new("tls-clients");
    let (b, ca) = client_cert_broker(&dir, "");
    let cafile = ca.crt().display().to_string();
    let pub_with = |extra: &[String]| {
        let mut args: Vec<&str> = vec!["--cafile", &cafile, "-t", "c", "-m", "m"];
        args.extend(extra.iter().map(String::as_str));
        publish("localhost", b.port, &args)
    };
    let (crt, key) = ca.issue("sensor1", "sensor1", Some(CLIENT_V3), "365");
    ok(&pub_with(&with_cert(&crt, &key)));
    // No certificate.
    assert!(!pub_with(&[]).status.success());
    // A certificate from another CA.
    let other_dir = TempDir::new("tls-other-ca");
    let other = Ca::new(other_dir.path(), "other", "Other CA");
    let (crt2, key2) = other.issue("intruder", "intruder", Some(CLIENT_V3), "365");
    assert!(!pub_with(&with_cert(&crt2, &key2)).status.success());
    b.wait_for_log("TLS handshake failed", TIMEOUT);
}

#[test]
fn crlfile_refuses_a_revoked_client() {
    let dir = TempDir::new("tls-crl");
    let ca = pki::seed003(dir.path(), "localhost");
    let (good_crt, good_key) = ca.issue("good", "good", Some(CLIENT_V3), "365");
    let (bad_crt, bad_key) = ca.issue("bad", "bad", Some(CLIENT_V3), "365");
    let crl = ca.revoke(&bad_crt);
    let b = Broker::start(&format!(
        "listener 0 127.0.0.1\n{}require_certificate true\ncrlfile {}\n",
        pki::tls_lines(dir.path()),
        crl.display()
    ));
    let cafile = ca.crt().display().to_string();
    let run = |crt: &Path, key: &Path| {
        let mut args: Vec<String> = vec![
            "--cafile".into(),
            cafile.clone(),
            "-t".into(),
            "c".into(),
            "-m".into(),
            "m".into(),
        ];
        args.extend(with_cert(crt, key));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        publish("localhost", b.port, &a)
    };
    ok(&run(&good_crt, &good_key));
    assert!(!run(&bad_crt, &bad_key).status.success());
    b.wait_for_log("TLS handshake failed", TIMEOUT);
}

/// Connects as client id `id` with a certificate for CN=`cn` to a
/// listener with `option true`; returns the broker's log line for it.
fn connect_with_identity(option: &str, cn: &str, id: &str) -> String {
    let dir = TempDir::new("tls-identity");
    let (b, ca) = client_cert_broker(&dir, &format!("{option} true\nallow_anonymous false\n"));
    let (crt, key) = ca.issue(cn, cn, Some(CLIENT_V3), "365");
    let mut args = vec![
        "--cafile".to_string(),
        ca.crt().display().to_string(),
        "-i".into(),
        id.into(),
    ];
    args.extend(["-t", "c", "-m", "m"].map(String::from));
    args.extend(with_cert(&crt, &key));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&publish("localhost", b.port, &a));
    b.wait_for_log(&format!("as {id} (p2, c1, k60, u'"), TIMEOUT)
}

#[test]
fn use_identity_as_username_takes_the_common_name() {
    let line = connect_with_identity("use_identity_as_username", "sensor7", "dev7");
    assert!(line.ends_with("u'sensor7')."), "{line}");
}

#[test]
fn use_subject_as_username_takes_the_whole_subject() {
    let line = connect_with_identity("use_subject_as_username", "sensor8", "dev8");
    assert!(
        line.ends_with(
            "u'emailAddress=sensor8@example.com,CN=sensor8,OU=Development,O=FicusOnline,L=Tokyo,ST=Tokyo,C=JP')."
        ),
        "{line}"
    );
}

#[test]
fn sighup_rereads_the_files_and_keeps_them_when_a_new_one_is_bad() {
    let dir = TempDir::new("tls-hup");
    let b = seed003_broker(&dir, "");
    let ca = dir.path().join("mqtt_ca.crt");
    let ca = ca.to_str().unwrap();
    let srv_key = dir.path().join("mqtt_srv.key");
    // Readable after midge dropped its privileges (to nobody, here).
    let open_to_all = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap()
    };
    open_to_all(&srv_key);
    let good = std::fs::read(&srv_key).unwrap();
    std::fs::write(&srv_key, "not a key\n").unwrap();
    let from = b.log_len();
    b.signal(libc::SIGHUP);
    b.wait_for_log_from(from, "no private key in the file", TIMEOUT);
    b.wait_for_log_from(from, "keeping the previous certificate and key", TIMEOUT);
    ok(&publish(
        "localhost",
        b.port,
        &["--cafile", ca, "-t", "x", "-m", "still"],
    ));
    // A new certificate and key take effect for new connections.
    std::fs::write(&srv_key, good).unwrap();
    let ca2 = Ca::new(dir.path(), "mqtt_ca", "FicusOnline CA 2");
    ca2.issue("mqtt_srv", "localhost", None, "3650");
    open_to_all(&srv_key);
    let from = b.log_len();
    b.signal(libc::SIGHUP);
    b.wait_for_log_from(from, "the certificate is for CN=localhost", TIMEOUT);
    ok(&publish(
        "localhost",
        b.port,
        &["--cafile", ca, "-t", "x", "-m", "new"],
    ));
}

#[test]
fn use_identity_as_username_feeds_the_acl() {
    let dir = TempDir::new("tls-identity-acl");
    let acl = dir.write("acl", "user sensor9\ntopic readwrite sensors/9/#\n");
    let (b, ca) = client_cert_broker(
        &dir,
        &format!(
            "use_identity_as_username true\nallow_anonymous false\nacl_file {}\n",
            acl.display()
        ),
    );
    let (crt, key) = ca.issue("sensor9", "sensor9", Some(CLIENT_V3), "365");
    let mut base = vec!["--cafile".to_string(), ca.crt().display().to_string()];
    base.extend(with_cert(&crt, &key));
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a = base.clone();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    // The certificate's CN is the user of the ACL: its own topics only.
    for (topic, msg) in [("other/t", "denied"), ("sensors/9/t", "granted")] {
        let a = args(&["-t", topic, "-m", msg, "-r", "-q", "1"]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        ok(&publish("localhost", b.port, &a));
    }
    let a = args(&["-t", "#", "-v", "-C", "2", "-W", "3"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let f = tools::run(
        client(MOSQUITTO_SUB, "localhost", b.port, &a),
        "mosquitto_sub",
        TOOL_TIMEOUT,
    );
    assert_eq!(f.stdout, "sensors/9/t granted", "{}", f.stderr);
    assert_eq!(f.status.code(), Some(27), "timed out after one message");
}

/// A client certificate of `ca` valid from `start` to `end` (openssl's
/// `YYYYMMDDHHMMSSZ`), made with `openssl ca -startdate -enddate`.
fn issue_dated(ca: &Ca, dir: &Path, name: &str, start: &str, end: &str) -> (PathBuf, PathBuf) {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let crt = format!("{name}.crt");
    pki::openssl(dir, &["genrsa", "-out", &key, "2048"]);
    pki::openssl(
        dir,
        &[
            "req",
            "-new",
            "-out",
            &csr,
            "-key",
            &key,
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    let cnf = format!("{name}.cnf");
    std::fs::write(
        dir.join(&cnf),
        format!(
            "[ca]\ndefault_ca = d\n[d]\ndatabase = {name}.index\nserial = {name}.serial\n\
             new_certs_dir = .\ndefault_md = sha256\npolicy = p\nunique_subject = no\n\
             [p]\ncommonName = supplied\n[ext]\n{CLIENT_V3}"
        ),
    )
    .expect("write ca config");
    std::fs::write(dir.join(format!("{name}.index")), "").expect("index");
    std::fs::write(dir.join(format!("{name}.serial")), "1000\n").expect("serial");
    let ca_crt = ca.crt().display().to_string();
    let ca_key = ca_crt.replace(".crt", ".key");
    pki::openssl(
        dir,
        &[
            "ca",
            "-batch",
            "-config",
            &cnf,
            "-cert",
            &ca_crt,
            "-keyfile",
            &ca_key,
            "-passin",
            pki::PASS,
            "-in",
            &csr,
            "-out",
            &crt,
            "-startdate",
            start,
            "-enddate",
            end,
            "-extensions",
            "ext",
            "-notext",
        ],
    );
    (dir.join(crt), dir.join(key))
}

/// `disable_client_cert_date_checks` (Mosquitto 2.1): a client whose
/// certificate has expired is refused by default and accepted with the
/// option; a certificate of another CA is refused either way. The log
/// names the TLS version and cipher of each client (Mosquitto 2.1).
#[test]
fn disable_client_cert_date_checks_accepts_an_expired_client_only() {
    let dir = TempDir::new("tls-dates");
    let d = dir.path();
    let ca = pki::seed003(d, "localhost");
    let (expired, expired_key) = issue_dated(
        &ca,
        d,
        "expired",
        &pki::utc_in_days(-30),
        &pki::utc_in_days(-1),
    );
    let other_dir = TempDir::new("tls-dates-other");
    let other = Ca::new(other_dir.path(), "other", "Other CA");
    let (stranger, stranger_key) = other.issue("stranger", "stranger", Some(CLIENT_V3), "365");
    let cafile = ca.crt().display().to_string();
    let pub_with = |b: &Broker, crt: &Path, key: &Path| {
        let mut args: Vec<String> = ["--cafile", &cafile, "-t", "d", "-m", "m"]
            .map(String::from)
            .to_vec();
        args.extend(with_cert(crt, key));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        publish("localhost", b.port, &args)
    };
    let conf = |extra: &str| {
        format!(
            "listener 0 127.0.0.1\n{}require_certificate true\n{extra}",
            pki::tls_lines(d)
        )
    };
    let strict = Broker::start(&conf(""));
    assert!(!pub_with(&strict, &expired, &expired_key).status.success());
    strict.wait_for_log("TLS handshake failed", TIMEOUT);
    let lenient = Broker::start(&conf("disable_client_cert_date_checks true\n"));
    ok(&pub_with(&lenient, &expired, &expired_key));
    assert!(
        !pub_with(&lenient, &stranger, &stranger_key)
            .status
            .success()
    );
    let line = lenient.wait_for_log(" negotiated TLSv1.", TIMEOUT);
    assert!(line.contains(" cipher TLS_"), "{line}");
}
