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
//!   ranks' ranges do not interleave within a stripe (decided by one
//!   allgather of each rank's range summary; when the ranks' spans share no
//!   stripe that allgather is the call's only collective, and each rank's
//!   outcome is its own, as for independent I/O), data sieving for small
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
//! * File views ([`File::set_view`], `MPI_File_set_view`; [`view`]): an
//!   etype and a filetype (contiguous, vector, N-dimensional subarray,
//!   indexed, or any flattened list of byte segments with an extent) tiled
//!   from a displacement; the offsets of every read and write then count
//!   etypes of the view and skip its holes. A view's pieces go through the
//!   same planner as an explicit list (two-phase, data sieving).
//! * Nonblocking collectives [`File::iwrite_at_all`] and
//!   [`File::iread_at_all`] (`MPI_File_iwrite_at_all`): see
//!   [below](#nonblocking-collective-io).
//! * Atomic mode ([`File::set_atomicity`]): see [below](#atomic-mode).
//! * [`File::sync`], [`File::set_size`], [`File::close`] (collective; dropping
//!   an open `File` closes it), [`File::size`].
//! * A rank that reaches a collective call (or the barrier of `sync` and
//!   `close`) before the others waits for them asleep, not spinning as the
//!   engine's other waits do first: the dosfs servers it waits on share the
//!   ranks' cores (`quiet.rs`).
//!
//! Views, nonblocking collectives and atomic mode together (run under
//! `dosrun` with a file system in `DOSFS`):
//!
//! ```no_run
//! use dos::io::{File, Mode, View};
//! let world = dos::init()?;
//! let (n, r) = (world.size() as u64, world.rank() as u64);
//! let file = File::open(&world, "/results/matrix", Mode::READ_WRITE.create())?;
//! // A 1000 x 1000n matrix of f64, row-major; this rank owns 1000 columns.
//! let cols = View::subarray(8, &[1000, 1000 * n], &[1000, 1000], &[0, 1000 * r])?;
//! file.set_view(0, cols)?;
//! let mine = vec![r as u8; 8 * 1000 * 1000];
//! dos::scope(|s| -> dos::io::Result<()> {
//!     let req = file.iwrite_at_all(s, 0, &mine)?;   // returns at once
//!     // ... compute; req.test() advances it without blocking ...
//!     req.wait()?;
//!     Ok(())
//! })?;
//! file.set_view(0, View::default())?;             // bytes again
//! file.set_atomicity(true)?;                      // overlapping writes serialize
//! file.write_at(0, b"header")?;
//! file.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The same, runnable: two ranks on threads, one server of this process.
//!
//! ```
//! # use dos_fs::{addrfile::{AddrFile, ServerAddr}, server::{Server, ServerConfig, Service}};
//! # use dos_fs::target::{FsId, Target};
//! # let dir = std::env::temp_dir().join(format!("dos-io-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! # let (fsid, secret) = (FsId::generate()?, dos_transport::auth::Secret::generate()?);
//! # let t = Target::format(&dir.join("0"), fsid, 0, 1)?;
//! # let server = Server::bind(Service::open(&t)?, &fsid, secret.clone(), "127.0.0.1:0", ServerConfig::default())?;
//! # let servers = vec![ServerAddr { addr: server.local_addr()?.to_string(), pid: None }];
//! # std::thread::spawn(move || server.serve());
//! # AddrFile { fsid, secret, servers }.write(&dir.join("fs.addr"))?;
//! # let addr = dir.join("fs.addr");
//! use dos::io::{File, Fs, Hints, Mode, View};
//! let fs = Fs::open(&addr)?;
//! let got = dos::testing::run_threads(2, |w| -> dos::io::Result<Vec<u8>> {
//!     let r = w.rank() as u64;
//!     let f = File::open_with(&w, &fs, "/doc", Mode::READ_WRITE.create(), Hints::default())?;
//!     // Rank r sees bytes 4r..4r+4 of every 8: blocks interleave.
//!     f.set_view(4 * r, View::new(1, &[(0, 4)], 8).unwrap())?;
//!     dos::scope(|s| f.iwrite_at_all(s, 0, &[b'a' + r as u8; 8])?.wait())?;
//!     f.set_view(0, View::default())?;
//!     f.set_atomicity(true)?;
//!     let mut all = vec![0u8; 16];
//!     f.read_at(0, &mut all)?;
//!     Ok(all)
//! });
//! assert_eq!(got[0].as_ref().unwrap(), b"aaaabbbbaaaabbbb");
//! # drop(got);
//! # let _ = std::fs::remove_dir_all(&dir);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
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
//! mix within one stripe piece of one request; a large write that spans
//! servers may be seen half-done by a concurrent read, and two such writes
//! may interleave by stripe: atomic mode excludes that). Within one collective write, overlapping ranges resolve as if
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
//! ## Atomic mode
//!
//! [`File::set_atomicity`]`(true)` (collective) makes conflicting accesses
//! of the file's ranks sequentially consistent, as MPI's atomic mode: a
//! read sees all or none of a concurrent overlapping write, and two
//! overlapping writes never interleave. It is a mutex across the file's
//! communicator, kept by a lock service at its rank 0 over the `io` block
//! of active messages (`LOCK`, `GRANT`, `UNLOCK`: a FIFO queue of waiters
//! per file, one round trip to take the lock and one message to release
//! it; rank 0's own requests touch its table directly). Every access holds
//! it: an independent read or write (with all its pieces under a view),
//! and each aggregator's I/O of each round of a collective call (never
//! across a collective exchange, so no rank waits for the lock while
//! holding up the others). Nonblocking independent calls
//! ([`File::iwrite_at`]) are done at once in atomic mode, their request
//! complete. The cost: the round trip per access, served when rank 0 makes
//! progress (in any dos call; a rank waiting for the lock makes progress
//! itself), and the ranks' accesses to the file are serialized, whether
//! they overlap or not. Measured with `atomic_mode_cost` in
//! core/tests/io.rs (4 ranks each writing 100 blocks of 64 KiB of their
//! own with `write_at`, 3 servers, on a 2-core machine with a load average
//! of 16, so only indicative): on one node 0.6 to 1.1 times the time
//! without atomic mode; on 2 nodes of 2 ranks 6 to 29 times (each handover
//! of the lock is two messages through rank 0; an RMA compare-and-swap lock
//! measured 1.5 and 15 times before it was replaced). Use it for the
//! accesses that need it.
//!
//! ## Nonblocking collective I/O
//!
//! [`File::iwrite_at_all`] and [`File::iread_at_all`] return at once with
//! an [`IoRequest`]; every rank starts them, in the same order. Each is a
//! state machine over the two-phase engine, whose communication steps are
//! nonblocking collectives (dos's schedule engine) on a private duplicate
//! of the file's communicator, made when the file is opened: they never
//! meet other collectives on the file's or the caller's communicator, so
//! blocking collectives, other nonblocking ones and point-to-point traffic
//! may go on meanwhile. An operation owns its buffers: a write copies its
//! data at the start (the caller's buffer is free at once), a read's bytes
//! are copied into the caller's buffer when its request completes.
//!
//! Progress is MPI's weak progress (as ROMIO's nonblocking collective
//! I/O): the transfers in flight advance in every dos call, and an
//! operation moves on to its next step (the next exchange, or a round's
//! file I/O, done by the aggregators in the calling thread) when a request
//! of the file is tested ([`IoRequest::test`] never waits for other ranks)
//! or waited for. A file's operations run one after the other in the order
//! they were started, so that their transfers are started in the same
//! order on every rank; waiting for one completes the ones started before
//! it, so requests may be completed in any order. Setting the view or the
//! atomicity, and closing the file, complete every operation in flight.
//! Do not make a rank's test or wait depend on another rank having
//! completed the same operation (as in MPI: a blocking barrier between
//! start and wait on one rank but not another can hang).
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
//! Shared and individual file pointers (`MPI_File_read`, `_shared`,
//! `_ordered`), `MPI_File_preallocate`, views with negative or
//! decreasing displacements (MPI forbids them in filetypes too), and
//! overlap of a round's exchange with the previous round's I/O.

mod coll;
mod error;
mod file;
mod lock;
pub(crate) mod nb;
mod nbcoll;
pub mod plan;
mod quiet;
pub mod view;

pub use dos_fs::layout::{Layout, LayoutSpec};
pub use error::{Error, FsErrorKind, Result};
pub use file::{File, Fs, Hints, Mode};
pub use nb::IoRequest;
pub use view::{View, ViewError};
