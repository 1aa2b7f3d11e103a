//! Checkpoint/restart: multi-level checkpoints of a rank's state, and their
//! restore when `dosrun --max-restarts` starts the job again after a failure.
//!
//! Two APIs over one store, both collective (every rank of the world makes
//! the same calls in the same order):
//!
//! * **Memory-based** (VeloC's `protect`/`checkpoint`): the pieces of a
//!   rank's state — slices of plain data ([`Data::slice`]), global arrays
//!   ([`Data::global`]) and a serde value for the small parts
//!   ([`Data::value`]) — are saved by [`Ckpt::checkpoint`]`(name, version,
//!   pieces)`; on a restart [`Ckpt::latest`] names the checkpoint to restore
//!   and [`Ckpt::recover`] puts it back into the matching [`Slot`]s. (The
//!   pieces are passed to each call rather than registered once, so the
//!   borrow checker lets the program change its data between checkpoints.)
//! * **File-based** (SCR's): [`Ckpt::start_output`]`(name)`,
//!   [`Ckpt::route_file`]`(file)` (where to write it), the program writes,
//!   [`Ckpt::complete_output`]`(valid)` (true only if every rank passed
//!   true and wrote its part; the same answer everywhere). On a restart:
//!   [`Ckpt::have_restart`], [`Ckpt::start_restart`], `route_file` (where
//!   to read), [`Ckpt::complete_restart`]`(valid)`: if any rank finds the
//!   checkpoint unusable, it is marked failed and every rank falls back to
//!   the one before.
//!
//! ```
//! use dos::ckpt::{Ckpt, Data, Slot};
//! # let dir = std::env::temp_dir().join(format!("dos-ckpt-doc-{}", std::process::id()));
//! # std::env::set_var("DOS_CKPT_DIR", &dir);
//! # std::env::set_var("DOS_CKPT_ID", "doc-example");
//! let world = dos::init().unwrap();
//! let mut ck = Ckpt::new(&world).unwrap();
//! let mut u = vec![0.0f64; 1000];
//! let mut step = 0u64;
//! // On a restart (DOS_RUN_ATTEMPT > 0), resume from the newest checkpoint.
//! let restored = ck.recover(&mut [Slot::slice(&mut u), Slot::value(&mut step)]).unwrap();
//! if let Some((_, v)) = restored {
//!     assert_eq!(v, step);
//! }
//! while step < 20 {
//!     step += 1;
//!     u.iter_mut().for_each(|x| *x += 1.0); // compute
//!     if step % 5 == 0 {
//!         ck.checkpoint("demo", step, &[Data::slice(&u), Data::value(&step)]).unwrap();
//!     }
//! }
//! # drop(ck);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```
//!
//! (Bind the result of `recover` before using the restored variables: the
//! slots borrow them until the end of the statement.)
//!
//! ## When to checkpoint
//!
//! [`Ckpt::need_checkpoint`] gives the same answer on every rank: every
//! `DOS_CKPT_INTERVAL` calls, every `DOS_CKPT_SECONDS`, or automatically
//! from the measured cost of a checkpoint and the job's mean time between
//! failures `DOS_CKPT_MTBF` by **Young's formula** `sqrt(2 * C * MTBF)`
//! ([`policy`]).
//!
//! ## Levels
//!
//! Set per job by the tunables (`dosrun --info` lists them; see
//! [`crate::config`]):
//!
//! * **L1**, always: every rank's files in the node-local `DOS_CKPT_DIR`
//!   (`/dev/shm` by default; `{node}` in it becomes the node's address,
//!   for node-local directories on a shared file system) under
//!   `dos-ckpt-<DOS_CKPT_ID>`. The id is
//!   stable across the attempts of one `dosrun` (it sets it), so a
//!   restarted rank on the same host finds its files; without dosrun it is
//!   the program's name. A first run (`DOS_RUN_ATTEMPT=0`) clears its id's
//!   old checkpoints.
//! * **L2** (`DOS_CKPT_LEVELS` has 2): a copy of each rank's files on its
//!   partner in another failure group (node), sent over the job's
//!   transports. The partner receives it straight into a shared mapping of
//!   the copy's file (the transfer is the write), sealed with the sender's
//!   crc32c; a retired copy is kept as a spare file whose memory (and
//!   mapping) the next copy reuses ([`store::MappedWrite`]).
//! * **L3** (has 3): XOR parity across sets of `DOS_CKPT_XOR_SET` (8)
//!   failure groups, each member storing `1/(n-1)` of its size ([`xor`]);
//!   any one lost member of a set is rebuilt.
//! * **L4** (has 4, and `DOS_CKPT_FS` names the target): every
//!   `DOS_CKPT_FS_EVERY`-th checkpoint also goes to dosfs (`dosfs:/DIR`,
//!   through `dos_fs::client`) or a directory, written by a background
//!   thread while the application computes ([`l4`]); [`Ckpt::wait_fs`]
//!   waits for it.
//!
//! A failure group is a node (`DOS_CKPT_GROUP=node`), or each rank
//! (`rank`: lets one host exercise L2 and L3). With one node there is no
//! partner and no XOR set: L1 (and L4) only.
//!
//! Every file carries a crc32c: sealed files ([`store`]) and a per-rank
//! manifest. Each rank keeps an index ([`index`]) of the checkpoints and
//! their states, updated by a crash-safe commit protocol; a checkpoint is
//! complete only once every rank wrote every level; the last
//! `DOS_CKPT_KEEP` complete ones are kept and older ones deleted (by a
//! background thread, once the index no longer names them).
//!
//! ## Restart
//!
//! On a restarted run (`DOS_RUN_ATTEMPT` > 0, set by `dosrun
//! --max-restarts`), the first of `latest`, `recover`, `have_restart` or
//! `start_restart` searches: the candidates are the complete checkpoints
//! of every index on every node (and L4's marked ones), newest version
//! first; for each, the ranks report what they can read (own files,
//! partner copies, parity) and agree on a [`plan`]: a rank whose L1 was
//! lost with its node is rebuilt from its partner's copy, or from its XOR
//! set; if that fails, from L4; else the next older checkpoint. Rank 0
//! then tells dosrun what it used, with a wire-up `put` of
//! `dos.ckpt.restored` (e.g. `heat v12 from L2 (1 of 4 ranks rebuilt)`),
//! which dosrun prints in its restart line.
//!
//! Global arrays restore onto any number of ranks: each saved part is
//! written into the new array run by run ([`redist`]), wherever the new
//! distribution puts it. Slices, values and routed files are per rank:
//! restoring them onto another rank count is [`Error::RankCount`].
//!
//! After a restart on fewer ranks, old ranks without a current rank of the
//! same number are read by rank `o % m` (from its node's L1 or its partner
//! copy).

pub mod catalog;
pub mod error;
pub mod groups;
pub mod index;
pub mod l4;
mod mem;
pub mod plan;
pub mod policy;
pub mod redist;
mod session;
pub mod store;
pub mod xor;

pub use error::{Error, Result};
pub use mem::{Data, Slot};
pub use session::{Ckpt, Options, RESTORED_KEY};
