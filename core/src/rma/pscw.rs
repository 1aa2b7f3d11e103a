//! Generalized active-target synchronization: post, start, complete, wait
//! (`MPI_Win_post`, `MPI_Win_start`, `MPI_Win_complete`, `MPI_Win_wait`).
//!
//! Unlike [`Window::fence`], which synchronizes every rank of the window,
//! these pair up only the ranks that talk to each other:
//!
//! * A target opens an **exposure epoch** to a group of origins with
//!   [`Window::post`] and ends it with [`Window::wait`] (or polls with
//!   [`Window::test`]): `wait` returns once every origin of the group has
//!   called `complete`, and then every one of their operations is done in
//!   this rank's memory.
//! * An origin opens an **access epoch** to a group of targets with
//!   [`Window::start`], which waits until each of them has posted, issues
//!   puts, gets and accumulates to them, and ends the epoch with
//!   [`Window::complete`]: all its operations are done at the origin, and
//!   each target is told with a notification that follows them, so that
//!   they are in its memory when its `wait` returns.
//!
//! Groups are ranks of the window's communicator ([`Window::comm`]) given as
//! a slice (a rank may name itself); a `Group` type may take their place later.
//! Both epochs may be open at once on one rank (a rank is often origin and
//! target). Mixing with the other synchronizations follows MPI: a fence
//! while a post/start epoch is open, a lock inside an access epoch, or a
//! start while holding locks is [`Error::InvalidArgument`], as are a second
//! post or start before the first ended and a complete or wait without one.
//! Operations to ranks outside the start group are not checked; they are
//! simply not synchronized by the epoch.
//!
//! A ring exchange where every rank writes into its right neighbour:
//!
//! ```
//! let got = dos::testing::run_threads(4, |world| {
//!     let (n, me) = (world.size(), world.rank());
//!     let (right, left) = ((me + 1) % n, (me + n - 1) % n);
//!     let win = world.win_allocate::<u64>(1).unwrap();
//!     win.post(&[left]).unwrap();    // left may write here
//!     win.start(&[right]).unwrap();  // waits until right posted
//!     win.put(&[me as u64 * 100], right, 0).unwrap();
//!     win.complete().unwrap();       // done in right's memory
//!     win.wait().unwrap();           // left completed: its put is here
//!     let mut v = [0u64];
//!     win.read_local(&mut v, 0).unwrap();
//!     v[0]
//! });
//! assert_eq!(got, vec![300, 0, 100, 200]);
//! ```
//!
//! Notifications travel as two small messages (`POST` and `COMPLETE` of the
//! one-sided protocol), counted per window and sender at the receiver, so an
//! early post for the next epoch is kept for it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{fence, Ordering};

use bytemuck::Pod;

use super::wire::{self, Writer};
use super::Window;
use crate::{Error, Result};

/// POST and COMPLETE notifications received and not yet consumed, per
/// (kind, window id, sender's world rank).
#[derive(Debug, Default)]
pub(crate) struct Arrivals {
    counts: HashMap<(u8, u32, usize), u32>,
}

impl Arrivals {
    /// One notification `kind` for window `win` from world rank `src`.
    pub(crate) fn note(&mut self, kind: u8, win: u32, src: usize) {
        *self.counts.entry((kind, win, src)).or_default() += 1;
    }

    fn have_all(&self, kind: u8, win: u32, srcs: &[usize]) -> bool {
        srcs.iter()
            .all(|&s| self.counts.get(&(kind, win, s)).is_some_and(|&k| k > 0))
    }

    fn take_all(&mut self, kind: u8, win: u32, srcs: &[usize]) {
        for &s in srcs {
            if let Some(k) = self.counts.get_mut(&(kind, win, s)) {
                *k -= 1;
                if *k == 0 {
                    self.counts.remove(&(kind, win, s));
                }
            }
        }
    }

    /// Forgets the notifications of a window that is gone.
    pub(crate) fn forget(&mut self, win: u32) {
        self.counts.retain(|&(_, w, _), _| w != win);
    }
}

/// The open post/start epochs of a window on this rank (as world ranks,
/// with the communicator ranks they came from).
#[derive(Debug, Default)]
pub(crate) struct Epochs {
    access: RefCell<Option<Vec<usize>>>,
    exposure: RefCell<Option<Vec<usize>>>,
}

impl Epochs {
    /// Whether an access epoch of [`Window::start`] is open.
    pub(crate) fn in_access(&self) -> bool {
        self.access.borrow().is_some()
    }

    /// Fails if a post or start epoch is open (for `fence`).
    pub(crate) fn check_none(&self, op: &'static str) -> Result<()> {
        if self.access.borrow().is_some() || self.exposure.borrow().is_some() {
            return Err(Error::InvalidArgument {
                op,
                reason: "a post/start epoch is open (end it with complete/wait first)",
            });
        }
        Ok(())
    }
}

impl<T: Pod> Window<'_, T> {
    /// Checks a group of communicator ranks: in range, no repeats.
    fn pscw_group(&self, op: &'static str, group: &[usize]) -> Result<Vec<usize>> {
        let n = self.parts.len();
        let mut seen = vec![false; n];
        for &r in group {
            if r >= n {
                return Err(Error::InvalidRank { rank: r, size: n });
            }
            if std::mem::replace(&mut seen[r], true) {
                return Err(Error::InvalidArgument {
                    op,
                    reason: "a rank appears twice in the group",
                });
            }
        }
        Ok(group.to_vec())
    }

    fn world_of(&self, group: &[usize]) -> Vec<usize> {
        group.iter().map(|&r| self.parts[r].world).collect()
    }

    /// Sends notification `kind` to communicator rank `r` (noted directly
    /// for this rank itself).
    fn notify(&self, kind: u8, r: usize) -> Result<()> {
        let eng = self.comm.eng.enter();
        let world = self.parts[r].world;
        if r == self.comm.rank() {
            eng.rma().borrow_mut().sync.note(kind, self.id, world);
            return Ok(());
        }
        eng.send_copy(
            world,
            kind,
            Writer::<4>::default().u32(self.id).bytes(),
            &[],
        )
    }

    /// Opens an exposure epoch to the origins in `group` (`MPI_Win_post`):
    /// they may access this rank's part between their [`Window::start`] and
    /// [`Window::complete`]. Does not wait. This rank's own writes to its
    /// part made before are visible to them.
    ///
    /// # Errors
    /// [`Error::InvalidRank`] for a rank outside the window's communicator;
    /// [`Error::InvalidArgument`] for a repeated rank, or if an exposure
    /// epoch is already open.
    pub fn post(&self, group: &[usize]) -> Result<()> {
        let g = self.pscw_group("post", group)?;
        if self.epochs.exposure.borrow().is_some() {
            return Err(Error::InvalidArgument {
                op: "post",
                reason: "an exposure epoch is already open (end it with wait or test)",
            });
        }
        fence(Ordering::SeqCst);
        for &r in &g {
            self.notify(wire::POST, r)?;
        }
        *self.epochs.exposure.borrow_mut() = Some(g);
        Ok(())
    }

    /// Opens an access epoch to the targets in `group` (`MPI_Win_start`):
    /// waits, serving other ranks, until each of them has posted to this
    /// rank.
    ///
    /// # Errors
    /// As [`Window::post`]; [`Error::InvalidArgument`] too if an access
    /// epoch is already open or this rank holds passive-target locks.
    pub fn start(&self, group: &[usize]) -> Result<()> {
        let g = self.pscw_group("start", group)?;
        if self.epochs.in_access() {
            return Err(Error::InvalidArgument {
                op: "start",
                reason: "an access epoch is already open (end it with complete)",
            });
        }
        if self.locks.borrow().iter().any(Option::is_some) {
            return Err(Error::InvalidArgument {
                op: "start",
                reason: "this rank holds passive-target locks (unlock first)",
            });
        }
        let worlds = self.world_of(&g);
        let eng = self.comm.eng.enter();
        eng.wait_until(|e| e.rma().borrow().sync.have_all(wire::POST, self.id, &worlds))?;
        eng.rma()
            .borrow_mut()
            .sync
            .take_all(wire::POST, self.id, &worlds);
        fence(Ordering::SeqCst);
        *self.epochs.access.borrow_mut() = Some(g);
        Ok(())
    }

    /// Makes every operation to `t` done here and sure to be done at `t`
    /// before a COMPLETE sent next: operations that travel as messages are
    /// applied in order at the target, so only what does not needs waiting
    /// for (RDMA puts in flight; this rank itself, whose own messages take
    /// another way than the direct note).
    fn settle(&self, t: usize) -> Result<()> {
        if t == self.comm.rank() {
            return self.flush(t);
        }
        let p = &self.parts[t];
        let eng = self.comm.eng.enter();
        if p.rdma.is_some() && eng.rma().borrow().in_flight(p.world) > 0 {
            eng.wait_until(|e| e.rma().borrow().in_flight(p.world) == 0)?;
        }
        self.send_gathered(&eng, t)
    }

    /// Ends the access epoch (`MPI_Win_complete`): every operation issued
    /// since [`Window::start`] is done at this rank, and each target of the
    /// group learns it; the target's [`Window::wait`] returns after they are
    /// done in its memory. (Operations that travel as messages are not
    /// waited for here: the notification follows them in order. Refusals
    /// among them, such as for a window freed meanwhile, are reported by the
    /// next [`Window::flush`] to that target.)
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] without an open access epoch; transport
    /// errors (every target is told all the same).
    pub fn complete(&self) -> Result<()> {
        let Some(g) = self.epochs.access.borrow_mut().take() else {
            return Err(Error::InvalidArgument {
                op: "complete",
                reason: "no access epoch is open (call start first)",
            });
        };
        let mut first = Ok(());
        for &t in &g {
            if let Err(e) = self.settle(t) {
                first = first.and(Err(e));
            }
        }
        fence(Ordering::SeqCst);
        for &t in &g {
            if let Err(e) = self.notify(wire::COMPLETE, t) {
                first = first.and(Err(e));
            }
        }
        first
    }

    /// Ends the exposure epoch (`MPI_Win_wait`): waits, serving other ranks,
    /// until every origin of the [`Window::post`] group has completed; their
    /// operations are then visible in this rank's part.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] without an open exposure epoch.
    pub fn wait(&self) -> Result<()> {
        let Some(g) = self.epochs.exposure.borrow_mut().take() else {
            return Err(Error::InvalidArgument {
                op: "wait",
                reason: "no exposure epoch is open (call post first)",
            });
        };
        let worlds = self.world_of(&g);
        let eng = self.comm.eng.enter();
        let r = eng.wait_until(|e| {
            e.rma()
                .borrow()
                .sync
                .have_all(wire::COMPLETE, self.id, &worlds)
        });
        if r.is_err() {
            // Still open: the caller may wait again.
            *self.epochs.exposure.borrow_mut() = Some(g);
            return r;
        }
        eng.rma()
            .borrow_mut()
            .sync
            .take_all(wire::COMPLETE, self.id, &worlds);
        fence(Ordering::SeqCst);
        Ok(())
    }

    /// [`Window::wait`] without waiting (`MPI_Win_test`): true, with the
    /// exposure epoch ended, if every origin has completed; false, with it
    /// still open, otherwise.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] without an open exposure epoch.
    pub fn test(&self) -> Result<bool> {
        let worlds = match &*self.epochs.exposure.borrow() {
            Some(g) => self.world_of(g),
            None => {
                return Err(Error::InvalidArgument {
                    op: "test",
                    reason: "no exposure epoch is open (call post first)",
                })
            }
        };
        let eng = self.comm.eng.enter();
        eng.progress();
        let mut t = eng.rma().borrow_mut();
        if !t.sync.have_all(wire::COMPLETE, self.id, &worlds) {
            return Ok(false);
        }
        t.sync.take_all(wire::COMPLETE, self.id, &worlds);
        drop(t);
        fence(Ordering::SeqCst);
        *self.epochs.exposure.borrow_mut() = None;
        Ok(true)
    }
}
