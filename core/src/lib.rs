//! # dos: an HPC runtime for Rust
//!
//! `dos` gives a parallel program MPI-class communication: a world of ranks
//! started by the `dosrun` launcher, point-to-point messages with tags and
//! wildcards, nonblocking requests whose buffers the compiler keeps borrowed,
//! communicators, and the MPI collectives. Ranks on one node talk through
//! lock-free rings in shared memory; ranks on different nodes over TCP
//! connections authenticated with the job's secret. Each peer's route is
//! chosen once, at [`init`].
//!
//! ## Quick start
//!
//! ```
//! use dos::op::Sum;
//!
//! fn main() -> dos::Result<()> {
//!     let world = dos::init()?;               // a world of 1 without dosrun
//!     let (rank, size) = (world.rank(), world.size());
//!
//!     // Point-to-point around a ring.
//!     let next = (rank + 1) % size;
//!     let prev = (rank + size - 1) % size;
//!     let mut token = [0u64];
//!     world.sendrecv(&[rank as u64], next, 0, &mut token, prev, 0)?;
//!     assert_eq!(token[0], prev as u64);
//!
//!     // A collective.
//!     let mut total = [0u64];
//!     world.allreduce(&[rank as u64 + 1], &mut total, Sum)?;
//!     assert_eq!(total[0], (size * (size + 1) / 2) as u64);
//!     Ok(())
//! }
//! ```
//!
//! Build it and run it on 4 ranks: `dosrun -n 4 ./target/release/my_program`.
//!
//! ## Features
//!
//! * **Start-up** — [`init`] returns the [`World`]; it dereferences to the
//!   world [`Comm`]. Dropping the world (or [`World::finalize`]) leaves the job.
//! * **Point-to-point** — [`Comm::send`], [`Comm::recv`], [`Comm::sendrecv`],
//!   [`Comm::probe`], on byte slices or slices of any plain-data type
//!   ([`Pod`]; see "Plain-data types" below). Sources may be
//!   [`ANY_SOURCE`], tags [`ANY_TAG`]. Messages between two ranks on one
//!   communicator are matched in the order sent. Synchronous sends
//!   ([`Comm::ssend`], [`Comm::issend`]) complete only once the receive has
//!   started; matched probes ([`Comm::mprobe`], [`Comm::improbe`]) take a
//!   [`Message`] out of the matching queue for [`Comm::mrecv`]. Strided and
//!   indexed [`datatype`] layouts send a matrix column without a hand copy.
//! * **Nonblocking** — [`Comm::isend`] and [`Comm::irecv`] inside a [`scope`]
//!   return [`Request`]s with `wait`, `test`, [`Request::wait_all`],
//!   [`Request::wait_any`], [`Request::wait_some`], [`Request::test_all`],
//!   [`Request::test_any`] and [`Request::test_some`]; the scope keeps the
//!   buffers borrowed until every request is complete, so a buffer can never
//!   be freed or touched while a transfer still uses it. [`Persistent`]
//!   requests ([`Comm::send_init`], [`Comm::recv_init`]) are set up once and
//!   started many times.
//! * **Communicators** — [`Comm::split`] and [`Comm::dup`]; each has a private
//!   context, so libraries cannot intercept each other's messages.
//! * **Collectives** — barrier, bcast, reduce, allreduce, gather(v), scatter(v),
//!   allgather(v), alltoall(v), reduce_scatter, scan and exscan on any
//!   communicator, with built-in [`op`]s (MINLOC/MAXLOC on
//!   [`op::ValueIndex`] pairs too) or closures; the algorithm is chosen
//!   by message and communicator size. In-place forms (`MPI_IN_PLACE`):
//!   [`Comm::allreduce_in_place`], [`Comm::reduce_in_place`],
//!   [`Comm::gather_in_place`], [`Comm::scatter_in_place`],
//!   [`Comm::allgather_in_place`], [`Comm::alltoall_in_place`],
//!   [`Comm::reduce_scatter_in_place`], [`Comm::scan_in_place`], ...
//! * **Nonblocking collectives** — [`Comm::ibarrier`], [`Comm::ibcast`],
//!   [`Comm::ireduce`], [`Comm::iallreduce`], [`Comm::igather`],
//!   [`Comm::igatherv`], [`Comm::iscatter`], [`Comm::iscatterv`],
//!   [`Comm::iallgather`], [`Comm::iallgatherv`], [`Comm::ialltoall`],
//!   [`Comm::ialltoallv`],
//!   [`Comm::ireduce_scatter`], [`Comm::ireduce_scatter_block`], [`Comm::iscan`], [`Comm::iexscan`]:
//!   started inside a [`scope`] like `isend`, they return [`Request`]s that
//!   advance whenever the rank calls into dos, any number outstanding at once.
//! * **Groups** — [`Group`]s of a communicator's processes (incl, excl,
//!   union, intersection, difference, translate_ranks, compare) and
//!   communicators made from them ([`Comm::create`], [`Comm::create_group`]) ([`group`]).
//! * **One-sided** — [`Window`]s ([`Comm::win_allocate`], [`Comm::win_create`]):
//!   put, get, accumulate, get_accumulate and fetch_op with any built-in op,
//!   64-bit atomics, flush, fence, post/start/complete/wait and
//!   passive-target locks; the window's communicator and slices of its local
//!   memory ([`rma`]); loads and stores within a node, RDMA on roce and verbs.
//! * **Remote procedure calls** — [`Comm::rpc`]: handlers registered by name
//!   with typed (serde) or plain-data arguments, blocking, asynchronous
//!   (`Future`), one-way and all-ranks calls, typed failures; a service
//!   thread answers while the rank computes, in a world of any size
//!   ([`rpc`]). Handlers are per process (shared by all communicators);
//!   [`rpc::Rpc`]'s methods take the communicator's ranks, a handler's
//!   [`rpc::Ctx`] world ranks.
//! * **Distributed shared memory** — partitioned global arrays
//!   ([`Comm::global_vec`], block and block-cyclic), a fair distributed
//!   lock ([`Comm::dist_lock`]) and a coherent shared region
//!   ([`Comm::shared_region`]: plain slices that every rank reads and writes,
//!   coherent at barriers and the lock) ([`dsm`]).
//! * **Parallel file I/O** — [`io::File`] on dosfs, MPI-IO's model: a
//!   collective open, independent `read_at`/`write_at` and nonblocking
//!   `iread_at`/`iwrite_at`, collective `read_at_all`/`write_at_all` (also for
//!   lists of pieces) with two-phase aggregation on one rank per node, file
//!   domains aligned to stripes and a direct path when ranks do not share
//!   stripes, data sieving for small holes; file views (vector, subarray,
//!   indexed filetypes: `set_view`), nonblocking collectives
//!   (`iwrite_at_all`/`iread_at_all`) and an atomic mode
//!   (`set_atomicity`); `sync`, `size`, `set_size`, `delete`; errors
//!   agreed on every rank ([`io`]).
//! * **Checkpoint/restart** — [`ckpt::Ckpt`]: save slices, global arrays and
//!   serde values (`checkpoint`/`recover`) or routed files (`start_output`,
//!   `route_file`, `complete_output`) at levels node-local, partner copy, XOR
//!   parity and dosfs (in the background); on a restart under `dosrun
//!   --max-restarts`, the newest checkpoint the surviving levels can rebuild
//!   is restored, global arrays onto any rank count ([`ckpt`]).
//!
//! ## Plain-data types
//!
//! Messages, collectives and windows carry slices of [`Pod`] types (bytemuck's
//! traits, re-exported). Your own `#[repr(C)]` structs without padding derive
//! them through dos alone, without a bytemuck dependency of your own: the
//! derive needs to be told where bytemuck is, with
//! `#[bytemuck(crate = "dos::bytemuck")]` (dos re-exports the crate as
//! [`bytemuck`]). A crate that depends on bytemuck itself may leave that
//! attribute out.
//!
//! ```
//! #[derive(Clone, Copy, Debug, PartialEq, dos::Pod, dos::Zeroable)]
//! #[bytemuck(crate = "dos::bytemuck")]
//! #[repr(C)]
//! struct Particle {
//!     pos: [f64; 3],
//!     id: u64,
//! }
//!
//! let world = dos::init().unwrap();
//! let p = [Particle { pos: [1.0, 2.0, 3.0], id: 7 }];
//! world.send(&p, world.rank(), 0).unwrap();
//! let mut q = [Particle { pos: [0.0; 3], id: 0 }];
//! world.recv(&mut q, world.rank(), 0).unwrap();
//! assert_eq!(p, q);
//! ```
//!
//! ## Protocols and waiting
//!
//! Messages up to `DOS_EAGER_LIMIT` (8 KiB) are copied into the destination's
//! ring and out of it into the posted buffer; larger ones are announced and,
//! up to `DOS_RNDV_CMA_MAX` (64 KiB), fetched by the receiver with one copy
//! across address spaces (Linux CMA); above that they are pipelined in chunks
//! through the rings, both ranks copying at once, unless the node's CPUs are
//! crowded (more ranks than cores, or other work), when the receiver's single
//! copy is taken again (`DOS_RNDV`). A rank waiting for a message polls for a
//! short while, then yields, then sleeps on a futex that a sender rings only
//! when the rank is asleep, so jobs with more ranks than cores still make
//! quick progress; how long each depends on the same crowding. All tunables are in [`config`].
//!
//! ## Testing without a launcher
//!
//! [`testing::run_threads`] runs a program on `n` ranks as threads of one
//! process over the real shared-memory stack; [`testing::run_cluster`] groups
//! them into simulated nodes joined by TCP on 127.0.0.1.
//!
//! ## Thread safety
//!
//! dos offers the equivalent of `MPI_THREAD_FUNNELED`, not
//! `MPI_THREAD_MULTIPLE`: only the thread that called [`init`] calls into dos.
//! A [`World`], its communicators, requests, windows and RPC endpoints are
//! neither `Send` nor `Sync`, so the compiler rejects any other thread's use
//! of them (no lock, no run-time check on the fast path):
//!
//! ```compile_fail
//! let world = dos::init().unwrap();
//! std::thread::scope(|s| {
//!     s.spawn(|| world.send(&[1u8], 0, 0)); // error: `World` is not `Sync`
//! });
//! ```
//!
//! Another thread cannot join the job a second time either: under `dosrun`,
//! a second [`init`] in the process, from any thread, is
//! [`Error::AlreadyJoined`] (without `dosrun`, each call gives an independent
//! world of one). To communicate from several threads, funnel their messages
//! through the thread that owns the world (a channel), or give each thread
//! its own rank (more ranks per node).
//!
//! Local computation may use any number of threads (collectives reduce large
//! buffers with rayon). Once [`Comm::rpc`] is used, an RPC service thread
//! drives the engine while the main thread stays away from dos; an ownership
//! gate hands the engine back at its next call (ARCHITECTURE.md, "The RPC
//! service thread"). RPC handlers, run by either thread, are `Send + Sync`
//! and reach other ranks only through their [`rpc::Ctx`].
//!
//! ## Resource cleanup
//!
//! The node's shared segment is an anonymous memfd created by `dosrun`: it
//! vanishes with the last process that maps it, however the job ends
//! (including `kill -9`). `dosrun` stops every rank when one fails.
//!
//! ## Errors
//!
//! Every fallible call returns [`Result`] with the crate's one [`Error`] enum;
//! bad arguments (a rank out of range, a negative tag, a short buffer) are
//! typed errors, never panics.
//!
//! ## Wire compatibility
//!
//! The shared-segment layout and every protocol header carry a version (see
//! `dos_transport::shm::wire` and the `p2p::wire` module); all ranks of a job
//! run the same build, as with MPI.
#![deny(missing_docs)]

pub mod ckpt;
mod coll;
mod comm;
pub mod config;
pub mod datatype;
pub mod detached;
pub mod dsm;
mod engine;
mod error;
pub mod group;
pub mod io;
pub mod log;
pub mod op;
mod p2p;
pub mod pmi;
mod request;
pub mod rma;
pub mod rpc;
mod select;
mod services;
pub mod testing;
mod world;

/// The bytemuck crate, whose [`Pod`] and [`Zeroable`] traits (and derives)
/// dos uses for plain data: with `#[bytemuck(crate = "dos::bytemuck")]`, the
/// derives work in a crate that does not depend on bytemuck itself.
pub use bytemuck;
pub use bytemuck::{Pod, Zeroable};
pub use comm::Comm;
pub use error::{Error, Result, RpcFailure};
pub use group::{Group, GroupCompare};
pub use p2p::persistent::Persistent;
pub use p2p::probe::Message;
pub use p2p::{Source, Status, Tag, TagSel, ANY_SOURCE, ANY_TAG};
pub use request::{scope, Request, Scope};
pub use rma::{LockKind, Window};
pub use world::{init, World};

/// The README's code, compiled and run as a doctest (a world of 1).
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
