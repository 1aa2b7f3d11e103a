//! The nonblocking collectives of a communicator (`MPI_Ibarrier`, ...): each
//! checks its arguments, plans its schedule ([`super::plan`]) and starts it.

use bytemuck::Pod;

use super::super::{bad_buffer, check_layout, check_len, mul};
use super::plan::*;
use super::run::NoOp;
use crate::op::Op;
use crate::request::{Request, Scope};
use crate::{Comm, Result};

impl Comm {
    /// Starts a barrier (`MPI_Ibarrier`): the request completes once every
    /// rank of the communicator has started it.
    ///
    /// ```
    /// dos::testing::run_threads(3, |world| {
    ///     dos::scope(|s| {
    ///         let b = world.ibarrier(s).unwrap();
    ///         // ... work that does not depend on the others ...
    ///         b.wait().unwrap();
    ///     });
    /// });
    /// ```
    pub fn ibarrier<'s>(&self, s: &'s Scope<'s, '_>) -> Result<Request<'s>> {
        let plan = plan_barrier(self.rank(), self.size());
        self.start::<u8, _>(s, "ibarrier", plan, &[], std::ptr::null_mut(), 0, NoOp)
    }

    /// Starts broadcasting `buf` of rank `root` into `buf` of every rank
    /// (`MPI_Ibcast`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] if `root` is not a rank of the communicator.
    ///
    /// ```
    /// dos::testing::run_threads(3, |world| {
    ///     let mut x = if world.rank() == 2 { [5u8, 6] } else { [0; 2] };
    ///     dos::scope(|s| world.ibcast(s, &mut x, 2).unwrap().wait().unwrap());
    ///     assert_eq!(x, [5, 6]);
    /// });
    /// ```
    pub fn ibcast<'s, T: Pod + Send + Sync>(
        &self,
        s: &'s Scope<'s, '_>,
        buf: &'s mut [T],
        root: usize,
    ) -> Result<Request<'s>> {
        self.check_root(root)?;
        let plan = plan_bcast(self.rank(), self.size(), root, buf.len());
        let (p, l) = (buf.as_mut_ptr(), buf.len());
        self.start(s, "ibcast", plan, &[], p, l, NoOp)
    }

    /// Starts reducing `send` of every rank with `op`, in rank order, into
    /// `recv` of rank `root` (`MPI_Ireduce`); `recv` may be empty elsewhere
    /// and is not touched there.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`,
    /// [`crate::Error::InvalidBuffer`] if the root's `recv` differs from `send` in length.
    ///
    /// ```
    /// dos::testing::run_threads(4, |world| {
    ///     let mut max = [0i32];
    ///     let mine = [world.rank() as i32 * 3 - 4];
    ///     dos::scope(|s| {
    ///         let q = world.ireduce(s, &mine, &mut max, dos::op::Max, 1).unwrap();
    ///         q.wait().unwrap();
    ///     });
    ///     if world.rank() == 1 {
    ///         assert_eq!(max, [5]);
    ///     }
    /// });
    /// ```
    pub fn ireduce<'s, T, O>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
        root: usize,
    ) -> Result<Request<'s>>
    where
        T: Pod + Send + Sync,
        O: Op<T> + 's,
    {
        self.check_root(root)?;
        if self.rank() == root {
            check_len("ireduce", "recv", recv.len(), send.len())?;
        }
        let plan = plan_reduce(self.rank(), self.size(), root, send.len(), false);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, "ireduce", plan, send, p, l, op)
    }

    /// [`Comm::ireduce`] with `buf` as the contribution on every rank and,
    /// at the root, also as the result (`MPI_Ireduce` with `MPI_IN_PLACE`);
    /// other ranks' `buf` is not changed.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`.
    pub fn ireduce_in_place<'s, T, O>(
        &self,
        s: &'s Scope<'s, '_>,
        buf: &'s mut [T],
        op: O,
        root: usize,
    ) -> Result<Request<'s>>
    where
        T: Pod + Send + Sync,
        O: Op<T> + 's,
    {
        self.check_root(root)?;
        let plan = plan_reduce(self.rank(), self.size(), root, buf.len(), true);
        if self.rank() == root {
            let (p, l) = (buf.as_mut_ptr(), buf.len());
            self.start(s, "ireduce", plan, &[], p, l, op)
        } else {
            self.start(s, "ireduce", plan, buf, std::ptr::null_mut(), 0, op)
        }
    }

    /// Starts reducing `send` of every rank with `op`, in rank order, into
    /// `recv` of every rank (`MPI_Iallreduce`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `recv` and `send` differ in length.
    ///
    /// ```
    /// dos::testing::run_threads(3, |world| {
    ///     let mut sum = [0u64; 2];
    ///     let r = world.rank() as u64;
    ///     let mine = [r, 10 * r];
    ///     dos::scope(|s| {
    ///         let q = world.iallreduce(s, &mine, &mut sum, dos::op::Sum).unwrap();
    ///         q.wait().unwrap();
    ///     });
    ///     assert_eq!(sum, [3, 30]);
    /// });
    /// ```
    pub fn iallreduce<'s, T, O>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
    ) -> Result<Request<'s>>
    where
        T: Pod + Send + Sync,
        O: Op<T> + 's,
    {
        check_len("iallreduce", "recv", recv.len(), send.len())?;
        let plan = plan_allreduce(self.rank(), self.size(), send.len(), false);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, "iallreduce", plan, send, p, l, op)
    }

    /// [`Comm::iallreduce`] with `buf` as both contribution and result
    /// (`MPI_Iallreduce` with `MPI_IN_PLACE`).
    pub fn iallreduce_in_place<'s, T, O>(
        &self,
        s: &'s Scope<'s, '_>,
        buf: &'s mut [T],
        op: O,
    ) -> Result<Request<'s>>
    where
        T: Pod + Send + Sync,
        O: Op<T> + 's,
    {
        let plan = plan_allreduce(self.rank(), self.size(), buf.len(), true);
        let (p, l) = (buf.as_mut_ptr(), buf.len());
        self.start(s, "iallreduce", plan, &[], p, l, op)
    }

    /// Starts reducing `send` (`size() * recv.len()` elements) of every rank
    /// with `op` and leaving block `rank` of the result in `recv`
    /// (`MPI_Ireduce_scatter_block`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `send` is not `size()` blocks of `recv.len()`.
    pub fn ireduce_scatter_block<'s, T, O>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
    ) -> Result<Request<'s>>
    where
        T: Pod + Send + Sync,
        O: Op<T> + 's,
    {
        const OP: &str = "ireduce_scatter_block";
        let (n, blk) = (self.size(), recv.len());
        check_len(OP, "send", send.len(), mul(OP, n, blk)?)?;
        let plan = plan_reduce_scatter_block(self.rank(), n, blk);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, op)
    }

    /// Starts reducing `send` (`counts.iter().sum()` elements) of every
    /// rank with `op` and leaving rank `i`'s block, `counts[i]` elements
    /// after the blocks of the ranks before it, in `recv` of rank `i`
    /// (`MPI_Ireduce_scatter`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `counts` does not have one entry
    /// per rank or a buffer has the wrong length.
    ///
    /// ```
    /// dos::testing::run_threads(2, |world| {
    ///     let send = [1u32, 2, 3];
    ///     let mut mine = vec![0u32; if world.rank() == 0 { 1 } else { 2 }];
    ///     dos::scope(|s| {
    ///         let q = world.ireduce_scatter(s, &send, &mut mine, &[1, 2], dos::op::Sum);
    ///         q.unwrap().wait().unwrap();
    ///     });
    ///     let want: &[u32] = if world.rank() == 0 { &[2] } else { &[4, 6] };
    ///     assert_eq!(mine, want);
    /// });
    /// ```
    pub fn ireduce_scatter<'s, T, O>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        counts: &[usize],
        op: O,
    ) -> Result<Request<'s>>
    where
        T: Pod + Send + Sync,
        O: Op<T> + 's,
    {
        const OP: &str = "ireduce_scatter";
        let (n, r) = (self.size(), self.rank());
        check_len(OP, "counts", counts.len(), n)?;
        let total = counts
            .iter()
            .try_fold(0usize, |a, &c| a.checked_add(c))
            .ok_or_else(|| bad_buffer(OP, "counts overflow".to_string()))?;
        check_len(OP, "send", send.len(), total)?;
        check_len(OP, "recv", recv.len(), counts[r])?;
        let start = counts[..r].iter().sum();
        let plan = plan_reduce_scatter(r, n, total, start, counts[r]);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, op)
    }

    /// Starts collecting `send` of every rank, in rank order, into `recv` of
    /// rank `root` (`MPI_Igather`); `recv` holds `size() * send.len()`
    /// elements at the root and may be empty elsewhere.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`,
    /// [`crate::Error::InvalidBuffer`] if the root's `recv` has the wrong length.
    pub fn igather<'s, T: Pod + Send + Sync>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        root: usize,
    ) -> Result<Request<'s>> {
        const OP: &str = "igather";
        self.check_root(root)?;
        let (n, r, blk) = (self.size(), self.rank(), send.len());
        if r == root {
            check_len(OP, "recv", recv.len(), mul(OP, n, blk)?)?;
        }
        let plan = plan_gather(r, n, root, blk, false);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, NoOp)
    }

    /// Starts sending block `i` of `send` (`size() * recv.len()` elements,
    /// significant at the root only) of rank `root` into `recv` of rank `i`
    /// (`MPI_Iscatter`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`,
    /// [`crate::Error::InvalidBuffer`] if the root's `send` has the wrong length.
    pub fn iscatter<'s, T: Pod + Send + Sync>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        root: usize,
    ) -> Result<Request<'s>> {
        const OP: &str = "iscatter";
        self.check_root(root)?;
        let (n, r, blk) = (self.size(), self.rank(), recv.len());
        if r == root {
            check_len(OP, "send", send.len(), mul(OP, n, blk)?)?;
        }
        let plan = plan_scatter(r, n, root, blk, false);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, NoOp)
    }

    /// Starts collecting `send` of every rank, in rank order, into `recv`
    /// (`size() * send.len()` elements) of every rank (`MPI_Iallgather`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `recv` has the wrong length.
    pub fn iallgather<'s, T: Pod + Send + Sync>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
    ) -> Result<Request<'s>> {
        const OP: &str = "iallgather";
        let (n, blk) = (self.size(), send.len());
        check_len(OP, "recv", recv.len(), mul(OP, n, blk)?)?;
        let plan = plan_allgather(self.rank(), n, blk);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, NoOp)
    }

    /// Starts sending block `i` of `send` to rank `i`, which stores it as
    /// block `rank` of its `recv` (`MPI_Ialltoall`); both hold `size()`
    /// blocks of equal length.
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if the lengths differ or are not a
    /// multiple of the communicator size.
    pub fn ialltoall<'s, T: Pod + Send + Sync>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
    ) -> Result<Request<'s>> {
        const OP: &str = "ialltoall";
        let n = self.size();
        check_len(OP, "recv", recv.len(), send.len())?;
        if send.len() % n != 0 {
            return Err(bad_buffer(
                OP,
                format!("{} elements do not split into {n} blocks", send.len()),
            ));
        }
        let plan = plan_alltoall(self.rank(), n, send.len() / n);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, NoOp)
    }

    /// Starts collecting `send` of every rank `i` into
    /// `recv[displs[i]..displs[i] + counts[i]]` of rank `root`
    /// (`MPI_Igatherv`); `counts`, `displs` and `recv` are significant only
    /// at the root, where the blocks must not overlap.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`;
    /// [`crate::Error::InvalidBuffer`] at the root if the layout does not
    /// have one entry per rank, reaches past `recv`, overlaps, or if `send`
    /// is not `counts[root]` long.
    pub fn igatherv<'s, T: Pod + Send + Sync>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        counts: &[usize],
        displs: &[usize],
        root: usize,
    ) -> Result<Request<'s>> {
        const OP: &str = "igatherv";
        self.check_root(root)?;
        let (n, r) = (self.size(), self.rank());
        if r == root {
            check_layout(OP, "recv", counts, displs, n, recv.len())?;
            check_len(OP, "send", send.len(), counts[r])?;
            check_disjoint(OP, (counts, displs))?;
        }
        let plan = plan_gatherv(r, n, root, send.len(), (counts, displs));
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, NoOp)
    }

    /// Starts sending `send[displs[i]..displs[i] + counts[i]]` of rank `root`
    /// into `recv` of every rank `i` (`MPI_Iscatterv`); `send`, `counts` and
    /// `displs` are significant only at the root.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRank`] for a bad `root`;
    /// [`crate::Error::InvalidBuffer`] at the root if the layout does not
    /// have one entry per rank or reaches past `send`, or if `recv` is not
    /// `counts[root]` long.
    pub fn iscatterv<'s, T: Pod + Send + Sync>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        counts: &[usize],
        displs: &[usize],
        recv: &'s mut [T],
        root: usize,
    ) -> Result<Request<'s>> {
        const OP: &str = "iscatterv";
        self.check_root(root)?;
        let (n, r) = (self.size(), self.rank());
        if r == root {
            check_layout(OP, "send", counts, displs, n, send.len())?;
            check_len(OP, "recv", recv.len(), counts[r])?;
        }
        let plan = plan_scatterv(r, n, root, recv.len(), (counts, displs));
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, NoOp)
    }

    /// Starts collecting `send` of every rank `i` into
    /// `recv[displs[i]..displs[i] + counts[i]]` of every rank
    /// (`MPI_Iallgatherv`); the blocks must not overlap.
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if the layout does not have one entry
    /// per rank, reaches past `recv` or overlaps, or if `send` is not
    /// `counts[rank]` long.
    pub fn iallgatherv<'s, T: Pod + Send + Sync>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<Request<'s>> {
        const OP: &str = "iallgatherv";
        let (n, r) = (self.size(), self.rank());
        check_layout(OP, "recv", counts, displs, n, recv.len())?;
        check_len(OP, "send", send.len(), counts[r])?;
        check_disjoint(OP, (counts, displs))?;
        let plan = plan_allgatherv(r, n, (counts, displs));
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, NoOp)
    }

    /// Starts sending `send[sdispls[i]..sdispls[i] + scounts[i]]` to rank
    /// `i`, which stores it at `recv[rdispls[rank]..rdispls[rank] +
    /// rcounts[rank]]` (`MPI_Ialltoallv`); `rcounts[i]` must equal rank
    /// `i`'s `scounts[rank]`, and receive blocks must not overlap.
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if a count or displacement array does
    /// not have one entry per rank, a block reaches past its buffer, or
    /// receive blocks overlap.
    #[allow(clippy::too_many_arguments)]
    pub fn ialltoallv<'s, T: Pod + Send + Sync>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        scounts: &[usize],
        sdispls: &[usize],
        recv: &'s mut [T],
        rcounts: &[usize],
        rdispls: &[usize],
    ) -> Result<Request<'s>> {
        const OP: &str = "ialltoallv";
        let (n, r) = (self.size(), self.rank());
        check_layout(OP, "send", scounts, sdispls, n, send.len())?;
        check_layout(OP, "recv", rcounts, rdispls, n, recv.len())?;
        check_disjoint(OP, (rcounts, rdispls))?;
        if scounts[r] != rcounts[r] {
            return Err(bad_buffer(
                OP,
                format!(
                    "sends {} elements to itself but expects {}",
                    scounts[r], rcounts[r]
                ),
            ));
        }
        let plan = plan_alltoallv(r, n, (scounts, sdispls), (rcounts, rdispls));
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, OP, plan, send, p, l, NoOp)
    }

    /// Starts an inclusive prefix reduction (`MPI_Iscan`): rank `i` gets
    /// `send` of ranks `0..=i` combined with `op` in rank order.
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `recv` and `send` differ in length.
    pub fn iscan<'s, T, O>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
    ) -> Result<Request<'s>>
    where
        T: Pod + Send + Sync,
        O: Op<T> + 's,
    {
        check_len("iscan", "recv", recv.len(), send.len())?;
        let plan = plan_scan(self.rank(), self.size(), send.len(), true);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, "iscan", plan, send, p, l, op)
    }

    /// Starts an exclusive prefix reduction (`MPI_Iexscan`): rank `i > 0`
    /// gets `send` of ranks `0..i` combined in rank order; rank 0's `recv`
    /// is not touched.
    ///
    /// # Errors
    /// [`crate::Error::InvalidBuffer`] if `recv` and `send` differ in length.
    pub fn iexscan<'s, T, O>(
        &self,
        s: &'s Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
        op: O,
    ) -> Result<Request<'s>>
    where
        T: Pod + Send + Sync,
        O: Op<T> + 's,
    {
        check_len("iexscan", "recv", recv.len(), send.len())?;
        let plan = plan_scan(self.rank(), self.size(), send.len(), false);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        self.start(s, "iexscan", plan, send, p, l, op)
    }
}
