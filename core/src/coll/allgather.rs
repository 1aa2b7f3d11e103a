//! `allgather(v)`: recursive doubling or Bruck for small results, ring for
//! large ones and for `allgatherv`.

use std::mem::size_of_val;

use bytemuck::Pod;

use crate::coll::sched::bruck_rounds;
use crate::coll::{
    bad_buffer, check_layout, check_len, go_on, mul, split_ranges, tag, with_scratch,
    ALLGATHER_RING_MIN_BYTES,
};
use crate::{Comm, Result};

impl Comm {
    /// Collects `send` of every rank, in rank order, into `recv` of every rank
    /// (`MPI_Allgather`).
    ///
    /// Every rank sends as many elements; `recv` holds `size() * send.len()`.
    /// Results below 128 KiB use recursive doubling
    /// (power-of-two sizes, in place) or Bruck's algorithm; larger ones a ring.
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `recv` has the wrong length.
    ///
    /// ```
    /// dos::testing::run_threads(3, |world| {
    ///     let mut all = [0u64; 3];
    ///     world.allgather(&[world.rank() as u64 * 2], &mut all).unwrap();
    ///     assert_eq!(all, [0, 2, 4]);
    /// });
    /// ```
    pub fn allgather<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        const OP: &str = "allgather";
        let (n, r) = (self.size(), self.rank());
        let blk = send.len();
        check_len(OP, "recv", recv.len(), mul(OP, n, blk)?)?;
        if n == 1 {
            recv.copy_from_slice(send);
            return Ok(());
        }
        if size_of_val(send) == 0 {
            return Ok(());
        }
        if let Some(done) = self.node_allgather(send, recv) {
            return done;
        }
        let ring = size_of_val(recv) >= ALLGATHER_RING_MIN_BYTES;
        if !ring && !n.is_power_of_two() {
            return self.allgather_bruck(send, recv);
        }
        recv[r * blk..(r + 1) * blk].copy_from_slice(send);
        if ring {
            self.ring_allgather(
                OP,
                recv,
                |i| i * blk..(i + 1) * blk,
                r,
                |i| i,
                tag::ALLGATHER,
            )
        } else {
            // Recursive doubling: before step `mask` a rank holds the blocks
            // of its aligned group of `mask` ranks and swaps them with the
            // neighbouring group's.
            // Every step is taken even after a disagreement on counts (see `go_on`).
            let mut first = Ok(());
            let mut mask = 1;
            while mask < n {
                let peer = r ^ mask;
                let mine = r & !(mask - 1);
                let theirs = peer & !(mask - 1);
                let (sb, rb) = split_ranges(
                    recv,
                    mine * blk..(mine + mask) * blk,
                    theirs * blk..(theirs + mask) * blk,
                );
                let got = self.c_sendrecv(OP, sb, peer, rb, peer, tag::ALLGATHER);
                go_on(&mut first, got)?;
                mask <<= 1;
            }
            first
        }
    }

    /// Bruck: gathers blocks `r, r + 1, ...` (mod `n`) in a scratch buffer,
    /// doubling the count each round, then rotates them into place.
    fn allgather_bruck<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        let (n, r) = (self.size(), self.rank());
        let blk = send.len();
        // Every round is taken even after a disagreement on counts (see `go_on`).
        let mut first = Ok(());
        with_scratch(n * blk, |tmp: &mut [T]| {
            tmp[..blk].copy_from_slice(send);
            for (d, cnt) in bruck_rounds(n) {
                let to = (r + n - d) % n;
                let from = (r + d) % n;
                let (sb, rb) = tmp.split_at_mut(d * blk);
                let got = self.c_sendrecv(
                    "allgather",
                    &sb[..cnt * blk],
                    to,
                    &mut rb[..cnt * blk],
                    from,
                    tag::ALLGATHER,
                );
                go_on(&mut first, got)?;
            }
            let split = (n - r) * blk;
            recv[r * blk..].copy_from_slice(&tmp[..split]);
            recv[..r * blk].copy_from_slice(&tmp[split..]);
            std::mem::replace(&mut first, Ok(()))
        })
    }

    /// Collects `send` of every rank `i` into `recv[displs[i]..displs[i] + counts[i]]`
    /// of every rank (`MPI_Allgatherv`), around a ring.
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `counts`/`displs` do not have one
    /// entry per rank, reach past `recv`, if `send` is not `counts[rank]`
    /// long, or if the blocks of two neighbouring ranks overlap.
    ///
    /// ```
    /// dos::testing::run_threads(3, |world| {
    ///     let mine = vec![world.rank() as i8; world.rank()];
    ///     let mut all = [-1i8; 4];
    ///     world.allgatherv(&mine, &mut all, &[0, 1, 2], &[0, 3, 0]).unwrap();
    ///     assert_eq!(all, [2, 2, -1, 1]);
    /// });
    /// ```
    pub fn allgatherv<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<()> {
        const OP: &str = "allgatherv";
        let (n, r) = (self.size(), self.rank());
        check_layout(OP, "recv", counts, displs, n, recv.len())?;
        check_len(OP, "send", send.len(), counts[r])?;
        // The ring sends block `i` while receiving block `i - 1`.
        for i in 0..n {
            let j = (i + n - 1) % n;
            let (a, b) = (
                displs[i]..displs[i] + counts[i],
                displs[j]..displs[j] + counts[j],
            );
            if i != j && !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end {
                return Err(bad_buffer(
                    OP,
                    format!("blocks of ranks {j} and {i} overlap in recv"),
                ));
            }
        }
        recv[displs[r]..displs[r] + counts[r]].copy_from_slice(send);
        if n == 1 {
            return Ok(());
        }
        self.ring_allgather(
            OP,
            recv,
            |i| displs[i]..displs[i] + counts[i],
            r,
            |i| i,
            tag::ALLGATHER,
        )
    }
}
