//! Password files, ACL files and midge_passwd, with Mosquitto's own tools
//! and broker as the reference: files written by one work with the other,
//! and CONNACK codes and ACL decisions are compared live.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::broker::{run_midge_to_end, tool_command};
use common::packets::Connect;
use common::tools::{self, Finished, mosquitto_pub, mosquitto_sub, run};
use common::*;
use midge::auth::passwd::{Hash, Scheme};

const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";

/// Runs `mosquitto_passwd ARGS` (Debian's) to its end; panics unless it succeeds.
fn mosquitto_passwd(args: &[&str], stdin: Option<&str>) {
    tools::require(MOSQUITTO_PASSWD);
    let f = run_with_input(Command::new(MOSQUITTO_PASSWD), args, stdin);
    assert!(
        f.status.success(),
        "mosquitto_passwd {args:?}: {}",
        f.stderr
    );
}

/// Runs `midge_passwd ARGS` to its end.
fn midge_passwd(args: &[&str], stdin: Option<&str>) -> Finished {
    run_with_input(tool_command("midge_passwd"), args, stdin)
}

fn run_with_input(mut cmd: Command, args: &[&str], stdin: Option<&str>) -> Finished {
    cmd.args(args);
    match stdin {
        None => run(cmd, &format!("{args:?}"), tools::TOOL_TIMEOUT),
        Some(text) => {
            // `run` gives the child no input: feed it through a shell.
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg("printf '%s' \"$INPUT\" | \"$@\"")
                .arg("sh")
                .arg(cmd.get_program())
                .args(cmd.get_args())
                .env("INPUT", text)
                .stdin(Stdio::null());
            run(sh, &format!("{args:?}"), tools::TOOL_TIMEOUT)
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A password file made by Debian's mosquitto_passwd with these users.
fn mosquitto_password_file(dir: &TempDir, users: &[(&str, &str)]) -> PathBuf {
    let path = dir.path().join("passwd");
    for (i, (u, p)) in users.iter().enumerate() {
        let mut args = vec!["-b"];
        if i == 0 {
            args.insert(0, "-c");
        }
        args.extend([path_str(&path), u, p]);
        mosquitto_passwd(&args, None);
    }
    path
}

/// The CONNACK return code for one CONNECT.
fn connack(b: &Broker, c: &Connect) -> u8 {
    let mut raw = b.raw();
    raw.send(&c.build());
    raw.read_connack().1
}

#[test]
fn seed_003_password_file_with_mosquitto_sub() {
    // Seed 003: `mosquitto_passwd -c FILE user1`, typing the password twice.
    let dir = TempDir::new("auth-seed003");
    let pw = dir.path().join("mqtt_passwd");
    mosquitto_passwd(&["-c", path_str(&pw), "user1"], Some("Secr3t\nSecr3t\n"));
    let conf = format!(
        "listener 0 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
        pw.display()
    );
    let b = Broker::start(&conf);
    let port = b.addr().port().to_string();
    let sub = mosquitto_sub(
        b.addr().port(),
        &["-u", "user1", "-P", "Secr3t", "-t", "home/#", "-v"],
    );
    let prober = Connect::new("prober").username("user1").password(b"Secr3t");
    tools::wait_until_subscribed_as(&b, &sub, "home/probe", &prober);
    mosquitto_pub(
        b.addr().port(),
        &[
            "-u",
            "user1",
            "-P",
            "Secr3t",
            "-t",
            "home/door",
            "-m",
            "open",
        ],
    );
    sub.wait_line("home/door open", TIMEOUT);

    for (args, what) in [
        (vec!["-u", "user1", "-P", "wrong"], "a wrong password"),
        (vec!["-u", "user2", "-P", "Secr3t"], "an unknown user"),
        (vec!["-u", "user1"], "no password"),
        (vec![], "no credentials"),
    ] {
        let mut cmd = Command::new(tools::MOSQUITTO_SUB);
        cmd.args(["-h", "127.0.0.1", "-p", &port, "-t", "x", "-C", "1"])
            .args(&args);
        let f = run(cmd, what, tools::TOOL_TIMEOUT);
        assert!(!f.status.success(), "{what}: {}", f.stderr);
        assert!(
            f.stderr.contains("Connection Refused: not authorised."),
            "{what}: {}",
            f.stderr
        );
    }
}

#[test]
fn connack_codes_are_mosquittos() {
    let dir = TempDir::new("auth-connack");
    let pw = mosquitto_password_file(&dir, &[("user1", "pw1"), ("sha", "pw2")]);
    // The sha512 ($6$) format too.
    mosquitto_passwd(&["-H", "sha512", "-b", path_str(&pw), "sha", "pw2"], None);
    let cases = |level: u8| {
        vec![
            Connect::new("c")
                .level(level)
                .username("user1")
                .password(b"pw1"),
            Connect::new("c")
                .level(level)
                .username("sha")
                .password(b"pw2"),
            Connect::new("c")
                .level(level)
                .username("user1")
                .password(b"bad"),
            Connect::new("c")
                .level(level)
                .username("user1")
                .password(b""),
            Connect::new("c").level(level).username("user1"),
            Connect::new("c")
                .level(level)
                .username("ghost")
                .password(b"pw1"),
            Connect::new("c").level(level),
        ]
    };
    for anonymous in ["false", "true"] {
        let conf = format!(
            "allow_anonymous {anonymous}\npassword_file {}\n",
            pw.display()
        );
        let codes = same_as_mosquitto(&format!("allow_anonymous {anonymous}"), &conf, |b| {
            [4, 3]
                .into_iter()
                .flat_map(cases)
                .map(|c| connack(b, &c))
                .collect::<Vec<_>>()
        });
        let want: &[u8] = match anonymous {
            "false" => &[0, 0, 5, 5, 5, 5, 5],
            _ => &[0, 0, 5, 5, 5, 5, 0],
        };
        assert_eq!(&codes[..7], want, "3.1.1, allow_anonymous {anonymous}");
        assert_eq!(&codes[7..], want, "3.1, allow_anonymous {anonymous}");
    }
}

#[test]
fn files_written_by_either_tool_work_with_either_broker() {
    let dir = TempDir::new("auth-interop");
    // midge_passwd -> Debian's mosquitto.
    let ours = dir.path().join("ours");
    let f = midge_passwd(&["-c", "-b", path_str(&ours), "alice", "a-pw"], None);
    assert!(f.status.success(), "{}", f.stderr);
    let f = midge_passwd(
        &["-H", "sha512", "-b", path_str(&ours), "bob", "b-pw"],
        None,
    );
    assert!(f.status.success(), "{}", f.stderr);
    let f = midge_passwd(&[path_str(&ours), "carol"], Some("c-pw\nc-pw\n"));
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(f.stdout, "Password: \nReenter password: ");
    let text = std::fs::read_to_string(&ours).expect("read");
    assert!(
        text.contains("alice:$7$101$") && text.contains("bob:$6$"),
        "{text}"
    );
    // Mosquitto reads the file after dropping to its own user: the 0600
    // file midge_passwd made for root must be readable to it.
    std::fs::set_permissions(&ours, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    // mosquitto_passwd -> midge.
    let theirs = mosquitto_password_file(&dir, &[("dave", "d-pw")]);

    for (file, users) in [
        (
            &ours,
            [("alice", "a-pw"), ("bob", "b-pw"), ("carol", "c-pw")].as_slice(),
        ),
        (&theirs, [("dave", "d-pw")].as_slice()),
    ] {
        let conf = format!("allow_anonymous false\npassword_file {}\n", file.display());
        for kind in [BrokerKind::Mosquitto, BrokerKind::Midge] {
            let b = Broker::start_kind(kind, &conf, &[]);
            for (u, p) in users {
                let ok = Connect::new(u).username(u).password(p.as_bytes());
                assert_eq!(connack(&b, &ok), 0, "{kind:?} {u}");
                let bad = Connect::new(u).username(u).password(b"nope");
                assert_eq!(connack(&b, &bad), 5, "{kind:?} {u}");
            }
        }
    }
}

#[test]
fn midge_passwd_behaves_as_mosquitto_passwd() {
    let dir = TempDir::new("auth-passwd-tool");
    let file = dir.path().join("pw");
    let f = path_str(&file);
    // No file yet, no -c: an error before any prompt.
    let r = midge_passwd(&["-b", f, "u", "p"], None);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        r.stderr.contains("Unable to open password file") && r.stderr.contains("No such file"),
        "{}",
        r.stderr
    );
    assert!(
        midge_passwd(&["-c", "-b", f, "u1", "p1"], None)
            .status
            .success()
    );
    assert!(midge_passwd(&["-b", f, "u2", "p2"], None).status.success());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "a new file is 0600");
    // An existing file keeps its mode.
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    assert!(midge_passwd(&["-b", f, "u2", "p2b"], None).status.success());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o640);
    let users = |t: &str| {
        t.lines()
            .map(|l| l.split(':').next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        users(&std::fs::read_to_string(&file).unwrap()),
        ["u1", "u2"]
    );

    // Errors: message and exit code as mosquitto_passwd's.
    for (args, stdin, code, msg) in [
        (
            vec!["-D", f, "nobody"],
            None,
            1,
            "Warning: User nobody not found in password file.",
        ),
        (
            vec!["-c", "-D", f, "u1"],
            None,
            1,
            "Error: -c and -D cannot be used together.",
        ),
        (
            vec!["-H", "md5", "-b", f, "u", "p"],
            None,
            1,
            "Error: Unknown hash type 'md5'",
        ),
        (
            vec!["-b", f, "a:b", "p"],
            None,
            1,
            "Error: Username must not contain the ':' character.",
        ),
        (
            vec![f, "u3"],
            Some("x\ny\n"),
            2,
            "Error: Passwords do not match.",
        ),
        (vec![f, "u3"], Some("\n"), 1, "Error: Empty password."),
    ] {
        let r = midge_passwd(&args, stdin);
        assert_eq!(r.status.code(), Some(code), "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim(), msg, "{args:?}");
    }
    assert_eq!(
        users(&std::fs::read_to_string(&file).unwrap()),
        ["u1", "u2"],
        "nothing changed"
    );
    let r = midge_passwd(&[], None);
    assert_eq!(r.status.code(), Some(1));
    assert!(r.stdout.contains("Usage: midge_passwd"), "{}", r.stdout);

    // -D removes; -U hashes a plain-text file and leaves hashed lines alone.
    assert!(midge_passwd(&["-D", f, "u1"], None).status.success());
    assert_eq!(users(&std::fs::read_to_string(&file).unwrap()), ["u2"]);
    let plain = dir.write("plain", "# users\nann:one\nben:two\n");
    assert!(
        midge_passwd(&["-U", path_str(&plain)], None)
            .status
            .success()
    );
    let first = std::fs::read_to_string(&plain).unwrap();
    assert!(first.starts_with("# users\nann:$7$101$"), "{first}");
    let r = midge_passwd(&["-U", path_str(&plain)], None);
    assert!(r.status.success());
    assert_eq!(
        std::fs::read_to_string(&plain).unwrap(),
        first,
        "hashes are not hashed again"
    );
    assert!(
        r.stderr.contains("already has a hashed password"),
        "{}",
        r.stderr
    );
    let conf = format!("allow_anonymous false\npassword_file {}\n", plain.display());
    let b = Broker::mosquitto(&conf);
    assert_eq!(
        connack(&b, &Connect::new("a").username("ann").password(b"one")),
        0
    );
    assert_eq!(
        connack(&b, &Connect::new("b").username("ben").password(b"two")),
        0
    );
}

/// A password file line for `user` with `password`, SHA-512 as
/// `mosquitto_passwd` 1.x wrote it.
fn hashed_line(user: &str, password: &[u8]) -> String {
    let h = Hash::new(Scheme::Sha512, password, b"midge-tests!");
    format!("{user}:{}\n", h.encode())
}

/// A line holding the hash of the empty password lets nobody in, with or
/// without a password (Mosquitto's CVE-2018-12546 class); the other users
/// of the file still log in, and a wrong or missing password or an unknown
/// user is refused alike.
#[test]
fn an_empty_password_never_logs_in() {
    let dir = TempDir::new("auth-empty-password");
    let text = format!(
        "{}{}",
        hashed_line("test", b"test"),
        hashed_line("empty", b"")
    );
    let pw = dir.write("pw", &text);
    let b = Broker::start(&format!(
        "listener 0 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
        pw.display()
    ));
    let try_login = |user: Option<&str>, password: Option<&[u8]>| {
        let mut c = Connect::new("pw-check");
        // As Mosquitto's own test: a password goes with a user name only
        // (3.1.1 forbids a password flag without one [MQTT-3.1.2-22]).
        if let Some(u) = user {
            c = c.username(u);
            if let Some(p) = password {
                c = c.password(p);
            }
        }
        connack(&b, &c)
    };
    assert_eq!(try_login(Some("test"), Some(b"test")), 0);
    for user in [Some("test"), Some("empty"), Some("bad"), Some(""), None] {
        for password in [Some(&b"test"[..]), Some(b"bad"), Some(b""), None] {
            if user == Some("test") && password == Some(b"test") {
                continue;
            }
            assert_eq!(try_login(user, password), 5, "{user:?} {password:?}");
        }
    }
}

#[test]
fn bad_password_lines_are_left_out_naming_file_and_line() {
    let dir = TempDir::new("auth-bad-files");
    let good = hashed_line("u1", b"u1");
    // As Mosquitto ("Invalid password hash for user u2, removing entry."):
    // the line is left out with a log line naming it, the others work.
    for (name, text, want) in [
        (
            "plain",
            format!("{good}u2:secret\n"),
            ":2: user 'u2': the password is not hashed",
        ),
        (
            "format",
            format!("u2:$5$abc$def\n{good}"),
            ":1: user 'u2': the hash is neither",
        ),
        (
            "iterations",
            format!("{good}u2:$7$100001$YWJj$YWJj\n"),
            ":2: user 'u2': '100001' is not an iteration count (1 to 100000)",
        ),
    ] {
        let pw = dir.write(name, &text);
        let conf = format!(
            "listener 0 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
            pw.display()
        );
        let b = Broker::start(&conf);
        let want = format!("{}{want}", pw.display());
        b.wait_for_log(&want, TIMEOUT);
        let u1 = Connect::new("a").username("u1").password(b"u1");
        assert_eq!(connack(&b, &u1), 0, "{name}");
        let u2 = Connect::new("b").username("u2").password(b"secret");
        assert_eq!(connack(&b, &u2), 5, "{name}");
    }
    // A user named twice is ambiguous: the start stops.
    let pw = dir.write("dup", &format!("{good}{good}"));
    let conf = format!("listener 0 127.0.0.1\npassword_file {}\n", pw.display());
    let (status, stderr, _) = Broker::start_expect_fail(&conf);
    assert!(!status.success());
    let want = format!("{}:2: user 'u1' appears twice", pw.display());
    assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");
    // Check mode reads the files too.
    let c = dir.write("dup.conf", &conf);
    let (status, err) = run_midge_to_end(&["-t", "-c", path_str(&c)]);
    assert!(!status.success() && err.contains(&want), "-t: {err}");
    let conf = format!(
        "listener 0 127.0.0.1\nacl_file {}\n",
        dir.path().join("missing").display()
    );
    let (_, stderr, _) = Broker::start_expect_fail(&conf);
    assert!(
        stderr.contains("missing: unable to read the ACL file: No such file"),
        "{stderr}"
    );
    let acl = dir.write("acl", "topic read #\nuser\n");
    let conf = format!("listener 0 127.0.0.1\nacl_file {}\n", acl.display());
    let (_, stderr, _) = Broker::start_expect_fail(&conf);
    assert!(
        stderr.contains(&format!("{}:2: 'user' needs a user name", acl.display())),
        "{stderr}"
    );
}

/// Seed 004's ACL file, verbatim.
const SEED_004_ACL: &str = include_str!("fixtures/seed004.acl");

/// Reads PUBLISH packets as "topic payload" lines into `got` until the
/// broker has been quiet for a while, or until PUBACK `until` arrives.
fn collect(c: &mut RawClient, got: &mut Vec<String>, until: Option<u16>) {
    loop {
        match c.try_read(if until.is_some() { TIMEOUT } else { QUIET }) {
            ReadOutcome::Packet(p) if p.kind() == 3 => {
                let m = p.publish();
                got.push(format!(
                    "{} {}",
                    m.topic,
                    String::from_utf8_lossy(&m.payload)
                ));
                if let Some(id) = m.pkid {
                    c.send(&common::packets::puback(id));
                }
            }
            ReadOutcome::Packet(p) if p.kind() == 4 && Some(p.pkid()) == until => return,
            ReadOutcome::Packet(p) => panic!("unexpected {}", p.describe()),
            _ if until.is_some() => panic!("no PUBACK {until:?}"),
            _ => return,
        }
    }
}

/// Runs the seed's rules: each client subscribes to `#` and `$SYS/#`, then
/// each publishes the same topics; returns what each received.
fn seed_scenario(b: &Broker) -> Vec<(String, Vec<String>)> {
    let clients = [
        ("anon", None),
        ("xc", Some("x")),
        ("alice-c", Some("alice")),
        ("bob-c", Some("bob")),
        // A user name holding wildcards gets nothing through the patterns.
        ("evil-c", Some("+")),
    ];
    let mut conns: Vec<(String, RawClient)> = clients
        .iter()
        .map(|(id, user)| {
            let mut c = Connect::new(id);
            if let Some(u) = user {
                c = c.username(u);
            }
            let mut raw = RawClient::connect_with(b.addr(), &c, false).named(id);
            raw.subscribe(1, &[("#", 1), ("$SYS/broker/connection/#", 1)]);
            (id.to_string(), raw)
        })
        .collect();
    let topics = [
        "a/b",
        "x/1",
        "user/alice/in",
        "user/bob/in",
        "pub/playground/p",
        "$SYS/broker/connection/anon/state",
        "$SYS/broker/connection/xc/state",
    ];
    let mut got: Vec<Vec<String>> = vec![Vec::new(); conns.len()];
    for (i, (id, c)) in conns.iter_mut().enumerate() {
        for (n, t) in topics.iter().enumerate() {
            // QoS 1: a denied message is still acknowledged.
            let pkid = n as u16 + 1;
            c.send(&common::packets::publish(
                t,
                id.as_bytes(),
                1,
                false,
                false,
                pkid,
            ));
            collect(c, &mut got[i], Some(pkid));
        }
    }
    conns
        .iter_mut()
        .zip(got)
        .map(|((id, c), mut got)| {
            collect(c, &mut got, None);
            got.sort();
            (id.clone(), got)
        })
        .collect()
}

#[test]
fn seed_004_acl_rules_as_mosquitto() {
    let dir = TempDir::new("auth-seed004");
    // Runs the scenario on both brokers with this ACL file; returns what
    // each client received, by client id.
    let run = |name: &str, text: &str| {
        let acl = dir.write(name, text);
        let conf = format!(
            "allow_anonymous true\nacl_file {}\nsys_interval 0\n",
            acl.display()
        );
        let got = same_as_mosquitto(name, &conf, seed_scenario);
        move |id: &str| -> Vec<String> {
            got.iter()
                .find(|(i, _)| i == id)
                .map(|(_, r)| r.clone())
                .unwrap_or_else(|| panic!("no client {id}"))
        }
    };
    let of = run("seed004.acl", SEED_004_ACL);
    let playground = |extra: &[&str]| {
        let mut v: Vec<String> = ["alice-c", "anon", "bob-c", "xc"]
            .iter()
            .map(|w| format!("pub/playground/p {w}"))
            .chain(extra.iter().map(|s| s.to_string()))
            .collect();
        v.sort();
        v
    };
    // `topic read #`: anonymous reads everything ordinary but not $SYS (its
    // `pattern write $SYS/.../%c/state` lets it write its state only).
    // `pattern readwrite pub/playground/#` is everyone's, anonymous included.
    assert_eq!(
        of("anon"),
        playground(&["user/alice/in alice-c", "user/bob/in bob-c"])
    );
    // `pattern readwrite user/%u/#`: each user reads and writes its own level.
    assert_eq!(of("alice-c"), playground(&["user/alice/in alice-c"]));
    assert_eq!(of("bob-c"), playground(&["user/bob/in bob-c"]));
    // x has no section in the seed's file: patterns only.
    assert_eq!(of("xc"), playground(&[]));
    // A user name holding a wildcard gets nothing through the patterns.
    assert_eq!(of("evil-c"), Vec::<String>::new());

    // With a `user x` section, as the brief's example adds, that may also
    // read the bridge state topics the `%c` pattern lets each client write.
    let of = run(
        "seed004-user-x.acl",
        &format!("{SEED_004_ACL}\nuser x\ntopic x/#\ntopic read $SYS/broker/connection/#\n"),
    );
    // Only the client named in the state topic may write it.
    let state = [
        "$SYS/broker/connection/anon/state anon",
        "$SYS/broker/connection/xc/state xc",
        "x/1 xc",
    ];
    assert_eq!(of("xc"), playground(&state));
    assert!(of("anon").contains(&"x/1 xc".to_string()));
}

#[test]
fn deny_sys_retained_and_wills() {
    let dir = TempDir::new("auth-deny");
    let acl = dir.write(
        "acl",
        "topic read #\ntopic deny secret/#\nuser admin\ntopic readwrite #\ntopic read $SYS/#\n\
         topic deny #\n",
    );
    let conf = format!(
        "allow_anonymous true\nacl_file {}\nsys_interval 1\n",
        acl.display()
    );
    let b = Broker::start(&conf);
    // admin's `deny #` comes last and still wins over `readwrite #`.
    let mut admin =
        RawClient::connect_with(b.addr(), &Connect::new("admin").username("admin"), false);
    admin.subscribe(1, &[("#", 0)]);
    let mut writer =
        RawClient::connect_with(b.addr(), &Connect::new("w").username("writer"), false);
    let mut anon = b.client("anon");
    anon.subscribe(1, &[("#", 0), ("$SYS/#", 0)]);
    // Unlisted user `writer` has no rules: its publishes go nowhere, QoS 2
    // flow still completes.
    writer.publish("open/1", b"w", 2, false, 7);
    anon.expect_nothing(QUIET);
    admin.expect_nothing(Duration::ZERO);

    // $SYS: anonymous has `read #`, which does not cover $SYS; admin's
    // `read $SYS/#` does (and its `deny #` does not match $SYS topics).
    let mut sys_reader =
        RawClient::connect_with(b.addr(), &Connect::new("adm2").username("admin"), false);
    sys_reader.subscribe(1, &[("$SYS/broker/uptime", 0)]);
    let up = sys_reader.expect_publish();
    assert_eq!(up.topic, "$SYS/broker/uptime");
    anon.expect_nothing(scaled(Duration::from_millis(1500)));

    // A retained message the subscriber may not read is not sent on subscribe.
    let b2 = Broker::start(&format!(
        "allow_anonymous true\nacl_file {}\n",
        dir.write(
            "acl2",
            "topic read #\ntopic deny secret/#\nuser w\ntopic write #\n"
        )
        .display()
    ));
    let mut w = RawClient::connect_with(b2.addr(), &Connect::new("w").username("w"), false);
    w.publish("secret/k", b"hidden", 1, true, 1);
    w.publish("open/k", b"shown", 1, true, 2);
    let mut late = b2.client("late");
    late.subscribe(1, &[("#", 0)]);
    late.expect_publish_eq("open/k", b"shown", 0, true);
    late.expect_nothing(QUIET);
    // A will goes out only with write access: w may, anonymous may not.
    let mut watcher = b2.client("watch");
    watcher.subscribe(1, &[("#", 0)]);
    watcher.expect_publish_eq("open/k", b"shown", 0, true);
    let willing = |id: &str, user: Option<&str>| {
        let mut c = Connect::new(id).will(&format!("wills/{id}"), b"gone", 0, false);
        if let Some(u) = user {
            c = c.username(u);
        }
        RawClient::connect_with(b2.addr(), &c, false).drop_connection();
    };
    willing("anon-will", None);
    willing("w-will", Some("w"));
    watcher.expect_publish_eq("wills/w-will", b"gone", 0, false);
    watcher.expect_nothing(QUIET);
}

#[test]
fn hostile_client_ids_never_widen_pattern_access() {
    let dir = TempDir::new("auth-hostile");
    let acl = dir.write("acl", "pattern readwrite dev/%c/#\npattern read user/%u\n");
    let b = Broker::start(&format!(
        "allow_anonymous true\nacl_file {}\n",
        acl.display()
    ));
    let mut target = b.client("victim");
    target.subscribe(1, &[("dev/victim/#", 0)]);
    for (id, user) in [("#", None), ("+", None), ("a/b", None), ("ok", Some("+/x"))] {
        let mut c = Connect::new(id);
        if let Some(u) = user {
            c = c.username(u);
        }
        let mut evil = RawClient::connect_with(b.addr(), &c, false);
        evil.subscribe(1, &[("#", 0)]);
        evil.publish("dev/victim/cmd", b"pwn", 0, false, 0);
        // Its own would-be level: even that is refused.
        evil.publish(
            &format!("dev/{}/x", id.replace(['#', '+'], "h")),
            b"own",
            0,
            false,
            0,
        );
        evil.expect_nothing(QUIET);
    }
    target.expect_nothing(Duration::ZERO);
    assert!(
        b.has_log("ACL patterns do not apply to client #"),
        "{:?}",
        b.logs()
    );
    // The rightful owner can.
    let mut owner = b.client("victim");
    owner.publish("dev/victim/cmd", b"mine", 0, false, 0);
    drop(owner);
}

#[test]
fn per_listener_settings_keep_files_per_listener() {
    let dir = TempDir::new("auth-per-listener");
    let pw = mosquitto_password_file(&dir, &[("u", "p")]);
    let conf = format!(
        "per_listener_settings true\n\
         listener 0 127.0.0.1\nallow_anonymous true\n\
         listener 0 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
        pw.display()
    );
    let b = Broker::start_exact(&conf);
    wait_until("two listeners", TIMEOUT, || b.ipv4_ports().len() >= 2);
    let ports = b.ipv4_ports();
    let on = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
    let code = |port: u16, c: &Connect| {
        let mut raw = RawClient::open(on(port));
        raw.send(&c.build());
        raw.read_connack().1
    };
    assert_eq!(code(ports[0], &Connect::new("a")), 0);
    assert_eq!(code(ports[1], &Connect::new("a")), 5);
    assert_eq!(
        code(ports[1], &Connect::new("b").username("u").password(b"p")),
        0
    );
    // The first listener has no password file: a user name is not checked.
    assert_eq!(
        code(ports[0], &Connect::new("c").username("u").password(b"x")),
        0
    );
}

#[test]
fn sighup_reloads_both_files_and_keeps_old_rules_on_failure() {
    let dir = TempDir::new("auth-reload");
    let pw = mosquitto_password_file(&dir, &[("old", "o-pw")]);
    let acl = dir.write("acl", "user old\ntopic readwrite a/#\n");
    let conf = format!(
        "allow_anonymous false\npassword_file {}\nacl_file {}\n",
        pw.display(),
        acl.display()
    );
    let b = Broker::start(&conf);
    let login = |u: &str, p: &str| {
        connack(
            &b,
            &Connect::new(&format!("{u}-{p}"))
                .username(u)
                .password(p.as_bytes()),
        )
    };
    assert_eq!(login("old", "o-pw"), 0);
    assert_eq!(login("new", "n-pw"), 5);
    let mut old = RawClient::connect_with(
        b.addr(),
        &Connect::new("oldc").username("old").password(b"o-pw"),
        false,
    );
    old.subscribe(1, &[("#", 0)]);
    old.publish("b/1", b"no", 0, false, 0);
    old.expect_nothing(QUIET);

    // Add a user with midge_passwd and widen the ACL, then SIGHUP.
    let f = midge_passwd(&["-b", path_str(&pw), "new", "n-pw"], None);
    assert!(f.status.success(), "{}", f.stderr);
    std::fs::write(&acl, "user old\ntopic readwrite a/#\ntopic readwrite b/#\n").unwrap();
    let from = b.log_len();
    b.signal(libc::SIGHUP);
    b.wait_for_log_from(from, "Loaded 2 user(s) and 1 ACL file(s).", TIMEOUT);
    assert_eq!(login("new", "n-pw"), 0);
    // The connected client gets the new rules at once.
    old.publish("b/2", b"yes", 0, false, 0);
    old.expect_publish_eq("b/2", b"yes", 0, false);

    // A password line that cannot be read is left out on a reload too, as
    // Mosquitto does: that user is locked out, nobody gets in who could
    // not before.
    std::fs::write(&pw, "new:plaintext\n").unwrap();
    let from = b.log_len();
    b.signal(libc::SIGHUP);
    let line = b.wait_for_log_from(from, "the entry is left out", TIMEOUT);
    assert!(line.contains(&format!("{}:1:", pw.display())), "{line}");
    b.wait_for_log_from(from, "Loaded 0 user(s)", TIMEOUT);
    assert_eq!(login("new", "n-pw"), 5);
    assert_eq!(login("new", "plaintext"), 5);
    assert_eq!(connack(&b, &Connect::new("anon")), 5);
    std::fs::remove_file(&acl).unwrap();
    mosquitto_passwd(&["-c", "-b", path_str(&pw), "x", "y"], None);
    let from = b.log_len();
    b.signal(libc::SIGHUP);
    let line = b.wait_for_log_from(from, "keeping the previous password and ACL rules", TIMEOUT);
    assert!(line.contains("unable to read the ACL file"), "{line}");
    old.publish("b/3", b"still", 0, false, 0);
    old.expect_publish_eq("b/3", b"still", 0, false);
    assert_eq!(connack(&b, &Connect::new("anon2")), 5);
}

#[test]
fn check_retain_source_rechecks_the_publisher() {
    let dir = TempDir::new("auth-retain-source");
    let granted = "topic read #\nuser w\ntopic write r/#\n";
    let acl = dir.write("acl", granted);
    for check in [true, false] {
        let conf = format!(
            "allow_anonymous true\nacl_file {}\ncheck_retain_source {check}\n",
            acl.display()
        );
        let seen = same_as_mosquitto("check_retain_source", &conf, |b| {
            std::fs::write(&acl, granted).expect("write acl");
            let mut w = RawClient::connect_with(b.addr(), &Connect::new("w").username("w"), false);
            w.publish("r/1", b"kept", 1, true, 1);
            let mut reader = b.client("reader");
            reader.subscribe(1, &[("r/#", 0)]);
            reader.expect_publish_eq("r/1", b"kept", 0, true);
            // Take w's write access away; the reload has applied once its
            // probes stop arriving.
            std::fs::write(&acl, "topic read #\nuser w\n").expect("write acl");
            b.signal(libc::SIGHUP);
            let mut n = 1;
            loop {
                n += 1;
                w.publish("r/probe", b"p", 1, false, n);
                match reader.try_read(Duration::from_millis(300)) {
                    ReadOutcome::Packet(_) => assert!(n < 100, "the reload never applied"),
                    _ => break,
                }
            }
            let mut late = b.client("late");
            late.subscribe(1, &[("r/#", 0)]);
            let got = matches!(late.try_read(QUIET), ReadOutcome::Packet(_));
            std::fs::write(&acl, granted).expect("write acl");
            got
        });
        assert_eq!(seen, !check, "check_retain_source {check}");
    }
}

/// The client id is not a credential. alice may read `secret/#`; messages
/// queue for her persistent session, one of them sent and not yet
/// acknowledged. bob, who may not read `secret/#`, then connects with
/// alice's client id and resumes her session (MQTT 3.1.1 and 5.0, and
/// again after a restart that restored the session from the persistence
/// file): he gets none of them, neither the queued ones nor the one in
/// flight, as with Mosquitto, which checks each queued message against the
/// connecting client's rules. What he may read still reaches him.
#[test]
fn a_resumed_session_gives_only_what_the_new_client_may_read() {
    for (bob_level, restart) in [(4, false), (5, false), (4, true)] {
        let dir = TempDir::new("auth-resume");
        common::persist::open_to_all(dir.path());
        let pw = dir.write(
            "pw",
            &format!(
                "{}{}{}",
                hashed_line("alice", b"a"),
                hashed_line("bob", b"b"),
                hashed_line("writer", b"w")
            ),
        );
        let acl = dir.write(
            "acl",
            "user alice\ntopic read secret/#\ntopic read public/#\n\
             user bob\ntopic read public/#\nuser writer\ntopic write #\n",
        );
        let conf = format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}\n\
             persistence true\npersistence_location {}/\n",
            pw.display(),
            acl.display(),
            dir.path().display()
        );
        let what = format!("bob on MQTT {bob_level}, restart {restart}");
        let mut b = Broker::start(&conf);
        let alice_connect = Connect::new("shared-id")
            .clean(false)
            .username("alice")
            .password(b"a");
        let mut alice = RawClient::connect_with(b.addr(), &alice_connect, false);
        alice.subscribe(1, &[("secret/#", 1), ("public/#", 1)]);
        let writer = Connect::new("writer").username("writer").password(b"w");
        let mut w = RawClient::connect_with(b.addr(), &writer, false);
        // One message reaches alice and stays unacknowledged.
        w.publish("secret/inflight", b"s0", 1, false, 1);
        let p = alice.read_packet();
        assert_eq!(p.kind(), common::packets::PUBLISH, "{what}");
        alice.drop_connection();
        // Three more queue while she is away (or, until the broker sees
        // her go, for her connection: they end up in her session alike).
        for (i, id) in [(1, 2), (2, 3), (3, 4)] {
            w.publish(&format!("secret/{i}"), b"s", 1, false, id);
        }
        w.publish("public/while-away", b"p", 1, false, 5);
        w.ping();
        if restart {
            drop(w);
            b.stop(libc::SIGTERM);
            b = Broker::start(&conf);
            w = RawClient::connect_with(b.addr(), &writer, false);
        }
        let bob_connect = Connect::new("shared-id")
            .level(bob_level)
            .clean(false)
            .session_expiry(3600)
            .username("bob")
            .password(b"b");
        let mut bob = b.raw();
        bob.send(&bob_connect.build());
        let c = bob.read_packet();
        assert_eq!(c.kind(), common::packets::CONNACK, "{what}");
        assert_eq!(&c.body[..2], &[1, 0], "{what}: session present, accepted");
        // Only what bob may read: the public message, at QoS 1.
        let p = bob.read_packet();
        assert_eq!(
            p.kind(),
            common::packets::PUBLISH,
            "{what}: {}",
            p.describe()
        );
        assert!(
            p.body.windows(17).any(|x| x == b"public/while-away"),
            "{what}: {}",
            p.describe()
        );
        bob.expect_nothing(QUIET);
    }
}
