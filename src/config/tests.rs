use std::path::Path;
use std::time::Duration;

use super::*;

fn parse(t: &str) -> Result<Config, ConfigError> {
    Config::parse(t, Path::new("/etc/midge/midge.conf"))
}

fn err(t: &str) -> String {
    parse(t).expect_err("refused").to_string()
}

#[test]
fn defaults_are_local_only_and_anonymous() {
    let c = parse("# nothing\n\n").expect("parse");
    assert!(c.local_only);
    assert_eq!(c.listeners, local_only_listeners(1883));
    assert!(c.allow_anonymous(&c.listeners[0]));
    assert_eq!(c.max_inflight_messages, 20);
    assert_eq!(c.max_queued_messages, 1000);
    assert_eq!(c.sys_interval, 10);
    assert_eq!(c.log, Logging::default());
}

#[test]
fn listener_turns_anonymous_off_unless_set() {
    let c = parse("listener 1883\n").expect("parse");
    assert!(!c.allow_anonymous(&c.listeners[0]));
    assert!(!c.local_only);
    let c = parse("listener 1883 127.0.0.1\nallow_anonymous true\n").expect("parse");
    assert!(c.allow_anonymous(&c.listeners[0]));
    assert_eq!(c.listeners[0].address.as_deref(), Some("127.0.0.1"));
    // Without a listener, allow_anonymous false still applies.
    let c = parse("allow_anonymous false\n").expect("parse");
    assert!(c.local_only);
    assert!(!c.allow_anonymous(&c.listeners[0]));
}

#[test]
fn port_and_bind_address_make_the_default_listener() {
    let c = parse("port 8883\nlistener 1884 ::1\n").expect("parse");
    assert_eq!(c.listeners[0], Listener::new(8883, None));
    assert_eq!(c.listeners[1].port, 1884);
    let c = parse("bind_address 127.0.0.1\n").expect("parse");
    assert_eq!(
        c.listeners,
        vec![Listener::new(1883, Some("127.0.0.1".into()))]
    );
}

#[test]
fn listener_options_go_to_the_current_section() {
    let c = parse(
        "mount_point base/\nlistener 1 127.0.0.1\nmax_connections 5\nsocket_domain ipv4\n\
         listener 2\nmount_point m/\nuse_username_as_clientid true\nbind_interface lo\n\
         protocol mqtt\nmax_connections -1\n",
    )
    .expect("parse");
    assert_eq!(
        c.listeners.len(),
        3,
        "the default listener was opened by mount_point"
    );
    assert_eq!(c.listeners[0].mount_point.as_deref(), Some("base/"));
    assert_eq!(c.listeners[1].max_connections, Some(5));
    assert_eq!(c.listeners[1].socket_domain, Some(Domain::Ipv4));
    assert_eq!(c.listeners[2].mount_point.as_deref(), Some("m/"));
    assert!(c.listeners[2].use_username_as_clientid);
    assert_eq!(c.listeners[2].bind_interface.as_deref(), Some("lo"));
    assert_eq!(c.listeners[2].max_connections, None);
}

#[test]
fn per_listener_settings_scope_security_options() {
    let c = parse(
        "per_listener_settings true\nlistener 1\nallow_anonymous true\n\
         listener 2\nallow_zero_length_clientid false\nauto_id_prefix x-\n",
    )
    .expect("parse");
    assert!(c.allow_anonymous(&c.listeners[0]));
    assert!(!c.allow_anonymous(&c.listeners[1]));
    assert!(c.security(&c.listeners[0]).allow_zero_length_clientid);
    assert!(!c.security(&c.listeners[1]).allow_zero_length_clientid);
    assert_eq!(c.security(&c.listeners[1]).auto_id_prefix, "x-");
    // Without it, the last value applies to every listener.
    let c = parse("listener 1\nallow_anonymous true\nlistener 2\nallow_anonymous false\n")
        .expect("parse");
    assert!(!c.allow_anonymous(&c.listeners[0]));
    assert!(!c.allow_anonymous(&c.listeners[1]));
}

#[test]
fn general_options() {
    let c = parse(
        "user nobody\npid_file /run/midge x.pid\nmax_inflight_bytes 1000\n\
         max_queued_bytes 2000\nqueue_qos0_messages true\nmax_packet_size 100\n\
         retain_available false\nupgrade_outgoing_qos true\nclientid_prefixes sensor-\n\
         persistent_client_expiration 2d\nset_tcp_nodelay false\ncheck_retain_source true\n\
         sys_interval 0\nconnection_messages false\npersistence true\n\
         persistence_location /var/lib/midge/\nautosave_interval 60\n",
    )
    .expect("parse");
    assert_eq!(c.user, "nobody");
    assert_eq!(c.pid_file.as_deref(), Some(Path::new("/run/midge x.pid")));
    assert_eq!((c.max_inflight_bytes, c.max_queued_bytes), (1000, 2000));
    assert!(c.queue_qos0_messages && !c.retain_available && c.upgrade_outgoing_qos);
    assert_eq!(c.max_packet_size, 100);
    assert_eq!(c.clientid_prefixes.as_deref(), Some("sensor-"));
    assert_eq!(
        c.persistent_client_expiration,
        Some(Duration::from_secs(2 * 86400))
    );
    assert!(!c.set_tcp_nodelay && c.check_retain_source && !c.connection_messages);
    assert_eq!(c.sys_interval, 0);
    assert!(c.persistence.enabled);
    assert_eq!(c.persistence.autosave_interval, 60);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn logging_options() {
    let c = parse(
        "log_dest file /var/log/midge/midge.log\nlog_dest stdout\nlog_type error\n\
         log_type subscribe\nlog_timestamp_format %Y-%m-%dT%H:%M:%S\nlog_timestamp false\n",
    )
    .expect("parse");
    assert_eq!(
        c.log.dest,
        vec![
            LogDest::File("/var/log/midge/midge.log".into()),
            LogDest::Stdout
        ]
    );
    assert_eq!(c.log.types, log_type::ERROR | log_type::SUBSCRIBE);
    assert_eq!(c.log.timestamp_format.as_deref(), Some("%Y-%m-%dT%H:%M:%S"));
    assert!(!c.log.timestamp);
    let c = parse("log_dest none\nlog_type none\n").expect("parse");
    assert!(c.log.dest.is_empty());
    assert_eq!(c.log.types, 0);
    let c = parse("log_type all\n").expect("parse");
    assert_eq!(c.log.types, log_type::ALL);
}

#[test]
fn errors_name_file_line_and_option() {
    let f = "/etc/midge/midge.conf";
    assert_eq!(
        err("\nallow_anonymous true\nmemory_limit 0\n"),
        format!("{f}:3: option 'memory_limit' is not supported yet")
    );
    assert_eq!(
        err("frobnicate 1\n"),
        format!("{f}:1: unknown option 'frobnicate'")
    );
    assert_eq!(
        err("max_inflight_messages abc\n"),
        format!("{f}:1: max_inflight_messages: 'abc' is not a valid number here")
    );
    assert_eq!(
        err("max_keepalive 70000\n"),
        format!("{f}:1: max_keepalive: 70000 is out of range (0 to 65535)")
    );
    assert!(err("auth_plugin /x.so\n").starts_with(&format!(
        "{f}:1: option 'auth_plugin' is not supported by midge: "
    )));
    assert!(err("auth_opt_db x\n").contains("'auth_opt_db' is not supported by midge"));
    assert!(err("psk_hint x\n").contains("TLS-PSK"));
    assert_eq!(parse("listener 70000\n").expect_err("refused").line, 1);
    assert_eq!(
        parse("allow_anonymous\n").expect_err("refused").kind,
        ErrorKind::MissingValue
    );
    assert!(matches!(
        parse("allow_anonymous yes\n").expect_err("refused").kind,
        ErrorKind::BadValue(_)
    ));
    assert_eq!(
        err("pid_file /a\npid_file /b\n"),
        format!("{f}:2: pid_file: duplicate value")
    );
    assert!(err("max_packet_size 10\n").contains("at least 20"));
    assert!(err("log_dest carrier-pigeon\n").contains("'carrier-pigeon' is not one of"));
    assert!(err("log_type chatter\n").contains("'chatter' is not a log type"));
    assert!(err("persistent_client_expiration 3x\n").contains("not a period"));
    assert!(err("socket_domain ipv5\n").contains("'ipv5'"));
    assert!(err("protocol http\n").contains("'http' is not 'mqtt' or 'websockets'"));
    assert!(err("mount_point a/#\n").contains("mount point"));
    assert_eq!(
        err("listener 1 127.0.0.1 extra\n"),
        format!("{f}:1: listener: too many arguments")
    );
}

#[test]
fn websockets_listeners_and_their_options() {
    let www = std::env::temp_dir();
    let c = parse(&format!(
        "listener 1883\nlistener 8080\nprotocol websockets\nhttp_dir {}\nmount_point w/\n\
         max_connections 3\nwebsockets_headers_size 2048\nwebsockets_log_level 15\n",
        www.display()
    ))
    .expect("parse");
    assert!(!c.listeners[0].websockets);
    let ws = &c.listeners[1];
    assert!(ws.websockets);
    assert_eq!(
        ws.http_dir.as_ref().map(|d| d.path.as_path()),
        Some(www.as_path())
    );
    assert_eq!(ws.mount_point.as_deref(), Some("w/"));
    assert_eq!(ws.max_connections, Some(3));
    assert_eq!(c.websockets_headers_size, 2048);
    assert_eq!(c.websockets_log_level, 15);
    // Mosquitto's defaults; 0 means the default size.
    let c = parse("protocol websockets\nwebsockets_headers_size 0\n").expect("parse");
    assert!(c.listeners[0].websockets);
    assert_eq!(
        c.websockets_headers_size,
        crate::websockets::DEFAULT_HEADERS_SIZE
    );
    assert_eq!(c.websockets_log_level, 0);
}

#[test]
fn websockets_option_errors_name_the_line() {
    let f = "/etc/midge/midge.conf";
    assert_eq!(
        err("listener 1883\nhttp_dir /tmp\n"),
        format!("{f}:2: http_dir: http_dir needs 'protocol websockets' on its listener")
    );
    assert_eq!(
        err("listener 80\nprotocol websockets\nhttp_dir /nonexistent/www\n"),
        format!("{f}:3: http_dir: /nonexistent/www is not a folder")
    );
    assert!(
        err("protocol websockets\nhttp_dir /tmp\nhttp_dir /var\n")
            .contains(":3: http_dir: duplicate")
    );
    assert!(err("websockets_headers_size -1\n").contains("out of range"));
    assert!(err("websockets_headers_size 2000000\n").contains("out of range"));
    assert!(err("websockets_log_level lots\n").contains("not a valid number"));
}

#[test]
fn include_dir_reads_conf_files_in_order() {
    let dir = std::env::temp_dir().join(format!("midge-conf-{}", std::process::id()));
    let d = dir.join("conf.d");
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::write(d.join("b.conf"), "max_queued_messages 7\n").expect("write");
    std::fs::write(d.join("a.conf"), "max_queued_messages 5\nlistener 1\n").expect("write");
    std::fs::write(d.join("c.txt"), "frobnicate\n").expect("write");
    let main = dir.join("midge.conf");
    std::fs::write(&main, "include_dir conf.d\nmax_inflight_messages 3\n").expect("write");
    let c = Config::load(&main).expect("load");
    assert_eq!(c.max_queued_messages, 7, "b.conf is read after a.conf");
    assert_eq!(c.max_inflight_messages, 3);
    assert_eq!(c.listeners.len(), 1);

    std::fs::write(d.join("d.conf"), "\nbogus 1\n").expect("write");
    let e = Config::load(&main).expect_err("refused");
    assert_eq!(
        e.to_string(),
        format!("{}:2: unknown option 'bogus'", d.join("d.conf").display())
    );
    std::fs::write(d.join("d.conf"), "include_dir /tmp\n").expect("write");
    assert!(
        Config::load(&main).is_err(),
        "include_dir in an included file"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn seed_configurations_parse_up_to_their_tls_lines() {
    // Seed 003: the default listener on 8883 with TLS files.
    let seed003 = "port 8883\ncafile /etc/mosquitto/ca_cetificates/mqtt_ca.crt\n\
                   certfile /etc/mosquitto/certs/mqtt_srv.crt\n\
                   keyfile /etc/mosquitto/certs/mqtt_srv.key\ntls_version tlsv1\n";
    let c = parse(seed003).expect("parse");
    assert_eq!(c.listeners.len(), 1);
    let tls = &c.listeners[0].tls;
    assert!(tls.enabled());
    assert_eq!(tls.min_version, TlsVersion::Tls12);
    assert_eq!(
        tls.keyfile.as_ref().map(|f| f.at.to_string()),
        Some("/etc/midge/midge.conf:4".into())
    );
    assert!(c.warnings[0].contains(":5: tls_version tlsv1: midge speaks TLS 1.2 and 1.3 only"));
    // Seed 004: two listeners, password and ACL files.
    let seed004 = "listener 1883\nlistener 1884\nallow_anonymous false\n\
                   password_file /etc/mosquitto/mqtt_passwd\nacl_file /etc/mosquitto/mqtt_acl\n";
    let c = parse(seed004).expect("parse");
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[1].index, 1);
    let pw = c.security.password_file.as_deref();
    assert_eq!(pw, Some(Path::new("/etc/mosquitto/mqtt_passwd")));
    let acl = c.security.acl_file.as_deref();
    assert_eq!(acl, Some(Path::new("/etc/mosquitto/mqtt_acl")));
    assert!(err("password_file a\npassword_file b\n").contains(":2:"));
}

#[test]
fn tls_options_are_checked_together() {
    assert_eq!(
        err("listener 8883\ncertfile /c.crt\n"),
        "/etc/midge/midge.conf:2: certfile: certfile is set, but keyfile is missing"
    );
    assert!(
        err("listener 8883\ncafile /ca.crt\n")
            .contains(":2: cafile: a TLS listener needs certfile and keyfile")
    );
    assert!(
        err("listener 1\ncertfile /c\nkeyfile /k\nrequire_certificate true\n")
            .contains(":2: certfile: require_certificate true needs cafile or capath")
    );
    assert!(
        err("listener 1\ntls_version sslv3\n").contains(":2: tls_version: 'sslv3' is not one of")
    );
    let e = err("listener 1\nciphers AES128-SHA\n");
    assert!(e.contains(":2: ciphers: 'AES128-SHA' is not a cipher suite midge offers for TLS 1.2; available: ECDHE-ECDSA-AES256-GCM-SHA384:"), "{e}");
    assert!(
        err("listener 1\ncertfile /a\ncertfile /b\n").contains(":3: certfile: duplicate value")
    );
    // TLS options belong to their own listener.
    let c = parse(
        "listener 1\nlistener 2\ncertfile /c\nkeyfile /k\nciphers_tls1.3 TLS_AES_128_GCM_SHA256\n",
    )
    .expect("parse");
    assert!(!c.listeners[0].tls.enabled());
    assert_eq!(
        c.listeners[1].tls.ciphers_tls13,
        Some(vec!["TLS_AES_128_GCM_SHA256"])
    );
}
