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
        let key = format!("{name}.key");
        let crt = format!("{name}.crt");
        openssl(
            dir,
            &["genrsa", "-des3", "-passout", PASS, "-out", &key, "2048"],
        );
        let subj = format!("{SUBJECT}/CN={cn}/emailAddress=ca@example.com");
        openssl(
            dir,
            &[
                "req", "-new", "-x509", "-days", "3650", "-key", &key, "-passin", PASS, "-out",
                &crt, "-subj", &subj,
            ],
        );
        Ca {
            dir: dir.to_path_buf(),
            name: name.into(),
        }
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
