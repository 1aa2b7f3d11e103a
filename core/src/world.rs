//! Start-up and shut-down: [`init`] and [`World`].

use std::cell::RefCell;
use std::os::fd::{FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use dos_transport::loopback::Loopback;
use dos_transport::roce::iface::{PreparedRoce, RoceIface};
use dos_transport::shm::{Segment, ShmIface};
use dos_transport::tcp::TcpIface;

/// A network transport between `prepare` and `connect`.
enum Prepared {
    Tcp(dos_transport::tcp::Prepared),
    Roce(PreparedRoce),
    #[cfg(feature = "verbs")]
    Verbs(dos_transport::verbs::Prepared),
}

/// An RDMA device's endpoint, when this build has the verbs backend, the
/// host has a device and the transports allow it (`None` otherwise: the
/// caller falls back to tcp or roce).
#[cfg(feature = "verbs")]
fn prepare_verbs(rank: usize, size: usize, allow: bool) -> Option<Prepared> {
    if !allow || dos_transport::verbs::devices().is_empty() {
        return None;
    }
    match dos_transport::verbs::VerbsBuilder::open(None).and_then(|b| b.prepare(rank, size)) {
        Ok(p) => Some(Prepared::Verbs(p)),
        Err(e) => {
            tracing::warn!("rank {rank}: RDMA device present but unusable ({e}); using tcp/roce");
            None
        }
    }
}

#[cfg(not(feature = "verbs"))]
fn prepare_verbs(_rank: usize, _size: usize, _allow: bool) -> Option<Prepared> {
    None
}
use dos_transport::Transport;

use crate::comm::Comm;
use crate::config::Config;
use crate::p2p::{Engine, Links, Route, Shared};
use crate::pmi::Client;
use crate::{Error, Result};

/// The job as seen from one rank: the world communicator plus the launcher connection.
///
/// Dereferences to its [`Comm`], so `world.rank()`, `world.send(..)`,
/// `world.allreduce(..)` work directly. Dropping it finalizes (see
/// [`World::finalize`] to see the error).
pub struct World {
    comm: Comm,
    pmi: Option<RefCell<Client>>,
    local_rank: usize,
    local_size: usize,
    finalized: bool,
    /// The tunables in force (a copy of the engine's).
    cfg: Config,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("rank", &self.comm.rank())
            .field("size", &self.comm.size())
            .field("launched", &self.pmi.is_some())
            .finish()
    }
}

impl std::ops::Deref for World {
    type Target = Comm;
    fn deref(&self) -> &Comm {
        &self.comm
    }
}

/// Joins the job (`MPI_Init`).
///
/// Under `dosrun`, connects to its wire-up service, attaches to the node's
/// shared segment and returns this rank's world. Started any other way, the
/// program is a world of one.
///
/// # Errors
/// Under `dosrun`, a process joins the job once: a second call, from any
/// thread and also after the first world was dropped, is
/// [`Error::AlreadyJoined`] (see the crate docs, "Thread safety"). Without
/// `dosrun` every call gives a new, independent world of one.
///
/// ```
/// let world = dos::init().unwrap();
/// assert!(world.rank() < world.size());
/// ```
pub fn init() -> Result<World> {
    let cfg = Config::from_env()?;
    crate::log::install(cfg.log, None);
    // A launched process joins the job once: a second `init` (from another
    // thread, or after the first world ended) would take the same rank, the
    // same wire-up connection and the same shared-segment descriptor.
    let mut joined = JOINED.lock().unwrap_or_else(|p| p.into_inner());
    if *joined {
        return Err(Error::AlreadyJoined);
    }
    let Some(mut pmi) = Client::from_env()? else {
        drop(joined);
        let links = Links::single_node(Transport::Loopback(Loopback::new()));
        let eng = Shared::new(Engine::new(links, cfg, 1));
        return Ok(World::from_parts(eng, 0, vec![0].into(), None, 0, 1));
    };
    *joined = true;
    drop(joined);
    let (rank, size) = (pmi.rank(), pmi.size());
    let (local_rank, local_size) = (pmi.local_rank(), pmi.local_size());
    let fd = pmi.shm_fd().ok_or(Error::Environment {
        var: "DOS_SHM_FD",
        reason: "missing: dosrun passes the node's shared segment",
    })?;
    // SAFETY: the launcher handed this descriptor to us for our exclusive use;
    // nothing else in the process owns it.
    let seg = Segment::attach(unsafe { OwnedFd::from_raw_fd(fd) })?;
    if seg.layout().nranks != local_size {
        return Err(Error::Environment {
            var: "DOS_SHM_FD",
            reason: "segment was made for another number of ranks",
        });
    }
    let allow = cfg.transports;
    let links = if pmi.nnodes() > 1 || !allow.shm {
        // Within a node, shared memory if allowed; a rank alone otherwise.
        let local = if allow.shm {
            Transport::Shm(ShmIface::new(Arc::new(seg), local_rank)?)
        } else {
            drop(seg);
            Transport::Loopback(Loopback::new())
        };
        if !allow.network() {
            return Err(Error::Environment {
                var: "DOS_TRANSPORTS",
                reason: "no allowed transport reaches the ranks of other nodes (allow tcp or roce)",
            });
        }
        connect_nodes(&mut pmi, local, &cfg)?
    } else {
        let shm = Transport::Shm(ShmIface::new(Arc::new(seg), local_rank)?);
        if local_size != size {
            return Err(Error::Environment {
                var: "DOS_NNODES",
                reason: "one node, but fewer local ranks than ranks",
            });
        }
        pmi.fence()?;
        Links::single_node(shm)
    };
    let eng = Shared::new(Engine::new(links, cfg, local_size));
    let peers: Rc<[u32]> = (0..size as u32).collect();
    Ok(World::from_parts(
        eng,
        rank,
        peers,
        Some(RefCell::new(pmi)),
        local_rank,
        local_size,
    ))
}

/// Whether this process has joined a launched job (see [`init`]).
static JOINED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);

/// How long the TCP mesh of a multi-node job may take to come up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Brings up TCP to the ranks of other nodes: every rank publishes its
/// listening address and its (node, local rank), then connects to the ranks
/// of other nodes; ranks of this node stay on shared memory (`local`), unless
/// `local_shm` is false: then `local` reaches only this rank, and every other
/// rank, on this node too, is reached over TCP.
fn connect_nodes(pmi: &mut Client, local: Transport, cfg: &Config) -> Result<Links> {
    let allow = cfg.transports;
    let local_shm = allow.shm;
    let (rank, size, node) = (pmi.rank(), pmi.size(), pmi.node_id());
    let secret = pmi.job_secret().ok_or(Error::Environment {
        var: "DOS_JOB_SECRET",
        reason: "missing: a multi-node job needs the job secret",
    })?;
    let ip = match pmi.node_addr() {
        Some(ip) => ip,
        // One node without shared memory: its ranks meet on the loopback.
        None if pmi.nnodes() == 1 => std::net::Ipv4Addr::LOCALHOST.into(),
        None => {
            return Err(Error::Environment {
                var: "DOS_NODE_ADDR",
                reason: "missing: a multi-node job needs this node's address",
            })
        }
    };
    // Verbs when a device is there; otherwise TCP when allowed (measured
    // faster here than the soft-RoCE), else the soft-RoCE. Every rank must
    // choose alike: the choice depends on the build and the devices, the same
    // on every node of a job made of one kind of machine.
    let prepared = match prepare_verbs(rank, size, allow.verbs) {
        Some(p) => p,
        None if allow.tcp => Prepared::Tcp(TcpIface::prepare(rank, size, ip, secret)?),
        None if allow.roce => Prepared::Roce(
            RoceIface::prepare(rank, size, ip, secret)?
                .with_max_mtu(cfg.roce_mtu)?
                .with_segmentation(cfg.roce_gso)
                .with_retry_budget(std::time::Duration::from_millis(cfg.roce_retry_budget_ms))?
                .with_packet_auth(cfg.roce_auth),
        ),
        None => {
            return Err(Error::Environment {
                var: "DOS_TRANSPORTS",
                reason: "only verbs is allowed, but this build or host has no RDMA device",
            })
        }
    };
    let mut place = [0u8; 8];
    place[..4].copy_from_slice(&(node as u32).to_le_bytes());
    place[4..].copy_from_slice(&(pmi.local_rank() as u32).to_le_bytes());
    let my_addr = match &prepared {
        Prepared::Tcp(p) => p.address(),
        Prepared::Roce(p) => p.address(),
        #[cfg(feature = "verbs")]
        Prepared::Verbs(p) => p.address(),
    };
    pmi.put(&format!("tcp.{rank}"), &my_addr)?;
    pmi.put(&format!("node.{rank}"), &place)?;
    pmi.fence()?;
    let mut routes = Vec::with_capacity(size);
    let mut addrs = Vec::with_capacity(size);
    let mut local_world = vec![u32::MAX; if local_shm { pmi.local_size() } else { 1 }];
    for r in 0..size {
        let v = pmi.get(&format!("node.{r}"))?;
        let (their_node, their_local) = match v.as_slice() {
            [a, b, c, d, e, f, g, h] => (
                u32::from_le_bytes([*a, *b, *c, *d]) as usize,
                u32::from_le_bytes([*e, *f, *g, *h]),
            ),
            _ => {
                return Err(Error::WireupProtocol {
                    reason: "node placement of a rank is not 8 bytes",
                })
            }
        };
        if r == rank && !local_shm {
            local_world[0] = r as u32;
            routes.push(Route::Local(0));
            addrs.push(None);
        } else if their_node == node && local_shm {
            let slot = local_world
                .get_mut(their_local as usize)
                .ok_or(Error::WireupProtocol {
                    reason: "local rank out of range",
                })?;
            *slot = r as u32;
            routes.push(Route::Local(their_local));
            addrs.push(None);
        } else {
            routes.push(Route::Net(r as u32));
            addrs.push(Some(pmi.get(&format!("tcp.{r}"))?));
        }
    }
    if local_world.contains(&u32::MAX) {
        return Err(Error::WireupProtocol {
            reason: "a local rank of this node is missing",
        });
    }
    let net = match prepared {
        Prepared::Tcp(p) => Transport::Tcp(p.connect(&addrs, CONNECT_TIMEOUT)?),
        Prepared::Roce(p) => Transport::Roce(p.connect(&addrs)?),
        #[cfg(feature = "verbs")]
        Prepared::Verbs(p) => {
            let v = Transport::Verbs(p.connect(&addrs)?);
            // Queue pairs are ready only once every rank connected: no send
            // before all have (the device retries unready peers only briefly).
            pmi.fence()?;
            v
        }
    };
    Ok(Links {
        local,
        net: Some(net),
        routes: routes.into(),
        local_world: local_world.into(),
        net_world: (0..size as u32).collect(),
    })
}

impl World {
    pub(crate) fn from_parts(
        eng: Shared,
        rank: usize,
        peers: Rc<[u32]>,
        pmi: Option<RefCell<Client>>,
        local_rank: usize,
        local_size: usize,
    ) -> World {
        let cfg = *eng.enter().config();
        crate::log::install(cfg.log, pmi.as_ref().map(|_| rank));
        World {
            cfg,
            comm: Comm::new(eng, 0, rank, peers),
            pmi,
            local_rank,
            local_size,
            finalized: false,
        }
    }

    /// The world communicator.
    pub fn comm(&self) -> &Comm {
        &self.comm
    }

    /// This rank's index among the ranks of its node.
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Number of ranks on this node.
    pub fn local_size(&self) -> usize {
        self.local_size
    }

    /// The transports in use (`"shm"`, `"loopback"`, `"shm+tcp"`).
    pub fn transport_name(&self) -> String {
        self.comm.eng.enter().transport_names()
    }

    /// The tunables in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Ends the whole job with exit status `code`, printing `msg` (`MPI_Abort`).
    pub fn abort(&self, code: i32, msg: &str) -> ! {
        if let Some(p) = &self.pmi {
            let _ = p.borrow_mut().abort(code, msg);
        } else {
            tracing::error!("abort: {msg}");
        }
        std::process::exit(code)
    }

    /// Leaves the job (`MPI_Finalize`): completes queued sends and tells the
    /// launcher this rank ended cleanly.
    pub fn finalize(mut self) -> Result<()> {
        self.finish()
    }

    /// Drops this rank without a word to anyone, as a crashed process would
    /// end: no goodbye to network peers, no finalize to the launcher.
    pub(crate) fn vanish(mut self) {
        self.finalized = true;
    }

    fn finish(&mut self) -> Result<()> {
        if self.finalized {
            return Ok(());
        }
        self.finalized = true;
        self.comm.eng.enter().finalize()?;
        match &self.pmi {
            Some(p) => p.borrow_mut().finalize(),
            None => Ok(()),
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::error!("finalize failed: {e}");
        }
    }
}
