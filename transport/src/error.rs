//! The one error type of the transport crate.

use std::io;

/// What went wrong in a transport operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operation would block: a ring or queue is full. Retry after progress.
    #[error("transport busy: no space to send to peer {peer}")]
    Busy {
        /// The destination peer.
        peer: usize,
    },
    /// A message larger than the backend's limit.
    #[error("message of {len} bytes exceeds the backend limit of {max} bytes")]
    TooLarge {
        /// Requested length.
        len: usize,
        /// The backend's maximum.
        max: usize,
    },
    /// A peer index outside the endpoint's peer set.
    #[error("no such peer {peer} (the endpoint has {npeers} peers)")]
    NoSuchPeer {
        /// Requested peer.
        peer: usize,
        /// Number of peers.
        npeers: usize,
    },
    /// A remote memory access outside the registered bounds of the key.
    #[error(
        "remote access of {len} bytes at offset {offset} is outside a region of {region_len} bytes"
    )]
    RemoteAccess {
        /// Offset into the region.
        offset: usize,
        /// Length of the access.
        len: usize,
        /// Registered length of the region.
        region_len: usize,
    },
    /// A packed remote key or address that does not decode.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A shared-memory segment whose header is not one this version understands.
    #[error("incompatible shared-memory segment: {reason}")]
    BadSegment {
        /// Why it was rejected.
        reason: &'static str,
    },
    /// More ranks on one node than a shared segment serves.
    #[error("too many ranks on one node for the shared segment: {nranks} ranks, at most {max}")]
    TooManyLocalRanks {
        /// Ranks asked for.
        nranks: usize,
        /// The most a segment serves (`shm::wire::MAX_RANKS`).
        max: usize,
    },
    /// The node's pool of shared-memory rings is used up: no ring can be
    /// carved for a new pair of ranks. Permanent for this pair (rings are
    /// never freed); the pairs that have rings are not affected.
    #[error(
        "no shared-memory ring left for peer {peer}: all {rings} rings of {ring_bytes} bytes of \
         this node are in use (smaller rings, DOS_SHM_RING_BYTES, make more)"
    )]
    RingsExhausted {
        /// The destination peer.
        peer: usize,
        /// Rings in the node's pool.
        rings: usize,
        /// Bytes per ring.
        ring_bytes: usize,
    },
    /// The backend does not implement this operation.
    #[error("operation not supported by the {backend} backend: {op}")]
    Unsupported {
        /// Backend name.
        backend: &'static str,
        /// Operation name.
        op: &'static str,
    },
    /// A system call failed.
    #[error("{op} failed")]
    Sys {
        /// The failed operation.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The peer cannot be reached through this interface: its connection broke
    /// (an [`crate::Event::Disconnected`] was or will be delivered for it), or it
    /// was never connected through this backend.
    #[error("peer {peer} is unreachable through this interface")]
    PeerUnreachable {
        /// The destination peer.
        peer: usize,
    },
    /// A connection failed authentication with the job's secret.
    #[error("authentication failed: {reason}")]
    AuthFailed {
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Connection set-up did not complete in time.
    #[error("connection set-up timed out; peers not connected: {missing:?}")]
    ConnectTimeout {
        /// Indices of the peers that were not connected.
        missing: Vec<usize>,
    },
}

impl Error {
    /// Wraps the current `errno` as a [`Error::Sys`] for `op`.
    #[cold]
    pub fn last_os(op: &'static str) -> Self {
        Error::Sys {
            op,
            source: io::Error::last_os_error(),
        }
    }
}

/// `e` with its sources, on one line (`error: source: source's source`), for
/// the log lines of a backend that reports an error and goes on.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// Result alias of the transport crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_shows_every_source_on_one_line() {
        let e = Error::Sys {
            op: "connect",
            source: io::Error::other("refused"),
        };
        assert_eq!(chain(&e), "connect failed: refused");
        assert_eq!(
            chain(&Error::Busy { peer: 3 }),
            Error::Busy { peer: 3 }.to_string()
        );
    }
}
