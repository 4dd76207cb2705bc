//! The `$SYS/broker/...` tree, as Mosquitto publishes it (sys_tree.c):
//! retained messages updated every `sys_interval` seconds, each sent only
//! when its value changed. docs/SYS.md lists the topics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Counters the client threads add to, read by the router for `$SYS`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// MQTT packets of every type.
    pub packets_received: AtomicU64,
    pub packets_sent: AtomicU64,
    /// Connections accepted since the start.
    pub connections: AtomicU64,
    /// Sockets opened since the start (accepted or refused).
    pub sockets: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// What the router knows at a tick.
#[derive(Debug, Default, Clone, Copy)]
pub struct Snapshot {
    pub clients_connected: usize,
    pub clients_total: usize,
    pub clients_expired: u64,
    pub publish_received: u64,
    pub publish_sent: u64,
    pub publish_dropped: u64,
    pub publish_bytes_received: u64,
    pub publish_bytes_sent: u64,
    pub retained: usize,
    pub stored: usize,
    pub stored_bytes: usize,
    pub subscriptions: usize,
}

/// Counters whose rates go into `$SYS/broker/load/...`.
const LOADS: [&str; 9] = [
    "messages/received",
    "messages/sent",
    "publish/received",
    "publish/sent",
    "publish/dropped",
    "bytes/received",
    "bytes/sent",
    "connections",
    "sockets",
];

/// Exponentially damped per-minute rates over 1, 5 and 15 minutes.
#[derive(Debug)]
pub struct SysTree {
    start: Instant,
    last: Instant,
    prev: [u64; LOADS.len()],
    loads: [[f64; 3]; LOADS.len()],
    max_clients: usize,
    max_heap: u64,
    published: HashMap<String, String>,
}

impl SysTree {
    pub fn new() -> SysTree {
        let now = Instant::now();
        SysTree {
            start: now,
            last: now,
            prev: [0; LOADS.len()],
            loads: [[0.0; 3]; LOADS.len()],
            max_clients: 0,
            max_heap: 0,
            published: HashMap::new(),
        }
    }

    /// The topics whose values changed since the last call, with their values.
    pub fn update(&mut self, m: &Metrics, s: &Snapshot) -> Vec<(String, String)> {
        let now = Instant::now();
        let mut v: Vec<(String, String)> = Vec::with_capacity(64);
        let mut put = |topic: &str, value: String| v.push((format!("$SYS/broker/{topic}"), value));
        put("version", format!("midge version {}", crate::VERSION));
        put(
            "uptime",
            format!("{} seconds", self.start.elapsed().as_secs()),
        );

        let disconnected = s.clients_total.saturating_sub(s.clients_connected);
        self.max_clients = self.max_clients.max(s.clients_connected);
        put("clients/connected", s.clients_connected.to_string());
        put("clients/active", s.clients_connected.to_string());
        put("clients/disconnected", disconnected.to_string());
        put("clients/inactive", disconnected.to_string());
        put("clients/total", s.clients_total.to_string());
        put("clients/maximum", self.max_clients.to_string());
        put("clients/expired", s.clients_expired.to_string());

        let counters = [
            m.packets_received.load(Ordering::Relaxed),
            m.packets_sent.load(Ordering::Relaxed),
            s.publish_received,
            s.publish_sent,
            s.publish_dropped,
            m.bytes_received.load(Ordering::Relaxed),
            m.bytes_sent.load(Ordering::Relaxed),
            m.connections.load(Ordering::Relaxed),
            m.sockets.load(Ordering::Relaxed),
        ];
        put("messages/received", counters[0].to_string());
        put("messages/sent", counters[1].to_string());
        put("messages/stored", s.stored.to_string());
        put("store/messages/count", s.stored.to_string());
        put("store/messages/bytes", s.stored_bytes.to_string());
        put("publish/messages/received", s.publish_received.to_string());
        put("publish/messages/sent", s.publish_sent.to_string());
        put("publish/messages/dropped", s.publish_dropped.to_string());
        put(
            "publish/bytes/received",
            s.publish_bytes_received.to_string(),
        );
        put("publish/bytes/sent", s.publish_bytes_sent.to_string());
        put("bytes/received", counters[5].to_string());
        put("bytes/sent", counters[6].to_string());
        put("retained messages/count", s.retained.to_string());
        put("subscriptions/count", s.subscriptions.to_string());
        // The heap bytes in use, as Mosquitto reports its own; the resident
        // size where the heap is not counted (the library without midge's
        // allocator).
        let heap = match crate::sys::heap_in_use() {
            0 => crate::sys::rss_bytes(),
            n => Some(n as u64),
        };
        if let Some(heap) = heap {
            self.max_heap = self.max_heap.max(heap);
            put("heap/current", heap.to_string());
            put("heap/maximum", self.max_heap.to_string());
        }

        let dt = now.duration_since(self.last).as_secs_f64();
        if dt > 0.0 {
            for (i, name) in LOADS.iter().enumerate() {
                let per_minute = counters[i].saturating_sub(self.prev[i]) as f64 * 60.0 / dt;
                for (j, (window, label)) in [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")]
                    .iter()
                    .enumerate()
                {
                    let e = decay(dt / window);
                    let l = &mut self.loads[i][j];
                    *l = e * *l + (1.0 - e) * per_minute;
                    put(&format!("load/{name}/{label}"), format!("{:.2}", *l));
                }
            }
            self.prev = counters;
            self.last = now;
        }

        v.retain(|(t, val)| self.published.get(t) != Some(val));
        for (t, val) in &v {
            self.published.insert(t.clone(), val.clone());
        }
        v
    }
}

/// e^-x for x >= 0: the weight an exponential moving average keeps. Here
/// rather than `f64::exp`, which is the broker's only use of libm: not
/// linking libm keeps about 0.5 MB of shared library pages out of an idle
/// broker's resident memory (docs/PERFORMANCE.md).
fn decay(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return 1.0;
    }
    if x > 700.0 {
        return 0.0;
    }
    // e^-x = 2^-n * e^-r with r = x - n ln 2 in [0, ln 2).
    let n = (x / std::f64::consts::LN_2) as i32;
    let r = x - n as f64 * std::f64::consts::LN_2;
    // Taylor series of e^-r; for r < 0.7 the 16th term is below 1e-16.
    let (mut term, mut sum) = (1.0, 1.0);
    for k in 1..16 {
        term *= -r / k as f64;
        sum += term;
    }
    sum * 0.5f64.powi(n)
}

impl Default for SysTree {
    fn default() -> SysTree {
        SysTree::new()
    }
}

#[cfg(test)]
mod tests {
    use super::decay;

    #[test]
    fn decay_is_e_to_the_minus_x() {
        for x in [
            0.0,
            1e-9,
            0.01,
            1.0 / 60.0,
            0.5,
            0.69,
            0.7,
            1.0,
            2.5,
            10.0,
            88.0,
            699.0,
        ] {
            let want = f64::exp(-x);
            let got = decay(x);
            assert!(
                (got - want).abs() <= want * 1e-12,
                "decay({x}) = {got}, e^-x = {want}"
            );
        }
        assert_eq!(decay(-1.0), 1.0);
        assert_eq!(decay(f64::NAN), 1.0);
        assert_eq!(decay(1e6), 0.0);
    }
}
