//! The error type of `dos::io`.

use super::plan::PlanError;

/// What kind of file-system failure an [`Error::Fs`] is, so that a program
/// can act on it without parsing messages (`MPI_ERR_NO_SUCH_FILE`,
/// `MPI_ERR_FILE_EXISTS`, `MPI_ERR_NO_SPACE`, ... in MPI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FsErrorKind {
    /// No such file or directory.
    NotFound,
    /// The file exists (an exclusive create).
    Exists,
    /// A directory where a file was needed.
    IsADirectory,
    /// A path component that is not a directory.
    NotADirectory,
    /// A path that is not a valid dosfs name.
    InvalidPath,
    /// No space left on a server's target.
    NoSpace,
    /// A server could not be reached or stopped answering.
    ServerDown,
    /// A read met a corrupted chunk (no bytes were returned).
    Corrupt,
    /// The address file is missing or malformed.
    AddrFile,
    /// Authentication with a server failed.
    Auth,
    /// Anything else the file system reported.
    Other,
}

impl FsErrorKind {
    /// The kind of a dos-fs error.
    pub fn of(e: &dos_fs::Error) -> FsErrorKind {
        use dos_fs::Error as E;
        match e {
            E::NotFound { .. } => FsErrorKind::NotFound,
            E::Exists { .. } => FsErrorKind::Exists,
            E::IsADirectory { .. } => FsErrorKind::IsADirectory,
            E::NotADirectory { .. } => FsErrorKind::NotADirectory,
            E::InvalidPath { .. } => FsErrorKind::InvalidPath,
            E::ServerDown { .. } => FsErrorKind::ServerDown,
            E::CorruptData { .. } | E::ChunkCorrupt { .. } => FsErrorKind::Corrupt,
            E::AddrFile { .. } => FsErrorKind::AddrFile,
            E::Auth { .. } => FsErrorKind::Auth,
            e if e.is_no_space() => FsErrorKind::NoSpace,
            _ => FsErrorKind::Other,
        }
    }

    /// The kind's code on the wire (collectives agree on errors by it).
    pub(crate) fn code(self) -> u64 {
        self as u64
    }

    /// The kind of a code from [`FsErrorKind::code`].
    pub(crate) fn from_code(c: u64) -> FsErrorKind {
        const ALL: [FsErrorKind; 11] = [
            FsErrorKind::NotFound,
            FsErrorKind::Exists,
            FsErrorKind::IsADirectory,
            FsErrorKind::NotADirectory,
            FsErrorKind::InvalidPath,
            FsErrorKind::NoSpace,
            FsErrorKind::ServerDown,
            FsErrorKind::Corrupt,
            FsErrorKind::AddrFile,
            FsErrorKind::Auth,
            FsErrorKind::Other,
        ];
        ALL.iter()
            .copied()
            .find(|k| k.code() == c)
            .unwrap_or(FsErrorKind::Other)
    }
}

/// Everything that can fail in `dos::io`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file system failed (on this rank, or, in a collective call, on
    /// the rank named in the message: every rank of the call returns the
    /// same error).
    #[error("{message}")]
    Fs {
        /// What kind of failure.
        kind: FsErrorKind,
        /// The file system's message (path, server, offset).
        message: String,
    },
    /// Communication between the ranks failed.
    #[error("communication failed")]
    Comm(#[from] crate::Error),
    /// A bad argument (checked before anything is sent).
    #[error("invalid argument to {op}: {reason}")]
    InvalidArgument {
        /// The call.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The file's access mode does not allow the call (a write to a file
    /// opened read-only, a read of one opened write-only).
    #[error("{op} on a file opened {mode}")]
    Access {
        /// The call.
        op: &'static str,
        /// The access mode.
        mode: &'static str,
    },
    /// A collective call failed on another rank in a way that is not a
    /// file-system error (its communication, or a bad argument there).
    #[error("{op} failed on rank {rank}: {message}")]
    Elsewhere {
        /// The call.
        op: &'static str,
        /// The first rank (of the file's communicator) that failed.
        rank: usize,
        /// Its error.
        message: String,
    },
}

impl Error {
    /// The file-system kind, for an [`Error::Fs`].
    pub fn fs_kind(&self) -> Option<FsErrorKind> {
        match self {
            Error::Fs { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

impl From<dos_fs::Error> for Error {
    fn from(e: dos_fs::Error) -> Error {
        Error::Fs {
            kind: FsErrorKind::of(&e),
            message: e.to_string(),
        }
    }
}

impl From<PlanError> for Error {
    fn from(e: PlanError) -> Error {
        Error::InvalidArgument {
            op: "collective I/O",
            reason: e.to_string(),
        }
    }
}

/// A result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
