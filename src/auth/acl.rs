//! ACL files in Mosquitto's syntax, and the checks made with them.
//!
//! ```text
//! # comment
//! topic read $SYS/#          <- before any `user` line: anonymous clients
//! user alice
//! topic readwrite home/#     <- alice's rules
//! topic deny home/secret
//! pattern write devices/%c/state   <- every client; %c client id, %u user
//! ```
//!
//! Publishing needs `write`, receiving needs `read`; `deny` matching a topic
//! refuses it whatever else matches (midge applies denials before grants,
//! in any order in the file). A client's rules are compiled once, when it
//! connects ([`Subject`]): user-name and client-id substitutions happen
//! there, so checking a message allocates nothing.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::passwd::{FileError, text_lines};
use crate::topic;

/// Access bits of a rule.
pub const READ: u8 = 1;
pub const WRITE: u8 = 2;
/// A `deny` rule has no access bits.
const DENY: u8 = 0;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    filter: Box<str>,
    access: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern {
    template: Box<str>,
    access: u8,
    uses_user: bool,
    uses_client: bool,
}

/// One ACL file, parsed and checked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AclFile {
    /// `topic` lines before the first `user` line.
    anonymous: Arc<[Rule]>,
    users: HashMap<String, Arc<[Rule]>>,
    patterns: Vec<Pattern>,
}

impl AclFile {
    pub fn load(path: &Path) -> Result<AclFile, FileError> {
        let text = std::fs::read(path)
            .map_err(|e| FileError::new(path, 0, format!("unable to read the ACL file: {e}")))?;
        AclFile::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &[u8]) -> Result<AclFile, FileError> {
        let mut anonymous = Vec::new();
        let mut users: HashMap<String, Vec<Rule>> = HashMap::new();
        let mut patterns = Vec::new();
        let mut user: Option<String> = None;
        for item in text_lines(path, text) {
            let (n, line) = item?;
            let err = |message: String| FileError::new(path, n, message);
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_word(line);
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(err("'user' needs a user name".into()));
                    }
                    users.entry(rest.to_string()).or_default();
                    user = Some(rest.to_string());
                }
                "topic" | "pattern" => {
                    let (access, filter) = access_and_topic(rest).map_err(err)?;
                    if keyword == "topic" {
                        if !topic::valid_filter(filter) {
                            return Err(err(format!("'{filter}' is not a valid topic filter")));
                        }
                        let rule = Rule {
                            filter: filter.into(),
                            access,
                        };
                        match &user {
                            Some(u) => users.entry(u.clone()).or_default().push(rule),
                            None => anonymous.push(rule),
                        }
                    } else {
                        // Checked with stand-ins for %u and %c, which are
                        // never replaced by anything holding / + or #.
                        let probe = filter.replace("%u", "u").replace("%c", "c");
                        if !topic::valid_filter(&probe) {
                            return Err(err(format!("'{filter}' is not a valid topic filter")));
                        }
                        patterns.push(Pattern {
                            template: filter.into(),
                            access,
                            uses_user: filter.contains("%u"),
                            uses_client: filter.contains("%c"),
                        });
                    }
                }
                other => {
                    return Err(err(format!(
                        "'{other}' is not 'topic', 'pattern' or 'user'"
                    )));
                }
            }
        }
        Ok(AclFile {
            anonymous: anonymous.into(),
            users: users.into_iter().map(|(u, r)| (u, r.into())).collect(),
            patterns,
        })
    }

    /// The rules for one connection, with `%u` and `%c` filled in.
    pub fn subject(&self, username: Option<&str>, client_id: &str) -> Subject {
        let own = match username {
            Some(u) => self.users.get(u).cloned(),
            None => Some(self.anonymous.clone()),
        };
        let hostile = |s: &str| s.contains(['/', '+', '#']);
        let mut patterns = Vec::new();
        // A user name or client id holding a level separator or a wildcard
        // could reach other clients' topics through a pattern: such a client
        // gets no pattern rules at all (Mosquitto's rule).
        let safe = !hostile(client_id) && !username.is_some_and(hostile);
        if safe {
            for p in &self.patterns {
                if p.uses_user && username.is_none() {
                    continue;
                }
                let mut f = p.template.to_string();
                if p.uses_client {
                    f = f.replace("%c", client_id);
                }
                if let Some(u) = username.filter(|_| p.uses_user) {
                    f = f.replace("%u", u);
                }
                patterns.push(Rule {
                    filter: f.into(),
                    access: p.access,
                });
            }
        }
        Subject {
            own,
            patterns,
            refused_patterns: !safe && !self.patterns.is_empty(),
        }
    }
}

/// `[read|write|readwrite|deny] TOPIC`; without an access word the rule
/// grants both. The topic is the rest of the line and may hold spaces.
fn access_and_topic(rest: &str) -> Result<(u8, &str), String> {
    if rest.is_empty() {
        return Err("the rule has no topic".into());
    }
    let (word, after) = split_word(rest);
    let access = match word {
        "read" => READ,
        "write" => WRITE,
        "readwrite" => READ | WRITE,
        "deny" => DENY,
        _ if after.is_empty() => return Ok((READ | WRITE, word)),
        w => {
            return Err(format!(
                "'{w}' is not an access type (read, write, readwrite or deny)"
            ));
        }
    };
    if after.is_empty() {
        return Err("the rule has no topic".into());
    }
    Ok((access, after))
}

fn split_word(s: &str) -> (&str, &str) {
    match s.split_once([' ', '\t']) {
        Some((a, b)) => (a, b.trim()),
        None => (s, ""),
    }
}

/// One connection's compiled rules.
#[derive(Clone, Debug, Default)]
pub struct Subject {
    /// The user's `topic` rules (the anonymous ones without a user name);
    /// None for a user the file does not name.
    own: Option<Arc<[Rule]>>,
    /// Every applicable `pattern`, substituted.
    patterns: Vec<Rule>,
    /// Patterns exist but the names were unsafe to substitute.
    pub refused_patterns: bool,
}

impl Subject {
    /// Whether `access` (READ or WRITE) to `topic` is allowed: some rule
    /// grants it and no matching `deny` rule refuses it.
    pub fn allows(&self, topic: &str, access: u8) -> bool {
        let own = self.own.as_deref().unwrap_or(&[]);
        let mut granted = false;
        for r in own.iter().chain(&self.patterns) {
            // A topic starting with $ is only matched by a rule that names
            // it ($SYS/#), never by a leading wildcard [MQTT-4.7.2-1].
            if !topic::matches(&r.filter, topic) {
                continue;
            }
            if r.access == DENY {
                return false;
            }
            granted |= r.access & access != 0;
        }
        granted
    }
}

/// Checks every client makes, with or without an ACL file (Mosquitto 2.0):
/// nobody publishes into `$SYS` except a bridge's connection state, and
/// nobody publishes to a `$share` topic.
pub fn dollar_write_allowed(topic: &str) -> bool {
    if topic.starts_with("$SYS") {
        return topic::matches("$SYS/broker/connection/+/state", topic);
    }
    !topic.starts_with("$share")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> AclFile {
        AclFile::parse(Path::new("acl"), text.as_bytes()).expect("parses")
    }

    fn error(text: &str) -> FileError {
        AclFile::parse(Path::new("acl"), text.as_bytes()).unwrap_err()
    }

    /// Seed 004's ACL file.
    const SEED: &str = include_str!("../../tests/fixtures/seed004.acl");

    #[test]
    fn seed_004_rules() {
        // The seed's file, and a user section as the brief's example adds.
        let acl = parse(&format!("{SEED}\nuser x\ntopic x/#\n"));
        let anon = acl.subject(None, "c1");
        assert!(anon.allows("a/b", READ));
        assert!(!anon.allows("a/b", WRITE));
        assert!(
            !anon.allows("$SYS/broker/uptime", READ),
            "# does not cover $SYS"
        );
        assert!(anon.allows("$SYS/broker/connection/c1/state", WRITE));
        assert!(!anon.allows("$SYS/broker/connection/c2/state", WRITE));
        assert!(!anon.allows("user/x/a", WRITE), "%u needs a user name");
        assert!(
            anon.allows("pub/playground/a", WRITE),
            "a pattern without %u is everyone's"
        );

        let x = acl.subject(Some("x"), "c2");
        assert!(x.allows("x/y", READ) && x.allows("x/y", WRITE) && x.allows("x", WRITE));
        assert!(!x.allows("a/b", READ), "anonymous rules are not x's");
        assert!(x.allows("user/x/inbox", READ) && x.allows("user/x/inbox", WRITE));
        assert!(!x.allows("user/y/inbox", READ));
        assert!(x.allows("pub/playground/z", READ));

        let other = acl.subject(Some("y"), "c3");
        assert!(!other.allows("x/y", READ), "y is not in the file");
        assert!(other.allows("user/y/a", WRITE));
    }

    #[test]
    fn deny_wins_wherever_it_is() {
        let acl = parse(
            "topic read #\ntopic deny secret/#\nuser u\ntopic deny a/#\ntopic readwrite a/b\npattern read a/%u",
        );
        let anon = acl.subject(None, "c");
        assert!(anon.allows("open", READ));
        assert!(!anon.allows("secret/x", READ));
        let u = acl.subject(Some("u"), "c");
        assert!(!u.allows("a/b", WRITE), "deny before the grant");
        assert!(!u.allows("a/u", READ), "deny in own rules beats a pattern");
    }

    #[test]
    fn hostile_names_never_widen_access() {
        let acl = parse("pattern readwrite user/%u/#\npattern read dev/%c");
        for (user, id) in [
            ("+", "c"),
            ("#", "c"),
            ("a/b", "c"),
            ("u", "+"),
            ("u", "x/y"),
        ] {
            let s = acl.subject(Some(user), id);
            assert!(s.refused_patterns);
            for t in ["user/a/b/c", "user/+/x", "dev/x/y", "dev/c", "user/u/x"] {
                assert!(!s.allows(t, READ), "{user} {id} {t}");
            }
        }
        let s = acl.subject(Some("u"), "c");
        assert!(s.allows("user/u/x", WRITE) && s.allows("dev/c", READ));
    }

    #[test]
    fn access_words_and_spaces() {
        let acl = parse("  # indented comment\n\ntopic  write  a b/c \nuser  two words\ntopic t");
        let anon = acl.subject(None, "c");
        assert!(anon.allows("a b/c", WRITE) && !anon.allows("a b/c", READ));
        let u = acl.subject(Some("two words"), "c");
        assert!(u.allows("t", READ) && u.allows("t", WRITE));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let cases = [
            ("topic", "no topic"),
            ("topic read", "no topic"),
            ("topic rw a", "not an access type"),
            ("topic read a/#/b", "not a valid topic filter"),
            ("pattern read a/%u#", "not a valid topic filter"),
            ("user", "needs a user name"),
            ("topics read a", "not 'topic', 'pattern' or 'user'"),
        ];
        for (line, want) in cases {
            let e = error(&format!("topic a\n{line}\n"));
            assert_eq!(e.line, 2, "{line}");
            assert!(e.to_string().starts_with("acl:2: "), "{e}");
            assert!(e.message.contains(want), "{line}: {}", e.message);
        }
    }

    #[test]
    fn sys_and_share_writes() {
        assert!(dollar_write_allowed("a/b"));
        assert!(dollar_write_allowed("$other/x"));
        assert!(!dollar_write_allowed("$SYS/broker/uptime"));
        assert!(!dollar_write_allowed("$SYS"));
        assert!(dollar_write_allowed("$SYS/broker/connection/bridge1/state"));
        assert!(!dollar_write_allowed("$share/g/t"));
    }
}
