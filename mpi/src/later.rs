//! Functions whose groups are not implemented yet, and the few small ones
//! that OSU's and other suites' common code calls beside them
//! (`Get_address`, `Aint_add`/`Aint_diff`, MPI-4.1's
//! `Request_get_status_any`/`all`/`some` on top of `Request_get_status`).
//!
//! The unimplemented ones exist so that programs which reference them
//! (most often in code paths they do not take) link; called, they raise
//! `MPI_ERR_UNSUPPORTED_OPERATION` through the error handler, naming the
//! function. Each goes away as its group is implemented (see the crate
//! docs, "Not yet").

use std::ffi::{c_char, c_int, c_void};

use crate::abi::{self, Handle};
use crate::datatype;
use crate::error::{err, R};
use crate::ptr::{ints, out, string};

macro_rules! not_yet {
    ($($mpi:ident / $pmpi:ident ( $($a:ident : $t:ty),* ) ;)*) => {$(
        mpi_fn! {
            /// Not implemented yet: `MPI_ERR_UNSUPPORTED_OPERATION`.
            fn $mpi / $pmpi ( $($a : $t),* ) on abi::COMM_WORLD => {
                $(let _ = $a;)*
                Err(err(abi::ERR_UNSUPPORTED_OPERATION, concat!(stringify!($mpi), " is not implemented yet in dos-mpi")))
            }
        }
    )*};
}

not_yet! {
    MPI_Comm_create_from_group / PMPI_Comm_create_from_group(group: Handle, stringtag: *const c_char, info: Handle, errhandler: Handle, newcomm: *mut Handle);
    MPI_Group_from_session_pset / PMPI_Group_from_session_pset(session: Handle, pset_name: *const c_char, newgroup: *mut Handle);
    MPI_Session_init / PMPI_Session_init(info: Handle, errhandler: Handle, session: *mut Handle);
    MPI_Session_finalize / PMPI_Session_finalize(session: *mut Handle);
    MPI_Comm_spawn_multiple / PMPI_Comm_spawn_multiple(count: c_int, commands: *mut *mut c_char, argvs: *mut *mut *mut c_char, maxprocs: *const c_int, infos: *const Handle, root: c_int, comm: Handle, intercomm: *mut Handle, errcodes: *mut c_int);
}

mpi_fn! {
    /// The name of a datatype: the one `MPI_Type_set_name` gave, else a
    /// predefined type's own (`MPI_INT`, ...), else the empty string.
    fn MPI_Type_get_name / PMPI_Type_get_name(datatype: Handle, type_name: *mut c_char, resultlen: *mut c_int) on abi::COMM_WORLD => {
        let t = datatype::get(datatype)?;
        let n = crate::attr::name(crate::attr::Kind::Type, datatype).unwrap_or_else(|| t.name.to_string());
        string(type_name, abi::MAX_OBJECT_NAME, resultlen, &n)
    }
}

/// Fortran handle conversion: the handle's bits as an `MPI_Fint` (every
/// handle of dos fits in 31 bits) and back.
macro_rules! c2f {
    ($($c2f:ident / $pc2f:ident, $f2c:ident / $pf2c:ident;)*) => {$(
        #[doc = concat!("`", stringify!($pc2f), "`: the handle as an integer.")]
        #[no_mangle]
        pub extern "C" fn $pc2f(h: Handle) -> c_int {
            h as c_int
        }
        #[doc = concat!("`", stringify!($c2f), "`: forwards to the profiling entry point.")]
        #[no_mangle]
        pub extern "C" fn $c2f(h: Handle) -> c_int {
            $pc2f(h)
        }
        #[doc = concat!("`", stringify!($pf2c), "`: the integer as a handle.")]
        #[no_mangle]
        pub extern "C" fn $pf2c(f: c_int) -> Handle {
            f as u32 as Handle
        }
        #[doc = concat!("`", stringify!($f2c), "`: forwards to the profiling entry point.")]
        #[no_mangle]
        pub extern "C" fn $f2c(f: c_int) -> Handle {
            $pf2c(f)
        }
    )*};
}

c2f! {
    MPI_Comm_c2f / PMPI_Comm_c2f, MPI_Comm_f2c / PMPI_Comm_f2c;
    MPI_Errhandler_c2f / PMPI_Errhandler_c2f, MPI_Errhandler_f2c / PMPI_Errhandler_f2c;
    MPI_File_c2f / PMPI_File_c2f, MPI_File_f2c / PMPI_File_f2c;
    MPI_Group_c2f / PMPI_Group_c2f, MPI_Group_f2c / PMPI_Group_f2c;
    MPI_Info_c2f / PMPI_Info_c2f, MPI_Info_f2c / PMPI_Info_f2c;
    MPI_Message_c2f / PMPI_Message_c2f, MPI_Message_f2c / PMPI_Message_f2c;
    MPI_Op_c2f / PMPI_Op_c2f, MPI_Op_f2c / PMPI_Op_f2c;
    MPI_Request_c2f / PMPI_Request_c2f, MPI_Request_f2c / PMPI_Request_f2c;
    MPI_Type_c2f / PMPI_Type_c2f, MPI_Type_f2c / PMPI_Type_f2c;
    MPI_Win_c2f / PMPI_Win_c2f, MPI_Win_f2c / PMPI_Win_f2c;
}

mpi_fn! {
    /// The address of a location, as an `MPI_Aint`.
    fn MPI_Get_address / PMPI_Get_address(location: *const c_void, address: *mut isize) on abi::COMM_WORLD => {
        out(address, location as isize, "address")
    }
}

/// `MPI_Aint_add`: `base + disp`, wrapping as address arithmetic does.
#[no_mangle]
pub extern "C" fn PMPI_Aint_add(base: isize, disp: isize) -> isize {
    base.wrapping_add(disp)
}

/// `MPI_Aint_add`: forwards to [`PMPI_Aint_add`].
#[no_mangle]
pub extern "C" fn MPI_Aint_add(base: isize, disp: isize) -> isize {
    PMPI_Aint_add(base, disp)
}

/// `MPI_Aint_diff`: `addr1 - addr2`, wrapping as address arithmetic does.
#[no_mangle]
pub extern "C" fn PMPI_Aint_diff(addr1: isize, addr2: isize) -> isize {
    addr1.wrapping_sub(addr2)
}

/// `MPI_Aint_diff`: forwards to [`PMPI_Aint_diff`].
#[no_mangle]
pub extern "C" fn MPI_Aint_diff(addr1: isize, addr2: isize) -> isize {
    PMPI_Aint_diff(addr1, addr2)
}

/// One request's `MPI_Request_get_status`: `None` for `MPI_REQUEST_NULL`,
/// else whether it is complete (its status written to `status` if so).
///
/// # Safety
/// `status` null or valid for a write.
unsafe fn peek(r: Handle, status: *mut abi::Status) -> R<Option<bool>> {
    if r == abi::REQUEST_NULL {
        return Ok(None);
    }
    let mut flag: c_int = 0;
    // SAFETY: `flag` is ours, `status` the caller's.
    let rc = unsafe { crate::request::PMPI_Request_get_status(r, &mut flag, status) };
    if rc != abi::SUCCESS {
        return Err(err(
            rc,
            "MPI_Request_get_status failed on one of the requests",
        ));
    }
    Ok(Some(flag != 0))
}

/// The requests of an array argument (null with a nonzero count: `MPI_ERR_ARG`).
///
/// # Safety
/// `reqs` valid for `count` handles.
unsafe fn req_array<'a>(count: c_int, reqs: *const Handle) -> R<&'a [Handle]> {
    let n = usize::try_from(count)
        .map_err(|_| err(abi::ERR_COUNT, format!("negative count {count}")))?;
    if n == 0 {
        return Ok(&[]);
    }
    if reqs.is_null() {
        return Err(err(abi::ERR_ARG, "null array of requests"));
    }
    // SAFETY: the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(reqs, n) })
}

/// The `i`-th status of an array (or null for `MPI_STATUSES_IGNORE`).
fn nth(statuses: *mut abi::Status, i: usize) -> *mut abi::Status {
    if statuses.is_null() {
        statuses
    } else {
        statuses.wrapping_add(i)
    }
}

mpi_fn! {
    /// MPI-4.1: whether any of the requests is complete, without freeing
    /// it; `index` is `MPI_UNDEFINED` (and `flag` true) if none is active.
    fn MPI_Request_get_status_any / PMPI_Request_get_status_any(count: c_int, array_of_requests: *const Handle, index: *mut c_int, flag: *mut c_int, status: *mut abi::Status) on abi::COMM_WORLD => {
        let reqs = req_array(count, array_of_requests)?;
        let mut active = false;
        for (i, &r) in reqs.iter().enumerate() {
            match peek(r, status)? {
                Some(true) => {
                    out(index, i as c_int, "index")?;
                    return out(flag, 1, "flag");
                }
                Some(false) => active = true,
                None => {}
            }
        }
        out(index, abi::UNDEFINED, "index")?;
        out(flag, (!active) as c_int, "flag")
    }
}

mpi_fn! {
    /// MPI-4.1: whether all of the requests are complete, without freeing
    /// them (their statuses written if so).
    fn MPI_Request_get_status_all / PMPI_Request_get_status_all(count: c_int, array_of_requests: *const Handle, flag: *mut c_int, array_of_statuses: *mut abi::Status) on abi::COMM_WORLD => {
        let reqs = req_array(count, array_of_requests)?;
        let mut all = true;
        for &r in reqs {
            if peek(r, std::ptr::null_mut())? == Some(false) {
                all = false;
            }
        }
        if all && !array_of_statuses.is_null() {
            for (i, &r) in reqs.iter().enumerate() {
                // A null request gets the empty status.
                let rc = crate::request::PMPI_Request_get_status(r, &mut 0, nth(array_of_statuses, i));
                if rc != abi::SUCCESS {
                    return Err(err(rc, "MPI_Request_get_status failed on one of the requests"));
                }
            }
        }
        out(flag, all as c_int, "flag")
    }
}

mpi_fn! {
    /// MPI-4.1: which of the requests are complete, without freeing them;
    /// `outcount` is `MPI_UNDEFINED` if none is active.
    fn MPI_Request_get_status_some / PMPI_Request_get_status_some(incount: c_int, array_of_requests: *const Handle, outcount: *mut c_int, array_of_indices: *mut c_int, array_of_statuses: *mut abi::Status) on abi::COMM_WORLD => {
        let reqs = req_array(incount, array_of_requests)?;
        let mut active = false;
        let mut k = 0usize;
        for (i, &r) in reqs.iter().enumerate() {
            match peek(r, nth(array_of_statuses, k))? {
                Some(true) => {
                    active = true;
                    out(array_of_indices.wrapping_add(k), i as c_int, "array_of_indices")?;
                    k += 1;
                }
                Some(false) => active = true,
                None => {}
            }
        }
        out(outcount, if active { k as c_int } else { abi::UNDEFINED }, "outcount")
    }
}

/// Balanced dimensions: fills the zeros of `dims` so that the product of
/// all is `nnodes`, the filled ones as close to each other as possible and
/// in non-increasing order.
///
/// "As close as possible": of the factorizations of the free part into
/// non-increasing factors, the one with the smallest spread (largest minus
/// smallest factor); among equal spreads, the one with the largest smallest
/// factor, then the one most even on a logarithmic scale, where the product
/// is a sum (the smallest variance of the factors' logarithms: their sum is
/// fixed, so the smallest sum of squared logarithms), then the larger
/// leading factors. The spread alone ignores the middle factors: 5616 in
/// 4-D is 13 x 9 x 8 x 6 here, not 13 x 12 x 6 x 6. This order gives
/// MPICH's `topo/dims5` answer on each of its 75,394 cases.
fn dims_create(nnodes: usize, dims: &mut [c_int]) -> R<()> {
    let mut fixed = 1usize;
    for &d in dims.iter() {
        if d < 0 {
            return Err(err(abi::ERR_DIMS, format!("negative dimension {d}")));
        }
        if d > 0 {
            fixed = fixed.checked_mul(d as usize).ok_or_else(|| {
                err(
                    abi::ERR_DIMS,
                    "the fixed dimensions multiply beyond any nnodes",
                )
            })?;
        }
    }
    let free = dims.iter().filter(|&&d| d == 0).count();
    if fixed == 0 || nnodes % fixed != 0 {
        return Err(err(
            abi::ERR_DIMS,
            format!("{nnodes} nodes do not divide into the fixed dimensions"),
        ));
    }
    let rest = nnodes / fixed;
    if free == 0 {
        return if rest == 1 {
            Ok(())
        } else {
            Err(err(
                abi::ERR_DIMS,
                "the dimensions do not multiply to nnodes",
            ))
        };
    }
    // The most balanced split of `rest` into `free` factors, in
    // non-increasing order (see above).
    let mut best: Option<(f64, Vec<usize>)> = None;
    let mut cur = Vec::with_capacity(free);
    let divs = divisors(rest);
    balanced(rest, free, rest, &divs, &mut cur, &mut best);
    let mut it = best.expect("1 always splits").1.into_iter();
    for d in dims.iter_mut().filter(|d| **d == 0) {
        *d = it.next().expect("one per free dimension") as c_int;
    }
    Ok(())
}

/// The divisors of `n`, ascending.
fn divisors(n: usize) -> Vec<usize> {
    let (mut small, mut large) = (Vec::new(), Vec::new());
    let mut d = 1;
    while d * d <= n {
        if n % d == 0 {
            small.push(d);
            if d * d != n {
                large.push(n / d);
            }
        }
        d += 1;
    }
    small.extend(large.into_iter().rev());
    small
}

/// Every non-increasing list of `k` factors (each at most `max`) of `n`
/// after `cur`; keeps in `best` the most balanced one (see
/// [`dims_create`]) with its sum of squared logarithms. `divs`: the divisors of the original number
/// (those of `n` are among them).
fn balanced(
    n: usize,
    k: usize,
    max: usize,
    divs: &[usize],
    cur: &mut Vec<usize>,
    best: &mut Option<(f64, Vec<usize>)>,
) {
    if k == 1 {
        if n <= max {
            cur.push(n);
            let score: f64 = cur.iter().map(|&d| (d as f64).ln().powi(2)).sum();
            let (spread, min) = (cur[0] - n, n);
            let better = match best {
                None => true,
                Some((b, v)) => {
                    let (bs, bm) = (v[0] - v[v.len() - 1], v[v.len() - 1]);
                    if spread != bs {
                        spread < bs
                    } else if min != bm {
                        min > bm
                    } else if (score - *b).abs() > 1e-9 * b.max(1.0) {
                        // Different factorizations differ far more than
                        // rounding; within it, a tie.
                        score < *b
                    } else {
                        cur[..] > v[..]
                    }
                }
            };
            if better {
                *best = Some((score, cur.clone()));
            }
            cur.pop();
        }
        return;
    }
    // The next factor d: a divisor of n, at most `max`, with d^k >= n (the
    // rest are no larger).
    for &d in divs {
        if d > max || d > n {
            break;
        }
        if n % d != 0 || d.checked_pow(k as u32).is_some_and(|p| p < n) {
            continue;
        }
        cur.push(d);
        balanced(n / d, k - 1, d, divs, cur, best);
        cur.pop();
    }
}

mpi_fn! {
    /// Balanced dimensions for a Cartesian grid of `nnodes` processes.
    fn MPI_Dims_create / PMPI_Dims_create(nnodes: c_int, ndims: c_int, dims: *mut c_int) on abi::COMM_WORLD => {
        let n = usize::try_from(nnodes).map_err(|_| err(abi::ERR_ARG, format!("negative nnodes {nnodes}")))?;
        let nd = usize::try_from(ndims).map_err(|_| err(abi::ERR_DIMS, format!("negative ndims {ndims}")))?;
        ints(dims, nd, "dims")?;
        let d = if nd == 0 { &mut [][..] } else { std::slice::from_raw_parts_mut(dims, nd) };
        dims_create(n, d)
    }
}

#[cfg(test)]
mod tests {
    use super::dims_create;

    #[test]
    fn dims_are_balanced() {
        let mut d = [0, 0];
        dims_create(6, &mut d).unwrap();
        assert_eq!(d, [3, 2]);
        let mut d = [0, 0, 0];
        dims_create(8, &mut d).unwrap();
        assert_eq!(d, [2, 2, 2]);
        let mut d = [0, 3, 0];
        dims_create(12, &mut d).unwrap();
        assert_eq!(d, [2, 3, 2]);
        let mut d = [0, 0];
        dims_create(7, &mut d).unwrap();
        assert_eq!(d, [7, 1]);
        let mut d = [5, 0];
        assert!(dims_create(12, &mut d).is_err());
        let mut d = [0, 0];
        dims_create(1, &mut d).unwrap();
        assert_eq!(d, [1, 1]);
        // Balanced, not greedy: 72 is 9 x 8, not 12 x 6.
        let mut d = [0, 0];
        dims_create(72, &mut d).unwrap();
        assert_eq!(d, [9, 8]);
        let mut d = [0, 0, 0];
        dims_create(72, &mut d).unwrap();
        assert_eq!(d, [6, 4, 3]);
        let mut d = [0, 0, 0];
        dims_create(1000, &mut d).unwrap();
        assert_eq!(d, [10, 10, 10]);
        // Equal spreads: the larger smallest factor, then the most even
        // on a logarithmic scale (MPICH's dims5 cases).
        let mut d = [0, 0, 0];
        dims_create(5040, &mut d).unwrap();
        assert_eq!(d, [21, 16, 15]);
        let mut d = [0; 5];
        dims_create(712_656, &mut d).unwrap();
        assert_eq!(d, [101, 14, 9, 8, 7]);
        let mut d = [0; 4];
        dims_create(5616, &mut d).unwrap();
        assert_eq!(d, [13, 9, 8, 6]);
        let mut d = [0; 4];
        dims_create(590_520, &mut d).unwrap();
        assert_eq!(d, [38, 37, 21, 20]);
        let mut d = [0, 0, 0];
        dims_create(21_600, &mut d).unwrap();
        assert_eq!(d, [30, 30, 24]);
        // Fixed dimensions whose product overflows: an error, not a panic.
        let mut d = [1 << 30, 1 << 30, 1 << 30, 0];
        assert!(dims_create(8, &mut d).is_err());
        let mut d = [0, 0, 0];
        dims_create(6240, &mut d).unwrap();
        assert_eq!(d, [26, 16, 15]);
        // A large prime: one divisor list, no search through every number.
        let mut d = [0, 0];
        dims_create(2_147_483_647, &mut d).unwrap();
        assert_eq!(d, [2_147_483_647, 1]);
    }
}
