//! `midge_cert`: a CA, server certificates and client certificates in one
//! command each, as PEM files that both midge and Mosquitto read.
//!
//! Keys are ECDSA P-256; certificates are X.509 version 3 with
//! subjectAltName, so every TLS library verifies them as they are.
//!
//! ```text
//! midge_cert ca [--cn NAME]
//! midge_cert server --host NAME|IP [--host ...] [--name FILE]
//! midge_cert client --cn NAME
//! ```
//!
//! Files go to `--dir` (default: the current directory): `ca.crt` and
//! `ca.key`, `server.crt` and `server.key`, `NAME.crt` and `NAME.key`.
//! Keys are written readable by their owner only; nothing is overwritten
//! without `--force`.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

const USAGE: &str = "\
Usage: midge_cert ca [--cn NAME] [--days N] [--dir DIR] [--force]
       midge_cert server --host NAME|IP [--host NAME|IP ...] [--name FILE]
                         [--days N] [--dir DIR] [--force]
       midge_cert client --cn NAME [--days N] [--dir DIR] [--force]

 ca     : make a certificate authority: DIR/ca.crt and DIR/ca.key.
          Give ca.crt to clients (mosquitto_sub --cafile) and to the
          broker (cafile); keep ca.key private.
 server : make a server certificate signed by DIR/ca.crt for every --host
          (host names and IP addresses clients connect to):
          DIR/server.crt and DIR/server.key (certfile and keyfile).
 client : make a client certificate signed by DIR/ca.crt, with Common Name
          NAME (the user name under use_identity_as_username):
          DIR/NAME.crt and DIR/NAME.key (mosquitto_sub --cert/--key).

 --cn NAME   : the Common Name (ca: default \"midge CA\").
 --days N    : validity in days (default: ca 3650, others 825).
 --dir DIR   : where the files are (default: the current directory).
 --force     : overwrite existing files.
 --host H    : a host name or IP address of the server (repeatable).
 --name FILE : the server's file names, FILE.crt and FILE.key (default server).
 --help      : this help.
";

/// Entry point of the `midge_cert` tool.
pub fn main(args: Vec<OsString>) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("Error: {msg}");
            ExitCode::FAILURE
        }
    }
}

struct Opts {
    dir: PathBuf,
    days: Option<i64>,
    force: bool,
    cn: Option<String>,
    hosts: Vec<String>,
    name: String,
}

fn run(args: Vec<OsString>) -> Result<(), String> {
    let mut opts = getopts::Options::new();
    opts.optopt("", "cn", "Common Name", "NAME");
    opts.optopt("", "days", "validity in days", "N");
    opts.optopt("", "dir", "directory of the files", "DIR");
    opts.optflag("", "force", "overwrite existing files");
    opts.optmulti("", "host", "host name or IP address", "H");
    opts.optopt("", "name", "file name of the server certificate", "FILE");
    opts.optflag("h", "help", "help");
    let m = opts.parse(&args).map_err(|e| format!("{e}\n\n{USAGE}"))?;
    if m.opt_present("h") {
        print!("{USAGE}");
        return Ok(());
    }
    let days = match m.opt_str("days") {
        None => None,
        Some(d) => match d.parse::<i64>() {
            Ok(n) if (1..=36500).contains(&n) => Some(n),
            _ => {
                return Err(format!(
                    "--days '{d}' is not a number of days from 1 to 36500"
                ));
            }
        },
    };
    let o = Opts {
        dir: PathBuf::from(m.opt_str("dir").unwrap_or_else(|| ".".into())),
        days,
        force: m.opt_present("force"),
        cn: m.opt_str("cn"),
        hosts: m.opt_strs("host"),
        name: m.opt_str("name").unwrap_or_else(|| "server".into()),
    };
    match m.free.first().map(String::as_str) {
        Some("ca") => ca(&o),
        Some("server") => server(&o),
        Some("client") => client(&o),
        Some(other) => Err(format!("unknown command '{other}'\n\n{USAGE}")),
        None => Err(format!("no command given\n\n{USAGE}")),
    }
}

fn rc(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |e| format!("cannot make the {what}: {e}")
}

/// Validity from an hour ago (clocks differ) for `days` days.
fn validity(p: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(days);
}

fn ca(o: &Opts) -> Result<(), String> {
    let cn = o.cn.clone().unwrap_or_else(|| "midge CA".into());
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rc("CA"))?;
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn.as_str());
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p, o.days.unwrap_or(3650));
    let key = KeyPair::generate().map_err(rc("CA key"))?;
    let cert = p.self_signed(&key).map_err(rc("CA certificate"))?;
    write_pair(o, "ca", &cert.pem(), &key.serialize_pem())?;
    println!("CA '{cn}': {}", o.dir.join("ca.crt").display());
    Ok(())
}

/// The CA of `--dir`, to sign with.
fn load_ca(o: &Opts) -> Result<Issuer<'static, KeyPair>, String> {
    let read = |name: &str| {
        let p = o.dir.join(name);
        std::fs::read_to_string(&p).map_err(|e| {
            format!(
                "cannot read {}: {e} (make the CA first: midge_cert ca --dir {})",
                p.display(),
                o.dir.display()
            )
        })
    };
    let key = KeyPair::from_pem(&read("ca.key")?).map_err(|e| {
        format!(
            "{}: not a key midge_cert can use ({e}); a pass phrase is not supported",
            o.dir.join("ca.key").display()
        )
    })?;
    Issuer::from_ca_cert_pem(&read("ca.crt")?, key)
        .map_err(|e| format!("{}: {e}", o.dir.join("ca.crt").display()))
}

fn leaf(
    o: &Opts,
    sans: Vec<String>,
    cn: &str,
    usage: ExtendedKeyUsagePurpose,
    file: &str,
) -> Result<(), String> {
    let issuer = load_ca(o)?;
    let mut p = CertificateParams::new(sans).map_err(rc("certificate"))?;
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![usage];
    p.use_authority_key_identifier_extension = true;
    validity(&mut p, o.days.unwrap_or(825));
    let key = KeyPair::generate().map_err(rc("key"))?;
    let cert = p.signed_by(&key, &issuer).map_err(rc("certificate"))?;
    write_pair(o, file, &cert.pem(), &key.serialize_pem())
}

fn server(o: &Opts) -> Result<(), String> {
    let Some(first) = o.hosts.first() else {
        return Err("server: give at least one --host (a host name or IP address)".into());
    };
    leaf(
        o,
        o.hosts.clone(),
        first,
        ExtendedKeyUsagePurpose::ServerAuth,
        &o.name,
    )?;
    println!(
        "server certificate for {}: {}",
        o.hosts.join(", "),
        o.dir.join(format!("{}.crt", o.name)).display()
    );
    Ok(())
}

fn client(o: &Opts) -> Result<(), String> {
    let Some(cn) = &o.cn else {
        return Err("client: give the client's name with --cn".into());
    };
    if cn.is_empty() || cn.contains(['/', '\0']) || cn.starts_with('.') {
        return Err(format!("client: '{cn}' cannot be used as a file name"));
    }
    leaf(o, Vec::new(), cn, ExtendedKeyUsagePurpose::ClientAuth, cn)?;
    println!(
        "client certificate for '{cn}': {}",
        o.dir.join(format!("{cn}.crt")).display()
    );
    Ok(())
}

/// Writes NAME.crt (0644) and NAME.key (0600) into the directory.
fn write_pair(o: &Opts, name: &str, crt: &str, key: &str) -> Result<(), String> {
    let crt_path = o.dir.join(format!("{name}.crt"));
    let key_path = o.dir.join(format!("{name}.key"));
    if !o.force {
        for p in [&crt_path, &key_path] {
            if p.exists() {
                return Err(format!(
                    "{} exists (use --force to replace it)",
                    p.display()
                ));
            }
        }
    }
    write(&key_path, key, 0o600)?;
    write(&crt_path, crt, 0o644)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
