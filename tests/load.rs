//! Load: a thousand concurrent clients publishing and receiving at QoS 1
//! with no loss.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::packets::{CONNACK, PUBACK, PUBLISH, SUBACK, connect, puback, publish, subscribe};
use common::*;

const CLIENTS: usize = 1000;
/// Messages each client publishes (and receives).
const MESSAGES: u16 = 20;
/// The whole test must finish within this.
const LIMIT: Duration = Duration::from_secs(120);

/// A gate that opens when `n` clients have arrived, or never (deadline).
struct Gate {
    count: Mutex<usize>,
    cv: Condvar,
}

impl Gate {
    fn arrive_and_wait(
        &self,
        n: usize,
        deadline: Instant,
        failed: &AtomicBool,
    ) -> Result<(), String> {
        let mut c = self.count.lock().unwrap();
        *c += 1;
        self.cv.notify_all();
        while *c < n {
            if failed.load(Ordering::SeqCst) {
                return Err("another client failed".into());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("only {} of {n} clients subscribed in time", *c));
            }
            c = self
                .cv
                .wait_timeout(c, (deadline - now).min(Duration::from_millis(200)))
                .unwrap()
                .0;
        }
        Ok(())
    }
}

fn read_until(c: &mut RawClient, deadline: Instant, what: &str) -> Result<Packet, String> {
    match c.try_read(deadline.saturating_duration_since(Instant::now())) {
        ReadOutcome::Packet(p) => Ok(p),
        ReadOutcome::Timeout => Err(format!("{}: timed out waiting for {what}", c.name)),
        ReadOutcome::Closed => Err(format!("{}: closed while waiting for {what}", c.name)),
    }
}

fn client(
    i: usize,
    b: std::net::SocketAddr,
    gate: &Gate,
    failed: &AtomicBool,
    deadline: Instant,
) -> Result<(), String> {
    let mut c = RawClient::open_until(b, deadline).named(&format!("load-{i}"));
    c.send(&connect(&format!("load-{i}")));
    let p = read_until(&mut c, deadline, "CONNACK")?;
    if p.kind() != CONNACK || p.body != [0, 0] {
        return Err(format!("load-{i}: bad CONNACK {}", p.describe()));
    }
    c.send(&subscribe(1, &[(&format!("load/{i}"), 1)]));
    let p = read_until(&mut c, deadline, "SUBACK")?;
    if p.kind() != SUBACK || p.body != [0, 1, 1] {
        return Err(format!("load-{i}: bad SUBACK {}", p.describe()));
    }
    gate.arrive_and_wait(CLIENTS, deadline, failed)?;

    let to = format!("load/{}", (i + 1) % CLIENTS);
    let from = (i + CLIENTS - 1) % CLIENTS;
    let mut burst = Vec::new();
    for k in 1..=MESSAGES {
        burst.extend(publish(
            &to,
            format!("from {i} #{k}").as_bytes(),
            1,
            false,
            false,
            k,
        ));
    }
    c.send(&burst);

    let mut acked = vec![false; MESSAGES as usize + 1];
    let mut n_acked = 0;
    let mut next = 1u16;
    while n_acked < MESSAGES || next <= MESSAGES {
        let p = read_until(
            &mut c,
            deadline,
            &format!(
                "{} more PUBACKs and {} more messages",
                MESSAGES - n_acked,
                MESSAGES + 1 - next
            ),
        )?;
        match p.kind() {
            PUBACK => {
                let id = p.pkid();
                if id == 0 || id > MESSAGES || acked[id as usize] {
                    return Err(format!("load-{i}: unexpected PUBACK {id}"));
                }
                acked[id as usize] = true;
                n_acked += 1;
            }
            PUBLISH => {
                let m = p.publish();
                let want = format!("from {from} #{next}");
                if m.topic != format!("load/{i}") || m.qos != 1 || m.payload_str() != want || m.dup
                {
                    return Err(format!(
                        "load-{i}: expected {want:?} on load/{i} at QoS 1, got {m:?}"
                    ));
                }
                c.send(&puback(m.pkid.unwrap()));
                next += 1;
            }
            _ => return Err(format!("load-{i}: unexpected {}", p.describe())),
        }
    }
    c.disconnect();
    Ok(())
}

#[test]
fn a_thousand_clients_qos1_without_loss() {
    let start = Instant::now();
    let deadline = start + LIMIT;
    let b = Broker::start("");
    let addr = b.addr();
    let gate = Arc::new(Gate {
        count: Mutex::new(0),
        cv: Condvar::new(),
    });
    let failed = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let gate = gate.clone();
        let failed = failed.clone();
        let h = std::thread::Builder::new()
            .name(format!("load-{i}"))
            .stack_size(256 * 1024)
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    client(i, addr, &gate, &failed, deadline)
                }));
                let r = match r {
                    Ok(r) => r,
                    Err(e) => Err(e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into())),
                };
                if r.is_err() {
                    failed.store(true, Ordering::SeqCst);
                    gate.cv.notify_all();
                }
                r
            })
            .expect("spawn client thread");
        handles.push(h);
    }
    let mut errors = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("a client thread panicked".into()),
        }
    }
    let took = start.elapsed();
    eprintln!(
        "{CLIENTS} clients x {MESSAGES} QoS 1 messages each way: {took:?}, {} failed",
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "{} of {CLIENTS} clients failed (limit {LIMIT:?}, took {took:?}); first errors:\n{}",
        errors.len(),
        errors
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(took < LIMIT, "took {took:?}");
}
