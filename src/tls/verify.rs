//! Verifying the certificates of peers: client certificates under
//! `require_certificate`, and (for the client tools and bridges) the
//! server certificate of a broker midge connects to.
//!
//! Certificates go through webpki, rustls's verifier, unchanged; a chain
//! webpki accepts is then held to the checks OpenSSL (and so Mosquitto)
//! makes and webpki does not, such as the leaf's keyUsage and the CA
//! certificates of `cafile`/`capath` themselves. Only the chains webpki
//! refuses that have an X.509 version 1 leaf, or go through a version 1 CA
//! of `cafile`/`capath` (what `openssl x509 -req` makes, as in the common
//! CA walkthroughs), take a legacy path that checks what OpenSSL checks;
//! and server certificates lacking subjectAltName are matched on their
//! CN. Signatures are always checked by ring, through the algorithms of
//! rustls's crypto provider; certificates are parsed by x509-parser.

use x509_parser::asn1_rs::{Any, BitString, FromDer};

use std::sync::Arc;

use log::info;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore,
    SignatureScheme,
};
use x509_parser::x509::X509Version;

use super::cert;
pub use super::legacy::{Legacy, Purpose, newest_crls};
use super::legacy::{check_name, parsed};

/// The algorithms of the ring provider that check certificate signatures.
fn algorithms() -> &'static [&'static dyn rustls::pki_types::SignatureVerificationAlgorithm] {
    rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all
}

/// Whether `signed` (a DER certificate or CRL: SEQUENCE { tbs, algorithm,
/// signature }) is signed by the key of `issuer_spki` (a DER
/// SubjectPublicKeyInfo). Anything that does not parse is not valid.
pub fn signature_valid(signed: &[u8], issuer_spki: &[u8]) -> bool {
    let Some((tbs, sig_alg, signature)) = split_signed(signed) else {
        return false;
    };
    let Some((key_alg, key)) = split_spki(issuer_spki) else {
        return false;
    };
    algorithms()
        .iter()
        .filter(|a| {
            a.signature_alg_id().as_ref() == sig_alg && a.public_key_alg_id().as_ref() == key_alg
        })
        .any(|a| a.verify_signature(key, tbs, signature).is_ok())
}

/// The signed part (with its header), the algorithm identifier's contents
/// and the signature bits of a signed object.
fn split_signed(der: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (_, outer) = Any::from_der(der).ok()?;
    let content = outer.data;
    let (rest, _) = Any::from_der(content).ok()?;
    let tbs = &content[..content.len() - rest.len()];
    let (rest, alg) = Any::from_der(rest).ok()?;
    let (_, sig) = BitString::from_der(rest).ok()?;
    match sig.data {
        std::borrow::Cow::Borrowed(bits) if sig.unused_bits == 0 => Some((tbs, alg.data, bits)),
        _ => None,
    }
}

/// The algorithm identifier's contents and the key bits of a DER
/// SubjectPublicKeyInfo.
fn split_spki(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (_, outer) = Any::from_der(der).ok()?;
    let (rest, alg) = Any::from_der(outer.data).ok()?;
    let (_, key) = BitString::from_der(rest).ok()?;
    match key.data {
        std::borrow::Cow::Borrowed(bits) if key.unused_bits == 0 => Some((alg.data, bits)),
        _ => None,
    }
}

/// Why a certificate chain is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// A certificate or CRL does not parse.
    BadEncoding,
    /// No configured CA issued the chain.
    UnknownIssuer,
    /// A signature does not verify.
    BadSignature,
    Expired,
    NotYetValid,
    /// A certificate that signs another is not a CA certificate.
    NotACa,
    /// The certificate is not for this use: its extendedKeyUsage, keyUsage
    /// or nsCertType leaves out TLS client (or server) authentication.
    WrongPurpose,
    /// A CA's pathLenConstraint allows fewer CAs below it.
    PathTooLong,
    /// A critical extension OpenSSL does not know, or a proxy certificate.
    UnhandledCriticalExtension,
    /// A CA of the chain constrains names: the legacy path does not check
    /// name constraints, so it refuses such chains.
    NameConstraints,
    Revoked,
    /// A CRL file is configured but none is from the certificate's issuer.
    NoCrl,
    CrlExpired,
    /// The server certificate is not for the name connected to.
    WrongName,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Invalid::BadEncoding => "certificate does not parse",
            Invalid::UnknownIssuer => "not issued by a configured CA",
            Invalid::BadSignature => "bad signature",
            Invalid::Expired => "certificate expired",
            Invalid::NotYetValid => "certificate not yet valid",
            Invalid::NotACa => "an issuer is not a CA certificate",
            Invalid::WrongPurpose => {
                "a certificate of the chain is not for this use (extendedKeyUsage, keyUsage or \
                 nsCertType)"
            }
            Invalid::PathTooLong => "a CA's path length constraint is exceeded",
            Invalid::UnhandledCriticalExtension => {
                "a certificate has an unhandled critical extension"
            }
            Invalid::NameConstraints => {
                "a CA of a version 1 certificate's chain has name constraints"
            }
            Invalid::Revoked => "certificate revoked",
            Invalid::NoCrl => "no CRL from the certificate's issuer",
            Invalid::CrlExpired => "the CRL has expired",
            Invalid::WrongName => "certificate not valid for the host name",
        })
    }
}

impl std::error::Error for Invalid {}

impl From<Invalid> for Error {
    fn from(i: Invalid) -> Error {
        Error::InvalidCertificate(match i {
            Invalid::BadEncoding => CertificateError::BadEncoding,
            Invalid::UnknownIssuer => CertificateError::UnknownIssuer,
            Invalid::BadSignature => CertificateError::BadSignature,
            Invalid::Expired => CertificateError::Expired,
            Invalid::NotYetValid => CertificateError::NotValidYet,
            Invalid::Revoked => CertificateError::Revoked,
            Invalid::NoCrl => CertificateError::UnknownRevocationStatus,
            Invalid::CrlExpired => CertificateError::ExpiredRevocationList,
            Invalid::WrongName => CertificateError::NotValidForName,
            Invalid::WrongPurpose => CertificateError::InvalidPurpose,
            Invalid::NotACa
            | Invalid::PathTooLong
            | Invalid::UnhandledCriticalExtension
            | Invalid::NameConstraints => CertificateError::Other(OtherError(Arc::new(i))),
        })
    }
}

/// Whether a certificate is X.509 version 1 (webpki refuses those).
fn is_v1(der: &[u8]) -> bool {
    cert::parse(der).is_some_and(|c| c.version() == X509Version::V1)
}

/// Whether the leaf has no subjectAltName (webpki then matches no name).
fn lacks_san(leaf: &[u8]) -> bool {
    cert::parse(leaf).is_some_and(|c| matches!(c.subject_alternative_name(), Ok(None)))
}

/// Logs that a certificate took the legacy path, and how to avoid it.
fn notice(leaf: &[u8], why: &str) {
    let subject = cert::parse(leaf)
        .map(|c| c.subject().to_string())
        .unwrap_or_default();
    info!(
        "Certificate '{subject}' {why}: checked the way OpenSSL does. Re-issue it as version 3 \
         with a subjectAltName (midge_cert, or openssl x509 -req ... -extfile with \
         'subjectAltName=DNS:<host>'), see docs/TLS.md."
    );
}

/// Logs why midge's own checks refused a certificate (the handshake error
/// names only the kind of error), and returns the error for rustls.
fn refused(leaf: &[u8], why: Invalid) -> Error {
    let subject = cert::parse(leaf)
        .map(|c| c.subject().to_string())
        .unwrap_or_default();
    info!("Certificate '{subject}' refused: {why}.");
    why.into()
}

/// A TLS handshake signature, made with the key of `cert`, for the
/// certificates webpki cannot parse (version 1).
fn handshake_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
    tls13: bool,
) -> Result<HandshakeSignatureValid, Error> {
    let webpki = if tls13 {
        verify_tls13_signature(message, cert, dss, algs)
    } else {
        verify_tls12_signature(message, cert, dss, algs)
    };
    match webpki {
        Err(Error::InvalidCertificate(
            CertificateError::BadEncoding | CertificateError::Other(_),
        )) if is_v1(cert) => {}
        r => return r,
    }
    // rustls's functions checked the scheme's use in TLS 1.3 before
    // refusing the certificate.
    let c = parsed(cert)?;
    let (key_alg, key) = split_spki(c.public_key().raw).ok_or(Invalid::BadEncoding)?;
    let candidates = algs
        .mapping
        .iter()
        .filter(|(s, _)| *s == dss.scheme)
        .flat_map(|(_, a)| a.iter());
    for alg in candidates {
        if alg.public_key_alg_id().as_ref() == key_alg
            && alg.verify_signature(key, message, dss.signature()).is_ok()
        {
            return Ok(HandshakeSignatureValid::assertion());
        }
    }
    Err(Error::InvalidCertificate(CertificateError::BadSignature))
}

/// The handshake-signature half of both verifiers (same for both sides).
macro_rules! handshake_signature_methods {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            handshake_signature(message, cert, dss, &self.algs, false)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            handshake_signature(message, cert, dss, &self.algs, true)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algs.supported_schemes()
        }
    };
}

fn root_store(anchors: &[CertificateDer<'static>]) -> RootCertStore {
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(anchors.iter().cloned());
    store
}

/// Client certificates under `require_certificate`: webpki, then the
/// checks of OpenSSL that webpki does not make; the legacy path for
/// version 1 certificates of the configured PKI.
#[derive(Debug)]
pub struct ClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    legacy: Legacy,
    algs: WebPkiSupportedAlgorithms,
    /// `disable_client_cert_date_checks`.
    ignore_dates: bool,
}

impl ClientVerifier {
    /// With `ignore_dates` (`disable_client_cert_date_checks`), a client
    /// chain is checked at a moment inside the validity of all its
    /// certificates instead of now: dates no longer refuse it, everything
    /// else does.
    pub fn new(
        anchors: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
        provider: Arc<rustls::crypto::CryptoProvider>,
        ignore_dates: bool,
    ) -> Result<Arc<ClientVerifier>, String> {
        let algs = provider.signature_verification_algorithms;
        let crls = newest_crls(crls);
        let mut b =
            WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(&anchors)), provider);
        if !crls.is_empty() {
            b = b.with_crls(crls.clone()).only_check_end_entity_revocation();
        }
        let webpki = b.build().map_err(|e| e.to_string())?;
        let mut legacy = Legacy::new(anchors, crls, Purpose::Client);
        if ignore_dates {
            legacy = legacy.without_time_checks();
        }
        Ok(Arc::new(ClientVerifier {
            webpki,
            legacy,
            algs,
            ignore_dates,
        }))
    }
}

/// The latest start of validity of `certs`, when it is not after the
/// earliest end: a moment at which every one of them is valid. A
/// self-signed certificate a client sends along is left out: as a trust
/// anchor its dates are not checked.
fn common_validity(certs: &[&[u8]]) -> Option<UnixTime> {
    let mut start = i64::MIN;
    let mut end = i64::MAX;
    for der in certs {
        let c = super::cert::parse(der)?;
        if c.subject().as_raw() == c.issuer().as_raw() {
            continue;
        }
        start = start.max(c.validity().not_before.timestamp());
        end = end.min(c.validity().not_after.timestamp());
    }
    let start = u64::try_from(start).ok()?;
    (i64::try_from(start).ok()? <= end)
        .then(|| UnixTime::since_unix_epoch(std::time::Duration::from_secs(start)))
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let now = if self.ignore_dates {
            let mut chain: Vec<&[u8]> = vec![end_entity.as_ref()];
            chain.extend(intermediates.iter().map(|c| c.as_ref()));
            common_validity(&chain).unwrap_or(now)
        } else {
            now
        };
        match self
            .webpki
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(v) => {
                self.legacy
                    .check_accepted(end_entity, intermediates, now)
                    .map_err(|w| refused(end_entity, w))?;
                Ok(v)
            }
            Err(_) if self.legacy.applies(end_entity, intermediates) => {
                self.legacy
                    .verify(end_entity, intermediates, None, now)
                    .map_err(|w| refused(end_entity, w))?;
                notice(end_entity, "is an X.509 version 1 certificate");
                Ok(ClientCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    handshake_signature_methods!();
}

/// The server certificate of a broker midge connects to (client tools,
/// bridges): webpki and the checks of OpenSSL that webpki does not make,
/// then the legacy path for version 1 certificates of the configured PKI
/// and the Common Name for certificates without subjectAltName. `insecure`
/// skips only the host-name check, as `mosquitto_sub --insecure` does.
#[derive(Debug)]
pub struct ServerVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    legacy: Legacy,
    algs: WebPkiSupportedAlgorithms,
    insecure: bool,
}

impl ServerVerifier {
    pub fn new(
        anchors: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
        insecure: bool,
    ) -> Result<Arc<ServerVerifier>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let algs = provider.signature_verification_algorithms;
        let crls = newest_crls(crls);
        let mut b =
            WebPkiServerVerifier::builder_with_provider(Arc::new(root_store(&anchors)), provider);
        if !crls.is_empty() {
            b = b.with_crls(crls.clone()).only_check_end_entity_revocation();
        }
        let webpki = b.build().map_err(|e| e.to_string())?;
        Ok(Arc::new(ServerVerifier {
            webpki,
            legacy: Legacy::new(anchors, crls, Purpose::Server),
            algs,
            insecure,
        }))
    }
}

impl ServerVerifier {
    /// A verifier over a ready root store (the system's roots of
    /// webpki-roots), with no legacy anchors.
    pub fn with_roots(roots: RootCertStore, insecure: bool) -> Result<Arc<ServerVerifier>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let algs = provider.signature_verification_algorithms;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(ServerVerifier {
            webpki,
            legacy: Legacy::new(Vec::new(), Vec::new(), Purpose::Server),
            algs,
            insecure,
        }))
    }
}

fn is_name_error(e: &Error) -> bool {
    matches!(
        e,
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        )
    )
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let e = match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => {
                self.legacy
                    .check_accepted(end_entity, intermediates, now)
                    .map_err(|w| refused(end_entity, w))?;
                return Ok(v);
            }
            Err(e) => e,
        };
        // webpki checks the chain before the name: a name error means the
        // chain is good.
        if is_name_error(&e) {
            self.legacy
                .check_accepted(end_entity, intermediates, now)
                .map_err(|w| refused(end_entity, w))?;
            if self.insecure {
                return Ok(ServerCertVerified::assertion());
            }
            if lacks_san(end_entity) {
                check_name(&parsed(end_entity)?, server_name)?;
                notice(
                    end_entity,
                    "has no subjectAltName, its Common Name was used",
                );
                return Ok(ServerCertVerified::assertion());
            }
            return Err(e);
        }
        if self.legacy.applies(end_entity, intermediates) {
            let name = (!self.insecure).then_some(server_name);
            self.legacy
                .verify(end_entity, intermediates, name, now)
                .map_err(|w| refused(end_entity, w))?;
            notice(end_entity, "is an X.509 version 1 certificate");
            return Ok(ServerCertVerified::assertion());
        }
        Err(e)
    }

    handshake_signature_methods!();
}
