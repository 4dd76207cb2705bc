//! A stateful fuzz test: random but well-formed sequences of packets from
//! several raw clients (connect, subscribe, unsubscribe, publish at every
//! QoS, acknowledgements held back and sent out of order, disconnects,
//! dropped sockets, client-id takeovers) against the running broker, with
//! an ACL file. Invariants checked on every delivery and at the end:
//!
//! - a message reaches a client only through a filter it subscribed to,
//!   and only on a topic the ACL lets it read (`$SYS` included);
//! - no message reaches a client twice without DUP, and a QoS 2 message
//!   never again once its PUBREL came;
//! - the broker is alive, its log holds no panic, and its memory is back
//!   near the start level once everyone has left.
//!
//! The run is bounded (`STEPS` or a few seconds). The seed is printed on
//! failure; `MIDGE_STATEFUL_SEED=N` replays one.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::packets::{
    Connect, PUBLISH, PUBREC, PUBREL, disconnect, puback, pubcomp, publish, pubrec, pubrel,
    subscribe, unsubscribe,
};
use common::*;

const CLIENTS: usize = 4;
const STEPS: usize = 1500;
const FILTERS: &[&str] = &[
    "t/#",
    "t/open/+",
    "t/open/a",
    "#",
    "t/secret/#",
    "+/+/b",
    "$SYS/#",
];
const TOPICS: &[&str] = &[
    "t/open/a",
    "t/open/b",
    "t/open",
    "t/secret/x",
    "u/z",
    "t/x/b",
];
/// Everyone may write `t/#`; only `t/open` and below may be read.
const ACL: &str = "topic write t/#\ntopic read t/open/#\n";

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// MQTT topic matching, written here so a broker bug cannot hide.
fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('#') || filter.starts_with('+')) {
        return false;
    }
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match (f, t.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (f, Some(l)) if f == l => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

fn readable(topic: &str) -> bool {
    topic == "t/open" || topic.starts_with("t/open/")
}

/// What the test knows of one client id.
#[derive(Default)]
struct Model {
    conn: Option<RawClient>,
    /// Filters of its session (kept on unsubscribe: messages in flight may
    /// still match them).
    subs: HashSet<String>,
    /// Payloads received without DUP.
    seen: HashSet<String>,
    /// QoS 2 deliveries by packet id, until their PUBREL.
    qos2: HashMap<u16, String>,
    /// QoS 2 payloads whose PUBREL came: never delivered again.
    released: HashSet<String>,
    /// Acknowledgements held back, sent later in random order.
    held: Vec<Vec<u8>>,
    next_id: u16,
}

struct Run {
    b: Broker,
    rng: Rng,
    seed: u64,
    clients: Vec<Model>,
    seq: u64,
}

impl Run {
    fn fail(&self, what: String) -> ! {
        panic!(
            "seed {} (MIDGE_STATEFUL_SEED={} replays it): {what}",
            self.seed, self.seed
        );
    }

    fn connect(&mut self, i: usize) {
        let clean = self.rng.below(3) == 0;
        let c = Connect::new(&format!("c{i}")).clean(clean);
        // A takeover when a connection is open: the broker closes the old one.
        let mut raw = self.b.raw().named(&format!("c{i}"));
        raw.send(&c.build());
        let m = &mut self.clients[i];
        m.conn = None;
        m.held.clear();
        if clean {
            m.subs.clear();
            m.qos2.clear();
        }
        let p = raw.read_packet();
        if p.kind() != 2 || p.body.get(1) != Some(&0) {
            self.fail(format!("c{i}: no CONNACK 0: {}", p.describe()));
        }
        self.clients[i].conn = Some(raw);
    }

    fn send(&mut self, i: usize, bytes: &[u8]) {
        if let Some(c) = &mut self.clients[i].conn {
            c.send_lossy(bytes);
        }
    }

    fn step(&mut self) {
        let i = self.rng.below(CLIENTS);
        if self.clients[i].conn.is_none() {
            self.connect(i);
            return;
        }
        match self.rng.below(100) {
            0..=24 => {
                let topic = *self.rng.pick(TOPICS);
                let qos = self.rng.below(3) as u8;
                self.seq += 1;
                let payload = format!("{}:{topic}", self.seq);
                let m = &mut self.clients[i];
                m.next_id = m.next_id % 60_000 + 1;
                let id = if qos == 0 { 0 } else { m.next_id };
                self.send(
                    i,
                    &publish(topic, payload.as_bytes(), qos, false, false, id),
                );
            }
            25..=34 => {
                let f = *self.rng.pick(FILTERS);
                let qos = self.rng.below(3) as u8;
                self.clients[i].subs.insert(f.to_string());
                self.send(i, &subscribe(1, &[(f, qos)]));
            }
            35..=39 => {
                let f = *self.rng.pick(FILTERS);
                self.send(i, &unsubscribe(2, &[f]));
            }
            40..=69 => self.read(i),
            70..=84 => self.release_acks(i),
            85..=89 => {
                self.send(i, &disconnect());
                self.clients[i].conn = None;
            }
            90..=94 => self.clients[i].conn = None, // dropped without a word
            _ => self.connect(i),                   // a takeover
        }
    }

    /// Sends some of the held acknowledgements, in random order.
    fn release_acks(&mut self, i: usize) {
        let n = self.clients[i].held.len();
        for _ in 0..self.rng.below(n + 1) {
            let k = self.rng.below(self.clients[i].held.len());
            let ack = self.clients[i].held.swap_remove(k);
            self.send(i, &ack);
        }
    }

    /// Reads what has arrived for client `i` and checks every delivery.
    fn read(&mut self, i: usize) {
        loop {
            let Some(c) = &mut self.clients[i].conn else {
                return;
            };
            let p = match c.try_read(Duration::from_millis(2)) {
                ReadOutcome::Packet(p) => p,
                ReadOutcome::Timeout => return,
                // Taken over by a later connection of the same id, or
                // closed after a DISCONNECT raced with this read.
                ReadOutcome::Closed => {
                    self.clients[i].conn = None;
                    return;
                }
            };
            match p.kind() {
                PUBLISH => self.delivered(i, p.publish()),
                PUBREC => self.clients[i].held.push(pubrel(p.pkid())),
                PUBREL => {
                    let m = &mut self.clients[i];
                    if let Some(payload) = m.qos2.remove(&p.pkid()) {
                        m.released.insert(payload);
                    }
                    m.held.push(pubcomp(p.pkid()));
                }
                _ => {}
            }
        }
    }

    fn delivered(&mut self, i: usize, p: Publish) {
        let payload = p.payload_str();
        let m = &self.clients[i];
        if !m.subs.iter().any(|f| matches(f, &p.topic)) {
            self.fail(format!(
                "c{i} got {} ({payload}) without a matching subscription {:?}",
                p.topic, m.subs
            ));
        }
        if !readable(&p.topic) {
            self.fail(format!(
                "c{i} got {} ({payload}), which the ACL does not let it read",
                p.topic
            ));
        }
        if m.released.contains(&payload) {
            self.fail(format!(
                "c{i} got QoS 2 message {payload} again after its PUBREL"
            ));
        }
        if !p.dup && !self.clients[i].seen.insert(payload.clone()) {
            self.fail(format!("c{i} got {payload} twice without DUP"));
        }
        let m = &mut self.clients[i];
        match (p.qos, p.pkid) {
            (1, Some(id)) => m.held.push(puback(id)),
            (2, Some(id)) => {
                m.qos2.insert(id, payload);
                m.held.push(pubrec(id));
            }
            _ => {}
        }
    }
}

#[test]
fn random_sessions_keep_the_invariants() {
    let seed = std::env::var("MIDGE_STATEFUL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("stateful: seed {seed}");
    let dir = TempDir::new("stateful");
    let acl = dir.write("acl", ACL);
    let b = Broker::start(&format!(
        "allow_anonymous true\nacl_file {}\nsys_interval 1\nmax_queued_messages 50\n",
        acl.display()
    ));
    let mut run = Run {
        b,
        rng: Rng(seed),
        seed,
        clients: (0..CLIENTS).map(|_| Model::default()).collect(),
        seq: 0,
    };
    // The broker's own threads (main, router, log writer; under qemu-arm
    // the emulator adds one of its own).
    let own_threads = proc_status(run.b.pid(), "Threads");
    // Warm-up: every client once, so the start level includes their first
    // allocations.
    for i in 0..CLIENTS {
        run.connect(i);
        run.send(i, &disconnect());
        run.clients[i].conn = None;
    }
    let start = proc_status(run.b.pid(), "VmRSS");
    let deadline = Instant::now() + scaled(Duration::from_secs(4));
    let mut steps = 0;
    while steps < STEPS && Instant::now() < deadline {
        run.step();
        steps += 1;
    }
    // Everyone reads what is left, then leaves with a clean session.
    for i in 0..CLIENTS {
        run.read(i);
        let c = Connect::new(&format!("c{i}"));
        RawClient::connect_with(run.b.addr(), &c, false).disconnect();
        run.clients[i].conn = None;
    }
    run.b.assert_running();
    let threads = proc_status(run.b.pid(), "Threads");
    wait_until("client threads gone", TIMEOUT, || {
        proc_status(run.b.pid(), "Threads") <= own_threads
    });
    let end = proc_status(run.b.pid(), "VmRSS");
    let delivered: usize = run.clients.iter().map(|m| m.seen.len()).sum();
    eprintln!(
        "stateful: {steps} steps, {} published, {delivered} delivered, RSS {start} -> {end} KiB, \
         {threads} threads before the last ones left",
        run.seq
    );
    if run.b.has_log("panicked") {
        run.fail(format!("a panic in the log:\n{}", run.b.logs().join("\n")));
    }
    if !emulated() && end > start + 4 * 1024 {
        run.fail(format!(
            "RSS {start} KiB at start, {end} KiB after everyone left"
        ));
    }
    assert!(delivered > 0, "seed {seed}: nothing was delivered at all");
}
