//! Test certificates made the way users make them: the openssl commands of
//! the CA walkthrough in seed 003 (a `genrsa -des3` CA key, `req -new
//! -x509`, an unencrypted server key, a CSR signed with `x509 -req -CA
//! ... -CAcreateserial`), with the pass phrase given on the command line.
//! Those certificates are X.509 version 1, with no subjectAltName.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The CA key's pass phrase.
pub const PASS: &str = "pass:midge-test";

/// The subject fields of the walkthrough, without the CN.
pub const SUBJECT: &str = "/C=JP/ST=Tokyo/L=Tokyo/O=FicusOnline/OU=Development";

/// Runs `openssl ARGS` in `dir`; panics with its output on failure.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA made by `new_ca`, and what it signs.
pub struct Ca {
    pub dir: PathBuf,
    /// File name stem: `NAME.key` (encrypted) and `NAME.crt`.
    pub name: String,
}

impl Ca {
    /// `openssl genrsa -des3` and `openssl req -new -x509`, as in seed 003.
    pub fn new(dir: &Path, name: &str, cn: &str) -> Ca {
        Ca::make(dir, name, cn, false)
    }

    /// A version 1 CA, as `openssl x509 -req -signkey` (or an older
    /// openssl's `req -x509`) makes it: self-signed, with no extensions.
    pub fn new_v1(dir: &Path, name: &str, cn: &str) -> Ca {
        Ca::make(dir, name, cn, true)
    }

    fn make(dir: &Path, name: &str, cn: &str, v1: bool) -> Ca {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        openssl(
            dir,
            &["genrsa", "-des3", "-passout", PASS, "-out", &key, "2048"],
        );
        let subj = format!("{SUBJECT}/CN={cn}/emailAddress=ca@example.com");
        let key_args = ["-key", &key, "-passin", PASS, "-subj", &subj];
        if v1 {
            let mut req = vec!["req", "-new", "-out", &csr];
            req.extend(key_args);
            openssl(dir, &req);
            openssl(
                dir,
                &[
                    "x509", "-req", "-in", &csr, "-signkey", &key, "-passin", PASS, "-days",
                    "3650", "-out", &crt,
                ],
            );
        } else {
            let mut req = vec!["req", "-new", "-x509", "-days", "3650", "-out", &crt];
            req.extend(key_args);
            openssl(dir, &req);
        }
        Ca {
            dir: dir.to_path_buf(),
            name: name.into(),
        }
    }

    /// A CA certificate signed by this CA with the extensions `ext`, as
    /// the CA that signs what [`Ca::issue`] issues under `name`.
    pub fn sub_ca(&self, name: &str, cn: &str, ext: &str) -> Ca {
        self.issue(name, cn, Some(ext), "3650");
        Ca {
            dir: self.dir.clone(),
            name: name.into(),
        }
    }

    /// A CRL of this CA listing `revoked`, with the given thisUpdate and
    /// nextUpdate (`YYYYMMDDHHMMSSZ`) and CRL number (hex), from a
    /// database of its own (`openssl ca -revoke`, `-gencrl`).
    pub fn crl(
        &self,
        out: &str,
        revoked: &[&Path],
        this_update: &str,
        next_update: &str,
        number: &str,
    ) -> PathBuf {
        let dir = &self.dir;
        let db = format!("{out}.db");
        let cnf = format!("{out}.cnf");
        std::fs::write(
            dir.join(&cnf),
            format!(
                "[ca]\ndefault_ca = d\n[d]\ndatabase = {db}\ncrlnumber = {db}.number\n\
                 default_md = sha256\ndefault_crl_days = 30\n"
            ),
        )
        .expect("write ca config");
        std::fs::write(dir.join(&db), "").expect("index");
        std::fs::write(dir.join(format!("{db}.number")), format!("{number}\n")).expect("number");
        let (ca_crt, ca_key) = (format!("{}.crt", self.name), format!("{}.key", self.name));
        let base = [
            "-config", &cnf, "-keyfile", &ca_key, "-cert", &ca_crt, "-passin", PASS,
        ];
        for crt in revoked {
            let mut args = vec!["ca"];
            args.extend(base);
            args.extend(["-revoke", crt.to_str().expect("utf-8 path")]);
            openssl(dir, &args);
        }
        let file = format!("{out}.crl");
        let mut args = vec!["ca"];
        args.extend(base);
        args.extend([
            "-gencrl",
            "-crl_lastupdate",
            this_update,
            "-crl_nextupdate",
            next_update,
            "-out",
            &file,
        ]);
        openssl(dir, &args);
        dir.join(file)
    }

    pub fn crt(&self) -> PathBuf {
        self.dir.join(format!("{}.crt", self.name))
    }

    /// A key and a certificate signed by this CA, as seed 003 makes the
    /// server's: `genrsa`, `req -new`, `x509 -req -CA -CAcreateserial`.
    /// `ext`: extensions for a version 3 certificate (`-extfile`); None
    /// makes version 1, as the walkthrough does. Returns (crt, key).
    pub fn issue(&self, name: &str, cn: &str, ext: Option<&str>, days: &str) -> (PathBuf, PathBuf) {
        let dir = &self.dir;
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        openssl(dir, &["genrsa", "-out", &key, "2048"]);
        let subj = format!("{SUBJECT}/CN={cn}/emailAddress={name}@example.com");
        openssl(
            dir,
            &["req", "-new", "-out", &csr, "-key", &key, "-subj", &subj],
        );
        let ca_crt = format!("{}.crt", self.name);
        let ca_key = format!("{}.key", self.name);
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-passin",
            PASS,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            days,
        ];
        let extfile = format!("{name}.ext");
        if let Some(e) = ext {
            std::fs::write(dir.join(&extfile), e).expect("write extfile");
            args.extend(["-extfile", &extfile]);
        }
        openssl(dir, &args);
        (dir.join(crt), dir.join(key))
    }

    /// Revokes `crt` and writes the CA's CRL (`openssl ca -gencrl`).
    pub fn revoke(&self, crt: &Path) -> PathBuf {
        let dir = &self.dir;
        let cnf = format!(
            "[ca]\ndefault_ca = d\n[d]\ndatabase = {n}.index\ncrlnumber = {n}.crlnumber\n\
             default_md = sha256\ndefault_crl_days = 30\n",
            n = self.name
        );
        std::fs::write(dir.join("ca.cnf"), cnf).expect("write ca.cnf");
        let index = dir.join(format!("{}.index", self.name));
        if !index.exists() {
            std::fs::write(&index, "").expect("index");
            std::fs::write(dir.join(format!("{}.crlnumber", self.name)), "01\n")
                .expect("crlnumber");
        }
        let (ca_crt, ca_key) = (format!("{}.crt", self.name), format!("{}.key", self.name));
        let crt = crt.to_str().expect("utf-8 path");
        let base = [
            "-config", "ca.cnf", "-keyfile", &ca_key, "-cert", &ca_crt, "-passin", PASS,
        ];
        let mut revoke = vec!["ca"];
        revoke.extend(base);
        revoke.extend(["-revoke", crt]);
        openssl(dir, &revoke);
        let crl = format!("{}.crl", self.name);
        let mut gen_crl = vec!["ca"];
        gen_crl.extend(base);
        gen_crl.extend(["-gencrl", "-out", &crl]);
        openssl(dir, &gen_crl);
        dir.join(crl)
    }
}

/// Extensions of an intermediate CA certificate.
pub const CA_V3: &str =
    "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n";

/// The files' contents one after the other, written to `out` (a
/// certificate with its chain, or several CAs or CRLs in one file).
pub fn concat(out: &Path, files: &[&Path]) -> PathBuf {
    let mut all = Vec::new();
    for f in files {
        all.extend(std::fs::read(f).expect("read PEM file"));
    }
    std::fs::write(out, all).expect("write PEM file");
    out.to_path_buf()
}

/// The UTC time `days` days from now (negative: ago) as openssl's
/// `-crl_lastupdate` takes it.
pub fn utc_in_days(days: i64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("{days} days"), "+%Y%m%d%H%M%SZ"])
        .output()
        .expect("run date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Extensions of a version 3 client certificate.
pub const CLIENT_V3: &str = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n";

/// The seed 003 files for a server named `host`: `mqtt_ca.crt` (CA
/// "FicusOnline CA"), `mqtt_srv.crt`, `mqtt_srv.key`. Returns the CA.
pub fn seed003(dir: &Path, host: &str) -> Ca {
    let ca = Ca::new(dir, "mqtt_ca", "FicusOnline CA");
    ca.issue("mqtt_srv", host, None, "3650");
    ca
}

/// The TLS lines of a listener using the seed 003 files in `dir`.
pub fn tls_lines(dir: &Path) -> String {
    format!(
        "cafile {d}/mqtt_ca.crt\ncertfile {d}/mqtt_srv.crt\nkeyfile {d}/mqtt_srv.key\n",
        d = dir.display()
    )
}
