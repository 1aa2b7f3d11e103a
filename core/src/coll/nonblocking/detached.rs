//! Nonblocking collectives on buffers their caller owns, without a scope:
//! for `dos::io`'s nonblocking collective I/O, whose operations own their
//! buffers and outlive the call that starts them (see `io/nbcoll.rs`). Each
//! returns the engine request; the caller keeps the buffers until it has
//! completed and been taken, or has been abandoned.

use super::plan::{plan_allgatherv, plan_allreduce, plan_alltoallv, plan_bcast};
use super::run::NoOp;
use crate::engine::ReqId;
use crate::op::Max;
use crate::{Comm, Result};

impl Comm {
    /// `MPI_Iallgatherv` of `send` into `recv` (blocks `counts`/`displs`,
    /// disjoint, inside `recv`; `send.len() == counts[rank]`).
    ///
    /// # Safety
    /// As [`Comm::start_detached`]: both buffers stay alive and `recv`
    /// untouched until the request is taken or abandoned.
    pub(crate) unsafe fn iallgatherv_detached(
        &self,
        send: &[u64],
        recv: &mut [u64],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<ReqId> {
        let plan = plan_allgatherv(self.rank(), self.size(), (counts, displs));
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        // SAFETY: this function's contract.
        unsafe { self.start_detached("iallgatherv", plan, send.as_ptr(), send.len(), p, l, NoOp) }
    }

    /// `MPI_Ialltoallv` of bytes (layouts as [`Comm::ialltoallv`], checked
    /// by the caller).
    ///
    /// # Safety
    /// As [`Comm::iallgatherv_detached`].
    pub(crate) unsafe fn ialltoallv_detached(
        &self,
        send: &[u8],
        s: (&[usize], &[usize]),
        recv: &mut [u8],
        r: (&[usize], &[usize]),
    ) -> Result<ReqId> {
        let plan = plan_alltoallv(self.rank(), self.size(), s, r);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        // SAFETY: this function's contract.
        unsafe { self.start_detached("ialltoallv", plan, send.as_ptr(), send.len(), p, l, NoOp) }
    }

    /// `MPI_Iallreduce` of `send` with [`Max`] into `recv` (same length).
    ///
    /// # Safety
    /// As [`Comm::iallgatherv_detached`].
    pub(crate) unsafe fn iallreduce_max_detached(
        &self,
        send: &[u64],
        recv: &mut [u64],
    ) -> Result<ReqId> {
        let plan = plan_allreduce(self.rank(), self.size(), send.len(), false);
        let (p, l) = (recv.as_mut_ptr(), recv.len());
        // SAFETY: this function's contract.
        unsafe { self.start_detached("iallreduce", plan, send.as_ptr(), send.len(), p, l, Max) }
    }

    /// `MPI_Ibcast` of `buf` from `root` (a rank of the communicator).
    ///
    /// # Safety
    /// As [`Comm::iallgatherv_detached`].
    pub(crate) unsafe fn ibcast_detached(&self, buf: &mut [u8], root: usize) -> Result<ReqId> {
        self.check_root(root)?;
        let plan = plan_bcast(self.rank(), self.size(), root, buf.len());
        let (p, l) = (buf.as_mut_ptr(), buf.len());
        // SAFETY: this function's contract.
        unsafe { self.start_detached("ibcast", plan, std::ptr::null(), 0, p, l, NoOp) }
    }
}
