//! The engine: the per-process hub that every communicator, window and
//! service drives. It owns the transports and the route to every peer
//! ([`routes`]), the request slots ([`slots`]), the queue of sends that found
//! a transport busy ([`pending`]), progress, waiting and blocking ([`wait`]),
//! the dispatch of every incoming event and active message ([`dispatch`],
//! with the table of active-message ids in [`am`]), and who may enter it
//! ([`entry`]: the gate, and the service thread that drives the engine while
//! the main thread computes).
//!
//! One engine per process, shared by every communicator through an `Rc`; it is
//! driven by the thread that owns the world (MPI's "funneled" model), or by
//! the service thread while the main thread is away (see [`entry`]).
//!
//! The point-to-point protocol (matching, eager, rendezvous) lives beside the
//! engine in [`crate::p2p`]: it is the engine's own protocol, whose active
//! messages the dispatch matches directly (the hot path takes no indirection).
//! Every other service (one-sided, RPC, nonblocking collectives, and later
//! I/O and checkpointing) registers with the engine through [`am::Service`]:
//! its active-message ids, its handler, and hooks into progress, failure and
//! shutdown. The engine names no service (see ARCHITECTURE.md, "Module rules").

pub(crate) mod am;
pub(crate) mod crowd;
pub(crate) mod dispatch;
pub(crate) mod entry;
pub(crate) mod pending;
pub(crate) mod routes;
pub(crate) mod slots;
pub(crate) mod wait;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use dos_transport::Iface;

use crate::config::Config;
use crate::p2p::eager::Placed;
use crate::p2p::matching::{Posted, Unexpected};
use crate::p2p::rendezvous::Stream;
use crate::p2p::wire::{DATA_HDR, ENVELOPE_LEN};
use pending::Pending;
pub(crate) use routes::{Links, Route};
pub(crate) use slots::{Req, ReqId, Slot};

/// The engine's mutable state, behind one `RefCell`: request slots, the
/// pending queue, and the queues of the point-to-point protocol beside it.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) posted: VecDeque<Posted>,
    pub(crate) unexpected: VecDeque<Unexpected>,
    pub(crate) reqs: Vec<Req>,
    pub(crate) free: Vec<ReqId>,
    /// Per peer, in order; empty deques do not allocate.
    pub(crate) pending: Vec<VecDeque<Pending>>,
    pub(crate) npending: usize,
    /// Pipelined payloads being sent.
    pub(crate) streams: VecDeque<Stream>,
    /// Buffers of delivered unexpected messages, kept for reuse so that early
    /// arrivals cost no allocation once warmed up.
    pub(crate) spare: Vec<Vec<u8>>,
    /// The first peer whose connection broke, if any.
    pub(crate) failed: Option<usize>,
    /// Peers that said goodbye (finalized): their connections may close.
    pub(crate) departed: Vec<usize>,
    /// Next communicator context id this process may hand out.
    pub(crate) next_ctx: u32,
    /// Next window id this process may hand out.
    pub(crate) next_win: u32,
    /// Eager messages from other nodes being read straight into their posted
    /// receive buffers (see [`crate::p2p::eager::EagerPlacer`]), by sender (world rank).
    pub(crate) placing: Vec<(usize, Placed)>,
    /// Keys of watched requests that completed (see [`Engine::watch`]): the
    /// schedules of nonblocking collectives that may advance.
    pub(crate) woken: Vec<u32>,
}

/// The per-process engine; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct Engine {
    /// Who drives the engine (see [`entry`]); shared with the service thread.
    pub(crate) gate: std::sync::Arc<crate::engine::entry::Gate>,
    /// How deep the main thread is inside the engine (main thread only).
    pub(crate) depth: Cell<u32>,
    /// Whether entering takes the gate (once the service thread runs).
    pub(crate) gated: Cell<bool>,
    /// With both shm and a network transport: turns the shm doorbell into a
    /// wake-up of the network's wait, so that this rank sleeps in one place
    /// and hears both.
    pub(crate) bridge: Option<dos_transport::shm::DoorbellBridge>,
    /// The services registered with the engine: their active-message
    /// handlers, hooks and state (see [`am`]).
    pub(crate) services: am::Registry,
    /// The service thread, once started (see [`entry`]).
    pub(crate) service_thread: RefCell<Option<std::thread::JoinHandle<()>>>,
    pub(crate) links: Links,
    pub(crate) st: RefCell<State>,
    pub(crate) cfg: Config,
    pub(crate) eager_limit: usize,
    /// Eager limit towards peers on other nodes.
    pub(crate) net_eager_limit: usize,
    /// How crowded the node's CPUs are: how long waiters spin and yield,
    /// and which rendezvous protocol large messages take (see [`crowd`]).
    pub(crate) crowding: crowd::Crowding,
    /// Bytes per pipelined chunk through shared memory.
    pub(crate) chunk: usize,
    /// Bytes per pipelined chunk over the network.
    pub(crate) net_chunk: usize,
}

/// The engine as the main thread's objects (communicators, requests,
/// windows) hold it: reachable only through [`Shared::enter`], so that every
/// access happens inside the gate (see [`crate::engine::entry`]).
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

/// Number of CPUs online on this node. (Not this process's affinity mask: a
/// rank bound to one core is not oversubscribed because its mask has one CPU.)
pub(crate) fn node_cpus() -> usize {
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
        // Waiting and the rendezvous protocol follow one signal: how crowded
        // the node's CPUs are (by this job's ranks, or by other work).
        let crowding = crowd::Crowding::new(
            local_ranks,
            node_cpus(),
            crowd::Settings {
                spin_us: cfg.spin_us,
                yield_us: cfg.yield_us,
                rndv: cfg.rndv,
                cma_max: cfg.rndv_cma_max,
            },
        );
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
            services: am::Registry::new(crate::services::ALL),
            service_thread: RefCell::new(None),
            crowding,
            chunk,
            net_chunk,
            eager_limit: cfg.eager_limit.min(max_eager),
            net_eager_limit: cfg.net_eager_limit.min(max_net_eager),
            links,
            st: RefCell::new(st),
            cfg,
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
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The service thread may hold the engine: take it back first.
        if self.gated.get() {
            if self.depth.get() == 0 {
                self.gate.main_enter();
            }
            self.stop_service_thread();
        }
    }
}
