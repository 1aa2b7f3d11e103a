//! The point-to-point engine: tag matching, eager and rendezvous protocols,
//! requests, and the wait loop that spins briefly and then blocks.
//!
//! One engine per process, shared by every communicator through an `Rc`; it is
//! driven by the thread that owns the world (MPI's "funneled" model).
//!
//! * Eager (at most `DOS_EAGER_LIMIT` bytes): envelope and payload travel in
//!   one active message; a matching posted receive gets the payload copied
//!   straight out of the ring, otherwise it is kept as unexpected.
//! * Rendezvous (larger): the sender registers its buffer and sends an RTS
//!   carrying the key; the matching receiver copies the payload with one
//!   transport `get` (CMA on shared memory: a single copy) and sends FIN,
//!   which completes the send.
//!
//! Messages from one sender on one communicator are matched in the order sent
//! (MPI's non-overtaking rule): the transport keeps per-peer order, and a send
//! that finds the transport busy queues behind earlier ones.

pub(crate) mod persistent;
pub(crate) mod probe;
pub(crate) mod ssend;
pub(crate) mod wire;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use dos_transport::{
    ActiveMessages, Event, Iface, MemRegion, Progress, RemoteKey, Rma, Sent, Transport,
};

use crate::config::{Config, RndvMode};
use crate::{Error, Result};
use wire::{
    Envelope, Rts, AM_BYE, AM_CTS, AM_DATA, AM_DONE, AM_EAGER, AM_FIN, AM_PUTCTS, AM_RTS, DATA_HDR,
    ENVELOPE_LEN, FIN_FAILED, FIN_OK, RTS_MAX,
};

/// A message tag. User tags are `0..=i32::MAX`.
pub type Tag = i32;

/// Where a receive accepts messages from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Any rank (`MPI_ANY_SOURCE`).
    Any,
    /// One rank of the communicator.
    Rank(usize),
}

impl From<usize> for Source {
    fn from(r: usize) -> Self {
        Source::Rank(r)
    }
}

/// Which tags a receive accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagSel {
    /// Any tag (`MPI_ANY_TAG`).
    Any,
    /// Exactly this tag.
    Tag(Tag),
}

impl From<Tag> for TagSel {
    fn from(t: Tag) -> Self {
        TagSel::Tag(t)
    }
}

/// Accept a message from any rank.
pub const ANY_SOURCE: Source = Source::Any;
/// Accept a message with any tag.
pub const ANY_TAG: TagSel = TagSel::Any;

/// What a completed receive (or a probe) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// Sender's rank in the communicator.
    pub source: usize,
    /// The message's tag.
    pub tag: Tag,
    /// Length in bytes.
    pub len: usize,
}

impl Status {
    /// Number of whole `T` elements in the message.
    pub fn count<T>(&self) -> usize {
        self.len / std::mem::size_of::<T>().max(1)
    }
}

/// Most buffers kept for unexpected messages.
const MAX_SPARE: usize = 64;
/// Eager messages to other nodes from this size on lend their buffer to the
/// socket (below it, copying what the socket does not take costs less than
/// the request that a loan needs).
const ZC_EAGER_MIN: usize = 8 * 1024;

/// Largest buffer kept for reuse.
const MAX_SPARE_BYTES: usize = 64 * 1024;

/// Idle polls between two reads of the clock in [`Engine::wait_until`].
const POLLS_PER_CLOCK: u32 = 16;

/// Index of a request slot.
pub(crate) type ReqId = u32;

#[derive(Debug)]
enum Slot {
    Free,
    /// In flight, nothing to remember (eager send queued, receive posted).
    Active,
    /// A rendezvous send waiting for CTS (pipeline) or FIN (CMA).
    Sending {
        buf: *const u8,
        len: usize,
    },
    /// A rendezvous receive whose payload the sender puts into `region`
    /// (registered with the network transport) until DONE.
    Placing {
        region: MemRegion,
        cap: usize,
        status: Status,
    },
    /// A pipelined rendezvous receive collecting chunks.
    Receiving {
        buf: *mut u8,
        cap: usize,
        got: usize,
        status: Status,
    },
    Done(Result<Status>),
}

#[derive(Debug)]
struct Req {
    slot: Slot,
    gen: u32,
    /// Bodies of this (send) request that a transport still reads (zero-copy
    /// sends that said `Pending`); the request completes only at zero.
    lent: u32,
    /// The result to post once `lent` reaches zero.
    after: Option<Result<Status>>,
    /// Replies from other ranks this request still waits for (one-sided gets).
    replies: u32,
}

#[derive(Debug)]
struct Posted {
    ctx: u32,
    src: i64,
    tag: i64,
    buf: *mut u8,
    cap: usize,
    req: ReqId,
}

#[derive(Debug)]
enum Body {
    Eager(Vec<u8>),
    Rts {
        len: u64,
        sreq: u32,
        rkey: RemoteKey,
    },
}

#[derive(Debug)]
struct Unexpected {
    env: Envelope,
    peer: usize,
    body: Body,
}

impl Unexpected {
    fn len(&self) -> usize {
        match &self.body {
            Body::Eager(v) => v.len(),
            Body::Rts { len, .. } => *len as usize,
        }
    }
}

/// A rendezvous payload being pushed: chunks through the rings or the
/// socket, or puts into the receiver's registered buffer (`rkey`).
#[derive(Debug)]
struct Stream {
    peer: usize,
    sreq: ReqId,
    rreq: u32,
    buf: *const u8,
    len: usize,
    off: usize,
    rkey: Option<RemoteKey>,
}

/// A send that found the transport busy, waiting its turn.
#[derive(Debug)]
struct Pending {
    id: u8,
    hdr: [u8; RTS_MAX],
    hdr_len: u8,
    payload: *const u8,
    len: usize,
    /// The payload, when the sender's buffer could not be kept (`send_copy`).
    owned: Vec<u8>,
    /// Completed when the message is handed to the transport (eager sends).
    complete: Option<ReqId>,
}

#[derive(Debug, Default)]
struct State {
    posted: VecDeque<Posted>,
    unexpected: VecDeque<Unexpected>,
    reqs: Vec<Req>,
    free: Vec<ReqId>,
    /// Per peer, in order; empty deques do not allocate.
    pending: Vec<VecDeque<Pending>>,
    npending: usize,
    /// Pipelined payloads being sent.
    streams: VecDeque<Stream>,
    /// Buffers of delivered unexpected messages, kept for reuse so that early
    /// arrivals cost no allocation once warmed up.
    spare: Vec<Vec<u8>>,
    /// The first peer whose connection broke, if any.
    failed: Option<usize>,
    /// Peers that said goodbye (finalized): their connections may close.
    departed: Vec<usize>,
    /// Next communicator context id this process may hand out.
    next_ctx: u32,
    /// Next window id this process may hand out.
    pub(crate) next_win: u32,
    /// Last node-collective generation of each context that has slots.
    node_gen: [u64; crate::coll::COLL_CTXS],
    /// Eager messages from other nodes being read straight into their posted
    /// receive buffers (see [`EagerPlacer`]), by sender (world rank).
    placing: Vec<(usize, Placed)>,
}

impl State {
    /// Removes and returns the first posted receive that matches `env`, if
    /// it holds at least `min_cap` bytes (MPI's matching order: post order).
    fn take_posted(&mut self, env: &Envelope, min_cap: usize) -> Option<Posted> {
        let i = self
            .posted
            .iter()
            .position(|p| matches(p.ctx, p.src, p.tag, env))
            .filter(|&i| self.posted[i].cap >= min_cap)?;
        self.posted.remove(i)
    }
}

/// An eager message whose payload the network transport writes in place.
#[derive(Debug, Clone, Copy)]
struct Placed {
    req: ReqId,
    buf: *mut u8,
    len: usize,
    status: Status,
}

/// Lets the network transport read the payloads of large eager messages
/// from the socket straight into matching posted receives (one copy less
/// than reading them into its buffer and copying them out).
struct EagerPlacer<'a> {
    eng: &'a Engine,
    world: &'a [u32],
}

impl dos_transport::AmPlacer for EagerPlacer<'_> {
    fn claim(
        &self,
        peer: usize,
        id: dos_transport::AmId,
        head: &[u8],
        len: usize,
    ) -> Option<usize> {
        if id != AM_EAGER {
            return None;
        }
        let src = *self.world.get(peer)? as usize;
        let (env, _) = Envelope::decode(head)?;
        let payload = len.checked_sub(ENVELOPE_LEN)?;
        let mut st = self.eng.st.borrow_mut();
        // Claimed only when it fits (a truncated receive takes the usual path).
        let p = st.take_posted(&env, payload)?;
        st.placing.push((
            src,
            Placed {
                req: p.req,
                buf: p.buf,
                len: payload,
                status: Status {
                    source: env.src as usize,
                    tag: env.tag,
                    len: payload,
                },
            },
        ));
        Some(ENVELOPE_LEN)
    }

    fn dst(&self, peer: usize, offset: usize, n: usize) -> Option<*mut u8> {
        let src = *self.world.get(peer)? as usize;
        let st = self.eng.st.borrow();
        let (_, p) = st.placing.iter().find(|(s, _)| *s == src)?;
        // SAFETY: inside the posted buffer (its `cap >= len`), which the
        // request keeps valid until it completes or is abandoned (which
        // withdraws the claim first).
        (offset.checked_add(n)? <= p.len).then(|| unsafe { p.buf.add(offset) })
    }
}

/// How a peer (a world rank) is reached; decided once, at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Through the node-local transport (shared memory), at this index.
    Local(u32),
    /// Through the network transport, at this index.
    Net(u32),
}

/// The transports of one process and the route to every peer.
#[derive(Debug)]
pub(crate) struct Links {
    /// The node-local transport (shm, or loopback for a rank alone).
    pub local: Transport,
    /// The network transport, when the job spans several nodes.
    pub net: Option<Transport>,
    /// Route of every world rank.
    pub routes: Box<[Route]>,
    /// World rank of every index of the local transport.
    pub local_world: Box<[u32]>,
    /// World rank of every index of the network transport.
    pub net_world: Box<[u32]>,
}

impl Links {
    /// A single node: every rank is reached through `local`, at its own index.
    pub fn single_node(local: Transport) -> Links {
        let n = local.npeers() as u32;
        Links {
            local,
            net: None,
            routes: (0..n).map(Route::Local).collect(),
            local_world: (0..n).collect(),
            net_world: Box::new([]),
        }
    }
}

/// The engine as the main thread's objects (communicators, requests,
/// windows) hold it: reachable only through [`Shared::enter`], so that every
/// access happens inside the gate (see [`crate::gate`]).
#[derive(Debug, Clone)]
pub(crate) struct Shared(Rc<Engine>);

impl Shared {
    pub(crate) fn new(e: Engine) -> Shared {
        Shared(Rc::new(e))
    }

    /// Enters the engine for the lifetime of the guard (the main thread).
    #[inline]
    pub(crate) fn enter(&self) -> Entered<'_> {
        let e = &*self.0;
        let d = e.depth.get();
        if d == 0 && e.gated.get() {
            e.gate.main_enter();
        }
        e.depth.set(d + 1);
        Entered(e)
    }
}

impl Shared {
    /// Whether the main thread is inside the engine (main thread only).
    pub(crate) fn inside(&self) -> bool {
        self.0.depth.get() > 0
    }
}

/// The engine while the main thread is inside it; see [`Shared::enter`].
pub(crate) struct Entered<'a>(&'a Engine);

impl std::ops::Deref for Entered<'_> {
    type Target = Engine;
    #[inline]
    fn deref(&self) -> &Engine {
        self.0
    }
}

impl Drop for Entered<'_> {
    #[inline]
    fn drop(&mut self) {
        let e = self.0;
        let d = e.depth.get() - 1;
        e.depth.set(d);
        if d == 0 && e.gated.get() {
            e.gate.main_leave();
        }
    }
}

/// The per-process point-to-point engine.
#[derive(Debug)]
pub(crate) struct Engine {
    /// Who drives the engine (see [`crate::gate`]); shared with the RPC
    /// service thread.
    pub(crate) gate: std::sync::Arc<crate::gate::Gate>,
    /// How deep the main thread is inside the engine (main thread only).
    depth: Cell<u32>,
    /// Whether entering takes the gate (once the service thread runs).
    gated: Cell<bool>,
    /// With both shm and a network transport: turns the shm doorbell into a
    /// wake-up of the network's wait, so that this rank sleeps in one place
    /// and hears both.
    bridge: Option<dos_transport::shm::DoorbellBridge>,
    /// One-sided state: windows exposed by this rank, operations in flight.
    pub(crate) rma: RefCell<crate::rma::target::Table>,
    /// RPC state: handlers, requests to serve, calls in flight.
    pub(crate) rpc: RefCell<crate::rpc::Table>,
    /// Nonblocking collectives in flight (see `coll::nonblocking`).
    pub(crate) nbc: RefCell<crate::coll::nonblocking::Table>,
    links: Links,
    st: RefCell<State>,
    cfg: Config,
    /// How long a waiter polls before yielding.
    spin: Duration,
    /// How long it then polls with `sched_yield` in between, before blocking.
    yield_for: Duration,
    eager_limit: usize,
    /// Eager limit towards peers on other nodes.
    net_eager_limit: usize,
    /// Rendezvous protocol in force.
    rndv: RndvMode,
    /// Bytes per pipelined chunk through shared memory.
    chunk: usize,
    /// Bytes per pipelined chunk over the network.
    net_chunk: usize,
}

fn sel_src(s: Source) -> i64 {
    match s {
        Source::Any => -1,
        Source::Rank(r) => r as i64,
    }
}

/// Selector value of `TagSel::Any` (internal tags may be negative).
const ANY_TAG_SEL: i64 = i64::MIN;

fn sel_tag(t: TagSel) -> i64 {
    match t {
        TagSel::Any => ANY_TAG_SEL,
        TagSel::Tag(t) => t as i64,
    }
}

#[inline]
fn matches(ctx: u32, src: i64, tag: i64, env: &Envelope) -> bool {
    ctx == env.ctx
        && (src < 0 || src == env.src as i64)
        && (tag == ANY_TAG_SEL || tag == env.tag as i64)
}

/// Number of CPUs online on this node. (Not this process's affinity mask: a
/// rank bound to one core is not oversubscribed because its mask has one CPU.)
fn node_cpus() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

impl Engine {
    /// An engine over `links`; `local_ranks` is how many ranks share this node's CPUs.
    pub(crate) fn new(links: Links, cfg: Config, local_ranks: usize) -> Engine {
        let oversubscribed = local_ranks > node_cpus();
        // With more ranks than cores, the rank we wait for may need our core:
        // give it away at once (sched_yield), and sleep only after a while.
        let spin_us = cfg.spin_us.unwrap_or(if oversubscribed { 0 } else { 1000 });
        let yield_us = cfg
            .yield_us
            .unwrap_or(if oversubscribed { 500 } else { 50 });
        let spin = Duration::from_micros(spin_us as u64);
        let yield_for = Duration::from_micros(yield_us as u64);
        // Limits that hold on every route; eager messages go by the peer's
        // route, so each route's eager limit is bounded by its own transport
        // (a 64 KiB message to another node is eager even though it would
        // not fit this node's rings).
        let local_max_am = links.local.caps().max_am;
        let max_am = links
            .net
            .as_ref()
            .map_or(usize::MAX, |n| n.caps().max_am)
            .min(local_max_am);
        let max_eager = local_max_am.saturating_sub(ENVELOPE_LEN);
        let max_net_eager = links
            .net
            .as_ref()
            .map_or(max_eager, |n| n.caps().max_am.saturating_sub(ENVELOPE_LEN));
        let npeers = links.routes.len();
        let mut st = State {
            next_ctx: 1,
            ..State::default()
        };
        st.pending.resize_with(npeers, VecDeque::new);
        let rndv = match cfg.rndv {
            RndvMode::Auto if oversubscribed => RndvMode::Cma,
            RndvMode::Auto => RndvMode::Pipeline,
            m => m,
        };
        let chunk = cfg.rndv_chunk.min(max_am.saturating_sub(DATA_HDR)).max(1);
        // Over the network the chunks are frames lent to the socket (no copy
        // on the sending side); see `DOS_NET_CHUNK` for the size.
        let net_chunk = links.net.as_ref().map_or(chunk, |n| {
            // (64: room for the header of a DATA message or of a put.)
            cfg.net_chunk
                .min(n.caps().max_am.saturating_sub(DATA_HDR.max(64)))
                .max(1)
        });
        let bridge = links
            .net
            .as_ref()
            .and_then(|net| links.local.bridge_to(net));
        Engine {
            gate: Default::default(),
            depth: Cell::new(0),
            gated: Cell::new(false),
            bridge,
            rma: RefCell::default(),
            rpc: RefCell::default(),
            nbc: RefCell::default(),
            rndv,
            chunk,
            net_chunk,
            eager_limit: cfg.eager_limit.min(max_eager),
            net_eager_limit: cfg.net_eager_limit.min(max_net_eager),
            links,
            st: RefCell::new(st),
            cfg,
            spin,
            yield_for,
        }
    }

    /// Makes entering the engine take the gate from now on (the RPC service
    /// thread is about to start). Called by the main thread inside the engine.
    pub(crate) fn start_gating(&self) {
        if !self.gated.get() {
            debug_assert!(self.depth.get() > 0, "start_gating outside the engine");
            self.gate.main_enter();
            self.gated.set(true);
        }
    }

    /// Sleeps until a transport may have something, or `ready()` holds (the
    /// RPC service thread's idle wait; see [`Engine::waker`]).
    pub(crate) fn sleep(&self, ready: &mut dyn FnMut() -> bool) -> Result<()> {
        self.block(ready)
    }

    /// What ends a [`Engine::sleep`] from another thread: the network
    /// transport's wake-up when there is one (shared memory rings reach it
    /// through the doorbell bridge), else this rank's shm doorbell. A rank
    /// alone sleeps at most a millisecond at a time anyway.
    pub(crate) fn waker(&self) -> crate::gate::Waker {
        let net = self.links.net.as_ref().and_then(|n| n.waker());
        match net.or_else(|| self.links.local.waker()) {
            Some(w) => Box::new(move || dos_transport::Wake::wake(&w)),
            None => Box::new(|| {}),
        }
    }

    /// The tunables in force.
    pub(crate) fn config(&self) -> &Config {
        &self.cfg
    }

    /// Names of the transports in use (`"shm"`, `"shm+tcp"`, ...).
    pub(crate) fn transport_names(&self) -> String {
        match &self.links.net {
            None => self.links.local.name().to_string(),
            Some(n) => format!("{}+{}", self.links.local.name(), n.name()),
        }
    }

    /// Sends an active message to world rank `peer` along its route.
    #[inline]
    fn am_send(
        &self,
        peer: usize,
        id: u8,
        hdr: &[u8],
        payload: &[u8],
    ) -> std::result::Result<(), dos_transport::Error> {
        match (self.links.routes.get(peer), &self.links.net) {
            (Some(Route::Local(i)), _) => self.links.local.am_send(*i as usize, id, hdr, payload),
            (Some(Route::Net(i)), Some(net)) => net.am_send(*i as usize, id, hdr, payload),
            _ => Err(dos_transport::Error::NoSuchPeer {
                peer,
                npeers: self.links.routes.len(),
            }),
        }
    }

    /// The shared-memory endpoint, when the local transport is one.
    #[inline]
    pub(crate) fn shm(&self) -> Option<&dos_transport::shm::ShmIface> {
        self.links.local.as_shm()
    }

    /// The network transport, and world rank `peer`'s index in it, if `peer`
    /// is reached over the network.
    #[inline]
    pub(crate) fn net_of(&self, peer: usize) -> Option<(&Transport, usize)> {
        match (self.links.routes.get(peer), &self.links.net) {
            (Some(Route::Net(i)), Some(n)) => Some((n, *i as usize)),
            _ => None,
        }
    }

    /// The largest active message (header and body) to world rank `world`
    /// on its route.
    pub(crate) fn max_am_to(&self, world: usize) -> usize {
        match self.net_of(world) {
            Some((net, _)) => net.caps().max_am,
            None => self.links.local.caps().max_am,
        }
    }

    /// The network transport, if the job spans nodes.
    #[inline]
    pub(crate) fn net(&self) -> Option<&Transport> {
        self.links.net.as_ref()
    }

    /// Takes the next node-collective generation of context `ctx` (< `COLL_CTXS`).
    #[inline]
    pub(crate) fn next_node_gen(&self, ctx: usize) -> u64 {
        let mut st = self.st.borrow_mut();
        st.node_gen[ctx] += 1;
        st.node_gen[ctx]
    }

    /// Zero-copy send to world rank `peer` along its route.
    ///
    /// # Safety
    /// As `ActiveMessages::am_send_zc`: `payload` stays readable and unchanged
    /// until `Done` or the `SendDone` of `token`.
    #[inline]
    unsafe fn am_send_zc(
        &self,
        peer: usize,
        id: u8,
        hdr: &[u8],
        payload: *const u8,
        len: usize,
        token: u64,
    ) -> std::result::Result<Sent, dos_transport::Error> {
        match (self.links.routes.get(peer), &self.links.net) {
            // SAFETY: forwarded with the caller's guarantees.
            (Some(Route::Local(i)), _) => unsafe {
                self.links
                    .local
                    .am_send_zc(*i as usize, id, hdr, payload, len, token)
            },
            // SAFETY: as above.
            (Some(Route::Net(i)), Some(net)) => unsafe {
                net.am_send_zc(*i as usize, id, hdr, payload, len, token)
            },
            _ => Err(dos_transport::Error::NoSuchPeer {
                peer,
                npeers: self.links.routes.len(),
            }),
        }
    }

    /// Index of world rank `peer` in the local transport, if it is reached that way.
    #[inline]
    pub(crate) fn local_index(&self, peer: usize) -> Option<usize> {
        match self.links.routes.get(peer) {
            Some(Route::Local(i)) => Some(*i as usize),
            _ => None,
        }
    }

    /// Reserves a context id at least `min`; see `Comm::split`.
    pub(crate) fn next_ctx(&self) -> u32 {
        self.st.borrow().next_ctx
    }

    /// The next window id this process may hand out.
    pub(crate) fn next_win(&self) -> u32 {
        self.st.borrow().next_win
    }

    /// Marks every window id below `upto` as used.
    pub(crate) fn bump_win(&self, upto: u32) {
        let mut st = self.st.borrow_mut();
        st.next_win = st.next_win.max(upto);
    }

    /// Marks every context id below `upto` as used.
    pub(crate) fn bump_ctx(&self, upto: u32) {
        let mut st = self.st.borrow_mut();
        st.next_ctx = st.next_ctx.max(upto);
    }

    fn alloc_req(st: &mut State) -> ReqId {
        if let Some(id) = st.free.pop() {
            st.reqs[id as usize].slot = Slot::Active;
            id
        } else {
            st.reqs.push(Req {
                slot: Slot::Active,
                gen: 0,
                lent: 0,
                after: None,
                replies: 0,
            });
            (st.reqs.len() - 1) as ReqId
        }
    }

    fn complete(st: &mut State, id: ReqId, r: Result<Status>) {
        st.reqs[id as usize].slot = Slot::Done(r);
    }

    /// Generation of a slot, to detect reuse.
    pub(crate) fn generation(&self, id: ReqId) -> u32 {
        self.st.borrow().reqs[id as usize].gen
    }

    /// True if request `id` has completed.
    pub(crate) fn is_done(&self, id: ReqId) -> bool {
        matches!(self.st.borrow().reqs[id as usize].slot, Slot::Done(_))
    }

    /// Takes the result of a completed request and frees its slot.
    pub(crate) fn take(&self, id: ReqId) -> Result<Status> {
        let mut st = self.st.borrow_mut();
        let req = &mut st.reqs[id as usize];
        let slot = std::mem::replace(&mut req.slot, Slot::Free);
        req.gen = req.gen.wrapping_add(1);
        st.free.push(id);
        match slot {
            Slot::Done(r) => r,
            _ => unreachable!("take of an incomplete request"),
        }
    }

    // ----- sending -----

    /// Starts sending `len` bytes at `buf` to transport peer `peer`.
    ///
    /// Returns `None` if the send already completed, else the request to wait on.
    ///
    /// # Safety
    /// `buf` must stay valid for reads of `len` bytes, and unmodified, until the
    /// returned request completes (immediately if `None`).
    pub(crate) unsafe fn isend(
        &self,
        peer: usize,
        env: Envelope,
        buf: *const u8,
        len: usize,
    ) -> Result<Option<ReqId>> {
        let limit = match self.links.routes.get(peer) {
            Some(Route::Net(_)) => self.net_eager_limit,
            _ => self.eager_limit,
        };
        if len <= limit {
            let hdr = env.encode();
            let queued = !self.st.borrow().pending[peer].is_empty();
            if !queued && len >= ZC_EAGER_MIN && self.put_capable(peer) {
                // SAFETY: the caller guarantees `buf` until the request completes.
                if let Some(r) = unsafe { self.isend_eager_zc(peer, &hdr, buf, len) } {
                    return r;
                }
            } else if !queued {
                // SAFETY: the caller guarantees `buf` for `len` bytes.
                let payload = unsafe { std::slice::from_raw_parts(buf, len) };
                match self.am_send(peer, AM_EAGER, &hdr, payload) {
                    Ok(()) => return Ok(None),
                    Err(dos_transport::Error::Busy { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let mut st = self.st.borrow_mut();
            let id = Self::alloc_req(&mut st);
            let mut p = Pending {
                id: AM_EAGER,
                hdr: [0; RTS_MAX],
                hdr_len: ENVELOPE_LEN as u8,
                payload: buf,
                len,
                owned: Vec::new(),
                complete: Some(id),
            };
            p.hdr[..ENVELOPE_LEN].copy_from_slice(&hdr);
            st.pending[peer].push_back(p);
            st.npending += 1;
            Ok(Some(id))
        } else {
            self.isend_rdv(peer, env, buf, len).map(Some)
        }
    }

    /// An eager send over the network that lends `buf` to the socket instead
    /// of copying what the socket does not take at once. `None` if the
    /// transport is busy (the caller queues the message).
    ///
    /// # Safety
    /// As `isend`.
    unsafe fn isend_eager_zc(
        &self,
        peer: usize,
        hdr: &[u8],
        buf: *const u8,
        len: usize,
    ) -> Option<Result<Option<ReqId>>> {
        let (id, token) = {
            let mut st = self.st.borrow_mut();
            let id = Self::alloc_req(&mut st);
            (id, loan_token(id, st.reqs[id as usize].gen))
        };
        // SAFETY: the request owns `buf` until it completes, after its SendDone.
        let r = unsafe { self.am_send_zc(peer, AM_EAGER, hdr, buf, len, token) };
        let mut st = self.st.borrow_mut();
        match r {
            Ok(Sent::Pending) => {
                let req = &mut st.reqs[id as usize];
                req.lent = 1;
                req.after = Some(Ok(Status::default()));
                Some(Ok(Some(id)))
            }
            Ok(Sent::Done) => {
                Self::free_req(&mut st, id);
                Some(Ok(None))
            }
            Err(dos_transport::Error::Busy { .. }) => {
                Self::free_req(&mut st, id);
                None
            }
            Err(e) => {
                Self::free_req(&mut st, id);
                Some(Err(e.into()))
            }
        }
    }

    /// Returns an unused request slot.
    fn free_req(st: &mut State, id: ReqId) {
        let req = &mut st.reqs[id as usize];
        req.slot = Slot::Free;
        req.gen = req.gen.wrapping_add(1);
        st.free.push(id);
    }

    #[cold]
    fn isend_rdv(&self, peer: usize, env: Envelope, buf: *const u8, len: usize) -> Result<ReqId> {
        // A key only for peers that can fetch the payload themselves (CMA on
        // shared memory); others get an empty key and the pipelined protocol.
        let rkey = match self.local_index(peer) {
            Some(_) if self.links.local.caps().rma && len > 0 => {
                self.links.local.mem_register(buf, len)?.rkey
            }
            _ => RemoteKey::from_bytes(&[])?,
        };
        let id = {
            let mut st = self.st.borrow_mut();
            let id = Self::alloc_req(&mut st);
            st.reqs[id as usize].slot = Slot::Sending { buf, len };
            id
        };
        let rts = Rts {
            env,
            len: len as u64,
            sreq: id,
            rkey,
        };
        let mut hdr = [0u8; RTS_MAX];
        let n = rts.encode(&mut hdr);
        self.send_ctrl(peer, AM_RTS, &hdr[..n]).inspect_err(|_| {
            let mut st = self.st.borrow_mut();
            st.reqs[id as usize].slot = Slot::Free;
            st.free.push(id);
        })?;
        Ok(id)
    }

    /// Sends a small control message, queueing it behind earlier sends if busy.
    fn send_ctrl(&self, peer: usize, id: u8, hdr: &[u8]) -> Result<()> {
        self.send_copy(peer, id, hdr, &[])
    }

    /// Sends an active message to world rank `peer`, copying `payload` into
    /// the queue if the transport is busy (for messages whose buffer the
    /// caller does not keep, such as one-sided operations and their replies).
    /// `hdr` is at most `RTS_MAX` bytes.
    pub(crate) fn send_copy(&self, peer: usize, id: u8, hdr: &[u8], payload: &[u8]) -> Result<()> {
        debug_assert!(hdr.len() <= RTS_MAX);
        let queued = match self.st.borrow().pending.get(peer) {
            Some(q) => !q.is_empty(),
            None => {
                return Err(Error::InvalidRank {
                    rank: peer,
                    size: self.links.routes.len(),
                })
            }
        };
        if !queued {
            match self.am_send(peer, id, hdr, payload) {
                Ok(()) => return Ok(()),
                Err(dos_transport::Error::Busy { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut p = Pending {
            id,
            hdr: [0; RTS_MAX],
            hdr_len: hdr.len() as u8,
            payload: std::ptr::null(),
            len: 0,
            owned: payload.to_vec(),
            complete: None,
        };
        p.hdr[..hdr.len()].copy_from_slice(hdr);
        let mut st = self.st.borrow_mut();
        st.pending[peer].push_back(p);
        st.npending += 1;
        Ok(())
    }

    /// Hands queued sends to the transport, in order, until it is busy again.
    #[cold]
    fn flush_pending(&self) {
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        for peer in 0..st.pending.len() {
            while let Some(p) = st.pending[peer].front() {
                let payload: &[u8] = if !p.owned.is_empty() {
                    &p.owned
                } else if p.len == 0 {
                    &[]
                } else {
                    // SAFETY: the request that owns `payload` is still active, so
                    // its buffer is still borrowed (see `isend`).
                    unsafe { std::slice::from_raw_parts(p.payload, p.len) }
                };
                match self.am_send(peer, p.id, &p.hdr[..p.hdr_len as usize], payload) {
                    Ok(()) => {
                        if let Some(id) = p.complete {
                            st.reqs[id as usize].slot = Slot::Done(Ok(Status::default()));
                        }
                        st.pending[peer].pop_front();
                        st.npending -= 1;
                    }
                    Err(dos_transport::Error::Busy { .. }) => break,
                    Err(e) => {
                        if let Some(id) = p.complete {
                            st.reqs[id as usize].slot = Slot::Done(Err(e.into()));
                        }
                        st.pending[peer].pop_front();
                        st.npending -= 1;
                    }
                }
            }
        }
    }

    // ----- receiving -----

    /// Posts a receive into `cap` bytes at `buf`; returns its request.
    ///
    /// # Safety
    /// `buf` must stay valid for writes of `cap` bytes, and not be accessed
    /// otherwise, until the request completes.
    pub(crate) unsafe fn irecv(
        &self,
        ctx: u32,
        src: Source,
        tag: TagSel,
        buf: *mut u8,
        cap: usize,
    ) -> Result<ReqId> {
        let (src, tag) = (sel_src(src), sel_tag(tag));
        let mut st = self.st.borrow_mut();
        let id = Self::alloc_req(&mut st);
        let found = st
            .unexpected
            .iter()
            .position(|u| matches(ctx, src, tag, &u.env));
        match found {
            Some(i) => {
                let u = st.unexpected.remove(i).expect("index from position");
                drop(st);
                self.deliver_unexpected(u, buf, cap, id);
            }
            None => st.posted.push_back(Posted {
                ctx,
                src,
                tag,
                buf,
                cap,
                req: id,
            }),
        }
        Ok(id)
    }

    fn deliver_unexpected(&self, u: Unexpected, buf: *mut u8, cap: usize, id: ReqId) {
        let status = Status {
            source: u.env.src as usize,
            tag: u.env.tag,
            len: u.len(),
        };
        match u.body {
            Body::Eager(v) => {
                // SAFETY: `buf` is valid for `cap` bytes (irecv's contract).
                unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), buf, v.len().min(cap)) };
                let mut st = self.st.borrow_mut();
                Self::complete(&mut st, id, truncation(status, cap));
                if st.spare.len() < MAX_SPARE && v.capacity() <= MAX_SPARE_BYTES {
                    st.spare.push(v);
                }
            }
            Body::Rts { sreq, rkey, .. } => {
                self.rdv_start(u.peer, status, sreq, &rkey, buf, cap, id)
            }
        }
    }

    /// Starts receiving a matched rendezvous message into request `id`.
    #[allow(clippy::too_many_arguments)]
    fn rdv_start(
        &self,
        peer: usize,
        status: Status,
        sreq: u32,
        rkey: &RemoteKey,
        buf: *mut u8,
        cap: usize,
        id: ReqId,
    ) {
        // CMA reaches only peers on this node; everyone else streams.
        let mode = match self.local_index(peer) {
            Some(_) if self.links.local.caps().rma && !rkey.as_bytes().is_empty() => self.rndv,
            _ => RndvMode::Pipeline,
        };
        match mode {
            RndvMode::Pipeline if self.put_capable(peer) && cap >= status.len && status.len > 0 => {
                // Over the network: the sender puts the payload straight into
                // the buffer (no copy on either side), then says DONE.
                let r = self
                    .links
                    .net
                    .as_ref()
                    .expect("put_capable")
                    .mem_register(buf, status.len);
                let region = match r {
                    Ok(region) => region,
                    Err(e) => return Self::complete(&mut self.st.borrow_mut(), id, Err(e.into())),
                };
                self.st.borrow_mut().reqs[id as usize].slot = Slot::Placing {
                    region,
                    cap,
                    status,
                };
                let mut b = [0u8; wire::PUTCTS_MAX];
                let n = wire::putcts_encode(sreq, id, &region.rkey, &mut b);
                if let Err(e) = self.send_ctrl(peer, AM_PUTCTS, &b[..n]) {
                    self.release_region(id);
                    Self::complete(&mut self.st.borrow_mut(), id, Err(e));
                }
            }
            RndvMode::Pipeline => {
                self.st.borrow_mut().reqs[id as usize].slot = Slot::Receiving {
                    buf,
                    cap,
                    got: 0,
                    status,
                };
                if let Err(e) = self.send_ctrl(peer, AM_CTS, &wire::cts_encode(sreq, id)) {
                    Self::complete(&mut self.st.borrow_mut(), id, Err(e));
                }
            }
            RndvMode::Cma | RndvMode::Auto => {
                let r = self
                    .rdv_fetch(peer, status.len, sreq, rkey, buf, cap)
                    .and_then(|()| truncation(status, cap));
                Self::complete(&mut self.st.borrow_mut(), id, r);
            }
        }
    }

    /// True if world rank `peer` is reached over a network transport that
    /// takes zero-copy puts.
    fn put_capable(&self, peer: usize) -> bool {
        matches!(self.links.routes.get(peer), Some(Route::Net(_)))
            && self.links.net.as_ref().is_some_and(|n| n.caps().put_zc)
    }

    /// Ends the registration of a `Placing` request (so that nothing more is
    /// written into its buffer); a no-op for other states.
    fn release_region(&self, id: ReqId) {
        let region = match self.st.borrow().reqs.get(id as usize) {
            Some(Req {
                slot: Slot::Placing { region, .. },
                ..
            }) => *region,
            _ => return,
        };
        if let Some(net) = &self.links.net {
            if let Err(e) = net.mem_deregister(&region) {
                protocol_error(e.into());
            }
        }
    }

    /// Fetches a rendezvous payload with one `get` and sends FIN.
    fn rdv_fetch(
        &self,
        peer: usize,
        len: usize,
        sreq: u32,
        rkey: &RemoteKey,
        buf: *mut u8,
        cap: usize,
    ) -> Result<()> {
        // SAFETY: `buf` is valid for `cap` bytes and we copy at most that.
        let Some(local) = self.local_index(peer) else {
            return Err(Error::Unsupported(
                "single-copy fetch from a peer on another node",
            ));
        };
        // SAFETY: as above.
        let r = unsafe { self.links.local.get(local, buf, len.min(cap), rkey, 0) };
        let status = if r.is_ok() { FIN_OK } else { FIN_FAILED };
        self.send_ctrl(peer, AM_FIN, &wire::fin_encode(sreq, status))?;
        r.map_err(Error::from)
    }

    /// Pushes pipelined chunks into the rings until they are full.
    #[cold]
    fn pump_streams(&self) {
        let mut dones = Vec::new();
        self.pump_streams_into(&mut dones);
        // Every put of these payloads is handed to the transport: DONE follows them.
        for (peer, rreq) in dones {
            if let Err(e) = self.send_ctrl(peer, AM_DONE, &rreq.to_le_bytes()) {
                protocol_error(e);
            }
        }
    }

    fn pump_streams_into(&self, dones: &mut Vec<(usize, u32)>) {
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        let mut i = 0;
        // Once a peer's ring is full, its later streams need not try.
        let mut full_peer = usize::MAX;
        while i < st.streams.len() {
            let s = &mut st.streams[i];
            if s.peer == full_peer {
                i += 1;
                continue;
            }
            let mut finished = false;
            loop {
                let net = matches!(self.links.routes.get(s.peer), Some(Route::Net(_)));
                let chunk = if net { self.net_chunk } else { self.chunk };
                let n = (s.len - s.off).min(chunk);
                let hdr = wire::data_encode(s.rreq, s.off as u64);
                let token = loan_token(s.sreq, st.reqs[s.sreq as usize].gen);
                let sent = if let (Some(rkey), Some(Route::Net(i)), Some(nt)) =
                    (&s.rkey, self.links.routes.get(s.peer), &self.links.net)
                {
                    // SAFETY: as below; the put reads the buffer until its SendDone.
                    unsafe { nt.put_zc(*i as usize, s.buf.add(s.off), n, rkey, s.off, token) }
                } else if net {
                    // SAFETY: the send request owning `buf` is still active (it
                    // completes only after its last loan ends), so the buffer is
                    // borrowed, valid for `len` bytes and unchanged.
                    unsafe { self.am_send_zc(s.peer, AM_DATA, &hdr, s.buf.add(s.off), n, token) }
                } else {
                    // SAFETY: as above; this send copies before returning.
                    let bytes = unsafe { std::slice::from_raw_parts(s.buf.add(s.off), n) };
                    self.am_send(s.peer, AM_DATA, &hdr, bytes)
                        .map(|()| Sent::Done)
                };
                match sent {
                    Ok(how) => {
                        if how == Sent::Pending {
                            st.reqs[s.sreq as usize].lent += 1;
                        }
                        s.off += n;
                        if s.off == s.len {
                            finished = true;
                            break;
                        }
                    }
                    Err(dos_transport::Error::Busy { .. }) => {
                        full_peer = s.peer;
                        break;
                    }
                    Err(e) => {
                        let id = s.sreq;
                        st.reqs[id as usize].after = Some(Err(e.into()));
                        finished = true;
                        s.off = s.len;
                        break;
                    }
                }
            }
            if finished {
                let s = st.streams.remove(i).expect("index in range");
                if s.rkey.is_some() {
                    // Also after a failed put: the receiver must not wait forever.
                    dones.push((s.peer, s.rreq));
                }
                let req = &mut st.reqs[s.sreq as usize];
                if req.after.is_none() {
                    req.after = Some(Ok(Status::default()));
                }
                if req.lent == 0 {
                    req.slot = Slot::Done(req.after.take().expect("set above"));
                }
            } else {
                i += 1;
            }
        }
    }

    /// A new request that completes after `replies` replies arrived (each
    /// reported with [`Engine::reply_arrived`]).
    pub(crate) fn await_replies(&self, replies: u32) -> (ReqId, u32) {
        let mut st = self.st.borrow_mut();
        let id = Self::alloc_req(&mut st);
        let req = &mut st.reqs[id as usize];
        req.replies = replies;
        req.after = Some(Ok(Status::default()));
        if replies == 0 {
            req.slot = Slot::Done(Ok(Status::default()));
            req.after = None;
        }
        (id, req.gen)
    }

    /// One reply for request `id` of generation `gen` arrived (`Err` if it
    /// reports a failure, which the request then returns).
    pub(crate) fn reply_arrived(&self, id: ReqId, gen: u32, r: Result<()>) {
        let mut st = self.st.borrow_mut();
        let Some(req) = st.reqs.get_mut(id as usize) else {
            return;
        };
        if req.gen != gen || req.replies == 0 {
            return;
        }
        req.replies -= 1;
        if let Err(e) = r {
            if matches!(req.after, Some(Ok(_))) {
                req.after = Some(Err(e));
            }
        }
        if req.replies == 0 && req.lent == 0 {
            if let Some(r) = req.after.take() {
                req.slot = Slot::Done(r);
            }
        }
    }

    /// A transport stopped reading a lent body of request `token`.
    fn on_send_done(&self, token: u64) {
        if token & crate::rma::target::PUT_TOKEN != 0 {
            return self.rma.borrow_mut().put_done(token);
        }
        let (id, gen) = ((token & 0xffff_ffff) as ReqId, (token >> 32) as u32);
        let mut st = self.st.borrow_mut();
        let Some(req) = st.reqs.get_mut(id as usize) else {
            return;
        };
        if req.gen & LOAN_GEN_MASK != gen || req.lent == 0 {
            return;
        }
        req.lent -= 1;
        if req.lent == 0 {
            if let Some(r) = req.after.take() {
                req.slot = Slot::Done(r);
            }
        }
    }

    /// Handles one incoming event.
    /// Handles one event of a transport whose indices map to world ranks by `world`.
    fn on_event(&self, ev: Event<'_>, world: &[u32]) {
        let rank = |i: usize| world.get(i).map_or(usize::MAX, |&r| r as usize);
        let (src, id, data) = match ev {
            Event::Am { src, id, data } => (rank(src), id, data),
            Event::Placed { src, .. } => return self.on_placed(rank(src)),
            Event::Disconnected { peer } => return self.on_disconnect(rank(peer)),
            Event::SendDone { token, .. } => return self.on_send_done(token),
        };
        let r = match id {
            AM_EAGER => self.on_eager(src, data),
            AM_RTS => self.on_rts(src, data),
            AM_FIN => self.on_fin(src, data),
            AM_CTS => self.on_cts(src, data),
            AM_DATA => self.on_data(src, data),
            AM_PUTCTS => self.on_putcts(src, data),
            AM_DONE => self.on_done(src, data),
            crate::rma::wire::FIRST_ID..=crate::rma::wire::LAST_ID => {
                crate::rma::target::on_am(self, src, id, data)
            }
            crate::rpc::wire::FIRST_ID..=crate::rpc::wire::LAST_ID => {
                crate::rpc::on_am(self, src, id, data)
            }
            AM_BYE => {
                self.st.borrow_mut().departed.push(src);
                Ok(())
            }
            _ => Err(Error::Protocol {
                src,
                reason: "unknown active message id",
            }),
        };
        if let Err(e) = r {
            protocol_error(e);
        }
    }

    #[inline]
    fn on_eager(&self, peer: usize, data: &[u8]) -> Result<()> {
        let (env, payload) = Envelope::decode(data).ok_or(Error::Protocol {
            src: peer,
            reason: "short eager header",
        })?;
        let mut st = self.st.borrow_mut();
        if let Some(p) = st.take_posted(&env, 0) {
            let n = payload.len().min(p.cap);
            // SAFETY: the posted buffer is valid for `cap` bytes (irecv's contract).
            unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), p.buf, n) };
            let status = Status {
                source: env.src as usize,
                tag: env.tag,
                len: payload.len(),
            };
            Self::complete(&mut st, p.req, truncation(status, p.cap));
        } else {
            let mut v = st.spare.pop().unwrap_or_default();
            v.clear();
            v.extend_from_slice(payload);
            st.unexpected.push_back(Unexpected {
                env,
                peer,
                body: Body::Eager(v),
            });
        }
        Ok(())
    }

    fn on_rts(&self, peer: usize, data: &[u8]) -> Result<()> {
        let rts = Rts::decode(data, peer)?;
        let mut st = self.st.borrow_mut();
        match st.take_posted(&rts.env, 0) {
            Some(p) => {
                drop(st);
                let status = Status {
                    source: rts.env.src as usize,
                    tag: rts.env.tag,
                    len: rts.len as usize,
                };
                self.rdv_start(peer, status, rts.sreq, &rts.rkey, p.buf, p.cap, p.req);
            }
            None => st.unexpected.push_back(Unexpected {
                env: rts.env,
                peer,
                body: Body::Rts {
                    len: rts.len,
                    sreq: rts.sreq,
                    rkey: rts.rkey,
                },
            }),
        }
        Ok(())
    }

    fn on_fin(&self, peer: usize, data: &[u8]) -> Result<()> {
        let (sreq, status) = wire::fin_decode(data, peer)?;
        let mut st = self.st.borrow_mut();
        match st.reqs.get(sreq as usize) {
            Some(Req {
                slot: Slot::Sending { .. },
                ..
            }) => {
                let r = if status == FIN_OK {
                    Ok(Status::default())
                } else {
                    Err(Error::PeerFailed { rank: peer })
                };
                Self::complete(&mut st, sreq, r);
                Ok(())
            }
            _ => Err(Error::Protocol {
                src: peer,
                reason: "FIN for no active send",
            }),
        }
    }

    /// Records a broken peer; every wait from now on fails naming it.
    #[cold]
    /// The payload of a claimed eager message from `src` has landed.
    fn on_placed(&self, src: usize) {
        let mut st = self.st.borrow_mut();
        if let Some(i) = st.placing.iter().position(|(s, _)| *s == src) {
            let (_, p) = st.placing.remove(i);
            Self::complete(&mut st, p.req, Ok(p.status));
        }
    }

    fn on_disconnect(&self, peer: usize) {
        {
            let mut st = self.st.borrow_mut();
            // A message being placed will not be finished: stop its writes.
            st.placing.retain(|(s, _)| *s != peer);
            if st.departed.contains(&peer) {
                return;
            }
            if st.failed.is_none() {
                st.failed = Some(peer);
            }
        }
        crate::rpc::peer_failed(self, peer);
    }

    fn on_cts(&self, peer: usize, data: &[u8]) -> Result<()> {
        let (sreq, rreq) = wire::cts_decode(data, peer)?;
        let mut st = self.st.borrow_mut();
        match st.reqs.get(sreq as usize) {
            Some(Req {
                slot: Slot::Sending { buf, len },
                ..
            }) => {
                let (buf, len) = (*buf, *len);
                st.reqs[sreq as usize].slot = Slot::Active;
                st.streams.push_back(Stream {
                    peer,
                    sreq,
                    rreq,
                    buf,
                    len,
                    off: 0,
                    rkey: None,
                });
                Ok(())
            }
            _ => Err(Error::Protocol {
                src: peer,
                reason: "CTS for no rendezvous send",
            }),
        }
    }

    fn on_putcts(&self, peer: usize, data: &[u8]) -> Result<()> {
        let (sreq, rreq, rkey) = wire::putcts_decode(data, peer)?;
        let mut st = self.st.borrow_mut();
        match st.reqs.get(sreq as usize) {
            Some(Req {
                slot: Slot::Sending { buf, len },
                ..
            }) if self.put_capable(peer) => {
                let (buf, len) = (*buf, *len);
                st.reqs[sreq as usize].slot = Slot::Active;
                st.streams.push_back(Stream {
                    peer,
                    sreq,
                    rreq,
                    buf,
                    len,
                    off: 0,
                    rkey: Some(rkey),
                });
                Ok(())
            }
            _ => Err(Error::Protocol {
                src: peer,
                reason: "PUTCTS for no rendezvous send",
            }),
        }
    }

    fn on_done(&self, peer: usize, data: &[u8]) -> Result<()> {
        let rreq = wire::done_decode(data, peer)?;
        let (cap, status) = match self.st.borrow().reqs.get(rreq as usize) {
            Some(Req {
                slot: Slot::Placing { cap, status, .. },
                ..
            }) => (*cap, *status),
            _ => {
                return Err(Error::Protocol {
                    src: peer,
                    reason: "DONE for no rendezvous receive",
                })
            }
        };
        self.release_region(rreq);
        Self::complete(&mut self.st.borrow_mut(), rreq, truncation(status, cap));
        Ok(())
    }

    #[inline]
    fn on_data(&self, peer: usize, data: &[u8]) -> Result<()> {
        let (rreq, off, bytes) = wire::data_decode(data, peer)?;
        let mut st = self.st.borrow_mut();
        let Some(Req {
            slot:
                Slot::Receiving {
                    buf,
                    cap,
                    got,
                    status,
                },
            ..
        }) = st.reqs.get_mut(rreq as usize)
        else {
            return Err(Error::Protocol {
                src: peer,
                reason: "DATA for no rendezvous receive",
            });
        };
        let off = off as usize;
        if off.saturating_add(bytes.len()) > status.len {
            return Err(Error::Protocol {
                src: peer,
                reason: "DATA beyond the announced length",
            });
        }
        // Copy what fits; a message longer than the buffer completes as truncated.
        let n = bytes.len().min(cap.saturating_sub(off));
        if n > 0 {
            // SAFETY: `off + n <= cap` with `n > 0`, so `off < cap` and the
            // pointer stays inside the receive's buffer, which is valid for
            // `cap` bytes while the request is active (irecv's contract). A
            // piece wholly past a truncated buffer forms no pointer at all.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.add(off), n) };
        }
        *got += bytes.len();
        if *got >= status.len {
            let r = truncation(*status, *cap);
            st.reqs[rreq as usize].slot = Slot::Done(r);
        }
        Ok(())
    }

    // ----- probing -----

    /// Looks for a matching unexpected message without receiving it.
    pub(crate) fn iprobe(&self, ctx: u32, src: Source, tag: TagSel) -> Option<Status> {
        self.progress();
        let (src, tag) = (sel_src(src), sel_tag(tag));
        self.st
            .borrow()
            .unexpected
            .iter()
            .find(|u| matches(ctx, src, tag, &u.env))
            .map(|u| Status {
                source: u.env.src as usize,
                tag: u.env.tag,
                len: u.len(),
            })
    }

    // ----- progress and waiting -----

    /// Delivers whatever has arrived; returns how many events.
    #[inline]
    pub(crate) fn progress(&self) -> usize {
        // RPC messages gathered for other nodes leave before anything waits.
        if self.rpc.borrow().has_batches() {
            crate::rpc::flush_all(self);
        }
        let l = &self.links;
        let mut n = l.local.progress(|ev| self.on_event(ev, &l.local_world));
        if let Some(net) = &l.net {
            let placer = EagerPlacer {
                eng: self,
                world: &l.net_world,
            };
            n += net.progress_placing(|ev| self.on_event(ev, &l.net_world), &placer);
        }
        let (pending, streams) = {
            let st = self.st.borrow();
            (st.npending > 0, !st.streams.is_empty())
        };
        if pending {
            self.flush_pending();
        }
        if streams {
            self.pump_streams();
        }
        // RPC handlers run here, outside the transports' callbacks.
        if self.rpc.borrow().has_requests() {
            n += crate::rpc::serve(self);
        }
        // So do the steps of nonblocking collectives.
        if self.nbc.borrow().busy() {
            n += crate::coll::nonblocking::progress(self);
        }
        n
    }

    /// Makes progress until `done()` holds: spin, then yield, then block.
    ///
    /// The clock is read only every [`POLLS_PER_CLOCK`] idle polls while
    /// spinning, so a message that arrives quickly costs no clock read at all.
    #[inline]
    pub(crate) fn wait_until(&self, mut done: impl FnMut(&Self) -> bool) -> Result<()> {
        let mut idle = 0u32;
        let mut since: Option<Instant> = None;
        loop {
            if done(self) {
                return Ok(());
            }
            if self.progress() > 0 {
                idle = 0;
                since = None;
                continue;
            }
            idle = idle.wrapping_add(1);
            if idle % POLLS_PER_CLOCK != 0 && !self.spin.is_zero() {
                std::hint::spin_loop();
                continue;
            }
            let waited = match since {
                Some(t0) => t0.elapsed(),
                None => {
                    since = Some(Instant::now());
                    Duration::ZERO
                }
            };
            if waited < self.spin {
                std::hint::spin_loop();
            } else if waited < self.spin + self.yield_for {
                std::thread::yield_now();
            } else {
                self.block(&mut || done(self))?;
            }
        }
    }

    /// Sleeps until a transport has something, or `ready()` holds once this
    /// rank announced that it sleeps (for conditions that other ranks change
    /// directly in shared memory, then wake us).
    #[cold]
    fn block(&self, ready: &mut dyn FnMut() -> bool) -> Result<()> {
        if let Some(rank) = self.st.borrow().failed {
            // A job whose peer died cannot make progress: say so instead of hanging.
            return Err(Error::PeerFailed { rank });
        }
        // Nobody rings our bell when a full ring drains: poll briskly then.
        let busy = {
            let st = self.st.borrow();
            st.npending > 0 || !st.streams.is_empty()
        };
        let timeout = if busy {
            Duration::from_micros(200)
        } else {
            Duration::from_millis(100)
        };
        match &self.links.net {
            None => self.links.local.wait_or(timeout, ready)?,
            // Both transports: sleep in the network's wait; a local peer that
            // rings our doorbell wakes it through the bridge thread.
            Some(net) => self
                .links
                .local
                .wait_with(net, self.bridge.as_ref(), timeout, ready)?,
        }
        Ok(())
    }

    /// Hands every queued send to the transport.
    pub(crate) fn drain_sends(&self) -> Result<()> {
        self.wait_until(|e| e.st.borrow().npending == 0)
    }

    /// Leaves the job: tells every peer reached over the network that this
    /// rank is done (so its connection closing is not taken for a failure),
    /// then hands every queued send to the transport.
    pub(crate) fn finalize(&self) -> Result<()> {
        crate::rpc::stop_service(self);
        crate::rpc::flush_all(self);
        for (peer, route) in self.links.routes.iter().enumerate() {
            if let Route::Net(_) = route {
                match self.send_ctrl(peer, AM_BYE, &[]) {
                    // A peer that finalized first has closed its connection.
                    Ok(())
                    | Err(Error::Transport(dos_transport::Error::PeerUnreachable { .. })) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.drain_sends()
    }

    /// Waits for request `id` and returns its result, freeing it.
    pub(crate) fn wait(&self, id: ReqId) -> Result<Status> {
        match self.wait_until(|e| e.is_done(id)) {
            Ok(()) => self.take(id),
            Err(e) => {
                self.abandon(id);
                Err(e)
            }
        }
    }

    /// Gives up request `id` after waiting for it failed (a peer died):
    /// detaches it from its buffer, so that nothing touches the buffer once
    /// this returns, and frees its slot.
    ///
    /// Posted receives, queued sends and streams that still point into the
    /// buffer are dropped (a message for it that arrives later is discarded);
    /// bodies lent to a transport are waited for, which ends when their
    /// connection sends them or fails. (With CMA, a live peer may still be
    /// reading the sender's buffer: only a job that is being torn down gets
    /// here.)
    #[cold]
    pub(crate) fn abandon(&self, id: ReqId) {
        if self.nbc.borrow().busy() {
            crate::coll::nonblocking::forget(self, id);
        }
        let placing = match self.st.borrow().reqs.get(id as usize) {
            None
            | Some(Req {
                slot: Slot::Free, ..
            }) => return,
            Some(req) => matches!(req.slot, Slot::Placing { .. }),
        };
        if placing {
            self.release_region(id);
        }
        {
            let mut st = self.st.borrow_mut();
            let st = &mut *st;
            st.posted.retain(|p| p.req != id);
            st.placing.retain(|(_, p)| p.req != id);
            st.streams.retain(|s| s.sreq != id);
            for q in &mut st.pending {
                let before = q.len();
                q.retain(|p| p.complete != Some(id));
                st.npending -= before - q.len();
            }
        }
        // Replies not yet in will find no one to write to.
        self.rma.borrow_mut().forget_request(id);
        // Loans end when their connection sends or drops them; meanwhile keep
        // the transports going (never blocking on the failed peer's state).
        while self.st.borrow().reqs[id as usize].lent > 0 {
            if self.progress() == 0 {
                let _ = self.links.local.wait(Duration::from_micros(100));
                if let Some(net) = &self.links.net {
                    let _ = net.wait(Duration::from_micros(100));
                }
            }
        }
        let mut st = self.st.borrow_mut();
        let req = &mut st.reqs[id as usize];
        req.slot = Slot::Free;
        req.after = None;
        req.replies = 0;
        req.gen = req.gen.wrapping_add(1);
        st.free.push(id);
    }
}

/// The generation bits a loan token carries: the top bit of a token marks
/// one-sided puts ([`crate::rma::target::PUT_TOKEN`]).
const LOAN_GEN_MASK: u32 = 0x7fff_ffff;

/// The token of a loan of request `id` in generation `gen` (`Event::SendDone`).
#[inline]
fn loan_token(id: ReqId, gen: u32) -> u64 {
    (u64::from(gen & LOAN_GEN_MASK) << 32) | u64::from(id)
}

#[inline]
fn truncation(status: Status, cap: usize) -> Result<Status> {
    if status.len > cap {
        Err(Error::Truncated {
            len: status.len,
            capacity: cap,
        })
    } else {
        Ok(status)
    }
}

#[cold]
fn protocol_error(e: Error) {
    // Classified here, once: a malformed message from a peer is dropped.
    tracing::warn!("dropped a message: {e}");
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The RPC service thread may hold the engine: take it back first.
        if self.gated.get() {
            if self.depth.get() == 0 {
                self.gate.main_enter();
            }
            crate::rpc::stop_service(self);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;
    use crate::testing::run_threads;

    #[test]
    fn an_abandoned_receive_leaves_its_buffer_alone() {
        // Rank 0 gives up a posted receive (as after a peer failure); the
        // message that then arrives must not land in the old buffer but wait
        // for the next receive.
        let posted = Barrier::new(2);
        run_threads(2, |w| {
            if w.rank() == 0 {
                let mut old = [0u8; 4];
                {
                    let eng = w.comm().eng.enter();
                    // SAFETY: `old` outlives the request, which is abandoned below.
                    let id = unsafe {
                        eng.irecv(0, Source::Rank(1), TagSel::Tag(5), old.as_mut_ptr(), 4)
                    }
                    .unwrap();
                    eng.abandon(id);
                }
                posted.wait();
                let mut new = [0u8; 4];
                w.recv(&mut new, 1, 5).unwrap();
                assert_eq!((old, new), ([0; 4], [1, 2, 3, 4]));
            } else {
                posted.wait();
                w.send(&[1u8, 2, 3, 4], 0, 5).unwrap();
            }
        });
    }
}
