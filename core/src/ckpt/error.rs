//! The error type of `dos::ckpt`.

use std::path::PathBuf;

/// What went wrong in a checkpoint or a restart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A communication error of the job.
    #[error(transparent)]
    Dos(#[from] crate::Error),
    /// A file of a checkpoint could not be read, written or removed.
    #[error("{op} {path}: {source}")]
    File {
        /// What was done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint file failed its checksum or does not parse.
    #[error("checkpoint file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Per-rank data (slices, values, routed files) of a checkpoint written
    /// by `saved` ranks was asked for on `now` ranks.
    #[error("checkpoint {name} v{version} holds per-rank data of {saved} ranks and cannot be restored onto {now} ranks (only GlobalVec data redistributes)")]
    RankCount {
        /// The checkpoint's name.
        name: String,
        /// Its version.
        version: u64,
        /// Ranks that wrote it.
        saved: usize,
        /// Ranks now.
        now: usize,
    },
    /// No checkpoint can be restored (none was written, or the surviving
    /// levels cannot rebuild any).
    #[error("no restorable checkpoint")]
    NoCheckpoint,
    /// A call out of order (`route_file` outside an output, ...), or a bad
    /// argument.
    #[error("{op}: {reason}")]
    Usage {
        /// The call.
        op: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },
    /// What the program asks to restore does not match what was saved.
    #[error("the protected data does not match the checkpoint: {0}")]
    Shape(String),
    /// A value did not serialize or deserialize.
    #[error("a protected value does not (de)serialize: {0}")]
    Serde(String),
    /// The checkpoint was not written on every rank: it is not complete.
    #[error("checkpoint {name} v{version} failed on some rank")]
    Incomplete {
        /// The checkpoint's name.
        name: String,
        /// Its version.
        version: u64,
    },
    /// The L4 target (dosfs) failed.
    #[error("L4 on dosfs: {0}")]
    Fs(#[from] dos_fs::Error),
}

/// The result of `dos::ckpt` calls.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn file(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::File { op, path, source }
    }

    /// Whether this is a missing file (not an error of the data).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::File { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}
