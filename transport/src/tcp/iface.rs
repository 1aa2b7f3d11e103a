//! `TcpIface`: one endpoint's connections to its peers over tcp.

use std::cell::RefCell;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::connect::TcpBuilder;
use super::ep::{Broken, Ep, TxFlags, SCRATCH};
use super::progress::{events, timeout_ms, Flusher, Poller, Waker, INPUT, WAKE_TOKEN};
use super::wire::{FrameHeader, PutHeader, TcpKey, FRAME_HDR};
use crate::{
    ActiveMessages, AmId, AmPlacer, Caps, Error, Event, Iface, MemRegion, Progress, RemoteKey,
    Result, Rma, Sent,
};

/// Default largest active message.
pub const DEFAULT_MAX_AM: usize = 1 << 20;
/// Default bound on the bytes queued for one peer before `am_send` says `Busy`.
pub const DEFAULT_MAX_QUEUED: usize = 4 << 20;
/// Default time dropping an endpoint may spend sending what is still queued.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(2);

/// One endpoint of a job over tcp: a connection to every peer that had an
/// address, and a local queue for messages to itself.
///
/// Made by [`super::TcpBuilder`] → [`super::Prepared::connect`]. Not `Sync`: one
/// thread drives it; [`TcpIface::waker`] wakes it from others. A flusher thread
/// (asleep unless a socket pushed back) sends what sockets could not take at once,
/// so a message that `am_send` accepted arrives without further calls. Dropping it sends
/// what is still queued (for up to [`super::TcpBuilder::linger`]), then closes every connection;
/// the peers see [`Event::Disconnected`].
pub struct TcpIface {
    me: usize,
    n: usize,
    max_am: usize,
    max_queued: usize,
    linger: Duration,
    /// Indexed by peer; `None` for itself and peers not reached over tcp.
    peers: Box<[Option<Ep>]>,
    poller: Poller,
    flusher: Flusher,
    /// Shared receive buffer; borrowed for the whole of `progress`, which makes
    /// a re-entrant call (from a callback) a no-op.
    scratch: RefCell<Box<[u8]>>,
    /// News from the connections: released bodies (see `Event::SendDone`), queued bytes.
    flags: Arc<TxFlags>,
    /// Memory registered for puts from peers.
    regions: RefCell<Regions>,
    /// Frames to itself, encoded as on the wire.
    self_q: RefCell<Vec<u8>>,
    /// The other self-queue buffer, swapped in while one is being delivered.
    self_spare: RefCell<Vec<u8>>,
}

impl std::fmt::Debug for TcpIface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpIface")
            .field("index", &self.me)
            .field("npeers", &self.n)
            .field("max_am", &self.max_am)
            .field(
                "connected",
                &self.peers.iter().filter(|p| p.is_some()).count(),
            )
            .finish_non_exhaustive()
    }
}

impl TcpIface {
    /// The capabilities of an endpoint whose largest active message is `max_am`
    /// bytes (what `caps()` reports, without making one).
    pub fn caps_with(max_am: usize) -> Caps {
        Caps {
            am: true,
            max_am,
            max_inline: max_am,
            rma: false,
            put_zc: true,
            atomics: false,
            inter_node: true,
        }
    }

    /// Assembles an endpoint from authenticated, non-blocking sockets (`socks[p]`
    /// connects to peer `p`).
    pub(crate) fn from_parts(cfg: &TcpBuilder, socks: Vec<Option<OwnedFd>>) -> Result<TcpIface> {
        let poller = Poller::new()?;
        let flags = Arc::new(TxFlags::default());
        let n = socks.len();
        let mut peers = Vec::with_capacity(n);
        for (p, s) in socks.into_iter().enumerate() {
            peers.push(match s {
                Some(s) => {
                    let ep = Ep::new(s, flags.clone());
                    poller.add(ep.fd(), p)?;
                    Some(ep)
                }
                None => None,
            });
        }
        let txs = peers
            .iter()
            .map(|p| p.as_ref().map(|ep| ep.tx().clone()))
            .collect();
        let flusher = Flusher::start(cfg.index, txs, poller.waker())?;
        Ok(TcpIface {
            flusher,
            me: cfg.index,
            n,
            max_am: cfg.max_am,
            max_queued: cfg.max_queued,
            linger: cfg.linger,
            peers: peers.into(),
            poller,
            flags,
            regions: RefCell::new(Regions::new()),
            scratch: RefCell::new(vec![0u8; SCRATCH].into_boxed_slice()),
            self_q: RefCell::new(Vec::new()),
            self_spare: RefCell::new(Vec::new()),
        })
    }

    /// True if messages to `peer` go over a live connection (or `peer` is this endpoint).
    pub fn reaches(&self, peer: usize) -> bool {
        peer == self.me
            || matches!(self.peers.get(peer), Some(Some(ep)) if ep.is_open() && ep.tx().can_send())
    }

    /// Bytes accepted for `peer` that its socket has not taken yet.
    pub fn queued(&self, peer: usize) -> usize {
        match self.peers.get(peer) {
            Some(Some(ep)) => ep.tx().queued(),
            _ => 0,
        }
    }

    /// A handle that makes a blocked [`Progress::wait`] return, usable from any thread.
    pub fn waker(&self) -> Waker {
        self.poller.waker()
    }

    /// A descriptor that polls readable whenever [`Progress::progress`] may have
    /// something to do (for an event loop that waits on several sources).
    /// Messages to itself do not make it readable.
    pub fn poll_fd(&self) -> BorrowedFd<'_> {
        self.poller.fd()
    }

    #[cold]
    fn bad_peer(&self, peer: usize) -> Error {
        Error::NoSuchPeer {
            peer,
            npeers: self.n,
        }
    }

    #[cold]
    fn send_self(&self, id: AmId, hdr: &[u8], payload: &[u8]) -> Result<()> {
        let mut q = self.self_q.borrow_mut();
        if !q.is_empty() && q.len() >= self.max_queued {
            return Err(Error::Busy { peer: self.me });
        }
        let len = (hdr.len() + payload.len()) as u32;
        q.extend_from_slice(&FrameHeader::am(id, len).encode());
        q.extend_from_slice(hdr);
        q.extend_from_slice(payload);
        Ok(())
    }

    /// Delivers the messages to itself queued before this call.
    fn deliver_self<F: FnMut(Event<'_>)>(&self, f: &mut F) -> usize {
        if self.self_q.borrow().is_empty() {
            return 0;
        }
        let mut batch = self.self_spare.take();
        std::mem::swap(&mut batch, &mut *self.self_q.borrow_mut());
        let mut pos = 0;
        let mut count = 0;
        while let Ok(h) = FrameHeader::decode(&batch[pos..], usize::MAX) {
            let end = pos + FRAME_HDR + h.len as usize;
            f(Event::Am {
                src: self.me,
                id: h.id,
                data: &batch[pos + FRAME_HDR..end],
            });
            count += 1;
            pos = end;
        }
        batch.clear();
        *self.self_spare.borrow_mut() = batch;
        count
    }

    /// Sends what queues hold, instead of leaving it all to the flusher thread
    /// while this thread polls anyway (on a busy machine the flusher may wait
    /// for a CPU that the polling owner holds).
    #[cold]
    fn help_flush(&self) {
        // Only this thread queues bytes, so clearing the flag cannot lose one.
        let mut any = false;
        for ep in self.peers.iter().flatten() {
            any |= ep.is_open() && ep.tx().help_flush(self.flusher.out());
        }
        if !any {
            self.flags.queued.store(false, Ordering::Relaxed);
        }
    }

    /// Reports the lent bodies that connections released.
    #[cold]
    fn deliver_released<F: FnMut(Event<'_>)>(&self, f: &mut F) -> usize {
        let mut count = 0;
        for (peer, ep) in self.peers.iter().enumerate() {
            if let Some(ep) = ep {
                ep.tx().take_released(|token| {
                    count += 1;
                    f(Event::SendDone { peer, token });
                });
            }
        }
        count
    }

    /// Closes the connection to `peer` and reports it.
    #[cold]
    fn disconnect<F: FnMut(Event<'_>)>(&self, peer: usize, ep: &Ep, why: Broken, f: &mut F) {
        if let Broken::Protocol(e) = &why {
            tracing::error!(
                "tcp endpoint {}: closing the connection to peer {peer}: {e}",
                self.me
            );
        }
        ep.close(self.flusher.out(), &self.poller);
        // Bodies the closed queue held are released: report them first.
        ep.tx()
            .take_released(|token| f(Event::SendDone { peer, token }));
        f(Event::Disconnected { peer });
    }
}

impl Iface for TcpIface {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn caps(&self) -> Caps {
        TcpIface::caps_with(self.max_am)
    }

    fn index(&self) -> usize {
        self.me
    }

    fn npeers(&self) -> usize {
        self.n
    }
}

impl ActiveMessages for TcpIface {
    #[inline]
    fn am_send(&self, peer: usize, id: AmId, hdr: &[u8], payload: &[u8]) -> Result<()> {
        let Some(slot) = self.peers.get(peer) else {
            return Err(self.bad_peer(peer));
        };
        let len = hdr.len() + payload.len();
        if len > self.max_am {
            return Err(Error::TooLarge {
                len,
                max: self.max_am,
            });
        }
        match slot {
            Some(ep) => ep
                .tx()
                .send(self.flusher.out(), peer, self.max_queued, id, hdr, payload),
            None if peer == self.me => self.send_self(id, hdr, payload),
            None => Err(Error::PeerUnreachable { peer }),
        }
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
        let Some(slot) = self.peers.get(peer) else {
            return Err(self.bad_peer(peer));
        };
        let total = hdr.len() + len;
        if total > self.max_am {
            return Err(Error::TooLarge {
                len: total,
                max: self.max_am,
            });
        }
        // SAFETY: the caller keeps the body readable until its release.
        let body = unsafe { std::slice::from_raw_parts(payload, len) };
        match slot {
            // SAFETY: as above; the queue releases `token` after its last read.
            Some(ep) => unsafe {
                ep.tx().send_frame(
                    self.flusher.out(),
                    peer,
                    self.max_queued,
                    id,
                    false,
                    hdr,
                    body,
                    Some(token),
                )
            },
            None if peer == self.me => self.send_self(id, hdr, body).map(|()| Sent::Done),
            None => Err(Error::PeerUnreachable { peer }),
        }
    }
}

impl Progress for TcpIface {
    fn progress<F: FnMut(Event<'_>)>(&self, f: F) -> usize {
        self.progress_placing(f, &super::ep::NoPlacer)
    }

    fn wait(&self, timeout: Duration) -> Result<()> {
        self.wait_for(timeout)
    }
}

impl TcpIface {
    /// [`Progress::progress`], with the bodies of large active messages that
    /// `placer` claims read from the socket straight to where it says
    /// (delivered as [`Event::Placed`]).
    pub fn progress_placing<F: FnMut(Event<'_>)>(&self, mut f: F, placer: &dyn AmPlacer) -> usize {
        let Ok(mut scratch) = self.scratch.try_borrow_mut() else {
            return 0;
        };
        let mut count = self.deliver_self(&mut f);
        if self.flags.queued.load(Ordering::Relaxed) {
            self.help_flush();
        }
        if self.flags.released.swap(false, Ordering::Acquire) {
            count += self.deliver_released(&mut f);
        }
        let mut evs = events();
        let k = self.poller.poll(&mut evs, 0);
        for ev in &evs[..k] {
            let (flags, token) = (ev.flags, ev.data.u64());
            if token == WAKE_TOKEN {
                self.poller.clear_wake();
                continue;
            }
            let peer = token as usize;
            let Some(Some(ep)) = self.peers.get(peer) else {
                continue;
            };
            if !ep.is_open() {
                continue;
            }
            if flags.intersects(INPUT) {
                let place = |at: PutHeader, len: usize| self.regions.borrow().place(at, len);
                if let Err(why) = ep.read(
                    peer,
                    &mut scratch,
                    self.max_am,
                    &place,
                    placer,
                    &mut f,
                    &mut count,
                ) {
                    self.disconnect(peer, ep, why, &mut f);
                    count += 1;
                }
            }
        }
        count
    }

    fn wait_for(&self, timeout: Duration) -> Result<()> {
        if !self.self_q.borrow().is_empty() || self.flags.released.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut evs = events();
        self.poller.poll(&mut evs[..1], timeout_ms(timeout));
        Ok(())
    }
}

impl Rma for TcpIface {
    fn mem_register(&self, ptr: *const u8, len: usize) -> Result<MemRegion> {
        let k = self.regions.borrow_mut().add(ptr as usize, len);
        Ok(MemRegion {
            addr: ptr as usize,
            len,
            rkey: RemoteKey::from_bytes(&k.pack())?,
        })
    }

    fn mem_deregister(&self, region: &MemRegion) -> Result<()> {
        let k = TcpKey::unpack(region.rkey.as_bytes())?;
        self.regions.borrow_mut().remove(k)
    }

    unsafe fn get(
        &self,
        _peer: usize,
        _dst: *mut u8,
        _len: usize,
        _rkey: &RemoteKey,
        _offset: usize,
    ) -> Result<()> {
        Err(unsupported("get"))
    }

    unsafe fn put(
        &self,
        _peer: usize,
        _src: *const u8,
        _len: usize,
        _rkey: &RemoteKey,
        _offset: usize,
    ) -> Result<()> {
        Err(unsupported("put"))
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
        let k = TcpKey::unpack(rkey.as_bytes())?;
        crate::check_bounds(offset, len, k.len as usize)?;
        let total = super::wire::PUT_HDR + len;
        if total > self.max_am {
            return Err(Error::TooLarge {
                len: total,
                max: self.max_am,
            });
        }
        let hdr = PutHeader {
            region: k.region,
            key: k.key,
            offset: offset as u64,
        }
        .encode();
        // SAFETY: the caller keeps `src` readable until its release.
        let body = unsafe { std::slice::from_raw_parts(src, len) };
        match self.peers.get(peer) {
            // SAFETY: as above; the queue releases `token` after its last read.
            Some(Some(ep)) => unsafe {
                ep.tx().send_frame(
                    self.flusher.out(),
                    peer,
                    self.max_queued,
                    0,
                    true,
                    &hdr,
                    body,
                    Some(token),
                )
            },
            Some(None) if peer == self.me => {
                let dst = self
                    .regions
                    .borrow()
                    .place(
                        PutHeader {
                            offset: offset as u64,
                            ..PutHeader::decode(&hdr)?
                        },
                        len,
                    )
                    .ok_or(Error::RemoteAccess {
                        offset,
                        len,
                        region_len: k.len as usize,
                    })?;
                // SAFETY: `place` vouches for `len` bytes at `dst`; `src` is readable.
                unsafe { std::ptr::copy(src, dst, len) };
                Ok(Sent::Done)
            }
            Some(None) => Err(Error::PeerUnreachable { peer }),
            None => Err(self.bad_peer(peer)),
        }
    }
}

/// The registrations of an endpoint: slots with a key each, so that a put
/// naming a freed or reused slot does not match.
#[derive(Debug)]
struct Regions {
    slots: Vec<Option<(usize, usize, u32)>>,
    free: Vec<u32>,
    /// Source of keys: a per-endpoint random start, then a counter.
    next_key: u32,
}

impl Regions {
    fn new() -> Regions {
        let mut seed = [0u8; 4];
        // A failure leaves a fixed start; keys still differ per registration.
        let _ = getrandom::fill(&mut seed);
        Regions {
            slots: Vec::new(),
            free: Vec::new(),
            next_key: u32::from_le_bytes(seed),
        }
    }

    fn add(&mut self, addr: usize, len: usize) -> TcpKey {
        self.next_key = self.next_key.wrapping_add(0x9E37_79B9);
        let key = self.next_key;
        let region = match self.free.pop() {
            Some(r) => {
                self.slots[r as usize] = Some((addr, len, key));
                r
            }
            None => {
                self.slots.push(Some((addr, len, key)));
                (self.slots.len() - 1) as u32
            }
        };
        TcpKey {
            region,
            key,
            len: len as u64,
        }
    }

    fn remove(&mut self, k: TcpKey) -> Result<()> {
        let live =
            matches!(self.slots.get(k.region as usize), Some(Some((_, _, key))) if *key == k.key);
        match self.slots.get_mut(k.region as usize) {
            Some(slot) if live => {
                *slot = None;
                self.free.push(k.region);
                Ok(())
            }
            _ => Err(Error::Malformed {
                what: "tcp remote key",
                reason: "no such registration",
            }),
        }
    }

    /// Where `len` bytes at `at` go, if `at` names a live registration and
    /// they fit in it.
    fn place(&self, at: PutHeader, len: usize) -> Option<*mut u8> {
        let (addr, rlen, key) = (*self.slots.get(at.region as usize)?)?;
        if key != at.key {
            return None;
        }
        let off = usize::try_from(at.offset).ok()?;
        if off.checked_add(len)? > rlen {
            return None;
        }
        Some((addr + off) as *mut u8)
    }
}

#[cold]
fn unsupported(op: &'static str) -> Error {
    Error::Unsupported { backend: "tcp", op }
}

impl Drop for TcpIface {
    fn drop(&mut self) {
        let scratch = self.scratch.get_mut();
        let deadline = Instant::now() + self.linger;
        let mut evs = events();
        // Let the flusher send what is queued, reading (and dropping) input
        // meanwhile so that a peer flushing towards us is not blocked either.
        loop {
            let mut pending = false;
            for ep in self.peers.iter().flatten() {
                ep.discard_input(scratch);
                pending |= ep.is_open() && ep.tx().queued() > 0;
            }
            if !pending || Instant::now() >= deadline {
                break;
            }
            self.poller.poll(&mut evs, 10);
            self.poller.clear_wake();
        }
        self.flusher.stop();
        for ep in self.peers.iter().flatten() {
            ep.shutdown(scratch);
        }
    }
}
