//! Collective operations: the MPI collectives as methods on [`Comm`].
//!
//! Every collective runs on the communicator's collective traffic class, a
//! context of its own, so collectives never match user point-to-point
//! messages. Each collective has one fixed tag per phase: messages between two
//! ranks of a class are non-overtaking and every rank calls collectives in the
//! same order, so fixed tags are enough to keep consecutive calls apart.
//! Nonblocking collectives, which may be outstanding several at once, take a
//! tag per call instead (see `nonblocking/`); the in-place forms are in
//! `in_place.rs`.
//!
//! # Structure
//!
//! The peers, ranges and rounds of each algorithm are pure functions of the
//! rank and the communicator size in [`sched`] (unit-tested without any
//! communication); the methods in the other files execute them with the
//! byte-level send/receive primitives of [`Comm`]. Local reductions go through
//! `op::reduce_left`/`op::reduce_right`, which use rayon on buffers of at least
//! `DOS_REDUCE_PAR_BYTES`.
//!
//! # Reduction order
//!
//! Every reduction combines contributions in rank order,
//! `r0 ⊕ r1 ⊕ ... ⊕ r(n-1)`, whether or not the operation is commutative: each
//! algorithm below only ever combines two contiguous, adjacent ranges of ranks,
//! lower range on the left. The result is therefore the same on every rank, bit
//! for bit, also for floating-point sums. Only the binomial reduce tree uses
//! the commutativity of an operation, to root the tree at the destination rank.
//!
//! # Algorithms and thresholds
//!
//! The thresholds are constants of this module (defaults, to become tunables).
//! Sizes are bytes of the whole buffer unless said otherwise; `n` is the
//! communicator size, `p` the largest power of two not above `n`.
//!
//! | collective | algorithm |
//! | --- | --- |
//! | `barrier` | dissemination: ⌈log2 n⌉ rounds of empty messages |
//! | `bcast` | binomial tree; scatter + ring allgather (van de Geijn) from [`BCAST_LARGE_BYTES`] when `n >=` [`BCAST_LARGE_MIN_RANKS`] |
//! | `reduce` | binomial tree (rooted at `root` for commutative operations, at rank 0 then forwarded otherwise); Rabenseifner (recursive-halving reduce-scatter + binomial gather) from [`REDUCE_LARGE_BYTES`] when the count is at least `p` |
//! | `allreduce` | recursive doubling; Rabenseifner (recursive-halving reduce-scatter + recursive-doubling allgather) from [`ALLREDUCE_LARGE_BYTES`] when the count is at least `p`; both fold the `n - p` extra ranks onto neighbours first |
//! | `reduce_scatter(_block)` | recursive-doubling allreduce of the whole vector, keeping one's own block, below [`REDUCE_SCATTER_LARGE_BYTES`]; pairwise exchange with rank-ordered accumulation above |
//! | `gather`, `scatter` | binomial tree below [`GATHER_LINEAR_MIN_BLOCK`] bytes per rank, linear (all transfers in flight at once) above |
//! | `gatherv`, `scatterv` | linear |
//! | `allgather` | recursive doubling (power-of-two `n`) or Bruck (other `n`) below [`ALLGATHER_RING_MIN_BYTES`] (whole result), ring above |
//! | `allgatherv` | ring |
//! | `alltoall` | scattered nonblocking exchange in windows of [`ALLTOALL_WINDOW`] peers below [`ALLTOALL_PAIRWISE_MIN_BLOCK`] bytes per block, pairwise exchange above (and always on two ranks) |
//! | `alltoallv` | scattered nonblocking exchange in windows of [`ALLTOALL_WINDOW`] peers |
//! | `scan`, `exscan` | recursive doubling (Hillis–Steele) |
//!
//! With two ranks, a small `allreduce` is one exchange (a send-receive) and
//! one local reduction.
//!
//! Before any of these, a communicator whose ranks (2 to 16) all run on this
//! node runs `barrier`, `bcast`, `reduce`, `allreduce`, `allgather` and
//! `alltoall` whose contribution per rank is at most `DOS_NODE_COLL_BYTES`
//! bytes through shared-memory slots instead of messages
//! (`node.rs`): one round whatever the size, still in rank order.
//!
//! # Memory
//!
//! Scratch buffers of at most [`SMALL_BYTES`] live on the stack, so the
//! blocking algorithms (barrier, bcast, reduce, allreduce, the binomial
//! gather and scatter, allgather, reduce_scatter, scan) allocate nothing for
//! small buffers; larger ones allocate one scratch per call. The exchanges
//! that keep several receives in flight (the scattered `alltoall(v)`,
//! `gatherv` and the linear `gather`) hold their requests in a fixed-size
//! window but register them with a request scope, which allocates its list
//! once per call. Algorithms receive straight into the caller's buffers
//! wherever the data lands there unchanged.
//!
//! # Errors
//!
//! A root outside the communicator is [`Error::InvalidRank`]; buffers of the
//! wrong length and counts or displacements that reach past a buffer are
//! [`Error::InvalidBuffer`]. Both are found before any communication. A
//! message whose length differs from what the receiving rank expects (ranks
//! that disagree on counts) is [`Error::Truncated`] if longer and
//! [`Error::InvalidBuffer`] if shorter. A rank that meets such a message
//! still takes the rest of its steps of the algorithm (it forwards what it
//! has) before it returns the error, so every rank's call returns and the
//! communicator stays usable (ranks that disagree on counts see an error
//! when the disagreement reaches them; a rank that only sends may see none).

use std::mem::{size_of, size_of_val, MaybeUninit};
use std::ops::Range;

use bytemuck::Pod;

use crate::comm::Class;
use crate::op::Op;
use crate::p2p::{Source, Tag, TagSel};
use crate::request::Request;
use crate::{Comm, Error, Result};

mod allgather;
mod alltoall;
mod barrier;
mod bcast;
mod gather;
mod in_place;
pub(crate) mod node;
pub(crate) mod nonblocking;
mod reduce;
mod reduce_scatter;
mod scan;
pub(crate) mod sched;
mod slot;

pub(crate) use slot::COLL_PAYLOAD;

// ----- thresholds (tunable later) -----

/// Largest scratch buffer kept on the stack (bytes); above it, scratch is on the heap.
pub(crate) const SMALL_BYTES: usize = 2048;
/// `bcast` switches from a binomial tree to scatter + ring allgather at this size.
pub(crate) const BCAST_LARGE_BYTES: usize = 16 * 1024;
/// ... but only on communicators of at least this many ranks.
pub(crate) const BCAST_LARGE_MIN_RANKS: usize = 4;
/// `reduce` switches from a binomial tree to Rabenseifner at this size.
pub(crate) const REDUCE_LARGE_BYTES: usize = 16 * 1024;
/// `allreduce` switches from recursive doubling to Rabenseifner at this size.
pub(crate) const ALLREDUCE_LARGE_BYTES: usize = 16 * 1024;
/// `reduce_scatter` switches from allreduce-and-keep to pairwise exchange at
/// this size of the whole send buffer.
pub(crate) const REDUCE_SCATTER_LARGE_BYTES: usize = 16 * 1024;
/// `gather`/`scatter` switch from a binomial tree to linear at this block size (bytes per rank).
pub(crate) const GATHER_LINEAR_MIN_BLOCK: usize = 4096;
/// `allgather` switches from recursive doubling / Bruck to a ring at this size of the result.
pub(crate) const ALLGATHER_RING_MIN_BYTES: usize = 128 * 1024;
/// `alltoall` switches from scattered nonblocking exchange to pairwise exchange
/// at this block size (bytes per pair of ranks).
pub(crate) const ALLTOALL_PAIRWISE_MIN_BLOCK: usize = 8 * 1024;
/// How a `bcast` travels (see [`bcast_algorithm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BcastAlgo {
    /// Down a binomial tree: log2 n steps, the buffer copied n - 1 times.
    Binomial,
    /// From the root to every rank directly: one step, n - 1 copies.
    Flat,
    /// Scattered down the tree, then a ring allgather (van de Geijn).
    ScatterRing,
}

/// Communicators up to this size take the flat `bcast` when oversubscribed.
pub(crate) const BCAST_FLAT_MAX_RANKS: usize = 16;

/// The algorithm of a `bcast` of `bytes` on `n` ranks.
///
/// The scatter + ring shortens the critical path (about 2 copies of the
/// buffer against log2 n) but copies more in total (the tree copies the
/// buffer n - 1 times, the ring alone as much again less one block, plus the
/// scatter), in n - 1 + log2 n steps against log2 n. It pays only while every
/// rank has a CPU of its own. On an oversubscribed node the ranks take turns
/// on the CPUs, so the total copying and the steps (each a hand-over of a
/// CPU) decide: from 16 KiB on (rendezvous messages, which each receiver
/// copies from the root's buffer itself) the flat bcast copies as little as
/// the tree (n - 1 buffers) in one step, each rank depending on the root
/// alone; 4 ranks on 2 cores took 4 buffers' worth in 5 steps by the ring,
/// 3 in 2 by the tree, 3 in 1 flat. Below, where the sender copies into the
/// rings, the tree shares the copying out among the ranks (ARCHITECTURE.md,
/// "Session 12: collectives on an oversubscribed node").
pub(crate) fn bcast_algorithm(bytes: usize, n: usize, oversubscribed: bool) -> BcastAlgo {
    if bytes < BCAST_LARGE_BYTES {
        BcastAlgo::Binomial
    } else if oversubscribed {
        if n <= BCAST_FLAT_MAX_RANKS {
            BcastAlgo::Flat
        } else {
            BcastAlgo::Binomial
        }
    } else if n >= BCAST_LARGE_MIN_RANKS {
        BcastAlgo::ScatterRing
    } else {
        BcastAlgo::Binomial
    }
}

/// Peers in flight at once in the scattered `alltoall(v)` and the linear `gather`/`scatter`.
pub(crate) const ALLTOALL_WINDOW: usize = 32;
/// Sends to the children of a tree node in flight at once (a node of a
/// tree of up to 65536 ranks has at most 16 children; more wait their turn).
pub(crate) const TREE_WINDOW: usize = 16;

/// Fixed tags on the collective traffic class, one per collective phase.
pub(crate) mod tag {
    use crate::p2p::Tag;
    pub(crate) const BARRIER: Tag = 1;
    pub(crate) const BCAST: Tag = 2;
    pub(crate) const BCAST_RING: Tag = 3;
    pub(crate) const REDUCE: Tag = 4;
    pub(crate) const REDUCE_FWD: Tag = 5;
    pub(crate) const ALLREDUCE: Tag = 6;
    pub(crate) const GATHER: Tag = 7;
    pub(crate) const SCATTER: Tag = 8;
    pub(crate) const ALLGATHER: Tag = 9;
    pub(crate) const ALLTOALL: Tag = 10;
    pub(crate) const REDUCE_SCATTER: Tag = 11;
    pub(crate) const SCAN: Tag = 12;
    pub(crate) const EXSCAN: Tag = 13;
}

// ----- bytes and scratch -----

/// The bytes of a slice of plain data (empty for zero-sized types).
#[inline]
pub(crate) fn bytes<T: Pod>(s: &[T]) -> &[u8] {
    if size_of::<T>() == 0 {
        &[]
    } else {
        bytemuck::cast_slice(s)
    }
}

/// The bytes of a mutable slice of plain data (empty for zero-sized types).
#[inline]
pub(crate) fn bytes_mut<T: Pod>(s: &mut [T]) -> &mut [u8] {
    if size_of::<T>() == 0 {
        &mut []
    } else {
        bytemuck::cast_slice_mut(s)
    }
}

/// Stack storage for small scratch buffers, aligned for any element type.
#[repr(C, align(64))]
struct StackBuf([MaybeUninit<u8>; SMALL_BYTES]);

/// Runs `f` on a zeroed scratch slice of `n` elements: on the stack when it
/// fits in [`SMALL_BYTES`], else on the heap.
#[inline]
pub(crate) fn with_scratch<T: Pod, R>(n: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let len = n.saturating_mul(size_of::<T>());
    if size_of::<T>() != 0 && len <= SMALL_BYTES && std::mem::align_of::<T>() <= 64 {
        let mut stack = MaybeUninit::<StackBuf>::uninit();
        let p = stack.as_mut_ptr().cast::<u8>();
        // SAFETY: `p` points to `SMALL_BYTES` writable bytes and `len <= SMALL_BYTES`.
        unsafe { p.write_bytes(0, len) };
        // SAFETY: the first `len = n * size_of::<T>()` bytes at `p` are
        // initialized (zero, a valid `T` since `T: Pod`), `p` is 64-byte
        // aligned, which is enough for `T`, and the slice borrows `stack`,
        // which outlives it and is not otherwise accessed while it lives.
        let s = unsafe { std::slice::from_raw_parts_mut(p.cast::<T>(), n) };
        f(s)
    } else {
        let mut v = vec![T::zeroed(); n];
        f(&mut v)
    }
}

/// `(&buf[a], &mut buf[b])` for two disjoint ranges of one buffer.
#[inline]
pub(crate) fn split_ranges<T>(buf: &mut [T], a: Range<usize>, b: Range<usize>) -> (&[T], &mut [T]) {
    if a.is_empty() {
        return (&[], &mut buf[b]);
    }
    if b.is_empty() {
        return (&buf[a], &mut []);
    }
    if a.end <= b.start {
        let (lo, hi) = buf.split_at_mut(b.start);
        (&lo[a], &mut hi[..b.end - b.start])
    } else {
        assert!(b.end <= a.start, "split_ranges: overlapping ranges");
        let (lo, hi) = buf.split_at_mut(a.start);
        (&hi[..a.end - a.start], &mut lo[b])
    }
}

/// Hands out disjoint pieces of a buffer in increasing order of position.
pub(crate) struct Carver<'a, T> {
    rest: &'a mut [T],
    base: usize,
}

impl<'a, T> Carver<'a, T> {
    pub(crate) fn new(buf: &'a mut [T]) -> Self {
        Carver { rest: buf, base: 0 }
    }

    /// `buf[start..start + len]`; `start` must not precede the end of the previous piece.
    pub(crate) fn take(&mut self, start: usize, len: usize) -> &'a mut [T] {
        let rest = std::mem::take(&mut self.rest);
        let (_, tail) = rest.split_at_mut(start - self.base);
        let (piece, tail) = tail.split_at_mut(len);
        self.rest = tail;
        self.base = start + len;
        piece
    }
}

/// `acc = other ⊕ acc` if `other` holds lower ranks' contribution, else `acc = acc ⊕ other`.
#[inline]
pub(crate) fn combine<T: Pod + Send + Sync, O: Op<T>>(
    op: &O,
    acc: &mut [T],
    other: &[T],
    other_lower: bool,
    par: usize,
) {
    if other_lower {
        crate::op::reduce_left(op, other, acc, par);
    } else {
        crate::op::reduce_right(op, acc, other, par);
    }
}

// ----- argument checks -----

#[cold]
pub(crate) fn bad_buffer(op: &'static str, reason: String) -> Error {
    Error::InvalidBuffer { op, reason }
}

/// Checks that `what` holds exactly `want` elements.
#[inline]
pub(crate) fn check_len(
    op: &'static str,
    what: &'static str,
    got: usize,
    want: usize,
) -> Result<()> {
    if got != want {
        return Err(bad_buffer(
            op,
            format!("{what} holds {got} elements, expected {want}"),
        ));
    }
    Ok(())
}

/// `a * b`, or an error naming `op` if it overflows.
#[inline]
pub(crate) fn mul(op: &'static str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| bad_buffer(op, format!("{a} * {b} elements overflow")))
}

/// Checks that `counts` and `displs` have one entry per rank and that every
/// block `displs[i]..displs[i] + counts[i]` lies inside a buffer of `len`.
pub(crate) fn check_layout(
    op: &'static str,
    what: &'static str,
    counts: &[usize],
    displs: &[usize],
    n: usize,
    len: usize,
) -> Result<()> {
    if counts.len() != n || displs.len() != n {
        return Err(bad_buffer(
            op,
            format!(
                "{what}: {} counts and {} displacements for {n} ranks",
                counts.len(),
                displs.len()
            ),
        ));
    }
    for (i, (&c, &d)) in counts.iter().zip(displs).enumerate() {
        match d.checked_add(c) {
            Some(end) if end <= len => {}
            _ => {
                return Err(bad_buffer(
                    op,
                    format!("{what}: block {i} ({d} + {c} elements) exceeds the buffer of {len}"),
                ))
            }
        }
    }
    Ok(())
}

/// True if the blocks lie in rank order without overlapping, so that one
/// pass can hand out all of them at once (see [`Carver`]).
pub(crate) fn in_rank_order(counts: &[usize], displs: &[usize]) -> bool {
    let mut end = 0;
    for (&c, &d) in counts.iter().zip(displs) {
        if d < end {
            return false;
        }
        end = d + c;
    }
    true
}

#[cold]
fn short_message(op: &'static str, len: usize, want: usize) -> Error {
    bad_buffer(
        op,
        format!("received {len} bytes where {want} were expected (ranks disagree on counts)"),
    )
}

/// Goes on after a step that failed because ranks disagree on counts
/// ([`Error::InvalidBuffer`], [`Error::Truncated`]): keeps the first such
/// error in `first` and returns `Ok`, so that the rank still takes its
/// remaining steps (its peers wait for them) and the communicator stays
/// usable. Any other error is returned at once.
pub(crate) fn go_on(first: &mut Result<()>, step: Result<()>) -> Result<()> {
    match step {
        Err(e @ (Error::InvalidBuffer { .. } | Error::Truncated { .. })) => {
            if first.is_ok() {
                *first = Err(e);
            }
            Ok(())
        }
        other => other,
    }
}

/// Checks a received length; `want == usize::MAX` accepts anything.
#[inline]
pub(crate) fn check_received(op: &'static str, len: usize, want: usize) -> Result<()> {
    if want != usize::MAX && len != want {
        return Err(short_message(op, len, want));
    }
    Ok(())
}

// ----- communication helpers -----

/// Requests in flight, waited for together; at most `W` at once.
pub(crate) struct Window<'s, const W: usize> {
    slots: [Option<(Request<'s>, usize)>; W],
    len: usize,
    op: &'static str,
}

impl<'s, const W: usize> Window<'s, W> {
    pub(crate) fn new(op: &'static str) -> Self {
        Window {
            slots: std::array::from_fn(|_| None),
            len: 0,
            op,
        }
    }

    /// Adds a request; `want` is the byte length a receive must get
    /// (`usize::MAX` for sends). Waits for all earlier ones if the window is full.
    pub(crate) fn push(&mut self, r: Request<'s>, want: usize) -> Result<()> {
        if self.len == W {
            self.wait_all()?;
        }
        self.slots[self.len] = Some((r, want));
        self.len += 1;
        Ok(())
    }

    /// Waits for every request; returns the first error after all have completed.
    pub(crate) fn wait_all(&mut self) -> Result<()> {
        let mut first = Ok(());
        for slot in &mut self.slots[..self.len] {
            if let Some((r, want)) = slot.take() {
                let res = r
                    .wait()
                    .and_then(|st| check_received(self.op, st.len, want));
                if first.is_ok() {
                    first = res;
                }
            }
        }
        self.len = 0;
        first
    }
}

impl Comm {
    #[inline]
    pub(crate) fn check_root(&self, root: usize) -> Result<()> {
        if root >= self.size() {
            return Err(Error::InvalidRank {
                rank: root,
                size: self.size(),
            });
        }
        Ok(())
    }

    /// Whether this job's ranks outnumber the node's CPUs (fixed at
    /// start-up): then a collective's total copying, not its critical path,
    /// sets its time, since the ranks take turns on the CPUs.
    ///
    /// Every rank of a communicator must choose the same algorithm, so only
    /// a job on one node, whose ranks all judge the same node, says yes (on
    /// several nodes the nodes may differ).
    #[inline]
    pub(crate) fn oversubscribed(&self) -> bool {
        let e = self.eng.enter();
        e.links.net.is_none() && e.crowding.oversubscribed()
    }

    /// Byte size from which local reductions run in parallel.
    #[inline]
    pub(crate) fn par_bytes(&self) -> usize {
        self.eng.enter().config().reduce_par_bytes
    }

    /// Blocking send on the collective class.
    #[inline]
    pub(crate) fn c_send<T: Pod>(&self, buf: &[T], dest: usize, tag: Tag) -> Result<()> {
        self.send_raw(Class::Coll, bytes(buf), dest, tag)
    }

    /// Blocking receive on the collective class of exactly `buf.len()` elements.
    #[inline]
    pub(crate) fn c_recv<T: Pod>(
        &self,
        op: &'static str,
        buf: &mut [T],
        src: usize,
        tag: Tag,
    ) -> Result<()> {
        let want = size_of_val(buf);
        let st = self.recv_raw(
            Class::Coll,
            bytes_mut(buf),
            Source::Rank(src),
            TagSel::Tag(tag),
        )?;
        check_received(op, st.len, want)
    }

    /// Send-receive on the collective class; the receive must fill `rbuf` exactly.
    #[inline]
    pub(crate) fn c_sendrecv<T: Pod>(
        &self,
        op: &'static str,
        sbuf: &[T],
        dest: usize,
        rbuf: &mut [T],
        src: usize,
        tag: Tag,
    ) -> Result<()> {
        let want = size_of_val(rbuf);
        let st = self.sendrecv_raw(
            Class::Coll,
            bytes(sbuf),
            dest,
            tag,
            bytes_mut(rbuf),
            Source::Rank(src),
            TagSel::Tag(tag),
        )?;
        check_received(op, st.len, want)
    }

    /// Nonblocking send on the collective class, added to `w`.
    #[inline]
    pub(crate) fn c_isend<'s, T: Pod, const W: usize>(
        &self,
        s: &'s crate::Scope<'s, '_>,
        w: &mut Window<'s, W>,
        buf: &'s [T],
        dest: usize,
        tag: Tag,
    ) -> Result<()> {
        let r = self.isend_raw(Class::Coll, s, bytes(buf), dest, tag)?;
        w.push(r, usize::MAX)
    }

    /// Nonblocking receive on the collective class of exactly `buf.len()` elements, added to `w`.
    #[inline]
    pub(crate) fn c_irecv<'s, T: Pod, const W: usize>(
        &self,
        s: &'s crate::Scope<'s, '_>,
        w: &mut Window<'s, W>,
        buf: &'s mut [T],
        src: usize,
        tag: Tag,
    ) -> Result<()> {
        let want = size_of_val(buf);
        let r = self.irecv_raw(
            Class::Coll,
            s,
            bytes_mut(buf),
            Source::Rank(src),
            TagSel::Tag(tag),
        )?;
        w.push(r, want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_is_zeroed_and_sized() {
        with_scratch::<u64, _>(3, |s| assert_eq!(s, &[0, 0, 0]));
        with_scratch::<u128, _>(SMALL_BYTES / 16, |s| {
            assert_eq!(s.len(), SMALL_BYTES / 16);
            assert_eq!(s.as_ptr() as usize % std::mem::align_of::<u128>(), 0);
        });
        with_scratch::<u8, _>(SMALL_BYTES + 1, |s| assert!(s.iter().all(|&b| b == 0)));
        with_scratch::<(), _>(5, |s| assert_eq!(s.len(), 5));
    }

    #[test]
    fn an_oversubscribed_node_broadcasts_flat_from_16k() {
        let k = 1024;
        // Ranks with CPUs of their own: as before.
        use BcastAlgo::*;
        assert_eq!(bcast_algorithm(16 * k - 1, 4, false), Binomial);
        assert_eq!(bcast_algorithm(16 * k, 4, false), ScatterRing);
        assert_eq!(bcast_algorithm(1 << 20, 3, false), Binomial);
        // Oversubscribed: the flat bcast from 16 KiB on (the tree for many
        // ranks).
        assert_eq!(bcast_algorithm(16 * k - 1, 4, true), Binomial);
        for bytes in [16 * k, 64 * k, 1 << 20] {
            assert_eq!(bcast_algorithm(bytes, 4, true), Flat);
            assert_eq!(bcast_algorithm(bytes, BCAST_FLAT_MAX_RANKS, true), Flat);
            assert_eq!(bcast_algorithm(bytes, 64, true), Binomial);
        }
    }

    #[test]
    fn split_ranges_both_orders() {
        let mut v = [0, 1, 2, 3, 4, 5];
        let (a, b) = split_ranges(&mut v, 0..2, 3..5);
        assert_eq!(a, &[0, 1]);
        b[0] = 9;
        let (a, b) = split_ranges(&mut v, 4..6, 1..3);
        assert_eq!(a, &[4, 5]);
        assert_eq!(b, &[1, 2]);
        let (a, b) = split_ranges(&mut v, 2..2, 0..6);
        assert!(a.is_empty());
        assert_eq!(b.len(), 6);
        assert_eq!(v[3], 9);
    }

    #[test]
    fn carver_and_layouts() {
        let mut v = [0u8; 10];
        let mut c = Carver::new(&mut v);
        c.take(1, 2).fill(1);
        c.take(3, 0);
        c.take(5, 3).fill(2);
        assert_eq!(v, [0, 1, 1, 0, 0, 2, 2, 2, 0, 0]);
        assert!(in_rank_order(&[2, 0, 3], &[1, 3, 5]));
        assert!(!in_rank_order(&[2, 3], &[1, 2]));
        assert!(check_layout("t", "recv", &[2, 3], &[0, 7], 2, 10).is_ok());
        assert!(check_layout("t", "recv", &[2, 3], &[0, 8], 2, 10).is_err());
        assert!(check_layout("t", "recv", &[2, usize::MAX], &[0, 8], 2, 10).is_err());
        assert!(check_layout("t", "recv", &[2], &[0, 8], 2, 10).is_err());
    }
}
