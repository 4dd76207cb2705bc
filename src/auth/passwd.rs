//! Password files as `mosquitto_passwd` writes them: one `user:hash` per
//! line, the hash in one of Mosquitto's two formats:
//!
//! - `$6$SALT$HASH`: SHA-512 of the password followed by the salt;
//! - `$7$ITERATIONS$SALT$HASH`: PBKDF2-HMAC-SHA512 (Mosquitto 2.0's default,
//!   101 iterations), a 64-byte key.
//!
//! Salt and hash are standard base64 with padding. Comparison is in constant
//! time. The same module writes lines for `midge_passwd`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// The salt length `mosquitto_passwd` uses.
pub const SALT_LEN: usize = 12;
/// Mosquitto 2.0's PBKDF2 iteration count.
pub const DEFAULT_ITERATIONS: u32 = 101;
/// An upper bound on iterations read from a file, so that one line cannot
/// make every login to that user name cost the board seconds of CPU. A
/// PBKDF2-SHA512 iteration takes about 2 us on a Cortex-A7, so 100,000
/// iterations are about 0.2 s of a board's core per login attempt: a
/// thousand times what `mosquitto_passwd` writes (101), and half of what
/// current guidance asks of a server with a fast CPU. A line asking for
/// more is left out when the file is read, naming the file and the line.
const MAX_ITERATIONS: u32 = 100_000;

/// A hashing scheme of `mosquitto_passwd -H`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `sha512`, `$6$`.
    Sha512,
    /// `sha512-pbkdf2`, `$7$`, with this many iterations.
    Pbkdf2(u32),
}

/// A stored password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Hash {
    scheme: Scheme,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

// The hash never goes to a log.
impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({:?})", self.scheme)
    }
}

impl Hash {
    /// Hashes `password` with `salt`.
    pub fn new(scheme: Scheme, password: &[u8], salt: &[u8]) -> Hash {
        Hash {
            scheme,
            salt: salt.to_vec(),
            hash: digest(scheme, password, salt),
        }
    }

    /// Reads `$6$...` or `$7$...`; the error says what is wrong.
    pub fn decode(s: &str) -> Result<Hash, String> {
        let fields: Vec<&str> = s.split('$').collect();
        let b64 = |what: &str, v: &str| {
            B64.decode(v)
                .map_err(|_| format!("the {what} is not valid base64"))
        };
        match fields.as_slice() {
            ["", "6", salt, hash] => {
                let h = Hash {
                    scheme: Scheme::Sha512,
                    salt: b64("salt", salt)?,
                    hash: b64("hash", hash)?,
                };
                h.check_len()
            }
            ["", "7", iterations, salt, hash] => {
                let n: u32 = iterations
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_ITERATIONS).contains(n))
                    .ok_or_else(|| {
                        format!("'{iterations}' is not an iteration count (1 to {MAX_ITERATIONS})")
                    })?;
                let h = Hash {
                    scheme: Scheme::Pbkdf2(n),
                    salt: b64("salt", salt)?,
                    hash: b64("hash", hash)?,
                };
                h.check_len()
            }
            _ if !s.starts_with('$') => Err(
                "the password is not hashed (run `midge_passwd -U FILE` to hash a plain-text file)"
                    .into(),
            ),
            _ => Err("the hash is neither $6$SALT$HASH (sha512) nor \
                 $7$ITERATIONS$SALT$HASH (sha512-pbkdf2)"
                .into()),
        }
    }

    fn check_len(self) -> Result<Hash, String> {
        if self.hash.len() != 64 {
            return Err(format!(
                "the hash is {} bytes long, a SHA-512 hash is 64",
                self.hash.len()
            ));
        }
        if self.salt.is_empty() {
            return Err("the salt is empty".into());
        }
        Ok(self)
    }

    /// True when `password` hashes to this hash (compared in constant time).
    /// A zero-length password never matches, whatever the hash is of
    /// (Mosquitto refuses it too: the CVE-2018-12546 class), though it is
    /// hashed all the same, so the answer takes the same time.
    pub fn verify(&self, password: &[u8]) -> bool {
        let h = digest(self.scheme, password, &self.salt);
        let same: bool = h.ct_eq(&self.hash).into();
        same && !password.is_empty()
    }

    /// The text `mosquitto_passwd` writes after `user:`.
    pub fn encode(&self) -> String {
        let salt = B64.encode(&self.salt);
        let hash = B64.encode(&self.hash);
        match self.scheme {
            Scheme::Sha512 => format!("$6${salt}${hash}"),
            Scheme::Pbkdf2(n) => format!("$7${n}${salt}${hash}"),
        }
    }
}

fn digest(scheme: Scheme, password: &[u8], salt: &[u8]) -> Vec<u8> {
    match scheme {
        Scheme::Sha512 => {
            let mut d = Sha512::new();
            d.update(password);
            d.update(salt);
            d.finalize().to_vec()
        }
        Scheme::Pbkdf2(n) => {
            let mut out = vec![0u8; 64];
            pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, n, &mut out);
            out
        }
    }
}

/// A problem with a password file, naming the file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub path: PathBuf,
    /// 0 when the file itself could not be read.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
        }
    }
}

impl std::error::Error for FileError {}

impl FileError {
    pub fn new(path: &Path, line: usize, message: impl Into<String>) -> FileError {
        FileError {
            path: path.to_path_buf(),
            line,
            message: message.into(),
        }
    }
}

/// The lines of a password or ACL file `path` as text, with their 1-based
/// numbers; a line that is not UTF-8 is an error naming it.
pub fn text_lines<'a>(
    path: &'a Path,
    text: &'a [u8],
) -> impl Iterator<Item = Result<(usize, &'a str), FileError>> + 'a {
    lines(text).map(move |(n, l)| {
        std::str::from_utf8(l)
            .map(|l| (n, l))
            .map_err(|_| FileError::new(path, n, "the line is not valid UTF-8"))
    })
}

/// The users of one password file.
#[derive(Debug)]
pub struct Passwords {
    users: HashMap<String, Hash>,
    /// Lines left out: a hash that cannot be read, as Mosquitto removes
    /// such an entry and goes on. That user cannot log in.
    skipped: Vec<FileError>,
    /// Hashed for a user name that is not in the file, so that an unknown
    /// user takes as long as a wrong password.
    decoy: Hash,
}

impl Passwords {
    /// Reads and checks a whole file: any bad line is an error.
    pub fn load(path: &Path) -> Result<Passwords, FileError> {
        let text = std::fs::read(path).map_err(|e| FileError {
            path: path.to_path_buf(),
            line: 0,
            message: format!("unable to read the password file: {}", e),
        })?;
        Passwords::parse(path, &text)
    }

    /// Parses the text of `path`. A line whose hash cannot be read (not
    /// hashed, an unknown scheme, bad base64, an iteration count over the
    /// bound) or that has no user name is left out and kept in
    /// [`Passwords::skipped`]; text that is not UTF-8 and a user named twice
    /// are errors.
    pub fn parse(path: &Path, text: &[u8]) -> Result<Passwords, FileError> {
        let mut users = HashMap::new();
        let mut skipped = Vec::new();
        for item in text_lines(path, text) {
            let (i, line) = item?;
            let err = |message: String| FileError::new(path, i, message);
            let Some((user, hash)) = split_line(line) else {
                continue;
            };
            let Some(hash) = hash else {
                skipped.push(err(format!(
                    "the line for user '{user}' has no ':' and no password hash"
                )));
                continue;
            };
            if user.is_empty() {
                skipped.push(err("the line has no user name before ':'".into()));
                continue;
            }
            let hash = match Hash::decode(hash) {
                Ok(h) => h,
                Err(m) => {
                    skipped.push(err(format!("user '{user}': {m}")));
                    continue;
                }
            };
            if users.insert(user.to_string(), hash).is_some() {
                return Err(err(format!("user '{user}' appears twice")));
            }
        }
        // Hashed as the file's users are, so it takes as long as theirs.
        let scheme = users
            .values()
            .next()
            .map_or(Scheme::Pbkdf2(DEFAULT_ITERATIONS), |h: &Hash| h.scheme);
        let decoy = Hash::new(scheme, b"", b"midge-decoy-salt");
        Ok(Passwords {
            users,
            skipped,
            decoy,
        })
    }

    /// True when `user` is in the file and `password` is theirs. Without a
    /// password, or for a user name not in the file, a hash is computed all
    /// the same, so the time taken does not tell which user names exist.
    pub fn verify(&self, user: &str, password: Option<&[u8]>) -> bool {
        let known = self.users.get(user);
        let hash = known.unwrap_or(&self.decoy);
        let matched = hash.verify(password.unwrap_or_default());
        matched && known.is_some() && password.is_some()
    }

    /// The lines left out when the file was read, each naming its line.
    pub fn skipped(&self) -> &[FileError] {
        &self.skipped
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Lines of `text` with their 1-based numbers, without line endings.
pub fn lines(text: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    text.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        // A final newline leaves an empty last piece.
        .filter(|(_, l)| !l.is_empty())
}

/// A password-file line as `(user, Some(rest))`, `(user, None)` for a line
/// without `:`, or None for a comment or a blank line. Blanks around the
/// user and the hash are trimmed, as Mosquitto does.
pub fn split_line(line: &str) -> Option<(&str, Option<&str>)> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    Some(match line.split_once(':') {
        Some((u, rest)) => (u.trim(), Some(rest.trim())),
        None => (t, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by Debian's mosquitto_passwd 2.0.11 (`-b f user1 secret`, and
    // `-H sha512 -b f user3 pw3`).
    const PBKDF2_LINE: &str = "user1:$7$101$0kJdgRQEB4QUSQrg$TVrtb0UQQejEjnyz1UVlBJ+USbEpdImjVtvvktPJAMohAleQKSfFdYMdPFyAYouAjsAJyI59RfYkqnf2VIYOjQ==";
    const SHA512_LINE: &str = "user3:$6$t0eZjcKbCFBiSCTt$vx7rTf5GN/mD1Cd3s9fQ6p3hkj3+cr2ah0H7zwkyC6Ol9rIvjPP4w+5+tVWzIr42SeblrJQKgP5WPdZFFEZc8w==";

    fn parse(text: &str) -> Result<Passwords, FileError> {
        Passwords::parse(Path::new("pw"), text.as_bytes())
    }

    #[test]
    fn reads_both_formats_mosquitto_writes() {
        let p = parse(&format!("{PBKDF2_LINE}\n{SHA512_LINE}\n")).unwrap();
        assert_eq!(p.len(), 2);
        assert!(p.verify("user1", Some(b"secret")));
        assert!(!p.verify("user1", Some(b"Secret")));
        assert!(!p.verify("user1", Some(b"")));
        assert!(!p.verify("user1", None));
        assert!(p.verify("user3", Some(b"pw3")));
        assert!(!p.verify("user3", Some(b"pw")));
        assert!(!p.verify("nobody", Some(b"secret")));
    }

    #[test]
    fn writes_what_it_reads() {
        for scheme in [Scheme::Sha512, Scheme::Pbkdf2(101), Scheme::Pbkdf2(1000)] {
            let h = Hash::new(scheme, b"pass word", b"0123456789ab");
            let back = Hash::decode(&h.encode()).unwrap();
            assert_eq!(back, h);
            assert!(back.verify(b"pass word"));
            assert!(!back.verify(b"pass words"));
        }
        // The salt of a mosquitto_passwd line, re-hashed, gives its hash.
        let (_, hash) = split_line(PBKDF2_LINE).unwrap();
        let h = Hash::decode(hash.unwrap()).unwrap();
        assert_eq!(
            Hash::new(h.scheme, b"secret", &h.salt).encode(),
            hash.unwrap()
        );
    }

    #[test]
    fn comments_blank_lines_and_crlf_are_fine() {
        let p = parse(&format!("# users\n\n  \r\n{PBKDF2_LINE}\r\n")).unwrap();
        assert!(p.verify("user1", Some(b"secret")));
    }

    #[test]
    fn every_bad_line_names_its_line() {
        let cases = [
            ("alice:plain", "is not hashed"),
            ("alice", "no ':'"),
            (":$6$abc$def", "no user name"),
            ("alice:$5$abc$def", "neither"),
            ("alice:$6$!!$def", "salt is not valid base64"),
            ("alice:$6$YWJj$YWJj", "64"),
            ("alice:$7$lots$YWJj$YWJj", "iteration count"),
            ("alice:$7$0$YWJj$YWJj", "iteration count"),
            ("alice:$7$101$YWJj", "neither"),
        ];
        for (line, want) in cases {
            // The bad line is left out, named; the good one still works.
            let p = parse(&format!("# first\n{line}\n{PBKDF2_LINE}\n")).unwrap();
            let [e] = p.skipped() else {
                panic!("{line}: {:?}", p.skipped())
            };
            assert_eq!(e.line, 2, "{line}");
            assert!(e.to_string().starts_with("pw:2: "), "{e}");
            assert!(e.message.contains(want), "{line}: {e}");
            assert_eq!(p.len(), 1, "{line}");
            assert!(p.verify("user1", Some(b"secret")));
            assert!(!p.verify("alice", Some(b"plain")), "{line}");
        }
        let e = parse(&format!("{PBKDF2_LINE}\n{PBKDF2_LINE}\n")).unwrap_err();
        assert_eq!(
            (e.line, e.message.as_str()),
            (2, "user 'user1' appears twice")
        );
        let e = Passwords::parse(Path::new("pw"), b"a\xff:x\n").unwrap_err();
        assert!(e.message.contains("UTF-8"));
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let e = Passwords::load(Path::new("/nonexistent/pw")).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e.to_string().contains("/nonexistent/pw"), "{e}");
    }
}
