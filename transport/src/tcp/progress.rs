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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::ep::Tx;
use crate::{Error, Result};

/// Event token of the wake-up eventfd (peer sockets use their index).
pub(crate) const WAKE_TOKEN: u64 = u64::MAX;

/// Events read by one `epoll_wait`.
pub(crate) const MAX_EVENTS: usize = 64;

/// Interest of a socket on the owner's epoll.
const IN: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
/// Interest of a socket with queued output on the flusher's epoll (re-armed after each event).
const OUT_ONCE: u32 = (libc::EPOLLOUT | libc::EPOLLONESHOT) as u32;
/// Event token of the flusher's stop eventfd.
const STOP_TOKEN: u64 = u64::MAX;

/// An epoll instance and its wake-up eventfd.
#[derive(Debug)]
pub(crate) struct Poller {
    ep: OwnedFd,
    wake: Arc<OwnedFd>,
}

/// Wakes an endpoint blocked in [`crate::Progress::wait`], from any thread.
///
/// Obtained from [`super::TcpIface::waker`]; stays valid (and harmless) after the
/// endpoint is gone.
#[derive(Debug, Clone)]
pub struct Waker(Arc<OwnedFd>);

impl Waker {
    /// Makes the endpoint's current or next `wait` return.
    pub fn wake(&self) {
        bump(self.0.as_raw_fd());
    }
}

/// Adds one to eventfd `fd`, making it readable.
fn bump(fd: RawFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live buffer to an open eventfd. A full
    // counter (EAGAIN) already means "readable", so the result does not matter.
    unsafe { libc::write(fd, one.as_ptr().cast(), 8) };
}

fn epoll_ctl(ep: RawFd, op: i32, fd: RawFd, events: u32, token: u64) -> Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a valid epoll_event for the duration of the call; both
    // descriptors are open.
    let r = unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) };
    if r < 0 {
        return Err(Error::last_os("epoll_ctl"));
    }
    Ok(())
}

fn epoll_wait(ep: RawFd, evs: &mut [libc::epoll_event], timeout_ms: i32) -> usize {
    // SAFETY: `evs` is valid for writes of `evs.len()` events.
    let r = unsafe {
        libc::epoll_wait(
            ep,
            evs.as_mut_ptr(),
            evs.len().min(i32::MAX as usize) as i32,
            timeout_ms,
        )
    };
    r.max(0) as usize
}

fn new_epoll() -> Result<OwnedFd> {
    // SAFETY: plain system call without pointer arguments.
    owned(
        unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) },
        "epoll_create1",
    )
}

fn new_eventfd() -> Result<OwnedFd> {
    // SAFETY: plain system call without pointer arguments.
    owned(
        unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) },
        "eventfd",
    )
}

fn owned(fd: RawFd, op: &'static str) -> Result<OwnedFd> {
    if fd < 0 {
        return Err(Error::last_os(op));
    }
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Poller {
    pub(crate) fn new() -> Result<Poller> {
        let p = Poller {
            ep: new_epoll()?,
            wake: Arc::new(new_eventfd()?),
        };
        p.ctl(
            libc::EPOLL_CTL_ADD,
            p.wake.as_raw_fd(),
            libc::EPOLLIN as u32,
            WAKE_TOKEN,
        )?;
        Ok(p)
    }

    fn ctl(&self, op: i32, fd: RawFd, events: u32, token: u64) -> Result<()> {
        epoll_ctl(self.ep.as_raw_fd(), op, fd, events, token)
    }

    /// Watches socket `fd` of peer `token` for input.
    pub(crate) fn add(&self, fd: RawFd, token: usize) -> Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, IN, token as u64)
    }

    /// Stops watching `fd`.
    #[cold]
    pub(crate) fn remove(&self, fd: RawFd) {
        // Failure only means it was not registered; nothing to undo.
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Waits up to `timeout_ms` (0: do not block) for readiness; returns the
    /// number of events written to `evs`. Interruptions count as no event.
    #[inline]
    pub(crate) fn poll(&self, evs: &mut [libc::epoll_event], timeout_ms: i32) -> usize {
        epoll_wait(self.ep.as_raw_fd(), evs, timeout_ms)
    }

    /// Resets the wake-up eventfd after it fired.
    #[cold]
    pub(crate) fn clear_wake(&self) {
        let mut b = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live 8-byte buffer; EAGAIN (not
        // signalled) is fine.
        unsafe { libc::read(self.wake.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
    }

    pub(crate) fn waker(&self) -> Waker {
        Waker(self.wake.clone())
    }

    /// The epoll descriptor, readable whenever the endpoint has something to do.
    pub(crate) fn fd(&self) -> RawFd {
        self.ep.as_raw_fd()
    }
}

/// The flusher's epoll set: sockets armed for one output event while their
/// queue is not empty. Shared by the owner (which arms) and the flusher thread
/// (which re-arms while data remains).
#[derive(Debug)]
pub(crate) struct OutSet {
    ep: OwnedFd,
}

impl OutSet {
    /// An empty set (for unit tests of the queues).
    #[cfg(test)]
    pub(crate) fn new_for_test() -> OutSet {
        OutSet {
            ep: new_epoll().expect("epoll"),
        }
    }

    /// Arms socket `fd` of peer `token` for one output event; `first` registers it.
    #[cold]
    pub(crate) fn arm(&self, fd: RawFd, token: usize, first: bool) -> Result<()> {
        let op = if first {
            libc::EPOLL_CTL_ADD
        } else {
            libc::EPOLL_CTL_MOD
        };
        epoll_ctl(self.ep.as_raw_fd(), op, fd, OUT_ONCE, token as u64)
    }

    /// Forgets `fd` (before it is closed).
    #[cold]
    pub(crate) fn remove(&self, fd: RawFd) {
        // Failure only means it was not registered; nothing to undo.
        let _ = epoll_ctl(self.ep.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, 0, 0);
    }
}

/// The thread that drains send queues (see the module docs).
#[derive(Debug)]
pub(crate) struct Flusher {
    out: Arc<OutSet>,
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// An epoll set for the queues of `txs` (indexed by peer); the thread is
    /// started only if there is a connection, and wakes `owner` when a queue empties.
    pub(crate) fn start(me: usize, txs: Vec<Option<Arc<Tx>>>, owner: Waker) -> Result<Flusher> {
        let out = Arc::new(OutSet { ep: new_epoll()? });
        let stop = new_eventfd()?;
        epoll_ctl(
            out.ep.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            stop.as_raw_fd(),
            libc::EPOLLIN as u32,
            STOP_TOKEN,
        )?;
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
            bump(self.stop.as_raw_fd());
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
        let k = epoll_wait(out.ep.as_raw_fd(), &mut evs, -1);
        let mut emptied = false;
        for ev in &evs[..k] {
            let token = ev.u64;
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
pub(crate) fn events() -> [libc::epoll_event; MAX_EVENTS] {
    [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS]
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
