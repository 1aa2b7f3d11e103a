//! Neighbourhood collectives (`MPI_Neighbor_allgather(v)`,
//! `MPI_Neighbor_alltoall(v,w)` and their nonblocking `MPI_Ineighbor_*`
//! forms) on Cartesian, graph and distributed-graph communicators.
//!
//! The neighbours are those of [`crate::topo::neighbours`]: for a Cartesian
//! topology, per dimension the one at -1 then the one at +1
//! (`MPI_PROC_NULL` at a non-periodic edge: its block is neither sent nor
//! touched); for a graph, the node's neighbours both ways; for a
//! distributed graph, the sources and the destinations in the order given.
//! Every block is packed, and all blocks for one peer travel in one message
//! of a byte `alltoallv` on the communicator's collective context, so user
//! point-to-point traffic (`MPI_ANY_TAG` included) never sees them. Blocks
//! to the same peer are matched in order: the k-th block from rank `a` to
//! rank `b` fills the k-th slot of `b` whose source is `a`, except on a
//! Cartesian topology, where a block sent towards +1 fills the receiver's
//! -1 slot and the reverse, which is what makes periodic dimensions of size
//! 1 and 2 correct.
//!
//! The nonblocking forms pack the blocks in the call and start the byte
//! exchange as a nonblocking collective; it progresses in the engine (in
//! any MPI call, as dos's other nonblocking collectives) and the received
//! blocks are unpacked when `Wait`/`Test` completes the request. Every
//! rank takes part in the exchange, as in any collective of the
//! communicator.

use std::ffi::c_void;

use crate::abi::{self, Handle};
use crate::datatype::{self, Layout};
use crate::error::{err, R};
use crate::large::{self, arr, Wide, C, D};
use crate::state;
use crate::types::{pack_to_vec, unpack_from};

/// One block of a neighbourhood collective: where, how many, of what.
#[derive(Clone, Copy)]
struct Block {
    addr: *mut u8,
    count: usize,
    dt: Handle,
}

impl Block {
    fn layout(&self) -> R<Layout> {
        datatype::layout_n(self.count, self.dt)
    }

    fn bytes(&self) -> R<usize> {
        Ok(match self.layout()? {
            Layout::Dense(n) => n,
            Layout::Packed { len, .. } => len,
        })
    }

    /// The block packed.
    ///
    /// # Safety
    /// `addr` valid for the block.
    unsafe fn pack(&self) -> R<Vec<u8>> {
        match self.layout()? {
            Layout::Dense(n) => {
                // SAFETY: the caller's contract.
                let s = unsafe { crate::ptr::src(self.addr as *const c_void, n)? };
                Ok(s.to_vec())
            }
            // SAFETY: the caller's contract.
            l => unsafe { pack_to_vec(self.addr as *const c_void, &l) },
        }
    }

    /// `data` unpacked into the block.
    ///
    /// # Safety
    /// `addr` valid for the block.
    unsafe fn unpack(&self, data: &[u8]) -> R<()> {
        if data.is_empty() {
            return Ok(());
        }
        let l = self.layout()?;
        if let Layout::Dense(n) = l {
            // SAFETY: the caller's contract.
            let d = unsafe { crate::ptr::dst(self.addr as *mut c_void, n)? };
            let k = n.min(data.len());
            d[..k].copy_from_slice(&data[..k]);
            return Ok(());
        }
        // SAFETY: the caller's contract.
        unsafe { unpack_from(data, self.addr as *mut c_void, &l) }
    }
}

/// The extent of `dt` in bytes (the stride of consecutive blocks).
fn extent(dt: Handle) -> R<isize> {
    Ok(datatype::ty(dt)?.extent())
}

/// `base + off` bytes (the caller vouches for the address).
fn at(base: *const c_void, off: isize) -> *mut u8 {
    (base as *mut u8).wrapping_offset(off)
}

/// Equal blocks of `count` elements of `dt`, one per neighbour, from `base`.
fn equal_blocks<C: Wide>(base: *const c_void, count: C, dt: Handle, n: usize) -> R<Vec<Block>> {
    let c = large::count(count)?;
    let stride = extent(dt)?
        .checked_mul(c as isize)
        .ok_or_else(|| err(abi::ERR_COUNT, "a block overflows"))?;
    Ok((0..n)
        .map(|i| Block {
            addr: at(base, stride * i as isize),
            count: c,
            dt,
        })
        .collect())
}

/// Blocks at `displs` (in extents of `dt`) of `counts` elements.
///
/// # Safety
/// `counts`/`displs` valid for `n` ints (or null: `MPI_ERR_ARG`).
unsafe fn v_blocks<C: Wide, D: Wide>(
    base: *const c_void,
    counts: *const C,
    displs: *const D,
    dt: Handle,
    n: usize,
) -> R<Vec<Block>> {
    // SAFETY: the caller's contract.
    let (c, d) = unsafe { (arr(counts, n, "counts")?, arr(displs, n, "displacements")?) };
    let e = extent(dt)?;
    (0..n)
        .map(|i| {
            Ok(Block {
                addr: at(base, e.wrapping_mul(d[i].wide() as isize)),
                count: large::count(c[i])?,
                dt,
            })
        })
        .collect()
}

/// Blocks at byte `displs` of `counts` elements of `types[i]`.
///
/// # Safety
/// The arrays valid for `n` elements (or null: `MPI_ERR_ARG`).
unsafe fn w_blocks<C: Wide>(
    base: *const c_void,
    counts: *const C,
    displs: *const isize,
    types: *const Handle,
    n: usize,
) -> R<Vec<Block>> {
    if n > 0 && (displs.is_null() || types.is_null()) {
        return Err(err(abi::ERR_ARG, "null displacements or datatypes"));
    }
    // SAFETY: the caller's contract.
    let c = unsafe { arr(counts, n, "counts")? };
    (0..n)
        .map(|i| {
            // SAFETY: the caller's contract: n elements.
            let (d, t) = unsafe { (*displs.add(i), *types.add(i)) };
            datatype::get(t)?;
            Ok(Block {
                addr: at(base, d),
                count: large::count(c[i])?,
                dt: t,
            })
        })
        .collect()
}

/// Runs one neighbourhood exchange on `comm`: `sends[j]` goes to
/// destination `j`, `recvs[i]` is filled from source `i`. With `start`, the
/// nonblocking form: the exchange is started (a nonblocking byte
/// `alltoallv`) and its request stored in `*nb`; the blocks are unpacked
/// when it completes.
///
/// # Safety
/// Every block valid for its elements (until the request completes with
/// `start`); `start` valid for a write.
unsafe fn exchange(
    comm: Handle,
    sends: &[Block],
    recvs: &[Block],
    start: Option<*mut Handle>,
) -> R<()> {
    let c = state::comm(comm)?;
    let nb = crate::topo::neighbours(comm)?;
    if sends.len() != nb.dests.len() || recvs.len() != nb.sources.len() {
        return Err(err(
            abi::ERR_INTERN,
            "neighbour blocks do not match the topology",
        ));
    }
    let n = c.size();
    let peer = |r: i32| -> R<Option<usize>> {
        if r == abi::PROC_NULL {
            return Ok(None);
        }
        usize::try_from(r)
            .ok()
            .filter(|&p| p < n)
            .map(Some)
            .ok_or_else(|| {
                err(
                    abi::ERR_RANK,
                    format!("neighbour {r} outside the communicator"),
                )
            })
    };
    // The receiver's slot a block fills, as a key to order blocks per peer.
    let key = |j: usize| if nb.cart { j ^ 1 } else { j };
    let mut out: Vec<Vec<(usize, Vec<u8>)>> = vec![Vec::new(); n];
    for (j, (b, &d)) in sends.iter().zip(&nb.dests).enumerate() {
        if let Some(p) = peer(d)? {
            // SAFETY: the caller's contract.
            out[p].push((key(j), unsafe { b.pack()? }));
        }
    }
    let mut scounts = vec![0usize; n];
    let mut sdata = Vec::new();
    let mut sdispls = vec![0usize; n];
    for (p, list) in out.iter_mut().enumerate() {
        list.sort_by_key(|(k, _)| *k);
        sdispls[p] = sdata.len();
        for (_, v) in list.iter() {
            sdata.extend_from_slice(v);
        }
        scounts[p] = sdata.len() - sdispls[p];
    }
    // What comes from each peer, slot by slot in order.
    let mut inn: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
    for (i, (b, &s)) in recvs.iter().zip(&nb.sources).enumerate() {
        if let Some(p) = peer(s)? {
            inn[p].push((i, b.bytes()?));
        }
    }
    let mut rcounts = vec![0usize; n];
    let mut rdispls = vec![0usize; n];
    let mut total = 0usize;
    for p in 0..n {
        rdispls[p] = total;
        rcounts[p] = inn[p].iter().map(|&(_, l)| l).sum();
        total += rcounts[p];
    }
    let recvs = recvs.to_vec();
    let at = rdispls.clone();
    let unpack = move |rdata: &[u8]| -> R<()> {
        for p in 0..n {
            let mut off = at[p];
            for &(i, l) in &inn[p] {
                // SAFETY: the caller's contract.
                unsafe { recvs[i].unpack(&rdata[off..off + l])? };
                off += l;
            }
        }
        Ok(())
    };
    let rdata = vec![0u8; total];
    match start {
        None => {
            let mut rdata = rdata;
            c.alltoallv(&sdata, &scounts, &sdispls, &mut rdata, &rcounts, &rdispls)?;
            unpack(&rdata)
        }
        Some(request) => {
            let what = dos::detached::NbColl::Alltoallv {
                send: (&scounts, &sdispls),
                recv: (&rcounts, &rdispls),
            };
            // SAFETY: the blocks are the caller's; the request is stored in `*request`.
            unsafe { crate::nbc::start_owned(&c, what, sdata, rdata, unpack, comm, request) }
        }
    }
}

/// The in- and out-degree of `comm`'s topology.
fn degrees(comm: Handle) -> R<(usize, usize)> {
    let nb = crate::topo::neighbours(comm)?;
    Ok((nb.sources.len(), nb.dests.len()))
}

fn no_in_place(p: *const c_void) -> R<()> {
    if crate::ptr::in_place(p) {
        return Err(err(
            abi::ERR_ARG,
            "MPI_IN_PLACE is not allowed in a neighbourhood collective",
        ));
    }
    Ok(())
}

/// The request argument of a nonblocking form, checked.
fn request_arg(request: *mut Handle) -> R<*mut Handle> {
    if request.is_null() {
        return Err(err(abi::ERR_REQUEST, "null pointer for request"));
    }
    Ok(request)
}

#[allow(clippy::too_many_arguments)]
unsafe fn allgather<C: Wide, D: Wide>(
    sendbuf: *const c_void,
    sendcount: C,
    sendtype: Handle,
    recvbuf: *mut c_void,
    recvcount: C,
    recvtype: Handle,
    comm: Handle,
    nb: Option<*mut Handle>,
) -> R<()> {
    no_in_place(sendbuf)?;
    let (ind, outd) = degrees(comm)?;
    let s = equal_blocks(sendbuf, sendcount, sendtype, 1)?[0];
    let sends = vec![s; outd];
    let recvs = equal_blocks(recvbuf, recvcount, recvtype, ind)?;
    // SAFETY: the caller's contract.
    unsafe { exchange(comm, &sends, &recvs, nb) }
}

#[allow(clippy::too_many_arguments)]
unsafe fn allgatherv<C: Wide, D: Wide>(
    sendbuf: *const c_void,
    sendcount: C,
    sendtype: Handle,
    recvbuf: *mut c_void,
    recvcounts: *const C,
    displs: *const D,
    recvtype: Handle,
    comm: Handle,
    nb: Option<*mut Handle>,
) -> R<()> {
    no_in_place(sendbuf)?;
    let (ind, outd) = degrees(comm)?;
    let s = equal_blocks(sendbuf, sendcount, sendtype, 1)?[0];
    let sends = vec![s; outd];
    // SAFETY: the caller's contract.
    let recvs = unsafe { v_blocks(recvbuf, recvcounts, displs, recvtype, ind)? };
    // SAFETY: the caller's contract.
    unsafe { exchange(comm, &sends, &recvs, nb) }
}

#[allow(clippy::too_many_arguments)]
unsafe fn alltoall<C: Wide, D: Wide>(
    sendbuf: *const c_void,
    sendcount: C,
    sendtype: Handle,
    recvbuf: *mut c_void,
    recvcount: C,
    recvtype: Handle,
    comm: Handle,
    nb: Option<*mut Handle>,
) -> R<()> {
    no_in_place(sendbuf)?;
    let (ind, outd) = degrees(comm)?;
    let sends = equal_blocks(sendbuf, sendcount, sendtype, outd)?;
    let recvs = equal_blocks(recvbuf, recvcount, recvtype, ind)?;
    // SAFETY: the caller's contract.
    unsafe { exchange(comm, &sends, &recvs, nb) }
}

#[allow(clippy::too_many_arguments)]
unsafe fn alltoallv<C: Wide, D: Wide>(
    sendbuf: *const c_void,
    sendcounts: *const C,
    sdispls: *const D,
    sendtype: Handle,
    recvbuf: *mut c_void,
    recvcounts: *const C,
    rdispls: *const D,
    recvtype: Handle,
    comm: Handle,
    nb: Option<*mut Handle>,
) -> R<()> {
    no_in_place(sendbuf)?;
    let (ind, outd) = degrees(comm)?;
    // SAFETY: the caller's contract.
    let (sends, recvs) = unsafe {
        (
            v_blocks(sendbuf, sendcounts, sdispls, sendtype, outd)?,
            v_blocks(recvbuf, recvcounts, rdispls, recvtype, ind)?,
        )
    };
    // SAFETY: the caller's contract.
    unsafe { exchange(comm, &sends, &recvs, nb) }
}

#[allow(clippy::too_many_arguments)]
unsafe fn alltoallw<C: Wide, D: Wide>(
    sendbuf: *const c_void,
    sendcounts: *const C,
    sdispls: *const isize,
    sendtypes: *const Handle,
    recvbuf: *mut c_void,
    recvcounts: *const C,
    rdispls: *const isize,
    recvtypes: *const Handle,
    comm: Handle,
    nb: Option<*mut Handle>,
) -> R<()> {
    no_in_place(sendbuf)?;
    let (ind, outd) = degrees(comm)?;
    // SAFETY: the caller's contract.
    let (sends, recvs) = unsafe {
        (
            w_blocks(sendbuf, sendcounts, sdispls, sendtypes, outd)?,
            w_blocks(recvbuf, recvcounts, rdispls, recvtypes, ind)?,
        )
    };
    // SAFETY: the caller's contract.
    unsafe { exchange(comm, &sends, &recvs, nb) }
}

coll_fn! {
    /// Gathers one block from every in-neighbour (`sendbuf` goes to every out-neighbour).
    fn MPI_Neighbor_allgather / PMPI_Neighbor_allgather, MPI_Neighbor_allgather_c / PMPI_Neighbor_allgather_c = neighbor_allgather_core(sendbuf: *const c_void, sendcount: C, sendtype: Handle, recvbuf: *mut c_void, recvcount: C, recvtype: Handle, comm: Handle) on comm => {
        allgather::<C, D>(sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, comm, None)
    }
}

coll_fn! {
    /// [`MPI_Neighbor_allgather`] with a count and displacement per in-neighbour.
    fn MPI_Neighbor_allgatherv / PMPI_Neighbor_allgatherv, MPI_Neighbor_allgatherv_c / PMPI_Neighbor_allgatherv_c = neighbor_allgatherv_core(sendbuf: *const c_void, sendcount: C, sendtype: Handle, recvbuf: *mut c_void, recvcounts: *const C, displs: *const D, recvtype: Handle, comm: Handle) on comm => {
        allgatherv::<C, D>(sendbuf, sendcount, sendtype, recvbuf, recvcounts, displs, recvtype, comm, None)
    }
}

coll_fn! {
    /// Block `j` to out-neighbour `j`, block `i` from in-neighbour `i`.
    fn MPI_Neighbor_alltoall / PMPI_Neighbor_alltoall, MPI_Neighbor_alltoall_c / PMPI_Neighbor_alltoall_c = neighbor_alltoall_core(sendbuf: *const c_void, sendcount: C, sendtype: Handle, recvbuf: *mut c_void, recvcount: C, recvtype: Handle, comm: Handle) on comm => {
        alltoall::<C, D>(sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, comm, None)
    }
}

coll_fn! {
    /// [`MPI_Neighbor_alltoall`] with counts and displacements per neighbour.
    fn MPI_Neighbor_alltoallv / PMPI_Neighbor_alltoallv, MPI_Neighbor_alltoallv_c / PMPI_Neighbor_alltoallv_c = neighbor_alltoallv_core(sendbuf: *const c_void, sendcounts: *const C, sdispls: *const D, sendtype: Handle, recvbuf: *mut c_void, recvcounts: *const C, rdispls: *const D, recvtype: Handle, comm: Handle) on comm => {
        alltoallv::<C, D>(sendbuf, sendcounts, sdispls, sendtype, recvbuf, recvcounts, rdispls, recvtype, comm, None)
    }
}

coll_fn! {
    /// [`MPI_Neighbor_alltoall`] with byte displacements and a datatype per neighbour.
    fn MPI_Neighbor_alltoallw / PMPI_Neighbor_alltoallw, MPI_Neighbor_alltoallw_c / PMPI_Neighbor_alltoallw_c = neighbor_alltoallw_core(sendbuf: *const c_void, sendcounts: *const C, sdispls: *const isize, sendtypes: *const Handle, recvbuf: *mut c_void, recvcounts: *const C, rdispls: *const isize, recvtypes: *const Handle, comm: Handle) on comm => {
        alltoallw::<C, D>(sendbuf, sendcounts, sdispls, sendtypes, recvbuf, recvcounts, rdispls, recvtypes, comm, None)
    }
}

coll_fn! {
    /// Nonblocking [`MPI_Neighbor_allgather`] (complete on return).
    fn MPI_Ineighbor_allgather / PMPI_Ineighbor_allgather, MPI_Ineighbor_allgather_c / PMPI_Ineighbor_allgather_c = ineighbor_allgather_core(sendbuf: *const c_void, sendcount: C, sendtype: Handle, recvbuf: *mut c_void, recvcount: C, recvtype: Handle, comm: Handle, request: *mut Handle) on comm => {
        allgather::<C, D>(sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, comm, Some(request_arg(request)?))
    }
}

coll_fn! {
    /// Nonblocking [`MPI_Neighbor_allgatherv`] (complete on return).
    fn MPI_Ineighbor_allgatherv / PMPI_Ineighbor_allgatherv, MPI_Ineighbor_allgatherv_c / PMPI_Ineighbor_allgatherv_c = ineighbor_allgatherv_core(sendbuf: *const c_void, sendcount: C, sendtype: Handle, recvbuf: *mut c_void, recvcounts: *const C, displs: *const D, recvtype: Handle, comm: Handle, request: *mut Handle) on comm => {
        allgatherv::<C, D>(sendbuf, sendcount, sendtype, recvbuf, recvcounts, displs, recvtype, comm, Some(request_arg(request)?))
    }
}

coll_fn! {
    /// Nonblocking [`MPI_Neighbor_alltoall`] (complete on return).
    fn MPI_Ineighbor_alltoall / PMPI_Ineighbor_alltoall, MPI_Ineighbor_alltoall_c / PMPI_Ineighbor_alltoall_c = ineighbor_alltoall_core(sendbuf: *const c_void, sendcount: C, sendtype: Handle, recvbuf: *mut c_void, recvcount: C, recvtype: Handle, comm: Handle, request: *mut Handle) on comm => {
        alltoall::<C, D>(sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, comm, Some(request_arg(request)?))
    }
}

coll_fn! {
    /// Nonblocking [`MPI_Neighbor_alltoallv`] (complete on return).
    fn MPI_Ineighbor_alltoallv / PMPI_Ineighbor_alltoallv, MPI_Ineighbor_alltoallv_c / PMPI_Ineighbor_alltoallv_c = ineighbor_alltoallv_core(sendbuf: *const c_void, sendcounts: *const C, sdispls: *const D, sendtype: Handle, recvbuf: *mut c_void, recvcounts: *const C, rdispls: *const D, recvtype: Handle, comm: Handle, request: *mut Handle) on comm => {
        alltoallv::<C, D>(sendbuf, sendcounts, sdispls, sendtype, recvbuf, recvcounts, rdispls, recvtype, comm, Some(request_arg(request)?))
    }
}

coll_fn! {
    /// Nonblocking [`MPI_Neighbor_alltoallw`] (complete on return).
    fn MPI_Ineighbor_alltoallw / PMPI_Ineighbor_alltoallw, MPI_Ineighbor_alltoallw_c / PMPI_Ineighbor_alltoallw_c = ineighbor_alltoallw_core(sendbuf: *const c_void, sendcounts: *const C, sdispls: *const isize, sendtypes: *const Handle, recvbuf: *mut c_void, recvcounts: *const C, rdispls: *const isize, recvtypes: *const Handle, comm: Handle, request: *mut Handle) on comm => {
        alltoallw::<C, D>(sendbuf, sendcounts, sdispls, sendtypes, recvbuf, recvcounts, rdispls, recvtypes, comm, Some(request_arg(request)?))
    }
}
