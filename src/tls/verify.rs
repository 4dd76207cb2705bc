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
