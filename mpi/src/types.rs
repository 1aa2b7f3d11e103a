//! The datatype constructors, commit/free/dup, bounds, and `Pack`/`Unpack`
//! (the compiled types are [`crate::dtype`]'s, the handle table
//! [`crate::datatype`]'s).

use std::ffi::{c_int, c_void};

use crate::abi::{self, Handle};
use crate::datatype::{self, Layout};
use crate::dtype::Type;
use crate::error::{err, R};
use crate::ptr::{out, read};

/// `MPI_ORDER_C` and `MPI_ORDER_FORTRAN` (the standard ABI's values).
pub const ORDER_C: c_int = 12;
pub const ORDER_FORTRAN: c_int = 15;

/// `MPI_DISTRIBUTE_*` (the standard ABI's values).
pub const DISTRIBUTE_NONE: c_int = 16;
pub const DISTRIBUTE_BLOCK: c_int = 17;
pub const DISTRIBUTE_CYCLIC: c_int = 18;
pub const DISTRIBUTE_DFLT_DARG: c_int = 19;

/// `MPI_TYPECLASS_*` (the standard ABI's values).
pub const TYPECLASS_INTEGER: c_int = 192;
pub const TYPECLASS_REAL: c_int = 193;
pub const TYPECLASS_COMPLEX: c_int = 194;

/// `n` values at `p` (an `MPI_ERR_ARG` if null with `n > 0`).
unsafe fn arr<'a, T>(p: *const T, n: c_int, what: &str) -> R<&'a [T]> {
    let n = datatype::count(n)?;
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(err(abi::ERR_ARG, format!("null pointer for {what}")));
    }
    // SAFETY: non-null, valid for `n` values by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// `MPI_COMBINER_*` (the standard ABI's values).
pub(crate) mod combiner {
    use std::ffi::c_int;
    pub const NAMED: c_int = 101;
    pub const DUP: c_int = 102;
    pub const CONTIGUOUS: c_int = 103;
    pub const VECTOR: c_int = 104;
    pub const HVECTOR: c_int = 105;
    pub const INDEXED: c_int = 106;
    pub const HINDEXED: c_int = 107;
    pub const INDEXED_BLOCK: c_int = 108;
    pub const HINDEXED_BLOCK: c_int = 109;
    pub const STRUCT: c_int = 110;
    pub const SUBARRAY: c_int = 111;
    pub const DARRAY: c_int = 112;
    pub const F90_REAL: c_int = 113;
    pub const F90_COMPLEX: c_int = 114;
    pub const F90_INTEGER: c_int = 115;
    pub const RESIZED: c_int = 116;
}

/// How a derived datatype was made (`MPI_Type_get_envelope`/`get_contents`).
struct Envelope {
    combiner: c_int,
    ints: Vec<c_int>,
    addrs: Vec<isize>,
    types: Vec<Handle>,
}

thread_local! {
    static ENVELOPES: std::cell::RefCell<std::collections::HashMap<Handle, Envelope>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Records the constructor and arguments of the new type `h`.
fn record(h: Handle, combiner: c_int, ints: Vec<c_int>, addrs: Vec<isize>, types: Vec<Handle>) {
    ENVELOPES.with(|e| {
        e.borrow_mut().insert(
            h,
            Envelope {
                combiner,
                ints,
                addrs,
                types,
            },
        )
    });
}

/// `(combiner, #ints, #addresses, #types)` of a datatype.
fn envelope(h: Handle) -> R<(c_int, usize, usize, usize)> {
    if datatype::predefined(h).is_some() {
        return Ok((combiner::NAMED, 0, 0, 0));
    }
    datatype::ty(h)?;
    ENVELOPES.with(|e| {
        e.borrow()
            .get(&h)
            .map(|v| (v.combiner, v.ints.len(), v.addrs.len(), v.types.len()))
            .ok_or_else(|| {
                err(
                    abi::ERR_TYPE,
                    format!("datatype {h:#x} has no recorded constructor"),
                )
            })
    })
}

mpi_fn! {
    /// The combiner of a datatype and the numbers of its constructor's arguments.
    fn MPI_Type_get_envelope / PMPI_Type_get_envelope(datatype: Handle, num_integers: *mut c_int, num_addresses: *mut c_int, num_datatypes: *mut c_int, comb: *mut c_int) on abi::COMM_WORLD => {
        let (c, ni, na, nt) = envelope(datatype)?;
        out(num_integers, ni as c_int, "num_integers")?;
        out(num_addresses, na as c_int, "num_addresses")?;
        out(num_datatypes, nt as c_int, "num_datatypes")?;
        out(comb, c, "combiner")
    }
}

mpi_fn! {
    /// The arguments a derived datatype was made with; the derived types
    /// among them are new handles (duplicates) the program frees.
    fn MPI_Type_get_contents / PMPI_Type_get_contents(datatype: Handle, max_integers: c_int, max_addresses: c_int, max_datatypes: c_int, integers: *mut c_int, addresses: *mut isize, datatypes: *mut Handle) on abi::COMM_WORLD => {
        let (c, ni, na, nt) = envelope(datatype)?;
        if c == combiner::NAMED {
            return Err(err(abi::ERR_TYPE, "MPI_Type_get_contents of a predefined datatype"));
        }
        if (max_integers as i64) < ni as i64 || (max_addresses as i64) < na as i64 || (max_datatypes as i64) < nt as i64 {
            return Err(err(abi::ERR_ARG, "the output arrays are smaller than MPI_Type_get_envelope says"));
        }
        let (ints, addrs, types) = ENVELOPES.with(|e| {
            let e = e.borrow();
            let v = &e[&datatype];
            (v.ints.clone(), v.addrs.clone(), v.types.clone())
        });
        for (i, v) in ints.iter().enumerate() {
            out(integers.add(i), *v, "array_of_integers")?;
        }
        for (i, v) in addrs.iter().enumerate() {
            out(addresses.add(i), *v, "array_of_addresses")?;
        }
        for (i, &t) in types.iter().enumerate() {
            let h = if datatype::in_table(t) {
                let o = datatype::ty(t)?;
                let committed = datatype::layout(0, t).is_ok();
                let d = datatype::insert((*o).clone());
                if committed {
                    datatype::commit(d)?;
                }
                if let Some(env) = ENVELOPES.with(|e| e.borrow().get(&t).map(|v| (v.combiner, v.ints.clone(), v.addrs.clone(), v.types.clone()))) {
                    record(d, env.0, env.1, env.2, env.3);
                }
                d
            } else {
                t
            };
            out(datatypes.add(i), h, "array_of_datatypes")?;
        }
        Ok(())
    }
}

fn i64s(v: &[c_int]) -> Vec<i64> {
    v.iter().map(|&x| i64::from(x)).collect()
}

unsafe fn new(newtype: *mut Handle, t: R<Type>) -> R<()> {
    if newtype.is_null() {
        return Err(err(abi::ERR_ARG, "null pointer for newtype"));
    }
    let h = datatype::insert(t?);
    // SAFETY: checked non-null; valid by the caller's contract.
    unsafe { out(newtype, h, "newtype") }
}

mpi_fn! {
    /// `count` copies of `oldtype` end to end.
    fn MPI_Type_contiguous / PMPI_Type_contiguous(count: c_int, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        new(newtype, Type::contiguous(count.into(), &o))?;
        record(*newtype, combiner::CONTIGUOUS, vec![count], vec![], vec![oldtype]);
        Ok(())
    }
}

mpi_fn! {
    /// `count` blocks of `blocklength`, `stride` elements apart.
    fn MPI_Type_vector / PMPI_Type_vector(count: c_int, blocklength: c_int, stride: c_int, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        new(newtype, Type::vector(count.into(), blocklength.into(), stride.into(), &o))?;
        record(*newtype, combiner::VECTOR, vec![count, blocklength, stride], vec![], vec![oldtype]);
        Ok(())
    }
}

mpi_fn! {
    /// `count` blocks of `blocklength`, `stride` bytes apart.
    fn MPI_Type_create_hvector / PMPI_Type_create_hvector(count: c_int, blocklength: c_int, stride: isize, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        new(newtype, Type::hvector(count.into(), blocklength.into(), stride, &o))?;
        record(*newtype, combiner::HVECTOR, vec![count, blocklength], vec![stride], vec![oldtype]);
        Ok(())
    }
}

mpi_fn! {
    /// Blocks of varying lengths at displacements in elements.
    fn MPI_Type_indexed / PMPI_Type_indexed(count: c_int, blocklengths: *const c_int, displacements: *const c_int, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        let b = arr(blocklengths, count, "array_of_blocklengths")?;
        let d = arr(displacements, count, "array_of_displacements")?;
        new(newtype, Type::indexed(&i64s(b), &i64s(d), &o))?;
        record(*newtype, combiner::INDEXED, [&[count][..], b, d].concat(), vec![], vec![oldtype]);
        Ok(())
    }
}

mpi_fn! {
    /// Blocks of varying lengths at displacements in bytes.
    fn MPI_Type_create_hindexed / PMPI_Type_create_hindexed(count: c_int, blocklengths: *const c_int, displacements: *const isize, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        let b = arr(blocklengths, count, "array_of_blocklengths")?;
        let d = arr(displacements, count, "array_of_displacements")?;
        new(newtype, Type::hindexed(&i64s(b), d, &o))?;
        record(*newtype, combiner::HINDEXED, [&[count][..], b].concat(), d.to_vec(), vec![oldtype]);
        Ok(())
    }
}

mpi_fn! {
    /// Blocks of one length at displacements in elements.
    fn MPI_Type_create_indexed_block / PMPI_Type_create_indexed_block(count: c_int, blocklength: c_int, displacements: *const c_int, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        let d = arr(displacements, count, "array_of_displacements")?;
        let b = vec![i64::from(blocklength); d.len()];
        new(newtype, Type::indexed(&b, &i64s(d), &o))?;
        record(*newtype, combiner::INDEXED_BLOCK, [&[count, blocklength][..], d].concat(), vec![], vec![oldtype]);
        Ok(())
    }
}

mpi_fn! {
    /// Blocks of one length at displacements in bytes.
    fn MPI_Type_create_hindexed_block / PMPI_Type_create_hindexed_block(count: c_int, blocklength: c_int, displacements: *const isize, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        let d = arr(displacements, count, "array_of_displacements")?;
        let b = vec![i64::from(blocklength); d.len()];
        new(newtype, Type::hindexed(&b, d, &o))?;
        record(*newtype, combiner::HINDEXED_BLOCK, vec![count, blocklength], d.to_vec(), vec![oldtype]);
        Ok(())
    }
}

mpi_fn! {
    /// Blocks each of its own type at displacements in bytes.
    fn MPI_Type_create_struct / PMPI_Type_create_struct(count: c_int, blocklengths: *const c_int, displacements: *const isize, types: *const Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let b = arr(blocklengths, count, "array_of_blocklengths")?;
        let d = arr(displacements, count, "array_of_displacements")?;
        let t = arr(types, count, "array_of_types")?;
        let ts = t.iter().map(|&h| datatype::ty(h)).collect::<R<Vec<_>>>()?;
        let refs: Vec<&Type> = ts.iter().map(|t| &**t).collect();
        new(newtype, Type::structure(&i64s(b), d, &refs))?;
        record(*newtype, combiner::STRUCT, [&[count][..], b].concat(), d.to_vec(), t.to_vec());
        Ok(())
    }
}

mpi_fn! {
    /// `oldtype` with the given lower bound and extent.
    fn MPI_Type_create_resized / PMPI_Type_create_resized(oldtype: Handle, lb: isize, extent: isize, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        new(newtype, Type::resized(lb, extent, &o))?;
        record(*newtype, combiner::RESIZED, vec![], vec![lb, extent], vec![oldtype]);
        Ok(())
    }
}

mpi_fn! {
    /// A subarray of an `ndims`-dimensional array in C or Fortran order.
    fn MPI_Type_create_subarray / PMPI_Type_create_subarray(ndims: c_int, sizes: *const c_int, subsizes: *const c_int, starts: *const c_int, order: c_int, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        if ndims <= 0 {
            return Err(err(abi::ERR_ARG, format!("subarray of {ndims} dimensions")));
        }
        let c_order = match order {
            ORDER_C => true,
            ORDER_FORTRAN => false,
            o => return Err(err(abi::ERR_ARG, format!("invalid order {o}"))),
        };
        let s = arr(sizes, ndims, "array_of_sizes")?;
        let ss = arr(subsizes, ndims, "array_of_subsizes")?;
        let st = arr(starts, ndims, "array_of_starts")?;
        new(newtype, Type::subarray(&i64s(s), &i64s(ss), &i64s(st), c_order, &o))?;
        record(*newtype, combiner::SUBARRAY, [&[ndims][..], s, ss, st, &[order][..]].concat(), vec![], vec![oldtype]);
        Ok(())
    }
}

mpi_fn! {
    /// The part of a distributed `ndims`-dimensional array that process
    /// `rank` of `size` owns (HPF-style block/cyclic distributions over a
    /// row-major process grid).
    fn MPI_Type_create_darray / PMPI_Type_create_darray(size: c_int, rank: c_int, ndims: c_int, gsizes: *const c_int, distribs: *const c_int, dargs: *const c_int, psizes: *const c_int, order: c_int, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        use crate::dtype::Distrib;
        let o = datatype::ty(oldtype)?;
        if ndims <= 0 {
            return Err(err(abi::ERR_ARG, format!("darray of {ndims} dimensions")));
        }
        let c_order = match order {
            ORDER_C => true,
            ORDER_FORTRAN => false,
            o => return Err(err(abi::ERR_ARG, format!("invalid order {o}"))),
        };
        let g = arr(gsizes, ndims, "array_of_gsizes")?;
        let d = arr(distribs, ndims, "array_of_distribs")?;
        let a = arr(dargs, ndims, "array_of_dargs")?;
        let p = arr(psizes, ndims, "array_of_psizes")?;
        let mut dims = Vec::with_capacity(g.len());
        for i in 0..g.len() {
            let dist = match d[i] {
                DISTRIBUTE_NONE => Distrib::None,
                DISTRIBUTE_BLOCK => Distrib::Block,
                DISTRIBUTE_CYCLIC => Distrib::Cyclic,
                x => return Err(err(abi::ERR_ARG, format!("invalid distribution {x} in dimension {i}"))),
            };
            let darg = (a[i] != DISTRIBUTE_DFLT_DARG).then_some(i64::from(a[i]));
            dims.push((i64::from(g[i]), dist, darg, i64::from(p[i])));
        }
        new(newtype, Type::darray(size.into(), rank.into(), &dims, c_order, &o))?;
        record(*newtype, combiner::DARRAY, [&[size, rank, ndims][..], g, d, a, p, &[order][..]].concat(), vec![], vec![oldtype]);
        Ok(())
    }
}

/// The predefined type of `class` whose size is `size` bytes: what
/// `MPI_Type_match_size` returns.
fn match_size(class: c_int, size: c_int) -> R<Handle> {
    let candidates: &[Handle] = match class {
        // MPI_SIGNED_CHAR, MPI_SHORT, MPI_INT, MPI_LONG, MPI_INTEGER16
        TYPECLASS_INTEGER => &[0x244, 0x208, 0x209, 0x20a, 0x2e1],
        // MPI_FLOAT, MPI_DOUBLE, MPI_LONG_DOUBLE
        TYPECLASS_REAL => &[0x210, 0x214, 0x220],
        // MPI_C_FLOAT_COMPLEX, MPI_C_DOUBLE_COMPLEX, MPI_C_LONG_DOUBLE_COMPLEX
        TYPECLASS_COMPLEX => &[0x212, 0x216, 0x224],
        c => return Err(err(abi::ERR_ARG, format!("invalid type class {c}"))),
    };
    candidates
        .iter()
        .copied()
        .find(|&h| datatype::predefined(h).is_some_and(|p| p.size as i64 == i64::from(size)))
        .ok_or_else(|| {
            err(
                abi::ERR_ARG,
                format!("no predefined type of class {class} has {size} bytes"),
            )
        })
}

mpi_fn! {
    /// A predefined type of type class `typeclass` and `size` bytes.
    fn MPI_Type_match_size / PMPI_Type_match_size(typeclass: c_int, size: c_int, datatype: *mut Handle) on abi::COMM_WORLD => {
        out(datatype, match_size(typeclass, size)?, "datatype")
    }
}

/// The Fortran-90 parameterised type that holds `p` decimal digits and a
/// decimal exponent range `r` (`None`: not asked), made as a derived copy
/// of the predefined type chosen, so that its envelope says how it was
/// asked for (`MPI_COMBINER_F90_*` with `p`, `r`).
fn f90(kind: c_int, p: c_int, r: c_int, newtype: *mut Handle) -> R<()> {
    const UNDEF: c_int = abi::UNDEFINED;
    let pick = |table: &[(c_int, c_int, Handle)]| {
        table
            .iter()
            .find(|&&(mp, mr, _)| (p == UNDEF || p <= mp) && (r == UNDEF || r <= mr))
            .map(|t| t.2)
    };
    let (h, ints) = match kind {
        combiner::F90_REAL | combiner::F90_COMPLEX => {
            if p == UNDEF && r == UNDEF {
                return Err(err(
                    abi::ERR_ARG,
                    "MPI_Type_create_f90_real/complex: p and r both MPI_UNDEFINED",
                ));
            }
            // (precision, range) of REAL4, REAL8, and this platform's long double.
            let reals = if kind == combiner::F90_REAL {
                [(6, 37, 0x2d2), (15, 307, 0x2da), (18, 4931, 0x220)]
            } else {
                [(6, 37, 0x2db), (15, 307, 0x2e3), (18, 4931, 0x224)]
            };
            (pick(&reals), vec![p, r])
        }
        _ => {
            let ints = [
                (2, 0, 0x2c1),
                (4, 0, 0x2c9),
                (9, 0, 0x2d1),
                (18, 0, 0x2d9),
                (38, 0, 0x2e1),
            ];
            let h = ints.iter().find(|&&(mr, _, _)| r <= mr).map(|t| t.2);
            (h, vec![r])
        }
    };
    let h = h.ok_or_else(|| {
        err(
            abi::ERR_ARG,
            format!("no type holds precision {p} and range {r}"),
        )
    })?;
    let t = datatype::ty(h)?;
    // SAFETY: `newtype` is checked by `new`.
    unsafe { new(newtype, Ok((*t).clone()))? };
    // SAFETY: written by `new`.
    let nh = unsafe { *newtype };
    datatype::commit(nh)?;
    record(nh, kind, ints, vec![], vec![]);
    Ok(())
}

mpi_fn! {
    /// A real type of at least `p` decimal digits and exponent range `r`.
    fn MPI_Type_create_f90_real / PMPI_Type_create_f90_real(p: c_int, r: c_int, newtype: *mut Handle) on abi::COMM_WORLD => {
        f90(combiner::F90_REAL, p, r, newtype)
    }
}

mpi_fn! {
    /// A complex type of at least `p` decimal digits and exponent range `r`.
    fn MPI_Type_create_f90_complex / PMPI_Type_create_f90_complex(p: c_int, r: c_int, newtype: *mut Handle) on abi::COMM_WORLD => {
        f90(combiner::F90_COMPLEX, p, r, newtype)
    }
}

mpi_fn! {
    /// An integer type of at least `r` decimal digits.
    fn MPI_Type_create_f90_integer / PMPI_Type_create_f90_integer(r: c_int, newtype: *mut Handle) on abi::COMM_WORLD => {
        f90(combiner::F90_INTEGER, 0, r, newtype)
    }
}

// ----- the large-count (`_c`) forms: `MPI_Count` arguments -----

/// A count as `c_int` for the recorded envelope: a `_c` type whose
/// arguments do not fit has no `MPI_Type_get_envelope` form (the standard's
/// `_c` envelope is not implemented), so none is recorded for it.
fn small(n: i64, what: &str) -> R<c_int> {
    c_int::try_from(n).map_err(|_| {
        err(
            abi::ERR_COUNT,
            format!("{what} {n} beyond INT_MAX is not supported yet"),
        )
    })
}

/// `n` `MPI_Count` values at `p` as i64s.
unsafe fn counts<'a>(p: *const i64, n: i64, what: &str) -> R<&'a [i64]> {
    let n = small(n, "count")?;
    // SAFETY: the caller's contract.
    unsafe { arr(p, n, what) }
}

mpi_fn! {
    /// `MPI_Type_contiguous` with an `MPI_Count`.
    fn MPI_Type_contiguous_c / PMPI_Type_contiguous_c(count: i64, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        new(newtype, Type::contiguous(count, &o))?;
        // A count beyond INT_MAX has no MPI_Type_get_envelope form: not recorded.
        if let Ok(c) = small(count, "count") {
            record(*newtype, combiner::CONTIGUOUS, vec![c], vec![], vec![oldtype]);
        }
        Ok(())
    }
}

mpi_fn! {
    /// `MPI_Type_vector` with `MPI_Count`s.
    fn MPI_Type_vector_c / PMPI_Type_vector_c(count: i64, blocklength: i64, stride: i64, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        new(newtype, Type::vector(count, blocklength, stride, &o))?;
        if let (Ok(c), Ok(k), Ok(st)) = (small(count, "count"), small(blocklength, "blocklength"), small(stride, "stride")) {
            record(*newtype, combiner::VECTOR, vec![c, k, st], vec![], vec![oldtype]);
        }
        Ok(())
    }
}

mpi_fn! {
    /// `MPI_Type_create_hindexed` with `MPI_Count`s.
    fn MPI_Type_create_hindexed_c / PMPI_Type_create_hindexed_c(count: i64, blocklengths: *const i64, displacements: *const i64, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        let b = counts(blocklengths, count, "array_of_blocklengths")?;
        let d = counts(displacements, count, "array_of_displacements")?;
        let d: Vec<isize> = d.iter().map(|&x| x as isize).collect();
        new(newtype, Type::hindexed(b, &d, &o))?;
        let bi = b.iter().map(|&x| small(x, "block length")).collect::<R<Vec<_>>>();
        if let (Ok(bi), Ok(c)) = (bi, small(count, "count")) {
            record(*newtype, combiner::HINDEXED, [&[c][..], &bi].concat(), d, vec![oldtype]);
        }
        Ok(())
    }
}

mpi_fn! {
    /// `MPI_Type_create_indexed_block` with `MPI_Count`s.
    fn MPI_Type_create_indexed_block_c / PMPI_Type_create_indexed_block_c(count: i64, blocklength: i64, displacements: *const i64, oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        let d = counts(displacements, count, "array_of_displacements")?;
        let b = vec![blocklength; d.len()];
        new(newtype, Type::indexed(&b, d, &o))?;
        let di = d.iter().map(|&x| small(x, "displacement")).collect::<R<Vec<_>>>();
        if let (Ok(di), Ok(c), Ok(k)) = (di, small(count, "count"), small(blocklength, "blocklength")) {
            record(*newtype, combiner::INDEXED_BLOCK, [&[c, k][..], &di].concat(), vec![], vec![oldtype]);
        }
        Ok(())
    }
}

mpi_fn! {
    /// `MPI_Type_get_true_extent` as `MPI_Count`.
    fn MPI_Type_get_true_extent_c / PMPI_Type_get_true_extent_c(datatype: Handle, true_lb: *mut i64, true_extent: *mut i64) on abi::COMM_WORLD => {
        let t = datatype::ty(datatype)?;
        out(true_lb, t.true_lb as i64, "true_lb")?;
        out(true_extent, (t.true_ub - t.true_lb) as i64, "true_extent")
    }
}

mpi_fn! {
    /// `MPI_Type_get_extent` as `MPI_Count`.
    fn MPI_Type_get_extent_c / PMPI_Type_get_extent_c(datatype: Handle, lb: *mut i64, extent: *mut i64) on abi::COMM_WORLD => {
        let t = datatype::ty(datatype)?;
        out(lb, t.lb as i64, "lb")?;
        out(extent, t.extent() as i64, "extent")
    }
}

mpi_fn! {
    /// Basic elements received, as `MPI_Count` (the `_c` form).
    fn MPI_Get_elements_c / PMPI_Get_elements_c(status: *const abi::Status, datatype: Handle, count: *mut i64) on abi::COMM_WORLD => {
        let n = datatype::basic_elements(read(status, "status")?.bytes(), datatype)?;
        out(count, n, "count")
    }
}

/// Sets a status's received bytes to `count` basic elements of `h`.
unsafe fn set_elements(status: *mut abi::Status, h: Handle, count: i64) -> R<()> {
    if count < 0 {
        return Err(err(abi::ERR_COUNT, format!("negative count {count}")));
    }
    let t = datatype::ty(h)?;
    // Whole elements, then the first basic elements of one more.
    let (whole, part) = if t.nbasic == 0 {
        (0, 0)
    } else {
        (
            count as u64 / t.nbasic as u64,
            count as u64 % t.nbasic as u64,
        )
    };
    let mut bytes = whole
        .checked_mul(t.size as u64)
        .ok_or_else(|| err(abi::ERR_COUNT, "the count overflows"))?;
    let mut left = part;
    for b in t.basics.as_deref().unwrap_or(&[]) {
        let k = left.min(b.n as u64);
        bytes += k * b.size as u64;
        left -= k;
    }
    if left > 0 {
        return Err(err(
            abi::ERR_UNSUPPORTED_OPERATION,
            "a partial element of a datatype with a long type map",
        ));
    }
    // SAFETY: the caller's contract.
    let mut s = unsafe { read(status, "status")? };
    let keep = s.private[2];
    s = abi::Status {
        private: abi::Status::new(0, 0, 0, bytes).private,
        ..s
    };
    s.private[2] = keep;
    // SAFETY: the caller's contract.
    unsafe { out(status, s, "status") }
}

mpi_fn! {
    /// Sets the elements a status reports (for generalized requests).
    fn MPI_Status_set_elements / PMPI_Status_set_elements(status: *mut abi::Status, datatype: Handle, count: c_int) on abi::COMM_WORLD => {
        set_elements(status, datatype, count.into())
    }
}

mpi_fn! {
    /// `MPI_Status_set_elements` with an `MPI_Count`.
    fn MPI_Status_set_elements_x / PMPI_Status_set_elements_x(status: *mut abi::Status, datatype: Handle, count: i64) on abi::COMM_WORLD => {
        set_elements(status, datatype, count)
    }
}

mpi_fn! {
    /// `MPI_Status_set_elements` with an `MPI_Count` (the `_c` form).
    fn MPI_Status_set_elements_c / PMPI_Status_set_elements_c(status: *mut abi::Status, datatype: Handle, count: i64) on abi::COMM_WORLD => {
        set_elements(status, datatype, count)
    }
}

mpi_fn! {
    /// Commits a datatype for communication.
    fn MPI_Type_commit / PMPI_Type_commit(datatype: *mut Handle) on abi::COMM_WORLD => {
        datatype::commit(read(datatype, "datatype")?)
    }
}

mpi_fn! {
    /// Frees a derived datatype (`MPI_ERR_TYPE` for a predefined one).
    fn MPI_Type_free / PMPI_Type_free(datatype: *mut Handle) on abi::COMM_WORLD => {
        let h = read(datatype, "datatype")?;
        if datatype::in_table(h) {
            // The attributes' delete callbacks first.
            crate::attr::delete_all(crate::attr::Kind::Type, h)?;
        }
        datatype::free(h)?;
        out(datatype, abi::DATATYPE_NULL, "datatype")
    }
}

mpi_fn! {
    /// A copy of a datatype, committed if it was.
    fn MPI_Type_dup / PMPI_Type_dup(oldtype: Handle, newtype: *mut Handle) on abi::COMM_WORLD => {
        let o = datatype::ty(oldtype)?;
        let committed = datatype::layout(0, oldtype).is_ok();
        new(newtype, Ok((*o).clone()))?;
        record(*newtype, combiner::DUP, vec![], vec![], vec![oldtype]);
        if committed {
            datatype::commit(*newtype)?;
        }
        crate::attr::copy_all(crate::attr::Kind::Type, oldtype, *newtype)
    }
}

mpi_fn! {
    /// Lower bound and extent, as `MPI_Count`.
    fn MPI_Type_get_extent_x / PMPI_Type_get_extent_x(datatype: Handle, lb: *mut i64, extent: *mut i64) on abi::COMM_WORLD => {
        let t = datatype::ty(datatype)?;
        out(lb, t.lb as i64, "lb")?;
        out(extent, t.extent() as i64, "extent")
    }
}

mpi_fn! {
    /// Bounds of the bytes the datatype actually describes.
    fn MPI_Type_get_true_extent / PMPI_Type_get_true_extent(datatype: Handle, true_lb: *mut isize, true_extent: *mut isize) on abi::COMM_WORLD => {
        let t = datatype::ty(datatype)?;
        out(true_lb, t.true_lb, "true_lb")?;
        out(true_extent, t.true_ub - t.true_lb, "true_extent")
    }
}

mpi_fn! {
    /// `MPI_Type_get_true_extent` as `MPI_Count`.
    fn MPI_Type_get_true_extent_x / PMPI_Type_get_true_extent_x(datatype: Handle, true_lb: *mut i64, true_extent: *mut i64) on abi::COMM_WORLD => {
        let t = datatype::ty(datatype)?;
        out(true_lb, t.true_lb as i64, "true_lb")?;
        out(true_extent, (t.true_ub - t.true_lb) as i64, "true_extent")
    }
}

mpi_fn! {
    /// The size as `MPI_Count`.
    fn MPI_Type_size_x / PMPI_Type_size_x(datatype: Handle, size: *mut i64) on abi::COMM_WORLD => {
        out(size, datatype::ty(datatype)?.size as i64, "size")
    }
}

mpi_fn! {
    /// Basic elements received, as `MPI_Count`.
    fn MPI_Get_elements_x / PMPI_Get_elements_x(status: *const abi::Status, datatype: Handle, count: *mut i64) on abi::COMM_WORLD => {
        let n = datatype::basic_elements(read(status, "status")?.bytes(), datatype)?;
        out(count, n, "count")
    }
}

mpi_fn! {
    /// Bytes `incount` elements pack to (an upper bound, exact here).
    fn MPI_Pack_size / PMPI_Pack_size(incount: c_int, datatype: Handle, comm: Handle, size: *mut c_int) on comm => {
        crate::state::comm(comm)?;
        let n = datatype::count(incount)?;
        let len = datatype::ty(datatype)?.packed_len(n)?;
        let len = c_int::try_from(len).map_err(|_| err(abi::ERR_COUNT, "pack size beyond INT_MAX"))?;
        out(size, len, "size")
    }
}

/// True if `count` elements of `ty` at a null base (`MPI_BOTTOM`) lie at
/// absolute addresses, none in the first page: what a type built with
/// `MPI_Get_address` displacements describes. A null buffer with any
/// other type is `MPI_ERR_BUFFER`.
fn absolute(ty: &Type, count: usize) -> R<bool> {
    let (lo, _) = ty.span(count)?;
    Ok(lo >= 4096)
}

/// Packs `count` elements of `h` at `buf` into a new buffer (or borrows it
/// when dense).
///
/// # Safety
/// `buf` valid for `count` elements of `h`.
pub(crate) unsafe fn pack_to_vec(buf: *const c_void, l: &Layout) -> R<Vec<u8>> {
    let Layout::Packed { ty, count, len } = l else {
        unreachable!("dense layouts are not packed");
    };
    let mut v = vec![0u8; *len];
    if *len > 0 {
        if buf.is_null() && !absolute(ty, *count)? {
            return Err(err(abi::ERR_BUFFER, format!("null buffer for {len} bytes")));
        }
        // SAFETY: the caller's contract.
        unsafe { ty.pack(buf.cast(), *count, &mut v) };
    }
    Ok(v)
}

mpi_fn! {
    /// Packs `incount` elements into `outbuf` at `*position`, advancing it.
    fn MPI_Pack / PMPI_Pack(inbuf: *const c_void, incount: c_int, datatype: Handle, outbuf: *mut c_void, outsize: c_int, position: *mut c_int, comm: Handle) on comm => {
        crate::state::comm(comm)?;
        let pos = read(position, "position")?;
        let l = datatype::layout(incount, datatype)?;
        let data = match &l {
            Layout::Dense(n) => crate::ptr::src(inbuf, *n)?.to_vec(),
            Layout::Packed { .. } => pack_to_vec(inbuf, &l)?,
        };
        let p = usize::try_from(pos).map_err(|_| err(abi::ERR_ARG, format!("negative position {pos}")))?;
        let size = datatype::count(outsize)?;
        if p.checked_add(data.len()).is_none_or(|e| e > size) {
            return Err(err(abi::ERR_TRUNCATE, format!("{} bytes at position {p} do not fit in {size}", data.len())));
        }
        let o = crate::ptr::dst(outbuf, size)?;
        o[p..p + data.len()].copy_from_slice(&data);
        out(position, (p + data.len()) as c_int, "position")
    }
}

/// Unpacks `data` into `count` elements of layout `l` at `buf`.
///
/// # Safety
/// `buf` valid for the elements of `l`.
pub(crate) unsafe fn unpack_from(data: &[u8], buf: *mut c_void, l: &Layout) -> R<()> {
    match l {
        Layout::Dense(n) => {
            let n = (*n).min(data.len());
            // SAFETY: the caller's contract.
            let d = unsafe { crate::ptr::dst(buf, n)? };
            d.copy_from_slice(&data[..n]);
        }
        Layout::Packed { ty, count, .. } => {
            if !data.is_empty() && buf.is_null() && !absolute(ty, *count)? {
                return Err(err(abi::ERR_BUFFER, "null buffer"));
            }
            // SAFETY: the caller's contract.
            unsafe { ty.unpack(data, buf.cast(), *count) };
        }
    }
    Ok(())
}

mpi_fn! {
    /// Unpacks `outcount` elements from `inbuf` at `*position`, advancing it.
    fn MPI_Unpack / PMPI_Unpack(inbuf: *const c_void, insize: c_int, position: *mut c_int, outbuf: *mut c_void, outcount: c_int, datatype: Handle, comm: Handle) on comm => {
        crate::state::comm(comm)?;
        let pos = read(position, "position")?;
        let l = datatype::layout(outcount, datatype)?;
        let len = match &l { Layout::Dense(n) => *n, Layout::Packed { len, .. } => *len };
        let p = usize::try_from(pos).map_err(|_| err(abi::ERR_ARG, format!("negative position {pos}")))?;
        let size = datatype::count(insize)?;
        if p.checked_add(len).is_none_or(|e| e > size) {
            return Err(err(abi::ERR_TRUNCATE, format!("{len} bytes at position {p} are beyond the {size} packed")));
        }
        let i = crate::ptr::src(inbuf, size)?;
        unpack_from(&i[p..p + len], outbuf, &l)?;
        out(position, (p + len) as c_int, "position")
    }
}

/// A buffer of `n` elements of a datatype as one run of bytes: the buffer
/// itself when the type is dense, else a temporary packed from it (if
/// asked) and unpacked into it by [`Staged::finish`].
pub(crate) struct Staged {
    l: Layout,
    tmp: Vec<u8>,
    buf: *mut c_void,
}

impl Staged {
    /// # Safety
    /// `buf` valid for `n` elements of `dt`.
    pub unsafe fn new(buf: *const c_void, n: usize, dt: Handle, fill: bool) -> R<Staged> {
        let l = datatype::layout_n(n, dt)?;
        let tmp = match &l {
            Layout::Dense(_) => Vec::new(),
            // SAFETY: the caller's contract.
            Layout::Packed { len, .. } if fill => unsafe { pack_to_vec(buf, &l)? },
            Layout::Packed { len, .. } => vec![0; *len],
        };
        Ok(Staged {
            l,
            tmp,
            buf: buf as *mut c_void,
        })
    }

    /// The bytes.
    ///
    /// # Safety
    /// As for [`Staged::new`]; the buffer writable if written.
    pub unsafe fn bytes(&mut self) -> R<&mut [u8]> {
        match self.l {
            // SAFETY: the caller's contract.
            Layout::Dense(n) => unsafe { crate::ptr::dst(self.buf, n) },
            Layout::Packed { .. } => Ok(&mut self.tmp[..]),
        }
    }

    /// Unpacks a temporary into the buffer.
    ///
    /// # Safety
    /// As for [`Staged::new`], the buffer writable.
    pub unsafe fn finish(self) -> R<()> {
        if let Layout::Packed { .. } = self.l {
            // SAFETY: the caller's contract.
            unsafe { unpack_from(&self.tmp, self.buf, &self.l)? };
        }
        Ok(())
    }
}

/// The blocks of a v-form collective (`counts[i]` elements of a datatype
/// at `displs[i]` extents from the buffer) packed one after another into a
/// temporary: `cs`/`ds` are their byte lengths and offsets there.
pub(crate) struct VStaged {
    ty: crate::dtype::Shared,
    buf: *mut c_void,
    counts: Vec<usize>,
    offs: Vec<isize>,
    pub cs: Vec<usize>,
    pub ds: Vec<usize>,
    pub tmp: Vec<u8>,
}

impl VStaged {
    /// # Safety
    /// `counts` and `displs` valid for `n` ints, `buf` for the blocks.
    pub unsafe fn new(
        buf: *const c_void,
        counts: *const c_int,
        displs: *const c_int,
        n: usize,
        dt: Handle,
        fill: bool,
    ) -> R<VStaged> {
        datatype::layout_n(0, dt)?; // committed
        let ty = datatype::ty(dt)?;
        // SAFETY: the caller's contract.
        let (c, d) = unsafe {
            (
                crate::ptr::ints(counts, n, "counts")?,
                crate::ptr::ints(displs, n, "displacements")?,
            )
        };
        let mut v = VStaged {
            buf: buf as *mut c_void,
            counts: Vec::with_capacity(n),
            offs: Vec::with_capacity(n),
            cs: Vec::with_capacity(n),
            ds: Vec::with_capacity(n),
            tmp: Vec::new(),
            ty,
        };
        let mut pos = 0usize;
        for i in 0..n {
            let ci = datatype::count(c[i])?;
            let len = v.ty.packed_len(ci)?;
            v.ty.span(ci)?;
            let off = (d[i] as isize)
                .checked_mul(v.ty.extent())
                .ok_or_else(|| err(abi::ERR_COUNT, "a displacement overflows"))?;
            v.counts.push(ci);
            v.offs.push(off);
            v.cs.push(len);
            v.ds.push(pos);
            pos = pos
                .checked_add(len)
                .ok_or_else(|| err(abi::ERR_COUNT, "the blocks overflow"))?;
        }
        v.tmp = vec![0; pos];
        if fill && pos > 0 {
            if buf.is_null() {
                return Err(err(abi::ERR_BUFFER, format!("null buffer for {pos} bytes")));
            }
            for i in 0..n {
                let (ds, cs) = (v.ds[i], v.cs[i]);
                // SAFETY: the caller's contract: each block lies in the buffer.
                unsafe {
                    v.ty.pack(
                        buf.cast::<u8>().offset(v.offs[i]),
                        v.counts[i],
                        &mut v.tmp[ds..ds + cs],
                    )
                };
            }
        }
        Ok(v)
    }

    /// Unpacks every block into the buffer.
    ///
    /// # Safety
    /// As for [`VStaged::new`], the buffer writable.
    pub unsafe fn finish(self) -> R<()> {
        if self.tmp.is_empty() {
            return Ok(());
        }
        if self.buf.is_null() {
            return Err(err(abi::ERR_BUFFER, "null buffer"));
        }
        for i in 0..self.counts.len() {
            let d = &self.tmp[self.ds[i]..self.ds[i] + self.cs[i]];
            // SAFETY: the caller's contract.
            unsafe {
                self.ty.unpack(
                    d,
                    self.buf.cast::<u8>().offset(self.offs[i]),
                    self.counts[i],
                )
            };
        }
        Ok(())
    }
}
