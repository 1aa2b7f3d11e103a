//! The environment: start-up and shutdown, thread levels, versions, names,
//! clocks (MPI-5 chapter "MPI Environmental Management").

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicI64, Ordering};

use crate::abi::{self, Handle};
use crate::error::{err, R};
use crate::ptr::{out, string};
use crate::state;

/// The library's version string (`MPI_Get_library_version`).
pub(crate) const LIBRARY_VERSION: &str = concat!(
    "dos-mpi ",
    env!("CARGO_PKG_VERSION"),
    " (the MPI C interface of dos; MPI-5 standard ABI handles; MPI_THREAD_FUNNELED)"
);

fn init(required: c_int, provided: *mut c_int) -> R<()> {
    let p = state::init(required)?;
    epoch();
    if !provided.is_null() {
        // SAFETY: non-null, and an int by the caller's contract.
        unsafe { out(provided, p, "provided")? };
    }
    Ok(())
}

mpi_fn! {
    /// Joins the job started by `dosrun` (a world of one without it).
    fn MPI_Init / PMPI_Init(_argc: *mut c_int, _argv: *mut *mut *mut c_char) on abi::COMM_WORLD => {
        init(abi::THREAD_SINGLE, std::ptr::null_mut())
    }
}

mpi_fn! {
    /// As `MPI_Init`; `provided` is at most `MPI_THREAD_FUNNELED`, the level dos supports.
    fn MPI_Init_thread / PMPI_Init_thread(
        _argc: *mut c_int,
        _argv: *mut *mut *mut c_char,
        required: c_int,
        provided: *mut c_int,
    ) on abi::COMM_WORLD => {
        init(required, provided)
    }
}

mpi_fn! {
    /// Whether `MPI_Init` has been called (any thread, any time).
    fn MPI_Initialized / PMPI_Initialized(flag: *mut c_int) on abi::COMM_WORLD => {
        out(flag, state::initialized() as c_int, "flag")
    }
}

mpi_fn! {
    /// Whether `MPI_Finalize` has returned (any thread, any time).
    fn MPI_Finalized / PMPI_Finalized(flag: *mut c_int) on abi::COMM_WORLD => {
        out(flag, state::finalized() as c_int, "flag")
    }
}

mpi_fn! {
    /// Completes what is pending and leaves the job.
    fn MPI_Finalize / PMPI_Finalize() on abi::COMM_WORLD => {
        state::finalize()
    }
}

mpi_fn! {
    /// Ends the whole job with exit status `errorcode`; `dosrun` reports the
    /// rank as failed, naming it.
    fn MPI_Abort / PMPI_Abort(comm: Handle, errorcode: c_int) on comm => {
        let who = state::world_rank().map(|r| format!("rank {r}")).unwrap_or_default();
        state::abort(errorcode, &format!("MPI_Abort({errorcode}) called by {who}"))
    }
}

mpi_fn! {
    /// The thread level in force.
    fn MPI_Query_thread / PMPI_Query_thread(provided: *mut c_int) on abi::COMM_WORLD => {
        let l = state::with(|st| Ok(st.thread_level))?;
        out(provided, l, "provided")
    }
}

mpi_fn! {
    /// Whether this is the thread that called `MPI_Init`.
    fn MPI_Is_thread_main / PMPI_Is_thread_main(flag: *mut c_int) on abi::COMM_WORLD => {
        let main = state::with(|st| Ok(st.main_thread == std::thread::current().id()))?;
        out(flag, main as c_int, "flag")
    }
}

/// This host's name.
pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its length; gethostname NUL-terminates
    // when the name fits, and we stop at the buffer's end otherwise.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

mpi_fn! {
    /// The host name (at most `MPI_MAX_PROCESSOR_NAME` bytes with its NUL).
    fn MPI_Get_processor_name / PMPI_Get_processor_name(name: *mut c_char, resultlen: *mut c_int) on abi::COMM_WORLD => {
        string(name, abi::MAX_PROCESSOR_NAME, resultlen, &hostname())
    }
}

mpi_fn! {
    /// The library's name and version.
    fn MPI_Get_library_version / PMPI_Get_library_version(version: *mut c_char, resultlen: *mut c_int) on abi::COMM_WORLD => {
        string(version, abi::MAX_LIBRARY_VERSION_STRING, resultlen, LIBRARY_VERSION)
    }
}

mpi_fn! {
    /// The version of the standard: 5.0.
    fn MPI_Get_version / PMPI_Get_version(version: *mut c_int, subversion: *mut c_int) on abi::COMM_WORLD => {
        out(version, 5, "version")?;
        out(subversion, 0, "subversion")
    }
}

mpi_fn! {
    /// Reserved for spawning processes, which dos does not do.
    fn MPI_Comm_spawn / PMPI_Comm_spawn(
        _command: *const c_char,
        _argv: *mut *mut c_char,
        _maxprocs: c_int,
        _info: Handle,
        _root: c_int,
        comm: Handle,
        _intercomm: *mut Handle,
        _errcodes: *mut c_int,
    ) on comm => {
        Err(err(abi::ERR_UNSUPPORTED_OPERATION, "MPI_Comm_spawn: dos starts every process with dosrun"))
    }
}

mpi_fn! {
    /// Memory for the program (`MPI_Alloc_mem`): from the C heap, so that
    /// one-sided windows and message buffers may use it like any other; dos
    /// needs no special registration. The info hints are accepted and
    /// ignored. A negative size is `MPI_ERR_SIZE`, no memory `MPI_ERR_NO_MEM`.
    fn MPI_Alloc_mem / PMPI_Alloc_mem(size: isize, _info: Handle, baseptr: *mut c_void) on abi::COMM_WORLD => {
        if baseptr.is_null() {
            return Err(err(abi::ERR_ARG, "null pointer for baseptr"));
        }
        let n = usize::try_from(size)
            .map_err(|_| err(abi::ERR_SIZE, format!("negative size {size}")))?;
        // SAFETY: malloc of a positive size (0 asks for one byte, so that
        // the pointer is distinct and can be given to MPI_Free_mem).
        let p = unsafe { libc::malloc(n.max(1)) };
        if p.is_null() {
            return Err(err(abi::ERR_NO_MEM, format!("no memory for {n} bytes")));
        }
        out(baseptr.cast::<*mut c_void>(), p, "baseptr")
    }
}

mpi_fn! {
    /// Frees memory of `MPI_Alloc_mem` (a null pointer is ignored).
    fn MPI_Free_mem / PMPI_Free_mem(base: *mut c_void) on abi::COMM_WORLD => {
        // SAFETY: the caller's contract: `base` came from MPI_Alloc_mem.
        unsafe { libc::free(base) };
        Ok(())
    }
}

/// The monotonic clock: whole seconds and nanoseconds.
///
/// `clock_gettime` itself rather than `Instant::elapsed`: OSU's one-sided
/// latency loops read `MPI_Wtime` twice per operation, and `Instant`'s
/// checked subtraction and `Duration` normalization cost some 70
/// instructions a reading (callgrind), as much as the put they time.
#[inline]
fn monotonic() -> (i64, i64) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is valid for the write; CLOCK_MONOTONIC exists on every
    // Linux, so the call does not fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    // `time_t` and `c_long` are `i64` on 64-bit Linux, not everywhere.
    #[allow(clippy::unnecessary_cast)]
    (ts.tv_sec as i64, ts.tv_nsec as i64)
}

/// The clock's origin, in whole seconds of the monotonic clock: those of
/// the first reading (at `MPI_Init` at the latest); `i64::MIN` before it.
static EPOCH_SECS: AtomicI64 = AtomicI64::new(i64::MIN);

/// [`EPOCH_SECS`], set by the first call (any thread may read the clock).
#[inline]
fn epoch() -> i64 {
    let e = EPOCH_SECS.load(Ordering::Relaxed);
    if e != i64::MIN {
        return e;
    }
    let now = monotonic().0;
    match EPOCH_SECS.compare_exchange(i64::MIN, now, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => now,
        Err(first) => first,
    }
}

/// Seconds since an arbitrary origin in the past (the monotonic clock).
#[no_mangle]
pub extern "C" fn PMPI_Wtime() -> f64 {
    let (s, ns) = monotonic();
    (s - epoch()) as f64 + ns as f64 * 1e-9
}

/// `MPI_Wtime`: forwards to [`PMPI_Wtime`].
#[no_mangle]
pub extern "C" fn MPI_Wtime() -> f64 {
    PMPI_Wtime()
}

/// The resolution of [`PMPI_Wtime`]: a nanosecond.
#[no_mangle]
pub extern "C" fn PMPI_Wtick() -> f64 {
    1e-9
}

/// `MPI_Wtick`: forwards to [`PMPI_Wtick`].
#[no_mangle]
pub extern "C" fn MPI_Wtick() -> f64 {
    PMPI_Wtick()
}

// ----- the tool information interface (MPI_T): dos exposes no variables -----

/// `MPI_T_ERR_INVALID_INDEX` (the standard ABI's value).
const T_ERR_INVALID_INDEX: c_int = 1007;
/// `MPI_T_ERR_INVALID_HANDLE`.
const T_ERR_INVALID_HANDLE: c_int = 1010;

macro_rules! mpi_t {
    ($(#[doc = $doc:literal])* fn $mpi:ident / $pmpi:ident ( $($a:ident : $t:ty),* ) => $body:block) => {
        $(#[doc = $doc])*
        ///
        /// # Safety
        /// Pointer arguments valid as the standard requires (MPI_T returns
        /// its codes directly: no error handler is involved).
        #[no_mangle]
        pub unsafe extern "C" fn $pmpi($($a: $t),*) -> c_int {
            $(let _ = &$a;)*
            $body
        }
        #[doc = concat!("`", stringify!($mpi), "`: forwards to [`", stringify!($pmpi), "`].")]
        ///
        /// # Safety
        /// As for the profiling entry point.
        #[no_mangle]
        pub unsafe extern "C" fn $mpi($($a: $t),*) -> c_int {
            // SAFETY: the same contract.
            unsafe { $pmpi($($a),*) }
        }
    };
}

mpi_t! {
    /// Starts the tool interface: `provided` is dos's thread level.
    fn MPI_T_init_thread / PMPI_T_init_thread(required: c_int, provided: *mut c_int) => {
        if !provided.is_null() {
            // SAFETY: non-null: the caller's int.
            unsafe { *provided = abi::provided_thread_level(required) };
        }
        abi::SUCCESS
    }
}

mpi_t! {
    /// Ends the tool interface.
    fn MPI_T_finalize / PMPI_T_finalize() => { abi::SUCCESS }
}

mpi_t! {
    /// No control variables.
    fn MPI_T_cvar_get_num / PMPI_T_cvar_get_num(num: *mut c_int) => {
        if !num.is_null() {
            // SAFETY: non-null: the caller's int.
            unsafe { *num = 0 };
        }
        abi::SUCCESS
    }
}

mpi_t! {
    /// No control variables: every index is invalid.
    fn MPI_T_cvar_get_info / PMPI_T_cvar_get_info(index: c_int, name: *mut c_char, name_len: *mut c_int, verbosity: *mut c_int, datatype: *mut Handle, enumtype: *mut Handle, desc: *mut c_char, desc_len: *mut c_int, bind: *mut c_int, scope: *mut c_int) => {
        T_ERR_INVALID_INDEX
    }
}

mpi_t! {
    /// No control variables: every index is invalid.
    fn MPI_T_cvar_handle_alloc / PMPI_T_cvar_handle_alloc(index: c_int, obj: *mut c_void, handle: *mut Handle, count: *mut c_int) => {
        T_ERR_INVALID_INDEX
    }
}

mpi_t! {
    /// No handles exist.
    fn MPI_T_cvar_handle_free / PMPI_T_cvar_handle_free(handle: *mut Handle) => { T_ERR_INVALID_HANDLE }
}

mpi_t! {
    /// No handles exist.
    fn MPI_T_cvar_read / PMPI_T_cvar_read(handle: Handle, buf: *mut c_void) => { T_ERR_INVALID_HANDLE }
}

mpi_t! {
    /// No handles exist.
    fn MPI_T_cvar_write / PMPI_T_cvar_write(handle: Handle, buf: *const c_void) => { T_ERR_INVALID_HANDLE }
}

#[cfg(test)]
mod tests {
    use super::PMPI_Wtime;

    #[test]
    fn wtime_is_monotonic_and_counts_seconds() {
        let t0 = PMPI_Wtime();
        assert!(t0 >= 0.0, "{t0}");
        let mut last = t0;
        for _ in 0..10_000 {
            let t = PMPI_Wtime();
            assert!(t >= last, "{t} after {last}");
            last = t;
        }
        let a = PMPI_Wtime();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let d = PMPI_Wtime() - a;
        assert!((0.019..5.0).contains(&d), "20 ms measured as {d} s");
    }
}
