//! The one error type of `dos-bench`.

use std::path::PathBuf;

/// What went wrong in a benchmark run or a comparison.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A dos operation failed.
    #[cfg(feature = "dos")]
    #[error("dos {op} failed")]
    Dos {
        /// The operation (`init`, `send`, `allreduce`, ...).
        op: &'static str,
        /// The error dos returned.
        #[source]
        source: dos::Error,
    },
    /// MPI could not be initialized (it already was, or the library refused).
    #[cfg(feature = "mpi")]
    #[error("MPI initialization failed")]
    MpiInit,
    /// An MPI call the bindings make directly (one-sided) failed or was refused.
    #[cfg(feature = "mpi")]
    #[error("{op} failed: {what}")]
    Mpi {
        /// The MPI function.
        op: &'static str,
        /// What went wrong.
        what: String,
    },
    /// The job has fewer ranks than the benchmark needs.
    #[error("{bench} needs at least {need} ranks, the job has {have}")]
    TooFewRanks {
        /// The benchmark.
        bench: &'static str,
        /// Ranks it needs.
        need: usize,
        /// Ranks the job has.
        have: usize,
    },
    /// A collective returned wrong data.
    #[error("{bench}: wrong result at {size} bytes on rank {rank}: {what}")]
    Validation {
        /// The benchmark.
        bench: &'static str,
        /// Message size in bytes.
        size: usize,
        /// The rank that saw it.
        rank: usize,
        /// What was wrong.
        what: String,
    },
    /// A file operation of `dosbench io` failed.
    #[error("{op} failed: {what}")]
    Io {
        /// The operation (`File::open`, `MPI_File_write_at`, ...).
        op: &'static str,
        /// What went wrong.
        what: String,
    },
    /// The command line does not parse.
    #[error("{0}")]
    Usage(String),
    /// A results file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a results file is not a dosbench JSON record.
    #[error("{path}:{line}: not a dosbench JSON record")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// A socket operation of the raw TCP baseline failed.
    #[error("raw-tcp: {what}")]
    Socket {
        /// What was being done (`connecting to 10.0.0.2:5000`, ...).
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A raw TCP request header is out of bounds or malformed.
    #[error("raw-tcp: bad request header")]
    BadRequest(#[source] crate::rawtcp::BadRequest),
    /// The raw TCP peer broke the protocol (closed early, wrong acknowledgement).
    #[error("raw-tcp: {0}")]
    Protocol(String),
    /// The raw TCP peer did not show up or stopped making progress.
    #[error("raw-tcp: {what}: nothing for {secs} s, giving up")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long, in seconds.
        secs: u64,
    },
}

/// Result alias of `dos-bench`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
