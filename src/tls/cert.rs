//! What a certificate says, in words a user can act on: its names, its
//! dates, whether it is really self-signed; and the identity of a client
//! certificate for `use_identity_as_username` / `use_subject_as_username`.

use std::fmt::Write as _;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::objects::{oid_registry, oid2abbrev};
use x509_parser::x509::X509Name;

use super::verify;

/// Parses one DER certificate; None when it does not parse.
pub fn parse(der: &[u8]) -> Option<X509Certificate<'_>> {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => Some(c),
        Err(_) => None,
    }
}

/// The certificate's subject key identifier, where it has one.
pub fn subject_key_id(c: &X509Certificate) -> Option<Vec<u8>> {
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

/// The key identifier of the certificate's authority key identifier, where
/// it has one.
pub fn authority_key_id(c: &X509Certificate) -> Option<Vec<u8>> {
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
}

/// The names a client can verify the certificate against: the Common
/// Name(s) and the subjectAltName DNS names and IP addresses.
pub fn names(c: &X509Certificate) -> Vec<String> {
    let mut v: Vec<String> = c
        .subject()
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .map(|s| format!("CN={s}"))
        .collect();
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => v.push(format!("DNS:{d}")),
                GeneralName::IPAddress(b) => match ip_text(b) {
                    Some(ip) => v.push(format!("IP:{ip}")),
                    None => v.push("IP:?".into()),
                },
                _ => {}
            }
        }
    }
    v
}

/// The text of an IP address from a subjectAltName entry.
pub fn ip_text(b: &[u8]) -> Option<std::net::IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

/// Start-up remarks on the broker's own certificate, `what` naming it
/// (option and file). Warnings start with "Warning:".
pub fn inspect(what: &str, der: &[u8]) -> Vec<String> {
    let Some(c) = parse(der) else {
        return vec![format!(
            "Warning: {what}: the certificate could not be read for checking; clients may refuse it."
        )];
    };
    let mut out = Vec::new();
    let v = c.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > v.not_after {
        out.push(format!(
            "Warning: {what}: the certificate expired on {}; clients will refuse it. \
             Make a new one (see docs/TLS.md).",
            v.not_after
        ));
    } else if now < v.not_before {
        out.push(format!(
            "Warning: {what}: the certificate is not valid before {}; clients will refuse it \
             until then. Check the clock of this machine and of the one that made it.",
            v.not_before
        ));
    }
    if c.issuer().as_raw() == c.subject().as_raw()
        && !verify::signature_valid(der, c.public_key().raw)
    {
        out.push(format!(
            "Warning: {what}: the certificate's issuer ({}) has the same name as its subject, but \
             it is not self-signed: clients look up the CA by that name, find this certificate \
             instead and fail (\"unknown ca\"). Give the CA a Common Name different from the \
             server's, then sign the server certificate again.",
            c.issuer()
        ));
    }
    let names = names(&c);
    if names.is_empty() {
        out.push(format!(
            "Warning: {what}: the certificate names no host (no CN, no subjectAltName); clients \
             can only connect with --insecure."
        ));
    } else {
        out.push(format!(
            "{what}: the certificate is for {}; clients verify it when they connect with one of \
             these as the host name (-h).",
            names.join(", ")
        ));
    }
    out
}

/// Why a client certificate gives no user name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoIdentity {
    /// The client sent no certificate.
    NoCertificate,
    /// The certificate has no Common Name (use_identity_as_username).
    NoCommonName,
}

/// The user name a client certificate stands for: its Common Name, or with
/// `subject` its whole subject in RFC 2253 form (as Mosquitto does).
pub fn identity(der: Option<&[u8]>, subject: bool) -> Result<String, NoIdentity> {
    let c = der.and_then(parse).ok_or(NoIdentity::NoCertificate)?;
    if subject {
        return Ok(rfc2253(c.subject()));
    }
    c.subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string)
        .ok_or(NoIdentity::NoCommonName)
}

/// A name as RFC 2253 writes it: last RDN first, `,` between RDNs, `+`
/// within one, special characters escaped (OpenSSL's XN_FLAG_RFC2253).
pub fn rfc2253(name: &X509Name) -> String {
    let mut out = String::new();
    let registry = oid_registry();
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match oid2abbrev(atv.attr_type(), registry) {
                // OpenSSL's short name.
                Ok("Email") => out.push_str("emailAddress"),
                Ok(a) => out.push_str(a),
                Err(_) => out.push_str(&atv.attr_type().to_id_string()),
            }
            out.push('=');
            match atv.as_str() {
                Ok(s) => escape_into(&mut out, s),
                Err(_) => {
                    out.push('#');
                    for b in atv.attr_value().data {
                        let _ = write!(out, "{b:02x}");
                    }
                }
            }
        }
    }
    out
}

fn escape_into(out: &mut String, s: &str) {
    let last = s.chars().count().saturating_sub(1);
    for (i, ch) in s.chars().enumerate() {
        let special = matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(ch, '#' | ' '))
            || (i == last && ch == ' ');
        if special {
            out.push('\\');
        }
        out.push(ch);
    }
}
