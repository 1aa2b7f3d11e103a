//! Functions whose groups are not implemented yet, and the few small ones
//! that OSU's and other suites' common code calls beside them.
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
    MPI_Cart_create / PMPI_Cart_create(comm: Handle, ndims: c_int, dims: *const c_int, periods: *const c_int, reorder: c_int, comm_cart: *mut Handle);
    MPI_Cart_coords / PMPI_Cart_coords(comm: Handle, rank: c_int, maxdims: c_int, coords: *mut c_int);
    MPI_Cart_rank / PMPI_Cart_rank(comm: Handle, coords: *const c_int, rank: *mut c_int);
    MPI_Dist_graph_neighbors / PMPI_Dist_graph_neighbors(comm: Handle, maxindegree: c_int, sources: *mut c_int, sourceweights: *mut c_int, maxoutdegree: c_int, destinations: *mut c_int, destweights: *mut c_int);
    MPI_Comm_create_from_group / PMPI_Comm_create_from_group(group: Handle, stringtag: *const c_char, info: Handle, errhandler: Handle, newcomm: *mut Handle);
    MPI_Group_from_session_pset / PMPI_Group_from_session_pset(session: Handle, pset_name: *const c_char, newgroup: *mut Handle);
    MPI_Session_init / PMPI_Session_init(info: Handle, errhandler: Handle, session: *mut Handle);
    MPI_Session_finalize / PMPI_Session_finalize(session: *mut Handle);
}

mpi_fn! {
    /// The name of a predefined datatype (`MPI_INT`, ...).
    fn MPI_Type_get_name / PMPI_Type_get_name(datatype: Handle, type_name: *mut c_char, resultlen: *mut c_int) on abi::COMM_WORLD => {
        let t = datatype::get(datatype)?;
        string(type_name, 128, resultlen, t.name)
    }
}

mpi_fn! {
    /// The address of a location, as an `MPI_Aint`.
    fn MPI_Get_address / PMPI_Get_address(location: *const c_void, address: *mut isize) on abi::COMM_WORLD => {
        out(address, location as isize, "address")
    }
}

/// Balanced dimensions: fills the zeros of `dims` so that the product of
/// all is `nnodes`, the filled ones as close to each other as possible and
/// in non-increasing order.
fn dims_create(nnodes: usize, dims: &mut [c_int]) -> R<()> {
    let mut fixed = 1usize;
    for &d in dims.iter() {
        if d < 0 {
            return Err(err(abi::ERR_DIMS, format!("negative dimension {d}")));
        }
        if d > 0 {
            fixed *= d as usize;
        }
    }
    let free = dims.iter().filter(|&&d| d == 0).count();
    if fixed == 0 || nnodes % fixed != 0 {
        return Err(err(
            abi::ERR_DIMS,
            format!("{nnodes} nodes do not divide into the fixed dimensions"),
        ));
    }
    let mut rest = nnodes / fixed;
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
    // Prime factors, largest first, each onto the currently smallest dimension.
    let mut factors = Vec::new();
    let mut p = 2;
    while rest > 1 {
        while rest % p == 0 {
            factors.push(p);
            rest /= p;
        }
        p += 1;
        if p * p > rest && rest > 1 {
            factors.push(rest);
            break;
        }
    }
    factors.sort_unstable_by(|a, b| b.cmp(a));
    let mut free_dims = vec![1usize; free];
    for f in factors {
        let i = (0..free).min_by_key(|&i| free_dims[i]).expect("free > 0");
        free_dims[i] *= f;
    }
    free_dims.sort_unstable_by(|a, b| b.cmp(a));
    let mut it = free_dims.into_iter();
    for d in dims.iter_mut().filter(|d| **d == 0) {
        *d = it.next().expect("one per free dimension") as c_int;
    }
    Ok(())
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
    }
}
