//! The nonblocking collectives on an intercommunicator.
//!
//! Each is the blocking form's transfers between the groups, started and
//! not waited for: [`start`] runs a body made of
//! [`exchange`](crate::inter::exchange)s only (straight from and to every
//! remote process, no step on the local group, so no ordering against the
//! local group's collectives) and makes the transfers it started the parts
//! of a compound request; `Wait`/`Test` complete it and then run the hook
//! the body returned (a reduction's fold, in rank order). The reductions
//! share their prologue and the cut of `recvcounts` with the blocking forms
//! ([`reducing`], [`blocks_of`]).

use std::cell::RefCell;
use std::ffi::{c_int, c_void};

use crate::abi::{self, Handle};
use crate::error::{err, R};
use crate::inter::{
    at, blocks_of, ck, exchange, inter, reducing, side, Inter, Side, Tmp, BYTE, T_NB,
};
use crate::state;

thread_local! {
    /// While a nonblocking form runs its blocking body ([`start`]): the
    /// requests [`exchange`] started, not waited for.
    static POSTED: RefCell<Option<Vec<Handle>>> = const { RefCell::new(None) };
}

/// The nonblocking form of an intercommunicator collective: `f`, a
/// blocking body made of [`exchange`]s only (every transfer between the
/// groups, no step on the local group), runs with its transfers started
/// and not waited for; they become the parts of a compound request
/// ([`crate::request::insert_compound`]) stored in `*request`, completed
/// by `Wait`/`Test`, after which the hook `f` returned runs (a reduction's
/// fold). So nothing in the call waits for another process.
///
/// # Safety
/// The buffers `f` uses valid until the request completes; `request` valid
/// for a write.
pub(crate) unsafe fn start(
    comm: Handle,
    request: *mut Handle,
    f: impl FnOnce() -> R<Option<crate::request::After>>,
) -> R<()> {
    if request.is_null() {
        return Err(err(abi::ERR_ARG, "null pointer for request"));
    }
    POSTED.with(|p| *p.borrow_mut() = Some(Vec::new()));
    let r = f();
    let mut parts = POSTED.with(|p| p.borrow_mut().take()).unwrap_or_default();
    let after = match r {
        Ok(a) => a.unwrap_or_else(|| Box::new(|_| Ok(()))),
        Err(e) => {
            // What started must still complete before the buffers go.
            // SAFETY: `parts` holds request handles.
            unsafe {
                crate::request::PMPI_Waitall(
                    parts.len() as c_int,
                    parts.as_mut_ptr(),
                    std::ptr::null_mut(),
                );
            }
            return Err(e);
        }
    };
    // SAFETY: the caller's contract.
    unsafe { crate::request::insert_compound(parts, state::ReqKind::Coll, comm, after, request) }
}

/// The requests [`exchange`] started: kept for the nonblocking form that
/// is running its body (`None`: it must wait for them itself, `Some` given
/// back: no nonblocking form is running).
pub(crate) fn divert(reqs: Vec<Handle>) -> Option<Vec<Handle>> {
    POSTED.with(|p| match p.borrow_mut().as_mut() {
        Some(v) => {
            v.extend(reqs);
            None
        }
        None => Some(reqs),
    })
}

/// `MPI_Ibarrier`'s body: an empty message to and from every remote
/// process (the request completes once all of the other group have
/// entered).
pub(crate) fn ibarrier(comm: Handle) -> R<Option<crate::request::After>> {
    let x = inter(comm)?;
    let n = x.remote.len() as c_int;
    let sends: Vec<_> = (0..n)
        .map(|r| (std::ptr::null::<c_void>(), 0, BYTE, r))
        .collect();
    let recvs: Vec<_> = (0..n)
        .map(|r| (std::ptr::null_mut::<c_void>(), 0, BYTE, r))
        .collect();
    // SAFETY: no data.
    unsafe { exchange(x.hi, &sends, &recvs, T_NB) }?;
    Ok(None)
}

/// `MPI_Ibcast`'s body: the root sends to every process of the other group.
///
/// # Safety
/// As `MPI_Ibcast`.
pub(crate) unsafe fn ibcast(
    buf: *mut c_void,
    count: c_int,
    dt: Handle,
    root: c_int,
    comm: Handle,
) -> R<Option<crate::request::After>> {
    let x = inter(comm)?;
    let (sends, recvs) = match side(&x, root)? {
        Side::Root => (
            (0..x.remote.len() as c_int)
                .map(|r| (buf.cast_const(), count, dt, r))
                .collect(),
            Vec::new(),
        ),
        Side::Idle => (Vec::new(), Vec::new()),
        Side::Leaf(r) => (Vec::new(), vec![(buf, count, dt, r)]),
    };
    // SAFETY: the caller's contract.
    unsafe { exchange(x.hi, &sends, &recvs, T_NB) }?;
    Ok(None)
}

/// Receives `count` elements of `dt` from each remote process in `from`
/// for a reduction: the last one's straight into `rbuf`, the others' into
/// temporaries; the hook folds them into `rbuf` in rank order
/// (`b0 op (b1 op (... op b_last))`, right for non-commutative operations).
///
/// # Safety
/// `rbuf` valid for `count` elements until the request completes.
unsafe fn fold_from(
    x: &Inter,
    from: Vec<c_int>,
    rbuf: *mut c_void,
    count: c_int,
    dt: Handle,
    op: Handle,
    sends: &[(*const c_void, c_int, Handle, c_int)],
) -> R<Option<crate::request::After>> {
    let k = crate::datatype::count(count)?;
    let mut tmps = Vec::with_capacity(from.len());
    let mut recvs = Vec::with_capacity(from.len());
    for (j, &r) in from.iter().enumerate() {
        if j + 1 == from.len() {
            recvs.push((rbuf, count, dt, r));
        } else {
            let mut t = Tmp::new(k, dt)?;
            recvs.push((t.ptr(), count, dt, r));
            tmps.push(t);
        }
    }
    // SAFETY: the caller's contract; the temporaries move into the hook.
    unsafe { exchange(x.hi, sends, &recvs, T_NB) }?;
    if tmps.is_empty() {
        return Ok(None);
    }
    Ok(Some(Box::new(move |_| {
        for t in tmps.iter_mut().rev() {
            // SAFETY: both hold `count` elements of `dt`.
            let rc = unsafe { crate::coll::PMPI_Reduce_local(t.ptr(), rbuf, count, dt, op) };
            ck(rc, "reduction")?;
        }
        Ok(())
    })))
}

/// `MPI_Ireduce`'s body: every process of the other group sends its data
/// to the root, which folds them at completion.
///
/// # Safety
/// As `MPI_Ireduce`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn ireduce(
    sbuf: *const c_void,
    rbuf: *mut c_void,
    count: c_int,
    dt: Handle,
    op: Handle,
    root: c_int,
    comm: Handle,
) -> R<Option<crate::request::After>> {
    let x = inter(comm)?;
    match side(&x, root)? {
        Side::Root => {
            let from = (0..x.remote.len() as c_int).collect();
            // SAFETY: the caller's contract.
            unsafe { fold_from(&x, from, rbuf, count, dt, op, &[]) }
        }
        Side::Idle => Ok(None),
        Side::Leaf(r) => {
            // SAFETY: the caller's contract.
            unsafe { exchange(x.hi, &[(sbuf, count, dt, r)], &[], T_NB) }?;
            Ok(None)
        }
    }
}

/// `MPI_Iallreduce`'s body: every process sends its data to every process
/// of the other group, and folds what it receives at completion.
///
/// # Safety
/// As `MPI_Iallreduce`.
pub(crate) unsafe fn iallreduce(
    sbuf: *const c_void,
    rbuf: *mut c_void,
    count: c_int,
    dt: Handle,
    op: Handle,
    comm: Handle,
) -> R<Option<crate::request::After>> {
    let x = reducing(comm, sbuf)?;
    let n = x.remote.len() as c_int;
    let sends: Vec<_> = (0..n).map(|r| (sbuf, count, dt, r)).collect();
    // SAFETY: the caller's contract.
    unsafe { fold_from(&x, (0..n).collect(), rbuf, count, dt, op, &sends) }
}

/// `MPI_Ireduce_scatter`'s body: the senders do not know how the other
/// group cuts the result (its `recvcounts`), so every process sends its
/// whole buffer to every remote process; each folds the whole vectors at
/// completion and keeps its own block.
///
/// # Safety
/// As `MPI_Ireduce_scatter`.
pub(crate) unsafe fn ireduce_scatter(
    sbuf: *const c_void,
    rbuf: *mut c_void,
    counts: *const c_int,
    dt: Handle,
    op: Handle,
    comm: Handle,
) -> R<Option<crate::request::After>> {
    let x = reducing(comm, sbuf)?;
    // SAFETY: the caller's contract.
    let (cs, displs, total) = unsafe { blocks_of(&x, counts)? };
    let (before, mine) = (displs[x.rank], cs[x.rank]);
    let n = x.remote.len() as c_int;
    let sends: Vec<_> = (0..n).map(|r| (sbuf, total, dt, r)).collect();
    let mut acc = Tmp::new(total as usize, dt)?;
    // SAFETY: `acc` moves into the hook, which outlives the transfers.
    let fold = unsafe { fold_from(&x, (0..n).collect(), acc.ptr(), total, dt, op, &sends)? };
    Ok(Some(Box::new(move |st| {
        if let Some(f) = fold {
            f(st)?;
        }
        let from = at(acc.ptr(), 1, before as isize, dt)?;
        // SAFETY: `from` holds `mine` elements of `dt` (inside `acc`),
        // `rbuf` is the program's buffer for them; a copy through
        // `MPI_COMM_SELF` keeps the datatype's layout on both sides.
        let rc = unsafe {
            crate::p2p::PMPI_Sendrecv(
                from,
                mine,
                dt,
                0,
                T_NB,
                rbuf,
                mine,
                dt,
                0,
                T_NB,
                abi::COMM_SELF as Handle,
                std::ptr::null_mut(),
            )
        };
        ck(rc, "reduce_scatter")
    })))
}

/// `MPI_Ireduce_scatter_block`'s body: every process sends its block `i`
/// to remote process `i`, and folds the blocks it receives at completion.
///
/// # Safety
/// As `MPI_Ireduce_scatter_block`.
pub(crate) unsafe fn ireduce_scatter_block(
    sbuf: *const c_void,
    rbuf: *mut c_void,
    count: c_int,
    dt: Handle,
    op: Handle,
    comm: Handle,
) -> R<Option<crate::request::After>> {
    let x = reducing(comm, sbuf)?;
    let n = x.remote.len() as c_int;
    let sends = (0..n)
        .map(|r| {
            Ok((
                at(sbuf, r as isize, count as isize, dt)?.cast_const(),
                count,
                dt,
                r,
            ))
        })
        .collect::<R<Vec<_>>>()?;
    // SAFETY: the caller's contract.
    unsafe { fold_from(&x, (0..n).collect(), rbuf, count, dt, op, &sends) }
}
