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
         protocol mqtt\nmax_connections -1\nmaximum_qos 1\n",
    )
    .expect("parse");
    assert_eq!(
        c.listeners[2].max_qos, 1,
        "maximum_qos, Mosquitto's other name"
    );
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
fn per_listener_settings_without_a_listener_secure_the_local_only_ones() {
    let c = parse(
        "per_listener_settings true\npassword_file /etc/midge/passwd\n\
         allow_anonymous false\nacl_file /etc/midge/acl\n",
    )
    .expect("parse");
    assert!(c.local_only);
    assert_eq!(c.listeners.len(), 2);
    for l in &c.listeners {
        assert!(!c.allow_anonymous(l));
        let s = c.security(l);
        assert_eq!(
            s.password_file.as_deref(),
            Some(Path::new("/etc/midge/passwd"))
        );
        assert_eq!(s.acl_file.as_deref(), Some(Path::new("/etc/midge/acl")));
    }
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
        err("\nallow_anonymous true\nbridge_reload_type lazy\n"),
        format!("{f}:3: option 'bridge_reload_type' is not supported yet")
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
    // A unit of more than one byte was once cut inside the character.
    assert!(err("persistent_client_expiration 2\u{1de}\n").contains("not a period"));
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
    assert_eq!(c.websockets_headers_size, super::DEFAULT_HEADERS_SIZE);
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

#[test]
fn bridge_section_with_every_option() {
    let c = parse(
        "connection central\naddresses 10.0.0.1:1884 central.example [::1]:1885\n\
         round_robin true\ntopic sensors/# out 1 board/ site/b1/\ntopic cmd/# in 2\n\
         topic \"\" both 0 local/t remote/t\ntopic all\nremote_clientid board1\n\
         local_clientid board1-local\nremote_username u\nremote_password p w\n\
         local_username lu\nlocal_password lp\ncleansession true\nlocal_cleansession false\n\
         keepalive_interval 30\nidle_timeout 90\nrestart_timeout 2 20\nstart_type lazy\n\
         threshold 5\nnotifications false\nnotifications_local_only true\n\
         notification_topic boards/1/state\ntry_private false\nbridge_protocol_version mqttv31\n\
         bridge_outgoing_retain false\nbridge_attempt_unsubscribe false\n\
         bridge_max_packet_size 1000\nbridge_bind_address 127.0.0.1\n\
         bridge_cafile /ca.crt\nbridge_capath /certs\nbridge_certfile /c.crt\n\
         bridge_keyfile /c.key\nbridge_insecure true\nbridge_tls_version tlsv1.3\n\
         bridge_alpn mqtt\nbridge_require_ocsp false\n",
    )
    .expect("parse");
    let b = &c.bridges[0];
    assert_eq!(b.name, "central");
    assert_eq!(
        b.addresses,
        vec![
            ("10.0.0.1".to_string(), 1884),
            ("central.example".to_string(), 1883),
            ("::1".to_string(), 1885)
        ]
    );
    assert!(b.round_robin);
    assert_eq!(b.topics.len(), 4);
    assert_eq!(b.topics[0].local, "board/sensors/#");
    assert_eq!(b.topics[0].remote, "site/b1/sensors/#");
    assert_eq!((b.topics[1].direction, b.topics[1].qos), (Direction::In, 2));
    assert_eq!(
        (b.topics[2].local.as_str(), b.topics[2].remote.as_str()),
        ("local/t", "remote/t")
    );
    assert_eq!(
        (
            b.topics[3].direction,
            b.topics[3].qos,
            b.topics[3].local.as_str()
        ),
        (Direction::Out, 0, "all")
    );
    assert_eq!(b.remote_clientid, "board1");
    assert_eq!(b.local_clientid, "board1-local");
    assert_eq!(b.remote_password.as_deref(), Some("p w"));
    assert_eq!(b.local_username.as_deref(), Some("lu"));
    assert!(b.clean_session && !b.local_clean_session);
    assert_eq!((b.keepalive, b.idle_timeout, b.threshold), (30, 90, 5));
    assert_eq!(
        b.restart,
        Restart {
            base: 2,
            cap: Some(20)
        }
    );
    assert_eq!(b.start_type, StartType::Lazy);
    assert!(!b.notifications && b.notifications_local_only && !b.try_private);
    assert_eq!(b.notification_topic, "boards/1/state");
    assert_eq!(b.protocol, BridgeProtocol::V31);
    assert!(!b.outgoing_retain && !b.attempt_unsubscribe);
    assert_eq!(b.max_packet_size, 1000);
    assert_eq!(b.bind_address.as_deref(), Some("127.0.0.1"));
    assert!(b.tls.enabled() && b.tls.insecure);
    assert_eq!(b.tls.version, TlsVersion::Tls13);
    assert_eq!(b.tls.alpn.as_deref(), Some("mqtt"));
}

#[test]
fn bridge_defaults_are_mosquittos() {
    let c = parse("connection up\naddress central\n").expect("parse");
    let b = &c.bridges[0];
    assert!(b.remote_clientid.ends_with(".up"), "{}", b.remote_clientid);
    assert_eq!(b.local_clientid, format!("local.{}", b.remote_clientid));
    assert_eq!(
        b.notification_topic,
        format!("$SYS/broker/connection/{}/state", b.remote_clientid)
    );
    assert_eq!(b.addresses, vec![("central".to_string(), 1883)]);
    assert!(!b.clean_session && !b.local_clean_session);
    assert_eq!((b.keepalive, b.idle_timeout, b.threshold), (60, 60, 10));
    assert_eq!(
        b.restart,
        Restart {
            base: 5,
            cap: Some(30)
        }
    );
    assert_eq!(b.start_type, StartType::Automatic);
    assert!(b.notifications && !b.notifications_local_only && b.try_private);
    assert!(b.outgoing_retain && b.attempt_unsubscribe);
    assert_eq!(b.protocol, BridgeProtocol::V311);
    assert!(!b.tls.enabled());
    // local_cleansession follows cleansession; keepalive has a floor of 5.
    let c = parse("connection up\naddress h\ncleansession true\nkeepalive_interval 2\n")
        .expect("parse");
    assert!(c.bridges[0].local_clean_session);
    assert_eq!(c.bridges[0].keepalive, 5);
    assert!(
        c.warnings[0].contains("keepalive interval too low"),
        "{:?}",
        c.warnings
    );
    // A constant restart delay.
    let c = parse("connection up\naddress h\nrestart_timeout 20\n").expect("parse");
    assert_eq!(
        c.bridges[0].restart,
        Restart {
            base: 20,
            cap: None
        }
    );
}

#[test]
fn bridge_refusals_name_file_line_and_option() {
    let f = "/etc/midge/midge.conf";
    for (conf, want) in [
        (
            "topic a/#\n",
            format!("{f}:1: topic: a bridge option belongs in a 'connection NAME' section"),
        ),
        (
            "connection a\naddress h\nbridge_protocol_version mqttv6\n",
            format!(
                "{f}:3: bridge_protocol_version: 'mqttv6' is not one of mqttv31, mqttv311, mqttv50"
            ),
        ),
        (
            "connection a\naddress h\nbridge_psk 0011\n",
            format!(
                "{f}:3: option 'bridge_psk' is not supported by midge: rustls, the TLS library of midge, has no TLS-PSK; use certificates"
            ),
        ),
        (
            "connection a\naddress h\nbridge_identity me\n",
            format!(
                "{f}:3: option 'bridge_identity' is not supported by midge: rustls, the TLS library of midge, has no TLS-PSK; use certificates"
            ),
        ),
        (
            "connection a\ntopic x\n",
            format!("{f}:1: connection a: a bridge needs an address"),
        ),
        (
            "connection a\naddress h\ntopic \"\" out 0 local \"\"\n",
            format!(
                "{f}:3: topic: an empty pattern (\"\") needs both a local and a remote prefix, which are then the whole topics"
            ),
        ),
        (
            "connection a\naddress h\ntopic a sideways\n",
            format!("{f}:3: topic: direction 'sideways' is not one of out, in, both"),
        ),
        (
            "connection a\naddress h\ntopic a out 3\n",
            format!("{f}:3: topic: QoS '3' is not 0, 1 or 2"),
        ),
        (
            "connection a\naddress h\ntopic a out 1 l/\n",
            format!("{f}:3: topic: give both a local and a remote prefix"),
        ),
        (
            "connection a\naddress h\ntopic a out 1 l/+ r/\n",
            format!("{f}:3: topic: the prefix 'l/+' may not contain '+' or '#'"),
        ),
        (
            "connection a\naddress h\ntopic a/#/b\n",
            format!("{f}:3: topic: 'a/#/b' is not a valid topic filter"),
        ),
        (
            "connection a\naddress h:99999\n",
            format!("{f}:2: address: '99999' is not a port number in 'h:99999'"),
        ),
        (
            "connection a\naddress h\naddress g\n",
            format!("{f}:3: address: duplicate value"),
        ),
        (
            "connection a\naddress h\nstart_type manual\n",
            format!("{f}:3: start_type: 'manual' is not one of automatic, lazy, once"),
        ),
        (
            "connection a\naddress h\nrestart_timeout 10 5\n",
            format!("{f}:3: restart_timeout: the cap must not be below the base"),
        ),
        (
            "connection a\naddress h\nremote_password p\n",
            format!("{f}:1: connection a: remote_password needs remote_username"),
        ),
        (
            "connection a\naddress h\nbridge_certfile /c\n",
            format!(
                "{f}:1: connection a: bridge_certfile and bridge_keyfile must be given together"
            ),
        ),
        (
            "connection a\naddress h\nbridge_tls_version tlsv1\n",
            format!("{f}:3: bridge_tls_version: 'tlsv1' is not one of tlsv1.3, tlsv1.2, tlsv1.1"),
        ),
        (
            "connection a\naddress h\nbridge_require_ocsp true\n",
            format!(
                "{f}:3: bridge_require_ocsp: rustls, the TLS library of midge, does not check OCSP responses"
            ),
        ),
        (
            "connection a\naddress h\nconnection a\naddress g\n",
            format!("{f}:3: connection: a bridge named 'a' is already configured"),
        ),
        (
            "connection a\naddress h\nremote_clientid x\nlocal_clientid x\n",
            format!(
                "{f}:1: connection a: local_clientid and remote_clientid must differ (a bridge to this broker itself would take over its own session)"
            ),
        ),
    ] {
        assert_eq!(err(conf), want, "for {conf:?}");
    }
}

#[test]
fn mosquitto_2_1_listener_options() {
    let c = parse(
        "allow_anonymous false\nauto_id_prefix g-\nlistener 1\nlistener 2 127.0.0.1\n\
         listener_allow_anonymous true\nlistener_auto_id_prefix l-\n\
         accept_protocol_versions 4,5\nlistener 3\naccept_protocol_versions 3 5\n",
    )
    .expect("parse");
    let [one, two, three] = [&c.listeners[0], &c.listeners[1], &c.listeners[2]];
    assert!(!c.allow_anonymous(one));
    assert!(c.allow_anonymous(two));
    assert_eq!(c.auto_id_prefix(one), "g-");
    assert_eq!(c.auto_id_prefix(two), "l-");
    assert_eq!(one.accept_protocols, ALL_PROTOCOLS);
    assert_eq!(two.accept_protocols, 1 << 4 | 1 << 5);
    assert_eq!(three.accept_protocols, 1 << 3 | 1 << 5);
    // Each needs a listener section, as in Mosquitto 2.1.
    let f = "/etc/midge/midge.conf";
    for option in [
        "listener_allow_anonymous true",
        "listener_auto_id_prefix x",
        "accept_protocol_versions 5",
        "disable_client_cert_date_checks true",
        "enable_proxy_protocol 2",
    ] {
        let name = option.split(' ').next().unwrap_or_default();
        assert_eq!(
            err(&format!("port 1883\n{option}\n")),
            format!("{f}:2: {name}: this option belongs in a 'listener' section")
        );
    }
    assert!(err("listener 1\naccept_protocol_versions 6\n").contains("'6' is not a protocol"));
    assert!(err("listener 1\nenable_proxy_protocol 3\n").contains("out of range"));
    let c = parse("listener 1\nenable_proxy_protocol 1\nlistener 2\n").expect("parse");
    assert_eq!(
        (c.listeners[0].proxy_protocol, c.listeners[1].proxy_protocol),
        (1, 0)
    );
    assert!(err("listener 1\naccept_protocol_versions\n").contains("missing value"));
    assert!(
        err(&format!(
            "listener 1\nlistener_auto_id_prefix {}\n",
            "x".repeat(51)
        ))
        .contains("at most 50 bytes")
    );
    let c = parse("listener 1\ncertfile c\nkeyfile k\ndisable_client_cert_date_checks true\n")
        .expect("parse");
    assert!(c.listeners[0].tls.disable_client_cert_date_checks);
}

#[test]
fn mosquitto_2_1_global_options() {
    let c = parse("global_max_clients 10\nglobal_max_connections 20\n").expect("parse");
    assert_eq!(c.global_max_clients, Some(10));
    assert_eq!(c.global_max_connections, Some(20));
    let c = parse("global_max_clients -1\n").expect("parse");
    assert_eq!(c.global_max_clients, None);
    assert_eq!(parse("").expect("parse").global_max_connections, None);
    let c = parse("persistent_client_expiration 90s\n").expect("parse");
    assert_eq!(
        c.persistent_client_expiration,
        Some(Duration::from_secs(90))
    );
    let c = parse("persistent_client_expiration 2h\n").expect("parse");
    assert_eq!(
        c.persistent_client_expiration,
        Some(Duration::from_secs(7200))
    );
}

#[test]
fn mosquitto_2_1_bridge_options() {
    let base = "connection b\naddress 127.0.0.1\ntopic # out\n";
    let c = parse(base).expect("parse");
    let b = &c.bridges[0];
    assert_eq!(b.receive_maximum, 20);
    assert_eq!(b.session_expiry_interval, None);
    assert_eq!(b.max_topic_alias, 0);
    assert!(!b.tls.enabled());
    let c = parse(&format!(
        "{base}bridge_receive_maximum 5\nbridge_session_expiry_interval 63\n\
         bridge_max_topic_alias 9\nbridge_tls_use_os_certs false\n"
    ))
    .expect("parse");
    let b = &c.bridges[0];
    assert_eq!(b.receive_maximum, 5);
    assert_eq!(b.session_expiry_interval, Some(63));
    assert_eq!(b.max_topic_alias, 9);
    // false alone turns no TLS on; true does.
    assert!(!b.tls.enabled());
    let c = parse(&format!("{base}bridge_tls_use_os_certs true\n")).expect("parse");
    assert!(c.bridges[0].tls.enabled() && c.bridges[0].tls.use_os_certs);
    assert!(err(&format!("{base}bridge_receive_maximum 0\n")).contains("out of range"));
    assert!(err(&format!("{base}bridge_max_topic_alias 65536\n")).contains("out of range"));
}

#[test]
fn memory_limit_is_read() {
    assert_eq!(parse("").expect("parse").memory_limit, 0);
    let c = parse("memory_limit 64000000\n").expect("parse");
    assert_eq!(c.memory_limit, 64_000_000);
    assert!(err("memory_limit -1\n").contains("out of range"));
}

#[test]
fn listener_0_with_a_path_is_a_unix_socket_and_with_an_address_a_free_port() {
    let c = parse(
        "listener 0 /run/midge/mqtt.sock\nmount_point local/\nlistener 0 127.0.0.1\n\
         listener 0 localhost\nlistener 0\n",
    )
    .expect("parse");
    let unix = c.listeners[0].unix_socket.as_ref().expect("a unix socket");
    assert_eq!(unix.path, Path::new("/run/midge/mqtt.sock"));
    assert_eq!(unix.at.to_string(), "/etc/midge/midge.conf:1");
    assert_eq!(c.listeners[0].address, None);
    assert_eq!(c.listeners[0].port, 0);
    assert_eq!(c.listeners[0].mount_point.as_deref(), Some("local/"));
    for (l, address) in c.listeners[1..]
        .iter()
        .zip([Some("127.0.0.1"), Some("localhost"), None])
    {
        assert_eq!(l.unix_socket, None);
        assert_eq!(l.address.as_deref(), address);
        assert_eq!(l.port, 0);
    }
    // A path on another port is an address (that does not resolve).
    let c = parse("listener 1883 /run/mqtt.sock\n").expect("parse");
    assert_eq!(c.listeners[0].unix_socket, None);
}

#[test]
fn a_unix_socket_listener_refuses_tls_and_websockets_naming_the_line() {
    let e = err("listener 0 127.0.0.1\nlistener 0 /run/mqtt.sock\ncertfile /etc/c.pem\n");
    assert!(
        e.starts_with(
            "/etc/midge/midge.conf:3: certfile: TLS is not available on a Unix socket listener"
        ),
        "{e}"
    );
    let e = err("listener 0 /run/mqtt.sock\nrequire_certificate true\n");
    assert!(
        e.starts_with("/etc/midge/midge.conf:2: require_certificate: TLS"),
        "{e}"
    );
    let e = err("listener 0 /run/mqtt.sock\n\nprotocol websockets\n");
    assert!(
        e.starts_with("/etc/midge/midge.conf:3: protocol: WebSockets is not available"),
        "{e}"
    );
    // The next listener section may have them.
    parse("listener 0 /run/mqtt.sock\nlistener 0\nprotocol websockets\n").expect("parse");
    let long = format!("listener 0 /{}\n", "s".repeat(107));
    let e = err(&long);
    assert!(
        e.starts_with("/etc/midge/midge.conf:1: listener: the socket path is 108 bytes long"),
        "{e}"
    );
}

#[test]
fn more_mosquitto_2_1_options() {
    let c = parse(
        "retain_expiry_interval 5\npacket_buffer_size 8192\nlistener 1\n\
         max_topic_alias_broker 20\nenable_proxy_protocol 2\n\
         proxy_protocol_v2_require_tls true\n",
    )
    .expect("parse");
    assert_eq!(c.retain_expiry_minutes, 5);
    assert!(c.listeners[0].proxy_require_tls.is_some());
    assert!(c.warnings[0].contains("packet_buffer_size has no effect"));
    // Required TLS needs version 2 headers: fail closed.
    assert_eq!(
        err("listener 1\nenable_proxy_protocol 1\nproxy_protocol_v2_require_tls true\n"),
        "/etc/midge/midge.conf:3: proxy_protocol_v2_require_tls: it needs \
         'enable_proxy_protocol 2' on its listener"
    );
    assert!(err("listener 1\nproxy_protocol_v2_require_tls true\n").contains("needs"));
    assert!(err("max_topic_alias_broker 65536\n").contains("out of range"));
}
