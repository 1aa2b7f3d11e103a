//! The point-to-point protocol: tag matching ([`matching`]), the eager
//! protocol ([`eager`]) and the rendezvous protocols ([`rendezvous`]), with
//! their headers in [`wire`]. It sits beside the engine ([`crate::engine`]),
//! whose own protocol it is: the engine's dispatch matches its active
//! messages directly (see [`crate::engine::am`] for every id).
//!
//! * Eager (at most `DOS_EAGER_LIMIT` bytes): envelope and payload travel in
//!   one active message; a matching posted receive gets the payload copied
//!   straight out of the ring, otherwise it is kept as unexpected.
//! * Rendezvous (larger): the sender registers its buffer and sends an RTS
//!   carrying the key; the matching receiver copies the payload with one
//!   transport `get` (CMA on shared memory: a single copy) and sends FIN,
//!   which completes the send; or the payload comes in pipelined chunks.
//!
//! Messages from one sender on one communicator are matched in the order sent
//! (MPI's non-overtaking rule): the transport keeps per-peer order, and a send
//! that finds the transport busy queues behind earlier ones.

pub(crate) mod eager;
pub(crate) mod matching;
pub(crate) mod persistent;
pub(crate) mod probe;
pub(crate) mod rendezvous;
pub(crate) mod ssend;
pub(crate) mod wire;

// The engine's types, under the names that the rest of the crate has used.
pub(crate) use crate::engine::{Engine, Entered, Links, ReqId, Route, Shared};

/// A message tag. User tags are `0..=i32::MAX`.
pub type Tag = i32;

/// Where a receive accepts messages from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Any rank (`MPI_ANY_SOURCE`).
    Any,
    /// One rank of the communicator.
    Rank(usize),
}

impl From<usize> for Source {
    fn from(r: usize) -> Self {
        Source::Rank(r)
    }
}

/// Which tags a receive accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagSel {
    /// Any tag (`MPI_ANY_TAG`).
    Any,
    /// Exactly this tag.
    Tag(Tag),
}

impl From<Tag> for TagSel {
    fn from(t: Tag) -> Self {
        TagSel::Tag(t)
    }
}

/// Accept a message from any rank.
pub const ANY_SOURCE: Source = Source::Any;

/// Accept a message with any tag.
pub const ANY_TAG: TagSel = TagSel::Any;

/// What a completed receive (or a probe) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// Sender's rank in the communicator.
    pub source: usize,
    /// The message's tag.
    pub tag: Tag,
    /// Length in bytes.
    pub len: usize,
}

impl Status {
    /// Number of whole `T` elements in the message.
    pub fn count<T>(&self) -> usize {
        self.len / std::mem::size_of::<T>().max(1)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;
    use crate::testing::run_threads;

    #[test]
    pub(crate) fn an_abandoned_receive_leaves_its_buffer_alone() {
        // Rank 0 gives up a posted receive (as after a peer failure); the
        // message that then arrives must not land in the old buffer but wait
        // for the next receive.
        let posted = Barrier::new(2);
        run_threads(2, |w| {
            if w.rank() == 0 {
                let mut old = [0u8; 4];
                {
                    let eng = w.comm().eng.enter();
                    // SAFETY: `old` outlives the request, which is abandoned below.
                    let id = unsafe {
                        eng.irecv(0, Source::Rank(1), TagSel::Tag(5), old.as_mut_ptr(), 4)
                    }
                    .unwrap();
                    eng.abandon(id);
                }
                posted.wait();
                let mut new = [0u8; 4];
                w.recv(&mut new, 1, 5).unwrap();
                assert_eq!((old, new), ([0; 4], [1, 2, 3, 4]));
            } else {
                posted.wait();
                w.send(&[1u8, 2, 3, 4], 0, 5).unwrap();
            }
        });
    }
}
