//! The blocking collectives, on dos's algorithms.
//!
//! Data movement (bcast, gather, scatter, allgather, alltoall and their
//! v-forms) moves bytes; reductions take the element type of the datatype
//! ([`crate::reduce`]). `MPI_IN_PLACE` is taken wherever the standard allows
//! it, through dos's in-place forms. Roots, counts, datatypes and
//! operations are checked before anything is sent, so a bad argument is an
//! error on the rank that gave it, never a crash. Each collective is one
//! core generic over the width of its counts, serving `MPI_X` and the
//! large-count `MPI_X_c` ([`crate::large`], [`coll_fn!`](crate::coll_fn)).

use std::ffi::{c_int, c_void};

use dos::Comm;

use crate::abi::{self, Handle};
use crate::datatype::{self, Elem, Layout};
use crate::error::{err, R};
use crate::large::{self, arr, Wide, C, D};
use crate::nbc::WBlocks;
use crate::ptr::{dst, in_place, src};
use crate::reduce::{self, cast, typed, with_mut, DynOp, Num};
use crate::state;
use crate::types::{Staged, VStaged};

/// `root` as a rank of `c`, or `MPI_ERR_ROOT` (blocking and nonblocking forms).
pub(crate) fn root_of(c: &Comm, root: c_int) -> R<usize> {
    if root >= 0 && (root as usize) < c.size() {
        Ok(root as usize)
    } else {
        Err(err(
            abi::ERR_ROOT,
            format!("invalid root {root} in a communicator of size {}", c.size()),
        ))
    }
}

/// Counts and displacements (in elements of `size` bytes) as bytes, checked:
/// the one argument check of every v-form, blocking ([`crate::coll`]) and
/// nonblocking ([`crate::nbc`]). A negative count is `MPI_ERR_COUNT`, a
/// negative displacement `MPI_ERR_ARG`, and a block whose byte length or end
/// does not fit in memory is an error, never an overflow. Returns the byte
/// counts, the byte displacements and the end of the furthest block.
///
/// # Safety
/// `counts`/`displs` valid for `n` values (or null: `MPI_ERR_ARG`).
pub(crate) unsafe fn layout<C: Wide, D: Wide>(
    counts: *const C,
    displs: *const D,
    n: usize,
    size: usize,
) -> R<(Vec<usize>, Vec<usize>, usize)> {
    // SAFETY: the caller's contract.
    let (c, d) = unsafe { (arr(counts, n, "counts")?, arr(displs, n, "displacements")?) };
    let mut cs = Vec::with_capacity(n);
    let mut ds = Vec::with_capacity(n);
    let mut end = 0usize;
    for i in 0..n {
        let ci = large::count(c[i])?;
        let di = large::displ(d[i])?;
        let (cb, db) = (
            ci.checked_mul(size)
                .ok_or_else(|| err(abi::ERR_COUNT, "a block overflows"))?,
            di.checked_mul(size)
                .ok_or_else(|| err(abi::ERR_ARG, "a displacement overflows"))?,
        );
        let e = db
            .checked_add(cb)
            .ok_or_else(|| err(abi::ERR_ARG, "a block ends beyond memory"))?;
        end = end.max(e);
        cs.push(cb);
        ds.push(db);
    }
    Ok((cs, ds, end))
}

mpi_fn! {
    /// Waits until every rank of `comm` has called it.
    fn MPI_Barrier / PMPI_Barrier(comm: Handle) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter::barrier(comm);
        }
        state::comm(comm)?.barrier()?;
        Ok(())
    }
}

coll_fn! {
    /// Copies `root`'s buffer to every rank.
    fn MPI_Bcast / PMPI_Bcast, MPI_Bcast_c / PMPI_Bcast_c = bcast_core(buffer: *mut c_void, count: C, datatype: Handle, root: c_int, comm: Handle) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter::bcast(buffer, count.narrow()?, datatype, root, comm);
        }
        let c = state::comm(comm)?;
        if datatype::is_derived(datatype) {
            let n = large::count(count)?;
            let root = root_of(&c, root)?;
            let mut s = Staged::new(buffer, n, datatype, c.rank() == root)?;
            c.bcast(s.bytes()?, root)?;
            return if c.rank() == root { Ok(()) } else { s.finish() };
        }
        let len = large::bytes(count, datatype)?;
        let root = root_of(&c, root)?;
        let b = dst(buffer, len)?;
        c.bcast(b, root)?;
        Ok(())
    }
}

coll_fn! {
    /// Gathers equal blocks at `root` in rank order.
    fn MPI_Gather / PMPI_Gather, MPI_Gather_c / PMPI_Gather_c = gather_core(
        sendbuf: *const c_void, sendcount: C, sendtype: Handle,
        recvbuf: *mut c_void, recvcount: C, recvtype: Handle,
        root: c_int, comm: Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter::gather(sendbuf, sendcount.narrow()?, sendtype, recvbuf, recvcount.narrow()?, recvtype, root, comm);
        }
        if datatype::is_derived(sendtype) || datatype::is_derived(recvtype) {
            return staged_gather(sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, Some(root), comm);
        }
        let c = state::comm(comm)?;
        let root = root_of(&c, root)?;
        let me = c.rank() == root;
        if me {
            let blk = large::bytes(recvcount, recvtype)?;
            let all = dst(recvbuf, blk * c.size())?;
            if in_place(sendbuf) {
                c.gather_in_place(all, root)?;
            } else {
                let s = src(sendbuf, large::bytes(sendcount, sendtype)?)?;
                check_block(s.len(), blk)?;
                c.gather(s, all, root)?;
            }
        } else {
            let s = src(sendbuf, large::bytes(sendcount, sendtype)?)?;
            c.gather(s, &mut [], root)?;
        }
        Ok(())
    }
}

/// A block sent must be as long as the block the receiver expects.
pub(crate) fn check_block(sent: usize, expected: usize) -> R<()> {
    if sent > expected {
        Err(err(
            abi::ERR_TRUNCATE,
            format!("a block of {sent} bytes where {expected} are expected"),
        ))
    } else if sent < expected {
        Err(err(
            abi::ERR_COUNT,
            format!("a block of {sent} bytes where {expected} are expected"),
        ))
    } else {
        Ok(())
    }
}

coll_fn! {
    /// Gathers blocks of varying sizes at `root`, each where its displacement says.
    fn MPI_Gatherv / PMPI_Gatherv, MPI_Gatherv_c / PMPI_Gatherv_c = gatherv_core(
        sendbuf: *const c_void, sendcount: C, sendtype: Handle,
        recvbuf: *mut c_void, recvcounts: *const C, displs: *const D, recvtype: Handle,
        root: c_int, comm: Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            let (mut k1, mut k2) = (Vec::new(), Vec::new());
            let n = if root == abi::ROOT { crate::inter::remote_size(comm)? } else { 0 };
            let (rc, rd) = (C::ints(recvcounts, n, &mut k1)?, D::ints(displs, n, &mut k2)?);
            return crate::inter::gatherv(sendbuf, sendcount.narrow()?, sendtype, recvbuf, Some(rc), 0, rd, recvtype, root, comm);
        }
        if datatype::is_derived(sendtype) || datatype::is_derived(recvtype) {
            return staged_gatherv(sendbuf, sendcount, sendtype, recvbuf, recvcounts, displs, recvtype, Some(root), comm);
        }
        let c = state::comm(comm)?;
        let root = root_of(&c, root)?;
        if c.rank() == root {
            let size = datatype::dense_size(recvtype)?;
            let (cs, ds, end) = layout(recvcounts, displs, c.size(), size)?;
            let all = dst(recvbuf, end)?;
            if in_place(sendbuf) {
                let mine = all[ds[root]..ds[root] + cs[root]].to_vec();
                c.gatherv(&mine, all, &cs, &ds, root)?;
            } else {
                let s = src(sendbuf, large::bytes(sendcount, sendtype)?)?;
                check_block(s.len(), cs[root])?;
                c.gatherv(s, all, &cs, &ds, root)?;
            }
        } else {
            let s = src(sendbuf, large::bytes(sendcount, sendtype)?)?;
            c.gatherv(s, &mut [], &[], &[], root)?;
        }
        Ok(())
    }
}

coll_fn! {
    /// Scatters equal blocks from `root` in rank order.
    fn MPI_Scatter / PMPI_Scatter, MPI_Scatter_c / PMPI_Scatter_c = scatter_core(
        sendbuf: *const c_void, sendcount: C, sendtype: Handle,
        recvbuf: *mut c_void, recvcount: C, recvtype: Handle,
        root: c_int, comm: Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter::scatter(sendbuf, sendcount.narrow()?, sendtype, recvbuf, recvcount.narrow()?, recvtype, root, comm);
        }
        if datatype::is_derived(sendtype) || datatype::is_derived(recvtype) {
            return staged_scatter(sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, root, comm);
        }
        let c = state::comm(comm)?;
        let root = root_of(&c, root)?;
        if c.rank() == root {
            let blk = large::bytes(sendcount, sendtype)?;
            if in_place(recvbuf) {
                let all = dst(sendbuf as *mut c_void, blk * c.size())?;
                c.scatter_in_place(all, root)?;
            } else {
                let all = src(sendbuf, blk * c.size())?;
                let r = dst(recvbuf, large::bytes(recvcount, recvtype)?)?;
                check_block(blk, r.len())?;
                c.scatter(all, r, root)?;
            }
        } else {
            let r = dst(recvbuf, large::bytes(recvcount, recvtype)?)?;
            c.scatter(&[], r, root)?;
        }
        Ok(())
    }
}

coll_fn! {
    /// Scatters blocks of varying sizes from `root`.
    fn MPI_Scatterv / PMPI_Scatterv, MPI_Scatterv_c / PMPI_Scatterv_c = scatterv_core(
        sendbuf: *const c_void, sendcounts: *const C, displs: *const D, sendtype: Handle,
        recvbuf: *mut c_void, recvcount: C, recvtype: Handle,
        root: c_int, comm: Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            let (mut k1, mut k2) = (Vec::new(), Vec::new());
            let n = if root == abi::ROOT { crate::inter::remote_size(comm)? } else { 0 };
            let (sc, sd) = (C::ints(sendcounts, n, &mut k1)?, D::ints(displs, n, &mut k2)?);
            return crate::inter::scatterv(sendbuf, Some(sc), 0, sd, sendtype, recvbuf, recvcount.narrow()?, recvtype, root, comm);
        }
        if datatype::is_derived(sendtype) || datatype::is_derived(recvtype) {
            return staged_scatterv(sendbuf, sendcounts, displs, sendtype, recvbuf, recvcount, recvtype, root, comm);
        }
        let c = state::comm(comm)?;
        let root = root_of(&c, root)?;
        if c.rank() == root {
            let size = datatype::dense_size(sendtype)?;
            let (cs, ds, end) = layout(sendcounts, displs, c.size(), size)?;
            let all = src(sendbuf, end)?;
            if in_place(recvbuf) {
                let mut mine = all[ds[root]..ds[root] + cs[root]].to_vec();
                c.scatterv(all, &cs, &ds, &mut mine, root)?;
            } else {
                let r = dst(recvbuf, large::bytes(recvcount, recvtype)?)?;
                check_block(cs[root], r.len())?;
                c.scatterv(all, &cs, &ds, r, root)?;
            }
        } else {
            let r = dst(recvbuf, large::bytes(recvcount, recvtype)?)?;
            c.scatterv(&[], &[], &[], r, root)?;
        }
        Ok(())
    }
}

coll_fn! {
    /// Every rank gets every rank's block, in rank order.
    fn MPI_Allgather / PMPI_Allgather, MPI_Allgather_c / PMPI_Allgather_c = allgather_core(
        sendbuf: *const c_void, sendcount: C, sendtype: Handle,
        recvbuf: *mut c_void, recvcount: C, recvtype: Handle,
        comm: Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter::allgatherv(sendbuf, sendcount.narrow()?, sendtype, recvbuf, recvcount.narrow()?, None, std::ptr::null(), recvtype, comm);
        }
        if datatype::is_derived(sendtype) || datatype::is_derived(recvtype) {
            return staged_gather(sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, None, comm);
        }
        let c = state::comm(comm)?;
        let blk = large::bytes(recvcount, recvtype)?;
        let all = dst(recvbuf, blk * c.size())?;
        if in_place(sendbuf) {
            c.allgather_in_place(all)?;
        } else {
            let s = src(sendbuf, large::bytes(sendcount, sendtype)?)?;
            check_block(s.len(), blk)?;
            c.allgather(s, all)?;
        }
        Ok(())
    }
}

coll_fn! {
    /// Every rank gets every rank's block, of varying sizes.
    fn MPI_Allgatherv / PMPI_Allgatherv, MPI_Allgatherv_c / PMPI_Allgatherv_c = allgatherv_core(
        sendbuf: *const c_void, sendcount: C, sendtype: Handle,
        recvbuf: *mut c_void, recvcounts: *const C, displs: *const D, recvtype: Handle,
        comm: Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            let (mut k1, mut k2) = (Vec::new(), Vec::new());
            let n = crate::inter::remote_size(comm)?;
            let (rc, rd) = (C::ints(recvcounts, n, &mut k1)?, D::ints(displs, n, &mut k2)?);
            return crate::inter::allgatherv(sendbuf, sendcount.narrow()?, sendtype, recvbuf, 0, Some(rc), rd, recvtype, comm);
        }
        if datatype::is_derived(sendtype) || datatype::is_derived(recvtype) {
            return staged_gatherv(sendbuf, sendcount, sendtype, recvbuf, recvcounts, displs, recvtype, None, comm);
        }
        let c = state::comm(comm)?;
        let size = datatype::dense_size(recvtype)?;
        let (cs, ds, end) = layout(recvcounts, displs, c.size(), size)?;
        let all = dst(recvbuf, end)?;
        let me = c.rank();
        if in_place(sendbuf) {
            let mine = all[ds[me]..ds[me] + cs[me]].to_vec();
            c.allgatherv(&mine, all, &cs, &ds)?;
        } else {
            let s = src(sendbuf, large::bytes(sendcount, sendtype)?)?;
            check_block(s.len(), cs[me])?;
            c.allgatherv(s, all, &cs, &ds)?;
        }
        Ok(())
    }
}

coll_fn! {
    /// Block `j` of rank `i` goes to block `i` of rank `j`.
    fn MPI_Alltoall / PMPI_Alltoall, MPI_Alltoall_c / PMPI_Alltoall_c = alltoall_core(
        sendbuf: *const c_void, sendcount: C, sendtype: Handle,
        recvbuf: *mut c_void, recvcount: C, recvtype: Handle,
        comm: Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter::alltoallv(sendbuf, sendcount.narrow()?, None, sendtype, recvbuf, recvcount.narrow()?, None, recvtype, comm);
        }
        if datatype::is_derived(sendtype) || datatype::is_derived(recvtype) {
            return staged_alltoall(sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, comm);
        }
        let c = state::comm(comm)?;
        let blk = large::bytes(recvcount, recvtype)?;
        let all = dst(recvbuf, blk * c.size())?;
        if in_place(sendbuf) {
            c.alltoall_in_place(all)?;
        } else {
            let sblk = large::bytes(sendcount, sendtype)?;
            check_block(sblk, blk)?;
            let s = src(sendbuf, sblk * c.size())?;
            c.alltoall(s, all)?;
        }
        Ok(())
    }
}

coll_fn! {
    /// `MPI_Alltoall` with blocks of varying sizes and places.
    fn MPI_Alltoallv / PMPI_Alltoallv, MPI_Alltoallv_c / PMPI_Alltoallv_c = alltoallv_core(
        sendbuf: *const c_void, sendcounts: *const C, sdispls: *const D, sendtype: Handle,
        recvbuf: *mut c_void, recvcounts: *const C, rdispls: *const D, recvtype: Handle,
        comm: Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            let mut k = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
            let n = crate::inter::remote_size(comm)?;
            let [k0, k1, k2, k3] = &mut k;
            let (sc, sd) = (C::ints(sendcounts, n, k0)?, D::ints(sdispls, n, k1)?);
            let (rc, rd) = (C::ints(recvcounts, n, k2)?, D::ints(rdispls, n, k3)?);
            return crate::inter::alltoallv(sendbuf, 0, Some((sc, sd)), sendtype, recvbuf, 0, Some((rc, rd)), recvtype, comm);
        }
        if datatype::is_derived(sendtype) || datatype::is_derived(recvtype) {
            return staged_alltoallv(sendbuf, sendcounts, sdispls, sendtype, recvbuf, recvcounts, rdispls, recvtype, comm);
        }
        let c = state::comm(comm)?;
        let n = c.size();
        let rsize = datatype::dense_size(recvtype)?;
        let (rc, rd, rend) = layout(recvcounts, rdispls, n, rsize)?;
        let all = dst(recvbuf, rend)?;
        if in_place(sendbuf) {
            let copy = all.to_vec();
            c.alltoallv(&copy, &rc, &rd, all, &rc, &rd)?;
        } else {
            let ssize = datatype::dense_size(sendtype)?;
            let (sc, sd, send) = layout(sendcounts, sdispls, n, ssize)?;
            let s = src(sendbuf, send)?;
            c.alltoallv(s, &sc, &sd, all, &rc, &rd)?;
        }
        Ok(())
    }
}

coll_fn! {
    /// `MPI_Alltoallv` with a datatype per block and displacements in bytes.
    fn MPI_Alltoallw / PMPI_Alltoallw, MPI_Alltoallw_c / PMPI_Alltoallw_c = alltoallw_core(
        sendbuf: *const c_void, sendcounts: *const C, sdispls: *const D, sendtypes: *const Handle,
        recvbuf: *mut c_void, recvcounts: *const C, rdispls: *const D, recvtypes: *const Handle,
        comm: Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            let mut k = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
            let n = crate::inter::remote_size(comm)?;
            let [k0, k1, k2, k3] = &mut k;
            let (sc, sd) = (C::ints(sendcounts, n, k0)?, D::ints(sdispls, n, k1)?);
            let (rc, rd) = (C::ints(recvcounts, n, k2)?, D::ints(rdispls, n, k3)?);
            return crate::inter::alltoallw(sendbuf, sc, sd, sendtypes, recvbuf, rc, rd, recvtypes, comm);
        }
        let c = state::comm(comm)?;
        let n = c.size();
        let r = WBlocks::new(recvbuf, recvcounts, rdispls, recvtypes, n)?;
        let (send, scs, sds) = if in_place(sendbuf) {
            (r.pack()?, r.cs.clone(), r.ds.clone())
        } else {
            let s = WBlocks::new(sendbuf, sendcounts, sdispls, sendtypes, n)?;
            (s.pack()?, s.cs, s.ds)
        };
        let mut tmp = vec![0u8; r.total()];
        c.alltoallv(&send, &scs, &sds, &mut tmp, &r.cs, &r.ds)?;
        r.unpack(&tmp)
    }
}

coll_fn! {
    /// `inoutbuf[i] = inbuf[i] op inoutbuf[i]` on this process only.
    fn MPI_Reduce_local / PMPI_Reduce_local, MPI_Reduce_local_c / PMPI_Reduce_local_c = reduce_local_core(
        inbuf: *const c_void, inoutbuf: *mut c_void, count: C, datatype: Handle, op: Handle,
    ) on abi::COMM_WORLD => {
        if let Some(g) = crate::userop::general(datatype, op)? {
            return g.local(inbuf, inoutbuf, large::count(count)?);
        }
        let (elem, k, _) = reduction(datatype, op)?;
        let len = large::bytes(count, datatype)?;
        let a = src(inbuf, len)?;
        let io = dst(inoutbuf, len)?;
        typed!(elem, reduce_local_t(a, io, k))
    }
}

fn reduce_local_t<T: Num>(a: &[u8], inout: &mut [u8], k: reduce::Kind) -> R<()> {
    let a = cast::<T>(a);
    with_mut::<T, _>(inout, |io| {
        dos::op::Op::<T>::apply_left(&DynOp(k), &a, io);
        Ok(())
    })
}

// ----- the equal-block collectives with derived datatypes -----

/// The byte length of `n` elements of `dt` (dense or packed).
fn packed_len(n: usize, dt: Handle) -> R<usize> {
    Ok(match datatype::layout_n(n, dt)? {
        Layout::Dense(l) => l,
        Layout::Packed { len, .. } => len,
    })
}

/// Elements of `count` blocks for `size` ranks, checked.
fn all_blocks<C: Wide>(count: C, size: usize) -> R<usize> {
    large::count(count)?
        .checked_mul(size)
        .ok_or_else(|| err(abi::ERR_COUNT, "the blocks of all ranks overflow"))
}

/// `Gather` (at `Some(root)`) or `Allgather` (`None`) through packed
/// blocks: each block's bytes are its type signature's, packed.
///
/// # Safety
/// The buffers valid for their counts.
#[allow(clippy::too_many_arguments)]
unsafe fn staged_gather<C: Wide>(
    sendbuf: *const c_void,
    sendcount: C,
    sendtype: Handle,
    recvbuf: *mut c_void,
    recvcount: C,
    recvtype: Handle,
    root: Option<c_int>,
    comm: Handle,
) -> R<()> {
    // SAFETY: the caller's contract.
    unsafe {
        let c = state::comm(comm)?;
        let root = root.map(|r| root_of(&c, r)).transpose()?;
        let receives = root.is_none_or(|r| r == c.rank());
        let mut all = if receives {
            let n = all_blocks(recvcount, c.size())?;
            Some(Staged::new(recvbuf, n, recvtype, in_place(sendbuf))?)
        } else {
            None
        };
        if in_place(sendbuf) {
            let a = all
                .as_mut()
                .expect("in place only where receiving")
                .bytes()?;
            match root {
                Some(r) => c.gather_in_place(a, r)?,
                None => c.allgather_in_place(a)?,
            }
        } else {
            let mut s = Staged::new(sendbuf, large::count(sendcount)?, sendtype, true)?;
            let s = s.bytes()?;
            match (&mut all, root) {
                (Some(a), Some(r)) => {
                    check_block(s.len(), packed_len(large::count(recvcount)?, recvtype)?)?;
                    c.gather(s, a.bytes()?, r)?
                }
                (None, Some(r)) => c.gather(s, &mut [], r)?,
                (Some(a), None) => {
                    check_block(s.len(), packed_len(large::count(recvcount)?, recvtype)?)?;
                    c.allgather(s, a.bytes()?)?
                }
                (None, None) => unreachable!("allgather receives everywhere"),
            }
        }
        match all {
            Some(a) => a.finish(),
            None => Ok(()),
        }
    }
}

/// `Scatter` through packed blocks.
///
/// # Safety
/// The buffers valid for their counts.
#[allow(clippy::too_many_arguments)]
unsafe fn staged_scatter<C: Wide>(
    sendbuf: *const c_void,
    sendcount: C,
    sendtype: Handle,
    recvbuf: *mut c_void,
    recvcount: C,
    recvtype: Handle,
    root: c_int,
    comm: Handle,
) -> R<()> {
    // SAFETY: the caller's contract.
    unsafe {
        let c = state::comm(comm)?;
        let root = root_of(&c, root)?;
        if c.rank() == root {
            let n = all_blocks(sendcount, c.size())?;
            let mut all = Staged::new(sendbuf, n, sendtype, true)?;
            if in_place(recvbuf) {
                return Ok(c.scatter_in_place(all.bytes()?, root)?);
            }
            let mut r = Staged::new(recvbuf, large::count(recvcount)?, recvtype, false)?;
            let blk = packed_len(large::count(sendcount)?, sendtype)?;
            check_block(blk, r.bytes()?.len())?;
            c.scatter(all.bytes()?, r.bytes()?, root)?;
            r.finish()
        } else {
            let mut r = Staged::new(recvbuf, large::count(recvcount)?, recvtype, false)?;
            c.scatter(&[], r.bytes()?, root)?;
            r.finish()
        }
    }
}

/// `Alltoall` through packed blocks.
///
/// # Safety
/// The buffers valid for their counts.
unsafe fn staged_alltoall<C: Wide>(
    sendbuf: *const c_void,
    sendcount: C,
    sendtype: Handle,
    recvbuf: *mut c_void,
    recvcount: C,
    recvtype: Handle,
    comm: Handle,
) -> R<()> {
    // SAFETY: the caller's contract.
    unsafe {
        let c = state::comm(comm)?;
        let n = all_blocks(recvcount, c.size())?;
        let mut all = Staged::new(recvbuf, n, recvtype, in_place(sendbuf))?;
        if in_place(sendbuf) {
            c.alltoall_in_place(all.bytes()?)?;
        } else {
            let sn = all_blocks(sendcount, c.size())?;
            let blk = packed_len(large::count(sendcount)?, sendtype)?;
            check_block(blk, packed_len(large::count(recvcount)?, recvtype)?)?;
            let mut s = Staged::new(sendbuf, sn, sendtype, true)?;
            c.alltoall(s.bytes()?, all.bytes()?)?;
        }
        all.finish()
    }
}

/// `Gatherv` (at `Some(root)`) or `Allgatherv` (`None`) through packed blocks.
///
/// # Safety
/// The buffers and arrays valid for their counts.
#[allow(clippy::too_many_arguments)]
unsafe fn staged_gatherv<C: Wide, D: Wide>(
    sendbuf: *const c_void,
    sendcount: C,
    sendtype: Handle,
    recvbuf: *mut c_void,
    recvcounts: *const C,
    displs: *const D,
    recvtype: Handle,
    root: Option<c_int>,
    comm: Handle,
) -> R<()> {
    // SAFETY: the caller's contract.
    unsafe {
        let c = state::comm(comm)?;
        let root = root.map(|r| root_of(&c, r)).transpose()?;
        let me = c.rank();
        if root.is_some_and(|r| r != me) {
            let mut s = Staged::new(sendbuf, large::count(sendcount)?, sendtype, true)?;
            c.gatherv(s.bytes()?, &mut [], &[], &[], root.expect("rooted"))?;
            return Ok(());
        }
        let (mut k1, mut k2) = (Vec::new(), Vec::new());
        let mut v = VStaged::new(
            recvbuf,
            C::ints(recvcounts, c.size(), &mut k1)?,
            D::ints(displs, c.size(), &mut k2)?,
            c.size(),
            recvtype,
            in_place(sendbuf),
        )?;
        let mine;
        let mut st;
        let s: &[u8] = if in_place(sendbuf) {
            mine = v.tmp[v.ds[me]..v.ds[me] + v.cs[me]].to_vec();
            &mine
        } else {
            st = Staged::new(sendbuf, large::count(sendcount)?, sendtype, true)?;
            st.bytes()?
        };
        check_block(s.len(), v.cs[me])?;
        match root {
            Some(r) => c.gatherv(s, &mut v.tmp, &v.cs, &v.ds, r)?,
            None => c.allgatherv(s, &mut v.tmp, &v.cs, &v.ds)?,
        }
        v.finish()
    }
}

/// `Scatterv` through packed blocks.
///
/// # Safety
/// The buffers and arrays valid for their counts.
#[allow(clippy::too_many_arguments)]
unsafe fn staged_scatterv<C: Wide, D: Wide>(
    sendbuf: *const c_void,
    sendcounts: *const C,
    displs: *const D,
    sendtype: Handle,
    recvbuf: *mut c_void,
    recvcount: C,
    recvtype: Handle,
    root: c_int,
    comm: Handle,
) -> R<()> {
    // SAFETY: the caller's contract.
    unsafe {
        let c = state::comm(comm)?;
        let root = root_of(&c, root)?;
        if c.rank() != root {
            let mut r = Staged::new(recvbuf, large::count(recvcount)?, recvtype, false)?;
            c.scatterv(&[], &[], &[], r.bytes()?, root)?;
            return r.finish();
        }
        let (mut k1, mut k2) = (Vec::new(), Vec::new());
        let (sc, sd) = (
            C::ints(sendcounts, c.size(), &mut k1)?,
            D::ints(displs, c.size(), &mut k2)?,
        );
        let v = VStaged::new(sendbuf, sc, sd, c.size(), sendtype, true)?;
        if in_place(recvbuf) {
            let mut mine = v.tmp[v.ds[root]..v.ds[root] + v.cs[root]].to_vec();
            c.scatterv(&v.tmp, &v.cs, &v.ds, &mut mine, root)?;
            return Ok(());
        }
        let mut r = Staged::new(recvbuf, large::count(recvcount)?, recvtype, false)?;
        check_block(v.cs[root], r.bytes()?.len())?;
        c.scatterv(&v.tmp, &v.cs, &v.ds, r.bytes()?, root)?;
        r.finish()
    }
}

/// `Alltoallv` through packed blocks.
///
/// # Safety
/// The buffers and arrays valid for their counts.
#[allow(clippy::too_many_arguments)]
unsafe fn staged_alltoallv<C: Wide, D: Wide>(
    sendbuf: *const c_void,
    sendcounts: *const C,
    sdispls: *const D,
    sendtype: Handle,
    recvbuf: *mut c_void,
    recvcounts: *const C,
    rdispls: *const D,
    recvtype: Handle,
    comm: Handle,
) -> R<()> {
    // SAFETY: the caller's contract.
    unsafe {
        let c = state::comm(comm)?;
        let n = c.size();
        let mut k = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        let [k0, k1, k2, k3] = &mut k;
        let (rc, rd) = (C::ints(recvcounts, n, k0)?, D::ints(rdispls, n, k1)?);
        let mut r = VStaged::new(recvbuf, rc, rd, n, recvtype, in_place(sendbuf))?;
        if in_place(sendbuf) {
            let copy = r.tmp.clone();
            c.alltoallv(&copy, &r.cs, &r.ds, &mut r.tmp, &r.cs, &r.ds)?;
        } else {
            let (sc, sd) = (C::ints(sendcounts, n, k2)?, D::ints(sdispls, n, k3)?);
            let s = VStaged::new(sendbuf, sc, sd, n, sendtype, true)?;
            c.alltoallv(&s.tmp, &s.cs, &s.ds, &mut r.tmp, &r.cs, &r.ds)?;
        }
        r.finish()
    }
}

// ----- reductions -----

/// The element type and operation of a reduction, checked.
fn reduction(dt: Handle, op: Handle) -> R<(Elem, reduce::Kind, usize)> {
    let t = datatype::for_reduction(dt)?;
    let k = reduce::check_on(op, dt, &t)?;
    Ok((t.elem, k, t.size))
}

fn reduce_t<T: Num>(
    c: &Comm,
    send: Option<&[u8]>,
    recv: &mut [u8],
    k: reduce::Kind,
    root: usize,
) -> R<()> {
    with_mut::<T, _>(recv, |r| {
        match send {
            None => c.reduce_in_place(r, DynOp(k), root)?,
            Some(s) => c.reduce(&cast::<T>(s), r, DynOp(k), root)?,
        }
        Ok(())
    })
}

coll_fn! {
    /// Combines every rank's buffer with `op` into `root`'s.
    fn MPI_Reduce / PMPI_Reduce, MPI_Reduce_c / PMPI_Reduce_c = reduce_core(
        sendbuf: *const c_void, recvbuf: *mut c_void, count: C,
        datatype: Handle, op: Handle, root: c_int, comm: Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter::reduce(sendbuf, recvbuf, count.narrow()?, datatype, op, root, comm);
        }
        let c = state::comm(comm)?;
        let root = root_of(&c, root)?;
        if let Some(g) = crate::userop::general(datatype, op)? {
            return g.reduce(&c, sendbuf, recvbuf, large::count(count)?, root);
        }
        let (elem, k, _) = reduction(datatype, op)?;
        let len = large::bytes(count, datatype)?;
        let me = c.rank() == root;
        if me && in_place(sendbuf) {
            let r = dst(recvbuf, len)?;
            typed!(elem, reduce_t(&c, None, r, k, root))
        } else {
            let s = src(sendbuf, len)?;
            let r = if me { dst(recvbuf, len)? } else { &mut [][..] };
            typed!(elem, reduce_t(&c, Some(s), r, k, root))
        }
    }
}

fn allreduce_t<T: Num>(c: &Comm, send: Option<&[u8]>, recv: &mut [u8], k: reduce::Kind) -> R<()> {
    with_mut::<T, _>(recv, |r| {
        match send {
            None => c.allreduce_in_place(r, DynOp(k))?,
            Some(s) => c.allreduce(&cast::<T>(s), r, DynOp(k))?,
        }
        Ok(())
    })
}

coll_fn! {
    /// Combines every rank's buffer with `op`; every rank gets the result.
    fn MPI_Allreduce / PMPI_Allreduce, MPI_Allreduce_c / PMPI_Allreduce_c = allreduce_core(
        sendbuf: *const c_void, recvbuf: *mut c_void, count: C,
        datatype: Handle, op: Handle, comm: Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter::allreduce(sendbuf, recvbuf, count.narrow()?, datatype, op, comm);
        }
        let c = state::comm(comm)?;
        // The common case first: a predefined type and operation (no user
        // function to look up, the type's description read once).
        let (elem, k) = match datatype::predefined(datatype) {
            Some(t) if (abi::op::NULL..=abi::op::NO_OP).contains(&op) => {
                (t.elem, reduce::check(op, t.elem, t.name)?)
            }
            _ => {
                if let Some(g) = crate::userop::general(datatype, op)? {
                    return g.allreduce(&c, sendbuf, recvbuf, large::count(count)?, None);
                }
                let (elem, k, _) = reduction(datatype, op)?;
                (elem, k)
            }
        };
        let len = large::bytes(count, datatype)?;
        let r = dst(recvbuf, len)?;
        let s = if in_place(sendbuf) { None } else { Some(src(sendbuf, len)?) };
        typed!(elem, allreduce_t(&c, s, r, k))
    }
}

fn reduce_scatter_t<T: Num>(
    c: &Comm,
    send: Option<&[u8]>,
    recv: &mut [u8],
    counts: &[usize],
    k: reduce::Kind,
) -> R<()> {
    with_mut::<T, _>(recv, |r| {
        match send {
            None => c.reduce_scatter_in_place(r, counts, DynOp(k))?,
            Some(s) => c.reduce_scatter(&cast::<T>(s), r, counts, DynOp(k))?,
        }
        Ok(())
    })
}

coll_fn! {
    /// Combines with `op`, then scatters the result in blocks of `recvcounts`.
    fn MPI_Reduce_scatter / PMPI_Reduce_scatter, MPI_Reduce_scatter_c / PMPI_Reduce_scatter_c = reduce_scatter_core(
        sendbuf: *const c_void, recvbuf: *mut c_void, recvcounts: *const C,
        datatype: Handle, op: Handle, comm: Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            let mut k = Vec::new();
            let rc = C::ints(recvcounts, crate::inter::local_size(comm)?, &mut k)?;
            return crate::inter::reduce_scatter(sendbuf, recvbuf, rc, datatype, op, comm);
        }
        let c = state::comm(comm)?;
        if let Some(g) = crate::userop::general(datatype, op)? {
            let raw = arr(recvcounts, c.size(), "recvcounts")?;
            let counts = raw.iter().map(|&x| large::count(x)).collect::<R<Vec<usize>>>()?;
            return g.reduce_scatter(&c, sendbuf, recvbuf, &counts);
        }
        let (elem, k, size) = reduction(datatype, op)?;
        let raw = arr(recvcounts, c.size(), "recvcounts")?;
        let counts = raw.iter().map(|&x| large::count(x)).collect::<R<Vec<usize>>>()?;
        let total: usize = counts.iter().sum();
        let mine = counts[c.rank()];
        if in_place(sendbuf) {
            let r = dst(recvbuf, total * size)?;
            typed!(elem, reduce_scatter_t(&c, None, r, &counts, k))
        } else {
            let s = src(sendbuf, total * size)?;
            let r = dst(recvbuf, mine * size)?;
            typed!(elem, reduce_scatter_t(&c, Some(s), r, &counts, k))
        }
    }
}

fn reduce_scatter_block_t<T: Num>(
    c: &Comm,
    send: Option<&[u8]>,
    recv: &mut [u8],
    k: reduce::Kind,
) -> R<()> {
    with_mut::<T, _>(recv, |r| {
        match send {
            None => c.reduce_scatter_block_in_place(r, DynOp(k))?,
            Some(s) => c.reduce_scatter_block(&cast::<T>(s), r, DynOp(k))?,
        }
        Ok(())
    })
}

coll_fn! {
    /// `MPI_Reduce_scatter` with equal blocks.
    fn MPI_Reduce_scatter_block / PMPI_Reduce_scatter_block, MPI_Reduce_scatter_block_c / PMPI_Reduce_scatter_block_c = reduce_scatter_block_core(
        sendbuf: *const c_void, recvbuf: *mut c_void, recvcount: C,
        datatype: Handle, op: Handle, comm: Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter::reduce_scatter_block(sendbuf, recvbuf, recvcount.narrow()?, datatype, op, comm);
        }
        let c = state::comm(comm)?;
        if let Some(g) = crate::userop::general(datatype, op)? {
            return g.reduce_scatter(&c, sendbuf, recvbuf, &vec![large::count(recvcount)?; c.size()]);
        }
        let (elem, k, _) = reduction(datatype, op)?;
        let blk = large::bytes(recvcount, datatype)?;
        if in_place(sendbuf) {
            let r = dst(recvbuf, blk * c.size())?;
            typed!(elem, reduce_scatter_block_t(&c, None, r, k))
        } else {
            let s = src(sendbuf, blk * c.size())?;
            let r = dst(recvbuf, blk)?;
            typed!(elem, reduce_scatter_block_t(&c, Some(s), r, k))
        }
    }
}

fn scan_t<T: Num>(
    c: &Comm,
    send: Option<&[u8]>,
    recv: &mut [u8],
    k: reduce::Kind,
    inclusive: bool,
) -> R<()> {
    with_mut::<T, _>(recv, |r| {
        match (send, inclusive) {
            (None, true) => c.scan_in_place(r, DynOp(k))?,
            (None, false) => c.exscan_in_place(r, DynOp(k))?,
            (Some(s), true) => c.scan(&cast::<T>(s), r, DynOp(k))?,
            (Some(s), false) => c.exscan(&cast::<T>(s), r, DynOp(k))?,
        }
        Ok(())
    })
}

/// # Safety
/// The buffers valid for `count` elements of `dt`.
unsafe fn scan<C: Wide>(
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    count: C,
    dt: Handle,
    op: Handle,
    comm: Handle,
    inclusive: bool,
) -> R<()> {
    crate::inter::deny(comm)?;
    let c = state::comm(comm)?;
    if let Some(g) = crate::userop::general(dt, op)? {
        // SAFETY: the caller's contract.
        return unsafe { g.allreduce(&c, sendbuf, recvbuf, large::count(count)?, Some(inclusive)) };
    }
    let (elem, k, _) = reduction(dt, op)?;
    let len = large::bytes(count, dt)?;
    // SAFETY: the caller's contract.
    let r = unsafe { dst(recvbuf, len)? };
    let s = if in_place(sendbuf) {
        None
    } else {
        // SAFETY: the caller's contract.
        Some(unsafe { src(sendbuf, len)? })
    };
    typed!(elem, scan_t(&c, s, r, k, inclusive))
}

coll_fn! {
    /// Inclusive prefix reduction in rank order.
    fn MPI_Scan / PMPI_Scan, MPI_Scan_c / PMPI_Scan_c = scan_core(
        sendbuf: *const c_void, recvbuf: *mut c_void, count: C,
        datatype: Handle, op: Handle, comm: Handle,
    ) on comm => {
        scan(sendbuf, recvbuf, count, datatype, op, comm, true)
    }
}

coll_fn! {
    /// Exclusive prefix reduction in rank order (rank 0's result is undefined).
    fn MPI_Exscan / PMPI_Exscan, MPI_Exscan_c / PMPI_Exscan_c = exscan_core(
        sendbuf: *const c_void, recvbuf: *mut c_void, count: C,
        datatype: Handle, op: Handle, comm: Handle,
    ) on comm => {
        scan(sendbuf, recvbuf, count, datatype, op, comm, false)
    }
}
