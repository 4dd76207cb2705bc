//! `make bench` (part 2): what one ACL check costs, per delivered message.
//!
//! The router makes one `Subject::allows` call per PUBLISH (write) and one
//! per delivered copy (read). This times those calls on the rules of seed
//! 004's ACL file and on a larger file, in nanoseconds per check.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use midge::auth::acl::{AclFile, READ, WRITE};

const SEED_004: &str = include_str!("../fixtures/seed004.acl");

fn per_check(acl: &AclFile, user: Option<&str>, topic: &str, access: u8) -> f64 {
    let subject = acl.subject(user, "sensor-17");
    let n = 2_000_000u32;
    // Best of five: the machine is shared.
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                black_box(subject.allows(black_box(topic), access));
            }
            t.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let seed = AclFile::parse(Path::new("seed004"), SEED_004.as_bytes()).expect("parses");
    let mut big = String::from("topic read #\n");
    for u in 0..50 {
        big.push_str(&format!("user u{u}\n"));
        for r in 0..20 {
            big.push_str(&format!("topic readwrite site/{u}/room{r}/#\n"));
        }
        big.push_str(&format!("topic deny site/{u}/room0/secret\n"));
    }
    big.push_str("pattern readwrite user/%u/#\npattern read devices/%c/+/config\n");
    let big = AclFile::parse(Path::new("big"), big.as_bytes()).expect("parses");

    println!("\nACL check cost (ns per check, best of 5 x 2,000,000)\n");
    println!("| rules | client | topic | access | ns/check |");
    println!("|---|---|---|---|---|");
    let cases: [(&str, &AclFile, Option<&str>, &str, u8); 6] = [
        ("seed 004", &seed, None, "home/livingroom/temperature", READ),
        (
            "seed 004",
            &seed,
            Some("x"),
            "x/livingroom/temperature",
            WRITE,
        ),
        ("seed 004", &seed, Some("alice"), "user/alice/inbox", READ),
        (
            "50 users x 21 rules",
            &big,
            Some("u7"),
            "site/7/room19/temp",
            READ,
        ),
        (
            "50 users x 21 rules",
            &big,
            Some("u7"),
            "site/7/room0/secret",
            READ,
        ),
        (
            "50 users x 21 rules",
            &big,
            Some("u7"),
            "elsewhere/a/b/c",
            WRITE,
        ),
    ];
    for (name, acl, user, topic, access) in cases {
        let ns = per_check(acl, user, topic, access);
        let a = if access == READ { "read" } else { "write" };
        println!(
            "| {name} | {} | {topic} | {a} | {ns:.0} |",
            user.unwrap_or("(anonymous)")
        );
    }
}
