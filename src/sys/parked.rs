//! A bounded channel whose one receiving thread sleeps in `thread::park`
//! when it is empty, and whose senders unpark it after each item: the
//! router's queue, the log writer's, and the router's answer to a CONNECT.
//!
//! A blocking receive on a crossbeam channel spins and calls
//! `sched_yield` a few times before it sleeps. At the rates a board sees
//! (an event every few hundred microseconds) the next item never comes
//! within that spin, so each item cost its receiver about four system
//! calls and context switches for nothing. An unpark costs the sender one
//! atomic swap, and a system call only when the receiver sleeps.

use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, SendError, Sender, TryRecvError, TrySendError};

/// Makes a channel of `cap` items. The receiving thread must call
/// [`Rx::attach`] before it waits, or a send may not wake it.
pub fn channel<T>(cap: usize) -> (Tx<T>, Rx<T>) {
    let (tx, rx) = crossbeam_channel::bounded(cap);
    let waiter = Arc::new(OnceLock::new());
    (
        Tx {
            tx,
            waker: Waker(waiter.clone()),
        },
        Rx { rx, waiter },
    )
}

/// A sender. Dropping the last one wakes the receiver, which then sees
/// [`Disconnected`].
#[derive(Debug)]
pub struct Tx<T> {
    // Fields drop in this order: the channel's sender first, then the
    // waker wakes the receiver to see it gone.
    tx: Sender<T>,
    waker: Waker,
}

/// The receiving thread, once attached; unparked when a sender drops.
#[derive(Clone, Debug)]
struct Waker(Arc<OnceLock<Thread>>);

impl Waker {
    fn wake(&self) {
        // Not attached yet: the receiver looks at the channel before it
        // first waits anyway.
        if let Some(t) = self.0.get() {
            t.unpark();
        }
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        self.wake();
    }
}

impl<T> Clone for Tx<T> {
    fn clone(&self) -> Self {
        Tx {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
        }
    }
}

impl<T> Tx<T> {
    /// Queues `item`, waiting while the channel is full; an error once the
    /// receiver is gone.
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        self.tx.send(item)?;
        self.waker.wake();
        Ok(())
    }

    /// Queues `item` unless the channel is full.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        self.tx.try_send(item)?;
        self.waker.wake();
        Ok(())
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }
}

/// The receiving end.
#[derive(Debug)]
pub struct Rx<T> {
    rx: Receiver<T>,
    waiter: Arc<OnceLock<Thread>>,
}

/// Every sender is gone and nothing is queued.
#[derive(Debug, PartialEq, Eq)]
pub struct Disconnected;

impl<T> Rx<T> {
    /// Names the calling thread as the one senders wake (the first call
    /// counts).
    pub fn attach(&self) {
        let _ = self.waiter.set(std::thread::current());
    }

    /// The next item if one is queued.
    pub fn try_recv(&self) -> Result<Option<T>, Disconnected> {
        match self.rx.try_recv() {
            Ok(item) => Ok(Some(item)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(Disconnected),
        }
    }

    /// The next item, waiting for one until `deadline` (None: without a
    /// limit); Ok(None) at the deadline.
    pub fn recv_until(&self, deadline: Option<Instant>) -> Result<Option<T>, Disconnected> {
        loop {
            if let Some(item) = self.try_recv()? {
                return Ok(Some(item));
            }
            // A send between the look above and the park leaves the
            // thread's token set: the park then returns at once.
            match deadline {
                None => std::thread::park(),
                Some(t) => {
                    let now = Instant::now();
                    if now >= t {
                        return Ok(None);
                    }
                    std::thread::park_timeout(t - now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_send_wakes_a_parked_receiver() {
        let (tx, rx) = channel::<u32>(4);
        let receiver = std::thread::spawn(move || {
            rx.attach();
            rx.recv_until(None)
        });
        // Give the receiver time to park with nothing queued.
        std::thread::sleep(Duration::from_millis(50));
        tx.send(7).expect("queued");
        assert_eq!(receiver.join().expect("receiver thread"), Ok(Some(7)));
    }

    #[test]
    fn dropping_the_last_sender_wakes_a_parked_receiver() {
        let (tx, rx) = channel::<u32>(1);
        let receiver = std::thread::spawn(move || {
            rx.attach();
            // Without the wake it would sleep until the deadline.
            rx.recv_until(Some(Instant::now() + Duration::from_secs(10)))
        });
        std::thread::sleep(Duration::from_millis(50));
        let other = tx.clone();
        drop(tx);
        std::thread::sleep(Duration::from_millis(20));
        drop(other);
        assert_eq!(receiver.join().expect("receiver thread"), Err(Disconnected));
    }

    #[test]
    fn a_deadline_ends_the_wait_and_dropped_senders_end_the_channel() {
        let (tx, rx) = channel::<u32>(4);
        rx.attach();
        let t0 = Instant::now();
        let got = rx.recv_until(Some(t0 + Duration::from_millis(20)));
        assert_eq!(got, Ok(None));
        assert!(t0.elapsed() >= Duration::from_millis(20));
        tx.try_send(1).expect("room");
        drop(tx);
        // What was queued before the last sender went is still received.
        assert_eq!(rx.recv_until(None), Ok(Some(1)));
        assert_eq!(rx.recv_until(None), Err(Disconnected));
    }
}
