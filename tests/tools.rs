//! midge_pub, midge_sub and midge_rr (issue 8): their flags against midge,
//! a representative set against Debian's mosquitto, and their output and
//! errors compared with mosquitto_pub and mosquitto_sub's; MQTT 5 (`-V
//! mqttv5`, `-D`, `-x`, the property formats) against both brokers.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::broker::tool_command;
use common::tools::{self, Finished, MOSQUITTO_SUB, Proc, mosquitto_pub, mosquitto_sub, ok, run};
use common::*;

/// `midge_sub -h 127.0.0.1 -p PORT ARGS...`, running until dropped.
fn midge_sub(port: u16, args: &[&str]) -> Proc {
    let mut cmd = tool_command("midge_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    Proc::spawn(cmd, &format!("midge_sub {}", args.join(" ")), false)
}

/// `midge_pub -h 127.0.0.1 -p PORT ARGS...` to its end.
fn midge_pub(port: u16, args: &[&str]) -> Finished {
    let mut cmd = tool_command("midge_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    run(
        cmd,
        &format!("midge_pub {}", args.join(" ")),
        tools::TOOL_TIMEOUT,
    )
}

/// A tool run to its end with `args` only (no host or port).
fn tool(name: &str, args: &[&str]) -> Finished {
    let mut cmd = tool_command(name);
    cmd.args(args);
    run(
        cmd,
        &format!("{name} {}", args.join(" ")),
        tools::TOOL_TIMEOUT,
    )
}

fn mosquitto_tool(path: &str, args: &[&str]) -> Finished {
    tools::require(path);
    let mut cmd = Command::new(path);
    cmd.args(args);
    run(
        cmd,
        &format!("{path} {}", args.join(" ")),
        tools::TOOL_TIMEOUT,
    )
}

/// Waits until a `-v` subscriber prints the probe, so it is subscribed.
fn ready(b: &Broker, sub: &Proc) {
    tools::wait_until_subscribed(b, sub, "probe");
}

#[test]
fn pub_reaches_sub_at_every_qos() {
    let b = Broker::start("");
    let port = b.addr().port();
    let sub = midge_sub(port, &["-v", "-t", "probe", "-t", "t/#", "-q", "2"]);
    ready(&b, &sub);
    for q in ["0", "1", "2"] {
        ok(&midge_pub(
            port,
            &["-t", &format!("t/{q}"), "-m", "hello world", "-q", q],
        ));
        sub.wait_line(&format!("t/{q} hello world"), TIMEOUT);
    }
    // -n: an empty message, printed by -v as "(null)"; -r retains.
    ok(&midge_pub(port, &["-t", "t/n", "-n"]));
    sub.wait_line("t/n (null)", TIMEOUT);
    ok(&midge_pub(
        port,
        &["-t", "t/r", "-m", "kept", "-r", "-q", "1"],
    ));
    let late = midge_sub(port, &["-t", "t/r", "-C", "1", "-F", "%t %p %r"]);
    late.wait_line("t/r kept 1", TIMEOUT);
}

#[test]
fn pub_file_stdin_repeat_and_id() {
    let b = Broker::start("");
    let port = b.addr().port();
    let dir = TempDir::new("midge-pub-file");
    let file = dir.write("msg", "from a file");
    let sub = midge_sub(port, &["-v", "-t", "probe", "-t", "f/#"]);
    ready(&b, &sub);
    ok(&midge_pub(
        port,
        &["-t", "f/file", "-f", file.to_str().unwrap()],
    ));
    sub.wait_line("f/file from a file", TIMEOUT);
    ok(&midge_pub(
        port,
        &[
            "-t",
            "f/rep",
            "-m",
            "again",
            "--repeat",
            "3",
            "--repeat-delay",
            "0.01",
            "-i",
            "the-id",
        ],
    ));
    let first = sub.wait_line("f/rep again", TIMEOUT);
    let second = sub.wait_line_from(first + 1, "f/rep again", TIMEOUT);
    sub.wait_line_from(second + 1, "f/rep again", TIMEOUT);
    b.wait_for_log("as the-id", TIMEOUT);
    let mut cmd = tool_command("midge_pub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-t",
        "f/stdin",
        "-s",
    ]);
    let out = pipe_stdin(cmd, b"whole\ninput");
    assert!(out.status.success());
    sub.wait_line("f/stdin whole", TIMEOUT);
    sub.wait_line("input", TIMEOUT);
    // A file that does not open: mosquitto_pub's two lines and exit 1.
    let f = midge_pub(port, &["-t", "x", "-f", "/nonexistent"]);
    assert_eq!(f.status.code(), Some(1));
    assert_eq!(
        f.stderr,
        "Error: Unable to open file \"/nonexistent\".\nError loading input file \"/nonexistent\"."
    );
}

fn pipe_stdin(mut cmd: Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().expect("wait")
}

/// `-l` sends each line as it arrives, as at the end of `tail -f`; it
/// works the same against midge and against mosquitto.
#[test]
fn pub_l_sends_lines_as_they_arrive() {
    for kind in [BrokerKind::Midge, BrokerKind::Mosquitto] {
        let b = Broker::start_kind(kind, "", &[]);
        let port = b.addr().port();
        let sub = mosquitto_sub(port, &["-v", "-t", "probe", "-t", "log"]);
        ready(&b, &sub);
        let mut cmd = tool_command("midge_pub");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "log",
            "-l",
            "-q",
            "1",
        ]);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn midge_pub");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"first line\n").unwrap();
        // The line is delivered while midge_pub still waits for more.
        sub.wait_line("log first line", TIMEOUT);
        stdin.write_all(b"\nlast, no newline").unwrap();
        drop(stdin);
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let i = sub.wait_line("log (null)", TIMEOUT);
        sub.wait_line_from(i + 1, "log last, no newline", TIMEOUT);
    }
}

/// -C, -W, -E, -R, -T, -U, -N and --retained-only, against both brokers.
#[test]
fn sub_stops_and_filters_as_mosquitto_sub() {
    for kind in [BrokerKind::Midge, BrokerKind::Mosquitto] {
        let b = Broker::start_kind(kind, "", &[]);
        let port = b.addr().port();
        for (t, m) in [("s/a", "one"), ("s/b", "two"), ("s/c", "three")] {
            mosquitto_pub(port, &["-t", t, "-m", m, "-r"]);
        }
        // -C: exits 0 after that many messages.
        let mut c = midge_sub(port, &["-t", "s/#", "-C", "2"]);
        assert!(c.wait_exit(TIMEOUT).success());
        assert_eq!(c.stdout.all().len(), 2);
        // -W: nothing arrives; "Timed out", exit 27.
        let mut w = midge_sub(port, &["-t", "nothing", "-W", "1"]);
        assert_eq!(w.wait_exit(TIMEOUT).code(), Some(27));
        assert_eq!(w.stderr.all(), ["Timed out"]);
        // -E: exits once subscribed, printing nothing.
        let mut e = midge_sub(port, &["-t", "nothing", "-E"]);
        assert!(e.wait_exit(TIMEOUT).success());
        // --retained-only: the retained ones, then exit at the first live one.
        let mut r = midge_sub(
            port,
            &[
                "-v",
                "-t",
                "s/#",
                "-t",
                "probe",
                "--retained-only",
                "-T",
                "s/b",
            ],
        );
        r.wait_line("s/a one", TIMEOUT);
        r.wait_line("s/c three", TIMEOUT);
        // Retained messages come in no set order.
        let mut got = r.stdout.all();
        got.sort();
        assert_eq!(got, ["s/a one", "s/c three"]);
        mosquitto_pub(port, &["-t", "s/live", "-m", "x"]);
        assert!(r.wait_exit(TIMEOUT).success());
        // -R skips retained messages; -N drops the newline.
        let mut n = midge_sub(port, &["-t", "s/#", "-R", "-N", "-C", "2", "-U", "none"]);
        tools::wait_until_subscribed(&b, &midge_sub(port, &["-t", "probe"]), "probe");
        wait_until("the -R subscriber subscribed", TIMEOUT, || {
            mosquitto_pub(port, &["-t", "s/live", "-m", "ab"]);
            n.has_exited()
        });
        assert!(n.wait_exit(TIMEOUT).success());
        assert_eq!(n.stdout.all(), ["abab"]);
    }
}

#[test]
fn remove_retained_clears_what_it_receives() {
    let b = Broker::start("");
    let port = b.addr().port();
    mosquitto_pub(port, &["-t", "rr/a", "-m", "one", "-r"]);
    mosquitto_pub(port, &["-t", "rr/b", "-m", "two", "-r"]);
    let mut s = midge_sub(
        port,
        &[
            "-t",
            "rr/#",
            "--remove-retained",
            "-T",
            "rr/b",
            "--retained-only",
            "-W",
            "3",
        ],
    );
    s.wait_line("one", TIMEOUT);
    // The clear comes back live (not retained), which ends --retained-only.
    assert!(s.wait_exit(TIMEOUT).success());
    let mut left = midge_sub(port, &["-v", "-t", "rr/#", "--retained-only", "-W", "2"]);
    left.wait_exit(TIMEOUT);
    assert_eq!(left.stdout.all(), ["rr/b two"]);
}

/// -F with every specifier, %j and %J (--pretty too): byte for byte what
/// mosquitto_sub prints for the same messages.
#[test]
fn format_output_is_mosquitto_sub_s() {
    let b = Broker::start("");
    let port = b.addr().port();
    let p = port.to_string();
    let payloads: &[(&str, &[u8], &str)] = &[
        ("f/1", b"one", "0"),
        ("f/2", b"tw\"o\\x", "1"),
        (
            "f/3",
            br#"{"temperature":27.0,"humidity":57,"list":[1,2.5,"a\nb"],"o":{}}"#,
            "2",
        ),
        ("f/4", b"tab\there\x01", "1"),
    ];
    let mut raw = b.client("retainer");
    for (i, (t, m, q)) in payloads.iter().enumerate() {
        raw.publish(t, m, q.parse().unwrap(), true, i as u16 + 1);
    }
    let formats = [
        "%t|%p|%r|%q|%l|%x|%X|%%|%10t|%-10t|%.1t|%05l|%-5l|%8p|%-8x|%08x|%-08p|%3.2t|@@|\\t|%A|%5E|%C|%-3F|%D%P%R|%5S|\\\\",
        "%j",
        "%J",
    ];
    for f in formats {
        for pretty in [false, true] {
            for (t, _, _) in payloads {
                let mut args = vec![
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &p,
                    "-t",
                    t,
                    "-q",
                    "2",
                    "-C",
                    "1",
                    "-F",
                    f,
                ];
                if pretty {
                    args.push("--pretty");
                }
                let m = tool("midge_sub", &args);
                let q = mosquitto_tool(MOSQUITTO_SUB, &args);
                // The time stamp is the one thing that differs.
                let strip = |s: &str| {
                    s.lines()
                        .map(|l| match l.find("\"tst\":") {
                            Some(i) => format!(
                                "{}TST{}",
                                &l[..i],
                                &l[l[i..].find("Z+").map_or(l.len(), |j| i + j + 7)..]
                            ),
                            None => l.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                assert_eq!(strip(&m.stdout), strip(&q.stdout), "-F {f} pretty {pretty}");
                assert_eq!(m.stderr, q.stderr, "-F {f} pretty {pretty}");
                assert_eq!(m.status.code(), q.status.code());
            }
        }
    }
    // Time specifiers: the shape of what they print.
    let t = tool(
        "midge_sub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &p,
            "-t",
            "f/1",
            "-C",
            "1",
            "-F",
            "%U|%I|@Y|@N",
        ],
    );
    let parts: Vec<&str> = t.stdout.split('|').collect();
    assert_eq!(parts.len(), 4, "{}", t.stdout);
    assert!(
        parts[0].len() == 20 && parts[0].as_bytes()[10] == b'.',
        "{}",
        parts[0]
    );
    assert_eq!(parts[1].len(), 24, "{}", parts[1]);
    assert_eq!(parts[2].len(), 4);
    assert_eq!(parts[3].len(), 9);
}

/// Wrong credentials against Debian's mosquitto with a password file: the
/// same lines and exit codes as mosquitto_sub and mosquitto_pub.
#[test]
fn auth_refusal_reads_as_mosquitto_s() {
    let dir = TempDir::new("midge-tools-auth");
    let pw = dir.path().join("pw");
    let st = Command::new("mosquitto_passwd")
        .args(["-c", "-b", pw.to_str().unwrap(), "alice", "secret"])
        .status()
        .expect("mosquitto_passwd");
    assert!(st.success());
    let b = Broker::mosquitto(&format!(
        "allow_anonymous false\npassword_file {}\n",
        pw.display()
    ));
    let p = b.addr().port().to_string();
    for (midge, mosq) in [
        ("midge_sub", MOSQUITTO_SUB),
        ("midge_pub", tools::MOSQUITTO_PUB),
    ] {
        let args = [
            "-h",
            "127.0.0.1",
            "-p",
            &p,
            "-t",
            "a",
            "-m",
            "x",
            "-u",
            "alice",
            "-P",
            "wrong",
        ];
        let args: Vec<&str> = args
            .iter()
            .copied()
            .filter(|a| midge == "midge_pub" || (*a != "-m" && *a != "x"))
            .collect();
        let m = tool(midge, &args);
        let q = mosquitto_tool(mosq, &args);
        assert_eq!(
            (m.status.code(), &m.stderr),
            (q.status.code(), &q.stderr),
            "{midge}"
        );
        assert!(
            m.stderr
                .starts_with("Connection error: Connection Refused: not authorised.")
        );
    }
    let sub = midge_sub(
        b.addr().port(),
        &[
            "-v", "-t", "a", "-t", "probe", "-u", "alice", "-P", "secret",
        ],
    );
    let mut pubbed = false;
    wait_until("the authenticated subscriber", TIMEOUT, || {
        let f = midge_pub(
            b.addr().port(),
            &["-t", "a", "-m", "in", "-u", "alice", "-P", "secret"],
        );
        pubbed |= f.status.success();
        sub.stdout.all().iter().any(|l| l == "a in")
    });
    assert!(pubbed);
}

#[test]
fn errors_and_help_read_as_mosquitto_s() {
    let cases: &[&[&str]] = &[
        &["-t", "a", "-q", "3"],
        &["-t", "a", "-p"],
        &["-t", "a", "--bogus"],
        &["-t", "a/#/b"],
        &["-t", "a", "-k", "3"],
        &["-t", "a", "-F", "%z"],
        &["-t", "a", "-C", "0"],
        &["-t", "a", "-c"],
        &["-t", "a", "-V", "mqttv4"],
        &["-t", "a", "--will-payload", "x"],
        &[],
        &["-t", "a", "-R", "--retained-only"],
    ];
    for args in cases {
        let m = tool("midge_sub", args);
        let q = mosquitto_tool(MOSQUITTO_SUB, args);
        assert_eq!(m.status.code(), q.status.code(), "{args:?}");
        assert_eq!(
            m.stderr.replace("midge_sub", "mosquitto_sub"),
            q.stderr,
            "{args:?}"
        );
    }
    for args in [
        &["-t", "a/+", "-m", "x"][..],
        &["-t", "a", "-m", "x", "-l"],
        &["-t", "a"],
    ] {
        let m = tool("midge_pub", args);
        let q = mosquitto_tool(tools::MOSQUITTO_PUB, args);
        assert_eq!(m.status.code(), q.status.code(), "{args:?}");
        assert_eq!(
            m.stderr.replace("midge_pub", "mosquitto_pub"),
            q.stderr,
            "{args:?}"
        );
    }
    // -D mistakes read as mosquitto_pub's.
    for args in [
        &[
            "-V", "5", "-D", "publish", "bogus", "x", "-t", "a", "-m", "b",
        ][..],
        &[
            "-V",
            "5",
            "-D",
            "bogus",
            "content-type",
            "x",
            "-t",
            "a",
            "-m",
            "b",
        ],
        &[
            "-V",
            "5",
            "-D",
            "connect",
            "content-type",
            "x",
            "-t",
            "a",
            "-m",
            "b",
        ],
        &[
            "-V",
            "5",
            "-D",
            "publish",
            "payload-format-indicator",
            "300",
            "-t",
            "a",
            "-m",
            "b",
        ],
        &[
            "-V",
            "5",
            "-D",
            "publish",
            "content-type",
            "x",
            "-D",
            "publish",
            "content-type",
            "y",
            "-t",
            "a",
            "-m",
            "b",
        ],
    ] {
        let m = tool("midge_pub", args);
        let q = mosquitto_tool(tools::MOSQUITTO_PUB, args);
        assert_eq!(m.status.code(), q.status.code(), "{args:?}");
        assert_eq!(
            m.stderr.replace("midge_pub", "mosquitto_pub"),
            q.stderr,
            "{args:?}"
        );
    }
    let h = tool("midge_sub", &["--help"]);
    assert_eq!(h.status.code(), Some(1));
    assert!(h.stdout.contains("--retained-only") && h.stdout.contains("--verify-key"));
    assert!(h.stdout.contains("--cafile") && h.stdout.contains("--insecure"));
    // Nothing listening: strerror, exit 1.
    let port = free_port().to_string();
    for name in ["midge_sub", "midge_pub"] {
        let f = tool(
            name,
            &["-h", "127.0.0.1", "-p", &port, "-t", "a", "-m", "x"]
                [..if name == "midge_sub" { 6 } else { 8 }],
        );
        assert_eq!(
            (f.status.code(), f.stderr.as_str()),
            (Some(1), "Error: Connection refused")
        );
    }
}

/// -L, -i/-I, -k, -V mqttv31, -c, -A, --nodelay, -d, --quiet, will flags,
/// --unix and the options file, seen from the broker's side.
#[test]
fn connection_flags_reach_the_broker() {
    let dir = TempDir::new("midge-tools-conn");
    let sock = dir.path().join("mqtt.sock");
    // Mosquitto may run as its own user: let it make the socket here.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let b = Broker::mosquitto(&format!(
        // Two spaces keep the harness from giving this listener a port.
        "listener 0 127.0.0.1\nlistener  0 {}\n",
        sock.display()
    ));
    let port = b.addr().port();
    let p = port.to_string();
    let url = format!("mqtt://127.0.0.1:{p}/u/t");
    ok(&tool(
        "midge_pub",
        &[
            "-L",
            &url,
            "-m",
            "x",
            "-i",
            "via-url",
            "-k",
            "30",
            "-V",
            "mqttv31",
            "-A",
            "127.0.0.1",
            "--nodelay",
        ],
    ));
    b.wait_for_log("as via-url (p1, c1, k30)", TIMEOUT);
    ok(&midge_pub(port, &["-t", "a", "-m", "x", "-I", "pre-"]));
    b.wait_for_log("as pre-", TIMEOUT);
    ok(&midge_pub(
        port,
        &["-t", "a", "-m", "x", "-i", "keeper", "-c"],
    ));
    b.wait_for_log("as keeper (p2, c0, k60)", TIMEOUT);
    // --unix
    let mut cmd = tool_command("midge_pub");
    cmd.args([
        "--unix",
        sock.to_str().unwrap(),
        "-t",
        "a",
        "-m",
        "x",
        "-i",
        "over-unix",
    ]);
    ok(&run(cmd, "midge_pub --unix", tools::TOOL_TIMEOUT));
    b.wait_for_log("as over-unix", TIMEOUT);
    // -d prints libmosquitto's lines; --quiet silences errors.
    let d = midge_pub(port, &["-t", "a", "-m", "x", "-q", "1", "-d", "-i", "dbg"]);
    assert_eq!(
        d.stdout,
        "Client dbg sending CONNECT\nClient dbg received CONNACK (0)\nClient dbg sending PUBLISH (d0, q1, r0, m1, 'a', ... (1 bytes))\nClient dbg received PUBACK (Mid: 1, RC:0)\nClient dbg sending DISCONNECT"
    );
    let q = tool(
        "midge_sub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
            "-t",
            "a",
            "--quiet",
        ],
    );
    assert_eq!((q.status.code(), q.stderr.as_str()), (Some(1), ""));
    // Will: the broker publishes it when the subscriber is killed.
    let watcher = mosquitto_sub(port, &["-v", "-t", "will/#", "-t", "probe"]);
    ready(&b, &watcher);
    let mut doomed = midge_sub(
        port,
        &[
            "-t",
            "probe",
            "-v",
            "--will-topic",
            "will/t",
            "--will-payload",
            "gone",
            "--will-qos",
            "1",
            "--will-retain",
        ],
    );
    ready(&b, &doomed);
    doomed.kill();
    watcher.wait_line("will/t gone", TIMEOUT);
    // The options file: one option per line, before the command line's.
    let xdg = TempDir::new("midge-tools-xdg");
    xdg.write(
        "midge_pub",
        &format!("# comment\n-h 127.0.0.1\n-p {p}\n-t from/file\n"),
    );
    let w2 = mosquitto_sub(port, &["-v", "-t", "from/#", "-t", "probe"]);
    ready(&b, &w2);
    let mut cmd = tool_command("midge_pub");
    cmd.env("XDG_CONFIG_HOME", xdg.path()).args(["-m", "opts"]);
    ok(&run(
        cmd,
        "midge_pub with options file",
        tools::TOOL_TIMEOUT,
    ));
    w2.wait_line("from/file opts", TIMEOUT);
}

/// Seed 004's signed messages: midge to midge, bad signatures and replays
/// reported on stderr, and python-ecdsa both ways with SHA-1.
#[test]
fn signed_messages() {
    let dir = TempDir::new("midge-tools-sign");
    let key = dir.path().join("private.pem");
    let public = dir.path().join("public.pem");
    let k = key.to_str().unwrap();
    let pk = public.to_str().unwrap();
    for args in [
        &[
            "ecparam",
            "-genkey",
            "-name",
            "secp256k1",
            "-noout",
            "-out",
            k,
        ][..],
        &["ec", "-in", k, "-pubout", "-out", pk],
    ] {
        let st = Command::new("openssl")
            .args(args)
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(st.success());
    }
    let b = Broker::start("");
    let port = b.addr().port();
    for digest in ["sha256", "sha1"] {
        let sub = midge_sub(
            port,
            &[
                "-v",
                "-t",
                "sig",
                "--verify-key",
                pk,
                "--sign-digest",
                digest,
            ],
        );
        // Unsigned probes until the subscriber reports one: subscribed.
        let mut prober = b.client("prober");
        wait_until("the verifying subscriber", TIMEOUT, || {
            prober.publish("sig", b"probe", 0, false, 0);
            sub.stderr
                .wait_from(0, std::time::Duration::from_millis(200), |l| {
                    l.contains("bad signature")
                })
                .is_some()
        });
        // sha256 signed by midge_pub, sha1 by python-ecdsa as the seed does.
        let signed = if digest == "sha1" {
            tools::run_py("ecdsa_sign.py", &[k, "hello:world"])
        } else {
            let w = mosquitto_sub(port, &["-t", "sig", "-C", "1"]);
            tools::wait_until_subscribed(&b, &mosquitto_sub(port, &["-t", "probe"]), "probe");
            wait_until("the signed message", TIMEOUT, || {
                ok(&midge_pub(
                    port,
                    &["-t", "sig", "-m", "hello:world", "--sign-key", k],
                ));
                w.stdout.len() > 0
            });
            w.stdout.all()[0].clone()
        };
        if digest == "sha1" {
            ok(&midge_pub(port, &["-t", "sig", "-m", &signed]));
        }
        sub.wait_line("sig hello:world", TIMEOUT);
        // The same message again is a replay; a forged one a bad signature.
        let before = sub.stderr.len();
        ok(&midge_pub(port, &["-t", "sig", "-m", &signed]));
        sub.stderr
            .wait_from(before, TIMEOUT, |l| l.contains("replayed"))
            .expect("replay line");
        let forged = signed.replacen("hello", "HELLO", 1);
        ok(&midge_pub(port, &["-t", "sig", "-m", &forged]));
        sub.stderr
            .wait_from(before, TIMEOUT, |l| l.contains("bad signature"))
            .expect("bad signature line");
        assert_eq!(
            sub.stdout
                .all()
                .iter()
                .filter(|l| l.contains("hello"))
                .count(),
            1,
            "{}",
            sub.output_text()
        );
    }
    // midge_pub --sign-digest sha1 verifies in the seed's receiver logic.
    let w = mosquitto_sub(port, &["-t", "py", "-t", "probe", "-v"]);
    ready(&b, &w);
    ok(&midge_pub(
        port,
        &[
            "-t",
            "py",
            "-m",
            "Testmessage_42:with colon",
            "--sign-key",
            k,
            "--sign-digest",
            "sha1",
        ],
    ));
    let (_, line) = w
        .stdout
        .wait_from(0, TIMEOUT, |l| l.starts_with("py "))
        .expect("signed message");
    let out = tools::run_py("ecdsa_verify.py", &[pk, &line[3..]]);
    assert_eq!(out.trim_end(), "Testmessage_42:with colon");
}

/// MQTT 5 through the tools, against midge and against Debian's mosquitto:
/// `-D` properties sent by midge_pub reach mosquitto_sub, and midge_sub
/// prints what mosquitto_pub sent with the property formats of `-F`.
#[test]
fn mqtt5_properties_both_ways() {
    for broker in [Broker::start(""), Broker::mosquitto("")] {
        let port = broker.addr().port();
        // midge_pub -D ... → mosquitto_sub -V mqttv5 -F.
        let theirs = mosquitto_sub(
            port,
            &[
                "-V",
                "mqttv5",
                "-t",
                "p/#",
                "-t",
                "probe",
                "-F",
                "%t|%P|%C|%R|%D|%F|%p",
            ],
        );
        tools::wait_until_subscribed(&broker, &theirs, "probe");
        let f = midge_pub(
            port,
            &[
                "-V",
                "mqttv5",
                "-q",
                "1",
                "-t",
                "p/1",
                "-m",
                "hello",
                "-D",
                "publish",
                "user-property",
                "k1",
                "v1",
                "-D",
                "publish",
                "user-property",
                "k2",
                "v2",
                "-D",
                "publish",
                "content-type",
                "text/plain",
                "-D",
                "publish",
                "response-topic",
                "back/here",
                "-D",
                "publish",
                "correlation-data",
                "c42",
                "-D",
                "publish",
                "payload-format-indicator",
                "1",
            ],
        );
        ok(&f);
        theirs.wait_line("p/1|k1:v1 k2:v2|text/plain|back/here|c42|1|hello", TIMEOUT);

        // mosquitto_pub -D ... → midge_sub -V mqttv5 with a subscription id.
        let ours = midge_sub(
            port,
            &[
                "-V",
                "mqttv5",
                "-t",
                "q/#",
                "-t",
                "probe",
                "-D",
                "subscribe",
                "subscription-identifier",
                "7",
                "-F",
                "%t|%P|%C|%S|%E|%p",
            ],
        );
        tools::wait_until_subscribed(&broker, &ours, "probe");
        ok(&tools::mosquitto_pub(
            port,
            &[
                "-V",
                "mqttv5",
                "-t",
                "q/1",
                "-m",
                "there",
                "-D",
                "publish",
                "user-property",
                "a",
                "b",
                "-D",
                "publish",
                "content-type",
                "ct",
                "-D",
                "publish",
                "message-expiry-interval",
                "100",
            ],
        ));
        let line = match ours.stdout.wait_from(0, TIMEOUT, |l| l.starts_with("q/1|")) {
            Some((_, l)) => l,
            None => panic!("no message: {}", ours.output_text()),
        };
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts[..4], ["q/1", "a:b", "ct", "7"], "{line}");
        let left: u32 = parts[4].parse().expect("expiry");
        assert!((95..=100).contains(&left), "{line}");
        assert_eq!(parts[5], "there", "{line}");
    }
}

/// midge_rr publishes the request with its response topic and prints the
/// first response; -W ends it with mosquitto_rr's timeout.
#[test]
fn rr_request_and_response() {
    for broker in [Broker::start(""), Broker::mosquitto("")] {
        let port = broker.addr().port();
        // The responder learns where to answer from the request (%R).
        let responder = mosquitto_sub(
            port,
            &["-V", "mqttv5", "-t", "req", "-t", "probe", "-F", "%t %R %p"],
        );
        tools::wait_until_subscribed(&broker, &responder, "probe");
        let mut cmd = tool_command("midge_rr");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "req",
            "-e",
            "resp/1",
            "-m",
            "ping",
            "-W",
            "20",
        ]);
        let mut rr = Proc::spawn(cmd, "midge_rr", false);
        responder.wait_line("req resp/1 ping", TIMEOUT);
        ok(&tools::mosquitto_pub(port, &["-t", "resp/1", "-m", "pong"]));
        assert!(rr.wait_exit(TIMEOUT).success());
        assert_eq!(rr.stdout.all(), ["pong"], "{}", rr.output_text());

        let f = tool(
            "midge_rr",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                "req",
                "-e",
                "nobody",
                "-m",
                "x",
                "-W",
                "1",
            ],
        );
        assert_eq!(
            (f.status.code(), f.stderr.as_str()),
            (Some(27), "Timed out")
        );
    }
    let f = tool("midge_rr", &["-t", "req", "-m", "x"]);
    assert_eq!(f.status.code(), Some(1));
    assert!(
        f.stderr
            .starts_with("Error: All of topic, message, and response topic must be supplied."),
        "{}",
        f.stderr
    );
}
