//! Accumulates on a byte window with the operation and element type named by
//! codes at run time, for language bindings (the MPI C library) whose
//! datatypes and operations are values, not Rust types.
//!
//! [`Window::<u8>::accumulate_raw`], [`Window::<u8>::get_accumulate_raw`] and
//! [`Window::<u8>::compare_swap_raw`] take byte offsets and byte buffers.
//! They travel like the typed ones ([`Window::accumulate`],
//! [`Window::get_accumulate`]): in place under the window's accumulate lock
//! for a part mapped here, else as ACC or GETACC messages that the target
//! serves under the same lock. So every accumulate, typed or raw, fetching
//! or not, is atomic per element with respect to the others.
//!
//! The codes: element types are those of [`AccType::CODE`] (`i32` = 1 ...
//! `u16` = 10); operations those of [`AccOp::CODE`] (`Replace` = 0, `Sum` =
//! 1, `Prod`, `Min`, `Max`, `BitAnd`, `BitOr`, `BitXor` = 7, [`NoOp`] = 8)
//! and the ones only this module knows: [`LAND`], [`LOR`], [`LXOR`] (logical
//! operations on integers, as C's `&&`, `||`, `!=` of truth values),
//! [`MINLOC`] and [`MAXLOC`] on the value-index pair types ([`FLOAT_INT`]
//! ... [`TWO_F64`], laid out as C lays out the structs), sums and products
//! of complex numbers ([`COMPLEX_F32`], [`COMPLEX_F64`]) and the
//! compare-and-swap [`CAS`] (integer types); and the foreign element types
//! ([`LONG_DOUBLE`], [`COMPLEX_LONG_DOUBLE`], [`LONG_DOUBLE_INT`]) whose
//! arithmetic a binding lends with [`set_foreign`] (Rust has no x87
//! `long double`; the MPI C library has it). [`Replace`](crate::op::Replace)
//! and [`NoOp`] apply to the type [`BYTES`] (any data, moved as bytes).
//! The operations only this module knows travel as fetching updates
//! (GETACC) even when no result is wanted.
//!
//! ```
//! use dos::rma::raw;
//! use dos::rma::AccType;
//! let got = dos::testing::run_threads(2, |world| {
//!     let win = world.win_allocate::<u8>(8).unwrap();
//!     win.fence().unwrap();
//!     // Both add 5 to rank 0's i64 (code 3) with Sum (code 1).
//!     win.accumulate_raw(&5i64.to_ne_bytes(), 0, 0, 1, <i64 as AccType>::CODE).unwrap();
//!     win.fence().unwrap();
//!     let mut old = [0u8; 8];
//!     // Both try 10 -> 7 (new value first, then the one to compare with).
//!     win.compare_swap_raw(&7i64.to_ne_bytes(), &10i64.to_ne_bytes(), &mut old, 0, 0, 3).unwrap();
//!     win.fence().unwrap();
//!     let mut now = [0u8; 8];
//!     win.get_accumulate_raw(&[], &mut now, 0, 0, raw::NO_OP, raw::BYTES).unwrap();
//!     i64::from_ne_bytes(now)
//! });
//! assert!(got.iter().all(|&v| v == 7));
//! ```

use super::accumulate::NoOp;
use super::mapped::WinHeader;
use super::target::{AccOp, AccType};
use super::wire::{self, Writer};
use super::{am_chunk, Window, AM_CHUNK};
use crate::{Error, Result};

/// Element type code for plain bytes (with `Replace` and [`NoOp`] only).
pub const BYTES: u8 = <u8 as AccType>::CODE;
/// Operation code of [`NoOp`].
pub const NO_OP: u8 = NoOp::CODE;
/// Compare-and-swap: the operands are the value to compare with, then the
/// value to store; the result is the old value.
pub const CAS: u8 = 9;
/// Logical and of truth values (nonzero is true; the result is 0 or 1).
pub const LAND: u8 = 10;
/// Logical or.
pub const LOR: u8 = 11;
/// Logical exclusive or.
pub const LXOR: u8 = 12;

/// Minimum value and its index (`MPI_MINLOC`), on the pair types.
pub const MINLOC: u8 = 13;
/// Maximum value and its index (`MPI_MAXLOC`).
pub const MAXLOC: u8 = 14;

/// Element type codes beyond [`AccType`]'s: complex numbers (real part
/// first) ...
pub const COMPLEX_F32: u8 = 20;
/// ... of two `f64`.
pub const COMPLEX_F64: u8 = 21;
/// Value-index pairs as C lays out `struct { value; int index; }`:
/// `float` and `int` (8 bytes).
pub const FLOAT_INT: u8 = 22;
/// `double` and `int` (16 bytes, padded).
pub const DOUBLE_INT: u8 = 23;
/// `long` and `int` (16 bytes, padded).
pub const LONG_INT: u8 = 24;
/// Two `int`s.
pub const TWO_INT: u8 = 25;
/// `short` and `int` (8 bytes, the index at 4).
pub const SHORT_INT: u8 = 26;
/// Two `float`s (the index a float too).
pub const TWO_F32: u8 = 27;
/// Two `double`s.
pub const TWO_F64: u8 = 28;

/// Element types whose arithmetic the binding supplies ([`set_foreign`]):
/// C's `long double` (x87 extended in 16 bytes on x86-64) ...
pub const LONG_DOUBLE: u8 = 29;
/// ... `long double _Complex` (32 bytes) ...
pub const COMPLEX_LONG_DOUBLE: u8 = 30;
/// ... and `struct { long double value; int index; }` (32 bytes, padded).
pub const LONG_DOUBLE_INT: u8 = 31;

/// `cur[i] = cur[i] op src[i]` on whole elements of a foreign type code;
/// false for a pair it does not define.
pub type ForeignCombine = fn(op: u8, ty: u8, cur: &mut [u8], src: &[u8]) -> bool;

static FOREIGN: std::sync::OnceLock<ForeignCombine> = std::sync::OnceLock::new();

/// Registers the arithmetic of the foreign element types ([`LONG_DOUBLE`],
/// [`COMPLEX_LONG_DOUBLE`], [`LONG_DOUBLE_INT`]): a binding whose language
/// has them (the MPI C library) calls this once before its first window,
/// in every process, since the target of an accumulate applies it. Without
/// it those codes are refused like unknown ones. Returns false (and keeps
/// the first) if one was registered already.
pub fn set_foreign(f: ForeignCombine) -> bool {
    FOREIGN.set(f).is_ok()
}

fn foreign(ty: u8) -> bool {
    matches!(ty, LONG_DOUBLE | COMPLEX_LONG_DOUBLE | LONG_DOUBLE_INT)
}

/// Bytes of one element of type code `ty`, or `None` for an unknown code.
pub fn type_size(ty: u8) -> Option<usize> {
    Some(match ty {
        7 | 8 => 1,
        9 | 10 => 2,
        1 | 2 | 5 => 4,
        3 | 4 | 6 => 8,
        COMPLEX_F32 | FLOAT_INT | TWO_INT | SHORT_INT | TWO_F32 => 8,
        COMPLEX_F64 | DOUBLE_INT | LONG_INT | TWO_F64 => 16,
        LONG_DOUBLE if FOREIGN.get().is_some() => 16,
        COMPLEX_LONG_DOUBLE | LONG_DOUBLE_INT if FOREIGN.get().is_some() => 32,
        _ => return None,
    })
}

/// True if operation `op` applies to element type `ty` here.
pub fn supported(op: u8, ty: u8) -> bool {
    let float = matches!(ty, 5 | 6);
    let basic = (1..=10).contains(&ty);
    let complex = matches!(ty, COMPLEX_F32 | COMPLEX_F64);
    let pair = (FLOAT_INT..=TWO_F64).contains(&ty);
    if foreign(ty) && type_size(ty).is_some() {
        return matches!(
            (op, ty),
            (0 | NO_OP, _)
                | (1..=4, LONG_DOUBLE)
                | (1 | 2, COMPLEX_LONG_DOUBLE)
                | (MINLOC | MAXLOC, LONG_DOUBLE_INT)
        );
    }
    match op {
        0 | NO_OP => type_size(ty).is_some(),
        CAS => basic,
        1 | 2 => basic || complex,
        3 | 4 => basic,
        5..=7 | LAND | LOR | LXOR => basic && !float,
        MINLOC | MAXLOC => pair,
        _ => false,
    }
}

/// A number read from window bytes, for comparisons.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Num {
    F(f64),
    I(i128),
}

/// Reads a number of kind `k` (`b'f'` f32, `b'd'` f64, `b's'` i16, `b'i'`
/// i32, `b'l'` i64) at byte `off` of `b`.
fn num(k: u8, b: &[u8], off: usize) -> Num {
    let at = |n: usize| &b[off..off + n];
    match k {
        b'f' => Num::F(f32::from_ne_bytes(at(4).try_into().expect("4")) as f64),
        b'd' => Num::F(f64::from_ne_bytes(at(8).try_into().expect("8"))),
        b's' => Num::I(i16::from_ne_bytes(at(2).try_into().expect("2")) as i128),
        b'i' => Num::I(i32::from_ne_bytes(at(4).try_into().expect("4")) as i128),
        _ => Num::I(i64::from_ne_bytes(at(8).try_into().expect("8")) as i128),
    }
}

/// `cur[i] = cur[i] op src[i]` for complex sums and products and the
/// value-index pairs' `MINLOC`/`MAXLOC`; false for anything else.
fn combine_ext(op: u8, ty: u8, cur: &mut [u8], src: &[u8]) -> bool {
    let Some(sz) = type_size(ty) else {
        return false;
    };
    if cur.len() != src.len() || cur.len() % sz != 0 {
        return false;
    }
    if foreign(ty) {
        return FOREIGN.get().is_some_and(|f| f(op, ty, cur, src));
    }
    for (c, s) in cur.chunks_exact_mut(sz).zip(src.chunks_exact(sz)) {
        match (ty, op) {
            (COMPLEX_F32 | COMPLEX_F64, 1 | 2) => {
                let k = if ty == COMPLEX_F32 { b'f' } else { b'd' };
                let h = sz / 2;
                let f = |b: &[u8], o| match num(k, b, o) {
                    Num::F(x) => x,
                    Num::I(_) => 0.0,
                };
                let (a, b, x, y) = (f(c, 0), f(c, h), f(s, 0), f(s, h));
                let (re, im) = if op == 1 {
                    (a + x, b + y)
                } else {
                    (a * x - b * y, a * y + b * x)
                };
                if ty == COMPLEX_F32 {
                    c[..4].copy_from_slice(&(re as f32).to_ne_bytes());
                    c[4..8].copy_from_slice(&(im as f32).to_ne_bytes());
                } else {
                    c[..8].copy_from_slice(&re.to_ne_bytes());
                    c[8..16].copy_from_slice(&im.to_ne_bytes());
                }
            }
            (_, MINLOC | MAXLOC) => {
                // (value kind, index kind, index offset)
                let (vk, ik, io) = match ty {
                    FLOAT_INT => (b'f', b'i', 4),
                    DOUBLE_INT => (b'd', b'i', 8),
                    LONG_INT => (b'l', b'i', 8),
                    TWO_INT => (b'i', b'i', 4),
                    SHORT_INT => (b's', b'i', 4),
                    TWO_F32 => (b'f', b'f', 4),
                    TWO_F64 => (b'd', b'd', 8),
                    _ => return false,
                };
                let (a, b) = (num(vk, c, 0), num(vk, s, 0));
                let better = if op == MINLOC { b < a } else { b > a };
                if better {
                    c.copy_from_slice(s);
                } else if a == b && num(ik, s, io) < num(ik, c, io) {
                    let n = if ik == b'd' { 8 } else { 4 };
                    c[io..io + n].copy_from_slice(&s[io..io + n]);
                }
            }
            _ => return false,
        }
    }
    true
}

/// Reads element `i` of an integer type as `i128` (sign as its type).
fn int_at(ty: u8, b: &[u8]) -> i128 {
    match ty {
        1 => i32::from_ne_bytes(b[..4].try_into().expect("4")) as i128,
        2 => u32::from_ne_bytes(b[..4].try_into().expect("4")) as i128,
        3 => i64::from_ne_bytes(b[..8].try_into().expect("8")) as i128,
        4 => u64::from_ne_bytes(b[..8].try_into().expect("8")) as i128,
        7 => b[0] as i128,
        8 => b[0] as i8 as i128,
        9 => i16::from_ne_bytes(b[..2].try_into().expect("2")) as i128,
        10 => u16::from_ne_bytes(b[..2].try_into().expect("2")) as i128,
        _ => 0,
    }
}

/// `cur[i] = cur[i] op src[i]` for the operations only this module knows
/// (the logical ones); false for anything else.
fn combine_logical(op: u8, ty: u8, cur: &mut [u8], src: &[u8]) -> bool {
    let Some(sz) = type_size(ty) else {
        return false;
    };
    if matches!(ty, 5 | 6) || cur.len() != src.len() || cur.len() % sz != 0 {
        return false;
    }
    for (c, s) in cur.chunks_exact_mut(sz).zip(src.chunks_exact(sz)) {
        let (a, b) = (int_at(ty, c) != 0, int_at(ty, s) != 0);
        let r = match op {
            LAND => a && b,
            LOR => a || b,
            LXOR => a != b,
            _ => return false,
        };
        c.fill(0);
        // The value 1 in the element's byte order.
        if cfg!(target_endian = "little") {
            c[0] = r as u8;
        } else {
            c[sz - 1] = r as u8;
        }
    }
    true
}

/// `cur[i] = cur[i] op src[i]` on bytes of element type `ty`, for any
/// operation code but [`CAS`] (the caller provides the atomicity); false for
/// an unsupported pair or bytes that are not whole elements. For a
/// binding's own path to memory dos does not hold (dynamic windows).
pub fn apply(op: u8, ty: u8, cur: &mut [u8], src: &[u8]) -> bool {
    use crate::op::{self as o, Op};
    if !supported(op, ty) || op == CAS {
        return false;
    }
    let sz = type_size(ty).unwrap_or(1);
    if op == NO_OP {
        return true;
    }
    if cur.len() != src.len() || cur.len() % sz != 0 {
        return false;
    }
    if op >= MINLOC || ty >= COMPLEX_F32 {
        return combine_ext(op, ty, cur, src);
    }
    if op >= LAND {
        return combine_logical(op, ty, cur, src);
    }
    if let Some(k) = super::words::Kernel::of(op, ty) {
        k.apply_bytes(cur, src);
        return true;
    }
    fn typed<T: AccType, O: Op<T>>(cur: &mut [u8], src: &[u8], op: O) -> bool {
        let sz = std::mem::size_of::<T>();
        let mut a: Vec<T> = cur
            .chunks_exact(sz)
            .map(bytemuck::pod_read_unaligned)
            .collect();
        let b: Vec<T> = src
            .chunks_exact(sz)
            .map(bytemuck::pod_read_unaligned)
            .collect();
        op.apply_right(&mut a, &b);
        cur.copy_from_slice(bytemuck::cast_slice(&a));
        true
    }
    macro_rules! by_op {
        ($t:ty, [$($code:literal => $o:expr),*]) => {
            match op {
                $($code => typed::<$t, _>(cur, src, $o),)*
                _ => false,
            }
        };
    }
    macro_rules! ints {
        ($t:ty) => {
            by_op!($t, [0 => o::Replace, 1 => o::Sum, 2 => o::Prod, 3 => o::Min, 4 => o::Max, 5 => o::BitAnd, 6 => o::BitOr, 7 => o::BitXor])
        };
    }
    match ty {
        1 => ints!(i32),
        2 => ints!(u32),
        3 => ints!(i64),
        4 => ints!(u64),
        5 => by_op!(f32, [0 => o::Replace, 1 => o::Sum, 2 => o::Prod, 3 => o::Min, 4 => o::Max]),
        6 => by_op!(f64, [0 => o::Replace, 1 => o::Sum, 2 => o::Prod, 3 => o::Min, 4 => o::Max]),
        7 => ints!(u8),
        8 => ints!(i8),
        9 => ints!(i16),
        10 => ints!(u16),
        _ => false,
    }
}

/// Under the accumulate lock: the old `len` bytes at `dst`, and the update
/// of an operation only this module knows ([`CAS`], [`LAND`], [`LOR`],
/// [`LXOR`]); `None` if the request does not make sense.
///
/// # Safety
/// `dst` is valid for `len` bytes of window memory.
pub(crate) unsafe fn update(
    header: &WinHeader,
    dst: *mut u8,
    opc: u8,
    ty: u8,
    len: usize,
    bytes: &[u8],
) -> Option<Vec<u8>> {
    let sz = type_size(ty)?;
    if len % sz != 0 || !supported(opc, ty) {
        return None;
    }
    let want = match opc {
        CAS => 2 * len,
        NO_OP => 0,
        _ => len,
    };
    if bytes.len() != want || (opc == CAS && len != sz) {
        return None;
    }
    let mut old = vec![0u8; len];
    header.acc_lock();
    // SAFETY: the caller vouches for `len` bytes at `dst`.
    unsafe { std::ptr::copy_nonoverlapping(dst, old.as_mut_ptr(), len) };
    let new = if opc == CAS {
        (old[..] == bytes[..len]).then(|| bytes[len..].to_vec())
    } else if opc == NO_OP {
        None
    } else {
        let mut cur = old.clone();
        apply(opc, ty, &mut cur, bytes).then_some(cur)
    };
    if let Some(n) = &new {
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(n.as_ptr(), dst, len) };
    }
    header.acc_unlock();
    Some(old)
}

fn unsupported(op: u8, ty: u8) -> Error {
    Error::InvalidArgument {
        op: "accumulate",
        reason: if type_size(ty).is_none() {
            "unknown element type code"
        } else if op > MAXLOC {
            "unknown operation code"
        } else {
            "operation not defined on this element type"
        },
    }
}

impl Window<'_, u8> {
    /// Combines `src` (whole elements of type code `ty`) into `target`'s part
    /// from byte `off` with operation code `op` (`MPI_Accumulate`); each
    /// element atomically with respect to other accumulates. Complete at the
    /// target after a flush, like [`Window::accumulate`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown or unsupported pair of
    /// codes, or [`CAS`]; [`Error::RemoteAccess`] outside the target's part.
    pub fn accumulate_raw(
        &self,
        src: &[u8],
        target: usize,
        off: usize,
        op: u8,
        ty: u8,
    ) -> Result<()> {
        if !supported(op, ty) || op == CAS {
            return Err(unsupported(op, ty));
        }
        let sz = type_size(ty).unwrap_or(1);
        if src.len() % sz != 0 {
            return Err(Error::InvalidBuffer {
                op: "accumulate",
                reason: format!("{} bytes are not whole elements of {sz} bytes", src.len()),
            });
        }
        let (off, _) = self.span(target, off, src.len())?;
        if op == NO_OP || src.is_empty() {
            return Ok(());
        }
        if op >= LAND || ty >= COMPLEX_F32 {
            // Only the fetching path knows these: its reply is dropped.
            let mut old = vec![0u8; src.len()];
            return self.get_accumulate_raw(src, &mut old, target, off, op, ty);
        }
        let p = &self.parts[target];
        if let (Some(d), Some(h)) = (p.data, p.header) {
            // SAFETY: inside the target's mapped part; its header is mapped.
            let ok = unsafe { super::target::accumulate_coded(&*h, d.add(off), op, ty, src) };
            return if ok { Ok(()) } else { Err(unsupported(op, ty)) };
        }
        let per = (AM_CHUNK / sz).max(1) * sz;
        for (k, chunk) in src.chunks(per).enumerate() {
            let w = Writer::<16>::default()
                .u32(self.id)
                .u64((off + k * per) as u64)
                .u8(op)
                .u8(ty);
            let eng = self.comm.eng.enter();
            self.send_gathered(&eng, target)?;
            eng.send_copy(p.world, wire::ACC, w.bytes(), chunk)?;
        }
        self.note_sent(target);
        Ok(())
    }

    /// Combines `src` into `target`'s part from byte `off` with operation
    /// code `op` and returns the bytes from before into `result`
    /// (`MPI_Get_accumulate`, `MPI_Fetch_and_op`); with [`NO_OP`] `src` is
    /// empty (an atomic read). Complete on return.
    ///
    /// # Errors
    /// As [`Window::accumulate_raw`]; [`Error::InvalidBuffer`] if `src` and
    /// `result` differ in length.
    pub fn get_accumulate_raw(
        &self,
        src: &[u8],
        result: &mut [u8],
        target: usize,
        off: usize,
        op: u8,
        ty: u8,
    ) -> Result<()> {
        if !supported(op, ty) || op == CAS {
            return Err(unsupported(op, ty));
        }
        let noop = op == NO_OP;
        let sz = type_size(ty).unwrap_or(1);
        if (!noop && src.len() != result.len()) || result.len() % sz != 0 {
            return Err(Error::InvalidBuffer {
                op: "get_accumulate",
                reason: format!(
                    "{} operand bytes for {} result bytes of elements of {sz}",
                    src.len(),
                    result.len()
                ),
            });
        }
        let src = if noop { &[][..] } else { src };
        self.fetch_coded(src, result, target, off, op, ty, sz)
    }

    /// Compares the element of type code `ty` at byte `off` of `target`'s
    /// part with `compare` and stores `new` there if equal; the old element
    /// lands in `result` (`MPI_Compare_and_swap`). Atomic with respect to
    /// the other accumulates; complete on return.
    pub fn compare_swap_raw(
        &self,
        new: &[u8],
        compare: &[u8],
        result: &mut [u8],
        target: usize,
        off: usize,
        ty: u8,
    ) -> Result<()> {
        let sz = type_size(ty).ok_or_else(|| unsupported(CAS, ty))?;
        if new.len() != sz || compare.len() != sz || result.len() != sz {
            return Err(Error::InvalidBuffer {
                op: "compare_swap",
                reason: format!("operands and result must be one element of {sz} bytes"),
            });
        }
        let operands = [compare, new].concat();
        self.fetch_coded(&operands, result, target, off, CAS, ty, sz)
    }

    /// The fetching update behind [`Window::get_accumulate_raw`] and
    /// [`Window::compare_swap_raw`]: in place, or GETACC messages.
    #[allow(clippy::too_many_arguments)]
    fn fetch_coded(
        &self,
        src: &[u8],
        result: &mut [u8],
        target: usize,
        off: usize,
        op: u8,
        ty: u8,
        sz: usize,
    ) -> Result<()> {
        let (off, n) = self.span(target, off, result.len())?;
        if n == 0 {
            return Ok(());
        }
        let p = &self.parts[target];
        if let (Some(d), Some(h)) = (p.data, p.header) {
            // SAFETY: inside the target's mapped part; its header is mapped.
            let old =
                unsafe { super::accumulate::get_accumulate_coded(&*h, d.add(off), op, ty, n, src) };
            return match old {
                Some(o) => {
                    result.copy_from_slice(&o);
                    Ok(())
                }
                None => Err(unsupported(op, ty)),
            };
        }
        let eng = self.comm.eng.enter();
        let per = if op == CAS {
            n
        } else {
            (am_chunk(&eng, p.world) / sz).max(1) * sz
        };
        for (k, out) in result.chunks_mut(per).enumerate() {
            let lo = k * per;
            let tok = eng
                .rma()
                .borrow_mut()
                .expect(Some((out.as_mut_ptr(), out.len())));
            let w = Writer::<32>::default()
                .u32(self.id)
                .u64((off + lo) as u64)
                .u8(op)
                .u8(ty)
                .u32(tok)
                .u32(out.len() as u32);
            let operands: &[u8] = if src.is_empty() {
                &[]
            } else if op == CAS {
                src
            } else {
                &src[lo..lo + out.len()]
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(v: &[i32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_ne_bytes()).collect()
    }

    /// A stand-in for a binding's arithmetic: `LONG_DOUBLE` sums as
    /// 128-bit integers, everything else refused.
    fn fake_foreign(op: u8, ty: u8, cur: &mut [u8], src: &[u8]) -> bool {
        if (op, ty) != (1, LONG_DOUBLE) {
            return false;
        }
        for (c, s) in cur.chunks_exact_mut(16).zip(src.chunks_exact(16)) {
            let a = u128::from_ne_bytes(c.try_into().unwrap());
            let b = u128::from_ne_bytes(s.try_into().unwrap());
            c.copy_from_slice(&(a + b).to_ne_bytes());
        }
        true
    }

    #[test]
    fn foreign_types_use_the_registered_arithmetic() {
        // The registration is global: the first one stays (no other test
        // registers one).
        set_foreign(fake_foreign);
        assert!(
            !set_foreign(fake_foreign),
            "a second registration is refused"
        );
        assert_eq!(type_size(LONG_DOUBLE), Some(16));
        assert_eq!(type_size(LONG_DOUBLE_INT), Some(32));
        assert!(supported(1, LONG_DOUBLE) && supported(NO_OP, LONG_DOUBLE));
        assert!(supported(MAXLOC, LONG_DOUBLE_INT) && !supported(MAXLOC, LONG_DOUBLE));
        assert!(
            !supported(5, LONG_DOUBLE),
            "no bitwise operations on long double"
        );
        let mut cur: Vec<u8> = [3u128, 4].iter().flat_map(|x| x.to_ne_bytes()).collect();
        let src: Vec<u8> = [10u128, 20].iter().flat_map(|x| x.to_ne_bytes()).collect();
        assert!(apply(1, LONG_DOUBLE, &mut cur, &src));
        let got: Vec<u128> = cur
            .chunks_exact(16)
            .map(|c| u128::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, [13, 24]);
        // The binding's function refuses a product: so does apply.
        assert!(!apply(2, LONG_DOUBLE, &mut cur, &src));
        // Not whole elements.
        assert!(!apply(1, LONG_DOUBLE, &mut cur[..8], &src[..8]));
    }

    #[test]
    fn every_code_against_a_model() {
        // Classic and logical operations on i32.
        let (a, b) = ([5, 0, -3, 7], [2, 4, 0, 7]);
        for (op, f) in [
            (
                1u8,
                (|x: i32, y: i32| x.wrapping_add(y)) as fn(i32, i32) -> i32,
            ),
            (2, |x, y| x.wrapping_mul(y)),
            (3, |x, y| x.min(y)),
            (4, |x, y| x.max(y)),
            (5, |x, y| x & y),
            (6, |x, y| x | y),
            (7, |x, y| x ^ y),
            (LAND, |x, y| (x != 0 && y != 0) as i32),
            (LOR, |x, y| (x != 0 || y != 0) as i32),
            (LXOR, |x, y| ((x != 0) != (y != 0)) as i32),
            (0, |_, y| y),
        ] {
            let mut cur = ints(&a);
            assert!(apply(op, 1, &mut cur, &ints(&b)), "op {op}");
            let want: Vec<i32> = a.iter().zip(&b).map(|(&x, &y)| f(x, y)).collect();
            assert_eq!(cur, ints(&want), "op {op}");
        }
        // Bitwise operations do not apply to floats, MINLOC only to pairs.
        assert!(!apply(5, 6, &mut [0; 8], &[0; 8]));
        assert!(!apply(MINLOC, 1, &mut [0; 4], &[0; 4]));
        assert!(!supported(CAS, COMPLEX_F64));
    }

    /// Every kind of raw call to a part on another node (messages, not the
    /// mapping): ACC with a classic code, GETACC with the codes only this
    /// module knows, CAS, and the refusals.
    #[test]
    fn raw_calls_between_nodes() {
        let got = crate::testing::run_cluster(&[1, 1], |w| {
            let win = w.win_allocate::<u8>(32).unwrap();
            win.fence().unwrap();
            let me = w.rank() as i32;
            // Both add rank + 1 to rank 1's int at 0 (ACC), OR in 1 << rank at 4
            // (LOR through GETACC, reply dropped).
            win.accumulate_raw(&(me + 1).to_ne_bytes(), 1, 0, 1, 1)
                .unwrap();
            win.accumulate_raw(&(1i32 << me).to_ne_bytes(), 1, 4, LOR, 1)
                .unwrap();
            // MAXLOC of (rank * 10, rank) into the (int, int) pair at 8.
            let mut pair = [0u8; 8];
            pair[..4].copy_from_slice(&(me * 10).to_ne_bytes());
            pair[4..].copy_from_slice(&me.to_ne_bytes());
            let mut old = [0u8; 8];
            win.get_accumulate_raw(&pair, &mut old, 1, 8, MAXLOC, TWO_INT)
                .unwrap();
            win.fence().unwrap();
            // Rank 0 swaps 3 -> 99 at 0: matches (1 + 2).
            let mut prev = [0u8; 4];
            if me == 0 {
                win.compare_swap_raw(
                    &99i32.to_ne_bytes(),
                    &3i32.to_ne_bytes(),
                    &mut prev,
                    1,
                    0,
                    1,
                )
                .unwrap();
            }
            win.fence().unwrap();
            let mut now = [0u8; 16];
            win.get_accumulate_raw(&[], &mut now, 1, 0, NO_OP, BYTES)
                .unwrap();
            // Outside the part, and a pair the module does not know.
            let far = win.accumulate_raw(&[0; 4], 1, 30, 1, 1).is_err();
            let bad = win.accumulate_raw(&[0; 8], 1, 0, MINLOC, 1).is_err();
            win.fence().unwrap();
            let i = |b: &[u8]| i32::from_ne_bytes(b.try_into().unwrap());
            (
                i(&now[..4]),
                i(&now[4..8]),
                i(&now[8..12]),
                i(&now[12..16]),
                far && bad,
            )
        });
        for g in got {
            assert_eq!(g, (99, 1, 10, 1, true));
        }
    }

    #[test]
    fn minloc_maxloc_and_complex() {
        // (double, int) pairs, 16 bytes each; ties go to the smaller index.
        let pair = |v: f64, i: i32| {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&v.to_ne_bytes());
            b[8..12].copy_from_slice(&i.to_ne_bytes());
            b
        };
        let mut cur = pair(3.0, 7);
        assert!(apply(MINLOC, DOUBLE_INT, &mut cur, &pair(3.0, 2)));
        assert_eq!(cur, pair(3.0, 2));
        assert!(apply(MINLOC, DOUBLE_INT, &mut cur, &pair(4.0, 0)));
        assert_eq!(cur, pair(3.0, 2));
        assert!(apply(MAXLOC, DOUBLE_INT, &mut cur, &pair(4.0, 9)));
        assert_eq!(cur, pair(4.0, 9));
        // (1 + 2i)(3 - i) = 5 + 5i.
        let c = |re: f32, im: f32| [re.to_ne_bytes(), im.to_ne_bytes()].concat();
        let mut cur = c(1.0, 2.0);
        assert!(apply(2, COMPLEX_F32, &mut cur, &c(3.0, -1.0)));
        assert_eq!(cur, c(5.0, 5.0));
        assert!(apply(1, COMPLEX_F32, &mut cur, &c(1.0, 1.0)));
        assert_eq!(cur, c(6.0, 6.0));
    }
}
