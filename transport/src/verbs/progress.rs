//! Blocking: an epoll instance over the completion channel and an eventfd.
//!
//! The completion channel's descriptor polls readable once an armed completion
//! queue gets a completion (`ibv_req_notify_cq`); the eventfd lets another
//! thread interrupt a blocked [`crate::Progress::wait`] ([`Waker`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use crate::{Error, Result};

/// Event token of the completion channel.
const CHANNEL_TOKEN: u64 = 0;
/// Event token of the wake-up eventfd.
const WAKE_TOKEN: u64 = 1;

/// Wakes an endpoint blocked in [`crate::Progress::wait`], from any thread.
///
/// Obtained from [`super::VerbsIface::waker`]; stays valid (and harmless)
/// after the endpoint is gone.
#[derive(Debug, Clone)]
pub struct Waker(Arc<OwnedFd>);

impl Waker {
    /// Makes the endpoint's current or next `wait` return.
    pub fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to an open eventfd; a full
        // counter (EAGAIN) already means "readable", so the result does not matter.
        unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), 8) };
    }
}

/// The owner's epoll instance.
#[derive(Debug)]
pub(super) struct Poller {
    ep: OwnedFd,
    wake: Arc<OwnedFd>,
}

fn owned(fd: RawFd, op: &'static str) -> Result<OwnedFd> {
    if fd < 0 {
        return Err(Error::last_os(op));
    }
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Poller {
    /// Watches the completion channel descriptor `channel` and a fresh eventfd.
    pub(super) fn new(channel: RawFd) -> Result<Poller> {
        // SAFETY: plain system calls without pointer arguments.
        let ep = owned(
            unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) },
            "epoll_create1",
        )?;
        // SAFETY: as above.
        let wake = owned(
            unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) },
            "eventfd",
        )?;
        let p = Poller {
            ep,
            wake: Arc::new(wake),
        };
        p.add(channel, CHANNEL_TOKEN)?;
        p.add(p.wake.as_raw_fd(), WAKE_TOKEN)?;
        Ok(p)
    }

    fn add(&self, fd: RawFd, token: u64) -> Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is valid during the call; both descriptors are open.
        let r = unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(Error::last_os("epoll_ctl"));
        }
        Ok(())
    }

    /// A handle that interrupts [`Poller::block`].
    pub(super) fn waker(&self) -> Waker {
        Waker(self.wake.clone())
    }

    /// The epoll descriptor.
    pub(super) fn fd(&self) -> RawFd {
        self.ep.as_raw_fd()
    }

    /// Sleeps until the channel or the eventfd is readable, or `timeout`
    /// passes; clears the eventfd.
    pub(super) fn block(&self, timeout: Duration) {
        // Round up, so that a short timeout sleeps rather than spins.
        let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 2];
        // SAFETY: `evs` is valid for writes of 2 events.
        let k = unsafe { libc::epoll_wait(self.ep.as_raw_fd(), evs.as_mut_ptr(), 2, ms) };
        for ev in &evs[..k.clamp(0, 2) as usize] {
            if ev.u64 == WAKE_TOKEN {
                let mut buf = [0u8; 8];
                // SAFETY: reads at most 8 bytes into a live buffer from our
                // non-blocking eventfd; an empty counter (EAGAIN) is fine.
                unsafe { libc::read(self.wake.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
            }
        }
    }
}
