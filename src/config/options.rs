//! Every option of `man mosquitto.conf` (Mosquitto 2.0 and 2.1) that midge
//! does not act on, with the reason it refuses to start. Nothing is
//! silently ignored: an option is either implemented in `parse.rs` or
//! listed here.

/// Why an option is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A later release implements it.
    NotYet,
    /// midge will not implement it; the text says why.
    Never(&'static str),
}

/// Options a later release of midge implements.
const NOT_YET: &[&str] = &[
    // Mosquitto 2.1.
    "bridge_reload_type",
    "bridge_tcp_keepalive",
    "bridge_tcp_user_timeout",
];

const NO_CONTROL: &str = "midge has no $CONTROL topics (dynamic security); \
     use password_file and acl_file and reload them with SIGHUP";

const NO_PLUGINS: &str = "midge does not load C plugins; use password_file and acl_file";
const NO_PSK: &str = "rustls, the TLS library of midge, has no TLS-PSK; use certificates";
const NO_ENGINE: &str = "OpenSSL engines do not exist in rustls, the TLS library of midge";

/// Options midge will not implement, with the reason.
const NEVER: &[(&str, &str)] = &[
    ("auth_plugin", NO_PLUGINS),
    ("plugin", NO_PLUGINS),
    // Mosquitto 2.1's plugin loading: its password-file and acl-file
    // plugins are midge's password_file and acl_file.
    ("plugin_load", NO_PLUGINS),
    ("plugin_use", NO_PLUGINS),
    ("global_plugin", NO_PLUGINS),
    ("enable_control_api", NO_CONTROL),
    ("auth_plugin_deny_special_chars", NO_PLUGINS),
    ("psk_file", NO_PSK),
    ("psk_hint", NO_PSK),
    ("bridge_identity", NO_PSK),
    ("bridge_psk", NO_PSK),
    ("tls_engine", NO_ENGINE),
    ("tls_engine_kpass_sha1", NO_ENGINE),
    ("tls_keyform", NO_ENGINE),
];

/// The refusal for `option`, or None when it is not a Mosquitto option that
/// midge refuses (it is implemented, or unknown).
pub fn refusal(option: &str) -> Option<Refusal> {
    if NOT_YET.contains(&option) {
        return Some(Refusal::NotYet);
    }
    if option.starts_with("auth_opt_") || option.starts_with("plugin_opt_") {
        return Some(Refusal::Never(NO_PLUGINS));
    }
    NEVER
        .iter()
        .find(|(name, _)| *name == option)
        .map(|(_, why)| Refusal::Never(why))
}
