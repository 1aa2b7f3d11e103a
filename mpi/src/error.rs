//! Error classes, their strings, and the error handlers.
//!
//! Every function body returns [`R`]; [`finish`] turns it into the return
//! code after invoking the error handler of the communicator concerned:
//! `MPI_ERRORS_RETURN` returns the class, `MPI_ERRORS_ARE_FATAL` and
//! `MPI_ERRORS_ABORT` print the error and end the job through
//! `dos::World::abort`, which `dosrun` reports as a failed rank.

use std::ffi::c_int;
use std::sync::Mutex;

use crate::abi::{self, Handle};

/// An MPI error: its class and what went wrong.
///
/// One pointer (the class and message live in a box made on the error
/// path only), so that [`R<()>`](R), which every function body returns,
/// is a register and `?` on success a test against null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Error(Box<ErrorInfo>);

/// What an [`Error`] holds (its fields are read through `Deref`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErrorInfo {
    pub class: c_int,
    pub msg: String,
}

impl std::ops::Deref for Error {
    type Target = ErrorInfo;
    #[inline]
    fn deref(&self) -> &ErrorInfo {
        &self.0
    }
}

/// The result of a function body.
pub(crate) type R<T> = Result<T, Error>;

/// An error of class `class`.
#[cold]
pub(crate) fn err(class: c_int, msg: impl Into<String>) -> Error {
    Error(Box::new(ErrorInfo {
        class,
        msg: msg.into(),
    }))
}

impl From<dos::Error> for Error {
    #[cold]
    fn from(e: dos::Error) -> Error {
        let class = match &e {
            dos::Error::InvalidRank { .. } => abi::ERR_RANK,
            dos::Error::InvalidTag { .. } => abi::ERR_TAG,
            dos::Error::Truncated { .. } | dos::Error::ElementMismatch { .. } => abi::ERR_TRUNCATE,
            dos::Error::InvalidBuffer { .. } => abi::ERR_BUFFER,
            dos::Error::InvalidArgument { .. } => abi::ERR_ARG,
            dos::Error::PeerFailed { .. } => abi::ERR_PROC_ABORTED,
            dos::Error::Unsupported(_) => abi::ERR_UNSUPPORTED_OPERATION,
            _ => abi::ERR_OTHER,
        };
        err(class, e.to_string())
    }
}

/// The standard's name and description of each error class.
pub(crate) fn class_string(class: c_int) -> Option<&'static str> {
    Some(match class {
        0 => "MPI_SUCCESS: no error",
        1 => "MPI_ERR_BUFFER: invalid buffer pointer",
        2 => "MPI_ERR_COUNT: invalid count argument",
        3 => "MPI_ERR_TYPE: invalid datatype",
        4 => "MPI_ERR_TAG: invalid tag",
        5 => "MPI_ERR_COMM: invalid communicator",
        6 => "MPI_ERR_RANK: invalid rank",
        7 => "MPI_ERR_REQUEST: invalid request",
        8 => "MPI_ERR_ROOT: invalid root",
        9 => "MPI_ERR_GROUP: invalid group",
        10 => "MPI_ERR_OP: invalid operation",
        11 => "MPI_ERR_TOPOLOGY: invalid topology",
        12 => "MPI_ERR_DIMS: invalid dimension argument",
        13 => "MPI_ERR_ARG: invalid argument of some other kind",
        14 => "MPI_ERR_UNKNOWN: unknown error",
        15 => "MPI_ERR_TRUNCATE: message truncated on receive",
        16 => "MPI_ERR_OTHER: known error not in this list",
        17 => "MPI_ERR_INTERN: internal MPI (implementation) error",
        18 => "MPI_ERR_PENDING: pending request",
        19 => "MPI_ERR_IN_STATUS: error code is in status",
        20 => "MPI_ERR_ACCESS: permission denied",
        21 => "MPI_ERR_AMODE: error related to the amode passed to MPI_FILE_OPEN",
        22 => "MPI_ERR_ASSERT: invalid assertion argument",
        23 => "MPI_ERR_BAD_FILE: invalid file name",
        24 => "MPI_ERR_BASE: invalid base argument",
        25 => "MPI_ERR_CONVERSION: error in a user data conversion function",
        26 => "MPI_ERR_DISP: invalid displacement argument",
        27 => "MPI_ERR_DUP_DATAREP: data representation identifier already registered",
        28 => "MPI_ERR_FILE_EXISTS: file exists",
        29 => "MPI_ERR_FILE_IN_USE: file operation could not be completed, the file is in use",
        30 => "MPI_ERR_FILE: invalid file handle",
        31 => "MPI_ERR_INFO_KEY: key longer than MPI_MAX_INFO_KEY",
        32 => "MPI_ERR_INFO_NOKEY: invalid key passed to MPI_INFO_DELETE",
        33 => "MPI_ERR_INFO_VALUE: value longer than MPI_MAX_INFO_VAL",
        34 => "MPI_ERR_INFO: invalid info argument",
        35 => "MPI_ERR_IO: other I/O error",
        36 => "MPI_ERR_KEYVAL: invalid keyval",
        37 => "MPI_ERR_LOCKTYPE: invalid locktype argument",
        38 => "MPI_ERR_NAME: invalid service name",
        39 => "MPI_ERR_NO_MEM: out of memory",
        40 => "MPI_ERR_NOT_SAME: collective argument not identical on all processes",
        41 => "MPI_ERR_NO_SPACE: not enough space",
        42 => "MPI_ERR_NO_SUCH_FILE: file does not exist",
        43 => "MPI_ERR_PORT: invalid port name",
        44 => "MPI_ERR_QUOTA: quota exceeded",
        45 => "MPI_ERR_READ_ONLY: read-only file or file system",
        46 => "MPI_ERR_RMA_ATTACH: memory cannot be attached",
        47 => "MPI_ERR_RMA_CONFLICT: conflicting accesses to a window",
        48 => "MPI_ERR_RMA_RANGE: target memory is not part of the window",
        49 => "MPI_ERR_RMA_SHARED: memory cannot be shared",
        50 => "MPI_ERR_RMA_SYNC: wrong synchronization of RMA calls",
        51 => "MPI_ERR_SERVICE: invalid service name",
        52 => "MPI_ERR_SIZE: invalid size argument",
        53 => "MPI_ERR_SPAWN: error in spawning processes",
        54 => "MPI_ERR_UNSUPPORTED_DATAREP: unsupported data representation",
        55 => "MPI_ERR_UNSUPPORTED_OPERATION: unsupported operation",
        56 => "MPI_ERR_WIN: invalid window argument",
        57 => "MPI_ERR_RMA_FLAVOR: passed window has the wrong flavor",
        58 => "MPI_ERR_PROC_ABORTED: operation involves a process that aborted",
        59 => "MPI_ERR_VALUE_TOO_LARGE: value too large to store",
        60 => "MPI_ERR_SESSION: invalid session handle",
        61 => "MPI_ERR_ERRHANDLER: invalid error handler",
        _ => return None,
    })
}

/// Runs a function body: catches a panic (reported as `MPI_ERR_INTERN`),
/// invokes the error handler of `comm` on an error, returns the code.
///
/// Inlined into each exported function; on success it costs what
/// `catch_unwind` costs when nothing unwinds (a call through the `try`
/// intrinsic, no landing-pad work) and a test of the body's one-word
/// result. The handler's dispatch, the panic's message and the error's
/// box are on the `#[cold]` paths only.
#[inline(always)]
pub(crate) fn finish(func: &'static str, comm: Handle, body: impl FnOnce() -> R<()>) -> c_int {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(())) => abi::SUCCESS,
        Ok(Err(e)) => raise(func, comm, e),
        Err(p) => panicked(func, comm, p),
    }
}

/// A panic caught by [`finish`]: `MPI_ERR_INTERN` through the handler.
#[cold]
#[inline(never)]
fn panicked(func: &str, comm: Handle, p: Box<dyn std::any::Any + Send>) -> c_int {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    raise(
        func,
        comm,
        err(abi::ERR_INTERN, format!("internal error: {what}")),
    )
}

/// Invokes the error handler of `comm` (that of `MPI_COMM_WORLD` if `comm`
/// is not a valid communicator) on `e`; returns the error class if the
/// handler returns.
#[cold]
#[inline(never)]
pub(crate) fn raise(func: &str, comm: Handle, e: Error) -> c_int {
    let handler = crate::state::errhandler_of(comm);
    if handler == abi::ERRORS_RETURN {
        return e.class;
    }
    if let Some((_, f)) = user_errhandler(handler) {
        // The program's handler, called with the communicator and the code;
        // if it returns, so does the function, with the code.
        let obj = if crate::state::comm(comm).is_ok() {
            comm
        } else {
            abi::COMM_WORLD
        };
        return call_user(f, obj, e.class);
    }
    let name = class_string(e.class)
        .map(str::to_string)
        .or_else(|| added_string(e.class))
        .unwrap_or_else(|| "unknown error class".into());
    let name = name.split(':').next().unwrap_or(&name).to_string();
    let rank = crate::state::world_rank()
        .map(|r| format!("rank {r}"))
        .unwrap_or_else(|| "a rank".into());
    eprintln!("dos-mpi: {rank}: {func}: {name}: {}", e.msg);
    eprintln!("dos-mpi: {rank}: the error handler is MPI_ERRORS_ARE_FATAL: aborting the job");
    crate::state::abort(e.class.max(1), &format!("{func}: {name}"))
}

// ----- user error handlers -----

/// The kind of object a user error handler is for (the file and window
/// modules make theirs with [`create_errhandler`] and check them with
/// [`check_handler`]).
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandlerKind {
    Comm,
    File,
    Win,
    Session,
}

/// `handler(&object, &code)` (the C signature has a trailing `...`, which
/// the caller may leave empty).
pub(crate) type HandlerFn = unsafe extern "C" fn(*mut Handle, *mut c_int);

/// The first handle of a user error handler.
const ERRH_BASE: Handle = 0x7c00_0000;

/// The error handlers the program made (never reused: a freed one may still
/// be set on an object, as the standard allows).
static HANDLERS: Mutex<Vec<(HandlerKind, usize)>> = Mutex::new(Vec::new());

/// A new error handler of `kind` calling `f`; the generic piece behind
/// `MPI_Comm_create_errhandler` (files and windows use it too).
pub(crate) fn create_errhandler(kind: HandlerKind, f: usize) -> R<Handle> {
    if f == 0 {
        return Err(err(abi::ERR_ARG, "null error handler function"));
    }
    let mut t = HANDLERS.lock().unwrap_or_else(|p| p.into_inner());
    t.push((kind, f));
    Ok(ERRH_BASE + 8 * (t.len() - 1))
}

/// The kind and function of a user error handler handle.
pub(crate) fn user_errhandler(h: Handle) -> Option<(HandlerKind, usize)> {
    let off = h.checked_sub(ERRH_BASE)?;
    if off % 8 != 0 {
        return None;
    }
    let t = HANDLERS.lock().unwrap_or_else(|p| p.into_inner());
    t.get(off / 8).copied()
}

/// Calls user handler function `f` on object `obj` with `code`; returns the code.
pub(crate) fn call_user(f: usize, obj: Handle, code: c_int) -> c_int {
    // SAFETY: `f` is the program's handler function, as given to
    // MPI_*_create_errhandler.
    let f: HandlerFn = unsafe { std::mem::transmute::<usize, HandlerFn>(f) };
    let mut o = obj;
    let mut c = code;
    // SAFETY: a C function called with the arguments the standard specifies.
    unsafe { f(&mut o, &mut c) };
    code
}

/// Whether `h` is an error handler that may be set on an object of `kind`.
pub(crate) fn check_handler(h: Handle, kind: HandlerKind) -> R<()> {
    match h {
        abi::ERRORS_ARE_FATAL | abi::ERRORS_RETURN | abi::ERRORS_ABORT => Ok(()),
        _ => match user_errhandler(h) {
            Some((k, _)) if k == kind => Ok(()),
            Some((k, _)) => Err(err(
                abi::ERR_ARG,
                format!("error handler {h:#x} is for {k:?} objects, not {kind:?}"),
            )),
            None => Err(err(abi::ERR_ARG, format!("invalid error handler {h:#x}"))),
        },
    }
}

// ----- error classes and codes the program adds -----

/// Classes and codes of `MPI_Add_error_class`/`code`, above `MPI_ERR_LASTCODE`.
#[derive(Default)]
struct Added {
    /// code -> class (a class maps to itself).
    class_of: std::collections::BTreeMap<c_int, c_int>,
    strings: std::collections::HashMap<c_int, String>,
}

static ADDED: Mutex<Option<Added>> = Mutex::new(None);

fn added<T>(f: impl FnOnce(&mut Added) -> T) -> T {
    let mut g = ADDED.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(Added::default))
}

/// The largest code or class in use (`MPI_LASTUSEDCODE`).
pub(crate) fn last_used_code() -> c_int {
    added(|a| a.class_of.keys().next_back().copied())
        .unwrap_or(abi::ERR_LASTCODE)
        .max(abi::ERR_LASTCODE)
}

/// A new error class.
pub(crate) fn add_class() -> c_int {
    let c = last_used_code() + 1;
    added(|a| a.class_of.insert(c, c));
    c
}

/// A new error code of `class` (a predefined or an added class).
pub(crate) fn add_code(class: c_int) -> R<c_int> {
    let ok = class_string(class).is_some() || added(|a| a.class_of.get(&class) == Some(&class));
    if !ok {
        return Err(err(abi::ERR_ARG, format!("{class} is not an error class")));
    }
    let c = last_used_code() + 1;
    added(|a| a.class_of.insert(c, class));
    Ok(c)
}

/// Sets the string of an added code or class.
pub(crate) fn add_string(code: c_int, s: String) -> R<()> {
    added(|a| {
        if !a.class_of.contains_key(&code) {
            return Err(err(
                abi::ERR_ARG,
                format!("{code} is not an error code the program added"),
            ));
        }
        a.strings.insert(code, s);
        Ok(())
    })
}

/// The class of `code`: itself for a predefined class, the class it was
/// added to for an added code.
pub(crate) fn class_of(code: c_int) -> Option<c_int> {
    if class_string(code).is_some() {
        return Some(code);
    }
    added(|a| a.class_of.get(&code).copied())
}

/// The string of an added code or class (empty until one is set).
pub(crate) fn added_string(code: c_int) -> Option<String> {
    added(|a| {
        a.class_of
            .contains_key(&code)
            .then(|| a.strings.get(&code).cloned().unwrap_or_default())
    })
}

/// Removes an added class (`class`: true; it must have no codes) or code.
pub(crate) fn remove_added(code: c_int, class: bool) -> R<()> {
    added(|a| {
        let is_class = a.class_of.get(&code) == Some(&code);
        if !a.class_of.contains_key(&code) || is_class != class {
            let what = if class { "class" } else { "code" };
            return Err(err(
                abi::ERR_ARG,
                format!("{code} is not an error {what} the program added"),
            ));
        }
        if class && a.class_of.iter().any(|(&k, &c)| c == code && k != code) {
            return Err(err(
                abi::ERR_ARG,
                format!("error class {code} still has codes"),
            ));
        }
        if a.strings.contains_key(&code) {
            return Err(err(
                abi::ERR_ARG,
                format!("error {code} still has a string"),
            ));
        }
        a.class_of.remove(&code);
        Ok(())
    })
}

/// Removes the string of an added code or class.
pub(crate) fn remove_string(code: c_int) -> R<()> {
    added(|a| match a.strings.remove(&code) {
        Some(_) => Ok(()),
        None => Err(err(
            abi::ERR_ARG,
            format!("error {code} has no string the program added"),
        )),
    })
}
