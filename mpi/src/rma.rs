//! One-sided communication (`MPI_Win_*`, `MPI_Put`, `MPI_Get`, the
//! accumulates and their request-based forms) on dos's windows
//! ([`dos::rma`]).
//!
//! An MPI window is a `dos::rma::Window<u8>`: runtime-allocated memory
//! (`Win_allocate`, `Win_allocate_shared`: ranks of one node map each
//! other's parts, so their operations on each other are plain copies and
//! atomics) or the caller's memory (`Win_create`: reached through dos's
//! active messages). Displacements are scaled by the target's `disp_unit`
//! here and checked against the target's size before anything is sent
//! (`MPI_ERR_RMA_RANGE`). A derived datatype on the origin side is packed
//! (or unpacked) here; one on the target side is cut into its contiguous
//! runs, each one dos operation. Accumulates go through
//! [`dos::rma::raw`]: the operation and the basic type as codes, applied at
//! the target under the window's accumulate lock, so every accumulate,
//! fetching or not, with the same basic type is atomic per element.
//!
//! Each rank keeps the epochs it opened (fence, start, lock, lock_all) and
//! refuses communication outside them, an unlock without a lock, a flush
//! outside a passive-target epoch and the like with `MPI_ERR_RMA_SYNC`.
//! Errors go to the window's error handler (`MPI_Win_set_errhandler`;
//! `MPI_ERRORS_ARE_FATAL` by default, as the standard says).

use std::ffi::{c_char, c_int, c_void};
use std::sync::Arc;

use dos::rma::{raw, LockKind, Window};

use crate::abi::{
    self, Handle, ERR_ASSERT, ERR_DISP, ERR_INFO, ERR_LOCKTYPE, ERR_RMA_ATTACH, ERR_RMA_FLAVOR,
    ERR_RMA_RANGE, ERR_RMA_SHARED, ERR_RMA_SYNC, ERR_SIZE, ERR_WIN,
};
use crate::datatype::{self, Elem, Layout};
use crate::dtype::Type;
use crate::error::{err, Error, R};
use crate::ptr::out;
use crate::state::{self, Local, Table};

/// `MPI_WIN_NULL`.
pub(crate) const WIN_NULL: Handle = 0x110;
/// The first handle of a window.
const WIN_BASE: Handle = 0x0900_0000;

pub(crate) const LOCK_SHARED: c_int = 302;
pub(crate) const LOCK_EXCLUSIVE: c_int = 301;
const WIN_UNIFIED: c_int = 321;
const FLAVOR_ALLOCATE: c_int = 312;
const FLAVOR_CREATE: c_int = 311;
const FLAVOR_DYNAMIC: c_int = 313;
const FLAVOR_SHARED: c_int = 314;
const WIN_BASE_KEY: c_int = 601;
const WIN_DISP_UNIT_KEY: c_int = 602;
const WIN_SIZE_KEY: c_int = 603;
const WIN_CREATE_FLAVOR_KEY: c_int = 604;
const WIN_MODEL_KEY: c_int = 605;
const MODE_NOSUCCEED: c_int = 16384;
const MODE_ALL: c_int = 1024 | 2048 | 4096 | 8192 | 16384;

/// Attribute values, boxed so that `Win_get_attr` can hand out pointers.
struct Attrs {
    size: isize,
    disp_unit: c_int,
    flavor: c_int,
    model: c_int,
}

/// The epochs this rank has open on a window.
#[derive(Default)]
struct Epochs {
    /// A fence opened an active-target epoch (until one with `NOSUCCEED`).
    fence: bool,
    /// The targets of `Win_start`, until `Win_complete`.
    access: Option<Vec<usize>>,
    /// `Win_post` was called, until `Win_wait` (or a true `Win_test`).
    exposed: bool,
    /// Targets locked with `Win_lock`.
    locks: Vec<bool>,
    lock_all: bool,
}

/// A window and what MPI says of it.
pub(crate) struct Win {
    win: Window<'static, u8>,
    comm: dos::Comm,
    base: *mut u8,
    attrs: Box<Attrs>,
    /// Every rank's displacement unit.
    units: Vec<usize>,
    /// Every rank's size in bytes (the range checks need no call into dos).
    sizes: Vec<usize>,
    errhandler: Handle,
    name: String,
    info: crate::info::Info,
    epochs: Epochs,
    /// A dynamic window: every rank's key of its attached memory ([`dynamic`]).
    dyn_keys: Option<Vec<u64>>,
    /// A shared window (`Win_allocate_shared`): every rank's part lies in
    /// rank 0's at these offsets, one after the other, as the standard's
    /// default (contiguous) layout wants.
    shared: Option<Vec<usize>>,
}

/// The windows (reached only on MPI's thread, as the state).
static WINS: Local<Table<Win>> = Local::new(Table::empty(WIN_BASE));

/// Runs `f` on window `h`.
#[inline]
/// `MPI_ERR_WIN` unless `h` is a live window (for the attribute calls of
/// [`crate::attr`]).
pub(crate) fn check(h: Handle) -> R<()> {
    with(h, |_| Ok(()))
}

fn with<T>(h: Handle, f: impl FnOnce(&mut Win) -> R<T>) -> R<T> {
    // The table is this thread's and emptied at MPI_Finalize: a window found
    // means MPI is running on this thread.
    match WINS.with(|t| t.get_mut(&h).map(f)) {
        Some(Some(r)) => r,
        Some(None) => Err(no_window(h)),
        None if state::on_mpi_thread() => Err(err(abi::ERR_OTHER, "MPI called from inside MPI")),
        None => Err(no_window(h)),
    }
}

/// The error for handle `h`, which names no window of this thread.
#[cold]
fn no_window(h: Handle) -> Error {
    // Not running (or another thread) says so first.
    if let Err(e) = state::with(|_| Ok(())) {
        return e;
    }
    if h == WIN_NULL {
        err(ERR_WIN, "MPI_WIN_NULL is not a window")
    } else {
        err(ERR_WIN, format!("invalid window handle {h:#x}"))
    }
}

/// The error handler of window `h`, if it is one.
fn errhandler_of(h: Handle) -> Option<Handle> {
    WINS.with(|t| t.get(&h).map(|w| w.errhandler)).flatten()
}

/// Invokes the error handler of window `win` on `e` (that of
/// `MPI_COMM_WORLD` if `win` is not a window); returns the class.
pub(crate) fn raise(func: &str, win: Handle, e: Error) -> c_int {
    match errhandler_of(win) {
        Some(abi::ERRORS_RETURN) => e.class,
        Some(h) if crate::error::user_errhandler(h).is_some() => {
            // The program's (MPI_Win_create_errhandler), called with the
            // window and the code; if it returns, so does the function.
            let (_, f) =
                crate::error::user_errhandler(h).unwrap_or((crate::error::HandlerKind::Win, 0));
            crate::error::call_user(f, win, e.class)
        }
        Some(_) => fatal(func, &e),
        None => crate::error::raise(func, abi::COMM_WORLD, e),
    }
}

/// Ends the job for an error under a fatal window error handler.
fn fatal(func: &str, e: &Error) -> ! {
    let rank = state::world_rank().map_or_else(|| "a rank".into(), |r| format!("rank {r}"));
    let name = crate::error::class_string(e.class).unwrap_or("unknown error class");
    let name = name.split(':').next().unwrap_or(name);
    eprintln!("dos-mpi: {rank}: {func}: {name}: {}", e.msg);
    eprintln!(
        "dos-mpi: {rank}: the window's error handler is MPI_ERRORS_ARE_FATAL: aborting the job"
    );
    state::abort(e.class.max(1), &format!("{func}: {name}"))
}

/// Drops the windows the program did not free (at `MPI_Finalize`, before
/// dos leaves the job).
pub(crate) fn forget_all() {
    WINS.with(|t| t.drain().for_each(drop));
}

/// Defines `PMPI_X`, whose errors go to the handler of the window given
/// after `on`, and `MPI_X` forwarding to it.
///
/// With `fast { .. }` before the body: an expression of type
/// `Option<dos::Result<()>>` tried first, outside the wrapper that turns a
/// panic into `MPI_ERR_INTERN` (the wrapper's result plumbing is some 40-70
/// instructions, as much as dos's own put): `Some` if it did the call (its
/// outcome, an error going to the window's handler), `None` to run the body.
/// It must only take paths that cannot panic on any input: a panic there
/// would abort the process (it cannot unwind out of `extern "C"`), which
/// `dosrun` reports as a failed rank.
macro_rules! win_fn {
    (
        $(#[doc = $doc:literal])*
        fn $mpi:ident / $pmpi:ident ( $($a:ident : $t:ty),* $(,)? ) on $win:expr, fast $fast:block => $body:block
    ) => {
        win_fn! {
            $(#[doc = $doc])*
            fn $mpi / $pmpi ( $($a : $t),* ) on $win => $body
            @fast $fast
        }
    };
    (
        $(#[doc = $doc:literal])*
        fn $mpi:ident / $pmpi:ident ( $($a:ident : $t:ty),* $(,)? ) on $win:expr => $body:block
    ) => {
        win_fn! {
            $(#[doc = $doc])*
            fn $mpi / $pmpi ( $($a : $t),* ) on $win => $body
            @fast { None::<dos::Result<()>> }
        }
    };
    (
        $(#[doc = $doc:literal])*
        fn $mpi:ident / $pmpi:ident ( $($a:ident : $t:ty),* $(,)? ) on $win:expr => $body:block
        @fast $fast:block
    ) => {
        $(#[doc = $doc])*
        ///
        /// # Safety
        /// Every pointer argument valid as the MPI standard requires of it.
        #[no_mangle]
        pub unsafe extern "C" fn $pmpi($($a: $t),*) -> ::std::ffi::c_int {
            // SAFETY: the expression reads only arguments that the caller
            // vouches for (this function's contract).
            let win_for_errors: Handle = unsafe { $win };
            // SAFETY: as the body's (this function's contract).
            #[allow(unused_unsafe)]
            let quick: Option<dos::Result<()>> = unsafe { $fast };
            match quick {
                Some(Ok(())) => return abi::SUCCESS,
                Some(Err(e)) => return raise(stringify!($mpi), win_for_errors, derr(e)),
                None => {}
            }
            let mut failed: Option<Error> = None;
            let code = crate::error::finish(stringify!($mpi), abi::COMM_WORLD, || {
                // The body in a closure of its own: its `?` must end the
                // body with the error (for the window's handler), not this
                // closure (which would give it to MPI_COMM_WORLD's).
                #[allow(clippy::redundant_closure_call)]
                let r: R<()> = (|| {
                    // SAFETY: the pointers are the C caller's, valid as the
                    // MPI standard requires of them (this function's contract).
                    unsafe { $body }
                })();
                if let Err(e) = r {
                    failed = Some(e);
                }
                Ok(())
            });
            match failed {
                Some(e) => raise(stringify!($mpi), win_for_errors, e),
                None => code,
            }
        }

        #[doc = concat!("`", stringify!($mpi), "`: forwards to [`", stringify!($pmpi), "`] (the profiling interface).")]
        ///
        /// # Safety
        /// As for the profiling entry point.
        #[no_mangle]
        pub unsafe extern "C" fn $mpi($($a: $t),*) -> ::std::ffi::c_int {
            // SAFETY: the same contract as the profiling entry point's.
            unsafe { $pmpi($($a),*) }
        }
    };
}

/// A dos error of a one-sided operation as an MPI error.
fn derr(e: dos::Error) -> Error {
    match e {
        dos::Error::RemoteAccess { .. } => err(ERR_RMA_RANGE, e.to_string()),
        e => Error::from(e),
    }
}

fn size_arg(size: isize) -> R<usize> {
    usize::try_from(size).map_err(|_| err(ERR_SIZE, format!("negative window size {size}")))
}

fn unit_arg(disp_unit: c_int) -> R<usize> {
    match usize::try_from(disp_unit) {
        Ok(u) if u > 0 => Ok(u),
        _ => Err(err(
            ERR_DISP,
            format!("displacement unit {disp_unit} is not positive"),
        )),
    }
}

/// Registers a new window and stores its handle in `out_win`.
/// Lends dos's accumulates the `long double` arithmetic ([`crate::ldouble`]):
/// every process does so before it exposes a window, so a target has it
/// when an origin's accumulate arrives.
fn foreign_arithmetic() {
    // False when done already: the first registration stays.
    let _ = raw::set_foreign(crate::ldouble::combine);
}

#[allow(clippy::too_many_arguments)]
unsafe fn register(
    mut win: Window<'static, u8>,
    comm: dos::Comm,
    base: *mut u8,
    size: usize,
    disp_unit: usize,
    flavor: c_int,
    shared: Option<(Vec<usize>, Vec<usize>)>,
    out_win: *mut Handle,
) -> R<()> {
    foreign_arithmetic();
    let (sizes, shared) = match shared {
        Some((sizes, offsets)) => (sizes, Some(offsets)),
        None => (
            (0..comm.size())
                .map(|r| win.len_of(r))
                .collect::<dos::Result<Vec<usize>>>()
                .map_err(derr)?,
            None,
        ),
    };
    let mut units = vec![0u64; comm.size()];
    comm.allgather(&[disp_unit as u64], &mut units)
        .map_err(derr)?;
    let _ = win.local_mut();
    let w = Win {
        win,
        comm: comm.clone(),
        base,
        attrs: Box::new(Attrs {
            size: size as isize,
            disp_unit: disp_unit as c_int,
            flavor,
            model: WIN_UNIFIED,
        }),
        units: units.iter().map(|&u| u as usize).collect(),
        sizes,
        errhandler: abi::ERRORS_ARE_FATAL,
        name: String::new(),
        info: Vec::new(),
        epochs: Epochs {
            locks: vec![false; comm.size()],
            ..Epochs::default()
        },
        dyn_keys: None,
        shared,
    };
    let h = WINS
        .with(|t| t.insert(w))
        .ok_or_else(|| err(abi::ERR_OTHER, "MPI called from inside MPI"))?;
    // SAFETY: the caller's contract.
    unsafe { out(out_win, h, "win") }
}

unsafe fn allocate(
    size: isize,
    disp_unit: c_int,
    comm: Handle,
    baseptr: *mut c_void,
    win: *mut Handle,
    flavor: c_int,
) -> R<()> {
    let n = size_arg(size)?;
    let du = unit_arg(disp_unit)?;
    if baseptr.is_null() || win.is_null() {
        return Err(err(abi::ERR_ARG, "null pointer for baseptr or win"));
    }
    let c = state::comm(comm)?;
    if flavor == FLAVOR_SHARED {
        // SAFETY: the caller's contract; `baseptr` checked not null above.
        return unsafe { allocate_shared(n, du, c, baseptr, win) };
    }
    let mut w = c.win_allocate::<u8>(n).map_err(derr)?;
    let base = w.local_mut().as_mut_ptr();
    // SAFETY: `baseptr` points to a `void *` (checked not null above).
    unsafe { *(baseptr as *mut *mut u8) = base };
    // SAFETY: the caller's contract.
    unsafe { register(w, c, base, n, du, flavor, None, win) }
}

/// `Win_allocate_shared`: rank 0 of `c` allocates every rank's part, one
/// after the other (the contiguous layout the standard makes the default;
/// MPICH's tests index across parts from the first rank's base); the
/// others' dos parts are empty and the operations on rank `r` go to rank
/// 0's part at `r`'s offset ([`target`]). Locks and epochs stay per rank.
///
/// # Safety
/// `baseptr` (not null) points to a `void *`; `win` to a handle.
unsafe fn allocate_shared(
    n: usize,
    du: usize,
    c: dos::Comm,
    baseptr: *mut c_void,
    win: *mut Handle,
) -> R<()> {
    let mut all = vec![0u64; c.size()];
    c.allgather(&[n as u64], &mut all).map_err(derr)?;
    let sizes: Vec<usize> = all.iter().map(|&x| x as usize).collect();
    let mut offsets = Vec::with_capacity(sizes.len());
    let mut total = 0usize;
    for &s in &sizes {
        offsets.push(total);
        total = total
            .checked_add(s)
            .ok_or_else(|| err(ERR_SIZE, "the parts' sizes overflow"))?;
    }
    let mine = if c.rank() == 0 { total } else { 0 };
    let mut w = c.win_allocate::<u8>(mine).map_err(derr)?;
    // Every rank must map rank 0's part: the ranks share one node.
    let seg = match w.node_part_mut(0).map_err(derr)? {
        Some(p) => p.as_mut_ptr(),
        None if total == 0 => std::ptr::null_mut(),
        None => {
            return Err(err(
                ERR_RMA_SHARED,
                "rank 0 of the communicator is on another node",
            ))
        }
    };
    let base = if n == 0 {
        std::ptr::null_mut()
    } else {
        seg.wrapping_add(offsets[c.rank()])
    };
    // SAFETY: `baseptr` points to a `void *` (the caller checked it).
    unsafe { *(baseptr as *mut *mut u8) = base };
    // SAFETY: the caller's contract.
    unsafe {
        register(
            w,
            c,
            base,
            n,
            du,
            FLAVOR_SHARED,
            Some((sizes, offsets)),
            win,
        )
    }
}

mpi_fn! {
    /// Creates a window over the caller's memory (collective).
    fn MPI_Win_create / PMPI_Win_create(base: *mut c_void, size: isize, disp_unit: c_int, info: Handle, comm: Handle, win: *mut Handle) on comm => {
        crate::inter::deny(comm)?;
        let _ = info;
        let n = size_arg(size)?;
        let du = unit_arg(disp_unit)?;
        if win.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for win"));
        }
        if base.is_null() && n > 0 {
            return Err(err(abi::ERR_BUFFER, "null base with a nonzero size"));
        }
        let c = state::comm(comm)?;
        let buf: &'static mut [u8] = if n == 0 {
            &mut []
        } else {
            // SAFETY: the standard requires the memory to stay valid until
            // MPI_Win_free; the window is its only user meanwhile.
            unsafe { std::slice::from_raw_parts_mut(base as *mut u8, n) }
        };
        let w = c.win_create(buf).map_err(derr)?;
        register(w, c, base as *mut u8, n, du, FLAVOR_CREATE, None, win)
    }
}

mpi_fn! {
    /// Creates a window over memory the library allocates (collective).
    fn MPI_Win_allocate / PMPI_Win_allocate(size: isize, disp_unit: c_int, info: Handle, comm: Handle, baseptr: *mut c_void, win: *mut Handle) on comm => {
        crate::inter::deny(comm)?;
        let _ = info;
        allocate(size, disp_unit, comm, baseptr, win, FLAVOR_ALLOCATE)
    }
}

mpi_fn! {
    /// Creates a window whose memory every rank of the (one-node)
    /// communicator reaches with loads and stores (collective).
    fn MPI_Win_allocate_shared / PMPI_Win_allocate_shared(size: isize, disp_unit: c_int, info: Handle, comm: Handle, baseptr: *mut c_void, win: *mut Handle) on comm => {
        crate::inter::deny(comm)?;
        let _ = info;
        allocate(size, disp_unit, comm, baseptr, win, FLAVOR_SHARED)
    }
}

win_fn! {
    /// The size, displacement unit and address (here) of `rank`'s part of a
    /// shared window; `MPI_PROC_NULL`: the first part that is not empty.
    fn MPI_Win_shared_query / PMPI_Win_shared_query(win: Handle, rank: c_int, size: *mut isize, disp_unit: *mut c_int, baseptr: *mut c_void) on win => {
        if baseptr.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for baseptr"));
        }
        let (n, du, p) = with(win, |w| {
            if w.dyn_keys.is_some() {
                // MPI-4.1: erroneous on a dynamic window.
                return Err(err(ERR_RMA_FLAVOR, "Win_shared_query on a dynamic window"));
            }
            let np = w.comm.size();
            let r = if rank == abi::PROC_NULL {
                (0..np).find(|&r| w.sizes[r] > 0).unwrap_or(0)
            } else {
                check_rank(rank, np)?
            };
            let (n, du) = (w.sizes[r], w.units[r]);
            // MPI-4.1: any flavor; memory not reachable with loads and
            // stores here is size 0 and a null base.
            let p = if n == 0 {
                None
            } else if let Some(offsets) = &w.shared {
                w.win.node_part_mut(0).map_err(derr)?.map(|s| s.as_mut_ptr().wrapping_add(offsets[r]))
            } else if w.attrs.flavor == FLAVOR_CREATE {
                (r == w.comm.rank()).then_some(w.base)
            } else {
                w.win.node_part_mut(r).map_err(derr)?.map(|s| s.as_mut_ptr())
            };
            Ok(match p {
                Some(p) => (n, du, p),
                None => (0, du, std::ptr::null_mut()),
            })
        })?;
        out(size, n as isize, "size")?;
        out(disp_unit, du as c_int, "disp_unit")?;
        *(baseptr as *mut *mut u8) = p;
        Ok(())
    }
}

win_fn! {
    /// Frees a window (collective): every rank's operations complete first.
    fn MPI_Win_free / PMPI_Win_free(win: *mut Handle) on handle_at(win) => {
        if win.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for win"));
        }
        let h = *win;
        with(h, |w| {
            if w.epochs.lock_all || w.epochs.locks.iter().any(|&l| l) || w.epochs.access.is_some() {
                return Err(err(ERR_RMA_SYNC, "MPI_Win_free inside an access epoch"));
            }
            Ok(())
        })?;
        // The program's attributes go first (their delete callbacks see the window).
        crate::attr::delete_all(crate::attr::Kind::Win, h)?;
        let w = WINS
        .with(|t| t.remove(&h))
        .flatten()
        .ok_or_else(|| err(ERR_WIN, format!("invalid window handle {h:#x}")))?;
        *win = WIN_NULL;
        let key = w.dyn_keys.as_ref().map(|k| k[w.comm.rank()]);
        let r = w.win.free().map_err(derr);
        if let Some(k) = key {
            dynamic::forget(k);
        }
        r
    }
}

/// The handle `p` points to (`MPI_WIN_NULL` for a null pointer).
///
/// # Safety
/// `p` null or valid for a read.
unsafe fn handle_at(p: *const Handle) -> Handle {
    if p.is_null() {
        WIN_NULL
    } else {
        // SAFETY: the caller's contract.
        unsafe { *p }
    }
}

fn check_rank(rank: c_int, size: usize) -> R<usize> {
    match usize::try_from(rank) {
        Ok(r) if r < size => Ok(r),
        _ => Err(err(
            abi::ERR_RANK,
            format!("rank {rank} is not in the window's group of {size}"),
        )),
    }
}

fn check_assert(assert: c_int) -> R<()> {
    if assert & !MODE_ALL != 0 {
        return Err(err(ERR_ASSERT, format!("invalid assertion {assert:#x}")));
    }
    Ok(())
}

win_fn! {
    /// Ends and opens an active-target epoch (collective).
    fn MPI_Win_fence / PMPI_Win_fence(assert: c_int, win: Handle) on win => {
        check_assert(assert)?;
        with(win, |w| {
            if w.epochs.access.is_some() || w.epochs.exposed || w.epochs.lock_all || w.epochs.locks.iter().any(|&l| l) {
                return Err(err(ERR_RMA_SYNC, "MPI_Win_fence inside a post/start or lock epoch"));
            }
            w.win.fence().map_err(derr)?;
            w.epochs.fence = assert & MODE_NOSUCCEED == 0;
            Ok(())
        })
    }
}

/// The ranks of group `g` in the window's communicator.
fn group_ranks(g: Handle, comm: &dos::Comm) -> R<Vec<usize>> {
    let grp = state::with(|st| {
        st.groups
            .get(&g)
            .cloned()
            .ok_or_else(|| err(abi::ERR_GROUP, format!("invalid group handle {g:#x}")))
    })?;
    let mine: Vec<usize> = (0..grp.size()).collect();
    let t = grp.translate_ranks(&mine, &comm.group())?;
    t.into_iter()
        .map(|r| r.ok_or_else(|| err(abi::ERR_GROUP, "a rank of the group is not in the window")))
        .collect()
}

win_fn! {
    /// Opens an exposure epoch for the ranks of `group`.
    fn MPI_Win_post / PMPI_Win_post(group: Handle, assert: c_int, win: Handle) on win => {
        check_assert(assert)?;
        with(win, |w| {
            if w.epochs.exposed {
                return Err(err(ERR_RMA_SYNC, "MPI_Win_post while an exposure epoch is open"));
            }
            let ranks = group_ranks(group, &w.comm)?;
            w.win.post(&ranks).map_err(derr)?;
            w.epochs.exposed = true;
            Ok(())
        })
    }
}

win_fn! {
    /// Opens an access epoch to the ranks of `group`.
    fn MPI_Win_start / PMPI_Win_start(group: Handle, assert: c_int, win: Handle) on win => {
        check_assert(assert)?;
        with(win, |w| {
            if w.epochs.access.is_some() || w.epochs.lock_all || w.epochs.locks.iter().any(|&l| l) {
                return Err(err(ERR_RMA_SYNC, "MPI_Win_start inside another access epoch"));
            }
            let ranks = group_ranks(group, &w.comm)?;
            w.win.start(&ranks).map_err(derr)?;
            w.epochs.access = Some(ranks);
            w.epochs.fence = false;
            Ok(())
        })
    }
}

win_fn! {
    /// Ends the access epoch of `Win_start`.
    fn MPI_Win_complete / PMPI_Win_complete(win: Handle) on win => {
        with(win, |w| {
            if w.epochs.access.is_none() {
                return Err(err(ERR_RMA_SYNC, "MPI_Win_complete without MPI_Win_start"));
            }
            w.epochs.access = None;
            w.win.complete().map_err(derr)
        })
    }
}

win_fn! {
    /// Ends the exposure epoch of `Win_post`.
    fn MPI_Win_wait / PMPI_Win_wait(win: Handle) on win => {
        with(win, |w| {
            if !w.epochs.exposed {
                return Err(err(ERR_RMA_SYNC, "MPI_Win_wait without MPI_Win_post"));
            }
            w.epochs.exposed = false;
            w.win.wait().map_err(derr)
        })
    }
}

win_fn! {
    /// `Win_wait` without blocking: `flag` true if the epoch ended.
    fn MPI_Win_test / PMPI_Win_test(win: Handle, flag: *mut c_int) on win => {
        let done = with(win, |w| {
            if !w.epochs.exposed {
                return Err(err(ERR_RMA_SYNC, "MPI_Win_test without MPI_Win_post"));
            }
            let d = w.win.test().map_err(derr)?;
            if d {
                w.epochs.exposed = false;
            }
            Ok(d)
        })?;
        out(flag, done as c_int, "flag")
    }
}

win_fn! {
    /// Takes the passive-target lock of `rank`.
    fn MPI_Win_lock / PMPI_Win_lock(lock_type: c_int, rank: c_int, assert: c_int, win: Handle) on win => {
        check_assert(assert)?;
        let kind = match lock_type {
            LOCK_SHARED => LockKind::Shared,
            LOCK_EXCLUSIVE => LockKind::Exclusive,
            _ => return Err(err(ERR_LOCKTYPE, format!("invalid lock type {lock_type}"))),
        };
        with(win, |w| {
            if rank == abi::PROC_NULL {
                return Ok(());
            }
            let r = check_rank(rank, w.comm.size())?;
            if w.epochs.locks[r] || w.epochs.lock_all || w.epochs.access.is_some() {
                return Err(err(ERR_RMA_SYNC, format!("rank {r} is locked already or an access epoch is open")));
            }
            w.win.lock(r, kind).map_err(derr)?;
            w.epochs.locks[r] = true;
            Ok(())
        })
    }
}

win_fn! {
    /// Completes the operations to `rank` and releases its lock.
    fn MPI_Win_unlock / PMPI_Win_unlock(rank: c_int, win: Handle) on win => {
        with(win, |w| {
            if rank == abi::PROC_NULL {
                return Ok(());
            }
            let r = check_rank(rank, w.comm.size())?;
            if !w.epochs.locks[r] {
                return Err(err(ERR_RMA_SYNC, format!("rank {r} is not locked")));
            }
            w.epochs.locks[r] = false;
            w.win.unlock(r).map_err(derr)
        })
    }
}

win_fn! {
    /// Takes a shared lock of every rank.
    fn MPI_Win_lock_all / PMPI_Win_lock_all(assert: c_int, win: Handle) on win => {
        check_assert(assert)?;
        with(win, |w| {
            if w.epochs.lock_all || w.epochs.locks.iter().any(|&l| l) || w.epochs.access.is_some() {
                return Err(err(ERR_RMA_SYNC, "MPI_Win_lock_all inside another access epoch"));
            }
            w.win.lock_all().map_err(derr)?;
            w.epochs.lock_all = true;
            Ok(())
        })
    }
}

win_fn! {
    /// Completes every operation and releases the locks of `Win_lock_all`.
    fn MPI_Win_unlock_all / PMPI_Win_unlock_all(win: Handle) on win => {
        with(win, |w| {
            if !w.epochs.lock_all {
                return Err(err(ERR_RMA_SYNC, "MPI_Win_unlock_all without MPI_Win_lock_all"));
            }
            w.epochs.lock_all = false;
            w.win.unlock_all().map_err(derr)
        })
    }
}

/// `MPI_Win_flush` of a locked target straight to dos's [`Window::flush`],
/// its result; `None` if the target is not locked, not a rank, or the
/// window not valid (the general path then reports what is wrong).
#[inline]
fn flush_fast(win: Handle, rank: c_int) -> Option<dos::Result<()>> {
    let r = usize::try_from(rank).ok()?;
    WINS.with(|t| {
        let w = t.get_mut(&win)?;
        (w.epochs.lock_all || *w.epochs.locks.get(r)?).then(|| w.win.flush(r))
    })
    .flatten()
}

/// Flushes `rank` (`None`: all) inside a passive-target epoch.
fn flush(win: Handle, rank: Option<c_int>) -> R<()> {
    if let Some(x) = rank.and_then(|r| flush_fast(win, r)) {
        return x.map_err(derr);
    }
    with(win, |w| match rank {
        Some(r) if r == abi::PROC_NULL => Ok(()),
        Some(r) => {
            let r = check_rank(r, w.comm.size())?;
            if !w.epochs.lock_all && !w.epochs.locks[r] {
                return Err(err(
                    ERR_RMA_SYNC,
                    format!("flush of rank {r}, which is not locked"),
                ));
            }
            w.win.flush(r).map_err(derr)
        }
        None => {
            if !w.epochs.lock_all && !w.epochs.locks.iter().any(|&l| l) {
                return Err(err(ERR_RMA_SYNC, "flush outside a passive-target epoch"));
            }
            w.win.flush_all().map_err(derr)
        }
    })
}

win_fn! {
    /// Completes the operations to `rank` at the target.
    fn MPI_Win_flush / PMPI_Win_flush(rank: c_int, win: Handle) on win, fast { flush_fast(win, rank) } => { flush(win, Some(rank)) }
}
win_fn! {
    /// Completes every operation at its target.
    fn MPI_Win_flush_all / PMPI_Win_flush_all(win: Handle) on win => { flush(win, None) }
}
win_fn! {
    /// Completes the operations to `rank` at the origin (here: at the target
    /// too). Every operation of this library is locally complete when its
    /// call returns, so this could check the epoch and return; measured on
    /// MPICH's `large_acc_flush_local` (60 loops, 3 ranks, interleaved), that
    /// is 2x slower in wall time and 4x in system time than this full flush:
    /// origins that do not wait for the target run ahead and spin in their
    /// next flush while the target, on the same cores, works off the queue.
    fn MPI_Win_flush_local / PMPI_Win_flush_local(rank: c_int, win: Handle) on win => { flush(win, Some(rank)) }
}
win_fn! {
    /// Completes every operation at the origin (here: at the target too).
    fn MPI_Win_flush_local_all / PMPI_Win_flush_local_all(win: Handle) on win => { flush(win, None) }
}

win_fn! {
    /// Synchronizes the public and private copies: one memory model here
    /// (unified), so a full memory fence.
    fn MPI_Win_sync / PMPI_Win_sync(win: Handle) on win => {
        with(win, |_| {
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            Ok(())
        })
    }
}

/// The contiguous runs `(offset, len)` of `count` elements of `t`, in order.
fn runs(t: &Type, count: usize) -> Vec<(isize, usize)> {
    let ext = t.extent();
    let mut v: Vec<(isize, usize)> = Vec::new();
    for i in 0..count {
        let base = i as isize * ext;
        for &(o, l) in &t.segs {
            let off = base + o;
            match v.last_mut() {
                Some((lo, ll)) if *lo + *ll as isize == off => *ll += l,
                _ => v.push((off, l)),
            }
        }
    }
    v
}

/// One side of a transfer: how its bytes lie.
enum Side {
    Dense(usize),
    Typed(Arc<Type>, usize, usize),
}

impl Side {
    fn new(count: c_int, dt: Handle) -> R<Side> {
        if dt == abi::DATATYPE_NULL {
            return Err(err(abi::ERR_TYPE, "MPI_DATATYPE_NULL"));
        }
        if datatype::padded(dt) {
            // A padded pair type (MPI_DOUBLE_INT...) moves as whole C
            // structs here: the accumulates combine them as structs.
            return Ok(Side::Dense(datatype::bytes(count, dt)?));
        }
        Ok(match datatype::layout(count, dt)? {
            Layout::Dense(n) => Side::Dense(n),
            Layout::Packed { ty, count, len } => Side::Typed(ty, count, len),
        })
    }

    fn len(&self) -> usize {
        match self {
            Side::Dense(n) => *n,
            Side::Typed(_, _, n) => *n,
        }
    }

    /// True for a null buffer that cannot hold this side's data: one of a
    /// derived type may be `MPI_BOTTOM` (its displacements are addresses).
    fn null_refused(&self, buf: *const u8) -> bool {
        buf.is_null() && matches!(self, Side::Dense(n) if *n > 0)
    }

    /// The data at `buf`, packed.
    unsafe fn pack(&self, buf: *const u8) -> R<std::borrow::Cow<'static, [u8]>> {
        if self.null_refused(buf) {
            return Err(err(abi::ERR_BUFFER, "null buffer with a nonzero count"));
        }
        Ok(match self {
            Side::Dense(0) => std::borrow::Cow::Borrowed(&[]),
            Side::Dense(n) => {
                // SAFETY: the caller's buffer holds the data.
                let s = unsafe { std::slice::from_raw_parts(buf, *n) };
                std::borrow::Cow::Borrowed(s)
            }
            Side::Typed(t, c, n) => {
                let mut v = vec![0u8; *n];
                // SAFETY: as above, over the type's span.
                unsafe { t.pack(buf, *c, &mut v) };
                std::borrow::Cow::Owned(v)
            }
        })
    }

    /// Stores packed `data` at `buf`.
    unsafe fn unpack(&self, data: &[u8], buf: *mut u8) {
        match self {
            // SAFETY: the caller's buffer has room for the data.
            Side::Dense(n) => unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf, *n) },
            // SAFETY: as above, over the type's span.
            Side::Typed(t, c, _) => unsafe { t.unpack(data, buf, *c) },
        }
    }

    /// Runs at the target, relative to the displacement.
    fn runs(&self) -> Runs {
        match self {
            Side::Dense(0) => Runs::One([]),
            Side::Dense(n) => Runs::Dense([(0, *n)]),
            Side::Typed(t, c, _) => Runs::Many(runs(t, *c)),
        }
    }
}

/// The runs of a target datatype; one without allocating for a dense one.
enum Runs {
    One([(isize, usize); 0]),
    Dense([(isize, usize); 1]),
    Many(Vec<(isize, usize)>),
}

impl std::ops::Deref for Runs {
    type Target = [(isize, usize)];
    fn deref(&self) -> &[(isize, usize)] {
        match self {
            Runs::One(r) => r,
            Runs::Dense(r) => r,
            Runs::Many(v) => v,
        }
    }
}

/// The element type code of the basic type of an accumulate and the
/// operation code; `MPI_ERR_OP` for a pair the standard forbids.
fn acc_codes(op: Handle, elem: Option<Elem>) -> R<(u8, u8)> {
    use crate::abi::op as o;
    let opc = match op {
        o::REPLACE => 0,
        o::SUM => 1,
        o::PROD => 2,
        o::MIN => 3,
        o::MAX => 4,
        o::BAND => 5,
        o::BOR => 6,
        o::BXOR => 7,
        o::NO_OP => raw::NO_OP,
        o::LAND => raw::LAND,
        o::LOR => raw::LOR,
        o::LXOR => raw::LXOR,
        o::MINLOC => raw::MINLOC,
        o::MAXLOC => raw::MAXLOC,
        _ => {
            return Err(err(
                abi::ERR_OP,
                format!("{op:#x} is not a predefined operation for accumulate"),
            ))
        }
    };
    if opc == 0 || opc == raw::NO_OP {
        return Ok((opc, raw::BYTES));
    }
    let Some(e) = elem else {
        return Err(err(
            abi::ERR_UNSUPPORTED_OPERATION,
            "an accumulate on a derived datatype built from several basic types (or from padded pairs) supports only MPI_REPLACE and MPI_NO_OP",
        ));
    };
    let ty = match e {
        Elem::I8 => 8,
        Elem::U8 | Elem::Byte | Elem::Bool => 7,
        Elem::I16 => 9,
        Elem::U16 => 10,
        Elem::I32 | Elem::Logical => 1,
        Elem::U32 => 2,
        Elem::I64 => 3,
        Elem::U64 => 4,
        Elem::F32 => 5,
        Elem::F64 => 6,
        Elem::ComplexF32 => raw::COMPLEX_F32,
        Elem::ComplexF64 => raw::COMPLEX_F64,
        Elem::FloatInt => raw::FLOAT_INT,
        Elem::DoubleInt => raw::DOUBLE_INT,
        Elem::LongInt => raw::LONG_INT,
        Elem::TwoInt => raw::TWO_INT,
        Elem::ShortInt => raw::SHORT_INT,
        Elem::TwoReal => raw::TWO_F32,
        Elem::TwoDouble => raw::TWO_F64,
        Elem::LongDouble if crate::ldouble::supported() => raw::LONG_DOUBLE,
        Elem::ComplexLongDouble if crate::ldouble::supported() => raw::COMPLEX_LONG_DOUBLE,
        Elem::LongDoubleInt if crate::ldouble::supported() => raw::LONG_DOUBLE_INT,
        _ => {
            return Err(err(
                abi::ERR_UNSUPPORTED_OPERATION,
                format!("{e:?} elements in one-sided accumulates are not supported yet"),
            ))
        }
    };
    let logical = matches!(opc, raw::LAND | raw::LOR | raw::LXOR);
    let bitwise = matches!(opc, 5..=7);
    let loc = matches!(opc, raw::MINLOC | raw::MAXLOC);
    let ok = match e {
        Elem::Byte => bitwise,
        Elem::Bool | Elem::Logical => logical,
        Elem::F32 | Elem::F64 | Elem::LongDouble => opc <= 4,
        Elem::ComplexF32 | Elem::ComplexF64 | Elem::ComplexLongDouble => opc == 1 || opc == 2,
        Elem::FloatInt
        | Elem::DoubleInt
        | Elem::LongInt
        | Elem::TwoInt
        | Elem::ShortInt
        | Elem::TwoReal
        | Elem::TwoDouble
        | Elem::LongDoubleInt => loc,
        _ => !loc,
    };
    if !ok || !raw::supported(opc, ty) {
        return Err(err(
            abi::ERR_OP,
            format!("operation {op:#x} is not defined on {e:?}"),
        ));
    }
    Ok((opc, ty))
}

/// The basic element of a predefined datatype, or of a derived one whose
/// basic elements are all of one predefined type (not a padded pair: its
/// derived types carry the pair's value and index as separate pieces).
fn elem_of(dt: Handle) -> Option<Elem> {
    if let Some(p) = datatype::predefined(dt) {
        return Some(p.elem);
    }
    let base = datatype::ty(dt).ok()?.base?;
    if datatype::padded(base) {
        return None;
    }
    datatype::predefined(base).map(|p| p.elem)
}

/// Checks target `rank`, the displacement and that `runs` lie inside its
/// part; the byte offset of the displacement. `None` for `MPI_PROC_NULL`.
fn target(
    w: &Win,
    rank: c_int,
    disp: isize,
    runs: &[(isize, usize)],
    what: &str,
) -> R<Option<(usize, usize)>> {
    if rank == abi::PROC_NULL {
        return Ok(None);
    }
    let r = check_rank(rank, w.comm.size())?;
    let e = &w.epochs;
    let open =
        e.fence || e.lock_all || e.locks[r] || e.access.as_ref().is_some_and(|a| a.contains(&r));
    if !open {
        return Err(err(
            ERR_RMA_SYNC,
            format!("{what} to rank {r} outside an epoch that reaches it"),
        ));
    }
    if disp < 0 {
        return Err(err(ERR_DISP, format!("negative displacement {disp}")));
    }
    if w.dyn_keys.is_some() {
        // Absolute addresses: the target checks them against what it attached.
        return Ok(Some((r, disp as usize)));
    }
    let len = w.sizes[r];
    let base = (disp as usize)
        .checked_mul(w.units[r])
        .ok_or_else(|| err(ERR_DISP, format!("displacement {disp} overflows")))?;
    for &(o, l) in runs {
        let lo = (base as isize).checked_add(o);
        let ok = lo
            .is_some_and(|lo| lo >= 0 && (lo as usize).checked_add(l).is_some_and(|hi| hi <= len));
        if !ok {
            return Err(err(
                ERR_RMA_RANGE,
                format!(
                    "{what}: bytes {}..+{l} are outside rank {r}'s window of {len} bytes",
                    base as isize + o
                ),
            ));
        }
    }
    if let Some(offsets) = &w.shared {
        // Rank r's part is in rank 0's ([`allocate_shared`]).
        return Ok(Some((0, offsets[r] + base)));
    }
    Ok(Some((r, base)))
}

fn mismatch(a: usize, b: usize) -> Error {
    err(
        abi::ERR_TYPE,
        format!("origin has {a} bytes of data, target {b}: the type signatures differ"),
    )
}

/// `MPI_Put` of `count` elements of predefined type `dt` on both sides to a
/// window of memory mapped from its target (`Win_allocate`, `_shared`)
/// inside an epoch that reaches `rank`, within the target's part: straight
/// to dos's [`Window::put`], its result. `None` if any of that does not hold
/// (the general path then checks again and reports what is wrong).
///
/// # Safety
/// `origin` (not null) valid for `count` elements of `dt`.
#[inline]
unsafe fn put_fast(
    origin: *const c_void,
    count: c_int,
    dt: Handle,
    rank: c_int,
    disp: isize,
    win: Handle,
) -> Option<dos::Result<()>> {
    let size = datatype::predefined(dt)?.size;
    let n = (count as usize).checked_mul(size)?;
    let r = usize::try_from(rank).ok()?;
    let disp = usize::try_from(disp).ok()?;
    WINS.with(|t| {
        let w = t.get_mut(&win)?;
        let e = &w.epochs;
        let open = *e.locks.get(r)? || e.lock_all || e.fence;
        if w.dyn_keys.is_some() || w.shared.is_some() || !open {
            return None;
        }
        let at = disp.checked_mul(*w.units.get(r)?)?;
        if at.checked_add(n)? > *w.sizes.get(r)? {
            return None;
        }
        // SAFETY: the caller's contract: `count` elements of `dt`.
        let data = unsafe { std::slice::from_raw_parts(origin as *const u8, n) };
        Some(w.win.put(data, r, at))
    })
    .flatten()
}

#[allow(clippy::too_many_arguments)]
unsafe fn put(
    origin: *const c_void,
    ocount: c_int,
    otype: Handle,
    rank: c_int,
    disp: isize,
    tcount: c_int,
    ttype: Handle,
    win: Handle,
) -> R<()> {
    if otype == ttype && ocount == tcount && ocount > 0 && !origin.is_null() {
        // The fastest case: every check passes without building a result.
        // SAFETY: the caller's contract; `origin` is not null.
        if let Some(r) = unsafe { put_fast(origin, ocount, otype, rank, disp, win) } {
            return r.map_err(derr);
        }
        if let Some(p) = datatype::predefined(otype) {
            // The common case: one run of a predefined type on both sides.
            let n = (ocount as usize)
                .checked_mul(p.size)
                .ok_or_else(|| err(abi::ERR_COUNT, "the count overflows"))?;
            if origin.is_null() {
                return Err(err(abi::ERR_BUFFER, "null buffer with a nonzero count"));
            }
            // SAFETY: the origin buffer holds `ocount` elements.
            let data = unsafe { std::slice::from_raw_parts(origin as *const u8, n) };
            return with(win, |w| {
                let Some((r, at)) = target(w, rank, disp, &[(0, n)], "MPI_Put")? else {
                    return Ok(());
                };
                match &w.dyn_keys {
                    Some(k) => dynamic::put(&w.comm, k[r], r, at, data),
                    None => w.win.put(data, r, at).map_err(derr),
                }
            });
        }
    }
    let o = Side::new(ocount, otype)?;
    let t = Side::new(tcount, ttype)?;
    with(win, |w| {
        let tr = t.runs();
        let Some((r, base)) = target(w, rank, disp, &tr, "MPI_Put")? else {
            return Ok(());
        };
        if o.len() != t.len() {
            return Err(mismatch(o.len(), t.len()));
        }
        // SAFETY: the origin buffer holds `ocount` elements.
        let data = unsafe { o.pack(origin as *const u8)? };
        let mut pos = 0;
        for &(off, l) in tr.iter() {
            let at = (base as isize + off) as usize;
            match &w.dyn_keys {
                Some(k) => dynamic::put(&w.comm, k[r], r, at, &data[pos..pos + l])?,
                None => w.win.put(&data[pos..pos + l], r, at).map_err(derr)?,
            }
            pos += l;
        }
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
unsafe fn get(
    origin: *mut c_void,
    ocount: c_int,
    otype: Handle,
    rank: c_int,
    disp: isize,
    tcount: c_int,
    ttype: Handle,
    win: Handle,
) -> R<()> {
    let o = Side::new(ocount, otype)?;
    let t = Side::new(tcount, ttype)?;
    with(win, |w| {
        let tr = t.runs();
        let Some((r, base)) = target(w, rank, disp, &tr, "MPI_Get")? else {
            return Ok(());
        };
        if o.len() != t.len() {
            return Err(mismatch(o.len(), t.len()));
        }
        if o.null_refused(origin as *const u8) {
            return Err(err(abi::ERR_BUFFER, "null buffer with a nonzero count"));
        }
        if let (Side::Dense(n), [(0, _)], None) = (&o, &*tr, &w.dyn_keys) {
            // SAFETY: the origin buffer has room for `n` bytes.
            let dst = unsafe { std::slice::from_raw_parts_mut(origin as *mut u8, *n) };
            return w.win.get(dst, r, base).map_err(derr);
        }
        let mut data = vec![0u8; o.len()];
        match &w.dyn_keys {
            Some(k) => {
                let mut pos = 0;
                for &(off, l) in tr.iter() {
                    let at = (base as isize + off) as usize;
                    dynamic::get(&w.comm, k[r], r, at, &mut data[pos..pos + l])?;
                    pos += l;
                }
            }
            None => {
                // All the pieces in one batched get (a few messages, not
                // one round trip per piece).
                let list: Vec<(usize, usize)> = tr
                    .iter()
                    .map(|&(off, l)| ((base as isize + off) as usize, l))
                    .collect();
                w.win.get_runs(&mut data, r, &list).map_err(derr)?;
            }
        }
        // SAFETY: the origin buffer has room for `ocount` elements.
        unsafe { o.unpack(&data, origin as *mut u8) };
        Ok(())
    })
}

/// The accumulates: `result` is `Some` for the fetching ones.
#[allow(clippy::too_many_arguments)]
unsafe fn accumulate(
    origin: *const c_void,
    ocount: c_int,
    otype: Handle,
    result: Option<(*mut c_void, c_int, Handle)>,
    rank: c_int,
    disp: isize,
    tcount: c_int,
    ttype: Handle,
    op: Handle,
    win: Handle,
) -> R<()> {
    let t = Side::new(tcount, ttype)?;
    let noop = op == abi::op::NO_OP;
    let o = if noop {
        None
    } else {
        Some(Side::new(ocount, otype)?)
    };
    let res = match result {
        Some((p, c, dt)) => Some((p, Side::new(c, dt)?)),
        None => None,
    };
    let elem = elem_of(ttype).or_else(|| if noop { None } else { elem_of(otype) });
    if elem.is_none() && t.len() == 0 && o.as_ref().is_none_or(|o| o.len() == 0) {
        // No data (an empty derived type has no basic type): only the
        // operation (predefined, for integers or for pairs) and the epoch
        // are checked.
        acc_codes(op, Some(Elem::I32)).or_else(|_| acc_codes(op, Some(Elem::TwoInt)))?;
        if let Some((_, rs)) = &res {
            if rs.len() != 0 {
                return Err(mismatch(rs.len(), 0));
            }
        }
        return with(win, |w| {
            target(w, rank, disp, &[], "accumulate").map(|_| ())
        });
    }
    if !noop && op != abi::op::REPLACE {
        let pair = pair_of(ttype)
            .or_else(|| pair_of(otype))
            .or_else(|| result.and_then(|r| pair_of(r.2)));
        if let Some(pair) = pair {
            let (opc, ty) = acc_codes(op, datatype::predefined(pair.h).map(|p| p.elem))?;
            let o = o.as_ref().map(|o| (o, otype));
            let res = res
                .as_ref()
                .map(|(p, s)| (*p, s, result.map_or(0, |r| r.2)));
            // SAFETY: the caller's contract: the buffers hold their counts.
            return unsafe {
                accumulate_pairs(
                    origin,
                    o,
                    res,
                    rank,
                    disp,
                    (&t, ttype),
                    (opc, ty),
                    pair,
                    win,
                )
            };
        }
    }
    let (opc, ty) = acc_codes(op, elem)?;
    with(win, |w| {
        let tr = t.runs();
        let Some((r, base)) = target(w, rank, disp, &tr, "accumulate")? else {
            return Ok(());
        };
        let data = match &o {
            Some(o) => {
                if o.len() != t.len() {
                    return Err(mismatch(o.len(), t.len()));
                }
                // SAFETY: the origin buffer holds `ocount` elements.
                unsafe { o.pack(origin as *const u8)? }
            }
            None => std::borrow::Cow::Borrowed(&[][..]),
        };
        let at = |off: isize| (base as isize + off) as usize;
        match &res {
            None if w.dyn_keys.is_none() && tr.len() > 1 => {
                // All the pieces in a few batched messages (ACCV), not one
                // message per piece.
                let list: Vec<(usize, usize)> = tr.iter().map(|&(off, l)| (at(off), l)).collect();
                w.win
                    .accumulate_raw_runs(&data, r, &list, opc, ty)
                    .map_err(derr)?;
            }
            None => {
                let mut pos = 0;
                for &(off, l) in tr.iter() {
                    let d = &data[pos..pos + l];
                    match &w.dyn_keys {
                        Some(k) => {
                            let mut old = vec![0u8; if noop { 0 } else { l }];
                            dynamic::acc(&w.comm, k[r], r, at(off), opc, ty, d, &mut old)?
                        }
                        None => w.win.accumulate_raw(d, r, at(off), opc, ty).map_err(derr)?,
                    }
                    pos += l;
                }
            }
            Some((rp, rs)) => {
                if rs.len() != t.len() {
                    return Err(mismatch(rs.len(), t.len()));
                }
                if rs.null_refused(*rp as *const u8) {
                    return Err(err(
                        abi::ERR_BUFFER,
                        "null result buffer with a nonzero count",
                    ));
                }
                let mut old = vec![0u8; t.len()];
                let mut pos = 0;
                for &(off, l) in tr.iter() {
                    let src = if noop { &[][..] } else { &data[pos..pos + l] };
                    let o = &mut old[pos..pos + l];
                    match &w.dyn_keys {
                        Some(k) => dynamic::acc(&w.comm, k[r], r, at(off), opc, ty, src, o)?,
                        None => w
                            .win
                            .get_accumulate_raw(src, o, r, at(off), opc, ty)
                            .map_err(derr)?,
                    }
                    pos += l;
                }
                // SAFETY: the result buffer has room for its elements.
                unsafe { rs.unpack(&old, *rp as *mut u8) };
            }
        }
        Ok(())
    })
}

/// A padded value-index pair type (`MPI_DOUBLE_INT`, `MPI_LONG_INT`,
/// `MPI_LONG_DOUBLE_INT`) as the accumulates see it: in a derived type its
/// value and index are packed (`data` bytes), at the target the operation
/// combines whole C structs (`full` bytes, the index at `index`).
#[derive(Clone, Copy)]
struct Pair {
    h: Handle,
    data: usize,
    full: usize,
}

/// The pair type a derived datatype is made of, if it is one of those.
fn pair_of(dt: Handle) -> Option<Pair> {
    if datatype::predefined(dt).is_some() {
        return None;
    }
    let h = datatype::ty(dt).ok()?.base?;
    let (index, full) = match h {
        0x229 | 0x22a => (8, 16),
        0x22d => (16, 32),
        _ => return None,
    };
    Some(Pair {
        h,
        data: index + 4,
        full,
    })
}

impl Pair {
    /// Packed pairs to C structs (padding zero).
    fn to_structs(self, packed: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; packed.len() / self.data * self.full];
        for (s, p) in v
            .chunks_exact_mut(self.full)
            .zip(packed.chunks_exact(self.data))
        {
            s[..self.data].copy_from_slice(p);
        }
        v
    }

    /// C structs to packed pairs.
    fn to_packed(self, full: &[u8]) -> Vec<u8> {
        full.chunks_exact(self.full)
            .flat_map(|s| &s[..self.data])
            .copied()
            .collect()
    }
}

/// An accumulate (`MINLOC`, `MAXLOC`) on a derived datatype of padded pairs
/// on either side: each element combined at the target as one C struct
/// (its padding is the target element's own), so the target's pairs must
/// lie at least a struct apart.
///
/// # Safety
/// The buffers hold their counts of their datatypes.
#[allow(clippy::too_many_arguments)]
unsafe fn accumulate_pairs(
    origin: *const c_void,
    o: Option<(&Side, Handle)>,
    res: Option<(*mut c_void, &Side, Handle)>,
    rank: c_int,
    disp: isize,
    (t, ttype): (&Side, Handle),
    (opc, ty): (u8, u8),
    pair: Pair,
    win: Handle,
) -> R<()> {
    let unsupported = || {
        err(
            abi::ERR_UNSUPPORTED_OPERATION,
            "an accumulate on pairs whose target elements lie closer than the C struct",
        )
    };
    // The target's elements: one struct each.
    let elems: Vec<(isize, usize)> = if datatype::padded(ttype) {
        (0..t.len() / pair.full)
            .map(|k| ((k * pair.full) as isize, pair.full))
            .collect()
    } else {
        let mut v = Vec::new();
        for &(off, l) in t.runs().iter() {
            if l != pair.data {
                return Err(unsupported());
            }
            v.push((off, pair.full));
        }
        v
    };
    let mut sorted: Vec<isize> = elems.iter().map(|e| e.0).collect();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[1] - w[0] < pair.full as isize) {
        return Err(unsupported());
    }
    let packed_len = elems.len() * pair.data;
    // The origin's pairs, as structs.
    let data = match o {
        Some((o, dt)) => {
            // SAFETY: the origin buffer holds its elements.
            let d = unsafe { o.pack(origin as *const u8)? };
            let packed = if datatype::padded(dt) {
                pair.to_packed(&d)
            } else {
                d.into_owned()
            };
            if packed.len() != packed_len {
                return Err(mismatch(packed.len(), packed_len));
            }
            pair.to_structs(&packed)
        }
        None => Vec::new(),
    };
    if let Some((rp, rs, dt)) = res {
        let want = if datatype::padded(dt) {
            elems.len() * pair.full
        } else {
            packed_len
        };
        if rs.len() != want {
            return Err(mismatch(rs.len(), want));
        }
        if rs.null_refused(rp as *const u8) {
            return Err(err(
                abi::ERR_BUFFER,
                "null result buffer with a nonzero count",
            ));
        }
    }
    with(win, |w| {
        let Some((r, base)) = target(w, rank, disp, &elems, "accumulate")? else {
            return Ok(());
        };
        let mut old = vec![0u8; elems.len() * pair.full];
        for (k, &(off, l)) in elems.iter().enumerate() {
            let at = (base as isize + off) as usize;
            let src = &data[k * l..(k + 1) * l];
            let o = &mut old[k * l..(k + 1) * l];
            match &w.dyn_keys {
                Some(keys) => dynamic::acc(&w.comm, keys[r], r, at, opc, ty, src, o)?,
                None => w
                    .win
                    .get_accumulate_raw(src, o, r, at, opc, ty)
                    .map_err(derr)?,
            }
        }
        if let Some((rp, rs, dt)) = res {
            let bytes = if datatype::padded(dt) {
                old
            } else {
                pair.to_packed(&old)
            };
            // SAFETY: the result buffer has room for its elements.
            unsafe { rs.unpack(&bytes, rp as *mut u8) };
        }
        Ok(())
    })
}

win_fn! {
    /// Writes origin data into the target's window.
    fn MPI_Put / PMPI_Put(origin_addr: *const c_void, origin_count: c_int, origin_datatype: Handle, target_rank: c_int, target_disp: isize, target_count: c_int, target_datatype: Handle, win: Handle) on win, fast {
        if origin_datatype == target_datatype && origin_count == target_count && origin_count > 0 && !origin_addr.is_null() {
            put_fast(origin_addr, origin_count, origin_datatype, target_rank, target_disp, win)
        } else {
            None
        }
    } => {
        put(origin_addr, origin_count, origin_datatype, target_rank, target_disp, target_count, target_datatype, win)
    }
}

win_fn! {
    /// Reads the target's window into the origin buffer.
    fn MPI_Get / PMPI_Get(origin_addr: *mut c_void, origin_count: c_int, origin_datatype: Handle, target_rank: c_int, target_disp: isize, target_count: c_int, target_datatype: Handle, win: Handle) on win => {
        get(origin_addr, origin_count, origin_datatype, target_rank, target_disp, target_count, target_datatype, win)
    }
}

win_fn! {
    /// Combines origin data into the target's window, atomically per element.
    fn MPI_Accumulate / PMPI_Accumulate(origin_addr: *const c_void, origin_count: c_int, origin_datatype: Handle, target_rank: c_int, target_disp: isize, target_count: c_int, target_datatype: Handle, op: Handle, win: Handle) on win => {
        accumulate(origin_addr, origin_count, origin_datatype, None, target_rank, target_disp, target_count, target_datatype, op, win)
    }
}

win_fn! {
    /// Accumulate that returns the target's contents from before.
    fn MPI_Get_accumulate / PMPI_Get_accumulate(origin_addr: *const c_void, origin_count: c_int, origin_datatype: Handle, result_addr: *mut c_void, result_count: c_int, result_datatype: Handle, target_rank: c_int, target_disp: isize, target_count: c_int, target_datatype: Handle, op: Handle, win: Handle) on win => {
        accumulate(origin_addr, origin_count, origin_datatype, Some((result_addr, result_count, result_datatype)), target_rank, target_disp, target_count, target_datatype, op, win)
    }
}

win_fn! {
    /// One element's `Get_accumulate`.
    fn MPI_Fetch_and_op / PMPI_Fetch_and_op(origin_addr: *const c_void, result_addr: *mut c_void, datatype: Handle, target_rank: c_int, target_disp: isize, op: Handle, win: Handle) on win => {
        if datatype::predefined(datatype).is_none() {
            return Err(err(abi::ERR_TYPE, "MPI_Fetch_and_op takes a predefined datatype"));
        }
        accumulate(origin_addr, 1, datatype, Some((result_addr, 1, datatype)), target_rank, target_disp, 1, datatype, op, win)
    }
}

win_fn! {
    /// Stores `origin` at the target if it holds `compare`; the old value
    /// lands in `result`. Atomic.
    fn MPI_Compare_and_swap / PMPI_Compare_and_swap(origin_addr: *const c_void, compare_addr: *const c_void, result_addr: *mut c_void, datatype: Handle, target_rank: c_int, target_disp: isize, win: Handle) on win => {
        let p = datatype::predefined(datatype)
            .ok_or_else(|| err(abi::ERR_TYPE, "MPI_Compare_and_swap takes a predefined datatype"))?;
        let ty = match p.elem {
            Elem::I8 => 8,
            Elem::U8 | Elem::Byte | Elem::Bool => 7,
            Elem::I16 => 9,
            Elem::U16 => 10,
            Elem::I32 | Elem::Logical => 1,
            Elem::U32 => 2,
            Elem::I64 => 3,
            Elem::U64 => 4,
            _ => return Err(err(abi::ERR_TYPE, format!("{} is not an integer, logical or byte type", p.name))),
        };
        if origin_addr.is_null() || compare_addr.is_null() || result_addr.is_null() {
            return Err(err(abi::ERR_BUFFER, "null buffer"));
        }
        let n = p.size;
        with(win, |w| {
            let Some((r, base)) = target(w, target_rank, target_disp, &[(0, n)], "MPI_Compare_and_swap")? else {
                return Ok(());
            };
            let new = std::slice::from_raw_parts(origin_addr as *const u8, n);
            let cmp = std::slice::from_raw_parts(compare_addr as *const u8, n);
            let res = std::slice::from_raw_parts_mut(result_addr as *mut u8, n);
            match &w.dyn_keys {
                Some(k) => {
                    let ops = [cmp, new].concat();
                    dynamic::acc(&w.comm, k[r], r, base, raw::CAS, ty, &ops, res)
                }
                None => w.win.compare_swap_raw(new, cmp, res, r, base, ty).map_err(derr),
            }
        })
    }
}

/// A request that is complete: the request-based operations finish their
/// local part before returning.
unsafe fn done_request(request: *mut Handle) -> R<()> {
    // SAFETY: the caller's contract.
    unsafe { crate::request::insert_completed(None, request) }
}

win_fn! {
    /// `MPI_Put` with a request (complete at once: the data is copied).
    fn MPI_Rput / PMPI_Rput(origin_addr: *const c_void, origin_count: c_int, origin_datatype: Handle, target_rank: c_int, target_disp: isize, target_count: c_int, target_datatype: Handle, win: Handle, request: *mut Handle) on win => {
        rma_only(win, target_rank)?;
        put(origin_addr, origin_count, origin_datatype, target_rank, target_disp, target_count, target_datatype, win)?;
        done_request(request)
    }
}

win_fn! {
    /// `MPI_Get` with a request (the data is in place when it returns).
    fn MPI_Rget / PMPI_Rget(origin_addr: *mut c_void, origin_count: c_int, origin_datatype: Handle, target_rank: c_int, target_disp: isize, target_count: c_int, target_datatype: Handle, win: Handle, request: *mut Handle) on win => {
        rma_only(win, target_rank)?;
        get(origin_addr, origin_count, origin_datatype, target_rank, target_disp, target_count, target_datatype, win)?;
        done_request(request)
    }
}

win_fn! {
    /// `MPI_Accumulate` with a request.
    fn MPI_Raccumulate / PMPI_Raccumulate(origin_addr: *const c_void, origin_count: c_int, origin_datatype: Handle, target_rank: c_int, target_disp: isize, target_count: c_int, target_datatype: Handle, op: Handle, win: Handle, request: *mut Handle) on win => {
        rma_only(win, target_rank)?;
        accumulate(origin_addr, origin_count, origin_datatype, None, target_rank, target_disp, target_count, target_datatype, op, win)?;
        done_request(request)
    }
}

win_fn! {
    /// `MPI_Get_accumulate` with a request.
    fn MPI_Rget_accumulate / PMPI_Rget_accumulate(origin_addr: *const c_void, origin_count: c_int, origin_datatype: Handle, result_addr: *mut c_void, result_count: c_int, result_datatype: Handle, target_rank: c_int, target_disp: isize, target_count: c_int, target_datatype: Handle, op: Handle, win: Handle, request: *mut Handle) on win => {
        rma_only(win, target_rank)?;
        accumulate(origin_addr, origin_count, origin_datatype, Some((result_addr, result_count, result_datatype)), target_rank, target_disp, target_count, target_datatype, op, win)?;
        done_request(request)
    }
}

/// The request-based operations belong to passive-target epochs only.
/// One to `MPI_PROC_NULL` does nothing and passes (MPICH's rmanull locks
/// `MPI_PROC_NULL`, which opens no epoch, and then posts them).
fn rma_only(win: Handle, rank: c_int) -> R<()> {
    with(win, |w| {
        if rank == abi::PROC_NULL {
            return Ok(());
        }
        if w.epochs.lock_all || w.epochs.locks.iter().any(|&l| l) {
            Ok(())
        } else {
            Err(err(ERR_RMA_SYNC, "request-based operations need a passive-target epoch (MPI_Win_lock or MPI_Win_lock_all)"))
        }
    })
}

win_fn! {
    /// The group of the window's communicator.
    fn MPI_Win_get_group / PMPI_Win_get_group(win: Handle, group: *mut Handle) on win => {
        if group.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for group"));
        }
        let g = with(win, |w| Ok(w.comm.group()))?;
        let h = state::with(|st| Ok(st.groups.insert(g)))?;
        out(group, h, "group")
    }
}

win_fn! {
    /// The predefined attributes of a window.
    fn MPI_Win_get_attr / PMPI_Win_get_attr(win: Handle, win_keyval: c_int, attribute_val: *mut c_void, flag: *mut c_int) on win => {
        if attribute_val.is_null() || flag.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for attribute_val or flag"));
        }
        let v: Option<*mut c_void> = with(win, |w| {
            let a = &mut *w.attrs;
            Ok(match win_keyval {
                WIN_BASE_KEY => Some(w.base as *mut c_void),
                WIN_SIZE_KEY => Some(&mut a.size as *mut isize as *mut c_void),
                WIN_DISP_UNIT_KEY => Some(&mut a.disp_unit as *mut c_int as *mut c_void),
                WIN_CREATE_FLAVOR_KEY => Some(&mut a.flavor as *mut c_int as *mut c_void),
                WIN_MODEL_KEY => Some(&mut a.model as *mut c_int as *mut c_void),
                _ => None,
            })
        })?;
        // The program's own keyvals: the attribute store (crate::attr).
        let v = match v {
            Some(p) => Some(p),
            None => crate::attr::get(crate::attr::Kind::Win, win, win_keyval)?.map(|x| x as *mut c_void),
        };
        if let Some(p) = v {
            *(attribute_val as *mut *mut c_void) = p;
        }
        out(flag, v.is_some() as c_int, "flag")
    }
}

win_fn! {
    /// Sets the window's error handler (`MPI_ERRORS_ARE_FATAL`, `MPI_ERRORS_ABORT`, `MPI_ERRORS_RETURN`).
    fn MPI_Win_set_errhandler / PMPI_Win_set_errhandler(win: Handle, errhandler: Handle) on win => {
        let user = crate::error::user_errhandler(errhandler).is_some();
        if !user && !matches!(errhandler, abi::ERRORS_ARE_FATAL | abi::ERRORS_RETURN | abi::ERRORS_ABORT) {
            return Err(err(abi::ERR_ERRHANDLER, format!("invalid error handler {errhandler:#x}")));
        }
        crate::error::check_handler(errhandler, crate::error::HandlerKind::Win)?;
        with(win, |w| {
            w.errhandler = errhandler;
            Ok(())
        })
    }
}

mpi_fn! {
    /// A window error handler calling the program's function with the
    /// window and the error code.
    fn MPI_Win_create_errhandler / PMPI_Win_create_errhandler(function: Option<crate::error::HandlerFn>, errhandler: *mut Handle) on abi::COMM_WORLD => {
        if errhandler.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for errhandler"));
        }
        let f = function.map_or(0, |f| f as usize);
        let h = crate::error::create_errhandler(crate::error::HandlerKind::Win, f)?;
        out(errhandler, h, "errhandler")
    }
}

win_fn! {
    /// Invokes the window's error handler on `errorcode`.
    fn MPI_Win_call_errhandler / PMPI_Win_call_errhandler(win: Handle, errorcode: c_int) on win => {
        with(win, |_| Ok(()))?;
        Err(err(errorcode, "MPI_Win_call_errhandler"))
    }
}

win_fn! {
    /// The window's error handler.
    fn MPI_Win_get_errhandler / PMPI_Win_get_errhandler(win: Handle, errhandler: *mut Handle) on win => {
        let h = with(win, |w| Ok(w.errhandler))?;
        out(errhandler, h, "errhandler")
    }
}

win_fn! {
    /// Names the window.
    fn MPI_Win_set_name / PMPI_Win_set_name(win: Handle, win_name: *const c_char) on win => {
        if win_name.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for win_name"));
        }
        let s = std::ffi::CStr::from_ptr(win_name).to_string_lossy();
        let s: String = s.chars().take(127).collect();
        with(win, |w| {
            w.name = s;
            Ok(())
        })
    }
}

win_fn! {
    /// The window's name (empty unless set).
    fn MPI_Win_get_name / PMPI_Win_get_name(win: Handle, win_name: *mut c_char, resultlen: *mut c_int) on win => {
        // MPICH names the null handle too (the standard leaves it open).
        let n = if win == WIN_NULL {
            "MPI_WIN_NULL".to_owned()
        } else {
            with(win, |w| Ok(w.name.clone()))?
        };
        let bytes = n.as_bytes();
        if win_name.is_null() || resultlen.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for win_name or resultlen"));
        }
        let k = bytes.len().min(127);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), win_name as *mut u8, k);
        *win_name.add(k) = 0;
        out(resultlen, k as c_int, "resultlen")
    }
}

win_fn! {
    /// Keeps the hints given (none changes what the window does).
    fn MPI_Win_set_info / PMPI_Win_set_info(win: Handle, info: Handle) on win => {
        let kv = if info == abi::INFO_NULL {
            Vec::new()
        } else {
            state::with(|st| st.infos.get(&info).cloned().ok_or_else(|| err(ERR_INFO, format!("invalid info handle {info:#x}"))))?
        };
        with(win, |w| {
            w.info = kv;
            Ok(())
        })
    }
}

win_fn! {
    /// A new info object with the hints in use.
    fn MPI_Win_get_info / PMPI_Win_get_info(win: Handle, info_used: *mut Handle) on win => {
        if info_used.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for info_used"));
        }
        let kv = with(win, |w| Ok(w.info.clone()))?;
        let h = state::with(|st| Ok(st.infos.insert(kv)))?;
        out(info_used, h, "info_used")
    }
}

mpi_fn! {
    /// Creates a window without memory (collective); each rank attaches
    /// its own with `Win_attach`, and displacements are addresses.
    fn MPI_Win_create_dynamic / PMPI_Win_create_dynamic(info: Handle, comm: Handle, win: *mut Handle) on comm => {
        crate::inter::deny(comm)?;
        let _ = info;
        if win.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for win"));
        }
        let c = state::comm(comm)?;
        let key = dynamic::create(&c);
        let mut keys = vec![0u64; c.size()];
        c.allgather(&[key], &mut keys).map_err(derr)?;
        // Synchronization (fence, locks, post/start) is dos's window's.
        let w = c.win_allocate::<u8>(0).map_err(derr)?;
        register(w, c, std::ptr::null_mut(), 0, 1, FLAVOR_DYNAMIC, None, win)?;
        with(*win, |w| {
            w.dyn_keys = Some(keys);
            Ok(())
        })
    }
}

/// The key of the memory a dynamic window attaches here.
fn dyn_key(w: &Win) -> R<u64> {
    match &w.dyn_keys {
        Some(k) => Ok(k[w.comm.rank()]),
        None => Err(err(
            ERR_RMA_FLAVOR,
            "not a window of MPI_Win_create_dynamic",
        )),
    }
}

win_fn! {
    /// Attaches `size` bytes at `base` to a dynamic window.
    fn MPI_Win_attach / PMPI_Win_attach(win: Handle, base: *mut c_void, size: isize) on win => {
        let n = size_arg(size)?;
        if base.is_null() && n > 0 {
            return Err(err(ERR_RMA_ATTACH, "null base with a nonzero size"));
        }
        let key = with(win, |w| dyn_key(w))?;
        dynamic::attach(key, base as usize, n)
    }
}

win_fn! {
    /// Detaches the memory attached at `base`.
    fn MPI_Win_detach / PMPI_Win_detach(win: Handle, base: *const c_void) on win => {
        let key = with(win, |w| dyn_key(w))?;
        dynamic::detach(key, base as usize)
    }
}

/// Dynamic windows, on dos's RPC: each process keeps the memory attached
/// to each of its dynamic windows; origins send puts, gets, accumulates and
/// compare-and-swaps as calls of one handler, which checks the address
/// range against what is attached and applies the operation under one lock
/// (so accumulates are atomic per element). Every call is a round trip:
/// complete at the target when it returns.
mod dynamic {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    use dos::rma::raw;

    use crate::abi;
    use crate::error::{err, Error, R};

    const HANDLER: &str = "dos-mpi.rma.dynamic";
    const PUT: u8 = 1;
    const GET: u8 = 2;
    const ACC: u8 = 3;

    /// Attached regions `(address, length)` by window key.
    type Regions = HashMap<u64, Vec<(usize, usize)>>;
    static ATTACHED: Mutex<Option<Regions>> = Mutex::new(None);
    static NEXT: AtomicU64 = AtomicU64::new(1);

    fn table<T>(f: impl FnOnce(&mut Regions) -> T) -> T {
        let mut g = ATTACHED.lock().unwrap_or_else(|p| p.into_inner());
        f(g.get_or_insert_with(HashMap::new))
    }

    /// A new key, and the handler registered.
    pub(super) fn create(comm: &dos::Comm) -> u64 {
        comm.rpc()
            .register_pod::<u8, u8, String, _>(HANDLER, |_ctx, args| serve(args));
        let key = NEXT.fetch_add(1, Ordering::Relaxed);
        table(|t| t.insert(key, Vec::new()));
        key
    }

    pub(super) fn forget(key: u64) {
        table(|t| t.remove(&key));
    }

    pub(super) fn attach(key: u64, base: usize, len: usize) -> R<()> {
        table(|t| {
            let v = t.entry(key).or_default();
            if v.iter().any(|&(b, l)| base < b + l && b < base + len) {
                return Err(err(
                    super::ERR_RMA_ATTACH,
                    "the memory overlaps memory attached already",
                ));
            }
            v.push((base, len));
            Ok(())
        })
    }

    pub(super) fn detach(key: u64, base: usize) -> R<()> {
        table(|t| {
            let v = t.entry(key).or_default();
            match v.iter().position(|&(b, _)| b == base) {
                Some(i) => {
                    v.remove(i);
                    Ok(())
                }
                None => Err(err(
                    super::ERR_RMA_ATTACH,
                    format!("nothing is attached at {base:#x}"),
                )),
            }
        })
    }

    /// True if attached `regions` (base, length) cover `[lo, hi)`, one
    /// region or several end to end (MPICH's tests attach the two halves
    /// of one array and access across the seam).
    fn covered(regions: &[(usize, usize)], lo: usize, hi: usize) -> bool {
        let mut at = lo;
        while at < hi {
            let next = regions
                .iter()
                .filter(|&&(b, l)| b <= at && at < b.saturating_add(l))
                .map(|&(b, l)| b.saturating_add(l))
                .max();
            match next {
                Some(end) => at = end,
                None => return false,
            }
        }
        true
    }

    /// Serves one call: `kind u8 | key u64 | addr u64 | op u8 | ty u8 | len u64 | bytes`.
    fn serve(a: &[u8]) -> Result<Vec<u8>, String> {
        if a.len() < 27 {
            return Err("short request".into());
        }
        let u64_at = |i: usize| u64::from_ne_bytes(a[i..i + 8].try_into().expect("8 bytes"));
        let (kind, key, addr, op, ty, len) = (
            a[0],
            u64_at(1),
            u64_at(9) as usize,
            a[17],
            a[18],
            u64_at(19) as usize,
        );
        let bytes = &a[27..];
        // One lock for the table and the memory: accumulates are atomic.
        let g = ATTACHED.lock().unwrap_or_else(|p| p.into_inner());
        let regions = g
            .as_ref()
            .and_then(|t| t.get(&key))
            .ok_or("no such window")?;
        let inside = addr
            .checked_add(len)
            .is_some_and(|end| covered(regions, addr, end));
        if !inside {
            return Err(format!(
                "range: {len} bytes at {addr:#x} are not attached to the window"
            ));
        }
        let p = addr as *mut u8;
        match kind {
            PUT if bytes.len() == len => {
                // SAFETY: inside memory the target attached (MPI: valid until detached).
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, len) };
                Ok(Vec::new())
            }
            // SAFETY: as above.
            GET => Ok(unsafe { std::slice::from_raw_parts(p, len) }.to_vec()),
            ACC => {
                // SAFETY: as above; the lock serializes every access through here.
                let cur = unsafe { std::slice::from_raw_parts_mut(p, len) };
                let old = cur.to_vec();
                if op == raw::CAS {
                    if bytes.len() != 2 * len {
                        return Err("bad compare-and-swap".into());
                    }
                    if old[..] == bytes[..len] {
                        cur.copy_from_slice(&bytes[len..]);
                    }
                } else if !raw::apply(op, ty, cur, bytes) {
                    return Err("operation not supported on this type".into());
                }
                Ok(old)
            }
            _ => Err("malformed request".into()),
        }
    }

    fn call(comm: &dos::Comm, rank: usize, head: [u8; 27], bytes: &[u8]) -> R<Vec<u8>> {
        let mut a = Vec::with_capacity(27 + bytes.len());
        a.extend_from_slice(&head);
        a.extend_from_slice(bytes);
        comm.rpc()
            .call_pod::<u8, u8>(rank, HANDLER, &a)
            .map_err(|e| match &e {
                dos::Error::Rpc {
                    failure: dos::RpcFailure::Failed(m),
                    ..
                } if m.starts_with("range") => err(super::ERR_RMA_RANGE, m.clone()),
                _ => Error::from(e),
            })
    }

    fn head(kind: u8, key: u64, addr: usize, op: u8, ty: u8, len: usize) -> [u8; 27] {
        let mut h = [0u8; 27];
        h[0] = kind;
        h[1..9].copy_from_slice(&key.to_ne_bytes());
        h[9..17].copy_from_slice(&(addr as u64).to_ne_bytes());
        h[17] = op;
        h[18] = ty;
        h[19..27].copy_from_slice(&(len as u64).to_ne_bytes());
        h
    }

    pub(super) fn put(comm: &dos::Comm, key: u64, rank: usize, addr: usize, data: &[u8]) -> R<()> {
        call(comm, rank, head(PUT, key, addr, 0, 0, data.len()), data).map(drop)
    }

    pub(super) fn get(
        comm: &dos::Comm,
        key: u64,
        rank: usize,
        addr: usize,
        out: &mut [u8],
    ) -> R<()> {
        let b = call(comm, rank, head(GET, key, addr, 0, 0, out.len()), &[])?;
        if b.len() != out.len() {
            return Err(err(abi::ERR_INTERN, "short reply to a get"));
        }
        out.copy_from_slice(&b);
        Ok(())
    }

    /// An accumulate (or compare-and-swap: `ops` is compare then new); the
    /// old bytes land in `old` (empty: not wanted).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn acc(
        comm: &dos::Comm,
        key: u64,
        rank: usize,
        addr: usize,
        op: u8,
        ty: u8,
        ops: &[u8],
        old: &mut [u8],
    ) -> R<()> {
        let len = if op == raw::CAS {
            ops.len() / 2
        } else if op == raw::NO_OP {
            old.len()
        } else {
            ops.len()
        };
        let b = call(comm, rank, head(ACC, key, addr, op, ty, len), ops)?;
        if !old.is_empty() {
            if b.len() != old.len() {
                return Err(err(abi::ERR_INTERN, "short reply to an accumulate"));
            }
            old.copy_from_slice(&b);
        }
        Ok(())
    }
}
