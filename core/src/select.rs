//! Transport selection: which backend reaches which peer, and the bring-up
//! of the network backend. The one module of core that names concrete
//! backends; the engine sees only [`Transport`] and the capability traits.
//!
//! A rank has a node-local transport (shared memory, or a loopback endpoint
//! when it talks to no other rank of its node that way) and, in a job of
//! several nodes, a network transport. [`Routes::new`] decides the route to
//! every rank from where the ranks run; [`prepare_net`] chooses and prepares
//! the network backend, which [`Routes::connect`] connects. [`crate::init`]
//! and [`crate::testing`] both build their routes here.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dos_transport::auth::Secret;
use dos_transport::loopback::Loopback;
use dos_transport::roce::iface::PreparedRoce;
use dos_transport::shm::{Segment, ShmIface};
use dos_transport::{Bringup, PreparedNet, RoceOptions, TcpOptions, Transport};

use crate::config::Config;
use crate::p2p::{Links, Route};
use crate::{Error, Result};

/// Where a rank runs: its node, and its index among the ranks of that node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    /// The node's index.
    pub node: usize,
    /// The rank's index on its node.
    pub local: usize,
}

/// The node-local transport of rank `local_rank` of a node: shared memory
/// on `seg`, or, without a segment, a loopback endpoint (a rank alone).
/// `fence`: senders fence before they look whether their receiver sleeps
/// (`DOS_SHM_FENCE`) instead of relying on the sleeper's `membarrier`.
pub(crate) fn local(
    seg: Option<Arc<Segment>>,
    local_rank: usize,
    fence: bool,
) -> Result<Transport> {
    Ok(match seg {
        Some(seg) => {
            let mut shm = ShmIface::new(seg, local_rank)?;
            if fence {
                shm.force_fences();
            }
            Transport::Shm(shm)
        }
        None => Transport::Loopback(Loopback::new()),
    })
}

/// The network backends, in the order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Net {
    /// RDMA devices (feature `verbs`).
    Verbs,
    /// TCP (measured faster here than the soft-RoCE).
    Tcp,
    /// The soft-RoCE over UDP.
    Roce,
}

/// The network backend a job uses: verbs when allowed and this build and
/// host have an RDMA device, else tcp when allowed, else the soft-RoCE.
/// Every rank must choose alike: the choice depends on the build and the
/// devices, the same on every node of a job made of one kind of machine.
pub(crate) fn choose(cfg: &Config) -> Result<Net> {
    let allow = cfg.transports;
    if allow.verbs && has_rdma_device() {
        return Ok(Net::Verbs);
    }
    if allow.tcp {
        Ok(Net::Tcp)
    } else if allow.roce {
        Ok(Net::Roce)
    } else {
        Err(Error::Environment {
            var: "DOS_TRANSPORTS",
            reason: "only verbs is allowed, but this build or host has no RDMA device",
        })
    }
}

#[cfg(feature = "verbs")]
fn has_rdma_device() -> bool {
    !dos_transport::verbs::devices().is_empty()
}

#[cfg(not(feature = "verbs"))]
fn has_rdma_device() -> bool {
    false
}

/// Prepares endpoint `rank` of `size` of the network backend `net`,
/// reachable at `ip`. A verbs device that cannot be used gives way to tcp
/// or the soft-RoCE, as the transports allow.
pub(crate) fn prepare_net(
    net: Net,
    rank: usize,
    size: usize,
    ip: IpAddr,
    secret: &Secret,
    cfg: &Config,
) -> Result<Box<dyn PreparedNet>> {
    let tcp = || TcpOptions {
        ip,
        secret: secret.clone(),
    };
    Ok(match net {
        Net::Verbs => match prepare_verbs(rank, size) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(
                    "rank {rank}: RDMA device present but unusable ({e}); using tcp/roce"
                );
                let mut cfg = *cfg;
                cfg.transports.verbs = false;
                return prepare_net(choose(&cfg)?, rank, size, ip, secret, &cfg);
            }
        },
        Net::Tcp => Box::new(dos_transport::tcp::Prepared::prepare(rank, size, &tcp())?),
        Net::Roce => Box::new(PreparedRoce::prepare(
            rank,
            size,
            &RoceOptions {
                ip,
                secret: secret.clone(),
                max_mtu: cfg.roce_mtu,
                segmentation: cfg.roce_gso,
                retry_budget: Some(Duration::from_millis(cfg.roce_retry_budget_ms)),
                packet_auth: cfg.roce_auth,
            },
        )?),
    })
}

#[cfg(feature = "verbs")]
fn prepare_verbs(rank: usize, size: usize) -> Result<Box<dyn PreparedNet>> {
    let o = dos_transport::VerbsOptions::default();
    Ok(Box::new(dos_transport::verbs::Prepared::prepare(
        rank, size, &o,
    )?))
}

#[cfg(not(feature = "verbs"))]
fn prepare_verbs(_rank: usize, _size: usize) -> Result<Box<dyn PreparedNet>> {
    Err(Error::Environment {
        var: "DOS_TRANSPORTS",
        reason: "this build has no verbs backend",
    })
}

/// The route to every rank of a job, decided before the transports exist.
#[derive(Debug)]
pub(crate) struct Routes {
    routes: Box<[Route]>,
    local_world: Box<[u32]>,
}

impl Routes {
    /// The routes of rank `rank`, given the place of every rank and the
    /// number of ranks on this rank's node: the ranks of this node through
    /// the node-local transport when `local_shm`, every other rank through
    /// the network. Without shared memory the node-local transport reaches
    /// this rank alone, and every other rank, on this node too, goes over
    /// the network.
    pub(crate) fn new(
        rank: usize,
        places: &[Place],
        local_size: usize,
        local_shm: bool,
    ) -> Result<Routes> {
        let node = places
            .get(rank)
            .ok_or(Error::WireupProtocol {
                reason: "this rank has no place",
            })?
            .node;
        let mut routes = Vec::with_capacity(places.len());
        let mut local_world = vec![u32::MAX; if local_shm { local_size } else { 1 }];
        for (r, p) in places.iter().enumerate() {
            if r == rank && !local_shm {
                local_world[0] = r as u32;
                routes.push(Route::Local(0));
            } else if p.node == node && local_shm {
                let slot = local_world.get_mut(p.local).ok_or(Error::WireupProtocol {
                    reason: "local rank out of range",
                })?;
                *slot = r as u32;
                routes.push(Route::Local(p.local as u32));
            } else {
                routes.push(Route::Net(r as u32));
            }
        }
        if local_world.contains(&u32::MAX) {
            return Err(Error::WireupProtocol {
                reason: "a local rank of this node is missing",
            });
        }
        Ok(Routes {
            routes: routes.into(),
            local_world: local_world.into(),
        })
    }

    /// Whether rank `r` is reached over the network.
    pub(crate) fn is_net(&self, r: usize) -> bool {
        matches!(self.routes.get(r), Some(Route::Net(_)))
    }

    /// The addresses `net` connects to: rank `r`'s published one (`addr(r)`,
    /// asked only for the ranks reached over the network), `None` for the
    /// others.
    pub(crate) fn addrs(
        &self,
        mut addr: impl FnMut(usize) -> Result<Vec<u8>>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        (0..self.routes.len())
            .map(|r| {
                if self.is_net(r) {
                    addr(r).map(Some)
                } else {
                    Ok(None)
                }
            })
            .collect()
    }

    /// Connects `net` to `addrs` (from [`Routes::addrs`]) and gives the links
    /// of this rank. `barrier` (of all ranks) is held between connecting and
    /// the first send when the backend needs it.
    pub(crate) fn connect(
        self,
        local: Transport,
        net: Box<dyn PreparedNet>,
        addrs: &[Option<Vec<u8>>],
        timeout: Duration,
        barrier: impl FnOnce() -> Result<()>,
    ) -> Result<Links> {
        let needs_barrier = net.barrier_after_connect();
        let net = net.connect(addrs, timeout)?;
        if needs_barrier {
            barrier()?;
        }
        Ok(self.links(local, Some(net)))
    }

    /// The links of this rank over `local` and `net`.
    pub(crate) fn links(self, local: Transport, net: Option<Transport>) -> Links {
        let size = self.routes.len() as u32;
        Links {
            local,
            net,
            routes: self.routes,
            local_world: self.local_world,
            net_world: (0..size).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places(per_node: &[usize]) -> Vec<Place> {
        per_node
            .iter()
            .enumerate()
            .flat_map(|(node, &n)| (0..n).map(move |local| Place { node, local }))
            .collect()
    }

    #[test]
    fn ranks_of_this_node_go_local_and_the_others_over_the_network() {
        let r = Routes::new(3, &places(&[2, 3]), 3, true).unwrap();
        assert_eq!(
            &*r.routes,
            &[
                Route::Net(0),
                Route::Net(1),
                Route::Local(0),
                Route::Local(1),
                Route::Local(2)
            ]
        );
        assert_eq!(&*r.local_world, &[2, 3, 4]);
        assert!(r.is_net(1) && !r.is_net(4));
    }

    #[test]
    fn without_shm_only_the_rank_itself_is_local() {
        let r = Routes::new(1, &places(&[2, 1]), 2, false).unwrap();
        assert_eq!(&*r.routes, &[Route::Net(0), Route::Local(0), Route::Net(2)]);
        assert_eq!(&*r.local_world, &[1]);
    }

    #[test]
    fn inconsistent_places_are_a_wireup_error() {
        // A local rank beyond the node's size, and a node short of one.
        let mut p = places(&[2]);
        p[1].local = 5;
        assert!(matches!(
            Routes::new(0, &p, 2, true),
            Err(Error::WireupProtocol { .. })
        ));
        assert!(matches!(
            Routes::new(0, &places(&[2]), 3, true),
            Err(Error::WireupProtocol { .. })
        ));
    }

    #[test]
    fn verbs_is_chosen_only_with_a_device_and_tcp_before_roce() {
        let mut cfg = Config::default();
        cfg.transports.verbs = false;
        assert_eq!(choose(&cfg).unwrap(), Net::Tcp);
        cfg.transports.tcp = false;
        assert_eq!(choose(&cfg).unwrap(), Net::Roce);
        cfg.transports.roce = false;
        assert!(choose(&cfg).is_err());
    }
}
