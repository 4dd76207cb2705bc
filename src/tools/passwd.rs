//! `midge_passwd`: manages password files, as `mosquitto_passwd` does, with
//! the same options, prompts, messages and exit codes. Files it writes are
//! read by Mosquitto, and it reads files Mosquitto's tool wrote.
//!
//! Every change is written to a temporary file next to the old one, synced,
//! and renamed over it: an interrupted run leaves the old file whole. A new
//! file gets mode 0600; an existing file keeps its mode and owner.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::auth::passwd::{DEFAULT_ITERATIONS, Hash, SALT_LEN, Scheme, lines, split_line};

const USAGE: &str = "\
midge_passwd is a tool for managing password files for midge and Mosquitto.

Usage: midge_passwd [-H sha512 | -H sha512-pbkdf2] [-c | -D] passwordfile username
       midge_passwd [-H sha512 | -H sha512-pbkdf2] [-c] -b passwordfile username password
       midge_passwd -U passwordfile
 -b : run in batch mode to allow passing passwords on the command line.
 -c : create a new password file. This will overwrite existing files.
 -D : delete the username rather than adding/updating its password.
 -H : specify the hashing algorithm. Defaults to sha512-pbkdf2, which is recommended.
      Mosquitto 1.6 and earlier defaulted to sha512.
 -U : update a plain text password file to use hashed passwords.

See midge_passwd(1) for more information.
";

/// A failure: the message for stderr and the exit code.
#[derive(Debug)]
struct Fail(String, u8);

fn fail<T>(msg: impl Into<String>) -> Result<T, Fail> {
    Err(Fail(msg.into(), 1))
}

pub fn main(args: Vec<OsString>) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(msg, code)) => {
            if !msg.is_empty() {
                eprintln!("{msg}");
            }
            ExitCode::from(code)
        }
    }
}

enum Action {
    Set {
        user: String,
        password: Option<String>,
    },
    Delete {
        user: String,
    },
    Hash,
}

fn run(args: Vec<OsString>) -> Result<(), Fail> {
    let usage = || Fail(String::new(), 1);
    let mut opts = getopts::Options::new();
    opts.optflag("b", "", "batch mode");
    opts.optflag("c", "", "create");
    opts.optflag("D", "", "delete");
    opts.optopt("H", "", "hash", "TYPE");
    opts.optflag("U", "", "update a plain-text file");
    opts.optflag("h", "help", "help");
    let m = match opts.parse(&args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("Error: {e}.");
            print!("{USAGE}");
            return Err(usage());
        }
    };
    if m.opt_present("h") {
        print!("{USAGE}");
        return Ok(());
    }
    let scheme = match m.opt_str("H").as_deref() {
        None | Some("sha512-pbkdf2") => Scheme::Pbkdf2(DEFAULT_ITERATIONS),
        Some("sha512") => Scheme::Sha512,
        Some(other) => return fail(format!("Error: Unknown hash type '{other}'")),
    };
    let (create, delete, batch, update) = (
        m.opt_present("c"),
        m.opt_present("D"),
        m.opt_present("b"),
        m.opt_present("U"),
    );
    if create && delete {
        return fail("Error: -c and -D cannot be used together.");
    }
    if update && (create || delete || batch) {
        return fail("Error: -U cannot be used with -b, -c or -D.");
    }
    let free = &m.free;
    let (file, action) = match (update, batch, delete, free.as_slice()) {
        (true, _, _, [file]) => (file, Action::Hash),
        (true, _, _, _) => return fail("Error: -U argument given but password file missing."),
        (false, true, true, _) => return fail("Error: -b and -D cannot be used together."),
        (false, true, false, [file, user, password, ..]) => (
            file,
            Action::Set {
                user: user.clone(),
                password: Some(password.clone()),
            },
        ),
        (false, false, true, [file, user]) => (file, Action::Delete { user: user.clone() }),
        (false, false, false, [file, user]) => (
            file,
            Action::Set {
                user: user.clone(),
                password: None,
            },
        ),
        _ => {
            print!("{USAGE}");
            return Err(usage());
        }
    };
    let path = Path::new(file);
    match action {
        Action::Set { user, password } => {
            if user.contains(':') {
                return fail("Error: Username must not contain the ':' character.");
            }
            if user.len() > 65535 {
                return fail("Error: Username must be less than 65536 characters long.");
            }
            // Read the old file first: a missing file fails before any prompt.
            let old = if create { None } else { Some(read(path)?) };
            let password = match password {
                Some(p) => p,
                None => ask_password()?,
            };
            if password.is_empty() {
                return fail("Error: Empty password.");
            }
            if password.len() > 65535 {
                return fail("Error: Password must be less than 65536 characters long.");
            }
            let line = format!("{user}:{}", new_hash(scheme, &password)?.encode());
            let text = match old {
                None => format!("{line}\n"),
                Some(old) => replace_user(&old, &user, Some(&line)).0,
            };
            write(path, &text, create)
        }
        Action::Delete { user } => {
            let old = read(path)?;
            let (text, found) = replace_user(&old, &user, None);
            if !found {
                return fail(format!("Warning: User {user} not found in password file."));
            }
            write(path, &text, false)
        }
        Action::Hash => {
            let old = read(path)?;
            let text = hash_plain(&old, scheme)?;
            write(path, &text, false)
        }
    }
}

fn read(path: &Path) -> Result<String, Fail> {
    let bytes = fs::read(path).map_err(|e| {
        Fail(
            format!(
                "Error: Unable to open password file {}. {}.",
                path.display(),
                io_reason(&e)
            ),
            1,
        )
    })?;
    String::from_utf8(bytes).map_err(|_| {
        Fail(
            format!(
                "Error: Password file {} is not valid UTF-8.",
                path.display()
            ),
            1,
        )
    })
}

/// strerror(3)'s text without Rust's " (os error N)".
fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// `old` with `user`'s line replaced by `line` (or removed when None); a
/// user not found gets `line` appended. Other lines stay as they are.
/// Returns the text and whether the user was found.
fn replace_user(old: &str, user: &str, line: Option<&str>) -> (String, bool) {
    let mut out = String::with_capacity(old.len() + 128);
    let mut found = false;
    for (_, l) in lines(old.as_bytes()) {
        let l = String::from_utf8_lossy(l);
        if split_line(&l).is_some_and(|(u, _)| u == user) {
            found = true;
            if let Some(new) = line {
                out.push_str(new);
                out.push('\n');
            }
            continue;
        }
        out.push_str(&l);
        out.push('\n');
    }
    if let (false, Some(new)) = (found, line) {
        out.push_str(new);
        out.push('\n');
    }
    (out, found)
}

/// `-U`: hashes every plain-text password. A line that already holds a
/// hash is kept as it is (hashing it again would lock its user out).
fn hash_plain(old: &str, scheme: Scheme) -> Result<String, Fail> {
    let mut out = String::with_capacity(old.len() * 4);
    for (n, l) in lines(old.as_bytes()) {
        let l = String::from_utf8_lossy(l);
        match split_line(&l) {
            Some((user, Some(pw))) if !pw.is_empty() => {
                if pw.starts_with("$6$") || pw.starts_with("$7$") {
                    eprintln!(
                        "Warning: User {user} (line {n}) already has a hashed password; left as it is."
                    );
                    out.push_str(&l);
                } else {
                    out.push_str(&format!("{user}:{}", new_hash(scheme, pw)?.encode()));
                }
            }
            _ => out.push_str(&l),
        }
        out.push('\n');
    }
    Ok(out)
}

fn new_hash(scheme: Scheme, password: &str) -> Result<Hash, Fail> {
    let mut salt = [0u8; SALT_LEN];
    crate::sys::random_bytes(&mut salt)
        .map_err(|e| Fail(format!("Error: Unable to get random data: {e}."), 1))?;
    Ok(Hash::new(scheme, password.as_bytes(), &salt))
}

/// Asks twice, without echo on a terminal. Like mosquitto_passwd, it reads
/// standard input even when it is not a terminal.
fn ask_password() -> Result<String, Fail> {
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut ask = |prompt: &str| -> Result<String, Fail> {
        print!("{prompt}");
        let _ = io::stdout().flush();
        let quiet = crate::sys::EchoOff::new(0);
        let mut line = String::new();
        let r = input.read_line(&mut line);
        drop(quiet);
        // The typed newline was not echoed; mosquitto_passwd prints one
        // after each prompt, terminal or not.
        println!();
        match r {
            Ok(_) => Ok(line.trim_end_matches(['\n', '\r']).to_string()),
            Err(e) => fail(format!("Error: Unable to read the password: {e}.")),
        }
    };
    let first = ask("Password: ")?;
    if first.is_empty() {
        return fail("Error: Empty password.");
    }
    let second = ask("Reenter password: ")?;
    if first != second {
        return Err(Fail("Error: Passwords do not match.".into(), 2));
    }
    Ok(first)
}

/// Writes `text` to `path` through a synced temporary file and a rename.
fn write(path: &Path, text: &str, create: bool) -> Result<(), Fail> {
    let err = |what: &str, e: io::Error| {
        Fail(
            format!(
                "Error: Unable to {what} {}. {}.",
                path.display(),
                io_reason(&e)
            ),
            1,
        )
    };
    let old = if create {
        None
    } else {
        fs::metadata(path).ok()
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        if let Some(m) = &old {
            f.set_permissions(fs::Permissions::from_mode(m.mode() & 0o7777))?;
            // Only root can give a file away; as anyone else this keeps ours.
            if crate::sys::euid() == 0 {
                std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
            }
        }
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        err("write password file", e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacing_keeps_other_lines() {
        let old = "# users\na:$6$x$y\nb:$6$x$y\n";
        let (t, found) = replace_user(old, "a", Some("a:NEW"));
        assert!(found);
        assert_eq!(t, "# users\na:NEW\nb:$6$x$y\n");
        let (t, found) = replace_user(old, "c", Some("c:NEW"));
        assert!(!found);
        assert_eq!(t, "# users\na:$6$x$y\nb:$6$x$y\nc:NEW\n");
        let (t, found) = replace_user(old, "b", None);
        assert!(found);
        assert_eq!(t, "# users\na:$6$x$y\n");
    }

    #[test]
    fn hashing_a_plain_file_leaves_hashes_alone() {
        let t = hash_plain("a:one\n# c\nb:$7$101$x$y\n", Scheme::Pbkdf2(101)).unwrap();
        let l: Vec<&str> = t.lines().collect();
        assert!(l[0].starts_with("a:$7$101$"));
        assert_eq!(&l[1..], ["# c", "b:$7$101$x$y"]);
        let (_, h) = split_line(l[0]).unwrap();
        assert!(Hash::decode(h.unwrap()).unwrap().verify(b"one"));
    }
}
