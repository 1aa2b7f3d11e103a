//! In-place forms of the collectives (`MPI_IN_PLACE`): one buffer holds a
//! rank's contribution and receives its result.
//!
//! | method | the buffer holds before | and after |
//! | --- | --- | --- |
//! | `allreduce_in_place` (in `reduce.rs`) | the contribution | the reduction |
//! | `reduce_in_place` | the contribution | at the root the reduction; elsewhere unchanged |
//! | `gather_in_place` | at the root `size()` blocks, its own at `root`; elsewhere the block sent | at the root every rank's block |
//! | `scatter_in_place` | at the root `size()` blocks; elsewhere room for one | the rank's block (the root's own stays where it is) |
//! | `allgather_in_place` | `size()` blocks, the rank's own at `rank` | every rank's block |
//! | `alltoall_in_place` | `size()` blocks, block `i` for rank `i` | block `i` from rank `i` |
//! | `reduce_scatter_in_place`, `reduce_scatter_block_in_place` | the whole vector | the rank's block of the reduction at the start |
//! | `scan_in_place`, `exscan_in_place` | the contribution | the prefix (rank 0's unchanged by `exscan`) |
//!
//! They give the same results as the forms with two buffers, on which they
//! are built: the part of the buffer that is sent is copied once into
//! scratch first (the caller needs no second buffer; the copy costs one
//! pass over what the rank sends).
//!
//! ```
//! dos::testing::run_threads(3, |world| {
//!     let r = world.rank() as u32;
//!     // Every rank's block, filled in around its own.
//!     let mut all = [0u32; 3];
//!     all[r as usize] = r * 10;
//!     world.allgather_in_place(&mut all).unwrap();
//!     assert_eq!(all, [0, 10, 20]);
//!     // Prefix sums in place.
//!     let mut x = [r + 1];
//!     world.scan_in_place(&mut x, dos::op::Sum).unwrap();
//!     assert_eq!(x[0], (r + 1) * (r + 2) / 2);
//! });
//! ```

use bytemuck::Pod;

use super::{bad_buffer, check_len};
use crate::op::Op;
use crate::{Comm, Result};

impl Comm {
    /// `buf.len() / size()`, or an error if `buf` is not `size()` equal blocks.
    fn blocks_of(&self, op: &'static str, len: usize) -> Result<usize> {
        let n = self.size();
        if len % n != 0 {
            return Err(bad_buffer(
                op,
                format!("{len} elements do not split into {n} blocks"),
            ));
        }
        Ok(len / n)
    }

    /// [`Comm::reduce`] with `buf` as every rank's contribution and, at the
    /// root, as the result (`MPI_Reduce` with `MPI_IN_PLACE` at the root);
    /// other ranks' `buf` is not changed.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`.
    ///
    /// ```
    /// dos::testing::run_threads(3, |world| {
    ///     let mut x = [world.rank() as u64 + 1];
    ///     world.reduce_in_place(&mut x, dos::op::Prod, 0).unwrap();
    ///     if world.rank() == 0 {
    ///         assert_eq!(x, [6]);
    ///     }
    /// });
    /// ```
    pub fn reduce_in_place<T, O>(&self, buf: &mut [T], op: O, root: usize) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        self.check_root(root)?;
        if self.rank() == root {
            let mine = buf.to_vec();
            self.reduce(&mine, buf, op, root)
        } else {
            self.reduce(buf, &mut [], op, root)
        }
    }

    /// [`Comm::gather`] with the root's own block already in place: at the
    /// root `buf` holds `size()` blocks and block `root` is its contribution;
    /// elsewhere `buf` is the block sent (`MPI_Gather` with `MPI_IN_PLACE`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`,
    /// [`crate::Error::InvalidBuffer`] if the root's `buf` is not `size()` blocks.
    pub fn gather_in_place<T: Pod>(&self, buf: &mut [T], root: usize) -> Result<()> {
        self.check_root(root)?;
        if self.rank() == root {
            let blk = self.blocks_of("gather", buf.len())?;
            let mine = buf[root * blk..(root + 1) * blk].to_vec();
            self.gather(&mine, buf, root)
        } else {
            self.gather(buf, &mut [], root)
        }
    }

    /// [`Comm::scatter`] with the root's block left in place: at the root
    /// `buf` holds `size()` blocks (block `root` stays); elsewhere it
    /// receives the rank's block (`MPI_Scatter` with `MPI_IN_PLACE`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`,
    /// [`crate::Error::InvalidBuffer`] if the root's `buf` is not `size()` blocks.
    pub fn scatter_in_place<T: Pod>(&self, buf: &mut [T], root: usize) -> Result<()> {
        self.check_root(root)?;
        if self.rank() == root {
            let blk = self.blocks_of("scatter", buf.len())?;
            let all = buf.to_vec();
            self.scatter(&all, &mut buf[root * blk..(root + 1) * blk], root)
        } else {
            self.scatter(&[], buf, root)
        }
    }

    /// [`Comm::allgather`] with each rank's block already in place: `buf`
    /// holds `size()` blocks, block `rank` being the contribution
    /// (`MPI_Allgather` with `MPI_IN_PLACE`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `buf` is not `size()` blocks.
    pub fn allgather_in_place<T: Pod>(&self, buf: &mut [T]) -> Result<()> {
        let blk = self.blocks_of("allgather", buf.len())?;
        let r = self.rank();
        let mine = buf[r * blk..(r + 1) * blk].to_vec();
        self.allgather(&mine, buf)
    }

    /// [`Comm::alltoall`] in one buffer: block `i` of `buf` goes to rank `i`
    /// and is replaced by rank `i`'s block for this rank (`MPI_Alltoall`
    /// with `MPI_IN_PLACE`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `buf` is not `size()` blocks.
    ///
    /// ```
    /// dos::testing::run_threads(2, |world| {
    ///     let r = world.rank() as u8;
    ///     let mut b = [r * 10, r * 10 + 1];
    ///     world.alltoall_in_place(&mut b).unwrap();
    ///     assert_eq!(b, [r, 10 + r]);
    /// });
    /// ```
    pub fn alltoall_in_place<T: Pod>(&self, buf: &mut [T]) -> Result<()> {
        self.blocks_of("alltoall", buf.len())?;
        let send = buf.to_vec();
        self.alltoall(&send, buf)
    }

    /// [`Comm::reduce_scatter`] in one buffer: `buf` holds the whole vector
    /// (`counts.iter().sum()` elements); the rank's block of the reduction
    /// lands at its start, `buf[..counts[rank]]` (`MPI_Reduce_scatter` with
    /// `MPI_IN_PLACE`); the rest is left as it was.
    ///
    /// # Errors
    /// As [`Comm::reduce_scatter`].
    pub fn reduce_scatter_in_place<T, O>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        op: O,
    ) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        const OP: &str = "reduce_scatter";
        check_len(OP, "counts", counts.len(), self.size())?;
        let mine = counts[self.rank()];
        if mine > buf.len() {
            return Err(bad_buffer(
                OP,
                format!(
                    "block of {mine} elements exceeds the buffer of {}",
                    buf.len()
                ),
            ));
        }
        let send = buf.to_vec();
        self.reduce_scatter(&send, &mut buf[..mine], counts, op)
    }

    /// [`Comm::reduce_scatter_block`] in one buffer: `buf` holds `size()`
    /// blocks; the rank's block of the reduction lands in the first one
    /// (`MPI_Reduce_scatter_block` with `MPI_IN_PLACE`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `buf` is not `size()` blocks.
    pub fn reduce_scatter_block_in_place<T, O>(&self, buf: &mut [T], op: O) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        let blk = self.blocks_of("reduce_scatter_block", buf.len())?;
        let send = buf.to_vec();
        self.reduce_scatter_block(&send, &mut buf[..blk], op)
    }

    /// [`Comm::scan`] with `buf` as contribution and result (`MPI_Scan` with
    /// `MPI_IN_PLACE`).
    pub fn scan_in_place<T, O>(&self, buf: &mut [T], op: O) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        let send = buf.to_vec();
        self.scan(&send, buf, op)
    }

    /// [`Comm::exscan`] with `buf` as contribution and result (`MPI_Exscan`
    /// with `MPI_IN_PLACE`); rank 0's `buf` keeps its contribution.
    pub fn exscan_in_place<T, O>(&self, buf: &mut [T], op: O) -> Result<()>
    where
        T: Pod + Send + Sync,
        O: Op<T>,
    {
        let send = buf.to_vec();
        self.exscan(&send, buf, op)
    }
}
