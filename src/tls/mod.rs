//! TLS listeners: the files a listener's TLS options name, read into a
//! rustls `ServerConfig` before privileges are dropped and again on SIGHUP.
//!
//! The handshake itself runs in the client thread ([`crate::transport`]).
//! Every problem with a file is reported naming the config line, the
//! option, the file and the cause, in words a user can act on.

pub mod cert;
pub mod legacy;
pub mod verify;

use std::fs;
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::{RootCertStore, ServerConfig};

use crate::config::{FileSetting, TlsSettings, TlsVersion, ciphers};

/// A TLS listener's current settings; SIGHUP swaps in freshly read files.
pub struct ServerTls {
    settings: TlsSettings,
    /// Read by every new connection, replaced by [`ServerTls::reload`].
    current: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("settings", &self.settings)
            .finish()
    }
}

impl ServerTls {
    /// Reads every file `settings` names. Returns the listener's TLS state
    /// and remarks to log (warnings start with "Warning:").
    pub fn load(settings: &TlsSettings) -> Result<(ServerTls, Vec<String>), String> {
        let (config, notes) = build(settings)?;
        Ok((
            ServerTls {
                settings: settings.clone(),
                current: RwLock::new(Arc::new(config)),
            },
            notes,
        ))
    }

    /// Reads the files again; on error the previous ones stay in use.
    pub fn reload(&self) -> Result<Vec<String>, String> {
        let (config, notes) = build(&self.settings)?;
        *self.current.write() = Arc::new(config);
        Ok(notes)
    }

    /// The settings a new connection uses.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.read().clone()
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }
}

/// `FILE:LINE: option PATH`, the start of every message about a file.
fn named(f: &FileSetting) -> String {
    format!("{}: {} {}", f.at, f.option, f.path.display())
}

fn read(f: &FileSetting) -> Result<Vec<u8>, String> {
    fs::read(&f.path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (midge reads it before dropping privileges, so the file \
                 must be readable by the user that starts midge)"
                    .to_string()
            }
            _ => e.to_string(),
        };
        format!("{}: cannot read: {why}", named(f))
    })
}

fn pem_error(f: &FileSetting, e: pem::Error) -> String {
    format!("{}: not a valid PEM file: {e}", named(f))
}

/// Every certificate in a PEM file; at least one.
pub fn read_certs(f: &FileSetting) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(f)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(f, e))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in the file (a PEM block \"-----BEGIN CERTIFICATE-----\" \
             is expected)",
            named(f)
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file. An encrypted key is refused with the
/// command that removes its pass phrase.
pub fn read_key(f: &FileSetting) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(f)?;
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
    {
        let p = f.path.display();
        return Err(format!(
            "{}: the private key is protected by a pass phrase, and midge cannot ask for one \
             when it starts. Write a copy without the pass phrase, readable only by the user \
             that starts midge: openssl pkey -in {p} -out {p}.nopass && chmod 600 {p}.nopass \
             (then name {p}.nopass in keyfile)",
            named(f)
        ));
    }
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(k) => Ok(k),
        Err(pem::Error::NoItemsFound) => Err(format!(
            "{}: no private key in the file (a PEM block \"-----BEGIN PRIVATE KEY-----\", \
             \"-----BEGIN RSA PRIVATE KEY-----\" or \"-----BEGIN EC PRIVATE KEY-----\" is expected)",
            named(f)
        )),
        Err(e) => Err(pem_error(f, e)),
    }
}

/// The CA certificates of `cafile` and `capath` that webpki can use.
pub fn read_cas(s: &TlsSettings) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut ders = Vec::new();
    let mut store = RootCertStore::empty();
    if let Some(f) = &s.cafile {
        let certs = read_certs(f)?;
        let (added, _) = store.add_parsable_certificates(certs.iter().cloned());
        if added == 0 {
            return Err(format!(
                "{}: no usable CA certificate in the file ({} found, none could be read as \
                 an X.509 certificate)",
                named(f),
                certs.len()
            ));
        }
        ders.extend(certs);
    }
    if let Some(d) = &s.capath {
        let before = ders.len();
        let entries =
            fs::read_dir(&d.path).map_err(|e| format!("{}: cannot read: {e}", named(d)))?;
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths.iter().filter(|p| p.is_file()) {
            // Not every file in a CA directory is a certificate; skip those.
            let Ok(bytes) = fs::read(p) else { continue };
            for c in CertificateDer::pem_slice_iter(&bytes).flatten() {
                let (added, _) = store.add_parsable_certificates([c.clone()]);
                if added > 0 {
                    ders.push(c);
                }
            }
        }
        if ders.len() == before {
            return Err(format!(
                "{}: no usable CA certificate in the directory",
                named(d)
            ));
        }
    }
    Ok(ders)
}

/// The CRLs of `crlfile`.
pub fn read_crls(f: &FileSetting) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let bytes = read(f)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(f, e))?;
    if crls.is_empty() {
        return Err(format!(
            "{}: no CRL in the file (a PEM block \"-----BEGIN X509 CRL-----\" is expected)",
            named(f)
        ));
    }
    Ok(crls)
}

/// The ring provider with the suites `ciphers` and `ciphers_tls1.3` chose.
pub fn provider(s: &TlsSettings) -> CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    let keep13 = s.ciphers_tls13.as_ref().map(|n| ciphers::suites(n, true));
    let keep12 = s.ciphers.as_ref().map(|n| ciphers::suites(n, false));
    p.cipher_suites.retain(|suite| {
        let keep = match suite {
            rustls::SupportedCipherSuite::Tls13(_) => &keep13,
            rustls::SupportedCipherSuite::Tls12(_) => &keep12,
        };
        keep.as_ref().is_none_or(|k| k.contains(suite))
    });
    p
}

/// The most intermediate certificates [`complete_chain`] adds.
const MAX_CHAIN: usize = 8;

/// Adds to a server's chain the intermediate CA certificates of `cafile`
/// and `capath` that issued its last certificate, up to (not including) a
/// self-signed root, as OpenSSL (and so Mosquitto) builds the chain it
/// sends when `certfile` holds only the server's certificate. Without
/// them, a client that trusts only the root cannot verify a server signed
/// by an intermediate CA. An issuer is the CA certificate whose subject is
/// the certificate's issuer and, where both say, whose subject key
/// identifier is its authority key identifier.
fn complete_chain(chain: &mut Vec<CertificateDer<'static>>, cas: &[CertificateDer<'static>]) {
    for _ in 0..MAX_CHAIN {
        let Some(last) = chain.last().and_then(|d| cert::parse(d)) else {
            return;
        };
        if last.subject().as_raw() == last.issuer().as_raw() {
            return;
        }
        let issuer = last.issuer().as_raw();
        let aki = cert::authority_key_id(&last);
        let found = cas.iter().find(|der| {
            cert::parse(der).is_some_and(|ca| {
                ca.subject().as_raw() == issuer
                    && match (&aki, cert::subject_key_id(&ca)) {
                        (Some(a), Some(b)) => *a == b,
                        _ => true,
                    }
            })
        });
        let Some(found) = found else { return };
        let self_signed =
            cert::parse(found).is_none_or(|ca| ca.subject().as_raw() == ca.issuer().as_raw());
        if self_signed || chain.iter().any(|c| c == found) {
            return;
        }
        chain.push(found.clone());
    }
}

fn build(s: &TlsSettings) -> Result<(ServerConfig, Vec<String>), String> {
    let (Some(certfile), Some(keyfile)) = (&s.certfile, &s.keyfile) else {
        return Err("a TLS listener needs certfile and keyfile".into());
    };
    let mut chain = read_certs(certfile)?;
    if s.cafile.is_some() || s.capath.is_some() {
        // A CA file that cannot be read is reported where it is needed
        // (require_certificate); here it only completes the chain.
        if let Ok(cas) = read_cas(s) {
            complete_chain(&mut chain, &cas);
        }
    }
    let key = read_key(keyfile)?;
    let notes = cert::inspect(&named(certfile), &chain[0]);
    let provider = Arc::new(provider(s));
    let versions: &[&rustls::SupportedProtocolVersion] = match s.min_version {
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let at =
        s.at.as_ref()
            .map(|(o, _)| o.to_string())
            .unwrap_or_default();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| {
            format!("{at}: tls_version, ciphers and ciphers_tls1.3 leave nothing to use: {e}")
        })?;
    let builder = if s.require_certificate {
        let anchors = read_cas(s)?;
        let crls = match &s.crlfile {
            Some(f) => read_crls(f)?,
            None => Vec::new(),
        };
        let ignore_dates = s.disable_client_cert_date_checks;
        let verifier =
            verify::ClientVerifier::new(anchors, crls, provider.clone(), ignore_dates)
                .map_err(|e| format!("{at}: cannot set up client certificate checks: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    // Not `with_single_cert`: its key check parses the certificate with
    // webpki, which refuses the version 1 certificates `openssl x509 -req`
    // makes. The key is compared with the certificate's own key here.
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: the private key cannot be used: {e}", named(keyfile)))?;
    let cert_key = cert::parse(&chain[0]).map(|c| c.public_key().raw.to_vec());
    let key_spki = signing_key.public_key();
    if let (Some(a), Some(b)) = (&cert_key, &key_spki) {
        if a.as_slice() != b.as_ref() {
            return Err(format!(
                "{}: the private key does not match the certificate of certfile {}",
                named(keyfile),
                certfile.path.display()
            ));
        }
    }
    let certified = rustls::sign::CertifiedKey::new(chain, signing_key);
    let config =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    Ok((config, notes))
}
