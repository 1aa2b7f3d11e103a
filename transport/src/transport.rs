//! Static dispatch over the backends.

use std::time::Duration;

use crate::loopback::Loopback;
use crate::roce::iface::RoceIface;
use crate::shm::ShmIface;
use crate::tcp::TcpIface;
#[cfg(feature = "verbs")]
use crate::verbs::VerbsIface;
use crate::{
    ActiveMessages, AmId, AmPlacer, Caps, Event, Iface, MemRegion, Progress, RemoteKey, Result,
    Rma, Sent,
};

/// One of the backends, chosen once; every call is a `match`, not a virtual call.
#[derive(Debug)]
#[non_exhaustive]
pub enum Transport {
    /// Shared memory within a node.
    Shm(ShmIface),
    /// A rank alone.
    Loopback(Loopback),
    /// TCP connections to ranks on other hosts.
    Tcp(TcpIface),
    /// Soft-RoCE queue pairs (RoCEv2 over UDP) to ranks on other hosts.
    Roce(RoceIface),
    /// RDMA queue pairs to ranks on other hosts (feature `verbs`).
    #[cfg(feature = "verbs")]
    Verbs(VerbsIface),
}

macro_rules! each {
    ($self:expr, $t:ident => $e:expr) => {
        match $self {
            Transport::Shm($t) => $e,
            Transport::Loopback($t) => $e,
            Transport::Tcp($t) => $e,
            Transport::Roce($t) => $e,
            #[cfg(feature = "verbs")]
            Transport::Verbs($t) => $e,
        }
    };
}

impl Transport {
    /// The shared-memory endpoint, if this is one.
    #[inline]
    pub fn as_shm(&self) -> Option<&ShmIface> {
        match self {
            Transport::Shm(s) => Some(s),
            _ => None,
        }
    }

    /// The soft-RoCE endpoint, if this is one.
    #[inline]
    pub fn as_roce(&self) -> Option<&RoceIface> {
        match self {
            Transport::Roce(r) => Some(r),
            _ => None,
        }
    }

    /// The tcp endpoint, if this is one.
    #[inline]
    pub fn as_tcp(&self) -> Option<&TcpIface> {
        match self {
            Transport::Tcp(t) => Some(t),
            _ => None,
        }
    }

    /// The verbs endpoint, if this is one (feature `verbs`).
    #[cfg(feature = "verbs")]
    #[inline]
    pub fn as_verbs(&self) -> Option<&VerbsIface> {
        match self {
            Transport::Verbs(v) => Some(v),
            _ => None,
        }
    }

    /// [`Progress::progress`] with large active messages placed where
    /// `placer` says (tcp; the other backends deliver as usual).
    #[inline]
    pub fn progress_placing<F: FnMut(Event<'_>)>(&self, f: F, placer: &dyn AmPlacer) -> usize {
        match self {
            Transport::Tcp(t) => t.progress_placing(f, placer),
            t => t.progress(f),
        }
    }

    /// [`Progress::wait`] that also returns early when `ready()` holds after
    /// the caller announced that it sleeps (shared memory; the other backends
    /// wait as usual, their waits being bounded by the caller).
    pub fn wait_or(&self, timeout: Duration, ready: &mut dyn FnMut() -> bool) -> Result<()> {
        match self {
            Transport::Shm(s) => s.wait_or(timeout, ready),
            t => {
                if ready() {
                    return Ok(());
                }
                t.wait(timeout)
            }
        }
    }
}

impl Iface for Transport {
    fn name(&self) -> &'static str {
        each!(self, t => t.name())
    }
    fn caps(&self) -> Caps {
        each!(self, t => t.caps())
    }
    fn index(&self) -> usize {
        each!(self, t => t.index())
    }
    fn npeers(&self) -> usize {
        each!(self, t => t.npeers())
    }
}

impl ActiveMessages for Transport {
    #[inline]
    fn am_send(&self, peer: usize, id: AmId, hdr: &[u8], payload: &[u8]) -> Result<()> {
        each!(self, t => t.am_send(peer, id, hdr, payload))
    }
    #[inline]
    unsafe fn am_send_zc(
        &self,
        peer: usize,
        id: AmId,
        hdr: &[u8],
        payload: *const u8,
        len: usize,
        token: u64,
    ) -> Result<Sent> {
        // SAFETY: forwarded with the caller's guarantees.
        each!(self, t => unsafe { t.am_send_zc(peer, id, hdr, payload, len, token) })
    }
}

impl Progress for Transport {
    #[inline]
    fn progress<F: FnMut(Event<'_>)>(&self, f: F) -> usize {
        each!(self, t => t.progress(f))
    }
    fn wait(&self, timeout: Duration) -> Result<()> {
        each!(self, t => t.wait(timeout))
    }
}

impl Rma for Transport {
    fn mem_register(&self, ptr: *const u8, len: usize) -> Result<MemRegion> {
        each!(self, t => t.mem_register(ptr, len))
    }
    unsafe fn get(
        &self,
        peer: usize,
        dst: *mut u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
    ) -> Result<()> {
        // SAFETY: forwarded with the caller's guarantees.
        each!(self, t => unsafe { t.get(peer, dst, len, rkey, offset) })
    }
    unsafe fn put(
        &self,
        peer: usize,
        src: *const u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
    ) -> Result<()> {
        // SAFETY: forwarded with the caller's guarantees.
        each!(self, t => unsafe { t.put(peer, src, len, rkey, offset) })
    }
    fn mem_deregister(&self, region: &MemRegion) -> Result<()> {
        each!(self, t => t.mem_deregister(region))
    }
    fn atomic(
        &self,
        peer: usize,
        rkey: &RemoteKey,
        offset: usize,
        op: crate::RemoteAtomic,
    ) -> Result<u64> {
        each!(self, t => t.atomic(peer, rkey, offset, op))
    }
    unsafe fn put_zc(
        &self,
        peer: usize,
        src: *const u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
        token: u64,
    ) -> Result<Sent> {
        // SAFETY: forwarded with the caller's guarantees.
        each!(self, t => unsafe { t.put_zc(peer, src, len, rkey, offset, token) })
    }
}
