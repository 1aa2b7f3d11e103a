//! Static dispatch over the backends.

use std::time::Duration;

use crate::loopback::Loopback;
#[cfg(test)]
use crate::roce::iface::PreparedRoce;
use crate::roce::iface::RoceIface;
use crate::shm::{DoorbellBridge, ShmIface};
use crate::tcp::TcpIface;
#[cfg(feature = "verbs")]
use crate::verbs::VerbsIface;
use crate::{
    ActiveMessages, AmId, AmPlacer, Caps, Event, Iface, MemRegion, PlacingProgress, Progress,
    RemoteKey, Result, Rma, Sent, Wake, Wakeable, Waker,
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
    /// The shared-memory endpoint, if this is one (node-level collectives
    /// use its slots). There is no such accessor for the network backends:
    /// what callers need of them goes through the traits and the methods
    /// below.
    #[inline]
    pub fn as_shm(&self) -> Option<&ShmIface> {
        match self {
            Transport::Shm(s) => Some(s),
            _ => None,
        }
    }

    /// [`PlacingProgress::progress_placing`]: large active messages placed
    /// where `placer` says, by the backends that can (tcp).
    #[inline]
    pub fn progress_placing<F: FnMut(Event<'_>)>(&self, f: F, placer: &dyn AmPlacer) -> usize {
        PlacingProgress::progress_placing(self, f, placer)
    }

    /// [`Wakeable::wait_or`] of the backend ([`Progress::wait`] after
    /// checking `ready()` for one that has no waker).
    pub fn wait_or(&self, timeout: Duration, ready: &mut dyn FnMut() -> bool) -> Result<()> {
        match self {
            Transport::Shm(s) => Wakeable::wait_or(s, timeout, ready),
            Transport::Tcp(t) => Wakeable::wait_or(t, timeout, ready),
            Transport::Roce(r) => Wakeable::wait_or(r, timeout, ready),
            #[cfg(feature = "verbs")]
            Transport::Verbs(v) => Wakeable::wait_or(v, timeout, ready),
            Transport::Loopback(l) => {
                if ready() {
                    return Ok(());
                }
                l.wait(timeout)
            }
        }
    }

    /// What ends this endpoint's wait from another thread ([`Wakeable`]);
    /// `None` for a loopback endpoint, which nothing else can reach.
    pub fn waker(&self) -> Option<Waker> {
        match self {
            Transport::Shm(s) => Some(Waker::Shm(s.waker())),
            Transport::Tcp(t) => Some(Waker::Tcp(t.waker())),
            Transport::Roce(r) => Some(Waker::Roce(r.waker())),
            #[cfg(feature = "verbs")]
            Transport::Verbs(v) => Some(Waker::Verbs(v.waker())),
            Transport::Loopback(_) => None,
        }
    }

    /// For a rank whose node-local transport is `self` and whose network
    /// transport is `net`: a [`DoorbellBridge`] that turns rings of this
    /// rank's shared-memory doorbell into wakes of `net`, so that the rank
    /// sleeps in `net`'s wait alone ([`Transport::wait_with`]). Works for
    /// every network backend with a [`Transport::waker`]. `None` when `self`
    /// needs none (nothing reaches a loopback endpoint from elsewhere), when
    /// `net` has no waker, or when the bridge's thread could not start.
    pub fn bridge_to(&self, net: &Transport) -> Option<DoorbellBridge> {
        let (Transport::Shm(shm), Some(w)) = (self, net.waker()) else {
            return None;
        };
        shm.doorbell_bridge(move || w.wake()).ok()
    }

    /// Sleeps until `net` or this node-local transport may have something,
    /// `ready()` holds, or `timeout` passes; `bridge` is what
    /// [`Transport::bridge_to`] gave. The rank sleeps in `net`'s wait; a local
    /// peer that rings its doorbell wakes it through the bridge.
    pub fn wait_with(
        &self,
        net: &Transport,
        bridge: Option<&DoorbellBridge>,
        timeout: Duration,
        ready: &mut dyn FnMut() -> bool,
    ) -> Result<()> {
        match (self, bridge) {
            (Transport::Shm(shm), Some(_)) => {
                if shm.begin_sleep(ready) {
                    let r = net.wait(timeout);
                    shm.end_sleep();
                    r?;
                }
                Ok(())
            }
            // No bridge (its thread could not start, or `net` cannot be
            // woken): look at shared memory at least every millisecond.
            (Transport::Shm(_), None) => net.wait(timeout.min(Duration::from_millis(1))),
            // A loopback endpoint next to the network (shared memory not
            // allowed): nothing reaches it from elsewhere, but the network's
            // wait stays bounded by 1 ms as it always was: without the bound,
            // 8-byte tcp ping-pongs and allreduces between two ranks of one
            // node measured 1.5 to 2 times slower (some wake-up there comes
            // late, which the bound hides).
            _ => net.wait(timeout.min(Duration::from_millis(1))),
        }
    }
}

impl PlacingProgress for Transport {
    #[inline]
    fn progress_placing<F: FnMut(Event<'_>)>(&self, f: F, placer: &dyn AmPlacer) -> usize {
        each!(self, t => t.progress_placing(f, placer))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Secret;
    use crate::shm::Segment;
    use crate::{Bringup, TcpOptions};
    use std::net::Ipv4Addr;
    use std::sync::Arc;
    use std::time::Instant;

    /// A network endpoint with no peers but itself (enough to sleep in).
    fn lone_net(roce: bool) -> Transport {
        if let Some(v) = lone_verbs() {
            return v;
        }
        let (ip, secret) = (Ipv4Addr::LOCALHOST.into(), Secret::generate().unwrap());
        let t = Duration::from_secs(5);
        if roce {
            let o = crate::RoceOptions {
                ip,
                secret,
                max_mtu: 4096,
                segmentation: true,
                retry_budget: None,
                packet_auth: true,
            };
            let p = PreparedRoce::prepare(0, 1, &o).unwrap();
            Transport::from(Bringup::connect(p, &[None], t).unwrap())
        } else {
            let p = crate::tcp::Prepared::prepare(0, 1, &TcpOptions { ip, secret }).unwrap();
            Transport::from(Bringup::connect(p, &[None], t).unwrap())
        }
    }

    /// With `DOS_TEST_DEVICE` set (and the feature `verbs`), the tests
    /// below run over that RDMA device instead (see `tests/verbs.rs`).
    #[cfg(feature = "verbs")]
    fn lone_verbs() -> Option<Transport> {
        let dev = std::env::var("DOS_TEST_DEVICE").ok()?;
        let o = crate::VerbsOptions { device: Some(dev) };
        let p = crate::verbs::Prepared::prepare(0, 1, &o).unwrap();
        Some(Transport::from(
            Bringup::connect(p, &[None], Duration::from_secs(5)).unwrap(),
        ))
    }

    #[cfg(not(feature = "verbs"))]
    fn lone_verbs() -> Option<Transport> {
        None
    }

    #[test]
    fn a_network_waker_ends_its_wait() {
        for roce in [false, true] {
            let net = lone_net(roce);
            let w = net.waker().expect("a network backend has a waker");
            let t0 = Instant::now();
            std::thread::scope(|s| {
                s.spawn(|| {
                    std::thread::sleep(Duration::from_millis(20));
                    w.wake();
                });
                while t0.elapsed() < Duration::from_millis(20) {
                    net.wait(Duration::from_secs(30)).unwrap();
                }
            });
            assert!(t0.elapsed() < Duration::from_secs(10), "{roce}");
        }
        assert!(Transport::Loopback(Loopback::new()).waker().is_none());
    }

    /// A rank on shm plus any network backend with a waker sleeps in the
    /// network's wait (no polling bound) and is woken by a local peer's
    /// send through the doorbell bridge.
    #[test]
    fn a_local_send_wakes_a_rank_sleeping_in_any_network_wait() {
        for roce in [false, true] {
            let seg = Arc::new(Segment::create(2, 1 << 16).unwrap());
            let a = ShmIface::new(seg.clone(), 0).unwrap();
            let b = Transport::Shm(ShmIface::new(seg, 1).unwrap());
            let net = lone_net(roce);
            let bridge = b.bridge_to(&net);
            assert!(bridge.is_some(), "no bridge (roce: {roce})");
            // Without a send, the sleep lasts: no 1 ms polling.
            let t0 = Instant::now();
            b.wait_with(
                &net,
                bridge.as_ref(),
                Duration::from_millis(30),
                &mut || false,
            )
            .unwrap();
            assert!(
                t0.elapsed() >= Duration::from_millis(5),
                "{:?}",
                t0.elapsed()
            );
            let t0 = Instant::now();
            let sender = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                a.am_send(1, 1, b"x", b"").unwrap();
                a
            });
            b.wait_with(&net, bridge.as_ref(), Duration::from_secs(30), &mut || {
                false
            })
            .unwrap();
            let _a = sender.join().unwrap();
            assert!(t0.elapsed() < Duration::from_secs(10), "{roce}");
            let mut n = 0;
            b.progress(|_| n += 1);
            assert_eq!(n, 1);
            // `ready` ends it at once.
            b.wait_with(&net, bridge.as_ref(), Duration::from_secs(30), &mut || true)
                .unwrap();
        }
    }
}
