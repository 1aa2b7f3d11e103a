//! `alltoall(v)`: scattered nonblocking exchange in windows of peers, or
//! pairwise exchange for large blocks.

use std::mem::size_of_val;
use std::ops::Range;

use bytemuck::Pod;

use crate::coll::sched::pairwise;
use crate::coll::{
    check_layout, check_len, go_on, in_rank_order, tag, Carver, Window,
    ALLTOALL_PAIRWISE_MIN_BLOCK, ALLTOALL_WINDOW,
};
use crate::{Comm, Result};

impl Comm {
    /// Sends block `i` of `send` to rank `i`, which stores it as block
    /// `rank` of its `recv` (`MPI_Alltoall`).
    ///
    /// `send` and `recv` both hold `size()` blocks of equal length. Blocks
    /// below 8 KiB are exchanged with all peers at once (in windows of 32),
    /// larger ones (and any block on two ranks) pairwise, one peer per step.
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if the lengths differ or are not a
    /// multiple of the communicator size.
    ///
    /// ```
    /// dos::testing::run_threads(3, |world| {
    ///     let r = world.rank() as u32;
    ///     let send = [r * 10, r * 10 + 1, r * 10 + 2];
    ///     let mut recv = [0u32; 3];
    ///     world.alltoall(&send, &mut recv).unwrap();
    ///     assert_eq!(recv, [r, 10 + r, 20 + r]);
    /// });
    /// ```
    pub fn alltoall<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        const OP: &str = "alltoall";
        let (n, r) = (self.size(), self.rank());
        check_len(OP, "recv", recv.len(), send.len())?;
        if send.len() % n != 0 {
            return Err(crate::coll::bad_buffer(
                OP,
                format!("{} elements do not split into {n} blocks", send.len()),
            ));
        }
        let blk = send.len() / n;
        if n == 1 || size_of_val(send) == 0 {
            recv.copy_from_slice(send);
            return Ok(());
        }
        if let Some(done) = self.node_alltoall(send, recv) {
            return done;
        }
        recv[r * blk..(r + 1) * blk].copy_from_slice(&send[r * blk..(r + 1) * blk]);
        let block = |i: usize| i * blk..(i + 1) * blk;
        // Two ranks: the pairwise exchange is a single send-receive, cheaper
        // than setting up a window of requests.
        if n == 2 || blk * std::mem::size_of::<T>() >= ALLTOALL_PAIRWISE_MIN_BLOCK {
            self.alltoall_pairwise(OP, send, recv, block, block)
        } else {
            self.alltoall_scattered(OP, send, recv, block, block)
        }
    }

    /// Sends `send[sdispls[i]..sdispls[i] + scounts[i]]` to rank `i`, which
    /// stores it at `recv[rdispls[rank]..rdispls[rank] + rcounts[rank]]`
    /// (`MPI_Alltoallv`).
    ///
    /// `rcounts[i]` must equal rank `i`'s `scounts[rank]`. Exchanged with
    /// all peers at once, in windows of 32 peers.
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if a count or displacement array does
    /// not have one entry per rank or a block reaches past its buffer.
    ///
    /// ```
    /// dos::testing::run_threads(2, |world| {
    ///     // Rank r sends r + 1 copies of its rank to each peer.
    ///     let r = world.rank();
    ///     let send = vec![r as u8; 2 * (r + 1)];
    ///     let mut recv = [0u8; 3];
    ///     world
    ///         .alltoallv(&send, &[r + 1, r + 1], &[0, r + 1], &mut recv, &[1, 2], &[0, 1])
    ///         .unwrap();
    ///     assert_eq!(recv, [0, 1, 1]);
    /// });
    /// ```
    pub fn alltoallv<T: Pod>(
        &self,
        send: &[T],
        scounts: &[usize],
        sdispls: &[usize],
        recv: &mut [T],
        rcounts: &[usize],
        rdispls: &[usize],
    ) -> Result<()> {
        const OP: &str = "alltoallv";
        let (n, r) = (self.size(), self.rank());
        check_layout(OP, "send", scounts, sdispls, n, send.len())?;
        check_layout(OP, "recv", rcounts, rdispls, n, recv.len())?;
        check_len(OP, "own block", rcounts[r], scounts[r])?;
        let sblock = |i: usize| sdispls[i]..sdispls[i] + scounts[i];
        let rblock = |i: usize| rdispls[i]..rdispls[i] + rcounts[i];
        recv[rblock(r)].copy_from_slice(&send[sblock(r)]);
        if n == 1 {
            return Ok(());
        }
        if in_rank_order(rcounts, rdispls) {
            self.alltoall_scattered(OP, send, recv, sblock, rblock)
        } else {
            // Overlapping or unordered receive blocks: one at a time.
            self.alltoall_pairwise(OP, send, recv, sblock, rblock)
        }
    }

    /// Pairwise exchange: in step `i` send to `rank + i` and receive from
    /// `rank - i` (partners `rank ^ i` for power-of-two sizes).
    fn alltoall_pairwise<T: Pod>(
        &self,
        op: &'static str,
        send: &[T],
        recv: &mut [T],
        sblock: impl Fn(usize) -> Range<usize>,
        rblock: impl Fn(usize) -> Range<usize>,
    ) -> Result<()> {
        let (n, r) = (self.size(), self.rank());
        // Every step is taken even after a disagreement on counts (`go_on`).
        let mut first = Ok(());
        for i in 1..n {
            let (to, from) = pairwise(r, n, i);
            let got = self.c_sendrecv(
                op,
                &send[sblock(to)],
                to,
                &mut recv[rblock(from)],
                from,
                tag::ALLTOALL,
            );
            go_on(&mut first, got)?;
        }
        first
    }

    /// Scattered exchange: for peers at distance `b..b + ALLTOALL_WINDOW`,
    /// post every receive (from `rank - i`) and send (to `rank + i`), then
    /// wait for them all. `rblock` must be in rank order without overlaps.
    fn alltoall_scattered<T: Pod>(
        &self,
        op: &'static str,
        send: &[T],
        recv: &mut [T],
        sblock: impl Fn(usize) -> Range<usize>,
        rblock: impl Fn(usize) -> Range<usize>,
    ) -> Result<()> {
        let (n, r) = (self.size(), self.rank());
        let mut b = 1;
        while b < n {
            let e = (b + ALLTOALL_WINDOW).min(n);
            let recv = &mut *recv;
            crate::scope(|s| {
                let mut w = Window::<{ 2 * ALLTOALL_WINDOW }>::new(op);
                let mut carver = Carver::new(recv);
                for q in 0..n {
                    let dist = (r + n - q) % n;
                    if (b..e).contains(&dist) {
                        let rb = rblock(q);
                        let piece = carver.take(rb.start, rb.len());
                        self.c_irecv(s, &mut w, piece, q, tag::ALLTOALL)?;
                    }
                }
                for i in b..e {
                    let to = (r + i) % n;
                    self.c_isend(s, &mut w, &send[sblock(to)], to, tag::ALLTOALL)?;
                }
                w.wait_all()
            })?;
            b = e;
        }
        Ok(())
    }
}
