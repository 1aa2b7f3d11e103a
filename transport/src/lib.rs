//! # dos-transport: mechanism, not policy
//!
//! The transport layer of dos moves bytes between the ranks of a job. It knows
//! nothing of tags, communicators, eager limits or collectives: those are the
//! policy of the `dos` crate above it. Each backend implements a small set of
//! capability traits and declares what it can do in [`Caps`]:
//!
//! * [`Iface`]: what the backend is (name, capabilities, own index, peers);
//! * [`ActiveMessages`]: ordered, reliable messages to a peer, each carrying a
//!   one-byte handler id ([`AmId`]) and a payload given as a header and a body
//!   that are sent as one contiguous message; a zero-copy flavour
//!   ([`ActiveMessages::am_send_zc`]) lets a backend read the body from the
//!   caller's memory after the call, until it reports [`Event::SendDone`];
//! * [`Progress`]: deliver what arrived, and block until something may have;
//! * [`Wakeable`]: a [`Wake`] handle that ends a blocked wait from another
//!   thread, and a wait that also ends on a condition ([`Wakeable::wait_or`]);
//! * [`PlacingProgress`]: progress that writes large incoming bodies where
//!   an [`AmPlacer`] says (the default delivers them as usual);
//! * [`Rma`]: register memory, and get/put on a peer's registered memory
//!   through a packed [`RemoteKey`], always checked against the registered
//!   bounds;
//! * [`Bringup`]: a network backend's typed set-up, prepare, then address,
//!   then connect ([`PreparedNet`] behind a trait object, for a caller that
//!   chooses the backend at run time).
//!
//! Backends, each in its own module with the same file names where it has the
//! part (`iface.rs` the endpoint, `connect.rs` bring-up, `mem.rs` registered
//! memory, `progress.rs` completions and blocking, `wire.rs` its wire format):
//!
//! * [`shm`]: ranks on one node: lock-free rings in a shared segment, and
//!   single-copy large transfers with CMA;
//! * [`tcp`]: one authenticated connection per pair of ranks on different
//!   hosts; active messages only;
//! * [`roce`]: soft-RoCE, the RoCEv2 protocol (reliable-connected queue pairs,
//!   RDMA READ/WRITE and atomics) over the kernel's UDP sockets, for hosts
//!   without an RDMA device; its reliability engine is sans-IO and tested in a
//!   simulated network;
//! * `verbs` (cargo feature `verbs`): RDMA devices through libibverbs RC queue
//!   pairs (libibverbs is loaded at run time);
//! * [`loopback`]: a rank talking to itself.
//!
//! [`auth`] holds the job secret and the challenge-response that every
//! connection of a job starts with; [`codec`] the bounds-checked reader and
//! writer of the fixed-layout messages. The data path dispatches statically
//! through the [`Transport`] enum, chosen once per job; waking goes through
//! its [`Waker`] enum, and a rank on shared memory and a network backend
//! sleeps in the network's wait alone ([`Transport::bridge_to`]).
//!
//! Every backend is tested against one contract suite, [`contract`]
//! (`tests/contract.rs`, `tests/tcp.rs`, `tests/roce.rs`, `tests/verbs.rs`).
//!
//! ```
//! use dos_transport::{loopback::Loopback, ActiveMessages, Event, Progress};
//! let t = Loopback::new();
//! t.am_send(0, 7, b"hi ", b"there").unwrap();
//! let mut got = Vec::new();
//! t.progress(|ev| {
//!     if let Event::Am { src, id, data } = ev {
//!         got.push((src, id, data.to_vec()))
//!     }
//! });
//! assert_eq!(got, vec![(0, 7, b"hi there".to_vec())]);
//! ```
#![deny(missing_docs)]

use std::time::Duration;

pub mod auth;
mod bringup;
pub mod codec;
pub mod contract;
mod error;
pub mod loopback;
mod poll;
pub mod roce;
pub mod shm;
pub mod tcp;
mod transport;
#[cfg(feature = "verbs")]
pub mod verbs;
mod wake;

#[cfg(feature = "verbs")]
pub use bringup::VerbsOptions;
pub use bringup::{RoceOptions, TcpOptions};
pub use error::{Error, Result};
pub use transport::Transport;
pub use wake::Waker;

/// The id of an active-message handler, chosen by the layer above.
pub type AmId = u8;

/// What a backend can do, and its limits. Must agree with what it implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Active messages ([`ActiveMessages`]).
    pub am: bool,
    /// Largest active message (header plus payload) in bytes.
    pub max_am: usize,
    /// Messages up to this size travel inline with their header (one copy in, one out).
    pub max_inline: usize,
    /// Remote get/put on registered memory ([`Rma`]), completing in the call.
    pub rma: bool,
    /// Zero-copy puts into a peer's registered memory ([`Rma::put_zc`]);
    /// implied by `rma` (the default `put_zc` is a `put`).
    pub put_zc: bool,
    /// Remote 64-bit atomics.
    pub atomics: bool,
    /// The backend reaches peers on other hosts.
    pub inter_node: bool,
}

/// What a backend is: name, capabilities and its view of the peers.
pub trait Iface {
    /// Short backend name (`"shm"`, `"loopback"`, ...).
    fn name(&self) -> &'static str;
    /// Declared capabilities and limits.
    fn caps(&self) -> Caps;
    /// This endpoint's index among its peers.
    fn index(&self) -> usize;
    /// Number of peers reachable through this interface (including itself).
    fn npeers(&self) -> usize;
}

/// Ordered, reliable active messages to a peer.
pub trait ActiveMessages: Iface {
    /// Sends `hdr` followed by `payload` as one message with handler `id`.
    ///
    /// Messages from one endpoint to one peer are delivered in the order sent.
    /// Returns [`Error::Busy`] when there is no room now; the caller makes
    /// progress (which may free room) and retries. Never blocks.
    fn am_send(&self, peer: usize, id: AmId, hdr: &[u8], payload: &[u8]) -> Result<()>;

    /// [`ActiveMessages::am_send`] without copying the body: the backend may
    /// go on reading the `len` bytes at `payload` after the call returns.
    ///
    /// Returns [`Sent::Done`] if it no longer needs them, or [`Sent::Pending`]:
    /// then [`Progress::progress`] later delivers [`Event::SendDone`] with this
    /// `token`, once, after the backend's last access to them, also when the
    /// connection fails (before or with its [`Event::Disconnected`] taking
    /// effect: a failed connection touches no memory). Ordering with
    /// `am_send` is kept. The default copies, like `am_send`.
    ///
    /// # Safety
    /// `payload` must be valid for reads of `len` bytes, and not be written,
    /// until the call returned `Done` or the `SendDone` was delivered.
    unsafe fn am_send_zc(
        &self,
        peer: usize,
        id: AmId,
        hdr: &[u8],
        payload: *const u8,
        len: usize,
        token: u64,
    ) -> Result<Sent> {
        let _ = token;
        // SAFETY: the caller guarantees `payload` for `len` bytes during the call.
        let body = unsafe { std::slice::from_raw_parts(payload, len) };
        self.am_send(peer, id, hdr, body).map(|()| Sent::Done)
    }
}

/// How a zero-copy send ([`ActiveMessages::am_send_zc`]) left the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Sent {
    /// The backend no longer reads the body: the caller may reuse it now.
    Done,
    /// The backend still reads it; an [`Event::SendDone`] says when it stops.
    Pending,
}

/// Something that [`Progress::progress`] delivers.
#[derive(Debug)]
pub enum Event<'a> {
    /// An active message from `src`; `data` is valid only during the callback.
    Am {
        /// Sender's index.
        src: usize,
        /// Handler id given by the sender.
        id: AmId,
        /// Header and payload, contiguous.
        data: &'a [u8],
    },
    /// The connection to `peer` broke (the peer died or its host is unreachable).
    /// Nothing more will arrive from it, and sends to it fail.
    Disconnected {
        /// The peer's index.
        peer: usize,
    },
    /// The backend stopped reading the body of the zero-copy send `token` to
    /// `peer` (sent, or dropped with a failed connection).
    SendDone {
        /// The peer the message went to.
        peer: usize,
        /// The token given to [`ActiveMessages::am_send_zc`].
        token: u64,
    },
    /// An active message whose body an [`AmPlacer`] claimed has arrived: its
    /// first bytes are `head`, the rest is where the placer said.
    Placed {
        /// Sender's index.
        src: usize,
        /// Handler id given by the sender.
        id: AmId,
        /// The first bytes of the message (as many as the placer kept).
        head: &'a [u8],
    },
}

/// How many first bytes of a large active message an [`AmPlacer`] sees.
pub const PLACE_PEEK: usize = 64;

/// Decides where the bodies of large incoming active messages go, so that a
/// backend that reads them from a stream (tcp) writes them straight to their
/// final place instead of into a buffer of its own (one copy less). Asked
/// only for messages larger than the backend's small-frame size.
pub trait AmPlacer {
    /// A message of `len` bytes from `peer` with handler `id` starts with
    /// `head` (its first `min(len, PLACE_PEEK)` bytes): `Some(keep)` claims
    /// it (the first `keep <= head.len()` bytes come back in
    /// [`Event::Placed`], the rest goes where [`AmPlacer::dst`] says), `None`
    /// leaves it to be delivered as [`Event::Am`].
    fn claim(&self, peer: usize, id: AmId, head: &[u8], len: usize) -> Option<usize>;
    /// Where `n` bytes of the claimed message from `peer` go, `offset` bytes
    /// past the kept ones; `None` drops them (the claim was withdrawn). Asked
    /// before every write.
    fn dst(&self, peer: usize, offset: usize, n: usize) -> Option<*mut u8>;
}

/// Delivery of incoming events and blocking while idle.
pub trait Progress {
    /// Delivers the events that have arrived, in order per sender, to `f`.
    /// Never blocks. `f` may send. Returns the work done: how many events
    /// were delivered, plus, for a backend that serves peers' one-sided
    /// operations in software, how many packets it handled; 0 means that
    /// nothing happened (a waiter uses it to decide when to sleep).
    fn progress<F: FnMut(Event<'_>)>(&self, f: F) -> usize;

    /// Blocks until an event may have arrived, or `timeout` passes.
    /// Spurious returns are allowed; the caller calls [`Progress::progress`] again.
    fn wait(&self, timeout: Duration) -> Result<()>;
}

/// Ends a blocked [`Progress::wait`] of one endpoint, from any thread.
///
/// Stays valid (and harmless) after the endpoint is gone.
pub trait Wake: Send + Sync {
    /// Makes the endpoint's current or next `wait` return.
    fn wake(&self);
}

/// Waits that something other than an arrival can end: what a rank needs
/// that sleeps in one place and must hear other threads and other
/// transports.
pub trait Wakeable: Progress {
    /// The handle [`Wakeable::waker`] gives.
    type Waker: Wake + Clone + 'static;

    /// A handle that ends this endpoint's current or next wait from any thread.
    fn waker(&self) -> Self::Waker;

    /// [`Progress::wait`] that also returns at once when `ready()` holds.
    ///
    /// A backend that others can reach behind its back (shared memory, where
    /// a peer publishes a value and then rings the sleeper) checks `ready`
    /// after announcing that it sleeps, so that such a wake-up cannot be
    /// missed. The default checks it before waiting, which suffices when
    /// whoever makes `ready` true then calls the [`Wakeable::waker`].
    fn wait_or(&self, timeout: Duration, ready: &mut dyn FnMut() -> bool) -> Result<()> {
        if ready() {
            return Ok(());
        }
        self.wait(timeout)
    }
}

/// Receives whose large bodies go straight to their final place.
pub trait PlacingProgress: Progress {
    /// [`Progress::progress`], with the bodies of large incoming active
    /// messages written where `placer` says (one copy less for a backend that
    /// reads them from a stream). The default ignores `placer`: every message
    /// is delivered as [`Event::Am`], which is always correct.
    fn progress_placing<F: FnMut(Event<'_>)>(&self, f: F, placer: &dyn AmPlacer) -> usize {
        let _ = placer;
        self.progress(f)
    }
}

/// Typed bring-up of a network backend's endpoint, in three steps:
/// [`Bringup::prepare`] (bind and allocate, no peer involved), then
/// [`Bringup::address`] (what peers need, published through the wire-up
/// service), then [`Bringup::connect`] (to every peer whose address is
/// given).
pub trait Bringup: Sized {
    /// What `prepare` needs beyond the endpoint's index and the number of peers.
    type Options;
    /// The connected endpoint.
    type Iface: Into<Transport>;

    /// Prepares endpoint `index` of `npeers`.
    fn prepare(index: usize, npeers: usize, opts: &Self::Options) -> Result<Self>;

    /// This endpoint's address, as its peers pass it to their `connect`.
    fn address(&self) -> Vec<u8>;

    /// Connects to every peer `q` with `addrs[q]` given (`None`: a peer not
    /// reached through this backend), giving up after `timeout` where the
    /// backend waits for its peers.
    fn connect(self, addrs: &[Option<Vec<u8>>], timeout: Duration) -> Result<Self::Iface>;

    /// Whether a connected endpoint may send only once every peer has
    /// connected too (the caller then holds a barrier of all ranks between
    /// `connect` and the first send). The default is false.
    fn barrier_after_connect(&self) -> bool {
        false
    }
}

/// A prepared endpoint of some network backend, for a caller that chooses
/// the backend at run time: [`Bringup`] behind a trait object.
pub trait PreparedNet: Send {
    /// [`Bringup::address`].
    fn address(&self) -> Vec<u8>;
    /// [`Bringup::barrier_after_connect`].
    fn barrier_after_connect(&self) -> bool;
    /// [`Bringup::connect`], giving the endpoint as a [`Transport`].
    fn connect(self: Box<Self>, addrs: &[Option<Vec<u8>>], timeout: Duration) -> Result<Transport>;
}

impl<B: Bringup + Send> PreparedNet for B {
    fn address(&self) -> Vec<u8> {
        Bringup::address(self)
    }
    fn barrier_after_connect(&self) -> bool {
        Bringup::barrier_after_connect(self)
    }
    fn connect(self: Box<Self>, addrs: &[Option<Vec<u8>>], timeout: Duration) -> Result<Transport> {
        Bringup::connect(*self, addrs, timeout).map(Into::into)
    }
}

/// Maximum size of a packed remote key.
pub const MAX_RKEY: usize = 40;

/// A packed remote key: what a peer needs to access a registered region.
///
/// Its bytes are opaque outside the backend that made it; they travel inside
/// the messages of the layer above.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RemoteKey {
    len: u8,
    bytes: [u8; MAX_RKEY],
}

impl RemoteKey {
    /// Wraps packed bytes received from a peer.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        if b.len() > MAX_RKEY {
            return Err(Error::Malformed {
                what: "remote key",
                reason: "longer than MAX_RKEY",
            });
        }
        let mut bytes = [0u8; MAX_RKEY];
        bytes[..b.len()].copy_from_slice(b);
        Ok(RemoteKey {
            len: b.len() as u8,
            bytes,
        })
    }

    /// The packed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for RemoteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteKey({:02x?})", self.as_bytes())
    }
}

/// A registered local memory region.
#[derive(Debug, Clone, Copy)]
pub struct MemRegion {
    /// Start address.
    pub addr: usize,
    /// Length in bytes.
    pub len: usize,
    /// The key a peer uses to reach it.
    pub rkey: RemoteKey,
}

/// A 64-bit remote atomic operation ([`Rma::atomic`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteAtomic {
    /// Add (wrapping).
    FetchAdd(u64),
    /// Store `swap` if the word holds `compare`.
    CompareSwap {
        /// The value expected.
        compare: u64,
        /// The value stored on equality.
        swap: u64,
    },
}

/// One-sided access to registered memory.
pub trait Rma: Iface {
    /// Runs `op` on the 8-byte-aligned 64-bit word at `offset` of the remote
    /// region `rkey` on `peer`, atomically with respect to other atomics on
    /// it, and returns the word's old value; completes in the call. Backends
    /// without `Caps.atomics` return [`Error::Unsupported`]; an access outside
    /// the region is [`Error::RemoteAccess`].
    fn atomic(
        &self,
        peer: usize,
        rkey: &RemoteKey,
        offset: usize,
        op: RemoteAtomic,
    ) -> Result<u64> {
        let _ = (peer, rkey, offset, op);
        Err(Error::Unsupported {
            backend: self.name(),
            op: "remote atomics",
        })
    }

    /// Registers `len` bytes at `ptr` for remote access.
    ///
    /// Registration does not keep the memory alive: the caller keeps it valid
    /// and unmoved until every peer that holds the key is done with it, and
    /// (for backends that keep a table) until [`Rma::mem_deregister`].
    fn mem_register(&self, ptr: *const u8, len: usize) -> Result<MemRegion>;

    /// Ends a registration: accesses with its key that arrive later are
    /// rejected and never touch the memory. The default does nothing (keys
    /// that need no table, such as CMA's).
    fn mem_deregister(&self, region: &MemRegion) -> Result<()> {
        let _ = region;
        Ok(())
    }

    /// Writes `len` bytes from `src` to `offset` of the remote region `rkey`
    /// on `peer`, reading `src` possibly after returning, as
    /// [`ActiveMessages::am_send_zc`] does with its body: `Sent::Pending`
    /// means an [`Event::SendDone`] with `token` follows. The bytes are in
    /// place before any active message sent to `peer` after this call
    /// arrives. An access outside the region or with a stale key is dropped
    /// by the target, which keeps its memory outside registered regions
    /// untouched. The default is [`Rma::put`]. A backend may leave the
    /// transfer to the next `progress`, `wait` or send to `peer` (the
    /// soft-RoCE does: a burst of puts then goes out together), so the caller
    /// drives progress until the `SendDone`, as it must anyway.
    ///
    /// # Safety
    /// `src` must be valid for reads of `len` bytes, and not be written,
    /// until the call returned `Done` or the `SendDone` was delivered.
    unsafe fn put_zc(
        &self,
        peer: usize,
        src: *const u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
        token: u64,
    ) -> Result<Sent> {
        let _ = token;
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.put(peer, src, len, rkey, offset) }.map(|()| Sent::Done)
    }

    /// Copies `len` bytes at `offset` of the remote region `rkey` on `peer` into `dst`.
    /// Completes before returning. Fails with [`Error::RemoteAccess`] outside the region.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `len` bytes and not accessed by anything else
    /// during the call.
    unsafe fn get(
        &self,
        peer: usize,
        dst: *mut u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
    ) -> Result<()>;

    /// Copies `len` bytes from `src` to `offset` of the remote region `rkey` on `peer`.
    /// Completes before returning. Fails with [`Error::RemoteAccess`] outside the region.
    ///
    /// # Safety
    /// `src` must be valid for reads of `len` bytes during the call.
    unsafe fn put(
        &self,
        peer: usize,
        src: *const u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
    ) -> Result<()>;
}

/// Rejects an access of `len` bytes at `offset` into a region of `region_len` bytes.
#[inline]
pub fn check_bounds(offset: usize, len: usize, region_len: usize) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= region_len => Ok(()),
        _ => Err(Error::RemoteAccess {
            offset,
            len,
            region_len,
        }),
    }
}
