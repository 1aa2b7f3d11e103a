//! How each peer is reached: the transports of this process, the route of
//! every world rank (decided once, at start-up), and sending along it.

use dos_transport::{ActiveMessages, Iface, Sent, Transport};

use super::Engine;

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

impl Engine {
    /// Sends an active message to world rank `peer` along its route.
    #[inline]
    pub(crate) fn am_send(
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

    /// Zero-copy send to world rank `peer` along its route.
    ///
    /// # Safety
    /// As `ActiveMessages::am_send_zc`: `payload` stays readable and unchanged
    /// until `Done` or the `SendDone` of `token`.
    #[inline]
    pub(crate) unsafe fn am_send_zc(
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

    /// True if world rank `peer` is reached over a network transport that
    /// takes zero-copy puts.
    pub(crate) fn put_capable(&self, peer: usize) -> bool {
        matches!(self.links.routes.get(peer), Some(Route::Net(_)))
            && self.links.net.as_ref().is_some_and(|n| n.caps().put_zc)
    }
}
