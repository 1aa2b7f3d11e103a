//! The large-count (`MPI_Count`) forms of the collectives (MPI-4 `_c`).
//!
//! Every collective is written once, as a core generic over the type of its
//! counts (`C`: `int` or `MPI_Count`) and of its displacements (`D`: `int`
//! or `MPI_Aint`); [`coll_fn!`](crate::coll_fn) defines both C entry points
//! (`MPI_X` with `C = D = int`, `MPI_X_c` with `C = MPI_Count`,
//! `D = MPI_Aint`) and their `PMPI_` forms from it. A count is made a
//! `usize` by [`count`] (negative or beyond memory: `MPI_ERR_COUNT`), so the
//! engine, which moves byte slices, takes any count that fits in memory.
//!
//! A few inner paths still take `int` counts: intercommunicator
//! collectives ([`crate::inter`]), derived datatypes in the v-forms
//! (`VStaged`), the `w`-forms' blocks (`WBlocks`) and user operations
//! called through an `MPI_User_function`. There a large count is narrowed
//! by [`Wide::narrow`]/[`Wide::ints`]: a value beyond `INT_MAX` is
//! `MPI_ERR_COUNT`, never truncated.

use std::ffi::c_int;

use crate::abi::{self, Handle};
use crate::datatype;
use crate::error::{err, R};

/// `MPI_Count` (64 bits in the standard ABI).
pub(crate) type Count = i64;
/// `MPI_Aint` (pointer-sized).
pub(crate) type Aint = isize;
/// The counts of the `int` forms (the module-level `C` of the files that
/// define collectives; the `_c` forms shadow it with [`Count`]).
pub(crate) type C = c_int;
/// The displacements of the `int` forms (shadowed by [`Aint`] in `_c`).
pub(crate) type D = c_int;

const _: () = assert!(std::mem::size_of::<Aint>() == std::mem::size_of::<i64>());

/// A count or displacement type of a C entry point: `int`, `MPI_Count` or
/// `MPI_Aint`.
pub(crate) trait Wide: Copy + std::fmt::Display + 'static {
    /// The value, widened.
    fn wide(self) -> i64;

    /// The value as the `int` an int-only inner path takes, or
    /// `MPI_ERR_COUNT` if it does not fit.
    fn narrow(self) -> R<c_int> {
        c_int::try_from(self.wide()).map_err(|_| {
            err(
                abi::ERR_COUNT,
                format!("count or displacement {self} beyond INT_MAX on a path that takes int counts (intercommunicators, derived datatypes in v/w-forms)"),
            )
        })
    }

    /// `n` values at `p` as a pointer to `int`s for an int-only inner
    /// path: `p` itself for `int`, else the values narrowed into `keep`
    /// (`MPI_ERR_COUNT` for one beyond `INT_MAX`). A null `p` stays null
    /// (the inner path reports it).
    ///
    /// # Safety
    /// `p` null or valid for `n` values.
    unsafe fn ints(p: *const Self, n: usize, keep: &mut Vec<c_int>) -> R<*const c_int>;
}

impl Wide for c_int {
    #[inline]
    fn wide(self) -> i64 {
        self.into()
    }
    unsafe fn ints(p: *const Self, _n: usize, _keep: &mut Vec<c_int>) -> R<*const c_int> {
        Ok(p)
    }
}

/// Narrows `n` wide values at `p` into `keep`.
///
/// # Safety
/// `p` null or valid for `n` values.
unsafe fn narrow_all<T: Wide>(p: *const T, n: usize, keep: &mut Vec<c_int>) -> R<*const c_int> {
    if p.is_null() || n == 0 {
        return Ok(if p.is_null() {
            std::ptr::null()
        } else {
            keep.as_ptr()
        });
    }
    // SAFETY: non-null and valid for `n` values (the caller's contract).
    let s = unsafe { std::slice::from_raw_parts(p, n) };
    *keep = s.iter().map(|v| v.narrow()).collect::<R<Vec<c_int>>>()?;
    Ok(keep.as_ptr())
}

impl Wide for i64 {
    #[inline]
    fn wide(self) -> i64 {
        self
    }
    unsafe fn ints(p: *const Self, n: usize, keep: &mut Vec<c_int>) -> R<*const c_int> {
        // SAFETY: the caller's contract.
        unsafe { narrow_all(p, n, keep) }
    }
}

impl Wide for isize {
    #[inline]
    fn wide(self) -> i64 {
        self as i64
    }
    unsafe fn ints(p: *const Self, n: usize, keep: &mut Vec<c_int>) -> R<*const c_int> {
        // SAFETY: the caller's contract.
        unsafe { narrow_all(p, n, keep) }
    }
}

/// A count as a number of elements: negative, or beyond what memory can
/// hold, is `MPI_ERR_COUNT`.
#[inline]
pub(crate) fn count<T: Wide>(c: T) -> R<usize> {
    let w = c.wide();
    usize::try_from(w).map_err(|_| err(abi::ERR_COUNT, format!("negative count {w}")))
}

/// A displacement as a number of elements (or bytes): negative is
/// `MPI_ERR_ARG`.
#[inline]
pub(crate) fn displ<T: Wide>(d: T) -> R<usize> {
    let w = d.wide();
    usize::try_from(w).map_err(|_| err(abi::ERR_ARG, format!("negative displacement {w}")))
}

/// `c` elements of datatype `h` in bytes (see [`datatype::bytes`]); a
/// count beyond `INT_MAX` of a dense type is its size times the count,
/// checked.
#[inline]
pub(crate) fn bytes<T: Wide>(c: T, h: Handle) -> R<usize> {
    match c_int::try_from(c.wide()) {
        Ok(i) => datatype::bytes(i, h),
        Err(_) => {
            let n = count(c)?;
            n.checked_mul(datatype::dense_size(h)?).ok_or_else(|| {
                err(
                    abi::ERR_COUNT,
                    format!("{n} elements of {h:#x} overflow memory"),
                )
            })
        }
    }
}

/// `n` values at `p` (an array argument), or `MPI_ERR_ARG` for a null
/// array with `n > 0`.
///
/// # Safety
/// `p` null or valid for `n` values.
pub(crate) unsafe fn arr<'a, T>(p: *const T, n: usize, what: &str) -> R<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(err(abi::ERR_ARG, format!("null array for {what}")));
    }
    // SAFETY: non-null, and valid for `n` values by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_beyond_int_are_kept_or_refused_never_truncated() {
        assert_eq!(count(3_000_000_000i64).unwrap(), 3_000_000_000usize);
        assert_eq!(count(-1i64).unwrap_err().class, abi::ERR_COUNT);
        assert_eq!(
            (3_000_000_000i64).narrow().unwrap_err().class,
            abi::ERR_COUNT
        );
        assert_eq!(displ(-5isize).unwrap_err().class, abi::ERR_ARG);
        let wide = [1i64, 1 << 33];
        let mut keep = Vec::new();
        // SAFETY: `wide` holds 2 values.
        let e = unsafe { i64::ints(wide.as_ptr(), 2, &mut keep) }.unwrap_err();
        assert_eq!(e.class, abi::ERR_COUNT);
        let fits = [7i64, 9];
        // SAFETY: `fits` holds 2 values.
        let p = unsafe { i64::ints(fits.as_ptr(), 2, &mut keep) }.unwrap();
        // SAFETY: `p` points into `keep`, 2 ints.
        assert_eq!(unsafe { std::slice::from_raw_parts(p, 2) }, &[7, 9]);
    }
}
