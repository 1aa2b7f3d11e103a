//! # dos-fs: the storage side of dosfs, the parallel file system of dos
//!
//! dosfs stripes files RAID-0 over storage servers, one per node, each
//! keeping its share on a directory of the node's local disk (its
//! *target*). This crate holds the file system's servers, its metadata, its
//! layout arithmetic, its wire protocol, a blocking client, and the `dosfs`
//! command (`serve`, `up --local`, `down`, `ls`, `stat`, `mkdir`, `rm`, `mv`,
//! `df`, `cp`, `setstripe`, `getstripe`, `verify`).
//!
//! ## Quick start
//!
//! Two servers in this process over temporary targets, a file written
//! through one client call and read back (the `dosfs` binary does the same
//! with `dosfs up --local 2 --target DIR` and `dosfs cp`):
//!
//! ```
//! use dos_fs::addrfile::{AddrFile, ServerAddr};
//! use dos_fs::client::Client;
//! use dos_fs::layout::LayoutSpec;
//! use dos_fs::server::{Server, ServerConfig, Service};
//! use dos_fs::target::{FsId, Target};
//! use dos_transport::auth::Secret;
//!
//! let dir = std::env::temp_dir().join(format!("dosfs-doc-{}", std::process::id()));
//! let (fsid, secret) = (FsId::generate()?, Secret::generate()?);
//! let mut servers = Vec::new();
//! for i in 0..2 {
//!     let target = Target::format(&dir.join(i.to_string()), fsid, i, 2)?;
//!     let server = Server::bind(Service::open(&target)?, &fsid, secret.clone(),
//!                               "127.0.0.1:0", ServerConfig::default())?;
//!     servers.push(ServerAddr { addr: server.local_addr()?.to_string(), pid: None });
//!     std::thread::spawn(move || server.serve());
//! }
//! let client = Client::new(&AddrFile { fsid, secret, servers });
//!
//! // 64 KiB stripes over both servers; the file inherits the directory's layout.
//! client.mkdir("/results")?;
//! client.set_stripe("/results", LayoutSpec { stripe_size: 65536, ..LayoutSpec::default() })?;
//! let file = client.create("/results/run1", None, true)?;
//! assert_eq!(file.layout.stripe_count, 2);
//!
//! let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
//! client.write_at(&file, 0, &data)?;   // straight to the servers holding the stripes
//! client.sync(&file)?;                 // durable on every server
//! let file = client.stat("/results/run1")?;
//! let mut back = vec![0; data.len()];
//! client.read_at("/results/run1", &file, 0, &mut back)?;
//! assert_eq!(back, data);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Layers
//!
//! This crate depends only on `dos-transport`: its byte codec
//! ([`dos_transport::codec`]) for every wire and disk format, and its
//! secret handshake ([`dos_transport::auth`]) for every connection. Above
//! it, the `dos` crate's `dos::io` (MPI-IO for ranks) uses this crate's
//! [`layout`] arithmetic and [`client::Client`], and the launcher runs a
//! server inside each node agent (`dosrun --fs`, [`standing`]). So the protocol logic has no I/O
//! of its own: [`wire`] encodes and decodes frames, [`server::Service::handle`]
//! maps a request to a reply on one target, [`client::plan`] splits a byte
//! range over the servers; the drivers around them are thin (a threaded
//! server on TCP and a same-node Unix socket, a blocking client; [`shm`]
//! holds the same-node path's slots, [`rdma`] the between-node RDMA into
//! the same slots).
//!
//! ## Design decisions (with the reasons; copied to ARCHITECTURE.md)
//!
//! **Metadata on one server (server 0), like Lustre's MDS and BeeGFS's
//! metadata service, not hashed over all servers like GekkoFS.** A job's
//! file system has a handful of servers, and one server answering every
//! namespace request keeps POSIX's guarantees simple: rename is atomic,
//! readdir is one ordered listing, a directory's layout is inherited at
//! create without a cross-server lookup, and crash safety is one journal
//! rather than a distributed commit. The namespace is an in-memory table
//! replayed from the journal, so a create costs a map insert and an append
//! of ~60 bytes (no per-create fsync: see durability); the 20,000 creates/s
//! target is a matter of the request rate one server can take. GekkoFS's
//! hashing buys create rates that grow with servers by giving up rename and
//! ordered readdir; if one metadata server becomes the limit, directories
//! can be spread over servers by hashing the parent inode (BeeGFS's way)
//! without changing the protocol's messages.
//!
//! **Large directories.** Entries are kept per directory in a B-tree by
//! name: create and lookup cost O(log n) in the directory's size, and
//! readdir returns pages of at most [`meta::MAX_READDIR`] entries after a
//! given name, so listing a directory of millions of files is many bounded
//! requests, each O(log n + page), never one unbounded reply. Creating in
//! one shared directory costs what creating in a directory per rank costs
//! (one namespace lock either way, held for a map insert and a journal
//! append of ~60 bytes, never over a disk wait): `dosbench md` measures
//! both, and 100,000 files in one directory are created as fast as 10,000
//! (BENCHMARKS.md, "Metadata").
//!
//! **Metadata never waits for the disk under the namespace lock.** A
//! create appends its record (a `write(2)` into the page cache) and
//! returns; a sync's fsync runs on a duplicate of the journal's descriptor
//! without the lock ([`meta::Meta::sync_handle`]); inode numbers are
//! reserved [`meta::INODE_BATCH`] at a time by a journal record whose fsync
//! runs on a thread of its own half-way through the previous batch, so a
//! create waits for a reservation's fsync only when the disk is slower than
//! 2,048 creates.
//!
//! **Data placement.** Each file has a RAID-0 [`layout::Layout`] (stripe
//! size, stripe count, first server) fixed at create and inherited from its
//! directory; default 1 MiB stripes over *all* servers (the reasons are in
//! [`layout`]). A server stores its stripes of a file in one data object
//! named by the inode (stripe `s` at byte `s` x stripe size; a second
//! object takes rewrites of synced stripes) — never by a user's path — so
//! names cannot steer anything on the target. Clients compute which server holds which
//! stripe and talk to it directly; the metadata server carries no file data
//! except for the stripes it holds itself as a data server.
//!
//! **Durability and crash safety.** Semantics are MPI-IO's default: a write
//! is visible to every client once it returns (servers cache nothing that
//! readers cannot see) and durable once a sync of the file returns.
//! Metadata changes go to a write-ahead [`journal`] of crc32c-checksummed
//! records, fsynced at sync, with snapshots bounding replay; a torn tail is
//! dropped, damage before it stops the server with an error naming the
//! byte; inode numbers are reserved durably in batches, so one lost with an
//! unsynced create never names another file's chunks. Writes of fresh
//! regions go in place, rewrites of synced stripes to the other data
//! object (only the written bytes; the server remembers which ranges); a
//! sync is one group commit (the data objects' fdatasync, then ONE record
//! of the server's chunk map journal with every stripe's slot, length and
//! block checksums, fdatasync), so a small write costs its own bytes and a
//! torn write never replaces synced data ([`chunk`]).
//!
//! **Integrity.** Every synced stripe has a crc32c per 64 KiB block in the
//! chunk map; a read checks the blocks it reads; a corrupted block
//! is an error naming the file, offset and server, never wrong bytes.
//! `dosfs verify` checks every block of every chunk.
//!
//! **Liveness.** A client waiting on a server that sends nothing for
//! 500 ms probes it with a fresh authenticated connection, which a live
//! server answers from its accept and connection threads however busy its
//! workers and disk are; no answer within 1 s is [`Error::ServerDown`]
//! naming the server. So a killed, stopped or unreachable server fails
//! operations within 1.5 s, and a slow one does not ([`client`]).
//!
//! **Server threads.** One reader thread per connection and a shared pool
//! of worker threads (default 8) running requests, replies sent as each
//! completes, so one client's pipelined requests keep several I/Os in flight
//! on a target ([`server`] has the reasons for a thread pool before
//! io_uring).
//!
//! **The data path: shared slots on the node, TCP between nodes.** Every
//! server also listens on an abstract Unix socket named from the file
//! system's id and its index ([`shm`]). Abstract sockets belong to a network
//! namespace, so a client on the server's node reaches it and any other
//! client is refused at once and uses TCP: locality is detected by the
//! kernel, correctly for the namespace hosts of the test cluster too, with
//! nothing in the address file. After the same handshake the server hands
//! the client a sealed memfd of page-aligned slots (`SCM_RIGHTS`); a data
//! request then names a slot instead of carrying bytes, so a write is one
//! copy into the slot and a read one copy out, with no TCP stack and no
//! frame building. Slots belong to a request until its reply and bound the
//! requests in flight; the server checks every slot number and length
//! (a wrong one is a typed protocol error). On the server a slot write is
//! copied once, into a private aligned buffer the disk engine writes with
//! `O_DIRECT` and checksums in place (the checksum is of the bytes written,
//! which the client cannot change under it), and a read of whole checksum
//! blocks of a synced stripe goes from the disk straight into the slot
//! ([`chunk::ChunkStore::read_into`]). A server that does no I/O takes
//! 1 MiB writes about 2-3x faster this way than over loopback TCP
//! (`fs/tests/datapath.rs`); with the disk, the rest is the servers' own
//! work (above all the fsyncs of a sync, which [`client::Client::sync`]
//! issues to all of a file's servers at once). Reads are cut into 256 KiB
//! requests ([`client::Client::read_piece`]), so one 1 MiB read keeps
//! several reads in flight on a server's disk (a write stays one request
//! per stripe: a whole stripe is what goes to disk with `O_DIRECT`).
//!
//! **Write-behind: requests in flight across calls.** A rank writing 1 MiB
//! at a time (IOR's transfers, MPI-IO's `write_at`) makes one request per
//! call, so waiting for each reply leaves one I/O per rank on the disk.
//! [`client::Client::write_behind`], which `dos::io` uses for every write,
//! returns once the bytes are in a slot (or the request frame), so the
//! caller's buffer is free, and leaves the reply to come: up to
//! [`client::Client::behind_window`] writes per server stay in flight
//! (`DOS_FS_WRITE_BEHIND`; **0, off, by default**: on the loaded 2-core
//! test machine 16 in flight measured 0.55-0.62x of off, BENCHMARKS.md),
//! and the file's grow-only size goes to server 0 once, at the next
//! [`client::Client::publish_size`] (every flush), not after each write, so
//! a 1 MiB write is one request to one server. Any other request
//! to a server waits for that server's write-behind replies first (a read,
//! stat or sync sees the writes), and a write waits for an earlier
//! overlapping one (the server's workers may run requests in any order). A
//! write that failed on its server is reported by the next write or
//! [`client::Client::flush`] of that file (`dos::io` flushes in `sync`,
//! `set_size`, `close` and before an atomic-mode write drops its lock), as
//! POSIX write-back reports errors at `fsync`.
//!
//! **Between nodes: TCP by default, RDMA into the same slots on request.**
//! The TCP connection is the control path (handshake, every request and
//! reply). A client told `DOS_FS_TRANSPORT=roce` ([`rdma::Transport`])
//! asks on it for slots reached by RDMA ([`rdma`]): client and server each
//! bind a soft-RoCE endpoint to their side's address of that TCP
//! connection, exchange addresses over it, and the server registers a
//! region of slots (one endpoint and region per client connection). A
//! write is an RDMA WRITE into a slot, then a `WriteSlot` naming it; a read
//! is a `ReadSlot`, then an RDMA READ of the slot. The server handles the
//! slot requests exactly as a same-node client's — one slot table, one set
//! of checks (slot number, length, ownership), one worker path — so how the
//! bytes reached the slot does not matter to it, and its endpoint's own
//! thread answers the one-sided operations. `auto` (the default) is TCP:
//! between two namespace hosts of the test cluster (veth, 2 shared cores)
//! the soft-RoCE, which builds, checksums, authenticates and acknowledges
//! every 4 KiB packet in user space, moved 1 MiB writes at about 0.8x and
//! reads (256 KiB pieces) at about 0.4x the kernel's TCP (medians of 9
//! rounds of 64 MiB on a loaded machine, `fs/tests/rdma.rs`,
//! `namespace_throughput`; ARCHITECTURE.md). A
//! server that cannot set up RDMA grants no slots and the client stays on
//! TCP; `dosfs df` shows each server's data path. With an RDMA device the
//! same protocol fits verbs (register the region with the device, send
//! its rkey); that backend is not wired here (no device to test on).
//!
//! **Security.** Every connection runs the mutual HMAC challenge-response of
//! [`dos_transport::auth`] with the file system's secret, bound to the
//! file-system id; the secret lives in the address file (mode 0600, refused
//! when others can read it). Targets describe themselves ([`target`]) and a
//! server refuses a target of another file system, another index or a newer
//! format.
//!
//! ## Thread safety
//! [`server::Service`] and [`client::Client`] are `Sync`: a client may be
//! shared by threads; its connection to each server is used by one thread
//! at a time, and [`client::Client::read_at`]/[`client::Client::write_at`]
//! use every server involved at once.
//!
//! ## Resources
//! An RDMA connection holds, on the server, a soft-RoCE endpoint (a UDP
//! socket and its driver thread) and a region of slots like a same-node
//! connection's, and on the client an endpoint, until the connection ends.
//! A same-node connection holds a region of data slots, mapped by both
//! ends (16 x 1 MiB asked by default, at most 256 MiB; pages are allocated
//! as used, and a client reuses its slots last-freed first, so about its
//! window of 8 x 1 MiB is touched), freed when the connection ends.
//! A server holds one thread per connection (at most 64 still
//! authenticating, 8 per source, 2 s each) and its worker pool; it stops
//! when its process ends (`dosfs down` syncs first, then sends SIGTERM).
//! Pending (unsynced) writes of a server that stopped without a sync are
//! not in its chunk map when it starts again, so they are not there.
//!
//! **Orphan chunks.** Removing a file (`unlink`, a rename over it) is a
//! namespace change on server 0 followed by a drop of the file's chunks on
//! every server of its layout, sent by the client. Chunks outlive their
//! file when that second step does not happen: a server of the layout was
//! down (the remove reports it, and the name is already gone), the client
//! died in between, or a create was lost with the journal's unsynced tail
//! after data reached the servers. Server 0 deletes its own such chunks when
//! it starts; `dosfs verify /` ([`client::Client::collect_orphans`]) lists
//! every server's inodes (`ListChunks`), asks server 0 about each, and
//! drops the chunks of those it does not know. This is safe while clients
//! work: a chunk exists only after its file's create returned, and inode
//! numbers are never reused.
//!
//! **One server per target.** A server holds an exclusive `flock` on
//! `lock` in its target for its lifetime ([`lock`]); a second one (`dosfs
//! serve` twice, two `dosrun --fs DIR` jobs at once) is refused with an
//! error naming the target and the holder's pid instead of interleaving two
//! journals. The kernel drops the lock when the holder dies, so a crash
//! leaves nothing stale.
//!
//! ## Formats and compatibility
//! Every format carries a version: frames ([`wire::VERSION`]; the slot
//! requests are new kinds in version 1, used only on the connections that
//! offer slots), the
//! handshake ([`dos_transport::auth::VERSION`]), the target descriptor
//! ([`target::FORMAT`] 2: data objects and a chunk map journal; format-1
//! targets, one file per stripe, are refused with a message saying how to
//! move their data) and journal snapshots (version 1).
//! A server refuses a target of a newer or an older format; peers of another protocol
//! version get a protocol error on the first frame.
//!
//! ## Starting servers
//! `dosfs serve` (one process), `dosfs up --local N` (N processes here),
//! [`standing::start`] (a server on a thread of the caller: what `dosrun
//! --fs` runs in dosrun and in each node agent) and `dosfs up --hostfile`
//! ([`standing::launch_hosts`]: dosrun runs the servers in its node agents).
//!
//! ## Not yet here (issue 10)
//! RDMA between nodes (the slot protocol is shaped for it: a client would
//! put into a registered slot over the soft-RoCE), and the performance
//! targets: `ci/bench-io.sh` (`dosbench io` against MPI-IO and fio;
//! BENCHMARKS.md; `dosbench md` the metadata rates) measures them and not all are met. The servers' disk
//! engine is measured in [`chunk`] ("The disk engine"): O_DIRECT for large
//! aligned writes and reads, one group commit per sync, a thread pool rather than
//! io_uring (fio put them within ~10% of each other here). The FUSE mount is
//! `dosfs mount` (the `mount` module, feature `mount`).
#![deny(missing_docs)]

pub mod addrfile;
pub mod chunk;
pub mod client;
pub mod error;
pub mod journal;
pub mod layout;
pub mod lock;
pub mod meta;
#[cfg(feature = "mount")]
pub mod mount;
pub mod rdma;
pub mod server;
pub mod shm;
pub mod standing;
pub mod target;
pub mod wire;

pub use error::{Error, Result};
