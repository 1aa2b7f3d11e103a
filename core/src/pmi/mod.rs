//! Wire-up: how the ranks of a job find each other through the launcher.
//!
//! `dosrun` runs a small PMI-like service for every job: each rank joins it
//! once (on an inherited socket pair, else by connecting), publishes key/value pairs (`put`), waits until every
//! rank of the job has published (`fence`), then reads what the others
//! published (`get`). Transports exchange their endpoint addresses this way.
//!
//! * [`wire`]: the protocol's frames (versioned, little-endian, bounded).
//! * [`Client`]: the rank side, blocking, used by `dos::init`.
//! * [`simple`], [`pmi2`]: the codecs of the standard PMI-1 ("simple")
//!   and PMI-2 wire protocols that MPICH, hydra and Slurm speak (sans I/O);
//!   `dosrun` serves PMI-1 to MPICH programs with [`simple`].
//! * [`direct`]: direct launch, the rank side of PMI-2 under `srun
//!   --mpi=pmi2` and of PMI-1 under `mpiexec.hydra` (no dosrun; `DOS_PMI`):
//!   [`Client::from_env`] uses it
//!   when `PMI_FD` is set; the node's shared segment is made by its local
//!   rank 0 and opened by the others through `/proc/<pid>/fd`.
//! * [`slurm`]: Slurm's compressed host and count lists
//!   (`SLURM_JOB_NODELIST`, `SLURM_TASKS_PER_NODE`), pure parsers.
//!
//! # The launcher's environment
//!
//! `dosrun` gives each rank these variables (names are the `ENV_*` constants
//! of this module):
//!
//! | variable | meaning |
//! | --- | --- |
//! | `DOS_RANK`, `DOS_SIZE` | rank in the job, number of ranks |
//! | `DOS_LOCAL_RANK`, `DOS_LOCAL_SIZE` | rank among the ranks of its node, their number |
//! | `DOS_NODE_ID` | index of the rank's node in the job |
//! | `DOS_NNODES` | number of nodes of the job (1 when unset) |
//! | `DOS_NODE_ADDR` | IP address of the rank's node on the job's network (multi-node jobs only) |
//! | `DOS_JOBID` | the job's id: 16 hex digits |
//! | `DOS_PMI_ADDR` | the wire-up service: `@name` is an abstract Unix socket |
//! | `DOS_JOB_SECRET` | the job's secret ([`Secret`], 256 bits as hex) |
//! | `DOS_SHM_FD` | descriptor number of the node's shared segment (a memfd) |
//! | `DOS_PMI_FD` | descriptor number of the rank's end of a socket pair joined to the service |
//!
//! The secret is only ever passed in the environment (never on a command
//! line, never sent over a connection). Every connection of the job proves
//! that it knows it with the HMAC challenge-response of
//! [`dos_transport::auth`]; on the wire-up connection the context is
//! [`auth_context`], the rank's id its rank and the service's [`SERVICE_ID`].
//!
//! The wire-up needs no connection at all when the rank holds
//! `DOS_PMI_FD`: the launcher made a socket pair per rank before starting
//! it, kept one end in its service and let the rank inherit the other, so
//! the rank speaks the protocol on it at once, without a `connect`, the
//! handshake's two round trips through the launcher or the HMAC (one
//! process holds each end: the pair needs no proof). The rank takes the
//! descriptor only if it is an unnamed, connected Unix stream socket whose
//! peer is another process of the same user, and makes it close-on-exec;
//! anything else (a wrapper between dosrun and the program closed or
//! reused the number) is left alone and the rank connects to
//! `DOS_PMI_ADDR` and authenticates as before. The service attaches a
//! pair to its rank with the first request on it, so a pair closed unused
//! is not taken for the rank leaving.
//!
//! A rank whose connection fails or is closed by the service during the
//! handshake (a service under a flood of strangers makes room that way)
//! connects again, a few times with a growing, jittered wait; a service that
//! fails to prove the secret is not retried.
//!
//! A program started without `dosrun` has no `DOS_PMI_ADDR`. With `PMI_FD`
//! (MPICH's `mpiexec.hydra`, `srun --mpi=pmi2`) it joins the job directly
//! ([`direct`]). Otherwise [`Client::from_env`] returns `Ok(None)` (a world
//! of one), unless another launcher started it as one of several ranks in a
//! way dos does not speak: `PMIX_RANK` (Open MPI's `mpirun`, `srun
//! --mpi=pmix`: PMIx only) or `PMI_SIZE` above 1 without `PMI_FD`. That is an
//! [`crate::Error::Environment`] naming the variable and the alternatives
//! (dosrun, `srun --mpi=pmi2`, `mpiexec.hydra`), rather than several ranks
//! each believing itself rank 0 of 1.
//!
//! # Semantics
//!
//! A fence completes when every rank of the job has entered it. A `put` made
//! before a rank enters a fence is visible to every `get` after that fence
//! completes; a key not put before the last completed fence is not found.
//! A fence that can no longer complete (a rank exited, disconnected or
//! finalized without entering it) fails on every rank waiting in it.

mod client;
pub mod direct;
pub mod pmi2;
pub mod simple;
pub mod slurm;
pub mod wire;

pub use client::{size_from_env, Client};
pub use dos_transport::auth::Secret;

/// Rank of the process in the job.
pub const ENV_RANK: &str = "DOS_RANK";
/// Number of ranks in the job.
pub const ENV_SIZE: &str = "DOS_SIZE";
/// Rank among the ranks on the same node.
pub const ENV_LOCAL_RANK: &str = "DOS_LOCAL_RANK";
/// Number of ranks on the same node.
pub const ENV_LOCAL_SIZE: &str = "DOS_LOCAL_SIZE";
/// Index of the node in the job.
pub const ENV_NODE_ID: &str = "DOS_NODE_ID";
/// Number of nodes of the job.
pub const ENV_NNODES: &str = "DOS_NNODES";
/// IP address of this node on the job's network (multi-node jobs).
pub const ENV_NODE_ADDR: &str = "DOS_NODE_ADDR";
/// The job's id, 16 hex digits.
pub const ENV_JOBID: &str = "DOS_JOBID";
/// Address of the wire-up service (`@name`: abstract Unix socket).
pub const ENV_PMI_ADDR: &str = "DOS_PMI_ADDR";
/// The job's secret, as hex ([`Secret::to_hex`]).
pub const ENV_JOB_SECRET: &str = "DOS_JOB_SECRET";
/// Descriptor number of the node's inherited shared segment.
pub const ENV_SHM_FD: &str = "DOS_SHM_FD";
/// Descriptor number of the rank's end of a socket pair already joined to
/// the node's wire-up service (the launcher made the pair and kept the other
/// end): the rank speaks the wire-up protocol on it without connecting or
/// authenticating. Unset, or not such a socket, the rank connects to
/// [`ENV_PMI_ADDR`] and authenticates with the job's secret.
pub const ENV_PMI_FD: &str = "DOS_PMI_FD";

/// The authenticated id of the wire-up service (ranks use their rank).
pub const SERVICE_ID: u64 = u64::MAX;

/// The handshake context of job `jobid`'s wire-up connections: binds a
/// proof to this protocol, its version and the job.
pub fn auth_context(jobid: u64) -> Vec<u8> {
    format!("dos-pmi-v{}:{jobid:016x}", wire::VERSION).into_bytes()
}

/// The abstract socket name of the wire-up service of node `node` of job
/// `jobid` (without the `@`).
pub fn socket_name(jobid: u64, node: usize) -> String {
    format!("dos-{jobid:016x}-{node}-pmi")
}

/// Formats a job id as `DOS_JOBID` carries it.
pub fn format_hex64(v: u64) -> String {
    format!("{v:016x}")
}

/// Parses 1 to 16 hex digits (the format of [`format_hex64`]).
pub fn parse_hex64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex64_round_trips() {
        for v in [0, 1, 0xdead_beef, u64::MAX] {
            assert_eq!(parse_hex64(&format_hex64(v)), Some(v));
        }
        assert_eq!(parse_hex64(""), None);
        assert_eq!(parse_hex64("+1"), None);
        assert_eq!(parse_hex64("12345678901234567"), None);
        assert_eq!(parse_hex64("xyz"), None);
        assert_eq!(socket_name(0xab, 2), "dos-00000000000000ab-2-pmi");
        assert_ne!(auth_context(1), auth_context(2));
    }
}
