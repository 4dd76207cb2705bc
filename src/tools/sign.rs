//! Signed messages: ECDSA on secp256k1, in the format of the users'
//! python-ecdsa scripts. The payload is `TIMESTAMP MESSAGE ":" SIGNATURE`:
//! TIMESTAMP the 10-digit Unix time, SIGNATURE the base64 of r and s
//! (32 bytes each) over TIMESTAMP and MESSAGE. python-ecdsa signs SHA-1 by
//! default, hence `--sign-digest`. The crypto is RustCrypto's (`k256`).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use k256::ecdsa::{Signature, SigningKey, VerifyingKey};
use k256::pkcs8::DecodePublicKey;
use sha1::Digest as _;

use super::args::Digest;

fn prehash(digest: Digest, data: &[u8]) -> Vec<u8> {
    match digest {
        Digest::Sha1 => sha1::Sha1::digest(data).to_vec(),
        Digest::Sha256 => sha2::Sha256::digest(data).to_vec(),
    }
}

fn read_pem(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| {
        format!(
            "Error: Unable to read key file \"{}\": {}.\n",
            path.display(),
            crate::link::strerror(&e)
        )
    })
}

/// `midge_pub --sign-key`: a private key and the digest to sign.
pub struct Signer {
    key: SigningKey,
    digest: Digest,
}

impl Signer {
    /// Reads an `EC PRIVATE KEY` PEM (`openssl ecparam -genkey -name
    /// secp256k1 -noout`) or a PKCS#8 `PRIVATE KEY` PEM.
    pub fn load(path: &Path, digest: Digest) -> Result<Signer, String> {
        let pem = read_pem(path)?;
        let secret = k256::SecretKey::from_sec1_pem(&pem)
            .or_else(|_| {
                use k256::pkcs8::DecodePrivateKey;
                k256::SecretKey::from_pkcs8_pem(&pem)
            })
            .map_err(|_| {
                format!(
                    "Error: \"{}\" is not a secp256k1 private key in PEM form.\n",
                    path.display()
                )
            })?;
        Ok(Signer {
            key: SigningKey::from(secret),
            digest,
        })
    }

    /// The signed payload for `message`, stamped with the current time.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.sign_at(now, message)
    }

    fn sign_at(&self, unix_time: u64, message: &[u8]) -> Vec<u8> {
        let mut out = format!("{unix_time:010}").into_bytes();
        out.extend_from_slice(message);
        let hash = prehash(self.digest, &out);
        // A digest of 20 or 32 bytes is always a valid prehash for
        // secp256k1; should it ever fail, the message goes out unsigned
        // and every verifier rejects it.
        let sig: Option<Signature> = self.key.sign_prehash(&hash).ok();
        out.push(b':');
        if let Some(sig) = sig {
            out.extend_from_slice(BASE64.encode(sig.to_bytes()).as_bytes());
        }
        out
    }
}

/// Why `midge_sub --verify-key` did not print a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    /// No `:`, no 10-digit timestamp, bad base64 or a signature that does
    /// not verify.
    BadSignature,
    /// Verified, but its timestamp is not newer than the last accepted.
    Replay { timestamp: u64, last: u64 },
}

/// `midge_sub --verify-key`: a public key and the newest timestamp seen.
pub struct Verifier {
    key: VerifyingKey,
    digest: Digest,
    last: Option<u64>,
}

impl Verifier {
    /// Reads a `PUBLIC KEY` PEM (`openssl ec -pubout`).
    pub fn load(path: &Path, digest: Digest) -> Result<Verifier, String> {
        let pem = read_pem(path)?;
        let key = k256::PublicKey::from_public_key_pem(&pem).map_err(|_| {
            format!(
                "Error: \"{}\" is not a secp256k1 public key in PEM form.\n",
                path.display()
            )
        })?;
        Ok(Verifier {
            key: VerifyingKey::from(key),
            digest,
            last: None,
        })
    }

    /// Checks a signed payload; returns the message without timestamp and
    /// signature. The payload is split on its last `:`.
    pub fn check(&mut self, payload: &[u8]) -> Result<Vec<u8>, Rejected> {
        let colon = payload
            .iter()
            .rposition(|&b| b == b':')
            .ok_or(Rejected::BadSignature)?;
        let (clear, sig) = (&payload[..colon], &payload[colon + 1..]);
        let stamp = clear.get(..10).ok_or(Rejected::BadSignature)?;
        if !stamp.iter().all(u8::is_ascii_digit) {
            return Err(Rejected::BadSignature);
        }
        let timestamp: u64 = std::str::from_utf8(stamp)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(Rejected::BadSignature)?;
        let raw = BASE64.decode(sig).map_err(|_| Rejected::BadSignature)?;
        let sig = Signature::from_slice(&raw).map_err(|_| Rejected::BadSignature)?;
        // python-ecdsa does not normalise s; k256 wants the low form.
        let sig = sig.normalize_s().unwrap_or(sig);
        self.key
            .verify_prehash(&prehash(self.digest, clear), &sig)
            .map_err(|_| Rejected::BadSignature)?;
        if let Some(last) = self.last {
            if timestamp <= last {
                return Err(Rejected::Replay { timestamp, last });
            }
        }
        self.last = Some(timestamp);
        Ok(clear[10..].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl ecparam -genkey -name secp256k1 -noout` and `openssl ec -pubout`.
    const PRIVATE: &str = "-----BEGIN EC PRIVATE KEY-----
MHQCAQEEIC6AN3QrhSKASFYRK4klPcnAtyH7+9XvfHUfQDaAKIuWoAcGBSuBBAAK
oUQDQgAEjqGALestuOSbn8al/g+CtHwi1i5cHyPYygGt/5J16lW0LgkfFyRcSNfy
6+BxeykBBDOo1z3EJ46ZmNupabOkxQ==
-----END EC PRIVATE KEY-----
";
    const PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAEjqGALestuOSbn8al/g+CtHwi1i5cHyPY
ygGt/5J16lW0LgkfFyRcSNfy6+BxeykBBDOo1z3EJ46ZmNupabOkxQ==
-----END PUBLIC KEY-----
";

    fn keys(digest: Digest) -> (Signer, Verifier) {
        let secret = k256::SecretKey::from_sec1_pem(PRIVATE).expect("private key");
        let public = k256::PublicKey::from_public_key_pem(PUBLIC).expect("public key");
        (
            Signer {
                key: SigningKey::from(secret),
                digest,
            },
            Verifier {
                key: VerifyingKey::from(public),
                digest,
                last: None,
            },
        )
    }

    #[test]
    fn signs_verifies_and_refuses_replays() {
        for d in [Digest::Sha1, Digest::Sha256] {
            let (s, mut v) = keys(d);
            let m = s.sign_at(1_700_000_000, b"a:b");
            assert!(m.starts_with(b"1700000000a:b:"));
            assert_eq!(v.check(&m), Ok(b"a:b".to_vec()));
            assert_eq!(
                v.check(&m),
                Err(Rejected::Replay {
                    timestamp: 1_700_000_000,
                    last: 1_700_000_000
                })
            );
            let newer = s.sign_at(1_700_000_001, b"x");
            let mut forged = newer.clone();
            forged[10] = b'y';
            assert_eq!(v.check(&forged), Err(Rejected::BadSignature));
            assert_eq!(v.check(&newer), Ok(b"x".to_vec()));
        }
        let (s, _) = keys(Digest::Sha1);
        let (_, mut v256) = keys(Digest::Sha256);
        assert_eq!(v256.check(&s.sign_at(1, b"m")), Err(Rejected::BadSignature));
        for junk in [&b""[..], b"no colon", b"12:abc", b"abcdefghijk:AAAA"] {
            assert_eq!(v256.check(junk), Err(Rejected::BadSignature));
        }
    }
}
