//! Waking a blocked rank, and the backends' [`Wakeable`] and
//! [`PlacingProgress`] implementations (delegating to their own methods).
//!
//! A rank with a node-local transport and a network transport sleeps in one
//! place, the network's wait: the shared-memory doorbell reaches it through a
//! [`DoorbellBridge`], a thread that turns rings of the doorbell into the
//! network transport's [`Waker`]. Any network backend with a waker can be
//! bridged (see [`crate::Transport::bridge_to`] and
//! [`crate::Transport::wait_with`]).
//!
//! [`DoorbellBridge`]: crate::shm::DoorbellBridge

use std::time::Duration;

use crate::loopback::Loopback;
use crate::roce::iface::{RoceIface, RoceWaker};
use crate::shm::{ShmIface, ShmWaker};
use crate::tcp::TcpIface;
#[cfg(feature = "verbs")]
use crate::verbs::VerbsIface;
use crate::{AmPlacer, Event, PlacingProgress, Result, Wake, Wakeable};

/// The waker of one of the backends ([`crate::Transport::waker`]);
/// waking dispatches statically, like the data path.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Waker {
    /// Rings a rank's shared-memory doorbell.
    Shm(ShmWaker),
    /// Wakes a tcp endpoint's epoll.
    Tcp(crate::tcp::Waker),
    /// Wakes a soft-RoCE endpoint's wait.
    Roce(RoceWaker),
    /// Wakes a verbs endpoint's wait (feature `verbs`).
    #[cfg(feature = "verbs")]
    Verbs(crate::verbs::Waker),
}

impl Wake for Waker {
    #[inline]
    fn wake(&self) {
        match self {
            Waker::Shm(w) => w.wake(),
            Waker::Tcp(w) => w.wake(),
            Waker::Roce(w) => w.wake(),
            #[cfg(feature = "verbs")]
            Waker::Verbs(w) => w.wake(),
        }
    }
}

impl Wake for ShmWaker {
    fn wake(&self) {
        ShmWaker::wake(self)
    }
}

impl Wake for crate::tcp::Waker {
    fn wake(&self) {
        crate::tcp::Waker::wake(self)
    }
}

impl Wake for RoceWaker {
    fn wake(&self) {
        RoceWaker::wake(self)
    }
}

#[cfg(feature = "verbs")]
impl Wake for crate::verbs::Waker {
    fn wake(&self) {
        crate::verbs::Waker::wake(self)
    }
}

impl Wakeable for ShmIface {
    type Waker = ShmWaker;
    fn waker(&self) -> ShmWaker {
        ShmIface::waker(self)
    }
    fn wait_or(&self, timeout: Duration, ready: &mut dyn FnMut() -> bool) -> Result<()> {
        ShmIface::wait_or(self, timeout, ready)
    }
}

impl Wakeable for TcpIface {
    type Waker = crate::tcp::Waker;
    fn waker(&self) -> crate::tcp::Waker {
        TcpIface::waker(self)
    }
}

impl Wakeable for RoceIface {
    type Waker = RoceWaker;
    fn waker(&self) -> RoceWaker {
        RoceIface::waker(self)
    }
}

#[cfg(feature = "verbs")]
impl Wakeable for VerbsIface {
    type Waker = crate::verbs::Waker;
    fn waker(&self) -> crate::verbs::Waker {
        VerbsIface::waker(self)
    }
}

impl PlacingProgress for TcpIface {
    #[inline]
    fn progress_placing<F: FnMut(Event<'_>)>(&self, f: F, placer: &dyn AmPlacer) -> usize {
        TcpIface::progress_placing(self, f, placer)
    }
}

impl PlacingProgress for ShmIface {}
impl PlacingProgress for Loopback {}
impl PlacingProgress for RoceIface {}
#[cfg(feature = "verbs")]
impl PlacingProgress for VerbsIface {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ActiveMessages, Progress};
    use std::cell::Cell;

    /// A backend with nothing but the trait defaults.
    struct Quiet {
        waits: Cell<usize>,
    }

    impl Progress for Quiet {
        fn progress<F: FnMut(Event<'_>)>(&self, mut f: F) -> usize {
            f(Event::Disconnected { peer: 0 });
            1
        }
        fn wait(&self, _timeout: Duration) -> Result<()> {
            self.waits.set(self.waits.get() + 1);
            Ok(())
        }
    }

    #[derive(Clone)]
    struct NoWake;
    impl Wake for NoWake {
        fn wake(&self) {}
    }

    impl Wakeable for Quiet {
        type Waker = NoWake;
        fn waker(&self) -> NoWake {
            NoWake
        }
    }
    impl PlacingProgress for Quiet {}

    struct Greedy;
    impl AmPlacer for Greedy {
        fn claim(&self, _: usize, _: u8, _: &[u8], _: usize) -> Option<usize> {
            Some(0)
        }
        fn dst(&self, _: usize, _: usize, _: usize) -> Option<*mut u8> {
            None
        }
    }

    #[test]
    fn the_default_wait_or_does_not_wait_when_ready() {
        let q = Quiet {
            waits: Cell::new(0),
        };
        q.wait_or(Duration::from_secs(1), &mut || true).unwrap();
        assert_eq!(q.waits.get(), 0);
        q.wait_or(Duration::from_millis(1), &mut || false).unwrap();
        assert_eq!(q.waits.get(), 1);
    }

    #[test]
    fn the_default_placing_progress_delivers_as_usual() {
        let q = Quiet {
            waits: Cell::new(0),
        };
        let mut seen = 0;
        let n = q.progress_placing(
            |ev| {
                assert!(matches!(ev, Event::Disconnected { peer: 0 }));
                seen += 1;
            },
            &Greedy,
        );
        assert_eq!((n, seen), (1, 1));
        // The loopback, too, ignores the placer: a large message arrives whole.
        let l = Loopback::new();
        l.am_send(0, 9, &[1; 100], &[2; 100]).unwrap();
        let mut got = Vec::new();
        l.progress_placing(
            |ev| {
                if let Event::Am { data, .. } = ev {
                    got.extend_from_slice(data);
                }
            },
            &Greedy,
        );
        assert_eq!(got.len(), 200);
    }
}
