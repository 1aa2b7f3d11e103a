//! User reduction operations: `MPI_Op_create`, `MPI_Op_free`,
//! `MPI_Op_commutative`.
//!
//! A user operation is a handle in the state's table; the reductions find
//! it through [`crate::reduce::check`] and call its C function on whole
//! buffers with the datatype's handle, as the standard describes. A
//! non-commutative one is combined in rank order (dos's ordered
//! reduction, see `dos::op`); a commutative one lets dos's algorithms
//! combine in any order. They apply to the predefined datatypes that dos
//! reduces (every one but `long double`, `MPI_REAL16`, `MPI_COMPLEX32` and
//! the other opaque ones, which are `MPI_ERR_UNSUPPORTED_OPERATION`).

use std::ffi::c_int;

use crate::abi::{self, op, Handle};
use crate::error::{err, R};
use crate::ptr::{out, read};
use crate::reduce::{CUserFn, UserFn};
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
        let h = state::with(|st| Ok(st.ops.insert(UserFn { f, commute: commute != 0 })))?;
        out(op, h, "op")
    }
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
