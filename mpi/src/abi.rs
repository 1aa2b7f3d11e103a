//! Handle values, constants and the status layout of the MPI-5 standard ABI,
//! as `mpi/include/mpi.h` declares them for C.
//!
//! Handles cross the C interface as pointer-sized integers (`usize` here, a
//! pointer to an incomplete struct in C: the same bits on every platform dos
//! supports). Predefined handles are small values; handles the library makes
//! (communicators, requests) start at [`FIRST_DYNAMIC`], far above them.

use std::ffi::c_int;

/// A handle as it crosses the C interface.
pub type Handle = usize;

/// Operations (`MPI_Op`).
pub mod op {
    pub const NULL: usize = 0x020;
    pub const SUM: usize = 0x021;
    pub const MIN: usize = 0x022;
    pub const MAX: usize = 0x023;
    pub const PROD: usize = 0x024;
    pub const BAND: usize = 0x028;
    pub const BOR: usize = 0x029;
    pub const BXOR: usize = 0x02a;
    pub const LAND: usize = 0x030;
    pub const LOR: usize = 0x031;
    pub const LXOR: usize = 0x032;
    pub const MINLOC: usize = 0x038;
    pub const MAXLOC: usize = 0x039;
    pub const REPLACE: usize = 0x03c;
    pub const NO_OP: usize = 0x03d;
}

pub const COMM_NULL: usize = 0x100;
pub const COMM_WORLD: usize = 0x101;
pub const COMM_SELF: usize = 0x102;
pub const GROUP_NULL: usize = 0x108;
pub const GROUP_EMPTY: usize = 0x109;
pub const INFO_NULL: usize = 0x130;
pub const INFO_ENV: usize = 0x131;
pub const ERRHANDLER_NULL: usize = 0x140;
pub const ERRORS_ARE_FATAL: usize = 0x141;
pub const ERRORS_RETURN: usize = 0x142;
pub const ERRORS_ABORT: usize = 0x143;
pub const REQUEST_NULL: usize = 0x180;
pub const DATATYPE_NULL: usize = 0x200;

/// The first handle value the library gives to an object it makes.
pub const FIRST_DYNAMIC: usize = 0x1_0000;

/// `MPI_IN_PLACE`.
pub const IN_PLACE: usize = 1;

// Error classes.
pub const SUCCESS: c_int = 0;
pub const ERR_BUFFER: c_int = 1;
pub const ERR_COUNT: c_int = 2;
pub const ERR_TYPE: c_int = 3;
pub const ERR_TAG: c_int = 4;
pub const ERR_COMM: c_int = 5;
pub const ERR_RANK: c_int = 6;
pub const ERR_REQUEST: c_int = 7;
pub const ERR_ROOT: c_int = 8;
pub const ERR_GROUP: c_int = 9;
pub const ERR_OP: c_int = 10;
pub const ERR_TOPOLOGY: c_int = 11;
pub const ERR_DIMS: c_int = 12;
pub const ERR_ARG: c_int = 13;
pub const ERR_UNKNOWN: c_int = 14;
pub const ERR_TRUNCATE: c_int = 15;
pub const ERR_OTHER: c_int = 16;
pub const ERR_INTERN: c_int = 17;
pub const ERR_PENDING: c_int = 18;
pub const ERR_IN_STATUS: c_int = 19;
pub const ERR_KEYVAL: c_int = 36;
pub const ERR_NO_MEM: c_int = 39;
pub const ERR_PROC_ABORTED: c_int = 44;
pub const ERR_UNSUPPORTED_OPERATION: c_int = 58;
pub const ERR_ERRHANDLER: c_int = 61;
pub const ERR_LASTCODE: c_int = 0x3fff;

// Sentinels.
pub const ANY_SOURCE: c_int = -1;
pub const PROC_NULL: c_int = -2;
pub const ROOT: c_int = -3;
pub const ANY_TAG: c_int = -31;
pub const UNDEFINED: c_int = -32766;
pub const KEYVAL_INVALID: c_int = -127;

// Thread levels.
pub const THREAD_SINGLE: c_int = 0;
pub const THREAD_FUNNELED: c_int = 1;
pub const THREAD_SERIALIZED: c_int = 2;
pub const THREAD_MULTIPLE: c_int = 7;

// Comparisons.
pub const IDENT: c_int = 101;
pub const CONGRUENT: c_int = 102;
pub const SIMILAR: c_int = 103;
pub const UNEQUAL: c_int = 104;

// Split types.
pub const COMM_TYPE_SHARED: c_int = 1001;
pub const COMM_TYPE_HW_UNGUIDED: c_int = 1002;
pub const COMM_TYPE_HW_GUIDED: c_int = 1003;
pub const COMM_TYPE_RESOURCE_GUIDED: c_int = 1004;

// Attribute keys of MPI_COMM_WORLD.
pub const TAG_UB: c_int = 10001;
pub const IO: c_int = 10002;
pub const HOST: c_int = 10003;
pub const WTIME_IS_GLOBAL: c_int = 10004;
pub const APPNUM: c_int = 10005;
pub const LASTUSEDCODE: c_int = 10006;
pub const UNIVERSE_SIZE: c_int = 10007;

// Topology kinds (`MPI_Topo_test`).
pub const CART: c_int = 211;
pub const GRAPH: c_int = 212;
pub const DIST_GRAPH: c_int = 213;
/// `MPI_UNWEIGHTED` and `MPI_WEIGHTS_EMPTY` (pointer values).
pub const UNWEIGHTED: usize = 10;
pub const WEIGHTS_EMPTY: usize = 11;

/// String lengths.
pub const MAX_ERROR_STRING: usize = 512;
pub const MAX_LIBRARY_VERSION_STRING: usize = 8192;
pub const MAX_PROCESSOR_NAME: usize = 256;
pub const MAX_OBJECT_NAME: usize = 128;

/// The largest tag (`MPI_TAG_UB`): dos takes every non-negative `i32`.
pub const TAG_UB_VALUE: c_int = i32::MAX;

/// `MPI_Status`: three public fields, then five ints private to the
/// library. dos keeps the received length in bytes in the first two
/// (`MPI_Get_count` divides it by the type size) and the cancelled flag in
/// the third.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(non_snake_case)]
pub struct Status {
    pub MPI_SOURCE: c_int,
    pub MPI_TAG: c_int,
    pub MPI_ERROR: c_int,
    pub private: [c_int; 5],
}

impl Status {
    /// A status with these fields and `bytes` received.
    pub fn new(source: c_int, tag: c_int, error: c_int, bytes: u64) -> Status {
        Status {
            MPI_SOURCE: source,
            MPI_TAG: tag,
            MPI_ERROR: error,
            private: [
                bytes as u32 as c_int,
                (bytes >> 32) as u32 as c_int,
                0,
                0,
                0,
            ],
        }
    }

    /// The empty status of the standard (source `MPI_ANY_SOURCE`, tag
    /// `MPI_ANY_TAG`, no data): what a send or an inactive request yields.
    pub fn empty() -> Status {
        Status::new(ANY_SOURCE, ANY_TAG, SUCCESS, 0)
    }

    /// What a receive from `MPI_PROC_NULL` yields.
    pub fn proc_null() -> Status {
        Status::new(PROC_NULL, ANY_TAG, SUCCESS, 0)
    }

    /// Bytes received.
    pub fn bytes(&self) -> u64 {
        (self.private[0] as u32 as u64) | ((self.private[1] as u32 as u64) << 32)
    }

    /// True if the request was cancelled.
    pub fn cancelled(&self) -> bool {
        self.private[2] != 0
    }
}

const _: () = assert!(std::mem::size_of::<Status>() == 8 * std::mem::size_of::<c_int>());
