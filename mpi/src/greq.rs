//! Generalized requests: `MPI_Grequest_start`, `MPI_Grequest_complete`.
//!
//! A generalized request is an entry of the request table like any other,
//! so every `Wait*`/`Test*` form completes it. Until the program calls
//! `MPI_Grequest_complete` its dos request is a receive that nothing sends
//! to (posted on a private duplicate of `MPI_COMM_SELF`, so no program
//! message matches it); `MPI_Grequest_complete` withdraws that receive,
//! calls the program's query function for the status, and stores the
//! outcome in the entry, which then tests complete. The free function runs
//! when `MPI_Wait`/`MPI_Test` (or any other completion) takes the request;
//! `MPI_Request_free` of one not yet completed is refused with
//! `MPI_ERR_UNSUPPORTED_OPERATION` (as for any request with a completion
//! hook, see `request.rs`), of a completed one runs the free function.
//!
//! The query function is called in `MPI_Grequest_complete`, not in the
//! call that completes the request (the standard's moment): what it
//! reports is the same unless the program changes its extra state in
//! between. dos is `MPI_THREAD_FUNNELED`: `MPI_Grequest_complete` is called
//! on the thread that called `MPI_Init`, as every MPI function. The cancel
//! function is called by `MPI_Cancel` only for receives in dos (see
//! `persist.rs`): for a generalized request `MPI_Cancel` does nothing.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use dos::detached::DetachedRequest;
use dos::{Source, TagSel};

use crate::abi::{self, Handle, Status};
use crate::error::{err, R};
use crate::ptr::out;
use crate::request::After;
use crate::state::{self, CommEntry, ReqEntry, ReqKind};

/// `MPI_Grequest_query_function`.
type QueryFn = unsafe extern "C" fn(*mut c_void, *mut Status) -> c_int;
/// `MPI_Grequest_free_function`.
type FreeFn = unsafe extern "C" fn(*mut c_void) -> c_int;

/// The handle of the private communicator the pending receives are posted
/// on (0: not made yet).
static PRIVATE: AtomicUsize = AtomicUsize::new(0);
/// The tag of the next generalized request's receive.
static NEXT_TAG: AtomicI32 = AtomicI32::new(0);

/// The generalized requests not completed yet: request handle, query
/// function and extra state.
static PENDING: std::sync::Mutex<Vec<(Handle, usize, usize)>> = std::sync::Mutex::new(Vec::new());

/// The private communicator (made on first use).
fn private_comm() -> R<dos::Comm> {
    let h = PRIVATE.load(Ordering::Acquire);
    if h != 0 {
        if let Ok(c) = state::comm(h) {
            return Ok(c);
        }
    }
    let c = state::comm(abi::COMM_SELF)?.dup()?;
    let h = state::with(|st| {
        Ok(st.comms.insert(CommEntry {
            comm: c.clone(),
            errhandler: abi::ERRORS_RETURN,
        }))
    })?;
    PRIVATE.store(h, Ordering::Release);
    Ok(c)
}

fn pending() -> std::sync::MutexGuard<'static, Vec<(Handle, usize, usize)>> {
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

mpi_fn! {
    /// Starts a generalized request: complete once the program calls
    /// `MPI_Grequest_complete` on it.
    fn MPI_Grequest_start / PMPI_Grequest_start(query_fn: Option<QueryFn>, free_fn: Option<FreeFn>, cancel_fn: *const c_void, extra_state: *mut c_void, request: *mut Handle) on abi::COMM_WORLD => {
        let _ = cancel_fn;
        if request.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for request"));
        }
        let (Some(query), Some(free)) = (query_fn, free_fn) else {
            return Err(err(abi::ERR_ARG, "null query or free function"));
        };
        let c = private_comm()?;
        let tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed) & i32::MAX;
        // SAFETY: a receive of zero bytes: the (dangling, non-null) pointer
        // is never written.
        let raw = c.irecv_detached(std::ptr::NonNull::<u8>::dangling().as_ptr(), 0, Source::Rank(0), TagSel::Tag(tag))?;
        let extra = extra_state as usize;
        let after: After = Box::new(move |_| {
            // SAFETY: the program's free function with its extra state.
            let rc = free(extra as *mut c_void);
            if rc != abi::SUCCESS {
                return Err(err(rc, "the generalized request's free function failed"));
            }
            Ok(())
        });
        let h = state::with(|st| {
            Ok(st.reqs.insert(ReqEntry { raw, kind: ReqKind::Send, comm: abi::COMM_WORLD, outcome: None, after: Some(after) }))
        })?;
        pending().push((h, query as usize, extra));
        out(request, h, "request")
    }
}

mpi_fn! {
    /// Marks a generalized request complete: its status is what the query
    /// function reports.
    fn MPI_Grequest_complete / PMPI_Grequest_complete(request: Handle) on abi::COMM_WORLD => {
        let found = {
            let mut p = pending();
            p.iter().position(|g| g.0 == request).map(|i| p.swap_remove(i))
        };
        let Some((h, query, extra)) = found else {
            return Err(err(abi::ERR_REQUEST, format!("{request:#x} is not a pending generalized request")));
        };
        // SAFETY: `query` is the program's query function as given to
        // `MPI_Grequest_start` (stored as an address).
        let query: QueryFn = std::mem::transmute::<usize, QueryFn>(query);
        let mut s = Status::empty();
        // SAFETY: the program's query function with its extra state and a status.
        let rc = query(extra as *mut c_void, &mut s);
        let e = (rc != abi::SUCCESS).then(|| err(rc, "the generalized request's query function failed"));
        let raw = state::with(|st| {
            let e2 = e.clone();
            match st.reqs.get_mut(&h) {
                Some(entry) => {
                    entry.outcome = Some(Box::new((s, e2)));
                    Ok(Some(std::mem::replace(&mut entry.raw, DetachedRequest::completed())))
                }
                None => Ok(None),
            }
        })?;
        // Withdrawn, not waited for (dropping a pending request waits).
        if let Some(r) = raw {
            r.abandon();
        }
        Ok(())
    }
}
