//! # dos-bench: OSU-style benchmarks for dos, and the same code over MPI
//!
//! `dosbench` measures what the OSU micro-benchmarks measure — point-to-point
//! latency, bandwidth and bidirectional bandwidth between two ranks, the
//! average latency of the common collectives, and one-sided put and get
//! latency, put bandwidth and fetch-and-add latency between two ranks — on
//! whatever runtime it was built for:
//!
//! * by default it links the `dos` crate and runs under `dosrun`;
//! * built with `--features mpi` it links MPI through rsmpi, runs under
//!   `mpirun`, and labels its output `mpi`.
//!
//! The benchmarks ([`suite`]) are written once, generic over the small
//! [`runtime::Runtime`] trait that both backends implement, so the two builds time
//! exactly the same loops. Pure logic — message-size schedules and iteration
//! counts ([`sched`]), statistics ([`stats`]), tables and JSON ([`report`]),
//! and the dos-versus-MPI comparison ([`compare`]) — is unit-tested.
//!
//! A baseline without any runtime, [`rawtcp`], times ping-pong and streams
//! over one bare TCP connection between two hosts (`dosbench raw-tcp`), so
//! that dos's TCP numbers can be set against what the kernel alone does.
//!
//! [`io`] is an IOR-shaped parallel file benchmark (`dosbench io`): write
//! plus sync then read of a shared file or a file per rank, through
//! `dos::io` on dosfs or MPI-IO on a local directory
//! ([`runtime::IoRuntime`]).
//!
//! ```text
//! dosrun -n 2 target/release/dosbench latency
//! mpirun -n 2 target/mpi/release/dosbench latency      # built with --features mpi
//! dosrun -n 2 target/release/dosbench io --block-size 64M --transfer-size 1M --collective
//! dosbench compare results/*.json                       # medians and dos/mpi ratios
//! dosbench raw-tcp serve 10.0.0.2:5000                  # on host B: raw TCP baseline
//! dosbench raw-tcp 10.0.0.2:5000 --json                 # on host A
//! ```
#![warn(missing_docs)]

#[cfg(all(feature = "dos", not(feature = "mpi")))]
pub mod ckpt;
pub mod cli;
pub mod compare;
mod error;
pub mod io;
pub mod md;
pub mod rawtcp;
pub mod report;
#[cfg(all(feature = "dos", not(feature = "mpi")))]
pub mod rpc;
pub mod runtime;
pub mod sched;
pub mod stats;
pub mod suite;

pub use error::{Error, Result};
