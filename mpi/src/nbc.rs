//! The nonblocking collectives (`MPI_Ibarrier`, `MPI_Ibcast`, ...,
//! `MPI_Iexscan`), on dos's schedule engine.
//!
//! Each call checks its arguments as the blocking form does (same error
//! classes, before anything is sent), then starts the schedule of dos's
//! nonblocking collective (`Comm::icoll_detached`: the same algorithms as
//! dos's scoped `i`-collectives) and returns an ordinary request of the
//! request table, of kind `ReqKind::Coll`: every `Wait*`/`Test*` form
//! completes it, alone or mixed with point-to-point requests, and its
//! status is the empty one. `MPI_Request_free` of it is `MPI_ERR_REQUEST`
//! (erroneous by the standard); a request never completed is withdrawn at
//! `MPI_Finalize`.
//!
//! Progress is weak, as in dos: a schedule advances inside MPI calls (any
//! wait or test, and any other call that enters dos's engine: sends,
//! receives, probes, blocking collectives), never while the program
//! computes outside MPI. A program that overlaps computation with a
//! nonblocking collective gets overlap for the transfers dos's progress
//! thread moves, and should call `MPI_Test` now and then for the rest.
//!
//! Several collectives may be outstanding at once, on one communicator or
//! several: each has a tag of its own (dos numbers them per communicator in
//! the order started, which MPI requires to be the same on every rank).
//!
//! Buffers: data-movement collectives move bytes; derived datatypes go
//! through a packed temporary ([`Staged`]/[`VStaged`], as in the blocking
//! forms) that is unpacked into the caller's buffer when the request
//! completes (the request's [`After`] hook). Reductions take the element
//! type of the datatype; a buffer not aligned for it, and the extra copies
//! `MPI_IN_PLACE` needs (the contribution of `Iallgather`, `Ialltoall(v)`,
//! `Ireduce_scatter(_block)`, `Iscan`, `Iexscan`), are temporaries the
//! request owns until it completes.

use std::ffi::{c_int, c_void};

use dos::detached::{DetachedRequest, NbColl};
use dos::Comm;

use crate::abi::{self, Handle};
use crate::coll::{check_block, layout, root_of};
use crate::datatype::{self, Layout};
use crate::error::{err, R};
use crate::large::{self, arr, Wide, C, D};
use crate::ptr::{in_place, out};
use crate::reduce::{self, DynOp, Num};
use crate::request::After;
use crate::state::{self, ReqEntry, ReqKind};
use crate::types::{Staged, VStaged};

/// The operation of a data-movement collective (never called).
struct Move;

impl dos::op::Op<u8> for Move {
    fn apply_left(&self, _: &[u8], _: &mut [u8]) {}
    fn apply_right(&self, _: &mut [u8], _: &[u8]) {}
}

/// What a request keeps until it completes, and does then: each job runs
/// in order when the collective has completed (unpacks, copies back); the
/// objects a job captures live until then.
#[derive(Default)]
struct Keep {
    jobs: Vec<Box<dyn FnOnce() -> R<()>>>,
}

impl Keep {
    /// Keeps `x` alive until completion.
    fn hold<X: 'static>(&mut self, x: X) {
        self.jobs.push(Box::new(move || {
            drop(x);
            Ok(())
        }));
    }

    /// Unpacks `s` into its buffer at completion.
    fn unpack(&mut self, s: Staged) {
        // SAFETY: the buffer is the caller's, valid until the request
        // completes (MPI's rule for nonblocking calls).
        self.jobs.push(Box::new(move || unsafe { s.finish() }));
    }

    /// Unpacks `v` into its buffer at completion.
    fn vunpack(&mut self, v: VStaged) {
        // SAFETY: as for `unpack`.
        self.jobs.push(Box::new(move || unsafe { v.finish() }));
    }

    fn into_after(self) -> Option<After> {
        if self.jobs.is_empty() {
            return None;
        }
        let jobs = self.jobs;
        Some(Box::new(move |_| {
            let mut first = Ok(());
            for j in jobs {
                let r = j();
                if first.is_ok() {
                    first = r;
                }
            }
            first
        }))
    }
}

/// The request argument, checked before anything starts.
fn request_arg(request: *mut Handle) -> R<()> {
    if request.is_null() {
        Err(err(abi::ERR_ARG, "null pointer for request"))
    } else {
        Ok(())
    }
}

/// Registers a started collective; stores its handle.
///
/// # Safety
/// `request` valid for a write.
unsafe fn register(raw: DetachedRequest, keep: Keep, comm: Handle, request: *mut Handle) -> R<()> {
    let after = keep.into_after();
    let h = state::with(|st| {
        Ok(st.reqs.insert(ReqEntry {
            raw,
            kind: ReqKind::Coll,
            comm,
            outcome: None,
            after,
        }))
    })?;
    // SAFETY: the caller's contract.
    unsafe { out(request, h, "request") }
}

/// Starts the byte collective `what` from `send` into `recv`, both owned
/// by the request until it completes; then `finish` gets the received
/// bytes (to unpack or fold them). Stores the request in `*request`.
///
/// # Safety
/// `request` valid for a write; whatever `finish` writes valid until the
/// request completes.
pub(crate) unsafe fn start_owned(
    c: &Comm,
    what: NbColl<'_>,
    send: Vec<u8>,
    mut recv: Vec<u8>,
    finish: impl FnOnce(&[u8]) -> R<()> + 'static,
    comm: Handle,
    request: *mut Handle,
) -> R<()> {
    // SAFETY: both vectors move into the request's hook, which keeps
    // their heap buffers (whose addresses do not change) until completion.
    let raw = unsafe {
        c.icoll_detached(
            what,
            send.as_ptr(),
            send.len(),
            recv.as_mut_ptr(),
            recv.len(),
            Move,
        )?
    };
    let mut keep = Keep::default();
    keep.jobs.push(Box::new(move || {
        drop(send);
        finish(&recv)
    }));
    // SAFETY: the caller's contract.
    unsafe { register(raw, keep, comm, request) }
}

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

/// `n` elements of `dt` at `buf` as bytes (packed if `fill` and the type is
/// not dense); the staging is kept in `keep`, unpacked at completion if
/// `unpack`. Returns the bytes' address and length.
///
/// # Safety
/// `buf` valid for `n` elements of `dt` until the request completes.
unsafe fn stage(
    keep: &mut Keep,
    buf: *const c_void,
    n: usize,
    dt: Handle,
    fill: bool,
    unpack: bool,
) -> R<(*mut u8, usize)> {
    // SAFETY: the caller's contract.
    let mut s = unsafe { Staged::new(buf, n, dt, fill)? };
    // SAFETY: as above.
    let b = unsafe { s.bytes()? };
    let (p, l) = (b.as_mut_ptr(), b.len());
    if unpack {
        keep.unpack(s);
    } else {
        keep.hold(s);
    }
    Ok((p, l))
}

/// A copy of `len` bytes at `p`, kept until completion; its address.
///
/// # Safety
/// `p` valid for `len` bytes.
unsafe fn copy_kept(keep: &mut Keep, p: *const u8, len: usize) -> *const u8 {
    let v: Vec<u8> = if len == 0 {
        Vec::new()
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(p, len) }.to_vec()
    };
    let q = v.as_ptr();
    keep.hold(v);
    q
}

/// Starts a byte collective and registers it.
///
/// # Safety
/// The buffers valid until completion; `request` for a write.
#[allow(clippy::too_many_arguments)]
unsafe fn start_bytes(
    c: &Comm,
    what: NbColl<'_>,
    send: (*const u8, usize),
    recv: (*mut u8, usize),
    keep: Keep,
    comm: Handle,
    request: *mut Handle,
) -> R<()> {
    // SAFETY: the caller's contract.
    let raw = unsafe { c.icoll_detached(what, send.0, send.1, recv.0, recv.1, Move)? };
    // SAFETY: the caller's contract.
    unsafe { register(raw, keep, comm, request) }
}

const NOTHING: (*const u8, usize) = (std::ptr::null(), 0);
const NOWHERE: (*mut u8, usize) = (std::ptr::null_mut(), 0);

mpi_fn! {
    /// Starts a barrier: completes once every rank has started it.
    fn MPI_Ibarrier / PMPI_Ibarrier(comm: Handle, request: *mut Handle) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter_nb::start(comm, request, || crate::inter_nb::ibarrier(comm));
        }
        request_arg(request)?;
        let c = state::comm(comm)?;
        start_bytes(&c, NbColl::Barrier, NOTHING, NOWHERE, Keep::default(), comm, request)
    }
}

coll_fn! {
    /// Starts copying `root`'s buffer to every rank.
    fn MPI_Ibcast / PMPI_Ibcast, MPI_Ibcast_c / PMPI_Ibcast_c = ibcast_core(buffer: *mut c_void, count: C, datatype: Handle, root: c_int, comm: Handle, request: *mut Handle) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter_nb::start(comm, request, || crate::inter_nb::ibcast(buffer, count.narrow()?, datatype, root, comm));
        }
        request_arg(request)?;
        let c = state::comm(comm)?;
        let n = large::count(count)?;
        let root = root_of(&c, root)?;
        let me = c.rank() == root;
        let mut keep = Keep::default();
        let b = stage(&mut keep, buffer, n, datatype, me, !me)?;
        start_bytes(&c, NbColl::Bcast { root }, NOTHING, b, keep, comm, request)
    }
}

coll_fn! {
    /// Starts gathering equal blocks at `root` in rank order.
    fn MPI_Igather / PMPI_Igather, MPI_Igather_c / PMPI_Igather_c = igather_core(
        sendbuf: *const c_void, sendcount: C, sendtype: Handle,
        recvbuf: *mut c_void, recvcount: C, recvtype: Handle,
        root: c_int, comm: Handle, request: *mut Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter_nb::start(comm, request, || crate::inter::gather(sendbuf, sendcount.narrow()?, sendtype, recvbuf, recvcount.narrow()?, recvtype, root, comm).map(|()| None));
        }
        request_arg(request)?;
        let c = state::comm(comm)?;
        let root = root_of(&c, root)?;
        let mut keep = Keep::default();
        if c.rank() != root {
            let s = stage(&mut keep, sendbuf, large::count(sendcount)?, sendtype, true, false)?;
            let what = NbColl::Gather { root, blk: s.1, in_place: false };
            return start_bytes(&c, what, (s.0, s.1), NOWHERE, keep, comm, request);
        }
        let blk = packed_len(large::count(recvcount)?, recvtype)?;
        let ip = in_place(sendbuf);
        let r = stage(&mut keep, recvbuf, all_blocks(recvcount, c.size())?, recvtype, ip, true)?;
        let s = if ip {
            NOTHING
        } else {
            let s = stage(&mut keep, sendbuf, large::count(sendcount)?, sendtype, true, false)?;
            check_block(s.1, blk)?;
            (s.0 as *const u8, s.1)
        };
        start_bytes(&c, NbColl::Gather { root, blk, in_place: ip }, s, r, keep, comm, request)
    }
}

coll_fn! {
    /// Starts scattering equal blocks from `root` in rank order.
    fn MPI_Iscatter / PMPI_Iscatter, MPI_Iscatter_c / PMPI_Iscatter_c = iscatter_core(
        sendbuf: *const c_void, sendcount: C, sendtype: Handle,
        recvbuf: *mut c_void, recvcount: C, recvtype: Handle,
        root: c_int, comm: Handle, request: *mut Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter_nb::start(comm, request, || crate::inter::scatter(sendbuf, sendcount.narrow()?, sendtype, recvbuf, recvcount.narrow()?, recvtype, root, comm).map(|()| None));
        }
        request_arg(request)?;
        let c = state::comm(comm)?;
        let root = root_of(&c, root)?;
        let mut keep = Keep::default();
        if c.rank() != root {
            let r = stage(&mut keep, recvbuf, large::count(recvcount)?, recvtype, false, true)?;
            let what = NbColl::Scatter { root, blk: r.1, in_place: false };
            return start_bytes(&c, what, NOTHING, r, keep, comm, request);
        }
        let blk = packed_len(large::count(sendcount)?, sendtype)?;
        let s = stage(&mut keep, sendbuf, all_blocks(sendcount, c.size())?, sendtype, true, false)?;
        let ip = in_place(recvbuf);
        let r = if ip {
            NOWHERE
        } else {
            let r = stage(&mut keep, recvbuf, large::count(recvcount)?, recvtype, false, true)?;
            check_block(blk, r.1)?;
            r
        };
        start_bytes(&c, NbColl::Scatter { root, blk, in_place: ip }, (s.0, s.1), r, keep, comm, request)
    }
}

coll_fn! {
    /// Starts gathering every rank's block at every rank, in rank order.
    fn MPI_Iallgather / PMPI_Iallgather, MPI_Iallgather_c / PMPI_Iallgather_c = iallgather_core(
        sendbuf: *const c_void, sendcount: C, sendtype: Handle,
        recvbuf: *mut c_void, recvcount: C, recvtype: Handle,
        comm: Handle, request: *mut Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter_nb::start(comm, request, || crate::inter::allgatherv(sendbuf, sendcount.narrow()?, sendtype, recvbuf, recvcount.narrow()?, None, std::ptr::null(), recvtype, comm).map(|()| None));
        }
        request_arg(request)?;
        let c = state::comm(comm)?;
        let mut keep = Keep::default();
        let blk = packed_len(large::count(recvcount)?, recvtype)?;
        let ip = in_place(sendbuf);
        let r = stage(&mut keep, recvbuf, all_blocks(recvcount, c.size())?, recvtype, ip, true)?;
        let s = if ip {
            // The contribution is this rank's block of the receive buffer.
            (copy_kept(&mut keep, r.0.add(c.rank() * blk), blk), blk)
        } else {
            let s = stage(&mut keep, sendbuf, large::count(sendcount)?, sendtype, true, false)?;
            check_block(s.1, blk)?;
            (s.0 as *const u8, s.1)
        };
        start_bytes(&c, NbColl::Allgather, s, r, keep, comm, request)
    }
}

coll_fn! {
    /// Starts sending block `j` of rank `i` to block `i` of rank `j`.
    fn MPI_Ialltoall / PMPI_Ialltoall, MPI_Ialltoall_c / PMPI_Ialltoall_c = ialltoall_core(
        sendbuf: *const c_void, sendcount: C, sendtype: Handle,
        recvbuf: *mut c_void, recvcount: C, recvtype: Handle,
        comm: Handle, request: *mut Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter_nb::start(comm, request, || crate::inter::alltoallv(sendbuf, sendcount.narrow()?, None, sendtype, recvbuf, recvcount.narrow()?, None, recvtype, comm).map(|()| None));
        }
        request_arg(request)?;
        let c = state::comm(comm)?;
        let mut keep = Keep::default();
        let ip = in_place(sendbuf);
        let r = stage(&mut keep, recvbuf, all_blocks(recvcount, c.size())?, recvtype, ip, true)?;
        let s = if ip {
            (copy_kept(&mut keep, r.0, r.1), r.1)
        } else {
            let blk = packed_len(large::count(recvcount)?, recvtype)?;
            check_block(packed_len(large::count(sendcount)?, sendtype)?, blk)?;
            let s = stage(&mut keep, sendbuf, all_blocks(sendcount, c.size())?, sendtype, true, false)?;
            (s.0 as *const u8, s.1)
        };
        start_bytes(&c, NbColl::Alltoall, s, r, keep, comm, request)
    }
}

// ----- the v-forms -----

/// The blocks of a v-form buffer as bytes: the caller's buffer for a
/// predefined datatype, a packed temporary for a derived one (unpacked at
/// completion if `unpack`). Returns the address, length and byte layout.
///
/// # Safety
/// The buffer and arrays valid for the blocks until completion.
#[allow(clippy::too_many_arguments)]
unsafe fn vstage<C: Wide, D: Wide>(
    keep: &mut Keep,
    buf: *const c_void,
    counts: *const C,
    displs: *const D,
    n: usize,
    dt: Handle,
    fill: bool,
    unpack: bool,
) -> R<(*mut u8, usize, Vec<usize>, Vec<usize>)> {
    if datatype::is_derived(dt) {
        // SAFETY: the caller's contract.
        let mut v = unsafe {
            let (mut k1, mut k2) = (Vec::new(), Vec::new());
            let (cs, ds) = (C::ints(counts, n, &mut k1)?, D::ints(displs, n, &mut k2)?);
            VStaged::new(buf, cs, ds, n, dt, fill)?
        };
        let (p, l) = (v.tmp.as_mut_ptr(), v.tmp.len());
        let (cs, ds) = (v.cs.clone(), v.ds.clone());
        if unpack {
            keep.vunpack(v);
        } else {
            keep.hold(v);
        }
        return Ok((p, l, cs, ds));
    }
    let size = datatype::dense_size(dt)?;
    // SAFETY: the caller's contract.
    let (cs, ds, end) = unsafe { layout(counts, displs, n, size)? };
    if end > 0 && buf.is_null() {
        return Err(err(abi::ERR_BUFFER, "null buffer with a nonzero count"));
    }
    Ok((buf as *mut u8, end, cs, ds))
}

coll_fn! {
    /// Starts gathering blocks of varying sizes at `root`.
    fn MPI_Igatherv / PMPI_Igatherv, MPI_Igatherv_c / PMPI_Igatherv_c = igatherv_core(
        sendbuf: *const c_void, sendcount: C, sendtype: Handle,
        recvbuf: *mut c_void, recvcounts: *const C, displs: *const D, recvtype: Handle,
        root: c_int, comm: Handle, request: *mut Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter_nb::start(comm, request, || {
                let (mut k1, mut k2) = (Vec::new(), Vec::new());
                let n = if root == abi::ROOT { crate::inter::remote_size(comm)? } else { 0 };
                let (rc, rd) = (C::ints(recvcounts, n, &mut k1)?, D::ints(displs, n, &mut k2)?);
                crate::inter::gatherv(sendbuf, sendcount.narrow()?, sendtype, recvbuf, Some(rc), 0, rd, recvtype, root, comm).map(|()| None)
            });
        }
        request_arg(request)?;
        let c = state::comm(comm)?;
        let root = root_of(&c, root)?;
        gatherv(&c, Some(root), sendbuf, sendcount, sendtype, recvbuf, recvcounts, displs, recvtype, comm, request)
    }
}

coll_fn! {
    /// Starts gathering blocks of varying sizes at every rank.
    fn MPI_Iallgatherv / PMPI_Iallgatherv, MPI_Iallgatherv_c / PMPI_Iallgatherv_c = iallgatherv_core(
        sendbuf: *const c_void, sendcount: C, sendtype: Handle,
        recvbuf: *mut c_void, recvcounts: *const C, displs: *const D, recvtype: Handle,
        comm: Handle, request: *mut Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter_nb::start(comm, request, || {
                let (mut k1, mut k2) = (Vec::new(), Vec::new());
                let n = crate::inter::remote_size(comm)?;
                let (rc, rd) = (C::ints(recvcounts, n, &mut k1)?, D::ints(displs, n, &mut k2)?);
                crate::inter::allgatherv(sendbuf, sendcount.narrow()?, sendtype, recvbuf, 0, Some(rc), rd, recvtype, comm).map(|()| None)
            });
        }
        request_arg(request)?;
        let c = state::comm(comm)?;
        gatherv(&c, None, sendbuf, sendcount, sendtype, recvbuf, recvcounts, displs, recvtype, comm, request)
    }
}

/// `Igatherv` (at `Some(root)`) or `Iallgatherv` (`None`).
///
/// # Safety
/// The buffers and arrays valid for their counts; `request` for a write.
#[allow(clippy::too_many_arguments)]
unsafe fn gatherv<C: Wide, D: Wide>(
    c: &Comm,
    root: Option<usize>,
    sendbuf: *const c_void,
    sendcount: C,
    sendtype: Handle,
    recvbuf: *mut c_void,
    recvcounts: *const C,
    displs: *const D,
    recvtype: Handle,
    comm: Handle,
    request: *mut Handle,
) -> R<()> {
    // SAFETY: the caller's contract.
    unsafe {
        let me = c.rank();
        let mut keep = Keep::default();
        if let Some(root) = root.filter(|&r| r != me) {
            let s = stage(
                &mut keep,
                sendbuf,
                large::count(sendcount)?,
                sendtype,
                true,
                false,
            )?;
            let what = NbColl::Gatherv {
                root,
                layout: (&[], &[]),
            };
            return start_bytes(c, what, (s.0, s.1), NOWHERE, keep, comm, request);
        }
        let ip = in_place(sendbuf);
        let (rp, rl, cs, ds) = vstage(
            &mut keep,
            recvbuf,
            recvcounts,
            displs,
            c.size(),
            recvtype,
            ip,
            true,
        )?;
        let s = if ip {
            (copy_kept(&mut keep, rp.add(ds[me]), cs[me]), cs[me])
        } else {
            let s = stage(
                &mut keep,
                sendbuf,
                large::count(sendcount)?,
                sendtype,
                true,
                false,
            )?;
            check_block(s.1, cs[me])?;
            (s.0 as *const u8, s.1)
        };
        let layout = (&cs[..], &ds[..]);
        let what = match root {
            Some(root) => NbColl::Gatherv { root, layout },
            None => NbColl::Allgatherv { layout },
        };
        start_bytes(c, what, s, (rp, rl), keep, comm, request)
    }
}

coll_fn! {
    /// Starts scattering blocks of varying sizes from `root`.
    fn MPI_Iscatterv / PMPI_Iscatterv, MPI_Iscatterv_c / PMPI_Iscatterv_c = iscatterv_core(
        sendbuf: *const c_void, sendcounts: *const C, displs: *const D, sendtype: Handle,
        recvbuf: *mut c_void, recvcount: C, recvtype: Handle,
        root: c_int, comm: Handle, request: *mut Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter_nb::start(comm, request, || {
                let (mut k1, mut k2) = (Vec::new(), Vec::new());
                let n = if root == abi::ROOT { crate::inter::remote_size(comm)? } else { 0 };
                let (sc, sd) = (C::ints(sendcounts, n, &mut k1)?, D::ints(displs, n, &mut k2)?);
                crate::inter::scatterv(sendbuf, Some(sc), 0, sd, sendtype, recvbuf, recvcount.narrow()?, recvtype, root, comm).map(|()| None)
            });
        }
        request_arg(request)?;
        let c = state::comm(comm)?;
        let root = root_of(&c, root)?;
        let mut keep = Keep::default();
        if c.rank() != root {
            let r = stage(&mut keep, recvbuf, large::count(recvcount)?, recvtype, false, true)?;
            let what = NbColl::Scatterv { root, layout: (&[], &[]) };
            return start_bytes(&c, what, NOTHING, r, keep, comm, request);
        }
        let (sp, sl, cs, ds) =
            vstage(&mut keep, sendbuf, sendcounts, displs, c.size(), sendtype, true, false)?;
        let r = if in_place(recvbuf) {
            // The root's block stays where it is: the schedule's copy of it
            // goes to a scratch buffer.
            let mut v = vec![0u8; cs[root]];
            let p = v.as_mut_ptr();
            keep.hold(v);
            (p, cs[root])
        } else {
            let r = stage(&mut keep, recvbuf, large::count(recvcount)?, recvtype, false, true)?;
            check_block(cs[root], r.1)?;
            r
        };
        let what = NbColl::Scatterv { root, layout: (&cs, &ds) };
        start_bytes(&c, what, (sp, sl), r, keep, comm, request)
    }
}

coll_fn! {
    /// Starts `MPI_Alltoall` with blocks of varying sizes and places.
    fn MPI_Ialltoallv / PMPI_Ialltoallv, MPI_Ialltoallv_c / PMPI_Ialltoallv_c = ialltoallv_core(
        sendbuf: *const c_void, sendcounts: *const C, sdispls: *const D, sendtype: Handle,
        recvbuf: *mut c_void, recvcounts: *const C, rdispls: *const D, recvtype: Handle,
        comm: Handle, request: *mut Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter_nb::start(comm, request, || {
                let mut k = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
                let n = crate::inter::remote_size(comm)?;
                let [k0, k1, k2, k3] = &mut k;
                let (sc, sd) = (C::ints(sendcounts, n, k0)?, D::ints(sdispls, n, k1)?);
                let (rc, rd) = (C::ints(recvcounts, n, k2)?, D::ints(rdispls, n, k3)?);
                crate::inter::alltoallv(sendbuf, 0, Some((sc, sd)), sendtype, recvbuf, 0, Some((rc, rd)), recvtype, comm).map(|()| None)
            });
        }
        request_arg(request)?;
        let c = state::comm(comm)?;
        let n = c.size();
        let mut keep = Keep::default();
        let ip = in_place(sendbuf);
        let (rp, rl, rc, rd) = vstage(&mut keep, recvbuf, recvcounts, rdispls, n, recvtype, ip, true)?;
        if ip {
            let s = copy_kept(&mut keep, rp, rl);
            let what = NbColl::Alltoallv { send: (&rc, &rd), recv: (&rc, &rd) };
            return start_bytes(&c, what, (s, rl), (rp, rl), keep, comm, request);
        }
        let (sp, sl, sc, sd) = vstage(&mut keep, sendbuf, sendcounts, sdispls, n, sendtype, true, false)?;
        let what = NbColl::Alltoallv { send: (&sc, &sd), recv: (&rc, &rd) };
        start_bytes(&c, what, (sp, sl), (rp, rl), keep, comm, request)
    }
}

// ----- reductions -----

/// `len` bytes at `p` as `T`s for the schedule: the caller's buffer if it
/// is aligned for `T`, else an aligned copy kept in `keep` (copied back
/// into the buffer at completion if `back`). Returns the address and the
/// number of elements.
///
/// # Safety
/// `p` valid for `len` bytes (written if `back`) until completion.
unsafe fn typed_buf<T: Num>(
    keep: &mut Keep,
    p: *mut u8,
    len: usize,
    back: bool,
) -> (*mut T, usize) {
    let n = len / std::mem::size_of::<T>().max(1);
    if n == 0 {
        return (std::ptr::null_mut(), 0);
    }
    if (p as usize) % std::mem::align_of::<T>() == 0 {
        return (p as *mut T, n);
    }
    let mut v = vec![T::zeroed(); n];
    // SAFETY: the caller's contract; `v` holds `n * size_of::<T>() <= len` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(p, v.as_mut_ptr() as *mut u8, n * std::mem::size_of::<T>())
    };
    let q = v.as_mut_ptr();
    if back {
        keep.jobs.push(Box::new(move || {
            // SAFETY: the caller's contract: `p` writable until completion.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    v.as_ptr() as *const u8,
                    p,
                    n * std::mem::size_of::<T>(),
                )
            };
            Ok(())
        }));
    } else {
        keep.hold(v);
    }
    (q, n)
}

/// Starts reduction `what` of `T`s with `k` and registers it.
///
/// # Safety
/// The buffers valid until completion; `request` for a write.
#[allow(clippy::too_many_arguments)]
unsafe fn start_reduce<T: Num>(
    c: &Comm,
    what: NbColl<'_>,
    send: (*const u8, usize),
    recv: (*mut u8, usize),
    k: reduce::Kind,
    mut keep: Keep,
    comm: Handle,
    request: *mut Handle,
) -> R<()> {
    // SAFETY: the caller's contract.
    unsafe {
        let (sp, sn) = typed_buf::<T>(&mut keep, send.0 as *mut u8, send.1, false);
        let (rp, rn) = typed_buf::<T>(&mut keep, recv.0, recv.1, true);
        let raw = c.icoll_detached(what, sp as *const T, sn, rp, rn, DynOp(k))?;
        register(raw, keep, comm, request)
    }
}

/// Which reduction a [`start_general`] runs.
enum Gen<'a> {
    /// `MPI_Ireduce` to `root`.
    Reduce { root: usize },
    /// `MPI_Iallreduce` (`None`), `MPI_Iscan` (`Some(true)`), `MPI_Iexscan`
    /// (`Some(false)`).
    All { scan: Option<bool> },
    /// `MPI_Ireduce_scatter(_block)` with `counts` elements per rank.
    Scatter { counts: &'a [usize] },
}

/// A nonblocking reduction with a user operation on a derived (or opaque)
/// datatype: as the blocking forms ([`crate::userop::General`]), every
/// contribution is packed (in the call), the packed contributions are
/// gathered by a nonblocking byte collective, and the user function folds
/// them in rank order when the request completes, on buffers laid out as
/// the datatype says; the result is unpacked into `recvbuf` then.
///
/// # Safety
/// The buffers valid for their elements until the request completes;
/// `request` for a write.
#[allow(clippy::too_many_arguments)]
unsafe fn start_general(
    g: crate::userop::General,
    c: &Comm,
    what: Gen<'_>,
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    count: usize,
    comm: Handle,
    request: *mut Handle,
) -> R<()> {
    let src = if in_place(sendbuf) {
        recvbuf as *const c_void
    } else {
        sendbuf
    };
    let (n, me) = (c.size(), c.rank());
    let total = match what {
        Gen::Scatter { counts } => counts.iter().sum(),
        _ => count,
    };
    // SAFETY: the caller's contract.
    let mine = unsafe { g.pack(src, total)? };
    match what {
        Gen::Reduce { root } => {
            let len = mine.len();
            let at_root = me == root;
            let recv = vec![0u8; if at_root { len * n } else { 0 }];
            let nb = NbColl::Gather {
                root,
                blk: len,
                in_place: false,
            };
            let finish = move |all: &[u8]| -> R<()> {
                if at_root && len > 0 {
                    if let Some(r) = g.fold(all.chunks(len), count)? {
                        // SAFETY: the caller's contract.
                        unsafe { g.unpack(&r, recvbuf, count)? };
                    }
                }
                Ok(())
            };
            // SAFETY: the caller's contract.
            unsafe { start_owned(c, nb, mine, recv, finish, comm, request) }
        }
        Gen::All { scan } => {
            let len = mine.len();
            let upto = match scan {
                None => n,
                Some(true) => me + 1,
                Some(false) => me,
            };
            let recv = vec![0u8; len * n];
            let finish = move |all: &[u8]| -> R<()> {
                if len > 0 {
                    if let Some(r) = g.fold(all.chunks(len).take(upto), count)? {
                        // SAFETY: the caller's contract.
                        unsafe { g.unpack(&r, recvbuf, count)? };
                    }
                }
                Ok(())
            };
            // SAFETY: the caller's contract.
            unsafe { start_owned(c, NbColl::Allgather, mine, recv, finish, comm, request) }
        }
        Gen::Scatter { counts } => {
            let sc = counts.iter().map(|&k| g.len(k)).collect::<R<Vec<_>>>()?;
            let mut sd = Vec::with_capacity(n);
            let mut at = 0;
            for &l in &sc {
                sd.push(at);
                at += l;
            }
            let len = sc[me];
            let rc = vec![len; n];
            let rd: Vec<usize> = (0..n).map(|i| i * len).collect();
            let recv = vec![0u8; len * n];
            let mine_count = counts[me];
            let finish = move |all: &[u8]| -> R<()> {
                if len > 0 {
                    if let Some(r) = g.fold(all.chunks(len), mine_count)? {
                        // SAFETY: the caller's contract.
                        unsafe { g.unpack(&r, recvbuf, mine_count)? };
                    }
                }
                Ok(())
            };
            let nb = NbColl::Alltoallv {
                send: (&sc, &sd),
                recv: (&rc, &rd),
            };
            // SAFETY: the caller's contract.
            unsafe { start_owned(c, nb, mine, recv, finish, comm, request) }
        }
    }
}

/// The element type and operation of a reduction, checked.
fn reduction(dt: Handle, op: Handle) -> R<(crate::datatype::Elem, reduce::Kind, usize)> {
    let t = datatype::for_reduction(dt)?;
    let k = reduce::check_on(op, dt, &t)?;
    Ok((t.elem, k, t.size))
}

/// `count` elements of `dt` at `p` as bytes, null checked.
///
/// # Safety
/// None beyond the caller's (no access here).
unsafe fn span(p: *const c_void, len: usize) -> R<*mut u8> {
    if len > 0 && p.is_null() {
        return Err(err(abi::ERR_BUFFER, "null buffer with a nonzero count"));
    }
    Ok(p as *mut u8)
}

coll_fn! {
    /// Starts combining every rank's buffer with `op` into `root`'s.
    fn MPI_Ireduce / PMPI_Ireduce, MPI_Ireduce_c / PMPI_Ireduce_c = ireduce_core(
        sendbuf: *const c_void, recvbuf: *mut c_void, count: C,
        datatype: Handle, op: Handle, root: c_int, comm: Handle, request: *mut Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter_nb::start(comm, request, || crate::inter_nb::ireduce(sendbuf, recvbuf, count.narrow()?, datatype, op, root, comm));
        }
        request_arg(request)?;
        let c = state::comm(comm)?;
        let root = root_of(&c, root)?;
        if let Some(g) = crate::userop::general(datatype, op)? {
            return start_general(g, &c, Gen::Reduce { root }, sendbuf, recvbuf, large::count(count)?, comm, request);
        }
        let (elem, k, _) = reduction(datatype, op)?;
        let len = large::bytes(count, datatype)?;
        let me = c.rank() == root;
        let ip = me && in_place(sendbuf);
        let s = if ip { NOTHING } else { (span(sendbuf, len)? as *const u8, len) };
        let r = if me { (span(recvbuf, len)?, len) } else { NOWHERE };
        let what = NbColl::Reduce { root, in_place: ip };
        reduce::typed!(elem, start_reduce(&c, what, s, r, k, Keep::default(), comm, request))
    }
}

coll_fn! {
    /// Starts combining every rank's buffer with `op`; every rank gets the result.
    fn MPI_Iallreduce / PMPI_Iallreduce, MPI_Iallreduce_c / PMPI_Iallreduce_c = iallreduce_core(
        sendbuf: *const c_void, recvbuf: *mut c_void, count: C,
        datatype: Handle, op: Handle, comm: Handle, request: *mut Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter_nb::start(comm, request, || crate::inter_nb::iallreduce(sendbuf, recvbuf, count.narrow()?, datatype, op, comm));
        }
        request_arg(request)?;
        let c = state::comm(comm)?;
        if let Some(g) = crate::userop::general(datatype, op)? {
            return start_general(g, &c, Gen::All { scan: None }, sendbuf, recvbuf, large::count(count)?, comm, request);
        }
        let (elem, k, _) = reduction(datatype, op)?;
        let len = large::bytes(count, datatype)?;
        let ip = in_place(sendbuf);
        let s = if ip { NOTHING } else { (span(sendbuf, len)? as *const u8, len) };
        let r = (span(recvbuf, len)?, len);
        let what = NbColl::Allreduce { in_place: ip };
        reduce::typed!(elem, start_reduce(&c, what, s, r, k, Keep::default(), comm, request))
    }
}

coll_fn! {
    /// Starts combining with `op` and scattering the result in blocks of `recvcounts`.
    fn MPI_Ireduce_scatter / PMPI_Ireduce_scatter, MPI_Ireduce_scatter_c / PMPI_Ireduce_scatter_c = ireduce_scatter_core(
        sendbuf: *const c_void, recvbuf: *mut c_void, recvcounts: *const C,
        datatype: Handle, op: Handle, comm: Handle, request: *mut Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter_nb::start(comm, request, || {
                let mut k = Vec::new();
                let rc = C::ints(recvcounts, crate::inter::local_size(comm)?, &mut k)?;
                crate::inter_nb::ireduce_scatter(sendbuf, recvbuf, rc, datatype, op, comm)
            });
        }
        request_arg(request)?;
        let c = state::comm(comm)?;
        if let Some(g) = crate::userop::general(datatype, op)? {
            let raw = arr(recvcounts, c.size(), "recvcounts")?;
            let counts = raw.iter().map(|&x| large::count(x)).collect::<R<Vec<usize>>>()?;
            return start_general(g, &c, Gen::Scatter { counts: &counts }, sendbuf, recvbuf, 0, comm, request);
        }
        let (elem, k, size) = reduction(datatype, op)?;
        let raw = arr(recvcounts, c.size(), "recvcounts")?;
        let counts = raw.iter().map(|&x| large::count(x)).collect::<R<Vec<usize>>>()?;
        let total = counts.iter().try_fold(0usize, |a, &x| a.checked_add(x))
            .and_then(|t| t.checked_mul(size))
            .ok_or_else(|| err(abi::ERR_COUNT, "the counts overflow"))?;
        let mine = counts[c.rank()] * size;
        let mut keep = Keep::default();
        let s = if in_place(sendbuf) {
            let p = span(recvbuf, total)?;
            (copy_kept(&mut keep, p, total), total)
        } else {
            (span(sendbuf, total)? as *const u8, total)
        };
        let r = (span(recvbuf, mine)?, mine);
        let what = NbColl::ReduceScatter { counts: &counts };
        reduce::typed!(elem, start_reduce(&c, what, s, r, k, keep, comm, request))
    }
}

coll_fn! {
    /// Starts `MPI_Ireduce_scatter` with equal blocks.
    fn MPI_Ireduce_scatter_block / PMPI_Ireduce_scatter_block, MPI_Ireduce_scatter_block_c / PMPI_Ireduce_scatter_block_c = ireduce_scatter_block_core(
        sendbuf: *const c_void, recvbuf: *mut c_void, recvcount: C,
        datatype: Handle, op: Handle, comm: Handle, request: *mut Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter_nb::start(comm, request, || crate::inter_nb::ireduce_scatter_block(sendbuf, recvbuf, recvcount.narrow()?, datatype, op, comm));
        }
        request_arg(request)?;
        let c = state::comm(comm)?;
        if let Some(g) = crate::userop::general(datatype, op)? {
            let counts = vec![large::count(recvcount)?; c.size()];
            return start_general(g, &c, Gen::Scatter { counts: &counts }, sendbuf, recvbuf, 0, comm, request);
        }
        let (elem, k, _) = reduction(datatype, op)?;
        let blk = large::bytes(recvcount, datatype)?;
        let total = blk.checked_mul(c.size()).ok_or_else(|| err(abi::ERR_COUNT, "the blocks overflow"))?;
        let mut keep = Keep::default();
        let s = if in_place(sendbuf) {
            let p = span(recvbuf, total)?;
            (copy_kept(&mut keep, p, total), total)
        } else {
            (span(sendbuf, total)? as *const u8, total)
        };
        let r = (span(recvbuf, blk)?, blk);
        reduce::typed!(elem, start_reduce(&c, NbColl::ReduceScatterBlock, s, r, k, keep, comm, request))
    }
}

/// `Iscan` (`inclusive`) or `Iexscan`.
///
/// # Safety
/// The buffers valid for `count` elements of `dt` until completion.
#[allow(clippy::too_many_arguments)]
unsafe fn iscan<C: Wide>(
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    count: C,
    dt: Handle,
    op: Handle,
    comm: Handle,
    request: *mut Handle,
    inclusive: bool,
) -> R<()> {
    crate::inter::deny(comm)?;
    request_arg(request)?;
    let c = state::comm(comm)?;
    if let Some(g) = crate::userop::general(dt, op)? {
        let what = Gen::All {
            scan: Some(inclusive),
        };
        // SAFETY: the caller's contract.
        return unsafe {
            start_general(
                g,
                &c,
                what,
                sendbuf,
                recvbuf,
                large::count(count)?,
                comm,
                request,
            )
        };
    }
    let (elem, k, _) = reduction(dt, op)?;
    let len = large::bytes(count, dt)?;
    let mut keep = Keep::default();
    // SAFETY: the caller's contract.
    unsafe {
        let r = (span(recvbuf, len)?, len);
        let s = if in_place(sendbuf) {
            (copy_kept(&mut keep, r.0, len), len)
        } else {
            (span(sendbuf, len)? as *const u8, len)
        };
        let what = NbColl::Scan { inclusive };
        reduce::typed!(elem, start_reduce(&c, what, s, r, k, keep, comm, request))
    }
}

coll_fn! {
    /// Starts an inclusive prefix reduction in rank order.
    fn MPI_Iscan / PMPI_Iscan, MPI_Iscan_c / PMPI_Iscan_c = iscan_core(
        sendbuf: *const c_void, recvbuf: *mut c_void, count: C,
        datatype: Handle, op: Handle, comm: Handle, request: *mut Handle,
    ) on comm => {
        iscan(sendbuf, recvbuf, count, datatype, op, comm, request, true)
    }
}

coll_fn! {
    /// Starts an exclusive prefix reduction in rank order (rank 0's result is undefined).
    fn MPI_Iexscan / PMPI_Iexscan, MPI_Iexscan_c / PMPI_Iexscan_c = iexscan_core(
        sendbuf: *const c_void, recvbuf: *mut c_void, count: C,
        datatype: Handle, op: Handle, comm: Handle, request: *mut Handle,
    ) on comm => {
        iscan(sendbuf, recvbuf, count, datatype, op, comm, request, false)
    }
}

// ----- alltoallw: a datatype and a byte displacement per block -----

/// The blocks of an `Alltoallw` buffer: block `i` is `counts[i]` elements
/// of `types[i]` at byte `displs[i]` of the buffer.
pub(crate) struct WBlocks {
    layouts: Vec<(Layout, usize)>,
    buf: *mut c_void,
    /// Byte lengths and offsets of the blocks packed one after another.
    pub cs: Vec<usize>,
    pub ds: Vec<usize>,
}

impl WBlocks {
    /// # Safety
    /// The arrays valid for `n` entries (or null: `MPI_ERR_ARG`).
    pub unsafe fn new<C: Wide, D: Wide>(
        buf: *const c_void,
        counts: *const C,
        displs: *const D,
        types: *const Handle,
        n: usize,
    ) -> R<WBlocks> {
        // SAFETY: the caller's contract.
        let (c, d) = unsafe { (arr(counts, n, "counts")?, arr(displs, n, "displacements")?) };
        if n > 0 && types.is_null() {
            return Err(err(abi::ERR_ARG, "null array of datatypes"));
        }
        let mut layouts = Vec::with_capacity(n);
        let (mut cs, mut ds, mut at) = (Vec::with_capacity(n), Vec::with_capacity(n), 0usize);
        for i in 0..n {
            // SAFETY: `types` holds `n` handles (the caller's contract).
            let t = unsafe { *types.add(i) };
            let l = datatype::layout_n(large::count(c[i])?, t)?;
            let len = match &l {
                Layout::Dense(x) => *x,
                Layout::Packed { len, .. } => *len,
            };
            let off = large::displ(d[i])?;
            // A null buffer is `MPI_BOTTOM`: the displacements are then
            // addresses (`MPI_Get_address`), beyond `INT_MAX` in the `_c`
            // form; only a block at address 0 is a null buffer.
            if len > 0 && (buf as usize).wrapping_add(off) == 0 {
                return Err(err(abi::ERR_BUFFER, "null buffer with a nonzero count"));
            }
            layouts.push((l, off));
            cs.push(len);
            ds.push(at);
            at = at
                .checked_add(len)
                .ok_or_else(|| err(abi::ERR_COUNT, "the blocks overflow"))?;
        }
        Ok(WBlocks {
            layouts,
            buf: buf as *mut c_void,
            cs,
            ds,
        })
    }

    /// Bytes of all blocks packed.
    pub fn total(&self) -> usize {
        self.cs.iter().sum()
    }

    /// The blocks packed one after another.
    ///
    /// # Safety
    /// The buffer valid for the blocks.
    pub unsafe fn pack(&self) -> R<Vec<u8>> {
        let mut v = Vec::with_capacity(self.total());
        for (l, off) in &self.layouts {
            // The block's address: the buffer (or `MPI_BOTTOM`) plus its
            // displacement.
            let p = (self.buf as *const u8).wrapping_add(*off) as *const c_void;
            match l {
                // SAFETY: the caller's contract: the buffer valid for the blocks.
                Layout::Dense(len) => v.extend_from_slice(unsafe { crate::ptr::src(p, *len)? }),
                Layout::Packed { .. } => {
                    // SAFETY: as for a dense block.
                    let packed = unsafe { crate::types::pack_to_vec(p, l)? };
                    v.extend_from_slice(&packed)
                }
            }
        }
        Ok(v)
    }

    /// Unpacks `data` (the blocks packed one after another) into the buffer.
    ///
    /// # Safety
    /// The buffer valid and writable for the blocks.
    pub unsafe fn unpack(&self, data: &[u8]) -> R<()> {
        for (i, (l, off)) in self.layouts.iter().enumerate() {
            // The block's address, as in `pack`.
            let p = (self.buf as *mut u8).wrapping_add(*off) as *mut c_void;
            // SAFETY: the caller's contract: the buffer valid and writable for the blocks.
            unsafe { crate::types::unpack_from(&data[self.ds[i]..self.ds[i] + self.cs[i]], p, l)? };
        }
        Ok(())
    }
}

coll_fn! {
    /// Starts `MPI_Alltoallv` with a datatype per block and displacements in bytes.
    fn MPI_Ialltoallw / PMPI_Ialltoallw, MPI_Ialltoallw_c / PMPI_Ialltoallw_c = ialltoallw_core(
        sendbuf: *const c_void, sendcounts: *const C, sdispls: *const D, sendtypes: *const Handle,
        recvbuf: *mut c_void, recvcounts: *const C, rdispls: *const D, recvtypes: *const Handle,
        comm: Handle, request: *mut Handle,
    ) on comm => {
        if crate::inter::is_inter(comm) {
            return crate::inter_nb::start(comm, request, || {
                let mut k = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
                let n = crate::inter::remote_size(comm)?;
                let [k0, k1, k2, k3] = &mut k;
                let (sc, sd) = (C::ints(sendcounts, n, k0)?, D::ints(sdispls, n, k1)?);
                let (rc, rd) = (C::ints(recvcounts, n, k2)?, D::ints(rdispls, n, k3)?);
                crate::inter::alltoallw(sendbuf, sc, sd, sendtypes, recvbuf, rc, rd, recvtypes, comm).map(|()| None)
            });
        }
        request_arg(request)?;
        let c = state::comm(comm)?;
        let n = c.size();
        let r = WBlocks::new(recvbuf, recvcounts, rdispls, recvtypes, n)?;
        let (send, scs, sds) = if in_place(sendbuf) {
            (r.pack()?, r.cs.clone(), r.ds.clone())
        } else {
            let s = WBlocks::new(sendbuf, sendcounts, sdispls, sendtypes, n)?;
            (s.pack()?, s.cs, s.ds)
        };
        let (rcs, rds) = (r.cs.clone(), r.ds.clone());
        let mut tmp = vec![0u8; r.total()];
        let (rp, rl) = (tmp.as_mut_ptr(), tmp.len());
        let what = NbColl::Alltoallv { send: (&scs, &sds), recv: (&rcs, &rds) };
        let (sp, sl) = (send.as_ptr(), send.len());
        let mut keep = Keep::default();
        keep.hold(send);
        // SAFETY: the caller keeps the buffer until the request completes.
        keep.jobs.push(Box::new(move || unsafe { r.unpack(&tmp) }));
        start_bytes(&c, what, (sp, sl), (rp, rl), keep, comm, request)
    }
}

// ----- persistent collectives (MPI-4): each `MPI_Start` starts the
// nonblocking collective with the arguments given at init -----

/// A context of its own for one persistent collective, made at its
/// `*_init` (collective, in init order on every rank): MPI-4 matches
/// persistent collectives by the order of their initialization, not of
/// their `MPI_Start`s (MPICH's coll/p_order starts a bcast and a barrier in
/// opposite orders on different ranks). A duplicate of `comm` without its
/// attributes (no copy callback runs), with its error handler; it lives
/// until `MPI_Finalize`.
fn own_context(comm: Handle) -> R<Handle> {
    let d = state::comm(comm)?.dup()?;
    let errhandler = state::errhandler_of(comm);
    let h = state::with(|st| {
        Ok(st.comms.insert(state::CommEntry {
            comm: d,
            errhandler,
        }))
    })?;
    crate::topo::copy(comm, h);
    Ok(h)
}

/// Defines `MPI_X_init` from `PMPI_IX`: the arguments (checked when the
/// request is started: an error then is returned by `MPI_Start`) kept as
/// given, the buffers and arrays by address as the standard lets it.
macro_rules! coll_init {
    ($($mpi:ident / $pmpi:ident => $inb:ident ( $($a:ident : $t:ty),* ) ;)*) => {$(
        mpi_fn! {
            /// A persistent collective (MPI-4): `MPI_Start` starts its nonblocking form.
            fn $mpi / $pmpi($($a: $t,)* comm: Handle, _info: Handle, request: *mut Handle) on comm => {
                let own = own_context(comm)?;
                let start: crate::persist::Starter = std::rc::Rc::new(move |r: *mut Handle| {
                    // SAFETY: the arguments as given at init, valid until the
                    // request is freed (the standard's rule for persistent requests).
                    unsafe { $inb($($a,)* own, r) }
                });
                crate::persist::coll_init(comm, request, start)
            }
        }
    )*};
}

/// Defines `MPI_X_init` and `MPI_X_init_c` from the core of `MPI_IX` and
/// `MPI_IX_c` (see [`coll_fn!`](crate::coll_fn)): as [`coll_init!`], with
/// the errors of a start reported as the nonblocking form reports them.
macro_rules! coll_init_c {
    ($($mpi:ident / $pmpi:ident, $mpic:ident / $pmpic:ident => $core:ident ( $($a:ident : $t:ty),* ) ;)*) => {$(
        mpi_fn! {
            /// A persistent collective (MPI-4): `MPI_Start` starts its nonblocking form.
            fn $mpi / $pmpi($($a: $t,)* comm: Handle, _info: Handle, request: *mut Handle) on comm => {
                persistent(comm, request, move |own, r| {
                    // SAFETY: the arguments as given at init, valid until the
                    // request is freed (the standard's rule for persistent requests).
                    unsafe { $core::<C, D>($($a,)* own, r) }
                })
            }
        }
        const _: () = {
            type C = $crate::large::Count;
            type D = $crate::large::Aint;
            mpi_fn! {
                /// A persistent collective, large-count form (MPI-4).
                fn $mpic / $pmpic($($a: $t,)* comm: Handle, _info: Handle, request: *mut Handle) on comm => {
                    persistent(comm, request, move |own, r| {
                        // SAFETY: as for the `int` form.
                        unsafe { $core::<C, D>($($a,)* own, r) }
                    })
                }
            }
        };
    )*};
}

/// A persistent collective on a context of its own whose start runs
/// `start(own, request)`.
///
/// # Safety
/// `request` valid for a write.
unsafe fn persistent(
    comm: Handle,
    request: *mut Handle,
    start: impl Fn(Handle, *mut Handle) -> R<()> + 'static,
) -> R<()> {
    let own = own_context(comm)?;
    let start: crate::persist::Starter = std::rc::Rc::new(move |r: *mut Handle| {
        crate::error::finish("MPI_Start", own, || start(own, r))
    });
    // SAFETY: the caller's contract.
    unsafe { crate::persist::coll_init(comm, request, start) }
}

coll_init! {
    MPI_Barrier_init / PMPI_Barrier_init => PMPI_Ibarrier();
}

coll_init_c! {
    MPI_Bcast_init / PMPI_Bcast_init, MPI_Bcast_init_c / PMPI_Bcast_init_c => ibcast_core(buffer: *mut c_void, count: C, datatype: Handle, root: c_int);
    MPI_Reduce_init / PMPI_Reduce_init, MPI_Reduce_init_c / PMPI_Reduce_init_c => ireduce_core(sendbuf: *const c_void, recvbuf: *mut c_void, count: C, datatype: Handle, op: Handle, root: c_int);
    MPI_Allreduce_init / PMPI_Allreduce_init, MPI_Allreduce_init_c / PMPI_Allreduce_init_c => iallreduce_core(sendbuf: *const c_void, recvbuf: *mut c_void, count: C, datatype: Handle, op: Handle);
    MPI_Gather_init / PMPI_Gather_init, MPI_Gather_init_c / PMPI_Gather_init_c => igather_core(sendbuf: *const c_void, sendcount: C, sendtype: Handle, recvbuf: *mut c_void, recvcount: C, recvtype: Handle, root: c_int);
    MPI_Scatter_init / PMPI_Scatter_init, MPI_Scatter_init_c / PMPI_Scatter_init_c => iscatter_core(sendbuf: *const c_void, sendcount: C, sendtype: Handle, recvbuf: *mut c_void, recvcount: C, recvtype: Handle, root: c_int);
    MPI_Allgather_init / PMPI_Allgather_init, MPI_Allgather_init_c / PMPI_Allgather_init_c => iallgather_core(sendbuf: *const c_void, sendcount: C, sendtype: Handle, recvbuf: *mut c_void, recvcount: C, recvtype: Handle);
    MPI_Alltoall_init / PMPI_Alltoall_init, MPI_Alltoall_init_c / PMPI_Alltoall_init_c => ialltoall_core(sendbuf: *const c_void, sendcount: C, sendtype: Handle, recvbuf: *mut c_void, recvcount: C, recvtype: Handle);
    MPI_Gatherv_init / PMPI_Gatherv_init, MPI_Gatherv_init_c / PMPI_Gatherv_init_c => igatherv_core(sendbuf: *const c_void, sendcount: C, sendtype: Handle, recvbuf: *mut c_void, recvcounts: *const C, displs: *const D, recvtype: Handle, root: c_int);
    MPI_Scatterv_init / PMPI_Scatterv_init, MPI_Scatterv_init_c / PMPI_Scatterv_init_c => iscatterv_core(sendbuf: *const c_void, sendcounts: *const C, displs: *const D, sendtype: Handle, recvbuf: *mut c_void, recvcount: C, recvtype: Handle, root: c_int);
    MPI_Allgatherv_init / PMPI_Allgatherv_init, MPI_Allgatherv_init_c / PMPI_Allgatherv_init_c => iallgatherv_core(sendbuf: *const c_void, sendcount: C, sendtype: Handle, recvbuf: *mut c_void, recvcounts: *const C, displs: *const D, recvtype: Handle);
    MPI_Alltoallv_init / PMPI_Alltoallv_init, MPI_Alltoallv_init_c / PMPI_Alltoallv_init_c => ialltoallv_core(sendbuf: *const c_void, sendcounts: *const C, sdispls: *const D, sendtype: Handle, recvbuf: *mut c_void, recvcounts: *const C, rdispls: *const D, recvtype: Handle);
    MPI_Alltoallw_init / PMPI_Alltoallw_init, MPI_Alltoallw_init_c / PMPI_Alltoallw_init_c => ialltoallw_core(sendbuf: *const c_void, sendcounts: *const C, sdispls: *const D, sendtypes: *const Handle, recvbuf: *mut c_void, recvcounts: *const C, rdispls: *const D, recvtypes: *const Handle);
    MPI_Reduce_scatter_init / PMPI_Reduce_scatter_init, MPI_Reduce_scatter_init_c / PMPI_Reduce_scatter_init_c => ireduce_scatter_core(sendbuf: *const c_void, recvbuf: *mut c_void, recvcounts: *const C, datatype: Handle, op: Handle);
    MPI_Reduce_scatter_block_init / PMPI_Reduce_scatter_block_init, MPI_Reduce_scatter_block_init_c / PMPI_Reduce_scatter_block_init_c => ireduce_scatter_block_core(sendbuf: *const c_void, recvbuf: *mut c_void, recvcount: C, datatype: Handle, op: Handle);
    MPI_Scan_init / PMPI_Scan_init, MPI_Scan_init_c / PMPI_Scan_init_c => iscan_core(sendbuf: *const c_void, recvbuf: *mut c_void, count: C, datatype: Handle, op: Handle);
    MPI_Exscan_init / PMPI_Exscan_init, MPI_Exscan_init_c / PMPI_Exscan_init_c => iexscan_core(sendbuf: *const c_void, recvbuf: *mut c_void, count: C, datatype: Handle, op: Handle);
}

use crate::neighbor::{
    ineighbor_allgather_core, ineighbor_allgatherv_core, ineighbor_alltoall_core,
    ineighbor_alltoallv_core, ineighbor_alltoallw_core,
};

coll_init_c! {
    MPI_Neighbor_allgather_init / PMPI_Neighbor_allgather_init, MPI_Neighbor_allgather_init_c / PMPI_Neighbor_allgather_init_c => ineighbor_allgather_core(sendbuf: *const c_void, sendcount: C, sendtype: Handle, recvbuf: *mut c_void, recvcount: C, recvtype: Handle);
    MPI_Neighbor_allgatherv_init / PMPI_Neighbor_allgatherv_init, MPI_Neighbor_allgatherv_init_c / PMPI_Neighbor_allgatherv_init_c => ineighbor_allgatherv_core(sendbuf: *const c_void, sendcount: C, sendtype: Handle, recvbuf: *mut c_void, recvcounts: *const C, displs: *const D, recvtype: Handle);
    MPI_Neighbor_alltoall_init / PMPI_Neighbor_alltoall_init, MPI_Neighbor_alltoall_init_c / PMPI_Neighbor_alltoall_init_c => ineighbor_alltoall_core(sendbuf: *const c_void, sendcount: C, sendtype: Handle, recvbuf: *mut c_void, recvcount: C, recvtype: Handle);
    MPI_Neighbor_alltoallv_init / PMPI_Neighbor_alltoallv_init, MPI_Neighbor_alltoallv_init_c / PMPI_Neighbor_alltoallv_init_c => ineighbor_alltoallv_core(sendbuf: *const c_void, sendcounts: *const C, sdispls: *const D, sendtype: Handle, recvbuf: *mut c_void, recvcounts: *const C, rdispls: *const D, recvtype: Handle);
    MPI_Neighbor_alltoallw_init / PMPI_Neighbor_alltoallw_init, MPI_Neighbor_alltoallw_init_c / PMPI_Neighbor_alltoallw_init_c => ineighbor_alltoallw_core(sendbuf: *const c_void, sendcounts: *const C, sdispls: *const isize, sendtypes: *const Handle, recvbuf: *mut c_void, recvcounts: *const C, rdispls: *const isize, recvtypes: *const Handle);
}
