//! The users' own first tests, verbatim: what they type after installing
//! midge in place of Mosquitto.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

use common::tools::{self, MOSQUITTO_PUB, mosquitto_pub, mosquitto_sub};
use common::*;

/// Lines of `sub` that are not readiness probes.
fn real_lines(sub: &tools::Proc, probe: &str) -> Vec<String> {
    sub.stdout
        .all()
        .into_iter()
        .filter(|l| !l.starts_with(probe))
        .collect()
}

#[test]
fn mosquitto_sub_all_topics_sees_hello_world() {
    let b = Broker::start("");
    // mosquitto_sub -v -t '#'
    let sub = mosquitto_sub(b.port, &["-v", "-t", "#"]);
    tools::wait_until_subscribed(&b, &sub, "probe/seed");
    // mosquitto_pub -t public/test1 -m "Hello World"
    mosquitto_pub(b.port, &["-t", "public/test1", "-m", "Hello World"]);
    sub.wait_line("public/test1 Hello World", TIMEOUT);
    std::thread::sleep(QUIET);
    assert_eq!(
        real_lines(&sub, "probe/seed "),
        ["public/test1 Hello World"],
        "{}",
        sub.output_text()
    );
}

/// Process ids whose process group is `pgid` (from /proc).
fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...; comm may contain spaces.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) {
            // A zombie is gone for our purpose.
            if fields.first() != Some(&"Z") {
                out.push(pid);
            }
        }
    }
    out
}

#[test]
fn tail_f_into_mosquitto_pub_l_sends_each_line_as_it_arrives() {
    let b = Broker::start("");
    let dir = TempDir::new("midge-seed");
    let file = dir.write("sensor.log", "");
    let sub = mosquitto_sub(b.port, &["-v", "-t", "#"]);
    tools::wait_until_subscribed(&b, &sub, "probe/seed");

    // tail -f FILE | mosquitto_pub -t public/test1 -l
    let script = format!(
        "tail -f '{}' | '{}' -h 127.0.0.1 -p {} -t public/test1 -l",
        file.display(),
        MOSQUITTO_PUB,
        b.port
    );
    tools::require(MOSQUITTO_PUB);
    let mut pipeline = tools::shell(&script);
    let pgid = pipeline.pid();

    let mut from = 0;
    for i in 1..=5 {
        let text = format!("reading {i}: {} degrees", 20 + i);
        let mut f = OpenOptions::new()
            .append(true)
            .open(&file)
            .expect("open for append");
        writeln!(f, "{text}").expect("append");
        drop(f);
        let want = format!("public/test1 {text}");
        from = sub.wait_line_from(from, &want, Duration::from_secs(20)) + 1;
        // Each line arrives on its own, when it is written: exactly i so far.
        let sent: Vec<String> = real_lines(&sub, "probe/seed ")
            .into_iter()
            .filter(|l| l.starts_with("public/test1 "))
            .collect();
        assert_eq!(sent.len(), i, "after appending line {i}: {sent:?}");
        assert!(
            !pipeline.has_exited(),
            "the pipeline ended early: {}",
            pipeline.output_text()
        );
    }
    std::thread::sleep(QUIET);
    let expected: Vec<String> = (1..=5)
        .map(|i| format!("public/test1 reading {i}: {} degrees", 20 + i))
        .collect();
    assert_eq!(
        real_lines(&sub, "probe/seed "),
        expected,
        "{}",
        sub.output_text()
    );

    // Dropping the handle ends the whole pipeline (tail and mosquitto_pub).
    drop(pipeline);
    wait_until("the pipeline's processes to end", TIMEOUT, || {
        group_members(pgid).is_empty()
    });
}
