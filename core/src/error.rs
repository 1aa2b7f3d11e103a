//! The one error type of the `dos` crate.

use std::io;

/// What went wrong in a `dos` operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport below failed.
    #[error("transport error")]
    Transport(#[from] dos_transport::Error),
    /// Talking to the launcher's wire-up service failed.
    #[error("wire-up {op} failed")]
    Wireup {
        /// The wire-up operation (`connect`, `put`, `fence`, `get`, ...).
        op: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The wire-up service sent something this version does not understand.
    #[error("wire-up protocol error: {reason}")]
    WireupProtocol {
        /// Why the frame was rejected.
        reason: &'static str,
    },
    /// A key that no rank put before the last fence.
    #[error("wire-up key {key:?} not found")]
    KeyNotFound {
        /// The key asked for.
        key: String,
    },
    /// The environment set by the launcher is missing or malformed.
    #[error("bad launcher environment: {var}: {reason}")]
    Environment {
        /// The variable.
        var: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A rank outside the communicator.
    #[error("rank {rank} out of range for a communicator of size {size}")]
    InvalidRank {
        /// The rank given.
        rank: usize,
        /// The communicator's size.
        size: usize,
    },
    /// A negative or reserved tag.
    #[error("invalid tag {tag} (user tags are 0..=i32::MAX)")]
    InvalidTag {
        /// The tag given.
        tag: i32,
    },
    /// A message longer than the receive buffer (MPI_ERR_TRUNCATE).
    #[error("message of {len} bytes truncated: receive buffer holds {capacity} bytes")]
    Truncated {
        /// Length of the message.
        len: usize,
        /// Size of the receive buffer.
        capacity: usize,
    },
    /// A message whose length is not a whole number of elements of the receive type.
    #[error("message of {len} bytes is not a whole number of {elem}-byte elements")]
    ElementMismatch {
        /// Length of the message.
        len: usize,
        /// Element size.
        elem: usize,
    },
    /// Buffers or counts that do not fit the operation.
    #[error("invalid buffer for {op}: {reason}")]
    InvalidBuffer {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An argument outside its domain.
    #[error("invalid argument to {op}: {reason}")]
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A protocol message from a peer that does not decode.
    #[error("malformed message from rank {src}: {reason}")]
    Protocol {
        /// The sending peer (world rank).
        src: usize,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A peer died or its connection broke.
    #[error("peer rank {rank} failed")]
    PeerFailed {
        /// The failed peer (world rank).
        rank: usize,
    },
    /// A one-sided access outside the target's window (nothing was touched).
    #[error("access of {len} bytes at byte {offset} of the window of rank {rank}, which has {window_len} bytes")]
    RemoteAccess {
        /// Target rank (in the window's communicator).
        rank: usize,
        /// Byte offset of the access.
        offset: usize,
        /// Bytes accessed.
        len: usize,
        /// Bytes in the target's window.
        window_len: usize,
    },
    /// The operation does not exist in this build or on this transport.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// [`crate::init`] called again in a process that has already joined the
    /// job under `dosrun` (from another thread, or after its world ended): a
    /// process is one rank, and its [`crate::World`] is driven by the thread
    /// that called `init` (see the crate docs, "Thread safety").
    #[error("dos::init called again: this process already joined the job as one rank")]
    AlreadyJoined,
    /// A remote procedure call reached its target but did not give a result.
    #[error("RPC {handler:?} on rank {rank}: {failure}")]
    Rpc {
        /// The target (world rank).
        rank: usize,
        /// The handler's name (as the caller gave it).
        handler: String,
        /// What happened there.
        failure: RpcFailure,
    },
}

/// Why a remote procedure call gave no result; see [`Error::Rpc`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcFailure {
    /// The target has no handler of that name.
    #[error("no such handler")]
    UnknownHandler,
    /// The arguments did not decode as the handler's argument type.
    #[error("arguments do not decode: {0}")]
    BadArguments(String),
    /// The handler returned an error (its message).
    #[error("the handler failed: {0}")]
    Failed(String),
    /// The handler panicked (its message); the target keeps serving.
    #[error("the handler panicked: {0}")]
    Panicked(String),
    /// The result did not decode as the caller's result type.
    #[error("the result does not decode: {0}")]
    BadResult(String),
}

/// Result alias of the `dos` crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
