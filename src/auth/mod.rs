//! Who may connect, and what they may publish and receive: the password
//! and ACL files of mosquitto.conf, read as Mosquitto's tools write them.
//!
//! [`Auth`] holds every security scope: one for the whole broker, or one per
//! listener with `per_listener_settings true`. The client thread checks the
//! password when a client connects; the router checks ACLs per message.
//! A reload builds a whole new `Auth` first, so a file that no longer reads
//! keeps the previous rules in force.

pub mod acl;
pub mod passwd;

use std::sync::Arc;

use acl::AclFile;
use passwd::{FileError, Passwords};

use crate::config::{Config, Listener};

/// The rules of one scope.
#[derive(Debug, Default)]
pub struct Scope {
    pub allow_anonymous: bool,
    pub passwords: Option<Passwords>,
    pub acl: Option<AclFile>,
}

impl Scope {
    /// A scope that lets nobody in and grants nothing: an ACL without rules.
    pub fn nothing() -> Scope {
        Scope {
            allow_anonymous: false,
            passwords: None,
            acl: Some(AclFile::default()),
        }
    }

    /// Mosquitto 2.0's decision for a CONNECT. Without a password file,
    /// `allow_anonymous` decides for everyone, user name or not; with one,
    /// a client that gives a user name must give that user's password.
    pub fn authenticate(&self, username: Option<&str>, password: Option<&[u8]>) -> bool {
        self.authenticate_with(self.allow_anonymous, username, password)
    }

    /// As [`Scope::authenticate`], with the listener's own answer for
    /// clients without a password check (`listener_allow_anonymous`).
    pub fn authenticate_with(
        &self,
        allow_anonymous: bool,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> bool {
        match (&self.passwords, username) {
            (Some(p), Some(u)) => p.verify(u, password),
            _ => allow_anonymous,
        }
    }
}

/// Every scope of the running configuration.
#[derive(Debug, Default)]
pub struct Auth {
    /// Index 0 when settings are global, else the listener's index.
    scopes: Vec<Arc<Scope>>,
    per_listener: bool,
}

impl Auth {
    /// Reads every password and ACL file `config` names.
    pub fn load(config: &Config) -> Result<Auth, FileError> {
        let scope = |allow_anonymous: bool, s: &crate::config::Security| {
            Ok::<_, FileError>(Arc::new(Scope {
                allow_anonymous,
                passwords: s
                    .password_file
                    .as_deref()
                    .map(Passwords::load)
                    .transpose()?,
                acl: s.acl_file.as_deref().map(AclFile::load).transpose()?,
            }))
        };
        let scopes = if config.per_listener_settings {
            config
                .listeners
                .iter()
                .map(|l| scope(config.allow_anonymous(l), &l.security))
                .collect::<Result<_, _>>()?
        } else {
            let anonymous = config.security.allow_anonymous.unwrap_or(config.local_only);
            vec![scope(anonymous, &config.security)?]
        };
        Ok(Auth {
            scopes,
            per_listener: config.per_listener_settings,
        })
    }

    /// The scope index of a listener's clients.
    pub fn index(&self, listener: &Listener) -> usize {
        if self.per_listener { listener.index } else { 0 }
    }

    /// The rules of scope `i`. An index no scope has (a session saved
    /// under a listener's scope that the configuration no longer has) gets
    /// a scope that lets nobody in and grants nothing: a missing scope
    /// means "no access", never "no checks".
    pub fn scope(&self, i: usize) -> Arc<Scope> {
        self.scopes
            .get(i)
            .cloned()
            .unwrap_or_else(|| Arc::new(Scope::nothing()))
    }

    /// Whether scope `i` exists in the configuration in force.
    pub fn has_scope(&self, i: usize) -> bool {
        i < self.scopes.len()
    }

    /// Whether any scope has an ACL file (else publishes need no lookup).
    pub fn has_acl(&self) -> bool {
        self.scopes.iter().any(|s| s.acl.is_some())
    }

    /// One warning per password file line left out (a hash that cannot be
    /// read), as Mosquitto logs "Invalid password hash for user ...,
    /// removing entry." and goes on. A file shared by several scopes is
    /// named once.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for p in self.scopes.iter().filter_map(|s| s.passwords.as_ref()) {
            for e in p.skipped() {
                let n = format!("Warning: {e}; that user cannot log in (the entry is left out).");
                if !notes.contains(&n) {
                    notes.push(n);
                }
            }
        }
        notes
    }

    /// Number of user names and ACL files loaded, for the log.
    pub fn summary(&self) -> (usize, usize) {
        self.scopes.iter().fold((0, 0), |(u, a), s| {
            (
                u + s.passwords.as_ref().map_or(0, Passwords::len),
                a + usize::from(s.acl.is_some()),
            )
        })
    }
}
