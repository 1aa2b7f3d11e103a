//! Groups (`MPI_Comm_group`, `MPI_Group_*`) and the communicators made
//! from them (`MPI_Comm_create`, `MPI_Comm_create_group`), on dos's
//! [`dos::Group`] and [`dos::Comm::create`]/[`dos::Comm::create_group`].
//! (`MPI_Comm_idup` is in `comm.rs`, beside `MPI_Comm_dup`.)
//!
//! A group is a value: building and combining groups never communicates.
//! Ranks out of range are `MPI_ERR_RANK`, an invalid group handle
//! `MPI_ERR_GROUP`.

use std::ffi::c_int;

use dos::Group;

use crate::abi::{self, Handle};
use crate::error::{err, R};
use crate::ptr::{ints, out, read};
use crate::state::{self, CommEntry};

/// The group of handle `h` (a clone).
pub(crate) fn group(h: Handle) -> R<Group> {
    state::with(|st| match st.groups.get(&h) {
        Some(g) => Ok(g.clone()),
        None if h == abi::GROUP_NULL => Err(err(abi::ERR_GROUP, "MPI_GROUP_NULL is not a group")),
        None => Err(err(abi::ERR_GROUP, format!("invalid group handle {h:#x}"))),
    })
}

/// Registers `g` under a new handle (`MPI_GROUP_EMPTY` if it is empty) and
/// stores it in `newgroup`.
///
/// # Safety
/// `newgroup` valid for a write (or null: `MPI_ERR_ARG`).
unsafe fn register(g: Group, newgroup: *mut Handle) -> R<()> {
    // SAFETY: the caller's contract.
    unsafe { register_group(g, newgroup) }
}

/// [`register`], for the other modules.
///
/// # Safety
/// `newgroup` valid for a write (or null: `MPI_ERR_ARG`).
pub(crate) unsafe fn register_group(g: Group, newgroup: *mut Handle) -> R<()> {
    if newgroup.is_null() {
        return Err(err(abi::ERR_ARG, "null pointer for newgroup"));
    }
    let h = if g.size() == 0 {
        abi::GROUP_EMPTY
    } else {
        state::with(|st| Ok(st.groups.insert(g)))?
    };
    // SAFETY: the caller's contract.
    unsafe { out(newgroup, h, "newgroup") }
}

/// The `n` ranks at `p`, each checked against a group of `size`.
///
/// # Safety
/// Unless null, `p` valid for reads of `n` ints.
unsafe fn rank_list(n: c_int, p: *const c_int, size: usize) -> R<Vec<usize>> {
    let n = usize::try_from(n).map_err(|_| err(abi::ERR_ARG, format!("negative count {n}")))?;
    // SAFETY: the caller's contract.
    let r = unsafe { ints(p, n, "ranks") }?;
    let mut seen = vec![false; size];
    r.iter()
        .map(|&x| {
            let i = usize::try_from(x)
                .ok()
                .filter(|&i| i < size)
                .ok_or_else(|| {
                    err(
                        abi::ERR_RANK,
                        format!("rank {x} is not in a group of {size}"),
                    )
                })?;
            if std::mem::replace(&mut seen[i], true) {
                return Err(err(abi::ERR_RANK, format!("rank {x} is listed twice")));
            }
            Ok(i)
        })
        .collect()
}

/// The ranks of `n` triplets (first, last, stride) at `p`, in a group of `size`.
///
/// # Safety
/// Unless null, `p` valid for reads of `3 n` ints.
unsafe fn range_list(n: c_int, p: *const [c_int; 3], size: usize) -> R<Vec<usize>> {
    let n = usize::try_from(n).map_err(|_| err(abi::ERR_ARG, format!("negative count {n}")))?;
    // SAFETY: the caller's contract (an array of n triplets).
    let flat = unsafe { ints(p.cast::<c_int>(), 3 * n, "ranges") }?;
    let mut all = Vec::new();
    for t in flat.chunks(3) {
        let (first, last, stride) = (t[0] as i64, t[1] as i64, t[2] as i64);
        if stride == 0 {
            return Err(err(abi::ERR_ARG, "a range with stride 0"));
        }
        let ok = |r: i64| (0..size as i64).contains(&r);
        if !ok(first) || !ok(last) {
            return Err(err(
                abi::ERR_RANK,
                format!("range {first}..{last} is not in a group of {size}"),
            ));
        }
        let mut r = first;
        while (stride > 0 && r <= last) || (stride < 0 && r >= last) {
            all.push(r as c_int);
            r += stride;
        }
    }
    let len = all.len() as c_int;
    // SAFETY: `all` holds `len` ints.
    unsafe { rank_list(len, all.as_ptr(), size) }
}

mpi_fn! {
    /// The group of `comm`'s processes, in rank order.
    fn MPI_Comm_group / PMPI_Comm_group(comm: Handle, group: *mut Handle) on comm => {
        if let Some(g) = crate::inter::local_group(comm)? {
            return register(g, group);
        }
        let c = state::comm(comm)?;
        register(c.group(), group)
    }
}

mpi_fn! {
    /// The number of processes in `group`.
    fn MPI_Group_size / PMPI_Group_size(g: Handle, size: *mut c_int) on abi::COMM_WORLD => {
        out(size, group(g)?.size() as c_int, "size")
    }
}

mpi_fn! {
    /// This process's rank in `group`, `MPI_UNDEFINED` if not a member.
    fn MPI_Group_rank / PMPI_Group_rank(g: Handle, rank: *mut c_int) on abi::COMM_WORLD => {
        let r = group(g)?.rank().map_or(abi::UNDEFINED, |r| r as c_int);
        out(rank, r, "rank")
    }
}

mpi_fn! {
    /// The members `ranks` of `group`, in that order.
    fn MPI_Group_incl / PMPI_Group_incl(g: Handle, n: c_int, ranks: *const c_int, newgroup: *mut Handle) on abi::COMM_WORLD => {
        let g = group(g)?;
        let r = rank_list(n, ranks, g.size())?;
        register(g.incl(&r)?, newgroup)
    }
}

mpi_fn! {
    /// `group` without the members `ranks`.
    fn MPI_Group_excl / PMPI_Group_excl(g: Handle, n: c_int, ranks: *const c_int, newgroup: *mut Handle) on abi::COMM_WORLD => {
        let g = group(g)?;
        let r = rank_list(n, ranks, g.size())?;
        register(g.excl(&r)?, newgroup)
    }
}

mpi_fn! {
    /// The members of the ranges (first, last, stride), in that order.
    fn MPI_Group_range_incl / PMPI_Group_range_incl(g: Handle, n: c_int, ranges: *const [c_int; 3], newgroup: *mut Handle) on abi::COMM_WORLD => {
        let g = group(g)?;
        let r = range_list(n, ranges, g.size())?;
        register(g.incl(&r)?, newgroup)
    }
}

mpi_fn! {
    /// `group` without the members of the ranges (first, last, stride).
    fn MPI_Group_range_excl / PMPI_Group_range_excl(g: Handle, n: c_int, ranges: *const [c_int; 3], newgroup: *mut Handle) on abi::COMM_WORLD => {
        let g = group(g)?;
        let r = range_list(n, ranges, g.size())?;
        register(g.excl(&r)?, newgroup)
    }
}

mpi_fn! {
    /// The members of `group1`, then those of `group2` not in `group1`.
    fn MPI_Group_union / PMPI_Group_union(group1: Handle, group2: Handle, newgroup: *mut Handle) on abi::COMM_WORLD => {
        register(group(group1)?.union(&group(group2)?), newgroup)
    }
}

mpi_fn! {
    /// The members of `group1` also in `group2`, in `group1`'s order.
    fn MPI_Group_intersection / PMPI_Group_intersection(group1: Handle, group2: Handle, newgroup: *mut Handle) on abi::COMM_WORLD => {
        register(group(group1)?.intersection(&group(group2)?), newgroup)
    }
}

mpi_fn! {
    /// The members of `group1` not in `group2`, in `group1`'s order.
    fn MPI_Group_difference / PMPI_Group_difference(group1: Handle, group2: Handle, newgroup: *mut Handle) on abi::COMM_WORLD => {
        register(group(group1)?.difference(&group(group2)?), newgroup)
    }
}

mpi_fn! {
    /// `MPI_IDENT` (same members, same order), `MPI_SIMILAR` (same
    /// members), else `MPI_UNEQUAL`.
    fn MPI_Group_compare / PMPI_Group_compare(group1: Handle, group2: Handle, result: *mut c_int) on abi::COMM_WORLD => {
        let r = match group(group1)?.compare(&group(group2)?) {
            dos::GroupCompare::Ident => abi::IDENT,
            dos::GroupCompare::Similar => abi::SIMILAR,
            _ => abi::UNEQUAL,
        };
        out(result, r, "result")
    }
}

mpi_fn! {
    /// The rank in `group2` of each of `ranks1` (ranks of `group1`):
    /// `MPI_UNDEFINED` for a process not in `group2`, `MPI_PROC_NULL` for
    /// `MPI_PROC_NULL`.
    fn MPI_Group_translate_ranks / PMPI_Group_translate_ranks(
        group1: Handle,
        n: c_int,
        ranks1: *const c_int,
        group2: Handle,
        ranks2: *mut c_int,
    ) on abi::COMM_WORLD => {
        let (g1, g2) = (group(group1)?, group(group2)?);
        let len = usize::try_from(n).map_err(|_| err(abi::ERR_ARG, format!("negative count {n}")))?;
        let r1 = ints(ranks1, len, "ranks1")?;
        ints(ranks2, len, "ranks2")?;
        let mut res = Vec::with_capacity(len);
        for &r in r1 {
            if r == abi::PROC_NULL {
                res.push(abi::PROC_NULL);
                continue;
            }
            let i = usize::try_from(r)
                .ok()
                .filter(|&i| i < g1.size())
                .ok_or_else(|| err(abi::ERR_RANK, format!("rank {r} is not in a group of {}", g1.size())))?;
            let t = g1.translate_ranks(&[i], &g2)?;
            res.push(t[0].map_or(abi::UNDEFINED, |x| x as c_int));
        }
        if len > 0 {
            std::slice::from_raw_parts_mut(ranks2, len).copy_from_slice(&res);
        }
        Ok(())
    }
}

mpi_fn! {
    /// Frees a group and sets the handle to `MPI_GROUP_NULL`
    /// (`MPI_GROUP_EMPTY` stays valid).
    fn MPI_Group_free / PMPI_Group_free(g: *mut Handle) on abi::COMM_WORLD => {
        let h = read(g, "group")?;
        if h != abi::GROUP_EMPTY {
            state::with(|st| {
                st.groups
                    .remove(&h)
                    .map(|_| ())
                    .ok_or_else(|| err(abi::ERR_GROUP, format!("invalid group handle {h:#x}")))
            })?;
        }
        out(g, abi::GROUP_NULL, "group")
    }
}

/// Registers `c` as a communicator with `comm`'s error handler.
///
/// # Safety
/// `newcomm` valid for a write (or null: `MPI_ERR_ARG`).
unsafe fn register_comm(c: Option<dos::Comm>, comm: Handle, newcomm: *mut Handle) -> R<()> {
    let errhandler = state::errhandler_of(comm);
    let h = match c {
        None => abi::COMM_NULL,
        Some(comm) => state::with(|st| Ok(st.comms.insert(CommEntry { comm, errhandler })))?,
    };
    // SAFETY: the caller's contract.
    unsafe { out(newcomm, h, "newcomm") }
}

mpi_fn! {
    /// A communicator of `group`'s processes (a subset of `comm`'s), ranked
    /// in group order; `MPI_COMM_NULL` on the others. Collective over `comm`.
    fn MPI_Comm_create / PMPI_Comm_create(comm: Handle, g: Handle, newcomm: *mut Handle) on comm => {
        if newcomm.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for newcomm"));
        }
        if crate::inter::is_inter(comm) {
            let g = group(g)?;
            return out(newcomm, crate::inter::create(comm, &g)?, "newcomm");
        }
        let c = state::comm(comm)?;
        let g = group(g)?;
        // Every process of `comm` calls; the groups given may differ between
        // processes as long as they are disjoint (MPI-2.2): one split, the
        // color naming the group (its first member), the key the rank in it.
        if g.translate_ranks(&(0..g.size()).collect::<Vec<_>>(), &c.group())?.iter().any(Option::is_none) {
            return Err(err(abi::ERR_GROUP, "the group is not a subset of the communicator's"));
        }
        let color = g.rank().and_then(|_| g.members().iter().min().map(|&m| m as u32));
        let key = g.rank().map_or(0, |r| r as i32);
        let made = c.split(color, key)?;
        register_comm(made, comm, newcomm)
    }
}

mpi_fn! {
    /// A communicator of `group`'s processes, collective over the members
    /// of `group` only (`tag` in `0..2^28` tells concurrent calls apart). A
    /// process outside `group` gets `MPI_COMM_NULL` without communicating.
    fn MPI_Comm_create_group / PMPI_Comm_create_group(comm: Handle, g: Handle, tag: c_int, newcomm: *mut Handle) on comm => {
        if newcomm.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for newcomm"));
        }
        crate::inter::deny(comm)?;
        let c = state::comm(comm)?;
        let g = group(g)?;
        if g.rank().is_none() {
            return register_comm(None, comm, newcomm);
        }
        let made = c.create_group(&g, tag)?;
        register_comm(Some(made), comm, newcomm)
    }
}
