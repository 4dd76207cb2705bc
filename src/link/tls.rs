//! TLS for the client link of midge_pub, midge_sub and the bridge:
//! Mosquitto's client options (`--cafile`,
//! `--capath`, `--cert`, `--key`, `--insecure`, `--tls-version`,
//! `--ciphers`, `--tls-alpn`, `--tls-use-os-certs`, `mqtts://`), on rustls.
//!
//! The broker's certificate is checked by midge's verification module
//! ([`crate::tls::verify::ServerVerifier`]): certificates made the common
//! walkthrough's way (X.509 version 1, a Common Name and no subjectAltName)
//! are accepted as `mosquitto_sub` accepts them. `--insecure` skips only
//! the host-name check.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::config::ciphers;
use crate::tls::verify::ServerVerifier;

/// The TLS options of a command line.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub cafile: Option<PathBuf>,
    pub capath: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub insecure: bool,
    /// `--tls-version`: tlsv1.3 or tlsv1.2 (the lowest accepted).
    pub version: Option<String>,
    pub ciphers: Option<String>,
    pub alpn: Option<String>,
    /// The public roots midge carries, when no CA file or directory is
    /// given (`--tls-use-os-certs`, an mqtts:// URL).
    pub os_certs: bool,
    /// The public roots as well as the CA file or directory
    /// (`bridge_tls_use_os_certs` beside `bridge_cafile`).
    pub os_certs_and_cas: bool,
}

/// A TLS connection to the broker.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// The line Mosquitto's tools print when the TLS options cannot be used.
const BAD_OPTIONS: &str = "Error: Problem setting TLS options, check the options are valid.";

impl Options {
    /// Whether TLS is asked for (libmosquitto: a CA file, a CA directory or
    /// the system's roots).
    pub fn enabled(&self) -> bool {
        self.cafile.is_some() || self.capath.is_some() || self.os_certs
    }

    /// Checks what the whole command line can tell; the error is the
    /// message to print (exit code 1).
    pub fn check(&self) -> Result<(), String> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(
                "Error: Both certfile and keyfile must be provided if one of them is set.\n".into(),
            );
        }
        if !self.enabled() && (self.cert.is_some() || self.insecure || self.version.is_some()) {
            return Err(format!(
                "{BAD_OPTIONS}\nGive --cafile, --capath or --tls-use-os-certs to use TLS.\n"
            ));
        }
        for f in [&self.cafile, &self.cert, &self.key].into_iter().flatten() {
            if !f.is_file() {
                return Err("Error: Problem setting TLS options: File not found.\n".into());
            }
        }
        if let Some(v) = &self.version {
            if !matches!(v.as_str(), "tlsv1.3" | "tlsv1.2" | "tlsv1.1" | "tlsv1") {
                return Err(format!("{BAD_OPTIONS}\n"));
            }
        }
        if let Some(c) = &self.ciphers {
            ciphers::check(c, false).map_err(|e| format!("{BAD_OPTIONS}\n{e}\n"))?;
        }
        Ok(())
    }

    /// The rustls configuration. Errors are whole lines to print.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        let mut anchors = Vec::new();
        if let Some(f) = &self.cafile {
            anchors.extend(certs(f)?);
        }
        if let Some(d) = &self.capath {
            anchors.extend(dir_certs(d)?);
        }
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(c) = &self.ciphers {
            let names = ciphers::check(c, false).map_err(|e| format!("{BAD_OPTIONS}\n{e}"))?;
            let keep = ciphers::suites(&names, false);
            // TLS 1.3 suites are not named by --ciphers, as in OpenSSL.
            provider.cipher_suites.retain(|s| {
                s.version() == &rustls::version::TLS13
                    || keep.iter().any(|k| k.suite() == s.suite())
            });
        }
        let versions: &[&rustls::SupportedProtocolVersion] = match self.version.as_deref() {
            Some("tlsv1.3") => &[&rustls::version::TLS13],
            Some("tlsv1.1" | "tlsv1") => {
                eprintln!(
                    "Warning: TLS 1.1 and older are not available in midge's TLS library; \
                     TLS 1.2 and 1.3 are used."
                );
                rustls::ALL_VERSIONS
            }
            _ => rustls::ALL_VERSIONS,
        };
        let builder = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .map_err(|e| format!("{BAD_OPTIONS}\n{e}"))?;
        let verifier = if (self.os_certs && anchors.is_empty()) || self.os_certs_and_cas {
            None
        } else {
            Some(ServerVerifier::new(
                anchors.clone(),
                Vec::new(),
                self.insecure,
            )?)
        };
        let builder = match verifier {
            Some(v) => builder.dangerous().with_custom_certificate_verifier(v),
            None => {
                let mut roots = rustls::RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                roots.add_parsable_certificates(anchors.iter().cloned());
                let v = ServerVerifier::with_roots(roots, self.insecure)?;
                builder.dangerous().with_custom_certificate_verifier(v)
            }
        };
        let mut config = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                builder
                    .with_client_auth_cert(certs(c)?, key(k)?)
                    .map_err(|e| {
                        format!(
                            "Error: Unable to use the client certificate {}: {e}.",
                            c.display()
                        )
                    })?
            }
            _ => builder.with_no_client_auth(),
        };
        if let Some(a) = &self.alpn {
            config.alpn_protocols = vec![a.as_bytes().to_vec()];
        }
        Ok(Arc::new(config))
    }
}

/// Performs the handshake with `host` on `tcp`. The error is the text to
/// print, as Mosquitto's tools say it.
pub fn connect(config: Arc<ClientConfig>, host: &str, tcp: TcpStream) -> Result<TlsStream, String> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| format!("Error: '{host}' is not a host name or address TLS can verify."))?;
    let conn = ClientConnection::new(config, name).map_err(|e| tls_error(&e.to_string()))?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        match s.conn.complete_io(&mut s.sock) {
            Ok((0, 0)) if s.conn.is_handshaking() => {
                return Err(tls_error("the broker closed the connection"));
            }
            Ok(_) => {}
            Err(e) => return Err(tls_error(&e.to_string())),
        }
    }
    Ok(s)
}

fn tls_error(why: &str) -> String {
    format!("TLS error: {why}\nError: A TLS error occurred.")
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bad = |why: String| {
        format!(
            "Error: Unable to load certificates from {}: {why}.",
            path.display()
        )
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// Every PEM certificate of the files of `dir` (a `c_rehash` directory or
/// any directory of PEM files); files that are not certificates are skipped.
fn dir_certs(dir: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|_| "Error: Problem setting TLS options: File not found.".to_string())?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let found: Vec<_> = paths
        .iter()
        .filter(|p| p.is_file())
        .filter_map(|p| CertificateDer::pem_file_iter(p).ok())
        .flat_map(|it| it.flatten())
        .collect();
    if found.is_empty() {
        return Err(format!(
            "Error: No certificates found in {}.",
            dir.display()
        ));
    }
    Ok(found)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let text = std::fs::read(path)
        .map_err(|_| "Error: Problem setting TLS options: File not found.".to_string())?;
    let s = String::from_utf8_lossy(&text);
    if s.contains("ENCRYPTED") {
        return Err(format!(
            "Error: The key {p} is protected by a pass phrase, which midge's tools cannot ask \
             for. Write a copy without it: openssl pkey -in {p} -out {p}.nopass",
            p = path.display()
        ));
    }
    PrivateKeyDer::from_pem_slice(&text)
        .map_err(|e| format!("Error: Unable to load the key {}: {e}.", path.display()))
}
