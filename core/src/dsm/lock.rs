//! A distributed MCS queue lock on one-sided atomics.
//!
//! Mellor-Crummey and Scott's queue lock, with ranks for queue nodes: a
//! window of three words per rank, `TAIL` (used on the home rank, 0: the
//! last rank in the queue, plus one, or 0 when the lock is free), and each
//! rank's own `NEXT` (its successor plus one) and `LOCKED` (1 while it
//! waits). Acquiring swaps itself into `TAIL` and, if there was a
//! predecessor, links itself into the predecessor's `NEXT` and waits on its
//! own `LOCKED`; releasing hands the lock to `NEXT`, or frees `TAIL` with a
//! compare-and-swap if nobody queued. Ranks get the lock in the order they
//! asked for it (FIFO: fair), and a waiting rank polls only its own memory.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Comm, Result, Window};

const TAIL: usize = 0;
const NEXT: usize = 1;
const LOCKED: usize = 2;
/// The rank whose `TAIL` is the lock's.
const HOME: usize = 0;

/// A lock that ranks of a communicator take in turn, fairly (a distributed
/// MCS queue lock: first come, first served; a waiting rank polls only its
/// own memory). Created collectively by [`Comm::dist_lock`].
pub struct DistLock {
    win: Window<'static, u64>,
}

impl std::fmt::Debug for DistLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistLock").finish_non_exhaustive()
    }
}

/// The lock, held; dropping it releases the lock ([`DistLockGuard::unlock`]
/// to see errors).
#[must_use = "the lock is released when the guard is dropped"]
pub struct DistLockGuard<'a> {
    lock: &'a DistLock,
    released: bool,
}

impl std::fmt::Debug for DistLockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistLockGuard").finish_non_exhaustive()
    }
}

impl Comm {
    /// A distributed lock over this communicator (collective).
    ///
    /// ```
    /// let totals = dos::testing::run_threads(3, |world| {
    ///     let lock = world.dist_lock().unwrap();
    ///     let count = world.win_allocate::<u64>(1).unwrap();
    ///     for _ in 0..10 {
    ///         let _held = lock.lock().unwrap();
    ///         // A read-modify-write that is safe only under the lock.
    ///         let mut v = [0u64];
    ///         count.get(&mut v, 0, 0).unwrap();
    ///         count.put(&[v[0] + 1], 0, 0).unwrap();
    ///         count.flush(0).unwrap();
    ///     }
    ///     count.fence().unwrap();
    ///     let mut v = [0u64];
    ///     count.get(&mut v, 0, 0).unwrap();
    ///     v[0]
    /// });
    /// assert_eq!(totals, vec![30; 3]);
    /// ```
    pub fn dist_lock(&self) -> Result<DistLock> {
        let win = self.win_allocate::<u64>(3)?;
        win.fence()?;
        Ok(DistLock { win })
    }
}

impl DistLock {
    fn me(&self) -> usize {
        self.win.comm().rank()
    }

    /// This rank's word `k`, read atomically.
    fn mine(&self, k: usize) -> u64 {
        // SAFETY: the window's part holds 3 aligned words (page-aligned
        // memory) while `self` lives; other ranks change them only with
        // atomics (the window's CPU atomics or the target's served ones).
        unsafe { AtomicU64::from_ptr(self.win.local_ptr().cast::<u64>().add(k)) }
            .load(Ordering::Acquire)
    }

    /// Waits until this rank's word `k` satisfies `f`, making progress (the
    /// predecessor's updates may arrive as messages this rank serves).
    fn wait_mine(&self, k: usize, f: impl Fn(u64) -> bool) -> Result<()> {
        let eng = self.win.comm().eng.enter();
        eng.wait_until(|_| f(self.mine(k)))
    }

    /// Wakes rank `r` if it sleeps on this node (it waits on memory that
    /// this rank just changed through the shared mapping).
    fn wake(&self, r: usize) -> Result<()> {
        let comm = self.win.comm();
        let world = comm.peer(r)?;
        let eng = comm.eng.enter();
        if let (Some(shm), Some(i)) = (eng.shm(), eng.local_index(world)) {
            shm.wake([i]);
        }
        Ok(())
    }

    /// Takes the lock, waiting for the ranks that asked before.
    pub fn lock(&self) -> Result<DistLockGuard<'_>> {
        let me = self.me();
        self.win.swap(me, NEXT, 0)?;
        self.win.swap(me, LOCKED, 1)?;
        let pred = self.win.swap(HOME, TAIL, me as u64 + 1)?;
        if pred != 0 {
            let p = pred as usize - 1;
            self.win.swap(p, NEXT, me as u64 + 1)?;
            self.wake(p)?;
            self.wait_mine(LOCKED, |v| v == 0)?;
        }
        Ok(DistLockGuard {
            lock: self,
            released: false,
        })
    }

    fn release(&self) -> Result<()> {
        let me = self.me();
        if self.mine(NEXT) == 0 {
            if self.win.compare_swap(HOME, TAIL, me as u64 + 1, 0)? == me as u64 + 1 {
                return Ok(());
            }
            // A successor swapped itself in and is linking itself to us.
            self.wait_mine(NEXT, |v| v != 0)?;
        }
        let succ = self.mine(NEXT) as usize - 1;
        self.win.swap(succ, LOCKED, 0)?;
        self.wake(succ)
    }

    /// Ends the lock collectively (no rank may hold or wait for it).
    pub fn free(self) -> Result<()> {
        self.win.free()
    }
}

impl DistLockGuard<'_> {
    /// Releases the lock, reporting errors (dropping the guard ignores them).
    pub fn unlock(mut self) -> Result<()> {
        self.released = true;
        self.lock.release()
    }
}

impl Drop for DistLockGuard<'_> {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.lock.release();
        }
    }
}
