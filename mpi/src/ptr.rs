//! Reading and writing through the C caller's pointers, with the checks the
//! standard asks for (a null buffer with a nonzero count is `MPI_ERR_BUFFER`,
//! a null output argument `MPI_ERR_ARG`).

use std::ffi::{c_int, c_void};

use crate::abi;
use crate::error::{err, R};

/// The `len` bytes at `p` to read.
///
/// # Safety
/// Unless null, `p` must be valid for reads of `len` bytes for `'a`.
pub(crate) unsafe fn src<'a>(p: *const c_void, len: usize) -> R<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(err(abi::ERR_BUFFER, format!("null buffer for {len} bytes")));
    }
    // SAFETY: non-null, and valid for `len` bytes by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

/// The `len` bytes at `p` to write.
///
/// # Safety
/// Unless null, `p` must be valid for reads and writes of `len` bytes for
/// `'a`, and not otherwise accessed meanwhile.
pub(crate) unsafe fn dst<'a>(p: *mut c_void, len: usize) -> R<&'a mut [u8]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(err(abi::ERR_BUFFER, format!("null buffer for {len} bytes")));
    }
    // SAFETY: non-null, and valid for `len` bytes by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) })
}

/// True if `p` is `MPI_IN_PLACE`.
pub(crate) fn in_place(p: *const c_void) -> bool {
    p as usize == abi::IN_PLACE
}

/// Stores `v` at the output argument `p`.
///
/// # Safety
/// Unless null, `p` must be valid for a write of a `T`.
pub(crate) unsafe fn out<T>(p: *mut T, v: T, what: &str) -> R<()> {
    if p.is_null() {
        return Err(err(abi::ERR_ARG, format!("null pointer for {what}")));
    }
    // SAFETY: non-null, and valid for a write by the caller's contract.
    unsafe { p.write(v) };
    Ok(())
}

/// Reads the argument `p` points to.
///
/// # Safety
/// Unless null, `p` must be valid for a read of a `T`.
pub(crate) unsafe fn read<T: Copy>(p: *const T, what: &str) -> R<T> {
    if p.is_null() {
        return Err(err(abi::ERR_ARG, format!("null pointer for {what}")));
    }
    // SAFETY: non-null, and valid for a read by the caller's contract.
    Ok(unsafe { p.read() })
}

/// The `n` ints of an array argument.
///
/// # Safety
/// Unless null, `p` must be valid for reads of `n` ints for `'a`.
pub(crate) unsafe fn ints<'a>(p: *const c_int, n: usize, what: &str) -> R<&'a [c_int]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(err(abi::ERR_ARG, format!("null array for {what}")));
    }
    // SAFETY: non-null, and valid for `n` ints by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Writes `s` as a NUL-terminated string into `buf` (at most `cap` bytes,
/// the NUL included), and its length into `len`.
///
/// # Safety
/// `buf` must be valid for writes of `cap` bytes, `len` for an int (or null).
pub(crate) unsafe fn string(
    buf: *mut std::ffi::c_char,
    cap: usize,
    len: *mut c_int,
    s: &str,
) -> R<()> {
    if buf.is_null() {
        return Err(err(abi::ERR_ARG, "null string buffer"));
    }
    let n = s.len().min(cap.saturating_sub(1));
    // SAFETY: `buf` holds `cap` > `n` bytes by the caller's contract.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), n);
        buf.add(n).write(0);
    }
    // SAFETY: as the caller's contract says.
    unsafe { out(len, n as c_int, "the result length") }
}
