//! Start-up and shut-down: [`init`] and [`World`].

use std::cell::RefCell;
use std::os::fd::{FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use dos_transport::shm::Segment;
use dos_transport::Transport;

use crate::comm::Comm;
use crate::config::Config;
use crate::p2p::{Engine, Links, Shared};
use crate::pmi::Client;
use crate::select::{self, Place, Routes};
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
        let links = Links::single_node(select::local(None, 0, cfg.shm_fence)?);
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
        let local = select::local(allow.shm.then(|| Arc::new(seg)), local_rank, cfg.shm_fence)?;
        if !allow.network() {
            return Err(Error::Environment {
                var: "DOS_TRANSPORTS",
                reason: "no allowed transport reaches the ranks of other nodes (allow tcp or roce)",
            });
        }
        connect_nodes(&mut pmi, local, &cfg)?
    } else {
        let shm = select::local(Some(Arc::new(seg)), local_rank, cfg.shm_fence)?;
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

/// Brings up the network transport (chosen by [`crate::select`]) to the
/// ranks of other nodes: every rank publishes its address and its (node,
/// local rank), then connects to the ranks of other nodes; ranks of this node
/// stay on shared memory (`local`), unless shared memory is not allowed:
/// then `local` reaches only this rank, and every other rank, on this node
/// too, is reached over the network.
fn connect_nodes(pmi: &mut Client, local: Transport, cfg: &Config) -> Result<Links> {
    let allow = cfg.transports;
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
    let prepared = select::prepare_net(select::choose(cfg)?, rank, size, ip, secret, cfg)?;
    let mut place = [0u8; 8];
    place[..4].copy_from_slice(&(node as u32).to_le_bytes());
    place[4..].copy_from_slice(&(pmi.local_rank() as u32).to_le_bytes());
    pmi.put(&format!("tcp.{rank}"), &prepared.address())?;
    pmi.put(&format!("node.{rank}"), &place)?;
    pmi.fence()?;
    let places = (0..size)
        .map(|r| match pmi.get(&format!("node.{r}"))?.as_slice() {
            [a, b, c, d, e, f, g, h] => Ok(Place {
                node: u32::from_le_bytes([*a, *b, *c, *d]) as usize,
                local: u32::from_le_bytes([*e, *f, *g, *h]) as usize,
            }),
            _ => Err(Error::WireupProtocol {
                reason: "node placement of a rank is not 8 bytes",
            }),
        })
        .collect::<Result<Vec<_>>>()?;
    let routes = Routes::new(rank, &places, pmi.local_size(), allow.shm)?;
    let addrs = routes.addrs(|r| pmi.get(&format!("tcp.{r}")))?;
    // Queue pairs of some backends (verbs) are ready only once every rank
    // connected: no send before all have.
    routes.connect(local, prepared, &addrs, CONNECT_TIMEOUT, || pmi.fence())
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

    /// Tells the launcher `value` under `key` with a wire-up `put` and no
    /// fence (`dos::ckpt` reports the checkpoint a restart used as
    /// `dos.ckpt.restored`). Without `dosrun`, does nothing.
    pub fn publish(&self, key: &str, value: &[u8]) -> Result<()> {
        match &self.pmi {
            Some(p) => p.borrow_mut().put(key, value),
            None => Ok(()),
        }
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
