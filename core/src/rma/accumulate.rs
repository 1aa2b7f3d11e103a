//! Fetching accumulates: [`Window::get_accumulate`] and [`Window::fetch_op`]
//! (`MPI_Get_accumulate`, `MPI_Fetch_and_op`) with every built-in operation
//! of [`crate::op`], [`crate::op::Replace`] and [`NoOp`].
//!
//! The old contents come back and the new ones are combined in one step,
//! under the same per-window lock as [`Window::accumulate`]: each element is
//! updated atomically with respect to every other accumulate, fetching or
//! not, from any rank (the 64-bit atomics [`Window::fetch_add`],
//! [`Window::compare_swap`] and [`Window::swap`] are a separate family:
//! do not mix the two families on one location in one epoch). A target on
//! this node whose part is mapped is updated in place; others get one
//! message per chunk (`GETACC`) and answer with the old bytes.
//!
//! ```
//! use dos::op::{Max, Sum};
//! let got = dos::testing::run_threads(3, |world| {
//!     let win = world.win_allocate::<i64>(2).unwrap();
//!     win.fence().unwrap();
//!     // Everyone takes a ticket from rank 0's counter...
//!     let ticket = win.fetch_op(1, 0, 0, Sum).unwrap();
//!     // ... and raises rank 0's maximum, seeing the one before.
//!     let mut old = [0i64];
//!     win.get_accumulate(&[world.rank() as i64 * 7], &mut old, 0, 1, Max).unwrap();
//!     win.fence().unwrap();
//!     let now = win.fetch_op(0, 0, 1, dos::rma::NoOp).unwrap();
//!     (ticket, now)
//! });
//! let mut tickets: Vec<i64> = got.iter().map(|g| g.0).collect();
//! tickets.sort();
//! assert_eq!(tickets, [0, 1, 2]);
//! assert!(got.iter().all(|g| g.1 == 14));
//! ```

use std::mem::size_of;

use bytemuck::Pod;

use super::mapped::WinHeader;
use super::target::{AccOp, AccType};
use super::wire::{self, Reader, Writer};
use super::{am_chunk, Window};
use crate::op::{self, Op};
use crate::p2p::Engine;
use crate::{Error, Result};

/// No operation (`MPI_NO_OP`): the target is left as it is, so
/// [`Window::get_accumulate`] and [`Window::fetch_op`] with it are atomic
/// reads (with respect to the other accumulates). [`Window::accumulate`]
/// with it does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoOp;

impl<T: Copy + Sync> Op<T> for NoOp {
    #[inline]
    fn apply_left(&self, _a: &[T], _inout: &mut [T]) {}
    #[inline]
    fn apply_right(&self, _inout: &mut [T], _b: &[T]) {}
}

impl AccOp for NoOp {
    const CODE: u8 = 8;
}

/// Under the window's accumulate lock: copies the `old.len()` elements at
/// `dst` into `old`, then `dst[i] = dst[i] ⊕ src[i]` unless `src` is empty
/// (no operation).
///
/// # Safety
/// `dst` is valid for `old.len()` elements of window memory (any alignment).
pub(crate) unsafe fn get_accumulate_at<T: Pod, O: Op<T>>(
    header: &WinHeader,
    dst: *mut u8,
    src: &[T],
    old: &mut [T],
    op: &O,
) {
    let n = std::mem::size_of_val(old);
    let mut cur = if src.is_empty() {
        Vec::new()
    } else {
        vec![T::zeroed(); src.len()]
    };
    header.acc_lock();
    // SAFETY: the caller vouches for `n` bytes at `dst`; `old` holds `n` bytes.
    unsafe { std::ptr::copy_nonoverlapping(dst, old.as_mut_ptr().cast::<u8>(), n) };
    if !src.is_empty() {
        cur.copy_from_slice(old);
        op.apply_right(&mut cur, src);
        // SAFETY: as above (`src.len() == old.len()`, checked by the callers).
        unsafe { std::ptr::copy_nonoverlapping(cur.as_ptr().cast::<u8>(), dst, n) };
    }
    header.acc_unlock();
}

/// [`get_accumulate_at`] with the operation and element type given by their
/// codes, on `len` bytes, the operands in `bytes` (empty for [`NoOp`]); the
/// old bytes, or `None` if the request does not make sense.
///
/// # Safety
/// `dst` is valid for `len` bytes of window memory.
pub(crate) unsafe fn get_accumulate_coded(
    header: &WinHeader,
    dst: *mut u8,
    opc: u8,
    ty: u8,
    len: usize,
    bytes: &[u8],
) -> Option<Vec<u8>> {
    if opc >= super::raw::CAS || ty >= super::raw::COMPLEX_F32 {
        // SAFETY: forwarded from the caller.
        return unsafe { super::raw::update(header, dst, opc, ty, len, bytes) };
    }
    if let Some(k) = super::words::Kernel::of(opc, ty) {
        let sz = super::raw::type_size(ty).unwrap_or(1);
        if len % sz != 0 || bytes.len() != len {
            return None;
        }
        let mut old = vec![0u8; len];
        header.acc_lock();
        // SAFETY: the caller vouches for `len` bytes at `dst`; `old` holds
        // `len` bytes; the accumulate lock keeps other accumulates off them.
        unsafe {
            std::ptr::copy_nonoverlapping(dst, old.as_mut_ptr(), len);
            k.apply_at(dst, bytes);
        }
        header.acc_unlock();
        return Some(old);
    }
    /// Decodes the operands and runs the typed update.
    ///
    /// # Safety
    /// As for `get_accumulate_coded`.
    unsafe fn typed<T: AccType, O: AccOp + Op<T>>(
        header: &WinHeader,
        dst: *mut u8,
        len: usize,
        bytes: &[u8],
        op: O,
    ) -> Option<Vec<u8>> {
        let sz = size_of::<T>();
        let noop = O::CODE == NoOp::CODE;
        if len % sz != 0 || (noop && !bytes.is_empty()) || (!noop && bytes.len() != len) {
            return None;
        }
        let src: Vec<T> = bytes
            .chunks_exact(sz)
            .map(bytemuck::pod_read_unaligned)
            .collect();
        let mut old = vec![T::zeroed(); len / sz];
        // SAFETY: forwarded from the caller.
        unsafe { get_accumulate_at(header, dst, &src, &mut old, &op) };
        Some(bytemuck::cast_slice(&old).to_vec())
    }
    macro_rules! by_op {
        ($t:ty, [$($o:path),*]) => {
            match opc {
                // SAFETY: forwarded from the caller.
                $(<$o as AccOp>::CODE => unsafe { typed::<$t, $o>(header, dst, len, bytes, $o) },)*
                _ => None,
            }
        };
    }
    macro_rules! floats {
        ($t:ty) => {
            by_op!($t, [op::Replace, op::Sum, op::Prod, op::Min, op::Max, NoOp])
        };
    }
    macro_rules! ints {
        ($t:ty) => {
            by_op!(
                $t,
                [
                    op::Replace,
                    op::Sum,
                    op::Prod,
                    op::Min,
                    op::Max,
                    op::BitAnd,
                    op::BitOr,
                    op::BitXor,
                    NoOp
                ]
            )
        };
    }
    match ty {
        1 => ints!(i32),
        2 => ints!(u32),
        3 => ints!(i64),
        4 => ints!(u64),
        5 => floats!(f32),
        6 => floats!(f64),
        7 => ints!(u8),
        8 => ints!(i8),
        9 => ints!(i16),
        10 => ints!(u16),
        _ => None,
    }
}

/// Serves a GETACC from world rank `src`: applies it, answers with the old
/// bytes (GETRESP), or refuses it.
pub(crate) fn on_getacc(eng: &Engine, src: usize, data: &[u8]) -> Result<()> {
    let mut r = Reader::new(data, src);
    let (win, off, opc, ty, tok, len) = (
        r.u32()?,
        r.u64()?,
        r.u8()?,
        r.u8()?,
        r.u32()?,
        r.u32()? as usize,
    );
    let bytes = r.rest();
    let reach = eng.rma().borrow().reach(win, off, len);
    let old = reach.and_then(|(e, o)| {
        // SAFETY: inside the exposed window; its header is mapped as long as
        // the window is exposed.
        unsafe { get_accumulate_coded(&*e.header, e.data.add(o), opc, ty, len, bytes) }
    });
    let (status, body) = match &old {
        Some(b) => (wire::OK, b.as_slice()),
        None => (wire::REFUSED, &[][..]),
    };
    let hdr = Writer::<8>::default().u32(tok).u8(status);
    eng.send_copy(src, wire::GETRESP, hdr.bytes(), body)
}

impl<T: Pod> Window<'_, T> {
    /// Combines `src` into `target`'s part from element `disp` with `op` and
    /// returns the contents from before into `result` (`MPI_Get_accumulate`).
    /// Each element is read and updated atomically with respect to other
    /// accumulates; complete (at the origin and the target) on return.
    ///
    /// With [`NoOp`], `src` may be empty and the call is an atomic read.
    ///
    /// # Errors
    /// [`Error::InvalidBuffer`] if `src` and `result` differ in length;
    /// [`Error::RemoteAccess`] for an access outside the target's part.
    pub fn get_accumulate<O>(
        &self,
        src: &[T],
        result: &mut [T],
        target: usize,
        disp: usize,
        op: O,
    ) -> Result<()>
    where
        T: AccType,
        O: AccOp + Op<T>,
    {
        let noop = O::CODE == NoOp::CODE;
        if src.len() != result.len() && !(noop && src.is_empty()) {
            return Err(Error::InvalidBuffer {
                op: "get_accumulate",
                reason: format!(
                    "{} operands for {} results (they must match)",
                    src.len(),
                    result.len()
                ),
            });
        }
        let src = if noop { &[][..] } else { src };
        let (off, n) = self.span(target, disp, result.len())?;
        let p = &self.parts[target];
        if let (Some(d), Some(h)) = (p.data, p.header) {
            // SAFETY: inside the target's mapped part; its header is mapped.
            unsafe { get_accumulate_at(&*h, d.add(off), src, result, &op) };
            return Ok(());
        }
        let eng = self.comm.eng.enter();
        let sz = size_of::<T>();
        let per = (am_chunk(&eng, p.world) / sz).max(1);
        for (k, out) in result.chunks_mut(per).enumerate() {
            let lo = k * per;
            let out: &mut [u8] = bytemuck::cast_slice_mut(out);
            let tok = eng
                .rma()
                .borrow_mut()
                .expect(Some((out.as_mut_ptr(), out.len())));
            let w = Writer::<32>::default()
                .u32(self.id)
                .u64((off + lo * sz) as u64)
                .u8(O::CODE)
                .u8(T::CODE)
                .u32(tok)
                .u32(out.len() as u32);
            let operands: &[u8] = if noop {
                &[]
            } else {
                bytemuck::cast_slice(&src[lo..lo + out.len() / sz])
            };
            let status = self
                .send_gathered(&eng, target)
                .and_then(|()| eng.send_copy(p.world, wire::GETACC, w.bytes(), operands))
                .and_then(|()| self.await_reply(tok))
                .map(|r| r.status);
            if status? != Some(wire::OK) {
                return Err(self.refused(target, off, n));
            }
        }
        Ok(())
    }

    /// Combines `value` into element `disp` of `target`'s part with `op`;
    /// returns the element from before (`MPI_Fetch_and_op`). Atomic with
    /// respect to other accumulates; complete on return.
    pub fn fetch_op<O>(&self, value: T, target: usize, disp: usize, op: O) -> Result<T>
    where
        T: AccType,
        O: AccOp + Op<T>,
    {
        let mut old = [T::zeroed()];
        self.get_accumulate(&[value], &mut old, target, disp, op)?;
        Ok(old[0])
    }
}
