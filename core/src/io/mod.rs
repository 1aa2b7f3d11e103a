//! Parallel file I/O on dosfs: MPI-IO's model in Rust (`dos::io`).
//!
//! A job's ranks open one shared file of the dosfs file system together and
//! read and write it independently or collectively:
//!
//! ```no_run
//! use dos::io::{File, Mode};
//! let world = dos::init()?;
//! let rank = world.rank() as u64;
//! // Collective: rank 0 creates the file, every rank gets the same outcome.
//! let file = File::open(&world, "/results/run1", Mode::READ_WRITE.create())?;
//! let block = vec![rank as u8; 1 << 20];
//! file.write_at_all(rank << 20, &block)?;      // two-phase collective write
//! file.sync()?;                                 // durable, visible to all
//! let mut back = vec![0; 1 << 20];
//! file.read_at((rank + 1) % world.size() as u64 * (1 << 20), &mut back)?;
//! file.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## What exists
//!
//! * [`Fs`]: a handle on a running file system, from its address file
//!   ([`Fs::open`]) or from the environment ([`Fs::from_env`]: the file named
//!   by `DOSFS`, else `./dosfs.addr`, as for the `dosfs` command; `DOSFS` is
//!   the one variable of dos not named `DOS_*`, because it is the file
//!   system's own, shared with its command line and set by `dosrun --fs`).
//! * [`File::open`] (collective, `MPI_File_open`): rank 0 makes the metadata
//!   call ([`Mode`]: read-only, write-only or read-write, with create and
//!   exclusive, as `MPI_MODE_*`) and broadcasts the outcome, so every rank
//!   returns the same file or the same typed error. [`File::delete`]
//!   (`MPI_File_delete`, not collective).
//! * Independent [`File::read_at`] and [`File::write_at`]: straight between
//!   the rank and the servers holding the stripes (dosfs's client).
//! * Collective [`File::write_at_all`], [`File::read_at_all`] and their
//!   noncontiguous forms [`File::write_at_all_list`],
//!   [`File::read_at_all_list`] (a list of `(offset, buffer)` pairs, any
//!   order), through the two-phase engine of [`plan`]: file domains aligned
//!   to stripes, one aggregator per node by default, a direct path when the
//!   ranks' ranges do not interleave within a stripe, data sieving for small
//!   holes, in rounds of at most [`Hints::cb_buffer`] bytes of file per
//!   aggregator (16 MiB, ROMIO's `cb_buffer_size`), which bound an
//!   aggregator's memory. The data between ranks and aggregators travels as ordinary dos
//!   messages (an `alltoallv` on the file's communicator: shared memory
//!   within a node, tcp or RDMA between nodes); aggregators do large
//!   stripe-aligned requests to the servers.
//! * Nonblocking [`File::iread_at`] and [`File::iwrite_at`] inside a
//!   [`crate::scope`], like `isend`: each runs the blocking client on a
//!   thread of its own, and the engine's `io` service completes the request
//!   from its progress hook ([`IoRequest`]; the buffer stays borrowed until
//!   then).
//! * [`File::sync`], [`File::set_size`], [`File::close`] (collective; dropping
//!   an open `File` closes it), [`File::size`].
//!
//! ## Semantics (MPI-IO's default, non-atomic)
//!
//! A write is in the servers when the call returns: a read that starts after
//! it returned, from any rank, sees it (dosfs servers cache nothing a reader
//! cannot see). It is *durable* once [`File::sync`] returned. Across ranks,
//! ordering needs synchronization as MPI requires: the portable pattern is
//! sync, barrier, sync (`sync` here includes a barrier of its own, so one
//! `sync` on every rank suffices). Concurrent writes of the same bytes by
//! different ranks, without such ordering, leave either rank's bytes (not a
//! mix within one stripe piece of one request, but no atomic mode is
//! offered). Within one collective write, overlapping ranges resolve as if
//! ranks wrote in rank order. Reads past the end of the file return the
//! number of bytes before it ([`File::read_at`]); in collective reads, the
//! bytes past the end read as zeros and the count says how many were in the
//! file.
//!
//! Collective calls must be made by every rank of the file's communicator,
//! in the same order, with the same kind of arguments (as in MPI); their
//! errors are agreed: if one rank fails, every rank returns the error of the
//! first rank that failed ([`Error::Fs`] with the same kind and message, or
//! [`Error::Elsewhere`]).
//!
//! ## Layers
//!
//! `dos::io` is built on `dos-fs` (the file system's layout arithmetic,
//! wire protocol and blocking client), which depends only on
//! `dos-transport`: transport < dos-fs < dos. The planner ([`plan`]) does
//! no I/O; the [`File`] methods drive it with dos collectives and the
//! client.
//!
//! ## Not yet here
//!
//! Nonblocking collectives (`MPI_File_iwrite_at_all`), views
//! (`MPI_File_set_view`; the list forms cover noncontiguous access), shared
//! file pointers, an atomic mode, and overlap of a round's exchange with the
//! previous round's I/O.

mod coll;
mod error;
mod file;
pub(crate) mod nb;
mod nbcoll;
pub mod plan;
pub mod view;

pub use dos_fs::layout::{Layout, LayoutSpec};
pub use error::{Error, FsErrorKind, Result};
pub use file::{File, Fs, Hints, Mode};
pub use nb::IoRequest;
pub use view::{View, ViewError};
