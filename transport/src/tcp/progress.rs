//! Readiness and blocking.
//!
//! * [`Poller`]: the owner's epoll instance over every peer socket (input only,
//!   level-triggered), plus an eventfd that lets another thread interrupt a blocked
//!   [`crate::Progress::wait`]. An idle endpoint sleeps in `epoll_wait` until input
//!   or a wake-up.
//! * [`Flusher`]: a thread that sends what sockets could not take at once. It
//!   sleeps in `epoll_wait` on a second epoll instance where a socket is armed
//!   (one-shot, for output) only while its queue is not empty, so it costs
//!   nothing unless the network pushes back. It makes a message accepted by
//!   `am_send` reach its peer without further calls by the sender, as with the
//!   shm rings: the layer above may stop calling into the endpoint after its
//!   last send (and a rank blocked in a computation does not hold up its peers).
//!   It wakes the owner when a queue empties, so a sender waiting out `Busy` in
//!   `wait` resumes.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::ep::Tx;
use crate::poll::{Epoll, Event, EventFd, EventFlags, NO_EVENT};
use crate::{Error, Result};

/// Event token of the wake-up eventfd (peer sockets use their index).
pub(crate) const WAKE_TOKEN: u64 = u64::MAX;

/// Events read by one `epoll_wait`.
pub(crate) const MAX_EVENTS: usize = 64;

/// Interest of a socket on the owner's epoll.
const IN: EventFlags = EventFlags::IN.union(EventFlags::RDHUP);
/// Interest of a socket with queued output on the flusher's epoll (re-armed after each event).
const OUT_ONCE: EventFlags = EventFlags::OUT.union(EventFlags::ONESHOT);
/// What makes a socket worth reading: input, its end, or an error.
pub(crate) const INPUT: EventFlags = IN.union(EventFlags::HUP).union(EventFlags::ERR);
/// Event token of the flusher's stop eventfd.
const STOP_TOKEN: u64 = u64::MAX;

/// An epoll instance and its wake-up eventfd.
#[derive(Debug)]
pub(crate) struct Poller {
    ep: Epoll,
    wake: Arc<EventFd>,
}

/// Wakes an endpoint blocked in [`crate::Progress::wait`], from any thread.
///
/// Obtained from [`super::TcpIface::waker`]; stays valid (and harmless) after the
/// endpoint is gone.
#[derive(Debug, Clone)]
pub struct Waker(Arc<EventFd>);

impl Waker {
    /// Makes the endpoint's current or next `wait` return.
    pub fn wake(&self) {
        self.0.ring();
    }
}

/// A peer socket's descriptor as the epoll calls take it.
fn socket(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the sockets given to `Poller` and `OutSet` are open during the
    // call: an endpoint arms its socket only while the queue's lock holds it,
    // removes it from both sets before closing it (`Ep::close`, `Tx::close`),
    // and the borrow lasts one epoll_ctl.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

impl Poller {
    pub(crate) fn new() -> Result<Poller> {
        let p = Poller {
            ep: Epoll::new()?,
            wake: Arc::new(EventFd::new()?),
        };
        p.ep.add(p.wake.as_fd(), EventFlags::IN, WAKE_TOKEN)?;
        Ok(p)
    }

    /// Watches socket `fd` of peer `token` for input.
    pub(crate) fn add(&self, fd: RawFd, token: usize) -> Result<()> {
        self.ep.add(socket(fd), IN, token as u64)
    }

    /// Stops watching `fd`.
    #[cold]
    pub(crate) fn remove(&self, fd: RawFd) {
        // Failure only means it was not registered; nothing to undo.
        let _ = self.ep.delete(socket(fd));
    }

    /// Waits up to `timeout_ms` (0: do not block) for readiness; returns the
    /// number of events written to `evs`. Interruptions count as no event.
    #[inline]
    pub(crate) fn poll(&self, evs: &mut [Event], timeout_ms: i32) -> usize {
        self.ep.wait(evs, timeout_ms)
    }

    /// Resets the wake-up eventfd after it fired.
    #[cold]
    pub(crate) fn clear_wake(&self) {
        self.wake.clear();
    }

    pub(crate) fn waker(&self) -> Waker {
        Waker(self.wake.clone())
    }

    /// The epoll descriptor, readable whenever the endpoint has something to do.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.ep.fd()
    }
}

/// The flusher's epoll set: sockets armed for one output event while their
/// queue is not empty. Shared by the owner (which arms) and the flusher thread
/// (which re-arms while data remains).
#[derive(Debug)]
pub(crate) struct OutSet {
    ep: Epoll,
}

impl OutSet {
    /// An empty set (for unit tests of the queues).
    #[cfg(test)]
    pub(crate) fn new_for_test() -> OutSet {
        OutSet {
            ep: Epoll::new().expect("epoll"),
        }
    }

    /// Arms socket `fd` of peer `token` for one output event; `first` registers it.
    #[cold]
    pub(crate) fn arm(&self, fd: RawFd, token: usize, first: bool) -> Result<()> {
        if first {
            self.ep.add(socket(fd), OUT_ONCE, token as u64)
        } else {
            self.ep.modify(socket(fd), OUT_ONCE, token as u64)
        }
    }

    /// Forgets `fd` (before it is closed).
    #[cold]
    pub(crate) fn remove(&self, fd: RawFd) {
        // Failure only means it was not registered; nothing to undo.
        let _ = self.ep.delete(socket(fd));
    }
}

/// The thread that drains send queues (see the module docs).
#[derive(Debug)]
pub(crate) struct Flusher {
    out: Arc<OutSet>,
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// An epoll set for the queues of `txs` (indexed by peer); the thread is
    /// started only if there is a connection, and wakes `owner` when a queue empties.
    pub(crate) fn start(me: usize, txs: Vec<Option<Arc<Tx>>>, owner: Waker) -> Result<Flusher> {
        let out = Arc::new(OutSet { ep: Epoll::new()? });
        let stop = EventFd::new()?;
        out.ep.add(stop.as_fd(), EventFlags::IN, STOP_TOKEN)?;
        let thread = if txs.iter().any(Option::is_some) {
            let o = out.clone();
            let t = std::thread::Builder::new()
                .name(format!("dos-tcp-tx-{me}"))
                .spawn(move || flush_loop(&o, &txs, &owner))
                .map_err(|source| Error::Sys {
                    op: "spawn the tcp flusher thread",
                    source,
                })?;
            Some(t)
        } else {
            None
        };
        Ok(Flusher { out, stop, thread })
    }

    /// The epoll set to arm sockets in.
    #[inline]
    pub(crate) fn out(&self) -> &OutSet {
        &self.out
    }

    /// Stops the thread (queues are left as they are).
    pub(crate) fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.ring();
            // A panic in the flusher was already reported on stderr.
            let _ = t.join();
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop();
    }
}

fn flush_loop(out: &OutSet, txs: &[Option<Arc<Tx>>], owner: &Waker) {
    let mut evs = events();
    loop {
        let k = out.ep.wait(&mut evs, -1);
        let mut emptied = false;
        for ev in &evs[..k] {
            let token = ev.data.u64();
            if token == STOP_TOKEN {
                return;
            }
            if let Some(Some(tx)) = txs.get(token as usize) {
                emptied |= tx.flush_ready(out, token as usize);
            }
        }
        if emptied {
            owner.wake();
        }
    }
}

/// An empty event array for [`Poller::poll`].
#[inline]
pub(crate) fn events() -> [Event; MAX_EVENTS] {
    [NO_EVENT; MAX_EVENTS]
}

/// `timeout` in whole milliseconds for `epoll_wait`, rounded up so a short wait
/// still blocks.
pub(crate) fn timeout_ms(timeout: Duration) -> i32 {
    let us = timeout.as_micros();
    us.div_ceil(1000).min(i32::MAX as u128) as i32
}

/// Whether `e` means "try again later".
#[inline]
pub(crate) fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}
