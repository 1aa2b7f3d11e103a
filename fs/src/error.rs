//! The one error type of dos-fs.

use std::io;
use std::path::PathBuf;

/// A result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can fail in dosfs: its servers, its metadata, its chunks,
/// its wire protocol and its client.
///
/// Variants are named for what failed and carry what a user needs to act:
/// the path, the server, the file offset. Errors that a server sends to a
/// client travel as [`crate::wire::ErrorCode`] and come back as the same
/// variant (see [`crate::wire::WireError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A layout (stripe size, count, first server) that cannot be used.
    #[error("invalid layout: {reason}")]
    InvalidLayout {
        /// What is wrong with it.
        reason: String,
    },
    /// A file-system path that is not a valid dosfs name.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given (lossy for non-UTF-8).
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A directory that is not a dosfs target (no descriptor file).
    #[error("{dir}: not a dosfs target (no {file} in it)")]
    NotATarget {
        /// The directory.
        dir: PathBuf,
        /// The descriptor file that is missing.
        file: &'static str,
    },
    /// A target that belongs to another file system.
    #[error("{dir}: target belongs to file system {found}, not {expected}")]
    WrongFileSystem {
        /// The directory.
        dir: PathBuf,
        /// The file-system id in the target.
        found: String,
        /// The file-system id asked for.
        expected: String,
    },
    /// A target that belongs to another server of the file system.
    #[error("{dir}: target is server {found} of {servers}, not server {expected}")]
    WrongServerIndex {
        /// The directory.
        dir: PathBuf,
        /// The server index in the target.
        found: u32,
        /// The server count in the target.
        servers: u32,
        /// The index asked for.
        expected: u32,
    },
    /// A target written by a newer dosfs than this one.
    #[error("{dir}: target format {found} is newer than this dosfs supports ({supported}); upgrade dosfs")]
    NewerFormat {
        /// The directory.
        dir: PathBuf,
        /// The format version in the target.
        found: u32,
        /// The newest format this build reads.
        supported: u32,
    },
    /// A target written by an older dosfs, in a format this one no longer
    /// reads.
    #[error("{dir}: target format {found} is older than this dosfs reads ({supported} and later: one data object per file and a chunk map journal instead of one file per stripe); read it with the dosfs that wrote it (`dosfs cp` out) and format a new target")]
    OldFormat {
        /// The directory.
        dir: PathBuf,
        /// The format version in the target.
        found: u32,
        /// The oldest format this build reads.
        supported: u32,
    },
    /// Another server runs on this target ([`crate::lock`]).
    #[error("{}: target in use by another dosfs server{}; stop it first (two servers on one target would corrupt it)", dir.display(), holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    TargetBusy {
        /// The target directory.
        dir: PathBuf,
        /// The holder's pid, as it wrote it in the lock file.
        holder: Option<u32>,
    },
    /// A target descriptor or on-disk structure that cannot be parsed.
    #[error("{path}: malformed: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A target directory (or a directory inside it) that is a symbolic link.
    #[error("{path}: is a symbolic link; a target and its directories must be real directories")]
    Symlink {
        /// The offending path.
        path: PathBuf,
    },
    /// The metadata journal or snapshot is damaged before its tail.
    #[error("{path}: metadata corrupted at byte {offset}: {reason}")]
    MetaCorrupt {
        /// The journal or snapshot file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A chunk whose checksum or header does not match its data.
    #[error("corrupted chunk: inode {ino}, stripe {stripe} (file offset {file_offset}) on server {server}: {reason}")]
    ChunkCorrupt {
        /// The file's inode number.
        ino: u64,
        /// The stripe (global stripe index of the file).
        stripe: u64,
        /// The file offset where the chunk starts (for a bad block of a
        /// chunk, where that block starts).
        file_offset: u64,
        /// The server holding it.
        server: u32,
        /// What is wrong.
        reason: String,
    },
    /// A read of a file hit a corrupted chunk (the client's form of
    /// [`Error::ChunkCorrupt`], naming the file).
    #[error("{path}: corrupted data at offset {offset} (chunk of stripe {stripe} on server {server}); no bytes returned")]
    CorruptData {
        /// The file.
        path: String,
        /// The file offset where the corrupted chunk starts.
        offset: u64,
        /// The stripe.
        stripe: u64,
        /// The server holding it.
        server: u32,
    },
    /// No space left on a server's target; nothing was changed.
    #[error("no space left on device ({op} on server {server}); nothing was changed")]
    NoSpace {
        /// The operation.
        op: &'static str,
        /// The server.
        server: u32,
    },
    /// No such file or directory.
    #[error("{path}: no such file or directory")]
    NotFound {
        /// The path (or `#ino` for an inode).
        path: String,
    },
    /// The name exists already.
    #[error("{path}: already exists")]
    Exists {
        /// The path.
        path: String,
    },
    /// A path component that is not a directory.
    #[error("{path}: not a directory")]
    NotADirectory {
        /// The path.
        path: String,
    },
    /// A directory where a file was needed.
    #[error("{path}: is a directory")]
    IsADirectory {
        /// The path.
        path: String,
    },
    /// A directory that is not empty.
    #[error("{path}: directory not empty")]
    NotEmpty {
        /// The path.
        path: String,
    },
    /// The layout of a file is fixed when it is created.
    #[error("{path}: the layout of an existing file cannot change (set it on the directory, or on a new file)")]
    LayoutFixed {
        /// The path.
        path: String,
    },
    /// A request sent to a server that does not serve it (metadata to a data
    /// server, or a stripe to the wrong server).
    #[error("server {server} does not serve this request: {reason}")]
    WrongServer {
        /// The server.
        server: u32,
        /// Why.
        reason: &'static str,
    },
    /// A system call on a target failed.
    #[error("{op} {path}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Bytes from the network that are not a valid dosfs message.
    #[error("bad dosfs message: {reason}")]
    Protocol {
        /// What is wrong.
        reason: String,
    },
    /// A server could not be reached or stopped answering.
    #[error("server {server} ({addr}) is unreachable: {op}")]
    ServerDown {
        /// The server index.
        server: u32,
        /// Its address.
        addr: String,
        /// What failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A connection failed the file system's secret handshake.
    #[error("server {server}: authentication failed")]
    Auth {
        /// The server index (the peer's, as far as known).
        server: u32,
        /// Why.
        #[source]
        source: dos_transport::Error,
    },
    /// An error a server reported that this client does not know.
    #[error("server {server}: {message}")]
    Remote {
        /// The server.
        server: u32,
        /// Its message.
        message: String,
    },
    /// The OS gave no random bytes (for an id or a secret).
    #[error("no randomness from the OS")]
    Random {
        /// Why.
        #[source]
        source: dos_transport::Error,
    },
    /// The address file (`dosfs.addr`) is missing or malformed.
    #[error("{path}: bad address file: {reason}")]
    AddrFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// An I/O error on `path`, or [`Error::NoSpace`] for ENOSPC/EDQUOT.
    #[cold]
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether this is ENOSPC (or EDQUOT) from the OS.
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::NoSpace { .. } => true,
            Error::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC) | Some(libc::EDQUOT)
            ),
            _ => false,
        }
    }

    #[cold]
    pub(crate) fn protocol(reason: impl Into<String>) -> Error {
        Error::Protocol {
            reason: reason.into(),
        }
    }
}
