//! The file lock of atomic mode: a lock service at rank 0 of the file's
//! communicator, over the `io` block of active messages (ids 48-63 of
//! `engine/am.rs`).
//!
//! A rank that wants the lock sends `LOCK(key)` to the lock's home (the
//! world rank of the communicator's rank 0) and waits for `GRANT(key)`; it
//! releases it with a one-way `UNLOCK(key)`. The home keeps, per key, the
//! holder and a FIFO queue of waiters, and grants the next waiter on
//! unlock: one round trip and one message per access, first come first
//! served, with no retries (a compare-and-swap lock retries while it is
//! held, and its unlock costs a flush and an atomic: three round trips).
//! The home's own requests change its table directly. The key is the
//! context id of the file's communicator, which no other communicator that
//! has the home as a member shares. Requests are served when the home makes
//! progress (in any dos call); a rank waiting for a grant makes progress
//! itself, and fails with the engine's typed error if a peer dies.

use std::collections::{HashMap, HashSet, VecDeque};

use super::error::Result;
use crate::engine::Engine;
use crate::Comm;

/// Active-message ids of the lock service (the `io` block).
pub(super) const LOCK: u8 = 48;
/// Release of a lock held.
pub(super) const UNLOCK: u8 = 49;
/// A lock granted, home to requester.
pub(super) const GRANT: u8 = 50;

/// The lock service's state on one engine.
#[derive(Debug, Default)]
pub(super) struct Locks {
    /// Locks this rank is home of: holder and waiters (world ranks), by key.
    held: HashMap<u64, (usize, VecDeque<usize>)>,
    /// Grants this rank received and has not taken yet.
    granted: HashSet<u64>,
    /// This rank's world rank, once it asked for a lock it is home of.
    me: Option<usize>,
}

impl Locks {
    /// `who` asks for lock `key` (at its home); returns whether it has it now.
    fn request(&mut self, key: u64, who: usize) -> bool {
        match self.held.get_mut(&key) {
            Some((_, waiters)) => {
                waiters.push_back(who);
                false
            }
            None => {
                self.held.insert(key, (who, VecDeque::new()));
                true
            }
        }
    }

    /// The holder of `key` releases it (at its home); returns the waiter
    /// that now holds it, if any.
    fn release(&mut self, key: u64) -> Option<usize> {
        let (_, waiters) = self.held.get_mut(&key)?;
        match waiters.pop_front() {
            Some(next) => {
                if let Some(h) = self.held.get_mut(&key) {
                    h.0 = next;
                }
                Some(next)
            }
            None => {
                self.held.remove(&key);
                None
            }
        }
    }
}

/// Grants `key` to world rank `who` (from its home `eng`).
fn grant(eng: &Engine, key: u64, who: usize) -> crate::Result<()> {
    let me = eng.io_locks().borrow().me;
    if me == Some(who) {
        eng.io_locks().borrow_mut().granted.insert(key);
        Ok(())
    } else {
        eng.send_copy(who, GRANT, &key.to_le_bytes(), &[])
    }
}

/// The lock service's active messages.
pub(super) fn on_am(eng: &Engine, src: usize, id: u8, data: &[u8]) -> crate::Result<()> {
    let Some(key) = data
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
    else {
        return Err(crate::Error::Protocol {
            src,
            reason: "a file-lock message shorter than its key",
        });
    };
    match id {
        LOCK => {
            let now = eng.io_locks().borrow_mut().request(key, src);
            if now {
                grant(eng, key, src)?;
            }
            Ok(())
        }
        UNLOCK => {
            let next = eng.io_locks().borrow_mut().release(key);
            match next {
                Some(w) => grant(eng, key, w),
                None => Ok(()),
            }
        }
        GRANT => {
            eng.io_locks().borrow_mut().granted.insert(key);
            Ok(())
        }
        _ => Err(crate::Error::Protocol {
            src,
            reason: "an unknown message of the io block",
        }),
    }
}

/// The lock of one file in atomic mode.
#[derive(Debug)]
pub(super) struct FileLock {
    comm: Comm,
    key: u64,
    /// World ranks of the home and of this rank.
    home: usize,
    me: usize,
}

impl FileLock {
    /// The lock of the file whose communicator is `comm`.
    pub(super) fn new(comm: &Comm) -> Result<FileLock> {
        Ok(FileLock {
            comm: comm.clone(),
            key: u64::from(comm.ctx()),
            home: comm.peer(0)?,
            me: comm.peer(comm.rank())?,
        })
    }

    /// Takes the lock, waiting (and making progress) while another rank
    /// holds it.
    pub(super) fn lock(&self) -> Result<()> {
        let eng = self.comm.eng.enter();
        if self.home == self.me {
            let now = {
                let mut l = eng.io_locks().borrow_mut();
                l.me = Some(self.me);
                l.request(self.key, self.home)
            };
            if now {
                return Ok(());
            }
        } else {
            eng.send_copy(self.home, LOCK, &self.key.to_le_bytes(), &[])?;
        }
        let key = self.key;
        eng.wait_until(|e| e.io_locks().borrow_mut().granted.remove(&key))?;
        Ok(())
    }

    /// Releases the lock.
    pub(super) fn unlock(&self) -> Result<()> {
        let eng = self.comm.eng.enter();
        if self.home == self.me {
            let next = eng.io_locks().borrow_mut().release(self.key);
            if let Some(w) = next {
                grant(&eng, self.key, w)?;
            }
        } else {
            eng.send_copy(self.home, UNLOCK, &self.key.to_le_bytes(), &[])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_are_granted_in_order() {
        let mut l = Locks::default();
        assert!(l.request(7, 3));
        assert!(!l.request(7, 1));
        assert!(!l.request(7, 2));
        assert!(l.request(8, 1));
        assert_eq!(l.release(7), Some(1));
        assert_eq!(l.release(7), Some(2));
        assert_eq!(l.release(7), None);
        assert!(l.request(7, 5));
        assert_eq!(l.release(9), None);
    }
}
