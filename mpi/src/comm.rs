//! Communicators (rank, size, dup, split, split_type, compare, free,
//! attributes) and their error handlers; error strings and classes.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::abi::{self, Handle};
use crate::error::HandlerKind;
use crate::error::{class_string, err, R};
use crate::ptr::{out, read, string};
use crate::state::{self, CommEntry};

mpi_fn! {
    /// This process's rank in `comm`.
    fn MPI_Comm_rank / PMPI_Comm_rank(comm: Handle, rank: *mut c_int) on comm => {
        if let Some((_, r)) = crate::inter::local_size_rank(comm) {
            return out(rank, r as c_int, "rank");
        }
        let c = state::comm(comm)?;
        out(rank, c.rank() as c_int, "rank")
    }
}

mpi_fn! {
    /// The number of processes in `comm`.
    fn MPI_Comm_size / PMPI_Comm_size(comm: Handle, size: *mut c_int) on comm => {
        if let Some((n, _)) = crate::inter::local_size_rank(comm) {
            return out(size, n as c_int, "size");
        }
        let c = state::comm(comm)?;
        out(size, c.size() as c_int, "size")
    }
}

/// Registers `c` under a new handle with `errhandler`; stores it in `newcomm`.
///
/// # Safety
/// `newcomm` must be valid for a write (or null: `MPI_ERR_ARG`).
unsafe fn register(c: Option<dos::Comm>, errhandler: Handle, newcomm: *mut Handle) -> R<()> {
    let h = match c {
        None => abi::COMM_NULL,
        Some(comm) => state::with(|st| Ok(st.comms.insert(CommEntry { comm, errhandler })))?,
    };
    // SAFETY: as this function's contract says.
    unsafe { out(newcomm, h, "newcomm") }
}

fn errhandler(comm: Handle) -> Handle {
    state::errhandler_of(comm)
}

mpi_fn! {
    /// A communicator with the same processes and a new context; it
    /// inherits `comm`'s error handler. Collective.
    fn MPI_Comm_dup / PMPI_Comm_dup(comm: Handle, newcomm: *mut Handle) on comm => {
        if newcomm.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for newcomm"));
        }
        if crate::inter::is_inter(comm) {
            out(newcomm, crate::inter::dup(comm)?, "newcomm")?;
        } else {
            let c = state::comm(comm)?;
            let d = c.dup()?;
            register(Some(d), errhandler(comm), newcomm)?;
        }
        inherit(comm, newcomm)
    }
}

/// What a duplicate `*newcomm` of `comm` takes from it: the topology and
/// the attributes (through their copy callbacks). If a callback fails, the
/// duplicate is freed and `*newcomm` is `MPI_COMM_NULL`.
///
/// # Safety
/// `newcomm` valid for a read and a write.
unsafe fn inherit(comm: Handle, newcomm: *mut Handle) -> R<()> {
    // SAFETY: the caller's contract.
    let new = unsafe { read(newcomm, "newcomm")? };
    crate::topo::copy(comm, new);
    if let Err(e) = crate::attr::copy_all(crate::attr::Kind::Comm, comm, new) {
        // A copy callback failed: the new communicator is not made.
        let _ = crate::attr::delete_all(crate::attr::Kind::Comm, new);
        crate::topo::forget(new);
        crate::inter::forget(new);
        state::with(|st| Ok(st.comms.remove(&new)))?;
        // SAFETY: the caller's contract.
        unsafe { out(newcomm, abi::COMM_NULL, "newcomm")? };
        return Err(e);
    }
    Ok(())
}

// ----- MPI_Comm_idup -----
//
// A nonblocking dup cannot agree on a context id the way a blocking one
// does (the largest free id of the processes, reserved at once): while it
// is pending a process may create other communicators, and two dups
// pending on one process may complete in either order, so an id agreed
// that way may be taken meanwhile or agreed twice. So the new context
// comes from a range of its own, above every id dos hands out
// ([`IDUP_BASE`]): one process (the root, rank 0 of the communicator; on
// an intercommunicator the leader with the lower world rank) takes the
// next of its own slots there, numbered by its world rank so that no two
// processes' slots meet, and sends it to the others, in a nonblocking
// broadcast ordered with the communicator's collectives (on an
// intercommunicator, point-to-point messages on the hidden communicators'
// contexts, which no collective uses). A slot is four ids (an
// intercommunicator takes three). Contexts that high have no node-level
// shared-memory collective slots (dos's first contexts only), so the
// collectives of a communicator made by `MPI_Comm_idup` take the
// point-to-point algorithms.

/// The first context id of `MPI_Comm_idup`'s range.
pub(crate) const IDUP_BASE: u32 = 1 << 30;

/// The next slot of this process in the range.
static IDUP_NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A fresh slot of four context ids for a nonblocking dup, unique in the
/// job: its first id.
pub(crate) fn idup_slot() -> R<u64> {
    let (me, n) = state::with(|st| Ok((st.world.comm().rank(), st.world.comm().size())))?;
    let k = IDUP_NEXT.fetch_add(1, Ordering::Relaxed);
    let slot = k
        .checked_mul(n as u64)
        .and_then(|x| x.checked_add(me as u64))
        .and_then(|x| x.checked_mul(4))
        .filter(|&x| x + 4 <= u64::from(IDUP_BASE))
        .ok_or_else(|| err(abi::ERR_INTERN, "MPI_Comm_idup: context ids exhausted"))?;
    Ok(u64::from(IDUP_BASE) + slot)
}

/// The context id `x` received by a nonblocking dup, checked.
pub(crate) fn idup_ctx(x: u64) -> R<u32> {
    u32::try_from(x)
        .ok()
        .filter(|c| (IDUP_BASE..u32::MAX / 2 - 4).contains(c))
        .ok_or_else(|| {
            err(
                abi::ERR_INTERN,
                format!("MPI_Comm_idup: bad context id {x}"),
            )
        })
}

/// `MPI_UINT64_T`.
const UINT64: Handle = 0x259;

mpi_fn! {
    /// A duplicate of `comm` (as `MPI_Comm_dup`), made without blocking:
    /// `*newcomm` is set when the request completes. The context id comes
    /// from the root in a nonblocking broadcast; see the comment above
    /// `IDUP_BASE`.
    fn MPI_Comm_idup / PMPI_Comm_idup(comm: Handle, newcomm: *mut Handle, request: *mut Handle) on comm => {
        if newcomm.is_null() || request.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for newcomm or request"));
        }
        if crate::inter::is_inter(comm) {
            return crate::inter::idup(comm, newcomm, request);
        }
        let c = state::comm(comm)?;
        let eh = errhandler(comm);
        let mut ctx = Box::new([if c.rank() == 0 { idup_slot()? } else { 0 }]);
        let mut part = abi::REQUEST_NULL;
        let rc = crate::nbc::PMPI_Ibcast(ctx.as_mut_ptr().cast(), 1, UINT64, 0, comm, &mut part);
        if rc != abi::SUCCESS {
            return Err(err(rc, "MPI_Comm_idup: the broadcast of the context id failed to start"));
        }
        let after: crate::request::After = Box::new(move |_| {
            let d = c.with_members(idup_ctx(ctx[0])?, c.group().members())?;
            // SAFETY: the program keeps `newcomm` valid until the request
            // completes (MPI's rule for nonblocking calls).
            unsafe {
                register(Some(d), eh, newcomm)?;
                inherit(comm, newcomm)
            }
        });
        crate::request::insert_compound(vec![part], state::ReqKind::Coll, comm, after, request)
    }
}

mpi_fn! {
    /// `MPI_Comm_idup`; the info hints are not used by dos.
    fn MPI_Comm_idup_with_info / PMPI_Comm_idup_with_info(comm: Handle, info: Handle, newcomm: *mut Handle, request: *mut Handle) on comm => {
        let _ = info;
        let rc = PMPI_Comm_idup(comm, newcomm, request);
        if rc == abi::SUCCESS { Ok(()) } else { Err(err(rc, "MPI_Comm_idup failed")) }
    }
}

mpi_fn! {
    /// One communicator per `color` (`MPI_UNDEFINED`: none, `MPI_COMM_NULL`),
    /// ranked by `key` then by rank in `comm`. Collective.
    fn MPI_Comm_split / PMPI_Comm_split(comm: Handle, color: c_int, key: c_int, newcomm: *mut Handle) on comm => {
        if newcomm.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for newcomm"));
        }
        let c = state::comm(comm)?;
        let color = match color {
            abi::UNDEFINED => None,
            c if c >= 0 => Some(c as u32),
            c => return Err(err(abi::ERR_ARG, format!("invalid color {c}"))),
        };
        if crate::inter::is_inter(comm) {
            return out(newcomm, crate::inter::split(comm, color, key)?, "newcomm");
        }
        let s = c.split(color, key)?;
        register(s, errhandler(comm), newcomm)
    }
}

/// A color shared by exactly the ranks of `c` on this host: the lowest such rank.
fn host_color(c: &dos::Comm) -> R<u32> {
    const LEN: usize = 256;
    let mut mine = [0u8; LEN];
    let name = crate::env::hostname();
    let n = name.len().min(LEN);
    mine[..n].copy_from_slice(&name.as_bytes()[..n]);
    let mut all = vec![0u8; LEN * c.size()];
    c.allgather(&mine, &mut all)?;
    let first = all
        .chunks(LEN)
        .position(|h| h == mine)
        .ok_or_else(|| err(abi::ERR_INTERN, "own host name missing"))?;
    Ok(first as u32)
}

mpi_fn! {
    /// `MPI_COMM_TYPE_SHARED`: one communicator per host (shared memory);
    /// `MPI_UNDEFINED`: `MPI_COMM_NULL`; the hardware types
    /// (`HW_UNGUIDED`, `HW_GUIDED`, `RESOURCE_GUIDED`): `MPI_COMM_NULL` (no
    /// level below the host). Collective: the ranks may pass different
    /// types (some `MPI_UNDEFINED`, as MPI-4 allows).
    fn MPI_Comm_split_type / PMPI_Comm_split_type(
        comm: Handle,
        split_type: c_int,
        key: c_int,
        _info: Handle,
        newcomm: *mut Handle,
    ) on comm => {
        if newcomm.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for newcomm"));
        }
        crate::inter::deny(comm)?;
        let c = state::comm(comm)?;
        if !matches!(split_type, abi::UNDEFINED | abi::COMM_TYPE_SHARED | abi::COMM_TYPE_HW_UNGUIDED | abi::COMM_TYPE_HW_GUIDED | abi::COMM_TYPE_RESOURCE_GUIDED) {
            return Err(err(abi::ERR_ARG, format!("split type {split_type} is not supported")));
        }
        // Every rank runs the same collectives whatever type it passes
        // (ranks may mix MPI_COMM_TYPE_SHARED with MPI_UNDEFINED).
        let host = host_color(&c)?;
        let color = match split_type {
            abi::UNDEFINED => None,
            abi::COMM_TYPE_SHARED => Some(host),
            // The hardware types: dos knows no finer level than the host,
            // and the standard allows MPI_COMM_NULL when there is none.
            abi::COMM_TYPE_HW_UNGUIDED | abi::COMM_TYPE_HW_GUIDED | abi::COMM_TYPE_RESOURCE_GUIDED => None,
            t => return Err(err(abi::ERR_ARG, format!("split type {t} is not supported"))),
        };
        let s = c.split(color, key)?;
        register(s, errhandler(comm), newcomm)
    }
}

mpi_fn! {
    /// Frees a communicator made by the program and sets the handle to
    /// `MPI_COMM_NULL`; `MPI_COMM_WORLD`/`MPI_COMM_SELF` are `MPI_ERR_COMM`.
    fn MPI_Comm_free / PMPI_Comm_free(comm: *mut Handle) on abi::COMM_WORLD => {
        let h = read(comm, "comm")?;
        if h == abi::COMM_WORLD || h == abi::COMM_SELF {
            return Err(err(abi::ERR_COMM, "a predefined communicator cannot be freed"));
        }
        state::comm(h)?;
        // The attributes' delete callbacks first (they may use the communicator).
        crate::attr::delete_all(crate::attr::Kind::Comm, h)?;
        crate::topo::forget(h);
        crate::inter::forget(h);
        state::with(|st| st.comms.remove(&h).map(|_| ()).ok_or_else(|| state::bad_comm(h)))?;
        out(comm, abi::COMM_NULL, "comm")
    }
}

mpi_fn! {
    /// `MPI_IDENT` (same handle), `MPI_CONGRUENT` (same processes in the
    /// same order), `MPI_SIMILAR` (same processes), else `MPI_UNEQUAL`.
    fn MPI_Comm_compare / PMPI_Comm_compare(comm1: Handle, comm2: Handle, result: *mut c_int) on comm1 => {
        if crate::inter::is_inter(comm1) || crate::inter::is_inter(comm2) {
            return out(result, crate::inter::compare(comm1, comm2)?, "result");
        }
        let a = state::comm(comm1)?;
        let b = state::comm(comm2)?;
        let r = if comm1 == comm2 {
            abi::IDENT
        } else {
            match a.group().compare(&b.group()) {
                dos::GroupCompare::Ident => abi::CONGRUENT,
                dos::GroupCompare::Similar => abi::SIMILAR,
                _ => abi::UNEQUAL,
            }
        };
        out(result, r, "result")
    }
}

mpi_fn! {
    /// No parent: dos starts every process (`MPI_COMM_NULL`).
    fn MPI_Comm_get_parent / PMPI_Comm_get_parent(parent: *mut Handle) on abi::COMM_WORLD => {
        out(parent, abi::COMM_NULL, "parent")
    }
}

mpi_fn! {
    /// As `MPI_Comm_free` (every operation on a communicator here completes
    /// before it returns).
    fn MPI_Comm_disconnect / PMPI_Comm_disconnect(comm: *mut Handle) on abi::COMM_WORLD => {
        PMPI_Comm_free(comm);
        let h = read(comm, "comm")?;
        if h == abi::COMM_NULL { Ok(()) } else { Err(state::bad_comm(h)) }
    }
}

mpi_fn! {
    /// The number of processes in the remote group of an intercommunicator
    /// (`MPI_ERR_COMM` on an intracommunicator).
    fn MPI_Comm_remote_size / PMPI_Comm_remote_size(comm: Handle, size: *mut c_int) on comm => {
        let n = crate::inter::remote_size(comm)?;
        out(size, n as c_int, "size")
    }
}

mpi_fn! {
    /// The remote group of an intercommunicator (`MPI_ERR_COMM` on an
    /// intracommunicator).
    fn MPI_Comm_remote_group / PMPI_Comm_remote_group(comm: Handle, group: *mut Handle) on comm => {
        if group.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for group"));
        }
        let g = crate::inter::remote_group(comm)?;
        crate::group::register_group(g, group)
    }
}

mpi_fn! {
    /// True for an intercommunicator.
    fn MPI_Comm_test_inter / PMPI_Comm_test_inter(comm: Handle, flag: *mut c_int) on comm => {
        state::comm(comm)?;
        out(flag, c_int::from(crate::inter::is_inter(comm)), "flag")
    }
}

/// Values of the predefined attributes; the attribute value handed out is
/// a pointer to one of these.
static TAG_UB: AtomicI32 = AtomicI32::new(abi::TAG_UB_VALUE);
static HOST: AtomicI32 = AtomicI32::new(abi::PROC_NULL);
static IO: AtomicI32 = AtomicI32::new(abi::ANY_SOURCE);
static WTIME_IS_GLOBAL: AtomicI32 = AtomicI32::new(0);
static APPNUM: AtomicI32 = AtomicI32::new(0);
static UNIVERSE_SIZE: AtomicI32 = AtomicI32::new(0);
static LASTUSEDCODE: AtomicI32 = AtomicI32::new(abi::ERR_LASTCODE);

mpi_fn! {
    /// The predefined attributes (`MPI_TAG_UB`, `MPI_HOST`, `MPI_IO`,
    /// `MPI_WTIME_IS_GLOBAL`, `MPI_APPNUM`, `MPI_UNIVERSE_SIZE`); any other
    /// key: the program's attribute (`flag` false if not set).
    fn MPI_Comm_get_attr / PMPI_Comm_get_attr(
        comm: Handle,
        keyval: c_int,
        attribute_val: *mut c_void,
        flag: *mut c_int,
    ) on comm => {
        let c = state::comm(comm)?;
        let cell: Option<&'static AtomicI32> = match keyval {
            abi::TAG_UB => Some(&TAG_UB),
            abi::HOST => Some(&HOST),
            abi::IO => Some(&IO),
            abi::WTIME_IS_GLOBAL => Some(&WTIME_IS_GLOBAL),
            abi::APPNUM => Some(&APPNUM),
            abi::LASTUSEDCODE => {
                LASTUSEDCODE.store(crate::error::last_used_code(), Ordering::Relaxed);
                Some(&LASTUSEDCODE)
            }
            abi::UNIVERSE_SIZE => {
                let n = state::with(|st| Ok(st.world.size()))?;
                UNIVERSE_SIZE.store(n as i32, Ordering::Relaxed);
                Some(&UNIVERSE_SIZE)
            }
            _ => None,
        };
        let _ = c;
        match cell {
            Some(v) => {
                out(attribute_val.cast::<*const AtomicI32>(), v as *const AtomicI32, "attribute_val")?;
                out(flag, 1, "flag")
            }
            None => match crate::attr::get(crate::attr::Kind::Comm, comm, keyval)? {
                Some(v) => {
                    out(attribute_val.cast::<usize>(), v, "attribute_val")?;
                    out(flag, 1, "flag")
                }
                None => out(flag, 0, "flag"),
            },
        }
    }
}

// ----- error handlers -----

fn check_errhandler(e: Handle) -> R<()> {
    crate::error::check_handler(e, HandlerKind::Comm)
}

mpi_fn! {
    /// Sets `comm`'s error handler (`MPI_ERRORS_ARE_FATAL`,
    /// `MPI_ERRORS_ABORT`, `MPI_ERRORS_RETURN`, or one of `MPI_Comm_create_errhandler`).
    fn MPI_Comm_set_errhandler / PMPI_Comm_set_errhandler(comm: Handle, errhandler: Handle) on comm => {
        check_errhandler(errhandler)?;
        state::with(|st| match st.comms.get_mut(&comm) {
            Some(e) => {
                e.errhandler = errhandler;
                Ok(())
            }
            None => Err(state::bad_comm(comm)),
        })
    }
}

mpi_fn! {
    /// `comm`'s error handler.
    fn MPI_Comm_get_errhandler / PMPI_Comm_get_errhandler(comm: Handle, errhandler: *mut Handle) on comm => {
        let e = state::with(|st| match st.comms.get(&comm) {
            Some(e) => Ok(e.errhandler),
            None => Err(state::bad_comm(comm)),
        })?;
        out(errhandler, e, "errhandler")
    }
}

mpi_fn! {
    /// Frees an error handler handle (the predefined ones stay; a user one
    /// stays usable by the objects it is set on).
    fn MPI_Errhandler_free / PMPI_Errhandler_free(errhandler: *mut Handle) on abi::COMM_WORLD => {
        let e = read(errhandler, "errhandler")?;
        if !matches!(e, abi::ERRORS_ARE_FATAL | abi::ERRORS_RETURN | abi::ERRORS_ABORT)
            && crate::error::user_errhandler(e).is_none()
        {
            return Err(err(abi::ERR_ARG, format!("invalid error handler {e:#x}")));
        }
        out(errhandler, abi::ERRHANDLER_NULL, "errhandler")
    }
}

mpi_fn! {
    /// Invokes `comm`'s error handler on `errorcode`.
    fn MPI_Comm_call_errhandler / PMPI_Comm_call_errhandler(comm: Handle, errorcode: c_int) on comm => {
        state::comm(comm)?;
        let code = crate::error::raise("MPI_Comm_call_errhandler", comm, err(errorcode, "called by the program"));
        let _ = code;
        Ok(())
    }
}

mpi_fn! {
    /// The string of an error code: a predefined class's, or the one the
    /// program set with `MPI_Add_error_string` (empty if none).
    fn MPI_Error_string / PMPI_Error_string(errorcode: c_int, s: *mut c_char, resultlen: *mut c_int) on abi::COMM_WORLD => {
        let text = class_string(errorcode)
            .map(str::to_string)
            .or_else(|| crate::error::added_string(errorcode))
            .ok_or_else(|| err(abi::ERR_ARG, format!("invalid error code {errorcode}")))?;
        string(s, abi::MAX_ERROR_STRING, resultlen, &text)
    }
}

mpi_fn! {
    /// The class of an error code: every code dos itself returns is a
    /// class; an added code belongs to the class it was added to.
    fn MPI_Error_class / PMPI_Error_class(errorcode: c_int, errorclass: *mut c_int) on abi::COMM_WORLD => {
        let c = crate::error::class_of(errorcode)
            .ok_or_else(|| err(abi::ERR_ARG, format!("invalid error code {errorcode}")))?;
        out(errorclass, c, "errorclass")
    }
}

mpi_fn! {
    /// An error handler for communicators calling `function(&comm, &code)`.
    fn MPI_Comm_create_errhandler / PMPI_Comm_create_errhandler(function: Option<crate::error::HandlerFn>, errhandler: *mut Handle) on abi::COMM_WORLD => {
        if errhandler.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for errhandler"));
        }
        let f = function.map_or(0, |f| f as usize);
        let h = crate::error::create_errhandler(HandlerKind::Comm, f)?;
        out(errhandler, h, "errhandler")
    }
}

mpi_fn! {
    /// A new error class (above `MPI_ERR_LASTCODE`; `MPI_LASTUSEDCODE` follows).
    fn MPI_Add_error_class / PMPI_Add_error_class(errorclass: *mut c_int) on abi::COMM_WORLD => {
        if errorclass.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for errorclass"));
        }
        out(errorclass, crate::error::add_class(), "errorclass")
    }
}

mpi_fn! {
    /// A new error code of `errorclass`.
    fn MPI_Add_error_code / PMPI_Add_error_code(errorclass: c_int, errorcode: *mut c_int) on abi::COMM_WORLD => {
        if errorcode.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for errorcode"));
        }
        out(errorcode, crate::error::add_code(errorclass)?, "errorcode")
    }
}

mpi_fn! {
    /// The string of an added code or class (`MPI_Error_string` gives it).
    fn MPI_Add_error_string / PMPI_Add_error_string(errorcode: c_int, s: *const c_char) on abi::COMM_WORLD => {
        if s.is_null() {
            return Err(err(abi::ERR_ARG, "null string"));
        }
        let text = std::ffi::CStr::from_ptr(s).to_string_lossy().into_owned();
        if text.len() >= abi::MAX_ERROR_STRING {
            return Err(err(abi::ERR_ARG, "string longer than MPI_MAX_ERROR_STRING"));
        }
        if class_string(errorcode).is_some() {
            return Err(err(abi::ERR_ARG, "the string of a predefined class cannot change"));
        }
        crate::error::add_string(errorcode, text)
    }
}

// The MPI-1 names of the communicator error handler functions (removed
// from the standard in MPI-3.0; MPICH's tests still call them).

mpi_fn! {
    /// `MPI_Comm_create_errhandler` under its MPI-1 name.
    fn MPI_Errhandler_create / PMPI_Errhandler_create(function: Option<crate::error::HandlerFn>, errhandler: *mut Handle) on abi::COMM_WORLD => {
        if errhandler.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for errhandler"));
        }
        let f = function.map_or(0, |f| f as usize);
        let h = crate::error::create_errhandler(HandlerKind::Comm, f)?;
        out(errhandler, h, "errhandler")
    }
}

mpi_fn! {
    /// `MPI_Comm_set_errhandler` under its MPI-1 name.
    fn MPI_Errhandler_set / PMPI_Errhandler_set(comm: Handle, errhandler: Handle) on comm => {
        check_errhandler(errhandler)?;
        state::with(|st| match st.comms.get_mut(&comm) {
            Some(e) => {
                e.errhandler = errhandler;
                Ok(())
            }
            None => Err(state::bad_comm(comm)),
        })
    }
}

mpi_fn! {
    /// `MPI_Comm_get_errhandler` under its MPI-1 name.
    fn MPI_Errhandler_get / PMPI_Errhandler_get(comm: Handle, errhandler: *mut Handle) on comm => {
        let e = state::with(|st| match st.comms.get(&comm) {
            Some(e) => Ok(e.errhandler),
            None => Err(state::bad_comm(comm)),
        })?;
        out(errhandler, e, "errhandler")
    }
}

mpi_fn! {
    /// Removes an added error class (it must have no codes left).
    fn MPI_Remove_error_class / PMPI_Remove_error_class(errorclass: c_int) on abi::COMM_WORLD => {
        crate::error::remove_added(errorclass, true)
    }
}

mpi_fn! {
    /// Removes an added error code.
    fn MPI_Remove_error_code / PMPI_Remove_error_code(errorcode: c_int) on abi::COMM_WORLD => {
        crate::error::remove_added(errorcode, false)
    }
}

mpi_fn! {
    /// Removes the string of an added code or class.
    fn MPI_Remove_error_string / PMPI_Remove_error_string(errorcode: c_int) on abi::COMM_WORLD => {
        crate::error::remove_string(errorcode)
    }
}

mpi_fn! {
    /// `MPI_Comm_dup`; the info hints are not used by dos.
    fn MPI_Comm_dup_with_info / PMPI_Comm_dup_with_info(comm: Handle, info: Handle, newcomm: *mut Handle) on comm => {
        let _ = info;
        let rc = PMPI_Comm_dup(comm, newcomm);
        if rc == abi::SUCCESS { Ok(()) } else { Err(err(rc, "MPI_Comm_dup failed")) }
    }
}

mpi_fn! {
    /// Accepted; dos uses no communicator hints.
    fn MPI_Comm_set_info / PMPI_Comm_set_info(comm: Handle, info: Handle) on comm => {
        let _ = info;
        state::comm(comm).map(|_| ())
    }
}

mpi_fn! {
    /// The hints in use: none (a new, empty info object).
    fn MPI_Comm_get_info / PMPI_Comm_get_info(comm: Handle, info_used: *mut Handle) on comm => {
        state::comm(comm)?;
        let rc = crate::info::PMPI_Info_create(info_used);
        if rc == abi::SUCCESS { Ok(()) } else { Err(err(rc, "MPI_Info_create failed")) }
    }
}
