//! `MPI_Pack_external`, `MPI_Unpack_external`, `MPI_Pack_external_size`:
//! the `"external32"` representation (the only one the standard defines):
//! every basic element big-endian, in the standard's sizes.
//!
//! The sizes that differ from this platform's memory (LP64 Linux):
//! `MPI_LONG` and `MPI_UNSIGNED_LONG` are 4 bytes there (8 here: the
//! high half is dropped when packing, sign- or zero-extended when
//! unpacking), `MPI_WCHAR` 2 (4 here), and `MPI_LONG_DOUBLE` is IEEE
//! binary128 (here the x87 80-bit format in 16 bytes: converted exactly
//! both ways, the 63 fraction bits being a prefix of binary128's 112).
//! Complex and pair types are each of their two parts, so each part is
//! converted alone.
//!
//! A datatype is converted through its type map, the run-length encoded
//! basic elements [`crate::dtype::Type::basics`] keeps; a type whose map
//! has more than 4096 runs is `MPI_ERR_UNSUPPORTED_OPERATION`.

use std::ffi::{c_char, c_void};

use crate::abi::{self, Handle};
use crate::datatype::{self, Layout};
use crate::dtype::Basic;
use crate::error::{err, R};
use crate::ptr::{out, read};

/// How one basic element converts: `parts` parts of `native` bytes each
/// in memory and `ext` bytes each in external32, of kind `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Conv {
    parts: usize,
    native: usize,
    ext: usize,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Byte-swapped (same size).
    Swap,
    /// A signed integer narrowed / sign-extended.
    Signed,
    /// An unsigned integer narrowed / zero-extended.
    Unsigned,
    /// x87 80-bit extended <-> IEEE binary128.
    LongDouble,
}

/// The conversion of basic element `b`.
fn conv(b: &Basic) -> Conv {
    let one = |native, ext, kind| Conv {
        parts: 1,
        native,
        ext,
        kind,
    };
    match b.h {
        0x20a => one(8, 4, Kind::Signed),       // MPI_LONG
        0x20e => one(8, 4, Kind::Unsigned),     // MPI_UNSIGNED_LONG
        0x23c => one(4, 2, Kind::Unsigned),     // MPI_WCHAR
        0x220 => one(16, 16, Kind::LongDouble), // MPI_LONG_DOUBLE
        0x224 | 0x225 => Conv {
            // long double complex
            parts: 2,
            native: 16,
            ext: 16,
            kind: Kind::LongDouble,
        },
        h => match datatype::predefined(h).map(|p| p.elem) {
            Some(
                datatype::Elem::ComplexF32
                | datatype::Elem::ComplexF64
                | datatype::Elem::TwoInt
                | datatype::Elem::FloatInt
                | datatype::Elem::TwoReal
                | datatype::Elem::TwoDouble,
            ) => Conv {
                parts: 2,
                native: b.size / 2,
                ext: b.size / 2,
                kind: Kind::Swap,
            },
            _ => one(b.size, b.size, Kind::Swap),
        },
    }
}

/// x87 extended (little-endian, 10 significant bytes) to binary128 big-endian.
fn ld_to_quad(x: &[u8], o: &mut [u8]) {
    let mant = u64::from_le_bytes(x[0..8].try_into().expect("8 bytes"));
    let se = u16::from_le_bytes([x[8], x[9]]);
    // binary128: sign+exponent (16 bits, the same), then 112 fraction bits:
    // the 63 below x87's explicit integer bit, then zeros.
    let frac = (u128::from(mant & (u64::MAX >> 1))) << 49;
    let q = (u128::from(se) << 112) | frac;
    o.copy_from_slice(&q.to_be_bytes());
}

/// binary128 big-endian to x87 extended (16 bytes, the padding zero).
fn quad_to_ld(q: &[u8], o: &mut [u8]) {
    let q = u128::from_be_bytes(q.try_into().expect("16 bytes"));
    let se = (q >> 112) as u16;
    let exp = se & 0x7fff;
    let frac = ((q >> 49) as u64) & (u64::MAX >> 1);
    // The explicit integer bit: set for normal numbers, infinities, NaNs.
    let int = if exp != 0 { 1u64 << 63 } else { 0 };
    o[..8].copy_from_slice(&(frac | int).to_le_bytes());
    o[8..10].copy_from_slice(&se.to_le_bytes());
    o[10..].fill(0);
}

/// One part, memory order to external32.
fn to_ext(c: Conv, x: &[u8], o: &mut [u8]) {
    match c.kind {
        Kind::Swap | Kind::Signed | Kind::Unsigned => {
            // Little-endian memory: the low `ext` bytes, reversed.
            for (i, b) in o.iter_mut().enumerate() {
                *b = x[c.ext - 1 - i];
            }
        }
        Kind::LongDouble => ld_to_quad(x, o),
    }
}

/// One part, external32 to memory order.
fn from_ext(c: Conv, x: &[u8], o: &mut [u8]) {
    match c.kind {
        Kind::Swap | Kind::Signed | Kind::Unsigned => {
            for i in 0..c.ext {
                o[i] = x[c.ext - 1 - i];
            }
            let neg = c.kind == Kind::Signed && x[0] & 0x80 != 0;
            o[c.ext..].fill(if neg { 0xff } else { 0 });
        }
        Kind::LongDouble => quad_to_ld(x, o),
    }
}

/// The runs of one element of `h`, or the reason there are none.
fn runs(h: Handle) -> R<Vec<Basic>> {
    let t = datatype::ty(h)?;
    t.basics.clone().ok_or_else(|| {
        err(
            abi::ERR_UNSUPPORTED_OPERATION,
            "external32 of a datatype with more than 4096 runs of basic elements",
        )
    })
}

/// Bytes of `count` elements of `h` in external32.
fn ext_size(count: usize, h: Handle) -> R<usize> {
    let mut one = 0usize;
    for b in runs(h)? {
        let c = conv(&b);
        one = (c.parts * c.ext)
            .checked_mul(b.n)
            .and_then(|x| x.checked_add(one))
            .ok_or_else(|| err(abi::ERR_COUNT, "external32 size overflows"))?;
    }
    one.checked_mul(count)
        .ok_or_else(|| err(abi::ERR_COUNT, "external32 size overflows"))
}

/// `MPI_ERR_UNSUPPORTED_DATAREP` unless every basic element of `h` has
/// the same size in external32 as here: the files of MPI-IO keep their
/// views' offsets in the types' own sizes, so only such types are
/// converted there (not `MPI_LONG`, `MPI_UNSIGNED_LONG`, `MPI_WCHAR`).
pub(crate) fn same_size(h: Handle) -> R<Vec<Basic>> {
    let runs = runs(h)?;
    if let Some(b) = runs.iter().find(|b| {
        let c = conv(b);
        c.native != c.ext
    }) {
        return Err(err(
            abi::ERR_UNSUPPORTED_DATAREP,
            format!(
                "external32 file data of a datatype holding {}, whose external32 size differs from its size here",
                datatype::predefined(b.h).map_or("an element", |p| p.name)
            ),
        ));
    }
    Ok(runs)
}

/// `count` elements of `h` packed natively (`native`) to external32, the
/// same length ([`same_size`]).
pub(crate) fn to_file(native: &[u8], count: usize, h: Handle) -> R<Vec<u8>> {
    let runs = same_size(h)?;
    let mut out = vec![0u8; native.len()];
    if count > 0 && native.len() % count == 0 {
        encode(native, count, &runs, &mut out);
    }
    Ok(out)
}

/// external32 `ext` to `count` elements of `h` packed natively, the same
/// length ([`same_size`]).
pub(crate) fn from_file(ext: &[u8], count: usize, h: Handle) -> R<Vec<u8>> {
    let runs = same_size(h)?;
    let mut out = vec![0u8; ext.len()];
    if count > 0 && ext.len() % count == 0 {
        decode(ext, count, &runs, &mut out);
    }
    Ok(out)
}

/// Native packed bytes (the type's own packing) to external32.
fn encode(native: &[u8], count: usize, runs: &[Basic], out: &mut [u8]) {
    let (mut i, mut o) = (0, 0);
    for _ in 0..count {
        for b in runs {
            let c = conv(b);
            for _ in 0..b.n * c.parts {
                to_ext(c, &native[i..i + c.native], &mut out[o..o + c.ext]);
                i += c.native;
                o += c.ext;
            }
        }
    }
}

/// external32 to native packed bytes.
fn decode(ext: &[u8], count: usize, runs: &[Basic], native: &mut [u8]) {
    let (mut i, mut o) = (0, 0);
    for _ in 0..count {
        for b in runs {
            let c = conv(b);
            for _ in 0..b.n * c.parts {
                from_ext(c, &ext[i..i + c.ext], &mut native[o..o + c.native]);
                i += c.ext;
                o += c.native;
            }
        }
    }
}

/// Checks the data representation's name.
///
/// # Safety
/// `datarep` null or a C string.
unsafe fn check_rep(datarep: *const c_char) -> R<()> {
    if datarep.is_null() {
        return Err(err(abi::ERR_ARG, "null data representation"));
    }
    // SAFETY: a C string by the caller's contract.
    let s = unsafe { std::ffi::CStr::from_ptr(datarep) };
    if s.to_bytes() != b"external32" {
        return Err(err(
            abi::ERR_ARG,
            format!(
                "data representation {:?}: only \"external32\" is defined",
                s.to_string_lossy()
            ),
        ));
    }
    Ok(())
}

fn position(p: i64) -> R<usize> {
    usize::try_from(p).map_err(|_| err(abi::ERR_ARG, format!("negative position {p}")))
}

mpi_fn! {
    /// Bytes `incount` elements take in `datarep` ("external32").
    fn MPI_Pack_external_size / PMPI_Pack_external_size(datarep: *const c_char, incount: std::ffi::c_int, datatype: Handle, size: *mut isize) on abi::COMM_WORLD => {
        check_rep(datarep)?;
        let n = datatype::count(incount)?;
        let s = ext_size(n, datatype)?;
        out(size, s as isize, "size")
    }
}

mpi_fn! {
    /// Packs `incount` elements into `outbuf` at `*position` in external32.
    fn MPI_Pack_external / PMPI_Pack_external(datarep: *const c_char, inbuf: *const c_void, incount: std::ffi::c_int, datatype: Handle, outbuf: *mut c_void, outsize: isize, position_: *mut isize) on abi::COMM_WORLD => {
        check_rep(datarep)?;
        let p = position(read(position_, "position")? as i64)?;
        let n = datatype::count(incount)?;
        let runs = runs(datatype)?;
        let len = ext_size(n, datatype)?;
        let l = datatype::layout_n(n, datatype)?;
        let native = match &l {
            Layout::Dense(b) => crate::ptr::src(inbuf, *b)?.to_vec(),
            Layout::Packed { .. } => crate::types::pack_to_vec(inbuf, &l)?,
        };
        let size = position(outsize as i64)?;
        if p.checked_add(len).is_none_or(|e| e > size) {
            return Err(err(abi::ERR_TRUNCATE, format!("{len} bytes at position {p} do not fit in {size}")));
        }
        let o = crate::ptr::dst(outbuf, size)?;
        encode(&native, n, &runs, &mut o[p..p + len]);
        out(position_, (p + len) as isize, "position")
    }
}

mpi_fn! {
    /// Unpacks `outcount` elements from external32 at `*position`.
    fn MPI_Unpack_external / PMPI_Unpack_external(datarep: *const c_char, inbuf: *const c_void, insize: isize, position_: *mut isize, outbuf: *mut c_void, outcount: std::ffi::c_int, datatype: Handle) on abi::COMM_WORLD => {
        check_rep(datarep)?;
        let p = position(read(position_, "position")? as i64)?;
        let n = datatype::count(outcount)?;
        let runs = runs(datatype)?;
        let len = ext_size(n, datatype)?;
        let size = position(insize as i64)?;
        if p.checked_add(len).is_none_or(|e| e > size) {
            return Err(err(abi::ERR_TRUNCATE, format!("{len} bytes at position {p} are beyond the {size} packed")));
        }
        let l = datatype::layout_n(n, datatype)?;
        let nlen = match &l { Layout::Dense(b) => *b, Layout::Packed { len, .. } => *len };
        let i = crate::ptr::src(inbuf, size)?;
        let mut native = vec![0u8; nlen];
        decode(&i[p..p + len], n, &runs, &mut native);
        crate::types::unpack_from(&native, outbuf, &l)?;
        out(position_, (p + len) as isize, "position")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_double_round_trips_through_binary128() {
        // 1.5L in x87: mantissa 0xC000..., exponent 0x3fff.
        let mut x = [0u8; 16];
        x[..8].copy_from_slice(&0xC000_0000_0000_0000u64.to_le_bytes());
        x[8..10].copy_from_slice(&0x3fffu16.to_le_bytes());
        let mut q = [0u8; 16];
        ld_to_quad(&x, &mut q);
        // binary128 1.5: 0x3fff8000...0
        assert_eq!(q[..3], [0x3f, 0xff, 0x80]);
        assert!(q[3..].iter().all(|&b| b == 0));
        let mut back = [0xaau8; 16];
        quad_to_ld(&q, &mut back);
        assert_eq!(back, x);
    }

    #[test]
    fn long_is_four_bytes_sign_extended_back() {
        let c = conv(&Basic {
            n: 1,
            size: 8,
            h: 0x20a,
        });
        let mut e = [0u8; 4];
        to_ext(c, &(-2i64).to_le_bytes(), &mut e);
        assert_eq!(e, [0xff, 0xff, 0xff, 0xfe]);
        let mut m = [0u8; 8];
        from_ext(c, &e, &mut m);
        assert_eq!(i64::from_le_bytes(m), -2);
        let u = conv(&Basic {
            n: 1,
            size: 8,
            h: 0x20e,
        });
        from_ext(u, &e, &mut m);
        assert_eq!(u64::from_le_bytes(m), 0xffff_fffe);
    }
}
