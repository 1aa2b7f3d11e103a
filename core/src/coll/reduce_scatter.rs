//! `reduce_scatter(_block)`: allreduce-and-keep for small vectors, pairwise
//! exchange with rank-ordered accumulation for large ones.

use std::mem::size_of_val;
use std::ops::Range;

use bytemuck::Pod;

use crate::coll::reduce::Mine;
use crate::coll::{
    bad_buffer, check_len, combine, mul, tag, with_scratch, REDUCE_SCATTER_LARGE_BYTES,
};
use crate::op::Op;
use crate::{Comm, Result};

/// How the send vector is cut into one block per rank.
#[derive(Debug, Clone, Copy)]
enum Blocks<'a> {
    /// Every block has this many elements.
    Uniform(usize),
    /// Block `i` has `counts[i]` elements; blocks are consecutive.
    Var(&'a [usize]),
}

impl Blocks<'_> {
    fn start(&self, i: usize) -> usize {
        match *self {
            Blocks::Uniform(c) => i * c,
            Blocks::Var(counts) => counts[..i].iter().sum(),
        }
    }
}

impl Comm {
    /// Reduces `send` of every rank element-wise with `op`, in rank order,
    /// and scatters the result: rank `i` gets the `counts[i]` elements
    /// after the first `counts[0] + ... + counts[i - 1]` (`MPI_Reduce_scatter`).
    ///
    /// `send` holds `counts[0] + ... + counts[n - 1]` elements on every rank,
    /// `recv` holds `counts[rank]`. Vectors below
    /// 16 KiB are all-reduced whole (recursive
    /// doubling) and each rank keeps its block; larger ones are exchanged
    /// pairwise, each rank receiving only its block from every other rank.
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `counts` does not have one entry
    /// per rank or a buffer has the wrong length.
    ///
    /// ```
    /// dos::testing::run_threads(2, |world| {
    ///     let send = [1u32, 2, 3];
    ///     let mut mine = vec![0u32; if world.rank() == 0 { 1 } else { 2 }];
    ///     world.reduce_scatter(&send, &mut mine, &[1, 2], dos::op::Sum).unwrap();
    ///     let want: &[u32] = if world.rank() == 0 { &[2] } else { &[4, 6] };
    ///     assert_eq!(mine, want);
    /// });
    /// ```
    pub fn reduce_scatter<T, O>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        op: O,
    ) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        const OP: &str = "reduce_scatter";
        let n = self.size();
        if counts.len() != n {
            return Err(bad_buffer(
                OP,
                format!("{} counts for {n} ranks", counts.len()),
            ));
        }
        let total = counts
            .iter()
            .try_fold(0usize, |a, &c| a.checked_add(c))
            .ok_or_else(|| bad_buffer(OP, "counts overflow".to_string()))?;
        check_len(OP, "send", send.len(), total)?;
        check_len(OP, "recv", recv.len(), counts[self.rank()])?;
        self.reduce_scatter_impl(OP, &op, send, recv, Blocks::Var(counts))
    }

    /// [`Comm::reduce_scatter`] with blocks of `recv.len()` elements for
    /// every rank (`MPI_Reduce_scatter_block`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] unless `send` holds `size() * recv.len()` elements.
    ///
    /// ```
    /// dos::testing::run_threads(3, |world| {
    ///     let send = [1u8, 2, 3];
    ///     let mut mine = [0u8];
    ///     world.reduce_scatter_block(&send, &mut mine, dos::op::Sum).unwrap();
    ///     assert_eq!(mine[0], 3 * (world.rank() as u8 + 1));
    /// });
    /// ```
    pub fn reduce_scatter_block<T, O>(&self, send: &[T], recv: &mut [T], op: O) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        const OP: &str = "reduce_scatter_block";
        check_len(OP, "send", send.len(), mul(OP, self.size(), recv.len())?)?;
        self.reduce_scatter_impl(OP, &op, send, recv, Blocks::Uniform(recv.len()))
    }

    fn reduce_scatter_impl<T, O>(
        &self,
        name: &'static str,
        op: &O,
        send: &[T],
        recv: &mut [T],
        blocks: Blocks<'_>,
    ) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        let (n, r) = (self.size(), self.rank());
        let mine = blocks.start(r)..blocks.start(r) + recv.len();
        if n == 1 {
            recv.copy_from_slice(&send[mine]);
            return Ok(());
        }
        if size_of_val(send) == 0 {
            return Ok(());
        }
        if size_of_val(send) < REDUCE_SCATTER_LARGE_BYTES {
            return with_scratch(send.len(), |all: &mut [T]| {
                self.allreduce_into(op, Mine::Send(send), all)?;
                recv.copy_from_slice(&all[mine]);
                Ok(())
            });
        }
        let starts: Vec<usize> = match blocks {
            Blocks::Uniform(_) => Vec::new(),
            Blocks::Var(counts) => std::iter::once(0)
                .chain(counts.iter().scan(0, |a, &c| {
                    *a += c;
                    Some(*a)
                }))
                .collect(),
        };
        let block = |i: usize| -> Range<usize> {
            match blocks {
                Blocks::Uniform(c) => i * c..(i + 1) * c,
                Blocks::Var(_) => starts[i]..starts[i + 1],
            }
        };
        self.reduce_scatter_pairwise(name, op, send, recv, block)
    }

    /// Pairwise exchange: in step `s` send block `rank + s` to its owner and
    /// receive this rank's block from `rank - s`. Contributions arrive from
    /// `rank - 1` down to 0 (combined on the left of `recv`), then from
    /// `n - 1` down to `rank + 1` (combined on the left of a second
    /// accumulator, appended at the end): rank order for any operation.
    fn reduce_scatter_pairwise<T, O>(
        &self,
        name: &'static str,
        op: &O,
        send: &[T],
        recv: &mut [T],
        block: impl Fn(usize) -> Range<usize>,
    ) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        let (n, r) = (self.size(), self.rank());
        let par = self.par_bytes();
        let cnt = recv.len();
        recv.copy_from_slice(&send[block(r)]);
        let high_len = if r + 1 < n { cnt } else { 0 };
        with_scratch(cnt, |tmp: &mut [T]| {
            with_scratch(high_len, |high: &mut [T]| {
                for s in 1..n {
                    let to = (r + s) % n;
                    let from = (r + n - s) % n;
                    let out = &send[block(to)];
                    if from < r {
                        self.c_sendrecv(name, out, to, tmp, from, tag::REDUCE_SCATTER)?;
                        combine(op, recv, tmp, true, par);
                    } else if from == n - 1 {
                        self.c_sendrecv(name, out, to, high, from, tag::REDUCE_SCATTER)?;
                    } else {
                        self.c_sendrecv(name, out, to, tmp, from, tag::REDUCE_SCATTER)?;
                        combine(op, high, tmp, true, par);
                    }
                }
                if r + 1 < n {
                    combine(op, recv, high, false, par);
                }
                Ok(())
            })
        })
    }
}
