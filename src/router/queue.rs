//! The router's queue: a bounded channel whose one receiver, the router
//! thread, sleeps in `thread::park` when it is empty, and whose senders
//! unpark it after each event.
//!
//! A blocking receive on the channel itself would spin and call
//! `sched_yield` a few times before it sleeps: at the rates a board sees
//! (an event every few hundred microseconds), the next event never comes
//! within that spin, so each event cost the router about four system calls
//! and context switches for nothing. An unpark costs the sender one atomic
//! swap, and a system call only when the router sleeps.

use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, SendError, Sender, TryRecvError, TrySendError};

use super::Event;

/// Makes the router's queue, of `cap` events.
pub fn queue(cap: usize) -> (RouterTx, RouterRx) {
    let (tx, rx) = crossbeam_channel::bounded(cap);
    let router = Arc::new(OnceLock::new());
    (
        RouterTx {
            tx,
            router: router.clone(),
        },
        RouterRx { rx, router },
    )
}

/// A sender of events to the router.
#[derive(Clone, Debug)]
pub struct RouterTx {
    tx: Sender<Event>,
    /// The router thread, once it runs.
    router: Arc<OnceLock<Thread>>,
}

impl RouterTx {
    /// Queues `ev`, waiting while the queue is full; an error once the
    /// router has stopped.
    pub fn send(&self, ev: Event) -> Result<(), SendError<Event>> {
        self.tx.send(ev)?;
        self.wake();
        Ok(())
    }

    /// Queues `ev` unless the queue is full.
    pub fn try_send(&self, ev: Event) -> Result<(), TrySendError<Event>> {
        self.tx.try_send(ev)?;
        self.wake();
        Ok(())
    }

    fn wake(&self) {
        // Before the router runs, it looks at the queue first anyway.
        if let Some(t) = self.router.get() {
            t.unpark();
        }
    }
}

/// The router's end of the queue.
#[derive(Debug)]
pub struct RouterRx {
    rx: Receiver<Event>,
    router: Arc<OnceLock<Thread>>,
}

/// Every sender is gone.
#[derive(Debug, PartialEq, Eq)]
pub struct Disconnected;

impl RouterRx {
    /// Names the calling thread as the one senders wake.
    pub fn attach(&self) {
        let _ = self.router.set(std::thread::current());
    }

    /// The next event if one is queued.
    pub fn try_recv(&self) -> Result<Option<Event>, Disconnected> {
        match self.rx.try_recv() {
            Ok(ev) => Ok(Some(ev)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(Disconnected),
        }
    }

    /// The next event, waiting for one until `deadline` (None: without a
    /// limit); Ok(None) at the deadline. The calling thread must be
    /// [`attached`](Self::attach), or a send may not wake it.
    pub fn recv_until(&self, deadline: Option<Instant>) -> Result<Option<Event>, Disconnected> {
        loop {
            if let Some(ev) = self.try_recv()? {
                return Ok(Some(ev));
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

    /// Events still queued, for the last save at shutdown.
    pub fn drain(&self) -> crossbeam_channel::TryIter<'_, Event> {
        self.rx.try_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_send_wakes_a_parked_router() {
        let (tx, rx) = queue(4);
        let router = std::thread::spawn(move || {
            rx.attach();
            let got = rx.recv_until(None);
            (got.map(|e| matches!(e, Some(Event::Save))), rx)
        });
        // Give the router time to park with nothing queued.
        std::thread::sleep(Duration::from_millis(50));
        tx.send(Event::Save).expect("queued");
        let (got, _rx) = router.join().expect("router thread");
        assert_eq!(got, Ok(true));
    }

    #[test]
    fn a_deadline_ends_the_wait_and_dropped_senders_end_the_queue() {
        let (tx, rx) = queue(4);
        rx.attach();
        let t0 = Instant::now();
        let got = rx.recv_until(Some(t0 + Duration::from_millis(20)));
        assert!(matches!(got, Ok(None)));
        assert!(t0.elapsed() >= Duration::from_millis(20));
        drop(tx);
        assert_eq!(rx.try_recv().map(|e| e.is_some()), Err(Disconnected));
    }
}
