//! User reduction operations: `MPI_Op_create`, `MPI_Op_free`,
//! `MPI_Op_commutative`, and the reductions dos's typed algorithms cannot
//! run for them ([`General`]).
//!
//! A user operation is a handle in the state's table; the reductions find
//! it through [`crate::reduce::check`] and call its C function on whole
//! buffers with the datatype's handle, as the standard describes. A
//! non-commutative one is combined in rank order (dos's ordered
//! reduction, see `dos::op`); a commutative one lets dos's algorithms
//! combine in any order. On a datatype those algorithms cannot walk as a
//! slice of one element type (holes, mixed basic types, an opaque
//! predefined type), the blocking reductions take [`General`] instead.

use std::ffi::{c_int, c_void};

use crate::abi::{self, op, Handle};
use crate::error::{err, R};
use crate::ptr::{out, read};
use crate::reduce::{CUserFn, CUserFnC, UserCall, UserFn};
use crate::state;

fn is_predefined(h: Handle) -> bool {
    (op::NULL..=op::NO_OP).contains(&h)
}

mpi_fn! {
    /// Makes an operation of `user_fn` (`commute` nonzero: commutative).
    fn MPI_Op_create / PMPI_Op_create(user_fn: Option<CUserFn>, commute: c_int, op: *mut Handle) on abi::COMM_WORLD => {
        let f = user_fn.ok_or_else(|| err(abi::ERR_ARG, "null user function"))?;
        if op.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for op"));
        }
        create(UserCall::Int(f), commute, op)
    }
}

mpi_fn! {
    /// `MPI_Op_create` with a large-count function (MPI-4): `user_fn` is
    /// called with an `MPI_Count` length.
    fn MPI_Op_create_c / PMPI_Op_create_c(user_fn: Option<CUserFnC>, commute: c_int, op: *mut Handle) on abi::COMM_WORLD => {
        let f = user_fn.ok_or_else(|| err(abi::ERR_ARG, "null user function"))?;
        if op.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for op"));
        }
        create(UserCall::Count(f), commute, op)
    }
}

/// Registers a user operation and writes its handle to `op`.
///
/// # Safety
/// `op` valid for a write.
unsafe fn create(f: UserCall, commute: c_int, op: *mut Handle) -> R<()> {
    let h = state::with(|st| {
        Ok(st.ops.insert(UserFn {
            f,
            commute: commute != 0,
        }))
    })?;
    // SAFETY: the caller's contract.
    unsafe { out(op, h, "op") }
}

/// The user operation of handle `h`, or `MPI_ERR_OP`.
fn user(h: Handle) -> R<UserFn> {
    state::with(|st| Ok(st.ops.get(&h).copied()))?
        .ok_or_else(|| err(abi::ERR_OP, format!("invalid operation handle {h:#x}")))
}

mpi_fn! {
    /// Frees a user operation and sets the handle to `MPI_OP_NULL`; a
    /// predefined one is `MPI_ERR_OP`.
    fn MPI_Op_free / PMPI_Op_free(op: *mut Handle) on abi::COMM_WORLD => {
        let h = read(op, "op")?;
        if is_predefined(h) {
            return Err(err(abi::ERR_OP, "a predefined operation cannot be freed"));
        }
        user(h)?;
        state::with(|st| Ok(st.ops.remove(&h)))?;
        out(op, op::NULL, "op")
    }
}

mpi_fn! {
    /// Whether `op` is commutative (every predefined one is).
    fn MPI_Op_commutative / PMPI_Op_commutative(op: Handle, commute: *mut c_int) on abi::COMM_WORLD => {
        let c = if is_predefined(op) && op != op::NULL {
            true
        } else {
            user(op)?.commute
        };
        out(commute, c as c_int, "commute")
    }
}

// ----- user operations on datatypes the typed reductions cannot walk -----

/// A user operation on a datatype with holes, of mixed basic types, or of
/// an opaque predefined type (`MPI_REAL16`...): dos's reduction algorithms
/// combine slices of one fixed-size element type, so these take a path of
/// their own. The contributions travel packed (dos's gather, allgather,
/// alltoall(v)); the ranks that need a result unpack each contribution
/// into a buffer laid out as the datatype says (extent, holes, lower bound)
/// and call the user's function on those, in rank order (`c0 ∘ c1 ∘ ...`,
/// right for non-commutative operations too), then unpack the result into
/// the program's buffer. The function thus sees exactly the layout it
/// was written for, as the standard requires. Memory is the sum of the
/// contributions a rank folds (`n × count × size` at a reduce's root).
pub(crate) struct General {
    f: UserFn,
    dt: Handle,
    ty: crate::dtype::Shared,
}

/// The general path for `op` on `dt`, if it is the one to take: a user
/// operation on a derived datatype, or on a predefined one that
/// [`crate::datatype::for_reduction`] leaves opaque. `None` for everything
/// the typed reductions handle.
pub(crate) fn general(dt: Handle, op: Handle) -> R<Option<General>> {
    if is_predefined(op) {
        return Ok(None);
    }
    let Some(f) = state::with(|st| Ok(st.ops.get(&op).copied()))? else {
        return Ok(None);
    };
    // A derived type goes this way even when dos could reduce it as a
    // slice of its basic type: the function must be called with the
    // program's datatype and a count of its elements, and dos's algorithms
    // split buffers at basic elements, not at the derived type's.
    if !crate::datatype::in_table(dt)
        && crate::datatype::for_reduction(dt)?.elem != crate::datatype::Elem::Opaque
    {
        return Ok(None);
    }
    crate::datatype::layout_n(0, dt)?; // committed
    Ok(Some(General {
        f,
        dt,
        ty: crate::datatype::ty(dt)?,
    }))
}

/// A buffer laid out for `count` elements of a type: `base` is where the
/// element at offset 0 would be.
struct Typed {
    mem: Vec<u8>,
    lo: isize,
}

impl Typed {
    fn base(&mut self) -> *mut u8 {
        self.mem.as_mut_ptr().wrapping_offset(-self.lo)
    }
}

impl General {
    /// Bytes of `count` packed elements.
    pub(crate) fn len(&self, count: usize) -> R<usize> {
        self.ty.packed_len(count)
    }

    /// `count` elements at `buf`, packed.
    ///
    /// # Safety
    /// `buf` valid for `count` elements of the type.
    pub(crate) unsafe fn pack(&self, buf: *const c_void, count: usize) -> R<Vec<u8>> {
        let l = crate::datatype::layout_n(count, self.dt)?;
        match &l {
            // SAFETY: the caller's contract.
            crate::datatype::Layout::Dense(n) => Ok(unsafe { crate::ptr::src(buf, *n)? }.to_vec()),
            // SAFETY: the caller's contract.
            crate::datatype::Layout::Packed { .. } => unsafe { crate::types::pack_to_vec(buf, &l) },
        }
    }

    /// Unpacks `data` (`count` elements) into the program's `buf`.
    ///
    /// # Safety
    /// `buf` valid for writes of `count` elements of the type.
    pub(crate) unsafe fn unpack(&self, data: &[u8], buf: *mut c_void, count: usize) -> R<()> {
        let l = crate::datatype::layout_n(count, self.dt)?;
        // SAFETY: the caller's contract.
        unsafe { crate::types::unpack_from(data, buf, &l) }
    }

    /// A zeroed typed buffer for `count` elements holding `data`.
    fn typed(&self, data: &[u8], count: usize) -> R<Typed> {
        let (lo, hi) = self.ty.span(count)?;
        let mut t = Typed {
            mem: vec![0u8; (hi - lo) as usize],
            lo,
        };
        let base = t.base();
        // SAFETY: `base` plus the span of `count` elements is `mem`.
        unsafe { self.ty.unpack(data, base, count) };
        Ok(t)
    }

    /// `a ∘ b` of `count` packed elements each, through the user function
    /// on typed buffers; the result packed.
    fn combine(&self, a: &[u8], b: &[u8], count: usize) -> R<Vec<u8>> {
        let mut ta = self.typed(a, count)?;
        let mut tb = self.typed(b, count)?;
        let mut dt = self.dt;
        // SAFETY: both buffers hold `count` elements laid out as the type
        // says; the function combines them (the standard's contract for
        // user functions).
        unsafe {
            self.f
                .call(ta.base().cast(), tb.base().cast(), count, &mut dt)?
        };
        let mut out = vec![0u8; self.len(count)?];
        let base = tb.base();
        // SAFETY: as in `typed`.
        unsafe { self.ty.pack(base, count, &mut out) };
        Ok(out)
    }

    /// The contributions `parts` (each `count` packed elements), combined
    /// in order; `None` if there are none.
    pub(crate) fn fold<'a>(
        &self,
        mut parts: impl Iterator<Item = &'a [u8]>,
        count: usize,
    ) -> R<Option<Vec<u8>>> {
        let Some(first) = parts.next() else {
            return Ok(None);
        };
        let mut acc = first.to_vec();
        for p in parts {
            acc = self.combine(&acc, p, count)?;
        }
        Ok(Some(acc))
    }

    /// `MPI_Reduce`.
    ///
    /// # Safety
    /// The buffers valid for `count` elements of the type (`recvbuf` at the root).
    pub unsafe fn reduce(
        &self,
        c: &dos::Comm,
        sendbuf: *const c_void,
        recvbuf: *mut c_void,
        count: usize,
        root: usize,
    ) -> R<()> {
        let me = c.rank() == root;
        let src = if me && sendbuf as usize == abi::IN_PLACE {
            recvbuf as *const c_void
        } else {
            sendbuf
        };
        // SAFETY: the caller's contract.
        let mine = unsafe { self.pack(src, count)? };
        let len = mine.len();
        let mut all = vec![0u8; if me { len * c.size() } else { 0 }];
        c.gather(&mine, &mut all, root)?;
        if me && len > 0 {
            if let Some(r) = self.fold(all.chunks(len), count)? {
                // SAFETY: the caller's contract.
                unsafe { self.unpack(&r, recvbuf, count)? };
            }
        }
        Ok(())
    }

    /// `MPI_Allreduce` (`inclusive: None`), `MPI_Scan` (`Some(true)`) and
    /// `MPI_Exscan` (`Some(false)`: rank 0's buffer is left alone).
    ///
    /// # Safety
    /// The buffers valid for `count` elements of the type.
    pub unsafe fn allreduce(
        &self,
        c: &dos::Comm,
        sendbuf: *const c_void,
        recvbuf: *mut c_void,
        count: usize,
        scan: Option<bool>,
    ) -> R<()> {
        let src = if sendbuf as usize == abi::IN_PLACE {
            recvbuf as *const c_void
        } else {
            sendbuf
        };
        // SAFETY: the caller's contract.
        let mine = unsafe { self.pack(src, count)? };
        let len = mine.len();
        let mut all = vec![0u8; len * c.size()];
        c.allgather(&mine, &mut all)?;
        if len == 0 {
            return Ok(());
        }
        let upto = match scan {
            None => c.size(),
            Some(true) => c.rank() + 1,
            Some(false) => c.rank(),
        };
        if let Some(r) = self.fold(all.chunks(len).take(upto), count)? {
            // SAFETY: the caller's contract.
            unsafe { self.unpack(&r, recvbuf, count)? };
        }
        Ok(())
    }

    /// `MPI_Reduce_scatter` (`counts[i]` elements to rank `i`; equal
    /// counts for `MPI_Reduce_scatter_block`).
    ///
    /// # Safety
    /// `sendbuf` valid for the sum of `counts`, `recvbuf` for this rank's
    /// count (or the sum, with `MPI_IN_PLACE`).
    pub unsafe fn reduce_scatter(
        &self,
        c: &dos::Comm,
        sendbuf: *const c_void,
        recvbuf: *mut c_void,
        counts: &[usize],
    ) -> R<()> {
        let total: usize = counts.iter().sum();
        let src = if sendbuf as usize == abi::IN_PLACE {
            recvbuf as *const c_void
        } else {
            sendbuf
        };
        // SAFETY: the caller's contract.
        let send = unsafe { self.pack(src, total)? };
        let (n, me) = (c.size(), c.rank());
        let sc = counts.iter().map(|&k| self.len(k)).collect::<R<Vec<_>>>()?;
        let mut sd = Vec::with_capacity(n);
        let mut at = 0;
        for &l in &sc {
            sd.push(at);
            at += l;
        }
        let mine = sc[me];
        let rc = vec![mine; n];
        let rd: Vec<usize> = (0..n).map(|i| i * mine).collect();
        let mut all = vec![0u8; mine * n];
        c.alltoallv(&send, &sc, &sd, &mut all, &rc, &rd)?;
        if mine == 0 {
            return Ok(());
        }
        if let Some(r) = self.fold(all.chunks(mine), counts[me])? {
            // SAFETY: the caller's contract.
            unsafe { self.unpack(&r, recvbuf, counts[me])? };
        }
        Ok(())
    }

    /// `MPI_Reduce_local`: the user function on the program's buffers.
    ///
    /// # Safety
    /// The buffers valid for `count` elements of the type.
    pub unsafe fn local(&self, inbuf: *const c_void, inoutbuf: *mut c_void, count: usize) -> R<()> {
        if count == 0 {
            return Ok(());
        }
        if inbuf.is_null() || inoutbuf.is_null() {
            return Err(err(abi::ERR_BUFFER, "null buffer with a nonzero count"));
        }
        let mut dt = self.dt;
        // SAFETY: the caller's contract.
        unsafe { self.f.call(inbuf as *mut c_void, inoutbuf, count, &mut dt) }
    }
}
