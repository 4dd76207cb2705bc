//! Client threads kept for the next connection: a thread whose connection
//! ended waits a while for the next accepted one instead of exiting, so a
//! client that reconnects, or a crowd that comes and goes, does not pay for
//! a thread's creation and end each time (stack mapping, signal stack,
//! clone, and glibc's per-thread cache built anew). Each connection still
//! has a thread of its own for its whole life.
//!
//! At most [`MAX_IDLE`] threads wait, each at most [`KEEP`]: after a
//! connect storm the broker is back to one thread per client within that
//! time.

use std::thread::ThreadId;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::sys::parked::{self, Tx};

/// How many ended client threads may wait for a connection at once.
pub const MAX_IDLE: usize = 8;

/// How long an ended client thread waits for a connection before it exits.
pub const KEEP: Duration = Duration::from_secs(2);

/// Threads waiting for a connection, each with the stack size it was made
/// with (TLS listeners need more).
#[derive(Debug, Default)]
pub struct Pool<J> {
    idle: Mutex<Vec<Idle<J>>>,
}

#[derive(Debug)]
struct Idle<J> {
    stack: usize,
    thread: ThreadId,
    tx: Tx<J>,
}

impl<J> Pool<J> {
    pub fn new() -> Pool<J> {
        Pool {
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Gives `job` to a waiting thread made with `stack`; hands it back
    /// when there is none.
    pub fn hand_off(&self, stack: usize, job: J) -> Result<(), J> {
        let tx = {
            let mut idle = self.idle.lock();
            match idle.iter().rposition(|t| t.stack == stack) {
                Some(i) => idle.swap_remove(i).tx,
                None => return Err(job),
            }
        };
        // The thread waits for exactly this send (see `next_job`).
        tx.send(job).map_err(|e| e.0)
    }

    /// Called by a thread made with `stack` whose connection ended: its
    /// next connection, or None when it should exit (enough threads wait
    /// already, or none came within `keep`).
    pub fn next_job(&self, stack: usize, keep: Duration) -> Option<J> {
        let (tx, rx) = parked::channel(1);
        rx.attach();
        let me = std::thread::current().id();
        {
            let mut idle = self.idle.lock();
            if idle.len() >= MAX_IDLE {
                return None;
            }
            idle.push(Idle {
                stack,
                thread: me,
                tx,
            });
        }
        if let Ok(Some(job)) = rx.recv_until(Some(Instant::now() + keep)) {
            return Some(job);
        }
        {
            let mut idle = self.idle.lock();
            if let Some(i) = idle.iter().position(|t| t.thread == me) {
                idle.swap_remove(i);
                return None;
            }
        }
        // Taken from the list just now: the job is on its way.
        rx.recv_until(None).ok().flatten()
    }

    /// How many threads wait now.
    pub fn idle(&self) -> usize {
        self.idle.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_ended_thread_takes_the_next_job_of_its_stack_size() {
        let pool = Arc::new(Pool::<u32>::new());
        assert_eq!(pool.hand_off(64, 1), Err(1), "no thread waits yet");
        let waiter = std::thread::spawn({
            let pool = pool.clone();
            move || (std::thread::current().id(), pool.next_job(64, KEEP))
        });
        while pool.idle() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(pool.hand_off(128, 2), Err(2), "another stack size");
        assert_eq!(pool.hand_off(64, 3), Ok(()));
        let (_, got) = waiter.join().expect("waiter");
        assert_eq!(got, Some(3));
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn a_thread_nobody_needs_leaves_after_its_wait() {
        let pool = Pool::<u32>::new();
        let t0 = Instant::now();
        assert_eq!(pool.next_job(64, Duration::from_millis(20)), None);
        assert!(t0.elapsed() >= Duration::from_millis(20));
        assert_eq!(pool.idle(), 0, "it took itself off the list");
        assert_eq!(pool.hand_off(64, 1), Err(1));
    }

    #[test]
    fn no_more_than_max_idle_threads_wait() {
        let pool = Arc::new(Pool::<u32>::new());
        let waiters: Vec<_> = (0..MAX_IDLE)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || pool.next_job(64, KEEP))
            })
            .collect();
        while pool.idle() < MAX_IDLE {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(pool.next_job(64, KEEP), None, "one more exits at once");
        for i in 0..MAX_IDLE as u32 {
            assert_eq!(pool.hand_off(64, i), Ok(()));
        }
        let mut got: Vec<u32> = waiters
            .into_iter()
            .map(|w| w.join().expect("waiter").expect("a job"))
            .collect();
        got.sort_unstable();
        assert_eq!(got, (0..MAX_IDLE as u32).collect::<Vec<_>>());
    }
}
