//! Error classes, their strings, and the error handlers.
//!
//! Every function body returns [`R`]; [`finish`] turns it into the return
//! code after invoking the error handler of the communicator concerned:
//! `MPI_ERRORS_RETURN` returns the class, `MPI_ERRORS_ARE_FATAL` and
//! `MPI_ERRORS_ABORT` print the error and end the job through
//! `dos::World::abort`, which `dosrun` reports as a failed rank.

use std::ffi::c_int;

use crate::abi::{self, Handle};

/// An MPI error: its class and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Error {
    pub class: c_int,
    pub msg: String,
}

/// The result of a function body.
pub(crate) type R<T> = Result<T, Error>;

/// An error of class `class`.
pub(crate) fn err(class: c_int, msg: impl Into<String>) -> Error {
    Error {
        class,
        msg: msg.into(),
    }
}

impl From<dos::Error> for Error {
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
        Error {
            class,
            msg: e.to_string(),
        }
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
        44 => "MPI_ERR_PROC_ABORTED: operation involves a process that aborted",
        45 => "MPI_ERR_QUOTA: quota exceeded",
        46 => "MPI_ERR_READ_ONLY: read-only file or file system",
        47 => "MPI_ERR_RMA_ATTACH: memory cannot be attached",
        48 => "MPI_ERR_RMA_CONFLICT: conflicting accesses to a window",
        49 => "MPI_ERR_RMA_RANGE: target memory is not part of the window",
        50 => "MPI_ERR_RMA_SHARED: memory cannot be shared",
        51 => "MPI_ERR_RMA_SYNC: wrong synchronization of RMA calls",
        52 => "MPI_ERR_RMA_FLAVOR: passed window has the wrong flavor",
        53 => "MPI_ERR_SERVICE: invalid service name",
        54 => "MPI_ERR_SESSION: invalid session handle",
        55 => "MPI_ERR_SIZE: invalid size argument",
        56 => "MPI_ERR_SPAWN: error in spawning processes",
        57 => "MPI_ERR_UNSUPPORTED_DATAREP: unsupported data representation",
        58 => "MPI_ERR_UNSUPPORTED_OPERATION: unsupported operation",
        59 => "MPI_ERR_VALUE_TOO_LARGE: value too large to store",
        60 => "MPI_ERR_WIN: invalid window argument",
        61 => "MPI_ERR_ERRHANDLER: invalid error handler",
        _ => return None,
    })
}

/// Runs a function body: catches a panic (reported as `MPI_ERR_INTERN`),
/// invokes the error handler of `comm` on an error, returns the code.
pub(crate) fn finish(func: &str, comm: Handle, body: impl FnOnce() -> R<()>) -> c_int {
    let r = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(err(abi::ERR_INTERN, format!("internal error: {what}")))
        }
    };
    match r {
        Ok(()) => abi::SUCCESS,
        Err(e) => raise(func, comm, e),
    }
}

/// Invokes the error handler of `comm` (that of `MPI_COMM_WORLD` if `comm`
/// is not a valid communicator) on `e`; returns the error class if the
/// handler returns.
pub(crate) fn raise(func: &str, comm: Handle, e: Error) -> c_int {
    let handler = crate::state::errhandler_of(comm);
    if handler == abi::ERRORS_RETURN {
        return e.class;
    }
    let name = class_string(e.class).unwrap_or("unknown error class");
    let name = name.split(':').next().unwrap_or(name);
    let rank = crate::state::world_rank()
        .map(|r| format!("rank {r}"))
        .unwrap_or_else(|| "a rank".into());
    eprintln!("dos-mpi: {rank}: {func}: {name}: {}", e.msg);
    eprintln!("dos-mpi: {rank}: the error handler is MPI_ERRORS_ARE_FATAL: aborting the job");
    crate::state::abort(e.class.max(1), &format!("{func}: {name}"))
}
