//! Intercommunicators: `MPI_Intercomm_create`/`merge`, the communicator
//! functions on them (size, rank, group, remote size/group, dup, split,
//! create, compare, free), point-to-point and the blocking collectives.
//!
//! # Design
//! An intercommunicator's handle holds, as every communicator's, a
//! [`dos::Comm`]: here a *remote view* ([`dos::Comm::remote_view`]) on a
//! context of its own, whose rank `d` is the remote group's process `d` and
//! whose messages carry the sender's rank in its own group as their source.
//! So the point-to-point functions (blocking, nonblocking, persistent,
//! probe, mprobe) work unchanged: a destination is a remote rank and the
//! status's `MPI_SOURCE` is one.
//!
//! Beside it, a table here keeps for each intercommunicator two hidden
//! handles (never given to the program, freed with it): `lo`, a dup of the
//! local group (an intracommunicator), and `hi`, a second remote view on
//! the next context id, private to the collectives. The collectives are
//! built from the library's own calls on those: a local step on `lo`
//! (reduce or bcast to/from local rank 0) and a step between the groups on
//! `hi` (the leaders swap, or every process sends straight to the root).
//!
//! Context ids are agreed by both groups: each group takes the largest
//! free id of its processes, the leaders swap theirs, and both use the
//! larger (and reserve it on every process), as `dos::Comm::split` does
//! within one group.
//!
//! The nonblocking collectives on an intercommunicator
//! ([`crate::inter_nb`]) post
//! their transfers between the groups in the call, straight from and to
//! every remote process (no step on the local group, so no ordering
//! against the local group's collectives), and complete in `Wait`/`Test`,
//! which then fold a reduction's contributions. Functions the standard
//! defines on intracommunicators only (`MPI_Scan`, `MPI_Exscan`,
//! `MPI_Cart_create`, `MPI_Comm_split_type`, windows, files, ...) return
//! `MPI_ERR_COMM` on one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

use dos::{Comm, Group};

use crate::abi::{self, Handle};
use crate::error::{err, R};
use crate::ptr::out;
use crate::state::{self, CommEntry};

/// The parts of an intercommunicator besides its point-to-point view.
#[derive(Clone)]
pub(crate) struct Inter {
    /// Hidden intracommunicator of the local group.
    pub(crate) lo: Handle,
    /// Hidden view of the remote group, for the collectives.
    pub(crate) hi: Handle,
    /// World rank of each process of the local group, in rank order.
    pub(crate) local: Vec<usize>,
    /// World rank of each process of the remote group, in rank order.
    pub(crate) remote: Vec<usize>,
    /// This process's rank in the local group.
    pub(crate) rank: usize,
}

thread_local! {
    static INTERS: RefCell<HashMap<Handle, Inter>> = RefCell::new(HashMap::new());
}

/// How many intercommunicators exist (the fast path of [`get`] when none).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The intercommunicator parts of `h`, if `h` is one.
#[inline]
pub(crate) fn get(h: Handle) -> Option<Inter> {
    if LIVE.load(Ordering::Relaxed) == 0 {
        return None;
    }
    INTERS.with(|m| m.borrow().get(&h).cloned())
}

/// True if `h` is an intercommunicator.
#[inline]
pub(crate) fn is_inter(h: Handle) -> bool {
    get(h).is_some()
}

/// `MPI_ERR_COMM` if `comm` is an intercommunicator: for the functions the
/// standard defines on intracommunicators only.
#[inline]
pub(crate) fn deny(comm: Handle) -> R<()> {
    if is_inter(comm) {
        return Err(err(
            abi::ERR_COMM,
            "an intercommunicator is not allowed here (an intracommunicator is required)",
        ));
    }
    Ok(())
}

/// Forgets `h` if it is an intercommunicator, freeing its hidden handles
/// (`MPI_Comm_free`).
pub(crate) fn forget(h: Handle) {
    let Some(x) = INTERS.with(|m| m.borrow_mut().remove(&h)) else {
        return;
    };
    LIVE.fetch_sub(1, Ordering::Relaxed);
    let _ = state::with(|st| {
        st.comms.remove(&x.lo);
        st.comms.remove(&x.hi);
        Ok(())
    });
}

/// Forgets every intercommunicator (`MPI_Finalize`).
pub(crate) fn clear() {
    INTERS.with(|m| m.borrow_mut().clear());
    LIVE.store(0, Ordering::Relaxed);
}

/// `MPI_BYTE`.
pub(crate) const BYTE: Handle = 0x247;

/// Tags of the hidden traffic between the groups.
const T_LEN: i32 = 2;
const T_BARRIER: c_int = 3;
const T_BCAST: c_int = 4;
const T_REDUCE: c_int = 5;
const T_GATHER: c_int = 6;
const T_SCATTER: c_int = 7;
const T_ALL: c_int = 8;
const T_IDUP: c_int = 9;
/// The nonblocking forms' own traffic (data-movement ones use their
/// blocking form's tags).
pub(crate) const T_NB: c_int = 10;

/// `MPI_UINT64_T`.
const UINT64: Handle = 0x259;

/// The link between the two leaders: a communicator, the other leader's
/// rank in it and the tag.
type Link = (Comm, usize, i32);

/// The leaders swap `mine` over `link` (held by the leader, local rank
/// `root` of `lo`, only); every process of the local group gets the other
/// group's.
fn swap(lo: &Comm, root: usize, link: Option<&Link>, mine: &[u64]) -> R<Vec<u64>> {
    let mut len = [0u64];
    if let Some((c, other, tag)) = link {
        c.sendrecv(&[mine.len() as u64], *other, *tag, &mut len, *other, *tag)?;
    }
    lo.bcast(&mut len, root)?;
    let n = usize::try_from(len[0]).map_err(|_| err(abi::ERR_INTERN, "bad length"))?;
    let mut theirs = vec![0u64; n];
    if let Some((c, other, tag)) = link {
        c.sendrecv(mine, *other, *tag, &mut theirs, *other, *tag)?;
    }
    lo.bcast(&mut theirs, root)?;
    Ok(theirs)
}

/// The largest free context id among the local group's processes.
fn local_free(lo: &Comm) -> R<u64> {
    let mine = [lo.free_context() as u64];
    let mut all = vec![0u64; lo.size()];
    lo.allgather(&mine, &mut all)?;
    Ok(all.into_iter().max().unwrap_or(0))
}

/// The hidden handles and the leader link of an intercommunicator.
fn parts(x: &Inter) -> R<(Comm, Option<Link>)> {
    let lo = state::comm(x.lo)?;
    let link = if x.rank == 0 {
        Some((state::comm(x.hi)?, 0, T_LEN))
    } else {
        None
    };
    Ok((lo, link))
}

/// Registers a new intercommunicator of `lo`'s group and `remote` on the
/// contexts `ctx` (point-to-point) and `ctx + 1` (collectives).
fn build(lo: Comm, ctx: u32, remote: Vec<usize>, errhandler: Handle) -> R<Handle> {
    let rank = lo.rank();
    let local = lo.group().members().to_vec();
    let user = lo.remote_view(ctx, rank, &remote);
    let hi = lo.remote_view(ctx + 1, rank, &remote);
    let (h, lo_h, hi_h) = state::with(|st| {
        let h = st.comms.insert(CommEntry {
            comm: user,
            errhandler,
        });
        let lo_h = st.comms.insert(CommEntry {
            comm: lo,
            errhandler: abi::ERRORS_RETURN,
        });
        let hi_h = st.comms.insert(CommEntry {
            comm: hi,
            errhandler: abi::ERRORS_RETURN,
        });
        Ok((h, lo_h, hi_h))
    })?;
    INTERS.with(|m| {
        m.borrow_mut().insert(
            h,
            Inter {
                lo: lo_h,
                hi: hi_h,
                local,
                remote,
                rank,
            },
        )
    });
    LIVE.fetch_add(1, Ordering::Relaxed);
    Ok(h)
}

fn to_usize(v: &[u64]) -> Vec<usize> {
    v.iter().map(|&x| x as usize).collect()
}

/// The error of an intercommunicator function on something else.
fn not_inter(comm: Handle) -> crate::error::Error {
    match state::comm(comm) {
        Ok(_) => err(abi::ERR_COMM, "not an intercommunicator"),
        Err(e) => e,
    }
}

/// The parts of intercommunicator `comm`, or `MPI_ERR_COMM`.
pub(crate) fn inter(comm: Handle) -> R<Inter> {
    get(comm).ok_or_else(|| not_inter(comm))
}

fn world_group(members: &[usize]) -> R<Group> {
    state::with(|st| Ok(st.world.comm().group().incl(members)?))
}

/// The common part of `MPI_Intercomm_create` and
/// `MPI_Intercomm_create_from_groups`: over the local intracommunicator
/// `c`, whose rank `leader` holds `link` to the other leader.
fn join(c: &Comm, leader: usize, link: Option<&Link>, errhandler: Handle) -> R<Handle> {
    let lo = c.dup()?;
    let mut mine = vec![local_free(&lo)?];
    mine.extend(lo.group().members().iter().map(|&m| m as u64));
    let theirs = swap(&lo, leader, link, &mine)?;
    let (&free, remote) = theirs
        .split_first()
        .ok_or_else(|| err(abi::ERR_INTERN, "empty answer from the remote leader"))?;
    let remote = to_usize(remote);
    if remote.iter().any(|r| lo.group().members().contains(r)) {
        return Err(err(abi::ERR_COMM, "the local and remote groups overlap"));
    }
    let ctx = u32::try_from(free.max(mine[0]))
        .map_err(|_| err(abi::ERR_INTERN, "context ids exhausted"))?;
    lo.reserve_contexts(ctx + 2);
    let h = build(lo, ctx, remote, errhandler)?;
    Ok(h)
}

mpi_fn! {
    /// An intercommunicator between `local_comm`'s group and the group
    /// whose leader is `remote_leader` in `peer_comm`; the leaders talk over
    /// `peer_comm` with `tag`. Collective over both groups.
    fn MPI_Intercomm_create / PMPI_Intercomm_create(
        local_comm: Handle,
        local_leader: c_int,
        peer_comm: Handle,
        remote_leader: c_int,
        tag: c_int,
        newcomm: *mut Handle,
    ) on local_comm => {
        if newcomm.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for newcomm"));
        }
        deny(local_comm)?;
        let c = state::comm(local_comm)?;
        if local_leader < 0 || local_leader as usize >= c.size() {
            return Err(err(abi::ERR_RANK, format!("invalid local leader {local_leader} in a communicator of size {}", c.size())));
        }
        let leader = local_leader as usize;
        // The leader checks its arguments and tells the others the outcome,
        // so that a bad argument is an error on every process, not a hang.
        let mut link = None;
        let mut verdict = [0u64];
        if c.rank() == leader {
            let checked = (|| -> R<Link> {
                if tag < 0 {
                    return Err(err(abi::ERR_TAG, format!("invalid tag {tag}")));
                }
                let p = state::comm(peer_comm)?;
                if remote_leader < 0 || remote_leader as usize >= p.size() {
                    return Err(err(abi::ERR_RANK, format!("invalid remote leader {remote_leader} in a communicator of size {}", p.size())));
                }
                Ok((p, remote_leader as usize, tag))
            })();
            match checked {
                Ok(l) => link = Some(l),
                Err(e) => verdict[0] = e.class as u64,
            }
        }
        c.bcast(&mut verdict, leader)?;
        if verdict[0] != 0 {
            return Err(err(verdict[0] as c_int, "MPI_Intercomm_create: bad argument at the local leader"));
        }
        let h = join(&c, leader, link.as_ref(), state::errhandler_of(local_comm))?;
        out(newcomm, h, "newcomm")
    }
}

mpi_fn! {
    /// An intracommunicator of both groups: the group that passed `high`
    /// false first; if both passed the same, the group whose leader has
    /// the lower world rank first. Collective over both groups.
    fn MPI_Intercomm_merge / PMPI_Intercomm_merge(intercomm: Handle, high: c_int, newcomm: *mut Handle) on intercomm => {
        if newcomm.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for newcomm"));
        }
        let x = inter(intercomm)?;
        let (lo, link) = parts(&x)?;
        let mine = [local_free(&lo)?, u64::from(high != 0)];
        let theirs = swap(&lo, 0, link.as_ref(), &mine)?;
        let (h_l, h_r) = (high != 0, theirs[1] != 0);
        let local_first = if h_l != h_r { !h_l } else { x.local[0] < x.remote[0] };
        let members: Vec<usize> = if local_first {
            x.local.iter().chain(&x.remote).copied().collect()
        } else {
            x.remote.iter().chain(&x.local).copied().collect()
        };
        let ctx = u32::try_from(mine[0].max(theirs[0])).map_err(|_| err(abi::ERR_INTERN, "context ids exhausted"))?;
        lo.reserve_contexts(ctx + 1);
        let m = lo.with_members(ctx, &members)?;
        let h = state::with(|st| Ok(st.comms.insert(CommEntry { comm: m, errhandler: state::errhandler_of(intercomm) })))?;
        out(newcomm, h, "newcomm")
    }
}

/// `MPI_Comm_split` on an intercommunicator (MPI-2): the processes of each
/// color form an intercommunicator with the remote processes of that color
/// (`MPI_COMM_NULL` if there are none, or for `MPI_UNDEFINED`).
pub(crate) fn split(comm: Handle, color: Option<u32>, key: i32) -> R<Handle> {
    let x = inter(comm)?;
    let (lo, link) = parts(&x)?;
    let sub = lo.split(color, key)?;
    const NONE: u64 = u64::MAX;
    let mine = [
        color.map_or(NONE, u64::from),
        key as u32 as u64,
        lo.free_context() as u64,
    ];
    let mut table = vec![0u64; 3 * lo.size()];
    lo.allgather(&mine, &mut table)?;
    let theirs = swap(&lo, 0, link.as_ref(), &table)?;
    if theirs.len() != 3 * x.remote.len() {
        return Err(err(abi::ERR_INTERN, "remote split table of the wrong size"));
    }
    let free = table
        .chunks(3)
        .chain(theirs.chunks(3))
        .map(|e| e[2])
        .max()
        .unwrap_or(0);
    let ctx = u32::try_from(free).map_err(|_| err(abi::ERR_INTERN, "context ids exhausted"))?;
    lo.reserve_contexts(ctx + 2);
    let (Some(color), Some(sub)) = (color, sub) else {
        return Ok(abi::COMM_NULL);
    };
    let mut remote: Vec<(i32, usize)> = theirs
        .chunks(3)
        .enumerate()
        .filter(|(_, e)| e[0] == u64::from(color))
        .map(|(r, e)| (e[1] as u32 as i32, r))
        .collect();
    if remote.is_empty() {
        return Ok(abi::COMM_NULL);
    }
    remote.sort();
    let remote = remote.iter().map(|&(_, r)| x.remote[r]).collect();
    build(sub, ctx, remote, state::errhandler_of(comm))
}

/// `MPI_Comm_create` on an intercommunicator (MPI-2): `g` is a subset of
/// the local group; the result joins it with the remote side's subset.
pub(crate) fn create(comm: Handle, g: &Group) -> R<Handle> {
    let x = inter(comm)?;
    if g.members().iter().any(|m| !x.local.contains(m)) {
        return Err(err(
            abi::ERR_GROUP,
            "the group is not a subset of the local group",
        ));
    }
    let rank = g.rank();
    split(comm, rank.map(|_| 0), rank.map_or(0, |r| r as i32))
}

/// `MPI_Comm_dup` on an intercommunicator.
pub(crate) fn dup(comm: Handle) -> R<Handle> {
    let x = inter(comm)?;
    split(comm, Some(0), x.rank as i32)
}

/// `MPI_Comm_idup` on an intercommunicator: the leader with the lower
/// world rank takes a slot of context ids (see `comm.rs`, `IDUP_BASE`) and
/// sends it to every other process of both groups, on the hidden
/// communicators' point-to-point contexts (which no collective uses). The
/// slot's first id is the new intercommunicator's, the next the hidden
/// view's, the one after the hidden local group's.
///
/// # Safety
/// `newcomm` valid until the request completes; `request` for a write.
pub(crate) unsafe fn idup(comm: Handle, newcomm: *mut Handle, request: *mut Handle) -> R<()> {
    let x = inter(comm)?;
    let lo = state::comm(x.lo)?;
    let eh = state::errhandler_of(comm);
    let (nl, nr) = (x.local.len(), x.remote.len());
    let root_here = x.local[0] < x.remote[0];
    let mut ctx = Box::new([0u64]);
    let mut parts = Vec::new();
    let mut start = || -> R<()> {
        if root_here && x.rank == 0 {
            ctx[0] = crate::comm::idup_slot()?;
            let to = (1..nl).map(|p| (p, x.lo)).chain((0..nr).map(|p| (p, x.hi)));
            for (peer, on) in to {
                let mut q = abi::REQUEST_NULL;
                // SAFETY: `ctx` lives in the request's hook until completion.
                let rc = unsafe {
                    crate::p2p::PMPI_Isend(
                        ctx.as_ptr().cast(),
                        1,
                        UINT64,
                        peer as c_int,
                        T_IDUP,
                        on,
                        &mut q,
                    )
                };
                ck(rc, "idup")?;
                parts.push(q);
            }
        } else {
            let (from, on) = if root_here { (0, x.lo) } else { (0, x.hi) };
            let mut q = abi::REQUEST_NULL;
            // SAFETY: as above.
            let rc = unsafe {
                crate::p2p::PMPI_Irecv(ctx.as_mut_ptr().cast(), 1, UINT64, from, T_IDUP, on, &mut q)
            };
            ck(rc, "idup")?;
            parts.push(q);
        }
        Ok(())
    };
    let started = start();
    let after: crate::request::After = Box::new(move |_| {
        let c = crate::comm::idup_ctx(ctx[0])?;
        let lo2 = lo.with_members(c + 2, &x.local)?;
        let h = build(lo2, c, x.remote.clone(), eh)?;
        // SAFETY: the program keeps `newcomm` valid until the request
        // completes (MPI's rule for nonblocking calls).
        unsafe { out(newcomm, h, "newcomm")? };
        crate::attr::copy_all(crate::attr::Kind::Comm, comm, h)
    });
    // The parts started are completed with the request, even if one
    // failed to start.
    // SAFETY: the caller's contract.
    let r = unsafe {
        crate::request::insert_compound(parts, state::ReqKind::Coll, comm, after, request)
    };
    started?;
    r
}

/// `MPI_Comm_compare` when either is an intercommunicator.
pub(crate) fn compare(a: Handle, b: Handle) -> R<c_int> {
    state::comm(a)?;
    state::comm(b)?;
    if a == b {
        return Ok(abi::IDENT);
    }
    let (Some(x), Some(y)) = (get(a), get(b)) else {
        return Ok(abi::UNEQUAL);
    };
    let cmp = |p: &[usize], q: &[usize]| -> R<dos::GroupCompare> {
        Ok(world_group(p)?.compare(&world_group(q)?))
    };
    use dos::GroupCompare::{Ident, Similar};
    Ok(
        match (cmp(&x.local, &y.local)?, cmp(&x.remote, &y.remote)?) {
            (Ident, Ident) => abi::CONGRUENT,
            (Ident | Similar, Ident | Similar) => abi::SIMILAR,
            _ => abi::UNEQUAL,
        },
    )
}

/// Size and rank of the local group, if `comm` is an intercommunicator.
pub(crate) fn local_size_rank(comm: Handle) -> Option<(usize, usize)> {
    get(comm).map(|x| (x.local.len(), x.rank))
}

/// The local group, if `comm` is an intercommunicator (`MPI_Comm_group`).
pub(crate) fn local_group(comm: Handle) -> R<Option<Group>> {
    match get(comm) {
        Some(x) => Ok(Some(world_group(&x.local)?)),
        None => Ok(None),
    }
}

/// The remote group (`MPI_Comm_remote_group`).
pub(crate) fn remote_group(comm: Handle) -> R<Group> {
    world_group(&inter(comm)?.remote)
}

/// The size of the local group.
pub(crate) fn local_size(comm: Handle) -> R<usize> {
    Ok(inter(comm)?.local.len())
}

/// The size of the remote group (`MPI_Comm_remote_size`).
pub(crate) fn remote_size(comm: Handle) -> R<usize> {
    Ok(inter(comm)?.remote.len())
}

// ----- collectives -----

/// A library call's return code as a result.
pub(crate) fn ck(rc: c_int, what: &str) -> R<()> {
    if rc == abi::SUCCESS {
        Ok(())
    } else {
        Err(err(rc, format!("intercommunicator {what}")))
    }
}

/// A buffer for `count` elements of `dt` (its own memory, laid out as a
/// user buffer of that type would be).
pub(crate) struct Tmp {
    buf: Vec<u8>,
    shift: isize,
}

impl Tmp {
    pub(crate) fn new(count: usize, dt: Handle) -> R<Tmp> {
        let t = crate::datatype::ty(dt)?;
        let span = if count == 0 {
            0
        } else {
            (t.true_ub - t.true_lb) as usize + (count - 1) * t.extent().unsigned_abs()
        };
        Ok(Tmp {
            buf: vec![0u8; span.max(1)],
            shift: -t.true_lb,
        })
    }

    pub(crate) fn ptr(&mut self) -> *mut c_void {
        self.buf.as_mut_ptr().wrapping_offset(self.shift).cast()
    }
}

/// Which side of a rooted collective this process is on.
pub(crate) enum Side {
    /// The root (`MPI_ROOT`).
    Root,
    /// Another process of the root's group (`MPI_PROC_NULL`).
    Idle,
    /// A process of the other group; the root's rank in the remote group.
    Leaf(c_int),
}

pub(crate) fn side(x: &Inter, root: c_int) -> R<Side> {
    match root {
        abi::ROOT => Ok(Side::Root),
        abi::PROC_NULL => Ok(Side::Idle),
        r if r >= 0 && (r as usize) < x.remote.len() => Ok(Side::Leaf(r)),
        r => Err(err(
            abi::ERR_ROOT,
            format!(
                "invalid root {r} on an intercommunicator whose remote group has {} processes",
                x.remote.len()
            ),
        )),
    }
}

/// The address of element block `i` of `count` elements of `dt` in `buf`.
pub(crate) fn at(buf: *const c_void, i: isize, count: isize, dt: Handle) -> R<*mut c_void> {
    let ext = crate::datatype::ty(dt)?.extent();
    Ok(buf
        .cast::<u8>()
        .wrapping_offset(i * count * ext)
        .cast_mut()
        .cast())
}

/// Receives or sends with every remote process at once and waits.
///
/// # Safety
/// The buffers valid for the library's calls.
pub(crate) unsafe fn exchange(
    hi: Handle,
    sends: &[(*const c_void, c_int, Handle, c_int)],
    recvs: &[(*mut c_void, c_int, Handle, c_int)],
    tag: c_int,
) -> R<()> {
    let mut reqs = Vec::with_capacity(sends.len() + recvs.len());
    let mut first = Ok(());
    for &(b, n, t, r) in recvs {
        let mut q = abi::REQUEST_NULL;
        // SAFETY: the caller's contract.
        let rc = unsafe { crate::p2p::PMPI_Irecv(b, n, t, r, tag, hi, &mut q) };
        if rc != abi::SUCCESS {
            first = first.and(ck(rc, "receive"));
            break;
        }
        reqs.push(q);
    }
    if first.is_ok() {
        for &(b, n, t, r) in sends {
            let mut q = abi::REQUEST_NULL;
            // SAFETY: the caller's contract.
            let rc = unsafe { crate::p2p::PMPI_Isend(b, n, t, r, tag, hi, &mut q) };
            if rc != abi::SUCCESS {
                first = first.and(ck(rc, "send"));
                break;
            }
            reqs.push(q);
        }
    }
    let Some(mut reqs) = crate::inter_nb::divert(reqs) else {
        // Started for a nonblocking form: its request completes them.
        return first;
    };
    // SAFETY: `reqs` holds `len` request handles.
    let rc = unsafe {
        crate::request::PMPI_Waitall(reqs.len() as c_int, reqs.as_mut_ptr(), std::ptr::null_mut())
    };
    first?;
    ck(rc, "wait")
}

/// The prologue of every reduction on an intercommunicator, blocking or
/// not: the intercommunicator, and `MPI_IN_PLACE` refused (the standard
/// allows it on intracommunicators only).
pub(crate) fn reducing(comm: Handle, sbuf: *const c_void) -> R<Inter> {
    let x = inter(comm)?;
    if crate::ptr::in_place(sbuf) {
        return Err(err(abi::ERR_ARG, "MPI_IN_PLACE on an intercommunicator"));
    }
    Ok(x)
}

/// The `recvcounts` of a reduce-scatter on `x` (one per local process),
/// checked: the counts, where each block starts, and the total, which must
/// fit in an int (the transfers take int counts).
///
/// # Safety
/// `counts` valid for the local group's size.
pub(crate) unsafe fn blocks_of<'a>(
    x: &Inter,
    counts: *const c_int,
) -> R<(&'a [c_int], Vec<c_int>, c_int)> {
    // SAFETY: the caller's contract.
    let cs = unsafe { crate::ptr::ints(counts, x.local.len(), "recvcounts")? };
    let mut displs = Vec::with_capacity(cs.len());
    let mut total: c_int = 0;
    for &c in cs {
        crate::datatype::count(c)?;
        displs.push(total);
        total = total
            .checked_add(c)
            .ok_or_else(|| err(abi::ERR_COUNT, "the counts add up past the largest int"))?;
    }
    Ok((cs, displs, total))
}

/// `MPI_Barrier`: returns once every process of both groups has entered.
pub(crate) fn barrier(comm: Handle) -> R<()> {
    let x = inter(comm)?;
    // SAFETY: no buffers.
    unsafe {
        ck(crate::coll::PMPI_Barrier(x.lo), "barrier")?;
        if x.rank == 0 {
            ck(
                crate::p2p::PMPI_Sendrecv(
                    std::ptr::null(),
                    0,
                    BYTE,
                    0,
                    T_BARRIER,
                    std::ptr::null_mut(),
                    0,
                    BYTE,
                    0,
                    T_BARRIER,
                    x.hi,
                    std::ptr::null_mut(),
                ),
                "barrier",
            )?;
        }
        ck(crate::coll::PMPI_Barrier(x.lo), "barrier")
    }
}

/// `MPI_Bcast`: from the root to every process of the other group.
///
/// # Safety
/// As `MPI_Bcast`.
pub(crate) unsafe fn bcast(
    buf: *mut c_void,
    count: c_int,
    dt: Handle,
    root: c_int,
    comm: Handle,
) -> R<()> {
    let x = inter(comm)?;
    // SAFETY: the caller's contract.
    unsafe {
        match side(&x, root)? {
            Side::Root => ck(
                crate::p2p::PMPI_Send(buf, count, dt, 0, T_BCAST, x.hi),
                "bcast",
            ),
            Side::Idle => Ok(()),
            Side::Leaf(r) => {
                if x.rank == 0 {
                    ck(
                        crate::p2p::PMPI_Recv(
                            buf,
                            count,
                            dt,
                            r,
                            T_BCAST,
                            x.hi,
                            std::ptr::null_mut(),
                        ),
                        "bcast",
                    )?;
                }
                ck(crate::coll::PMPI_Bcast(buf, count, dt, 0, x.lo), "bcast")
            }
        }
    }
}

/// `MPI_Reduce`: the other group's data reduced at the root.
///
/// # Safety
/// As `MPI_Reduce`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn reduce(
    sbuf: *const c_void,
    rbuf: *mut c_void,
    count: c_int,
    dt: Handle,
    op: Handle,
    root: c_int,
    comm: Handle,
) -> R<()> {
    let x = inter(comm)?;
    // SAFETY: the caller's contract.
    unsafe {
        match side(&x, root)? {
            Side::Root => ck(
                crate::p2p::PMPI_Recv(rbuf, count, dt, 0, T_REDUCE, x.hi, std::ptr::null_mut()),
                "reduce",
            ),
            Side::Idle => Ok(()),
            Side::Leaf(r) => {
                let mut t = Tmp::new(crate::datatype::count(count)?, dt)?;
                ck(
                    crate::coll::PMPI_Reduce(sbuf, t.ptr(), count, dt, op, 0, x.lo),
                    "reduce",
                )?;
                if x.rank == 0 {
                    ck(
                        crate::p2p::PMPI_Send(t.ptr(), count, dt, r, T_REDUCE, x.hi),
                        "reduce",
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// The local group's data reduced at local rank 0, swapped with the other
/// group's leader into `rbuf` there (`count` elements on both sides).
///
/// # Safety
/// Buffers as for `MPI_Reduce`.
unsafe fn reduce_swap(
    x: &Inter,
    sbuf: *const c_void,
    rbuf: *mut c_void,
    count: c_int,
    dt: Handle,
    op: Handle,
) -> R<()> {
    let mut t = Tmp::new(crate::datatype::count(count)?, dt)?;
    // SAFETY: the caller's contract.
    unsafe {
        ck(
            crate::coll::PMPI_Reduce(sbuf, t.ptr(), count, dt, op, 0, x.lo),
            "reduction",
        )?;
        if x.rank == 0 {
            ck(
                crate::p2p::PMPI_Sendrecv(
                    t.ptr(),
                    count,
                    dt,
                    0,
                    T_REDUCE,
                    rbuf,
                    count,
                    dt,
                    0,
                    T_REDUCE,
                    x.hi,
                    std::ptr::null_mut(),
                ),
                "reduction",
            )?;
        }
    }
    Ok(())
}

/// `MPI_Allreduce`: each group gets the reduction of the other's data.
///
/// # Safety
/// As `MPI_Allreduce`.
pub(crate) unsafe fn allreduce(
    sbuf: *const c_void,
    rbuf: *mut c_void,
    count: c_int,
    dt: Handle,
    op: Handle,
    comm: Handle,
) -> R<()> {
    let x = reducing(comm, sbuf)?;
    // SAFETY: the caller's contract.
    unsafe {
        reduce_swap(&x, sbuf, rbuf, count, dt, op)?;
        ck(
            crate::coll::PMPI_Bcast(rbuf, count, dt, 0, x.lo),
            "allreduce",
        )
    }
}

/// `MPI_Reduce_scatter`: the other group's data reduced, scattered over
/// this group by `counts`.
///
/// # Safety
/// As `MPI_Reduce_scatter`.
pub(crate) unsafe fn reduce_scatter(
    sbuf: *const c_void,
    rbuf: *mut c_void,
    counts: *const c_int,
    dt: Handle,
    op: Handle,
    comm: Handle,
) -> R<()> {
    let x = reducing(comm, sbuf)?;
    // SAFETY: the caller's contract.
    let (cs, displs, total) = unsafe { blocks_of(&x, counts)? };
    let mut all = Tmp::new(total as usize, dt)?;
    // SAFETY: the caller's contract; `all` holds `total` elements.
    unsafe {
        reduce_swap(&x, sbuf, all.ptr(), total, dt, op)?;
        ck(
            crate::coll::PMPI_Scatterv(
                all.ptr(),
                cs.as_ptr(),
                displs.as_ptr(),
                dt,
                rbuf,
                cs[x.rank],
                dt,
                0,
                x.lo,
            ),
            "reduce_scatter",
        )
    }
}

/// `MPI_Reduce_scatter_block`.
///
/// # Safety
/// As `MPI_Reduce_scatter_block`.
pub(crate) unsafe fn reduce_scatter_block(
    sbuf: *const c_void,
    rbuf: *mut c_void,
    count: c_int,
    dt: Handle,
    op: Handle,
    comm: Handle,
) -> R<()> {
    let x = inter(comm)?;
    crate::datatype::count(count)?;
    let cs = vec![count; x.local.len()];
    // SAFETY: the caller's contract; `cs` has one count per local process.
    unsafe { reduce_scatter(sbuf, rbuf, cs.as_ptr(), dt, op, comm) }
}

/// `n` ints at `p`, if given.
///
/// # Safety
/// `p` valid for `n` ints when given.
unsafe fn opt_ints<'a>(p: Option<*const c_int>, n: usize, what: &str) -> R<Option<&'a [c_int]>> {
    match p {
        // SAFETY: the caller's contract.
        Some(p) => Ok(Some(unsafe { crate::ptr::ints(p, n, what)? })),
        None => Ok(None),
    }
}

/// `MPI_Gatherv` (and `MPI_Gather`, with `displs` null: blocks in order):
/// every process of the other group sends to the root.
///
/// # Safety
/// As `MPI_Gatherv`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gatherv(
    sbuf: *const c_void,
    scount: c_int,
    stype: Handle,
    rbuf: *mut c_void,
    rcounts: Option<*const c_int>,
    rcount: c_int,
    displs: *const c_int,
    rtype: Handle,
    root: c_int,
    comm: Handle,
) -> R<()> {
    let x = inter(comm)?;
    match side(&x, root)? {
        Side::Root => {
            let n = x.remote.len();
            let mut recvs = Vec::with_capacity(n);
            // SAFETY: the caller's contract: counts and displacements for
            // every remote process when given.
            let (counts, ds) = unsafe {
                (
                    opt_ints(rcounts, n, "recvcounts")?,
                    opt_ints(rcounts.map(|_| displs), n, "displs")?,
                )
            };
            for i in 0..n {
                let (c, b) = match (counts, ds) {
                    (Some(c), Some(d)) => (c[i], at(rbuf, 1, d[i] as isize, rtype)?),
                    _ => (rcount, at(rbuf, i as isize, rcount as isize, rtype)?),
                };
                recvs.push((b, c, rtype, i as c_int));
            }
            // SAFETY: the caller's contract.
            unsafe { exchange(x.hi, &[], &recvs, T_GATHER) }
        }
        Side::Idle => Ok(()),
        // SAFETY: the caller's contract.
        Side::Leaf(r) => unsafe { exchange(x.hi, &[(sbuf, scount, stype, r)], &[], T_GATHER) },
    }
}

/// `MPI_Scatterv` (and `MPI_Scatter`, with `scounts` `None`): the root
/// sends to every process of the other group.
///
/// # Safety
/// As `MPI_Scatterv`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn scatterv(
    sbuf: *const c_void,
    scounts: Option<*const c_int>,
    scount: c_int,
    displs: *const c_int,
    stype: Handle,
    rbuf: *mut c_void,
    rcount: c_int,
    rtype: Handle,
    root: c_int,
    comm: Handle,
) -> R<()> {
    let x = inter(comm)?;
    match side(&x, root)? {
        Side::Root => {
            let n = x.remote.len();
            // SAFETY: the caller's contract: counts and displacements for
            // every remote process when given.
            let (counts, ds) = unsafe {
                (
                    opt_ints(scounts, n, "sendcounts")?,
                    opt_ints(scounts.map(|_| displs), n, "displs")?,
                )
            };
            let mut sends = Vec::with_capacity(n);
            for i in 0..n {
                let (c, b) = match (counts, ds) {
                    (Some(c), Some(d)) => (c[i], at(sbuf, 1, d[i] as isize, stype)?),
                    _ => (scount, at(sbuf, i as isize, scount as isize, stype)?),
                };
                sends.push((b.cast_const(), c, stype, i as c_int));
            }
            // SAFETY: the caller's contract.
            unsafe { exchange(x.hi, &sends, &[], T_SCATTER) }
        }
        Side::Idle => Ok(()),
        // SAFETY: the caller's contract.
        Side::Leaf(r) => unsafe { exchange(x.hi, &[], &[(rbuf, rcount, rtype, r)], T_SCATTER) },
    }
}

/// One block per remote process, for the all-to-all forms.
struct Blocks<'a> {
    /// Counts (one for all if `None`).
    pub counts: Option<&'a [c_int]>,
    pub count: c_int,
    /// Displacements in elements (`None`: blocks in order), or in bytes
    /// when `bytes`.
    pub displs: Option<&'a [c_int]>,
    pub bytes: bool,
    /// Types (one for all if `None`).
    pub types: Option<&'a [Handle]>,
    pub ty: Handle,
}

impl Blocks<'_> {
    fn block(&self, buf: *const c_void, i: usize) -> R<(*mut c_void, c_int, Handle)> {
        let ty = self.types.map_or(self.ty, |t| t[i]);
        let count = self.counts.map_or(self.count, |c| c[i]);
        let b = match self.displs {
            Some(d) if self.bytes => buf
                .cast::<u8>()
                .wrapping_offset(d[i] as isize)
                .cast_mut()
                .cast(),
            Some(d) => at(buf, 1, d[i] as isize, ty)?,
            None => at(buf, i as isize, count as isize, ty)?,
        };
        Ok((b, count, ty))
    }
}

/// The all-to-all forms (`MPI_Alltoall(v,w)`, and `MPI_Allgather(v)` with
/// one send block for all): each process sends block `j` to remote process
/// `j` and receives block `i` from remote process `i`.
///
/// # Safety
/// The buffers valid for the blocks described.
unsafe fn exchange_blocks(
    sbuf: *const c_void,
    send: &Blocks<'_>,
    one_send: bool,
    rbuf: *mut c_void,
    recv: &Blocks<'_>,
    comm: Handle,
) -> R<()> {
    let x = reducing(comm, sbuf)?;
    let n = x.remote.len();
    let mut sends = Vec::with_capacity(n);
    let mut recvs = Vec::with_capacity(n);
    for i in 0..n {
        let (b, c, t) = if one_send {
            (sbuf.cast_mut(), send.count, send.ty)
        } else {
            send.block(sbuf, i)?
        };
        sends.push((b.cast_const(), c, t, i as c_int));
        let (b, c, t) = recv.block(rbuf, i)?;
        recvs.push((b, c, t, i as c_int));
    }
    // SAFETY: the caller's contract.
    unsafe { exchange(x.hi, &sends, &recvs, T_ALL) }
}

fn remote_n(comm: Handle) -> R<usize> {
    remote_size(comm)
}

/// `MPI_Gather`.
///
/// # Safety
/// As `MPI_Gather`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gather(
    sbuf: *const c_void,
    scount: c_int,
    stype: Handle,
    rbuf: *mut c_void,
    rcount: c_int,
    rtype: Handle,
    root: c_int,
    comm: Handle,
) -> R<()> {
    // SAFETY: the caller's contract.
    unsafe {
        gatherv(
            sbuf,
            scount,
            stype,
            rbuf,
            None,
            rcount,
            std::ptr::null(),
            rtype,
            root,
            comm,
        )
    }
}

/// `MPI_Scatter`.
///
/// # Safety
/// As `MPI_Scatter`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn scatter(
    sbuf: *const c_void,
    scount: c_int,
    stype: Handle,
    rbuf: *mut c_void,
    rcount: c_int,
    rtype: Handle,
    root: c_int,
    comm: Handle,
) -> R<()> {
    // SAFETY: the caller's contract.
    unsafe {
        scatterv(
            sbuf,
            None,
            scount,
            std::ptr::null(),
            stype,
            rbuf,
            rcount,
            rtype,
            root,
            comm,
        )
    }
}

/// `MPI_Allgather` and `MPI_Allgatherv` (`rcounts`/`displs` given): every
/// process's block goes to every process of the other group.
///
/// # Safety
/// As `MPI_Allgatherv`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn allgatherv(
    sbuf: *const c_void,
    scount: c_int,
    stype: Handle,
    rbuf: *mut c_void,
    rcount: c_int,
    rcounts: Option<*const c_int>,
    displs: *const c_int,
    rtype: Handle,
    comm: Handle,
) -> R<()> {
    let n = remote_n(comm)?;
    // SAFETY: the caller's contract: counts and displacements for every
    // remote process when given.
    let (counts, ds) = unsafe {
        (
            opt_ints(rcounts, n, "recvcounts")?,
            opt_ints(rcounts.map(|_| displs), n, "displs")?,
        )
    };
    let send = Blocks {
        counts: None,
        count: scount,
        displs: None,
        bytes: false,
        types: None,
        ty: stype,
    };
    let recv = Blocks {
        counts,
        count: rcount,
        displs: ds,
        bytes: false,
        types: None,
        ty: rtype,
    };
    // SAFETY: the caller's contract.
    unsafe { exchange_blocks(sbuf, &send, true, rbuf, &recv, comm) }
}

/// `MPI_Alltoall` and `MPI_Alltoallv` (counts and displacements given).
///
/// # Safety
/// As `MPI_Alltoallv`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn alltoallv(
    sbuf: *const c_void,
    scount: c_int,
    scounts: Option<(*const c_int, *const c_int)>,
    stype: Handle,
    rbuf: *mut c_void,
    rcount: c_int,
    rcounts: Option<(*const c_int, *const c_int)>,
    rtype: Handle,
    comm: Handle,
) -> R<()> {
    let n = remote_n(comm)?;
    // SAFETY: the caller's contract.
    // SAFETY: the caller's contract: counts and displacements for every
    // remote process when given.
    let (sc, sd, rc, rd) = unsafe {
        (
            opt_ints(scounts.map(|p| p.0), n, "sendcounts")?,
            opt_ints(scounts.map(|p| p.1), n, "sdispls")?,
            opt_ints(rcounts.map(|p| p.0), n, "recvcounts")?,
            opt_ints(rcounts.map(|p| p.1), n, "rdispls")?,
        )
    };
    let send = Blocks {
        counts: sc,
        count: scount,
        displs: sd,
        bytes: false,
        types: None,
        ty: stype,
    };
    let recv = Blocks {
        counts: rc,
        count: rcount,
        displs: rd,
        bytes: false,
        types: None,
        ty: rtype,
    };
    // SAFETY: the caller's contract.
    unsafe { exchange_blocks(sbuf, &send, false, rbuf, &recv, comm) }
}

/// `MPI_Alltoallw`: counts, byte displacements and types per process.
///
/// # Safety
/// As `MPI_Alltoallw`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn alltoallw(
    sbuf: *const c_void,
    scounts: *const c_int,
    sdispls: *const c_int,
    stypes: *const Handle,
    rbuf: *mut c_void,
    rcounts: *const c_int,
    rdispls: *const c_int,
    rtypes: *const Handle,
    comm: Handle,
) -> R<()> {
    let n = remote_n(comm)?;
    let types = |p: *const Handle| -> R<&[Handle]> {
        if n > 0 && p.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for the datatypes"));
        }
        if n == 0 {
            return Ok(&[]);
        }
        // SAFETY: the caller's contract: `n` handles.
        Ok(unsafe { std::slice::from_raw_parts(p, n) })
    };
    // SAFETY: the caller's contract.
    let (sc, sd, rc, rd) = unsafe {
        (
            crate::ptr::ints(scounts, n, "sendcounts")?,
            crate::ptr::ints(sdispls, n, "sdispls")?,
            crate::ptr::ints(rcounts, n, "recvcounts")?,
            crate::ptr::ints(rdispls, n, "rdispls")?,
        )
    };
    let send = Blocks {
        counts: Some(sc),
        count: 0,
        displs: Some(sd),
        bytes: true,
        types: Some(types(stypes)?),
        ty: 0,
    };
    let recv = Blocks {
        counts: Some(rc),
        count: 0,
        displs: Some(rd),
        bytes: true,
        types: Some(types(rtypes)?),
        ty: 0,
    };
    // SAFETY: the caller's contract.
    unsafe { exchange_blocks(sbuf, &send, false, rbuf, &recv, comm) }
}

/// A tag in `0..2^28` from the string tag of the `_from_group(s)` functions.
fn string_tag(t: &str) -> i32 {
    // FNV-1a, folded to 27 bits and made even (the leaders use the odd one).
    let mut h: u32 = 0x811c_9dc5;
    for b in t.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    ((h ^ (h >> 27)) & 0x07ff_fffe) as i32
}

mpi_fn! {
    /// An intercommunicator between `local_group` (which holds this
    /// process) and `remote_group`, without a parent communicator (MPI-4):
    /// each group forms over `MPI_COMM_WORLD`'s processes, as
    /// `MPI_Comm_create_group` does, with a tag made from `stringtag`; the
    /// two leaders (`local_leader`, `remote_leader`, ranks in their groups)
    /// pair up the same way. `info` is not used.
    fn MPI_Intercomm_create_from_groups / PMPI_Intercomm_create_from_groups(
        local_group: Handle,
        local_leader: c_int,
        remote_group: Handle,
        remote_leader: c_int,
        stringtag: *const std::ffi::c_char,
        info: Handle,
        errhandler: Handle,
        newintercomm: *mut Handle,
    ) on abi::COMM_WORLD => {
        let _ = info;
        if newintercomm.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for newintercomm"));
        }
        crate::error::check_handler(errhandler, crate::error::HandlerKind::Comm)?;
        if stringtag.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for stringtag"));
        }
        let tag = string_tag(&std::ffi::CStr::from_ptr(stringtag).to_string_lossy());
        let lg = crate::group::group(local_group)?;
        let rg = crate::group::group(remote_group)?;
        let me = lg.rank().ok_or_else(|| err(abi::ERR_GROUP, "the calling process is not in local_group"))?;
        let check = |r: c_int, g: &Group, what: &str| -> R<usize> {
            if r >= 0 && (r as usize) < g.size() {
                Ok(r as usize)
            } else {
                Err(err(abi::ERR_RANK, format!("invalid {what} {r} in a group of {}", g.size())))
            }
        };
        let ll = check(local_leader, &lg, "local leader")?;
        let rl = check(remote_leader, &rg, "remote leader")?;
        let world = state::with(|st| Ok(st.world.comm().clone()))?;
        let local = world.create_group(&lg, tag)?;
        let link = if me == ll {
            let (a, b) = (lg.members()[ll], rg.members()[rl]);
            let pair = world_group(&[a.min(b), a.max(b)])?;
            let pc = world.create_group(&pair, tag + 1)?;
            Some((pc, usize::from(b > a), 0))
        } else {
            None
        };
        let h = join(&local, ll, link.as_ref(), errhandler)?;
        out(newintercomm, h, "newintercomm")
    }
}
