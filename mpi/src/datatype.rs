//! Datatypes: the predefined ones of the standard, each with its size and
//! the element type reductions combine it as.
//!
//! Sizes are those of the C types on the LP64 Linux targets dos runs on
//! (`long` 8 bytes, `long double` 16, `wchar_t` 4).
//!
//! Derived datatypes (compiled by [`crate::dtype`]) live in a table of the
//! MPI thread, with handles from [`DERIVED_BASE`]; a predefined handle never
//! looks at it, so contiguous buffers of predefined types cost what they did.
//! A derived type is *dense* when `count` elements are one run of
//! `count * size` bytes at the buffer: such a type takes the zero-copy path
//! everywhere; others are packed into a temporary buffer by the functions
//! that support them (see [`layout`]).

use std::cell::RefCell;
use std::ffi::c_int;
use std::sync::Arc;

use crate::abi::{self, Handle};
use crate::dtype::{Shared, Type};
use crate::error::{err, R};

/// How reductions see the elements of a datatype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elem {
    I8,
    I16,
    I32,
    I64,
    I128,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
    /// `MPI_C_BOOL`, `MPI_CXX_BOOL`: logical operations only.
    Bool,
    /// Fortran `LOGICAL` (4 bytes): logical operations only.
    Logical,
    /// `MPI_BYTE`: bitwise operations only.
    Byte,
    ComplexF32,
    ComplexF64,
    FloatInt,
    DoubleInt,
    LongInt,
    TwoInt,
    ShortInt,
    TwoReal,
    TwoDouble,
    /// C `long double` (x87 extended on x86-64: [`crate::ldouble`]).
    LongDouble,
    ComplexLongDouble,
    LongDoubleInt,
    /// Moves as data; no predefined operation applies (long double, half
    /// precision, characters of the packed kind).
    Opaque,
}

/// A predefined datatype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Predefined {
    pub name: &'static str,
    pub size: usize,
    pub elem: Elem,
}

/// A `long double` element type where its operations exist, else opaque.
const fn ld(e: Elem) -> Elem {
    if crate::ldouble::supported() {
        e
    } else {
        Elem::Opaque
    }
}

const fn p(name: &'static str, size: usize, elem: Elem) -> Option<Predefined> {
    Some(Predefined { name, size, elem })
}

/// The first handle of the predefined datatypes' range (the standard ABI
/// gives them `0x200..0x300`).
const PREDEFINED_FIRST: Handle = 0x200;

/// [`lookup`] of every handle of `0x200..0x300`, by `h - 0x200`: the
/// datatype of every message goes through [`predefined`], and an index is a
/// few instructions where the `match` was some twenty.
static PREDEFINED: [Option<Predefined>; 256] = {
    let mut t = [None; 256];
    let mut i = 0;
    while i < t.len() {
        t[i] = lookup(PREDEFINED_FIRST + i);
        i += 1;
    }
    t
};

/// The predefined datatype of handle `h`.
#[inline]
pub(crate) fn predefined(h: Handle) -> Option<Predefined> {
    match PREDEFINED.get(h.wrapping_sub(PREDEFINED_FIRST)) {
        Some(p) => *p,
        None => None,
    }
}

/// The predefined datatype of handle `h`: the definition that
/// [`PREDEFINED`] tabulates.
const fn lookup(h: Handle) -> Option<Predefined> {
    use Elem::*;
    match h {
        0x201 => p("MPI_AINT", 8, I64),
        0x202 => p("MPI_COUNT", 8, I64),
        0x203 => p("MPI_OFFSET", 8, I64),
        0x207 => p("MPI_PACKED", 1, Byte),
        0x208 => p("MPI_SHORT", 2, I16),
        0x209 => p("MPI_INT", 4, I32),
        0x20a => p("MPI_LONG", 8, I64),
        0x20b => p("MPI_LONG_LONG", 8, I64),
        0x20c => p("MPI_UNSIGNED_SHORT", 2, U16),
        0x20d => p("MPI_UNSIGNED", 4, U32),
        0x20e => p("MPI_UNSIGNED_LONG", 8, U64),
        0x20f => p("MPI_UNSIGNED_LONG_LONG", 8, U64),
        0x210 => p("MPI_FLOAT", 4, F32),
        // Named by its synonym MPI_C_COMPLEX (the header's alias), as MPICH does.
        0x212 => p("MPI_C_COMPLEX", 8, ComplexF32),
        0x213 => p("MPI_CXX_FLOAT_COMPLEX", 8, ComplexF32),
        0x214 => p("MPI_DOUBLE", 8, F64),
        0x216 => p("MPI_C_DOUBLE_COMPLEX", 16, ComplexF64),
        0x217 => p("MPI_CXX_DOUBLE_COMPLEX", 16, ComplexF64),
        0x218 => p("MPI_LOGICAL", 4, Logical),
        0x219 => p("MPI_INTEGER", 4, I32),
        0x21a => p("MPI_REAL", 4, F32),
        0x21b => p("MPI_COMPLEX", 8, ComplexF32),
        0x21c => p("MPI_DOUBLE_PRECISION", 8, F64),
        0x21d => p("MPI_DOUBLE_COMPLEX", 16, ComplexF64),
        0x21e => p("MPI_CHARACTER", 1, Opaque),
        0x220 => p("MPI_LONG_DOUBLE", 16, ld(LongDouble)),
        0x224 => p("MPI_C_LONG_DOUBLE_COMPLEX", 32, ld(ComplexLongDouble)),
        0x225 => p("MPI_CXX_LONG_DOUBLE_COMPLEX", 32, ld(ComplexLongDouble)),
        0x228 => p("MPI_FLOAT_INT", 8, FloatInt),
        0x229 => p("MPI_DOUBLE_INT", 16, DoubleInt),
        0x22a => p("MPI_LONG_INT", 16, LongInt),
        0x22b => p("MPI_2INT", 8, TwoInt),
        0x22c => p("MPI_SHORT_INT", 8, ShortInt),
        0x22d => p("MPI_LONG_DOUBLE_INT", 32, ld(LongDoubleInt)),
        0x230 => p("MPI_2REAL", 8, TwoReal),
        0x231 => p("MPI_2DOUBLE_PRECISION", 16, TwoDouble),
        0x232 => p("MPI_2INTEGER", 8, TwoInt),
        0x238 => p("MPI_C_BOOL", 1, Bool),
        0x239 => p("MPI_CXX_BOOL", 1, Bool),
        0x23c => p("MPI_WCHAR", 4, I32),
        0x240 => p("MPI_INT8_T", 1, I8),
        0x241 => p("MPI_UINT8_T", 1, U8),
        0x243 => p("MPI_CHAR", 1, I8),
        0x244 => p("MPI_SIGNED_CHAR", 1, I8),
        0x245 => p("MPI_UNSIGNED_CHAR", 1, U8),
        0x247 => p("MPI_BYTE", 1, Byte),
        0x248 => p("MPI_INT16_T", 2, I16),
        0x249 => p("MPI_UINT16_T", 2, U16),
        0x250 => p("MPI_INT32_T", 4, I32),
        0x251 => p("MPI_UINT32_T", 4, U32),
        0x258 => p("MPI_INT64_T", 8, I64),
        0x259 => p("MPI_UINT64_T", 8, U64),
        0x2c0 => p("MPIX_LOGICAL1", 1, Bool),
        0x2c1 => p("MPI_INTEGER1", 1, I8),
        0x2c2 => p("MPIX_REAL1", 1, Opaque),
        0x2c8 => p("MPIX_LOGICAL2", 2, Opaque),
        0x2c9 => p("MPI_INTEGER2", 2, I16),
        0x2ca => p("MPI_REAL2", 2, Opaque),
        0x2d0 => p("MPIX_LOGICAL4", 4, Logical),
        0x2d1 => p("MPI_INTEGER4", 4, I32),
        0x2d2 => p("MPI_REAL4", 4, F32),
        0x2d3 => p("MPI_COMPLEX4", 4, Opaque),
        0x2d8 => p("MPIX_LOGICAL8", 8, Opaque),
        0x2d9 => p("MPI_INTEGER8", 8, I64),
        0x2da => p("MPI_REAL8", 8, F64),
        0x2db => p("MPI_COMPLEX8", 8, ComplexF32),
        0x2e0 => p("MPIX_LOGICAL16", 16, Opaque),
        0x2e1 => p("MPI_INTEGER16", 16, I128),
        0x2e2 => p("MPI_REAL16", 16, Opaque),
        0x2e3 => p("MPI_COMPLEX16", 16, ComplexF64),
        0x2eb => p("MPI_COMPLEX32", 32, Opaque),
        _ => None,
    }
}

/// The first handle of a derived datatype.
pub(crate) const DERIVED_BASE: Handle = 0x2000_0000;

struct Entry {
    ty: Shared,
    committed: bool,
}

thread_local! {
    static TABLE: RefCell<Vec<Option<Entry>>> = const { RefCell::new(Vec::new()) };
}

fn bad_handle(h: Handle) -> crate::error::Error {
    if h == abi::DATATYPE_NULL {
        err(abi::ERR_TYPE, "MPI_DATATYPE_NULL is not a datatype")
    } else {
        err(abi::ERR_TYPE, format!("invalid datatype handle {h:#x}"))
    }
}

/// The derived type of handle `h` and whether it is committed.
fn derived(h: Handle) -> R<(Shared, bool)> {
    let i = h.checked_sub(DERIVED_BASE).ok_or_else(|| bad_handle(h))?;
    TABLE.with(|t| {
        t.borrow()
            .get(i)
            .and_then(|e| e.as_ref())
            .map(|e| (e.ty.clone(), e.committed))
            .ok_or_else(|| bad_handle(h))
    })
}

/// Stores a new (uncommitted) derived type; its handle.
pub(crate) fn insert(ty: Type) -> Handle {
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        let e = Some(Entry {
            ty: Arc::new(ty),
            committed: false,
        });
        let i = match t.iter().position(Option::is_none) {
            Some(i) => {
                t[i] = e;
                i
            }
            None => {
                t.push(e);
                t.len() - 1
            }
        };
        DERIVED_BASE + i
    })
}

/// Commits a datatype (a predefined one is always committed).
pub(crate) fn commit(h: Handle) -> R<()> {
    if predefined(h).is_some() {
        return Ok(());
    }
    derived(h)?;
    TABLE.with(|t| {
        if let Some(Some(e)) = t.borrow_mut().get_mut(h - DERIVED_BASE) {
            e.committed = true;
        }
    });
    Ok(())
}

/// Frees a derived datatype (types built from it keep their own copy).
pub(crate) fn free(h: Handle) -> R<()> {
    if let Some(t) = predefined(h) {
        return Err(err(
            abi::ERR_TYPE,
            format!("{} is predefined and cannot be freed", t.name),
        ));
    }
    derived(h)?;
    TABLE.with(|t| t.borrow_mut()[h - DERIVED_BASE] = None);
    Ok(())
}

/// The pair types whose C struct has padding (`MPI_DOUBLE_INT`,
/// `MPI_LONG_INT`, `MPI_SHORT_INT`, `MPI_LONG_DOUBLE_INT`): their size
/// is that of the two members (12 for `MPI_DOUBLE_INT`), their extent that
/// of the struct (16), as the standard and the C compiler say. Such a type
/// moves packed, like a derived one.
#[inline]
pub(crate) fn padded(h: Handle) -> bool {
    matches!(h, 0x229 | 0x22a | 0x22c | 0x22d)
}

/// The compiled form of a padded pair type: `{value; int}` with the C
/// struct's offsets and padding.
fn pair_type(h: Handle) -> Type {
    let (vh, vsize) = match h {
        0x229 => (0x214, 8), // double
        0x22a => (0x20a, 8), // long
        0x22c => (0x208, 2), // short
        _ => (0x220, 16),    // long double
    };
    let v = Type::basic(vsize, vsize).of_handle(vh);
    let i = Type::basic(4, 4).of_handle(0x209);
    let off = vsize.max(4) as isize;
    // Cannot fail: two small blocks.
    Type::structure(&[1, 1], &[0, off], &[&v, &i])
        .expect("a pair type compiles")
        .of_handle(h)
}

/// Alignment of a predefined type inside a struct (LP64 Linux).
fn align_of(t: &Predefined) -> usize {
    match t.elem {
        Elem::ComplexF32 | Elem::TwoInt | Elem::FloatInt | Elem::ShortInt | Elem::TwoReal => 4,
        Elem::ComplexF64 | Elem::DoubleInt | Elem::LongInt | Elem::TwoDouble => 8,
        _ => t.size.clamp(1, 16),
    }
}

/// The compiled form of any datatype (committed or not).
pub(crate) fn ty(h: Handle) -> R<Shared> {
    match predefined(h) {
        Some(_) if padded(h) => Ok(Arc::new(pair_type(h))),
        Some(p) => Ok(Arc::new(Type::basic(p.size, align_of(&p)).of_handle(h))),
        None => Ok(derived(h)?.0),
    }
}

/// The datatype of handle `h` (a derived one as an opaque type of its
/// size: no reduction applies), or `MPI_ERR_TYPE`.
pub(crate) fn get(h: Handle) -> R<Predefined> {
    match predefined(h) {
        Some(p) if padded(h) => Ok(Predefined {
            size: pair_type(h).size,
            ..p
        }),
        Some(p) => Ok(p),
        None => {
            let (t, _) = derived(h)?;
            Ok(Predefined {
                name: "",
                size: t.size,
                elem: Elem::Opaque,
            })
        }
    }
}

/// A count argument as `usize`, or `MPI_ERR_COUNT` if negative.
pub(crate) fn count(c: c_int) -> R<usize> {
    usize::try_from(c).map_err(|_| err(abi::ERR_COUNT, format!("negative count {c}")))
}

/// True for a handle whose elements may not be one run of `size` bytes
/// each: a derived type, or a padded pair type ([`padded`]). Such handles
/// take [`layout`] rather than [`bytes`].
#[inline]
pub(crate) fn is_derived(h: Handle) -> bool {
    h >= DERIVED_BASE || padded(h)
}

/// True for a handle of the derived types' table.
#[inline]
pub(crate) fn in_table(h: Handle) -> bool {
    h >= DERIVED_BASE
}

/// How `count` elements of a datatype lie in a buffer.
pub(crate) enum Layout {
    /// One run of this many bytes at the buffer: zero copy.
    Dense(usize),
    /// Anything else: packed to `len` bytes through the compiled type.
    Packed {
        ty: Shared,
        count: usize,
        len: usize,
    },
}

/// The layout of `c` elements of the committed datatype `h`.
#[inline]
pub(crate) fn layout(c: c_int, h: Handle) -> R<Layout> {
    layout_n(count(c)?, h)
}

/// [`layout`] of `n` elements.
#[inline]
pub(crate) fn layout_n(n: usize, h: Handle) -> R<Layout> {
    if let Some(t) = predefined(h) {
        if padded(h) {
            return derived_layout(n, h);
        }
        return n.checked_mul(t.size).map(Layout::Dense).ok_or_else(|| {
            err(
                abi::ERR_COUNT,
                format!("{n} elements of {} overflow", t.name),
            )
        });
    }
    derived_layout(n, h)
}

/// [`layout_n`] of a derived type: out of line, so the predefined path
/// stays what it was.
#[inline(never)]
fn derived_layout(n: usize, h: Handle) -> R<Layout> {
    let (ty, committed) = if padded(h) {
        (ty(h)?, true)
    } else {
        derived(h)?
    };
    if !committed {
        return Err(err(
            abi::ERR_TYPE,
            format!("datatype {h:#x} is not committed"),
        ));
    }
    let len = ty.packed_len(n)?;
    if !ty.flat && len > 0 {
        return Err(err(
            abi::ERR_COUNT,
            format!("datatype {h:#x} has too many pieces to move data (more than 2^24): only its size, bounds and elements are known"),
        ));
    }
    if ty.dense() {
        return Ok(Layout::Dense(len));
    }
    // The elements' offsets must not overflow either (checked once here,
    // so packing can compute them unchecked).
    ty.span(n)?;
    Ok(Layout::Packed { ty, count: n, len })
}

/// `count` elements of datatype `h` in bytes, for the functions that move
/// one run of bytes: a noncontiguous derived type is `MPI_ERR_TYPE` there.
#[inline]
pub(crate) fn bytes(c: c_int, h: Handle) -> R<usize> {
    let n = count(c)?;
    if let Some(t) = predefined(h) {
        return n.checked_mul(t.size).ok_or_else(|| {
            err(
                abi::ERR_COUNT,
                format!("{n} elements of {} overflow", t.name),
            )
        });
    }
    derived_bytes(n, h)
}

#[inline(never)]
fn derived_bytes(n: usize, h: Handle) -> R<usize> {
    if let Some(p) = dense_pairs(h)? {
        // Pairs end to end with their padding, as reductions see them.
        return n
            .checked_mul(p.size)
            .ok_or_else(|| err(abi::ERR_COUNT, format!("{n} elements of {h:#x} overflow")));
    }
    match derived_layout(n, h)? {
        Layout::Dense(n) => Ok(n),
        Layout::Packed { .. } => Err(err(
            abi::ERR_UNSUPPORTED_OPERATION,
            "a noncontiguous derived datatype is not supported by this function yet",
        )),
    }
}

/// Basic elements of `h` in `bytes` received (`MPI_UNDEFINED` if they do
/// not end on a basic element).
pub(crate) fn basic_elements(bytes: u64, h: Handle) -> R<i64> {
    let t = ty(h)?;
    Ok(t.elements_in(bytes)
        .and_then(|n| i64::try_from(n).ok())
        .unwrap_or(abi::UNDEFINED as i64))
}

/// The size of one element of `h` for functions that place blocks by
/// element counts: a committed dense type only.
pub(crate) fn dense_size(h: Handle) -> R<usize> {
    bytes(1, h)
}

/// The element type a reduction on `h` combines: a predefined type's own;
/// for a derived type whose `count` elements are one dense run of a single
/// predefined type (`MPI_Type_contiguous(4, MPI_DOUBLE)`, a struct of
/// doubles without holes), that type's, with the derived type's size; any
/// other derived type is opaque (`MPI_ERR_OP` for the predefined
/// operations, as the standard allows).
pub(crate) fn for_reduction(h: Handle) -> R<Predefined> {
    if let Some(p) = predefined(h) {
        return Ok(p);
    }
    if let Some(p) = dense_pairs(h)? {
        return Ok(p);
    }
    let (t, _) = derived(h)?;
    match t.base.and_then(predefined) {
        Some(b) if t.dense() => Ok(Predefined {
            name: b.name,
            size: t.size,
            elem: b.elem,
        }),
        _ => Ok(Predefined {
            name: "",
            size: t.size,
            elem: Elem::Opaque,
        }),
    }
}

/// For a derived type that is `k` padded pairs end to end (contiguous of
/// `MPI_DOUBLE_INT`, say): the pair's description with the derived type's
/// extent as its size, what a reduction walks over. `None` otherwise.
fn dense_pairs(h: Handle) -> R<Option<Predefined>> {
    if !in_table(h) {
        return Ok(None);
    }
    let (t, _) = derived(h)?;
    let Some(b) = t.base.filter(|&b| padded(b)) else {
        return Ok(None);
    };
    let pair = pair_type(b);
    let p = predefined(b).expect("a padded type is predefined");
    Ok(t.repeats(&pair).then(|| Predefined {
        name: p.name,
        size: t.extent() as usize,
        elem: p.elem,
    }))
}

#[cfg(test)]
mod tests {
    use super::predefined;

    /// `(name, value)` of every `#define NAME ((Kind)0x...)` in mpi.h.
    fn header_handles(kind: &str) -> Vec<(String, usize)> {
        let pat = format!("(({kind})0x");
        include_str!("../include/mpi.h")
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("#define ")?;
                let (name, val) = rest.split_once(char::is_whitespace)?;
                let hex = val.trim().strip_prefix(&pat)?.strip_suffix(')')?;
                Some((name.to_string(), usize::from_str_radix(hex, 16).ok()?))
            })
            .collect()
    }

    #[test]
    fn the_table_of_predefined_types_is_their_definition() {
        let handles = (0..0x1000).chain([
            usize::MAX,
            usize::MAX - 0x1ff,
            super::DERIVED_BASE,
            super::DERIVED_BASE + 8,
        ]);
        let mut known = 0;
        for h in handles {
            assert_eq!(predefined(h), super::lookup(h), "{h:#x}");
            known += usize::from(predefined(h).is_some());
        }
        assert!(known > 60, "{known}");
        assert_eq!(predefined(0x210).map(|p| p.size), Some(4), "MPI_FLOAT");
        assert_eq!(predefined(0x1ff), None);
        assert_eq!(predefined(0x300), None);
    }

    #[test]
    fn every_datatype_of_the_header_is_known_by_its_name() {
        let all = header_handles("MPI_Datatype");
        assert!(all.len() > 60, "{all:?}");
        for (name, h) in all {
            if name == "MPI_DATATYPE_NULL" {
                assert!(predefined(h).is_none());
                continue;
            }
            let t = predefined(h).unwrap_or_else(|| panic!("{name} = {h:#x} unknown"));
            if name == "MPI_C_FLOAT_COMPLEX" {
                assert_eq!(t.name, "MPI_C_COMPLEX", "the synonym's name");
                continue;
            }
            assert_eq!(t.name, name, "{h:#x}");
        }
    }

    #[test]
    fn the_header_and_the_library_agree_on_handles_and_classes() {
        use crate::abi;
        let h = include_str!("../include/mpi.h");
        let comm = header_handles("MPI_Comm");
        assert!(comm.contains(&("MPI_COMM_WORLD".into(), abi::COMM_WORLD)));
        assert!(comm.contains(&("MPI_COMM_SELF".into(), abi::COMM_SELF)));
        assert!(comm.contains(&("MPI_COMM_NULL".into(), abi::COMM_NULL)));
        let eh = header_handles("MPI_Errhandler");
        assert!(eh.contains(&("MPI_ERRORS_RETURN".into(), abi::ERRORS_RETURN)));
        assert!(eh.contains(&("MPI_ERRORS_ARE_FATAL".into(), abi::ERRORS_ARE_FATAL)));
        let req = header_handles("MPI_Request");
        assert_eq!(req, [("MPI_REQUEST_NULL".to_string(), abi::REQUEST_NULL)]);
        let ops = header_handles("MPI_Op");
        for (name, v) in [
            ("MPI_SUM", abi::op::SUM),
            ("MPI_MAXLOC", abi::op::MAXLOC),
            ("MPI_BXOR", abi::op::BXOR),
            ("MPI_NO_OP", abi::op::NO_OP),
        ] {
            assert!(ops.contains(&(name.into(), v)), "{name}");
        }
        // Every error class of the header: the library's string starts with its name.
        let mut n = 0;
        for part in h.split([',', '\n']) {
            let Some((name, val)) = part.trim().split_once(" = ") else {
                continue;
            };
            if !name.starts_with("MPI_ERR_") || name == "MPI_ERR_LASTCODE" {
                continue;
            }
            let v: i32 = val.trim().parse().unwrap();
            let s = crate::error::class_string(v).unwrap_or_else(|| panic!("{name}"));
            assert!(s.starts_with(&format!("{name}:")), "{name} = {v}: {s}");
            n += 1;
        }
        assert_eq!(n, 61);
        // Sentinels.
        for (name, v) in [
            ("MPI_ANY_SOURCE = ", abi::ANY_SOURCE),
            ("MPI_PROC_NULL = ", abi::PROC_NULL),
            ("MPI_ANY_TAG = ", abi::ANY_TAG),
            ("MPI_UNDEFINED = ", abi::UNDEFINED),
            ("MPI_THREAD_FUNNELED = ", abi::THREAD_FUNNELED),
            ("MPI_COMM_TYPE_SHARED = ", abi::COMM_TYPE_SHARED),
            ("MPI_TAG_UB = ", abi::TAG_UB),
        ] {
            assert!(h.contains(&format!("{name}{v}")), "{name}{v}");
        }
    }
}
