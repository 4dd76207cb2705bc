//! `ciphers` and `ciphers_tls1.3`: OpenSSL cipher names mapped to the
//! suites rustls offers with the ring provider.
//!
//! rustls has only modern AEAD suites with forward secrecy, so an OpenSSL
//! list is read as: exact suite names, the keywords `ALL`, `DEFAULT` and
//! `HIGH` (every suite), and `!NAME` / `-NAME` exclusions (an exclusion of
//! something rustls never offers, such as `!aNULL`, changes nothing).
//! Any other name is refused with the list of what is available.

use rustls::SupportedCipherSuite;
use rustls::crypto::ring::cipher_suite as cs;

/// The TLS 1.2 suites, by OpenSSL name, in rustls's order of preference.
const TLS12: &[(&str, SupportedCipherSuite)] = &[
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// The TLS 1.3 suites, by OpenSSL (and IANA) name.
const TLS13: &[(&str, SupportedCipherSuite)] = &[
    ("TLS_AES_256_GCM_SHA384", cs::TLS13_AES_256_GCM_SHA384),
    ("TLS_AES_128_GCM_SHA256", cs::TLS13_AES_128_GCM_SHA256),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ),
];

fn table(tls13: bool) -> &'static [(&'static str, SupportedCipherSuite)] {
    if tls13 { TLS13 } else { TLS12 }
}

/// Checks an OpenSSL cipher list; returns the chosen suite names in the
/// order rustls prefers them. `tls13` selects the `ciphers_tls1.3` table.
pub fn check(list: &str, tls13: bool) -> Result<Vec<&'static str>, String> {
    let table = table(tls13);
    let mut chosen = vec![false; table.len()];
    let mut removed = vec![false; table.len()];
    for item in list.split([':', ',', ' ']).filter(|s| !s.is_empty()) {
        if let Some(name) = item.strip_prefix(['!', '-']) {
            if let Some(i) = table.iter().position(|(n, _)| *n == name) {
                removed[i] = true;
            }
            continue;
        }
        if matches!(item, "ALL" | "DEFAULT" | "HIGH") {
            chosen.iter_mut().for_each(|c| *c = true);
            continue;
        }
        match table.iter().position(|(n, _)| *n == item) {
            Some(i) => chosen[i] = true,
            None => {
                let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "'{item}' is not a cipher suite midge offers{}; available: {}",
                    if tls13 {
                        " for TLS 1.3"
                    } else {
                        " for TLS 1.2"
                    },
                    names.join(":")
                ));
            }
        }
    }
    let names: Vec<&'static str> = table
        .iter()
        .enumerate()
        .filter(|(i, _)| chosen[*i] && !removed[*i])
        .map(|(_, (n, _))| *n)
        .collect();
    if names.is_empty() {
        return Err("the list leaves no cipher suite".into());
    }
    Ok(names)
}

/// The rustls suites for checked names (unknown names are skipped).
pub fn suites(names: &[&str], tls13: bool) -> Vec<SupportedCipherSuite> {
    table(tls13)
        .iter()
        .filter(|(n, _)| names.contains(n))
        .map(|(_, s)| *s)
        .collect()
}

/// OpenSSL's name of a suite rustls negotiated, for the log.
pub fn openssl_name(suite: rustls::CipherSuite) -> Option<&'static str> {
    TLS12
        .iter()
        .chain(TLS13.iter())
        .find(|(_, s)| s.suite() == suite)
        .map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_names_map_and_unknown_ones_are_refused() {
        assert_eq!(
            check("ECDHE-RSA-AES128-GCM-SHA256:!aNULL", false),
            Ok(vec!["ECDHE-RSA-AES128-GCM-SHA256"])
        );
        assert_eq!(
            check("HIGH:!ECDHE-RSA-AES256-GCM-SHA384", false).map(|v| v.len()),
            Ok(5)
        );
        assert_eq!(
            check("TLS_AES_128_GCM_SHA256", true),
            Ok(vec!["TLS_AES_128_GCM_SHA256"])
        );
        let e = check("AES256-SHA", false).expect_err("refused");
        assert!(
            e.contains("'AES256-SHA'") && e.contains("ECDHE-RSA-AES128-GCM-SHA256"),
            "{e}"
        );
        assert!(
            check(
                "ALL:!TLS_AES_256_GCM_SHA384:!TLS_AES_128_GCM_SHA256:!TLS_CHACHA20_POLY1305_SHA256",
                true
            )
            .is_err()
        );
        assert_eq!(suites(&["TLS_AES_128_GCM_SHA256"], true).len(), 1);
    }
}
