//! Readiness and wake-ups for the backends that sleep in the kernel (tcp,
//! verbs): an epoll instance ([`Epoll`]) and an eventfd ([`EventFd`]), through
//! rustix, so that neither backend writes the system calls itself.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::epoll::{self, EventData};
pub(crate) use rustix::event::epoll::{Event, EventFlags};
use rustix::event::{eventfd, EventfdFlags, Timespec};

use crate::{Error, Result};

/// The [`Error::Sys`] of a failed call `op`.
#[cold]
fn sys(op: &'static str) -> impl FnOnce(rustix::io::Errno) -> Error {
    move |e| Error::Sys {
        op,
        source: e.into(),
    }
}

/// An event slot for [`Epoll::wait`] to fill.
pub(crate) const NO_EVENT: Event = Event {
    flags: EventFlags::empty(),
    data: EventData::new_u64(0),
};

/// An epoll instance; its descriptor is closed on drop.
#[derive(Debug)]
pub(crate) struct Epoll(OwnedFd);

impl Epoll {
    /// A new, empty instance (close-on-exec).
    pub(crate) fn new() -> Result<Epoll> {
        epoll::create(epoll::CreateFlags::CLOEXEC)
            .map(Epoll)
            .map_err(sys("epoll_create1"))
    }

    /// Watches `fd` for `flags`; its events carry `token`.
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, flags: EventFlags, token: u64) -> Result<()> {
        epoll::add(&self.0, fd, EventData::new_u64(token), flags).map_err(sys("epoll_ctl"))
    }

    /// Changes what `fd` is watched for (re-arms a one-shot watch).
    pub(crate) fn modify(&self, fd: BorrowedFd<'_>, flags: EventFlags, token: u64) -> Result<()> {
        epoll::modify(&self.0, fd, EventData::new_u64(token), flags).map_err(sys("epoll_ctl"))
    }

    /// Stops watching `fd`.
    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> Result<()> {
        epoll::delete(&self.0, fd).map_err(sys("epoll_ctl"))
    }

    /// Waits up to `timeout_ms` milliseconds (0: do not block, negative:
    /// forever) for readiness; returns the number of events written to the
    /// front of `evs`. Interruptions and errors count as no event.
    #[inline]
    pub(crate) fn wait(&self, evs: &mut [Event], timeout_ms: i32) -> usize {
        let ts;
        let timeout = if timeout_ms < 0 {
            None
        } else {
            ts = Timespec {
                tv_sec: (timeout_ms / 1000).into(),
                tv_nsec: ((timeout_ms % 1000) * 1_000_000).into(),
            };
            Some(&ts)
        };
        epoll::wait(&self.0, evs, timeout).unwrap_or(0)
    }

    /// The epoll descriptor, readable whenever a watched descriptor is ready.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// A non-blocking eventfd used as a doorbell: [`EventFd::ring`] makes it
/// readable, [`EventFd::clear`] resets it.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    /// A new eventfd, not readable (non-blocking, close-on-exec).
    pub(crate) fn new() -> Result<EventFd> {
        eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)
            .map(EventFd)
            .map_err(sys("eventfd"))
    }

    /// Makes it readable. A full counter (EAGAIN) already means readable, so
    /// the result does not matter.
    #[inline]
    pub(crate) fn ring(&self) {
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }

    /// Resets it after it fired (an empty counter, EAGAIN, is fine).
    #[cold]
    pub(crate) fn clear(&self) {
        let mut b = [0u8; 8];
        let _ = rustix::io::read(&self.0, &mut b);
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rung_eventfd_wakes_the_epoll_until_cleared() {
        let ep = Epoll::new().unwrap();
        let bell = EventFd::new().unwrap();
        ep.add(bell.as_fd(), EventFlags::IN, 7).unwrap();
        let mut evs = [NO_EVENT; 4];
        assert_eq!(ep.wait(&mut evs, 0), 0);
        bell.ring();
        bell.ring();
        assert_eq!(ep.wait(&mut evs, 1000), 1);
        let (flags, token) = (evs[0].flags, evs[0].data.u64());
        assert_eq!(token, 7);
        assert!(flags.contains(EventFlags::IN));
        bell.clear();
        assert_eq!(ep.wait(&mut evs, 0), 0);
        ep.modify(bell.as_fd(), EventFlags::IN | EventFlags::ONESHOT, 8)
            .unwrap();
        bell.ring();
        assert_eq!(ep.wait(&mut evs, 0), 1);
        assert_eq!(ep.wait(&mut evs, 0), 0, "one-shot");
        ep.delete(bell.as_fd()).unwrap();
        assert!(ep.delete(bell.as_fd()).is_err());
    }
}
