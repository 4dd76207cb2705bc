//! The checks midge adds to webpki's, and the legacy path: OpenSSL's
//! checks, made by midge, for the client and server certificates webpki
//! refuses (X.509 version 1, as `openssl x509 -req` makes them) and for
//! what webpki does not check in the chains it accepts (keyUsage, the
//! purposes of the CA certificates, several CRLs of one issuer). See
//! [`super::verify`] for when each path is taken.

use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, NSCertType, ParsedExtension};
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::time::ASN1Time;
use x509_parser::x509::X509Version;

use super::cert;
use super::verify::{Invalid, signature_valid};

/// What a peer's certificate must be good for, as OpenSSL's purposes
/// "sslclient" and "sslserver" say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A client certificate, checked by a listener.
    Client,
    /// A server certificate, checked by the client tools and bridges.
    Server,
}

/// Chains longer than this are refused (OpenSSL's default depth is 100;
/// MQTT deployments use two or three).
const MAX_DEPTH: usize = 8;

/// The checks midge adds to webpki's, and the legacy path: OpenSSL's
/// checks for the certificates webpki refuses (X.509 version 1).
#[derive(Debug, Clone)]
pub struct Legacy {
    anchors: Vec<CertificateDer<'static>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    purpose: Purpose,
    /// False with `disable_client_cert_date_checks` (OpenSSL's
    /// X509_V_FLAG_NO_CHECK_TIME): validity dates are not checked.
    check_time: bool,
}

pub(super) fn parsed(der: &[u8]) -> Result<X509Certificate<'_>, Invalid> {
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

/// Subject and issuer are the same name (OpenSSL's "self-issued").
fn self_issued(c: &X509Certificate) -> bool {
    c.issuer().as_raw() == c.subject().as_raw()
}

/// Self-issued and signed by its own key.
fn self_signed(c: &X509Certificate, der: &[u8]) -> bool {
    self_issued(c) && signature_valid(der, c.public_key().raw)
}

/// One certificate of a chain, leaf first.
struct Link<'a> {
    der: &'a [u8],
    cert: X509Certificate<'a>,
    /// From `cafile`/`capath`.
    trusted: bool,
}

/// The critical extensions OpenSSL handles (`X509_supported_extension`):
/// any other critical extension makes it refuse the certificate.
const HANDLED_CRITICAL: &[&str] = &[
    "2.16.840.1.113730.1.1", // nsCertType
    "2.5.29.15",             // keyUsage
    "2.5.29.17",             // subjectAltName
    "2.5.29.19",             // basicConstraints
    "2.5.29.32",             // certificatePolicies
    "2.5.29.31",             // cRLDistributionPoints
    "2.5.29.37",             // extendedKeyUsage
    "1.3.6.1.5.5.7.1.7",     // sbgp-ipAddrBlock
    "1.3.6.1.5.5.7.1.8",     // sbgp-autonomousSysNum
    "1.3.6.1.5.5.7.48.1.5",  // OCSP noCheck
    "2.5.29.36",             // policyConstraints
    "1.3.6.1.5.5.7.1.14",    // proxyCertInfo (refused below all the same)
    "2.5.29.30",             // nameConstraints
    "2.5.29.33",             // policyMappings
    "2.5.29.54",             // inhibitAnyPolicy
];

/// Server Gated Crypto (Microsoft's and Netscape's), which OpenSSL takes
/// for serverAuth.
const SGC: &[&str] = &["1.3.6.1.4.1.311.10.3.3", "2.16.840.1.113730.4.1"];

/// Extensions OpenSSL cannot use (it marks the certificate invalid or
/// refuses it): unhandled critical ones, proxy certificates, and handled
/// ones that do not parse or appear twice.
fn check_extensions(c: &X509Certificate) -> Result<(), Invalid> {
    for e in c.extensions() {
        let oid = e.oid.to_id_string();
        if oid == "1.3.6.1.5.5.7.1.14" || (e.critical && !HANDLED_CRITICAL.contains(&oid.as_str()))
        {
            return Err(Invalid::UnhandledCriticalExtension);
        }
        if matches!(e.parsed_extension(), ParsedExtension::ParseError { .. }) {
            return Err(Invalid::BadEncoding);
        }
    }
    c.basic_constraints().map_err(|_| Invalid::BadEncoding)?;
    c.extended_key_usage().map_err(|_| Invalid::BadEncoding)?;
    c.name_constraints().map_err(|_| Invalid::BadEncoding)?;
    match c.key_usage() {
        // An empty keyUsage is invalid (RFC 5280 4.2.1.3; OpenSSL).
        Ok(Some(ku)) if ku.value.flags == 0 => Err(Invalid::BadEncoding),
        Ok(_) => Ok(()),
        Err(_) => Err(Invalid::BadEncoding),
    }
}

fn ns_cert_type(c: &X509Certificate) -> Option<NSCertType> {
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::NSCertType(t) => Some(*t),
            _ => None,
        })
}

/// OpenSSL's `check_ca`: whether `link` may sign certificates. 0: no;
/// 1: basicConstraints cA; 3: a self-signed version 1 certificate; 4: no
/// basicConstraints but keyUsage with keyCertSign; 5: nsCertType CA.
fn ca_kind(link: &Link) -> u8 {
    let c = &link.cert;
    let ku = c.key_usage().ok().flatten();
    if ku.as_ref().is_some_and(|k| !k.value.key_cert_sign()) {
        return 0;
    }
    match c.basic_constraints() {
        Ok(Some(bc)) => u8::from(bc.value.ca),
        Err(_) => 0,
        Ok(None) => {
            if c.version() == X509Version::V1 && self_signed(c, link.der) {
                3
            } else if ku.is_some() {
                4
            } else if ns_cert_type(c)
                .is_some_and(|t| t.ssl_ca() || t.smime_ca() || t.object_signing_ca())
            {
                5
            } else {
                0
            }
        }
    }
}

/// OpenSSL's purpose check (`check_purpose_ssl_client`/`_server`) for a
/// leaf, or for a CA of its chain (`ca_ret` from [`ca_kind`]).
fn purpose_ok(c: &X509Certificate, purpose: Purpose, ca_ret: Option<u8>) -> bool {
    if let Ok(Some(eku)) = c.extended_key_usage() {
        let e = eku.value;
        let ok = match purpose {
            Purpose::Client => e.client_auth,
            Purpose::Server => {
                e.server_auth
                    || e.other
                        .iter()
                        .any(|o| SGC.contains(&o.to_id_string().as_str()))
            }
        };
        if !ok {
            return false;
        }
    }
    let ns = ns_cert_type(c);
    if let Some(ret) = ca_ret {
        return ret != 0 && (ret != 5 || ns.is_some_and(|t| t.ssl_ca()));
    }
    if let Ok(Some(ku)) = c.key_usage() {
        let k = ku.value;
        let ok = match purpose {
            Purpose::Client => k.digital_signature() || k.key_agreement(),
            Purpose::Server => k.digital_signature() || k.key_encipherment() || k.key_agreement(),
        };
        if !ok {
            return false;
        }
    }
    match (ns, purpose) {
        (Some(t), Purpose::Client) => t.ssl_client(),
        (Some(t), Purpose::Server) => t.ssl_server(),
        (None, _) => true,
    }
}

/// Per CRL issuer, only the newest CRL: the latest thisUpdate, then the
/// highest CRL number, then the first in the file, as OpenSSL picks among
/// the CRLs of one issuer. CRLs that do not parse are kept (they are
/// refused where they are used).
pub fn newest_crls(
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Vec<CertificateRevocationListDer<'static>> {
    let keep: Vec<bool> = (0..crls.len())
        .map(|i| {
            let Ok((_, a)) = x509_parser::parse_x509_crl(&crls[i]) else {
                return true;
            };
            let key = |c: &CertificateRevocationList| {
                (c.last_update().timestamp(), c.crl_number().cloned())
            };
            !crls.iter().enumerate().any(|(j, other)| {
                let Ok((_, b)) = x509_parser::parse_x509_crl(other) else {
                    return false;
                };
                j != i
                    && b.issuer().as_raw() == a.issuer().as_raw()
                    && match key(&b).cmp(&key(&a)) {
                        std::cmp::Ordering::Greater => true,
                        std::cmp::Ordering::Equal => j < i,
                        std::cmp::Ordering::Less => false,
                    }
            })
        })
        .collect();
    crls.into_iter()
        .zip(keep)
        .filter_map(|(c, k)| k.then_some(c))
        .collect()
}

impl Legacy {
    pub fn new(
        anchors: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
        purpose: Purpose,
    ) -> Legacy {
        Legacy {
            anchors,
            crls: newest_crls(crls),
            purpose,
            check_time: true,
        }
    }

    /// The same checks without the validity dates.
    pub fn without_time_checks(mut self) -> Legacy {
        self.check_time = false;
        self
    }

    fn is_anchor(&self, der: &[u8]) -> bool {
        self.anchors.iter().any(|a| a.as_ref() == der)
    }

    /// The chain from `leaf` to a configured CA, as OpenSSL builds it:
    /// the issuer of each certificate is taken from `cafile`/`capath`
    /// first, then from `intermediates`, and must have signed it. The chain
    /// ends at a self-signed CA of `cafile`/`capath`, or at one that is
    /// not self-signed when its issuer is not at hand (as webpki accepts).
    fn path<'a>(
        &'a self,
        leaf: &'a [u8],
        intermediates: &'a [CertificateDer<'_>],
    ) -> Result<Vec<Link<'a>>, Invalid> {
        let mut chain = vec![Link {
            der: leaf,
            cert: parsed(leaf)?,
            trusted: self.is_anchor(leaf),
        }];
        loop {
            let (der, trusted) = match chain.last() {
                Some(l) => (l.der, l.trusted),
                None => return Err(Invalid::UnknownIssuer),
            };
            let c = parsed(der)?;
            if self_signed(&c, der) {
                return if trusted {
                    Ok(chain)
                } else {
                    Err(Invalid::UnknownIssuer)
                };
            }
            if chain.len() > MAX_DEPTH {
                return Err(Invalid::UnknownIssuer);
            }
            let issuer = c.issuer().as_raw();
            let unused = |d: &[u8]| !chain.iter().any(|l| l.der == d);
            let named = |d: &&'a [u8]| {
                unused(d) && cert::parse(d).is_some_and(|ic| ic.subject().as_raw() == issuer)
            };
            let anchors = self.anchors.iter().map(|a| a.as_ref());
            let from_anchors: Vec<&'a [u8]> = anchors.filter(named).collect();
            let from_chain: Vec<&'a [u8]> = intermediates
                .iter()
                .map(|i| i.as_ref())
                .filter(named)
                .collect();
            let signer = |d: &&&'a [u8]| {
                cert::parse(d).is_some_and(|ic| signature_valid(der, ic.public_key().raw))
            };
            let found = match from_anchors.iter().find(signer) {
                Some(a) => Some((*a, true)),
                None => from_chain
                    .iter()
                    .find(signer)
                    .map(|i| (*i, self.is_anchor(i))),
            };
            match found {
                Some((next, trusted)) => chain.push(Link {
                    der: next,
                    cert: parsed(next)?,
                    trusted,
                }),
                None if trusted => return Ok(chain),
                None if from_anchors.is_empty() && from_chain.is_empty() => {
                    // A CA of that name already in the chain, or none.
                    let named_anchor = self
                        .anchors
                        .iter()
                        .any(|a| cert::parse(a).is_some_and(|ac| ac.subject().as_raw() == issuer));
                    return Err(if named_anchor {
                        Invalid::BadSignature
                    } else {
                        Invalid::UnknownIssuer
                    });
                }
                // A CA of that name whose key did not sign it: forged.
                None => return Err(Invalid::BadSignature),
            }
        }
    }

    /// OpenSSL's default checks of a built chain (`check_chain` and
    /// `internal_verify` without X509_V_FLAG_X509_STRICT): dates of every
    /// certificate, no unhandled critical extension, every issuer a CA
    /// (basicConstraints cA; a version 1 CA only at the top), the purpose
    /// of every certificate (extendedKeyUsage, and the leaf's keyUsage and
    /// nsCertType), and path length constraints.
    fn check_chain(&self, chain: &[Link], now: &ASN1Time) -> Result<(), Invalid> {
        let n = chain.len();
        let top_is_root = chain.last().is_some_and(|l| self_signed(&l.cert, l.der));
        let mut plen: u32 = 0;
        for (i, l) in chain.iter().enumerate() {
            let c = &l.cert;
            if self.check_time {
                check_dates(c, now)?;
            }
            check_extensions(c)?;
            let ca_ret = if i == 0 {
                None
            } else {
                // Only the self-signed top may be a CA by keyUsage,
                // nsCertType or version 1 alone (OpenSSL makes the strict
                // check implicit for intermediate CAs).
                let ret = ca_kind(l);
                let top = i + 1 == n && top_is_root;
                if ret == 0 || (!top && ret != 1) {
                    return Err(Invalid::NotACa);
                }
                Some(ret)
            };
            if !purpose_ok(c, self.purpose, ca_ret) {
                return Err(Invalid::WrongPurpose);
            }
            if i > 1 {
                if let Ok(Some(bc)) = c.basic_constraints() {
                    if bc.value.ca && bc.value.path_len_constraint.is_some_and(|p| plen > p) {
                        return Err(Invalid::PathTooLong);
                    }
                }
            }
            if i > 0 && !self_issued(c) {
                plen += 1;
            }
        }
        Ok(())
    }

    /// Whether the legacy path is for this chain: a version 1 leaf, or a
    /// chain that goes through a version 1 CA of `cafile`/`capath` (what
    /// `openssl x509 -req` makes). A version 1 certificate appended to the
    /// chain a client presents does not make it so.
    pub fn applies(&self, leaf: &[u8], intermediates: &[CertificateDer<'_>]) -> bool {
        cert::parse(leaf).is_some_and(|c| c.version() == X509Version::V1)
            || self.path(leaf, intermediates).is_ok_and(|p| {
                p.iter()
                    .skip(1)
                    .any(|l| l.trusted && l.cert.version() == X509Version::V1)
            })
    }

    /// After webpki accepted a chain: the checks OpenSSL makes that webpki
    /// does not (the leaf's keyUsage, the CAs of `cafile`/`capath`
    /// themselves, basicConstraints of the top CA). Without configured CAs
    /// (the public roots) there is nothing to add.
    pub fn check_accepted(
        &self,
        leaf: &[u8],
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Invalid> {
        if self.anchors.is_empty() {
            return Ok(());
        }
        let now = ASN1Time::from_timestamp(now.as_secs() as i64).map_err(|_| Invalid::Expired)?;
        let chain = self.path(leaf, intermediates)?;
        self.check_chain(&chain, &now)
    }

    /// Checks `leaf` as OpenSSL does: a chain through `intermediates` to a
    /// configured CA with every signature verified, then [`Self::check_chain`],
    /// no name constraints, the CRL of the leaf's issuer when CRLs are
    /// configured, and with `name` the host name (subjectAltName, or the
    /// CN when there is none).
    pub fn verify(
        &self,
        leaf: &[u8],
        intermediates: &[CertificateDer<'_>],
        name: Option<&ServerName<'_>>,
        now: UnixTime,
    ) -> Result<(), Invalid> {
        let now = ASN1Time::from_timestamp(now.as_secs() as i64).map_err(|_| Invalid::Expired)?;
        let leaf_c = parsed(leaf)?;
        if self.check_time {
            check_dates(&leaf_c, &now)?;
        }
        let chain = self.path(leaf, intermediates)?;
        self.check_chain(&chain, &now)?;
        if chain
            .iter()
            .skip(1)
            .any(|l| matches!(l.cert.name_constraints(), Ok(Some(_))))
        {
            return Err(Invalid::NameConstraints);
        }
        if let Some(n) = name {
            check_name(&leaf_c, n)?;
        }
        let issuer = chain.get(1).unwrap_or(&chain[0]);
        self.check_crl(&leaf_c, issuer, &now)
    }

    /// With CRLs configured: the leaf's issuer must have one, signed by it,
    /// current, and not listing the leaf (OpenSSL's X509_V_FLAG_CRL_CHECK).
    /// Of several CRLs from the issuer, the newest counts ([`newest_crls`]).
    fn check_crl(
        &self,
        leaf: &X509Certificate,
        issuer: &Link,
        now: &ASN1Time,
    ) -> Result<(), Invalid> {
        if self.crls.is_empty() {
            return Ok(());
        }
        if issuer
            .cert
            .key_usage()
            .ok()
            .flatten()
            .is_some_and(|k| !k.value.crl_sign())
        {
            return Err(Invalid::NoCrl);
        }
        let spki = issuer.cert.public_key().raw;
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
pub(super) fn check_name(c: &X509Certificate, name: &ServerName<'_>) -> Result<(), Invalid> {
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
