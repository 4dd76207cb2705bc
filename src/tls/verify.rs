//! Verifying the certificates of peers: client certificates under
//! `require_certificate`, and (for the client tools and bridges) the
//! server certificate of a broker midge connects to.
//!
//! Certificates go through webpki, rustls's verifier, unchanged. Only the
//! ones webpki refuses for being X.509 version 1 or for lacking
//! subjectAltName (what `openssl x509 -req` makes, as in the common CA
//! walkthroughs) take a legacy path that checks what OpenSSL checks.
//! Signatures are always checked by ring, through the algorithms of
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
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::time::ASN1Time;
use x509_parser::x509::X509Version;

use super::cert;

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

/// Why the legacy path refuses a certificate chain.
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
            Invalid::NotACa => CertificateError::Other(OtherError(Arc::new(i))),
        })
    }
}

/// Chains longer than this are refused (OpenSSL's default depth is 100;
/// MQTT deployments use two or three).
const MAX_DEPTH: usize = 8;

/// The legacy path: OpenSSL's checks for the certificates webpki refuses.
#[derive(Debug, Clone)]
pub struct Legacy {
    anchors: Vec<CertificateDer<'static>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
}

fn parsed(der: &[u8]) -> Result<X509Certificate<'_>, Invalid> {
    cert::parse(der).ok_or(Invalid::BadEncoding)
}

fn check_dates(c: &X509Certificate, now: &ASN1Time) -> Result<(), Invalid> {
    let v = c.validity();
    if *now > v.not_after {
        Err(Invalid::Expired)
    } else if *now < v.not_before {
        Err(Invalid::NotYetValid)
    } else {
        Ok(())
    }
}

/// Whether `c` may sign certificates: basicConstraints cA where present
/// (and keyCertSign where keyUsage is present); a version 1 certificate
/// only when it is self-signed, as OpenSSL decides.
fn may_sign(c: &X509Certificate, der: &[u8]) -> bool {
    let ca = match c.basic_constraints() {
        Ok(Some(bc)) => bc.value.ca,
        Ok(None) => {
            c.version() == X509Version::V1
                && c.issuer().as_raw() == c.subject().as_raw()
                && signature_valid(der, c.public_key().raw)
        }
        Err(_) => false,
    };
    let usage = match c.key_usage() {
        Ok(Some(ku)) => ku.value.key_cert_sign(),
        Ok(None) => true,
        Err(_) => false,
    };
    ca && usage
}

impl Legacy {
    pub fn new(
        anchors: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Legacy {
        Legacy { anchors, crls }
    }

    /// Checks `leaf` as OpenSSL does: a chain through `intermediates` to a
    /// configured CA with every signature verified, dates, CA flags, the
    /// CRL of the leaf's issuer when CRLs are configured, and with
    /// `name` the host name (subjectAltName, or the CN when there is none).
    pub fn verify(
        &self,
        leaf: &[u8],
        intermediates: &[CertificateDer<'_>],
        name: Option<&ServerName<'_>>,
        now: UnixTime,
    ) -> Result<(), Invalid> {
        let now = ASN1Time::from_timestamp(now.as_secs() as i64).map_err(|_| Invalid::Expired)?;
        let leaf_c = parsed(leaf)?;
        check_dates(&leaf_c, &now)?;
        if let Some(n) = name {
            check_name(&leaf_c, n)?;
        }
        let mut current: &[u8] = leaf;
        let mut leaf_issuer_spki: Option<Vec<u8>> = None;
        for depth in 0..MAX_DEPTH {
            let c = parsed(current)?;
            // A configured CA ends the chain.
            let anchor = self.anchors.iter().find(|a| {
                parsed(a).is_ok_and(|ac| {
                    ac.subject().as_raw() == c.issuer().as_raw()
                        && signature_valid(current, ac.public_key().raw)
                })
            });
            if let Some(a) = anchor {
                let ac = parsed(a)?;
                if matches!(ac.basic_constraints(), Ok(Some(bc)) if !bc.value.ca) {
                    return Err(Invalid::NotACa);
                }
                check_dates(&ac, &now)?;
                if depth == 0 {
                    leaf_issuer_spki = Some(ac.public_key().raw.to_vec());
                }
                return self.check_crl(&leaf_c, leaf_issuer_spki.as_deref(), &now);
            }
            let next = intermediates
                .iter()
                .find(|i| parsed(i).is_ok_and(|ic| ic.subject().as_raw() == c.issuer().as_raw()));
            let Some(next) = next else {
                // A CA of that name whose key did not sign it: forged.
                let named = self.anchors.iter().any(|a| {
                    parsed(a).is_ok_and(|ac| ac.subject().as_raw() == c.issuer().as_raw())
                });
                return Err(if named {
                    Invalid::BadSignature
                } else {
                    Invalid::UnknownIssuer
                });
            };
            let nc = parsed(next)?;
            if !signature_valid(current, nc.public_key().raw) {
                return Err(Invalid::BadSignature);
            }
            if !may_sign(&nc, next) {
                return Err(Invalid::NotACa);
            }
            check_dates(&nc, &now)?;
            if depth == 0 {
                leaf_issuer_spki = Some(nc.public_key().raw.to_vec());
            }
            current = next.as_ref();
        }
        Err(Invalid::UnknownIssuer)
    }

    /// With CRLs configured: the leaf's issuer must have one, signed by it,
    /// current, and not listing the leaf (OpenSSL's X509_V_FLAG_CRL_CHECK).
    fn check_crl(
        &self,
        leaf: &X509Certificate,
        issuer_spki: Option<&[u8]>,
        now: &ASN1Time,
    ) -> Result<(), Invalid> {
        if self.crls.is_empty() {
            return Ok(());
        }
        let Some(spki) = issuer_spki else {
            return Err(Invalid::NoCrl);
        };
        for der in &self.crls {
            let Ok((_, crl)) = x509_parser::parse_x509_crl(der) else {
                continue;
            };
            if crl.issuer().as_raw() != leaf.issuer().as_raw() || !signature_valid(der, spki) {
                continue;
            }
            if crl.next_update().is_some_and(|n| *now > n) {
                return Err(Invalid::CrlExpired);
            }
            if crl
                .iter_revoked_certificates()
                .any(|r| r.raw_serial() == leaf.raw_serial())
            {
                return Err(Invalid::Revoked);
            }
            return Ok(());
        }
        Err(Invalid::NoCrl)
    }
}

/// The host-name check of OpenSSL (X509_check_host) for certificates
/// webpki cannot check: subjectAltName when present, else the CN.
fn check_name(c: &X509Certificate, name: &ServerName<'_>) -> Result<(), Invalid> {
    let san: Option<Vec<GeneralName>> = match c.subject_alternative_name() {
        Ok(Some(s)) => Some(s.value.general_names.clone()),
        Ok(None) => None,
        Err(_) => return Err(Invalid::BadEncoding),
    };
    let ok = match (name, san) {
        (ServerName::DnsName(d), Some(names)) => names.iter().any(|n| match n {
            GeneralName::DNSName(p) => host_matches(p, d.as_ref()),
            _ => false,
        }),
        (ServerName::IpAddress(ip), Some(names)) => names.iter().any(|n| match n {
            GeneralName::IPAddress(b) => cert::ip_text(b) == Some(std::net::IpAddr::from(*ip)),
            _ => false,
        }),
        (ServerName::DnsName(d), None) => c
            .subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .any(|cn| host_matches(cn, d.as_ref())),
        (ServerName::IpAddress(ip), None) => c
            .subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .any(|cn| cn.parse::<std::net::IpAddr>().ok() == Some(std::net::IpAddr::from(*ip))),
        _ => false,
    };
    if ok { Ok(()) } else { Err(Invalid::WrongName) }
}

/// A certificate name against a host name: case-insensitive, with `*` as
/// the whole leftmost label matching one label.
fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    let pattern = pattern.trim_end_matches('.');
    if let Some(rest) = pattern.strip_prefix("*.") {
        match host.split_once('.') {
            Some((first, tail)) => {
                !first.is_empty() && tail.eq_ignore_ascii_case(rest) && rest.contains('.')
            }
            None => false,
        }
    } else {
        pattern.eq_ignore_ascii_case(host)
    }
}

/// Whether a chain has a version 1 certificate (webpki refuses those).
fn has_v1(leaf: &[u8], intermediates: &[CertificateDer<'_>]) -> bool {
    std::iter::once(leaf)
        .chain(intermediates.iter().map(|c| c.as_ref()))
        .filter_map(cert::parse)
        .any(|c| c.version() == X509Version::V1)
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
        )) if has_v1(cert, &[]) => {}
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
/// legacy path for version 1 certificates.
#[derive(Debug)]
pub struct ClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    legacy: Legacy,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientVerifier {
    pub fn new(
        anchors: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Arc<ClientVerifier>, String> {
        let algs = provider.signature_verification_algorithms;
        let mut b =
            WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(&anchors)), provider);
        if !crls.is_empty() {
            b = b.with_crls(crls.clone()).only_check_end_entity_revocation();
        }
        let webpki = b.build().map_err(|e| e.to_string())?;
        Ok(Arc::new(ClientVerifier {
            webpki,
            legacy: Legacy::new(anchors, crls),
            algs,
        }))
    }
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
        match self
            .webpki
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(_) if has_v1(end_entity, intermediates) => {
                self.legacy.verify(end_entity, intermediates, None, now)?;
                notice(end_entity, "is an X.509 version 1 certificate");
                Ok(ClientCertVerified::assertion())
            }
            r => r,
        }
    }

    handshake_signature_methods!();
}

/// The server certificate of a broker midge connects to (client tools,
/// bridges): webpki, then the legacy path for version 1 certificates and
/// for certificates without subjectAltName. `insecure` skips only the
/// host-name check, as `mosquitto_sub --insecure` does.
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
        let mut b =
            WebPkiServerVerifier::builder_with_provider(Arc::new(root_store(&anchors)), provider);
        if !crls.is_empty() {
            b = b.with_crls(crls.clone()).only_check_end_entity_revocation();
        }
        let webpki = b.build().map_err(|e| e.to_string())?;
        Ok(Arc::new(ServerVerifier {
            webpki,
            legacy: Legacy::new(anchors, crls),
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
            legacy: Legacy::new(Vec::new(), Vec::new()),
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
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        // webpki checks the chain before the name: a name error means the
        // chain is good.
        if is_name_error(&e) {
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
        if has_v1(end_entity, intermediates) {
            let name = (!self.insecure).then_some(server_name);
            self.legacy.verify(end_entity, intermediates, name, now)?;
            notice(end_entity, "is an X.509 version 1 certificate");
            return Ok(ServerCertVerified::assertion());
        }
        Err(e)
    }

    handshake_signature_methods!();
}
