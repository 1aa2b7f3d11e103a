//! Start-up and shut-down: [`init`] and [`World`].

use std::cell::RefCell;
use std::os::fd::{FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;

use dos_transport::loopback::Loopback;
use dos_transport::shm::{Segment, ShmIface};
use dos_transport::Transport;

use crate::comm::Comm;
use crate::config::Config;
use crate::p2p::{Engine, Links};
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
/// ```
/// let world = dos::init().unwrap();
/// assert!(world.rank() < world.size());
/// ```
pub fn init() -> Result<World> {
    let cfg = Config::from_env()?;
    let Some(mut pmi) = Client::from_env()? else {
        let links = Links::single_node(Transport::Loopback(Loopback::new()));
        let eng = Rc::new(Engine::new(links, cfg, 1));
        return Ok(World::from_parts(eng, 0, vec![0].into(), None, 0, 1));
    };
    let (rank, size) = (pmi.rank(), pmi.size());
    let (local_rank, local_size) = (pmi.local_rank(), pmi.local_size());
    if local_size != size {
        return Err(Error::Unsupported(
            "jobs spanning several nodes need the network transports",
        ));
    }
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
    let iface = ShmIface::new(Arc::new(seg), local_rank)?;
    pmi.put(
        &format!("shm.pid.{rank}"),
        &std::process::id().to_le_bytes(),
    )?;
    pmi.fence()?;
    let eng = Rc::new(Engine::new(
        Links::single_node(Transport::Shm(iface)),
        cfg,
        local_size,
    ));
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

impl World {
    pub(crate) fn from_parts(
        eng: Rc<Engine>,
        rank: usize,
        peers: Rc<[u32]>,
        pmi: Option<RefCell<Client>>,
        local_rank: usize,
        local_size: usize,
    ) -> World {
        World {
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
        self.comm.eng.transport_names()
    }

    /// The tunables in force.
    pub fn config(&self) -> &Config {
        self.comm.eng.config()
    }

    /// Ends the whole job with exit status `code`, printing `msg` (`MPI_Abort`).
    pub fn abort(&self, code: i32, msg: &str) -> ! {
        if let Some(p) = &self.pmi {
            let _ = p.borrow_mut().abort(code, msg);
        } else {
            eprintln!("dos: abort: {msg}");
        }
        std::process::exit(code)
    }

    /// Leaves the job (`MPI_Finalize`): completes queued sends and tells the
    /// launcher this rank ended cleanly.
    pub fn finalize(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        if self.finalized {
            return Ok(());
        }
        self.finalized = true;
        self.comm.eng.finalize()?;
        match &self.pmi {
            Some(p) => p.borrow_mut().finalize(),
            None => Ok(()),
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("dos: finalize failed: {e}");
        }
    }
}
