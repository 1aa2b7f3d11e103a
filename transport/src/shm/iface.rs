//! `ShmIface`: one rank's attachment to the node's segment.

use std::cell::{Cell, OnceCell};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::ep::{Push, RxRing, TxRing};
use super::mem::{cma_copy, CmaKey, Dir, Segment};
use super::progress::{futex_wait, notify, Barriers, FALLBACK_SLEEP};
use super::wire::{RankCtl, RingCtl, Slot, SLOTS};
use crate::{
    check_bounds, ActiveMessages, AmId, Caps, Error, Event, Iface, MemRegion, Progress, RemoteKey,
    Result, Rma,
};

/// Records delivered from one ring per call to `progress`, for fairness.
const BATCH: usize = 32;

/// One rank's endpoint on a shared segment: its rings to and from the local
/// peers it talks with (itself included) and its doorbell.
///
/// Rings are made on first use (see [`super::wire`]): the first send to a
/// peer carves a ring from the node's pool and announces it in the peer's
/// inbox; `progress` takes announced rings into the set it polls. A rank
/// thus polls only the rings of peers that sent to it.
///
/// Not `Sync`: one thread drives it. Dropping it detaches; the segment stays
/// mapped while any endpoint holds its `Arc`.
#[derive(Debug)]
pub struct ShmIface {
    seg: Arc<Segment>,
    me: usize,
    n: usize,
    pid: u32,
    /// This rank's ring towards each peer, once it sent to it.
    tx: Box<[OnceCell<TxRing>]>,
    /// The rings towards this rank, in the order they were announced; the
    /// first `nrx` are set. Never moves (a handler may send or poll while
    /// `progress` walks it).
    rx: Box<[OnceCell<RxEntry>]>,
    nrx: Cell<usize>,
    ctls: *const RankCtl,
    /// Ring to start the next progress scan from (round robin).
    next_rx: Cell<usize>,
    /// Whether this rank reported an exhausted ring pool (once is enough).
    said_exhausted: Cell<bool>,
    /// How sends are ordered against sleepers (`progress.rs`).
    barriers: Barriers,
}

/// A ring towards this rank, and its producer.
#[derive(Debug)]
struct RxEntry {
    src: usize,
    ring: RxRing,
}

// SAFETY: the raw pointers point into `seg`, which is `Send + Sync` and kept
// alive by the `Arc`; the `Cell`s are only touched by the owning thread.
unsafe impl Send for ShmIface {}

impl ShmIface {
    /// Attaches rank `me` to `seg`. Each rank attaches exactly once: a second
    /// attach of the same rank fails with [`Error::BadSegment`].
    pub fn new(seg: Arc<Segment>, me: usize) -> Result<ShmIface> {
        let l = *seg.layout();
        if me >= l.nranks {
            return Err(Error::NoSuchPeer {
                peer: me,
                npeers: l.nranks,
            });
        }
        let n = l.nranks;
        let ctls = seg.at(l.ctl_off) as *const RankCtl;
        let pid = std::process::id();
        let it = ShmIface {
            seg,
            me,
            n,
            pid,
            tx: (0..n).map(|_| OnceCell::new()).collect(),
            rx: (0..n).map(|_| OnceCell::new()).collect(),
            nrx: Cell::new(0),
            ctls,
            next_rx: Cell::new(0),
            said_exhausted: Cell::new(false),
            barriers: Barriers::new(),
        };
        // A second endpoint of the same rank would be a second producer of
        // its rings: refused.
        if it
            .ctl(me)
            .pid
            .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::BadSegment {
                reason: "this rank is already attached to the segment",
            });
        }
        it.seg.note_attached();
        Ok(it)
    }

    /// Makes this endpoint's sends fence before they look whether their
    /// receiver sleeps, as they did before the asymmetric barrier
    /// (`DOS_SHM_FENCE=1`; for comparisons, and for a kernel whose
    /// `membarrier` misbehaves).
    pub fn force_fences(&mut self) {
        self.barriers = self.barriers.fenced();
    }

    /// Whether this endpoint's sends skip the fence (its process registered
    /// for `membarrier`'s expedited global barrier).
    pub fn fence_free(&self) -> bool {
        self.barriers.registered()
    }

    /// Carves a ring towards `peer` from the pool and announces it in the
    /// peer's inbox (the first send to that peer).
    #[cold]
    #[inline(never)]
    fn open_ring(&self, peer: usize) -> Result<&TxRing> {
        let l = self.seg.layout();
        let Some(i) = self.seg.alloc_ring() else {
            let e = Error::RingsExhausted {
                peer,
                rings: l.pool_rings,
                ring_bytes: l.ring_bytes,
            };
            if !self.said_exhausted.replace(true) {
                tracing::warn!("shm rank {}: {e}", self.me);
            }
            return Err(e);
        };
        let ctl = self.seg.at(l.ring_ctl(i)) as *const RingCtl;
        // SAFETY: a pool ring inside the mapped segment, handed out to us alone.
        let c = unsafe { &*ctl };
        c.src.store(self.me as u32, Ordering::Relaxed);
        c.dst.store(peer as u32, Ordering::Relaxed);
        let inbox = &self.ctl(peer).inbox;
        let mut old = inbox.load(Ordering::Acquire);
        loop {
            c.next.store(old, Ordering::Relaxed);
            // Release: the ring's fields above are visible to whoever takes it.
            match inbox.compare_exchange_weak(
                old,
                i as u32 + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => old = now,
            }
        }
        // SAFETY: offsets from the validated layout; we are the ring's only producer.
        let ring = unsafe { TxRing::new(ctl, self.seg.at(l.ring_data(i)), l.ring_bytes) };
        Ok(self.tx[peer].get_or_init(|| ring))
    }

    /// Takes the rings announced in this rank's inbox into the set it polls.
    #[cold]
    #[inline(never)]
    fn take_inbox(&self) {
        let l = self.seg.layout();
        let mut next = self.ctl(self.me).inbox.swap(0, Ordering::AcqRel);
        let mut guard = l.pool_rings;
        while next != 0 && guard > 0 {
            guard -= 1;
            let i = next as usize - 1;
            if i >= l.pool_rings {
                break; // Corrupt link: stop rather than leave the segment.
            }
            // SAFETY: a pool ring inside the mapped segment; its producer wrote
            // the fields read here before its release CAS, which our swap saw.
            let c = unsafe { &*(self.seg.at(l.ring_ctl(i)) as *const RingCtl) };
            next = c.next.load(Ordering::Relaxed);
            let src = c.src.load(Ordering::Relaxed) as usize;
            let k = self.nrx.get();
            if src >= self.n || c.dst.load(Ordering::Relaxed) as usize != self.me || k >= self.n {
                continue; // Not a ring for us: ignore it (never happens unless corrupt).
            }
            // SAFETY: offsets from the validated layout; we are the ring's only consumer.
            let ring = unsafe { RxRing::new(c, self.seg.at(l.ring_data(i)), l.ring_bytes) };
            let _ = self.rx[k].set(RxEntry { src, ring });
            self.nrx.set(k + 1);
        }
    }

    #[inline]
    fn ctl(&self, r: usize) -> &RankCtl {
        debug_assert!(r < self.n);
        // SAFETY: `r < n`, inside the RankCtl array of the mapped segment.
        unsafe { &*self.ctls.add(r) }
    }

    /// Process id of local peer `r`, 0 if it has not attached yet.
    pub fn peer_pid(&self, r: usize) -> u32 {
        self.ctl(r).pid.load(Ordering::Acquire)
    }

    /// The segment this endpoint is attached to.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// Slot `i` (below [`SLOTS`]) of local rank `rank` in the segment's slot
    /// area, whose use is the caller's (see [`Slot`]).
    #[inline]
    pub fn slot(&self, i: usize, rank: usize) -> Option<&Slot> {
        if i >= SLOTS || rank >= self.n {
            return None;
        }
        let off = self.seg.layout().slot(i, rank);
        // SAFETY: in the slot area of the mapped segment, which `self` keeps alive.
        Some(unsafe { &*(self.seg.at(off) as *const Slot) })
    }

    /// Wakes those of the local ranks `ranks` that are blocked, after this
    /// rank published something (in a slot) that they may wait for.
    #[inline]
    pub fn wake<I: IntoIterator<Item = usize>>(&self, ranks: I) {
        self.barriers.light();
        for r in ranks {
            if r < self.n && r != self.me {
                let c = self.ctl(r);
                if c.sleeping.load(Ordering::Relaxed) != 0 {
                    super::progress::ring_once(&c.sleeping, &c.doorbell);
                }
            }
        }
    }

    /// Like [`Progress::wait`], but also returns without sleeping when
    /// `ready()` holds once this rank announced that it sleeps: a rank that
    /// publishes what `ready` looks for and then calls [`ShmIface::wake`]
    /// cannot be missed.
    pub fn wait_or(&self, timeout: Duration, ready: &mut dyn FnMut() -> bool) -> Result<()> {
        let c = self.ctl(self.me);
        let bell = c.doorbell.load(Ordering::Acquire);
        c.sleeping.store(1, Ordering::SeqCst);
        let timeout = if self.barriers.heavy() {
            timeout
        } else {
            timeout.min(FALLBACK_SLEEP)
        };
        if !self.any_ready() && !ready() {
            futex_wait(&c.doorbell, bell, timeout);
        }
        c.sleeping.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Announces that this rank is about to sleep somewhere else (in another
    /// transport's wait, woken through [`DoorbellBridge`]); returns false,
    /// with the announcement withdrawn, if a ring has a record or `ready()`
    /// holds, so the caller must not sleep (also when the barrier that makes
    /// sleeping safe failed, see `progress.rs`). Pair with
    /// [`ShmIface::end_sleep`].
    pub fn begin_sleep(&self, ready: &mut dyn FnMut() -> bool) -> bool {
        let c = self.ctl(self.me);
        c.sleeping.store(1, Ordering::SeqCst);
        if !self.barriers.heavy() || self.any_ready() || ready() {
            c.sleeping.store(0, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Withdraws the announcement of [`ShmIface::begin_sleep`].
    pub fn end_sleep(&self) {
        self.ctl(self.me).sleeping.store(0, Ordering::Relaxed);
    }

    /// A thread that turns rings of this rank's doorbell into calls of
    /// `wake` (for a rank that sleeps in another transport's wait, such as
    /// tcp's epoll, and must still hear its local peers). Stops when dropped.
    pub fn doorbell_bridge(&self, wake: impl Fn() + Send + 'static) -> Result<DoorbellBridge> {
        DoorbellBridge::start(self.seg.clone(), self.seg.layout().rank_ctl(self.me), wake)
    }

    /// A handle that rings this rank's own doorbell from any thread: it ends
    /// a sleep in [`ShmIface::wait_or`] (whose `ready` the waker's caller
    /// made true first) or wakes the [`DoorbellBridge`].
    pub fn waker(&self) -> ShmWaker {
        ShmWaker {
            seg: self.seg.clone(),
            ctl_off: self.seg.layout().rank_ctl(self.me),
        }
    }

    /// Largest active message this segment's rings accept.
    pub fn max_am(&self) -> usize {
        TxRing::max_payload(self.seg.layout().ring_bytes)
    }

    /// True if any ring has a record ready, or a new ring was announced.
    #[inline]
    fn any_ready(&self) -> bool {
        self.ctl(self.me).inbox.load(Ordering::Acquire) != 0
            || self.rx[..self.nrx.get()]
                .iter()
                .any(|e| e.get().is_some_and(|e| e.ring.ready()))
    }

    #[cold]
    fn bad_peer(&self, peer: usize) -> Error {
        Error::NoSuchPeer {
            peer,
            npeers: self.n,
        }
    }
}

impl Iface for ShmIface {
    fn name(&self) -> &'static str {
        "shm"
    }

    fn caps(&self) -> Caps {
        Caps {
            am: true,
            max_am: self.max_am(),
            max_inline: self.max_am(),
            rma: true,
            put_zc: true,
            atomics: false,
            inter_node: false,
        }
    }

    fn index(&self) -> usize {
        self.me
    }

    fn npeers(&self) -> usize {
        self.n
    }
}

impl ActiveMessages for ShmIface {
    #[inline]
    fn am_send(&self, peer: usize, id: AmId, hdr: &[u8], payload: &[u8]) -> Result<()> {
        let Some(cell) = self.tx.get(peer) else {
            return Err(self.bad_peer(peer));
        };
        let len = hdr.len() + payload.len();
        if len > self.max_am() || id == super::wire::PAD_ID {
            return Err(too_large(len, self.max_am()));
        }
        let ring = match cell.get() {
            Some(r) => r,
            None => self.open_ring(peer)?,
        };
        match ring.push(id, hdr, payload) {
            Push::Done => {
                let c = self.ctl(peer);
                notify(self.barriers, &c.sleeping, &c.doorbell);
                Ok(())
            }
            Push::Full => Err(Error::Busy { peer }),
        }
    }
}

/// Rings one rank's doorbell; see [`ShmIface::waker`].
#[derive(Debug, Clone)]
pub struct ShmWaker {
    seg: Arc<super::mem::Segment>,
    ctl_off: usize,
}

impl ShmWaker {
    /// Rings the doorbell (a futex wake: a few microseconds when someone sleeps).
    pub fn wake(&self) {
        // SAFETY: the RankCtl of the rank, inside the segment `seg` keeps mapped.
        let c = unsafe { &*(self.seg.at(self.ctl_off) as *const RankCtl) };
        super::progress::ring(&c.doorbell);
    }
}

/// The thread behind [`ShmIface::doorbell_bridge`].
#[derive(Debug)]
pub struct DoorbellBridge {
    stop: Arc<std::sync::atomic::AtomicBool>,
    seg: Arc<super::mem::Segment>,
    ctl_off: usize,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DoorbellBridge {
    fn start(
        seg: Arc<super::mem::Segment>,
        ctl_off: usize,
        wake: impl Fn() + Send + 'static,
    ) -> Result<DoorbellBridge> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, g) = (stop.clone(), seg.clone());
        // Read before the thread starts: a ring from now on is a change it sees.
        // SAFETY: the RankCtl of this rank, inside the mapped segment.
        let mut seen = unsafe { &*(seg.at(ctl_off) as *const RankCtl) }
            .doorbell
            .load(Ordering::Acquire);
        let thread = std::thread::Builder::new()
            .name("dos-shm-bell".into())
            .spawn(move || {
                // SAFETY: the RankCtl of this rank, inside the segment `g` keeps mapped.
                let c = unsafe { &*(g.at(ctl_off) as *const RankCtl) };
                while !s.load(Ordering::Acquire) {
                    futex_wait(&c.doorbell, seen, Duration::from_secs(1));
                    let now = c.doorbell.load(Ordering::Acquire);
                    if now != seen {
                        seen = now;
                        wake();
                    }
                }
            })
            .map_err(|e| Error::Sys {
                op: "spawn the doorbell thread",
                source: e,
            })?;
        Ok(DoorbellBridge {
            stop,
            seg,
            ctl_off,
            thread: Some(thread),
        })
    }
}

impl Drop for DoorbellBridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // SAFETY: as in the thread.
        let c = unsafe { &*(self.seg.at(self.ctl_off) as *const RankCtl) };
        c.doorbell.fetch_add(1, Ordering::Release);
        super::progress::futex_wake(&c.doorbell);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cold]
fn too_large(len: usize, max: usize) -> Error {
    Error::TooLarge { len, max }
}

impl Progress for ShmIface {
    #[inline]
    fn progress<F: FnMut(Event<'_>)>(&self, mut f: F) -> usize {
        if self.ctl(self.me).inbox.load(Ordering::Relaxed) != 0 {
            self.take_inbox();
        }
        let cnt = self.nrx.get();
        let start = self.next_rx.get();
        let mut total = 0;
        for k in 0..cnt {
            let i = if start + k >= cnt {
                start + k - cnt
            } else {
                start + k
            };
            if let Some(e) = self.rx[i].get() {
                let src = e.src;
                total += e.ring.pop(BATCH, |id, data| f(Event::Am { src, id, data }));
            }
        }
        if total > 0 {
            self.next_rx
                .set(if start + 1 >= cnt { 0 } else { start + 1 });
        }
        total
    }

    fn wait(&self, timeout: Duration) -> Result<()> {
        self.wait_or(timeout, &mut || false)
    }
}

impl Rma for ShmIface {
    fn mem_register(&self, ptr: *const u8, len: usize) -> Result<MemRegion> {
        let key = CmaKey {
            pid: self.pid,
            addr: ptr as u64,
            len: len as u64,
        };
        Ok(MemRegion {
            addr: ptr as usize,
            len,
            rkey: key.pack(),
        })
    }

    unsafe fn get(
        &self,
        peer: usize,
        dst: *mut u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
    ) -> Result<()> {
        let k = self.cma_target(peer, rkey, offset, len)?;
        // SAFETY: the caller guarantees `dst` for `len` bytes; the remote range
        // is inside the registered region (checked).
        unsafe { cma_copy(Dir::Read, k.pid, dst, k.addr + offset as u64, len) }
    }

    unsafe fn put(
        &self,
        peer: usize,
        src: *const u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
    ) -> Result<()> {
        let k = self.cma_target(peer, rkey, offset, len)?;
        // SAFETY: as in `get`; the kernel only reads from `src` for a write.
        unsafe {
            cma_copy(
                Dir::Write,
                k.pid,
                src as *mut u8,
                k.addr + offset as u64,
                len,
            )
        }
    }
}

impl ShmIface {
    fn cma_target(
        &self,
        peer: usize,
        rkey: &RemoteKey,
        offset: usize,
        len: usize,
    ) -> Result<CmaKey> {
        if peer >= self.n {
            return Err(self.bad_peer(peer));
        }
        let k = CmaKey::unpack(rkey)?;
        if k.pid != self.peer_pid(peer) {
            return Err(Error::Malformed {
                what: "shm remote key",
                reason: "key belongs to another process than the peer",
            });
        }
        check_bounds(offset, len, k.len as usize)?;
        Ok(k)
    }
}

#[cfg(test)]
mod bridge_tests {
    use super::*;
    use crate::shm::Segment;

    #[test]
    fn a_rank_sleeping_elsewhere_is_woken_through_its_bridge() {
        let seg = Arc::new(Segment::create(2, 1 << 16).unwrap());
        let a = ShmIface::new(seg.clone(), 0).unwrap();
        let b = ShmIface::new(seg, 1).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let bridge = b.doorbell_bridge(move || {
            let _ = tx.send(());
        });
        let _bridge = bridge.unwrap();
        // Nothing ready: b may sleep; a's send rings b's bell, and the bridge
        // turns that into a wake-up.
        assert!(b.begin_sleep(&mut || false));
        a.am_send(1, 1, b"x", b"").unwrap();
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the bridge woke the sleeper");
        b.end_sleep();
        // With a record waiting (or `ready`), b must not sleep.
        assert!(!b.begin_sleep(&mut || false));
        let mut n = 0;
        b.progress(|_| n += 1);
        assert_eq!(n, 1);
        assert!(!b.begin_sleep(&mut || true));
        // A rank that is not asleep is not rung at all (no needless wake-ups).
        a.am_send(1, 1, b"y", b"").unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    }

    /// The bell of a sleeping rank rings once per sleep, not once per
    /// message: a window of small messages to a rank that went to sleep (or
    /// was descheduled just after saying so) used to make a `futex_wake`
    /// system call for each of them.
    #[test]
    fn a_sleeper_is_rung_once_for_many_messages() {
        let seg = Arc::new(Segment::create(3, 1 << 16).unwrap());
        let a = ShmIface::new(seg.clone(), 0).unwrap();
        let b = ShmIface::new(seg.clone(), 1).unwrap();
        let c = ShmIface::new(seg, 2).unwrap();
        let bell = |it: &ShmIface| it.ctl(1).doorbell.load(Ordering::Acquire);
        let before = bell(&a);
        assert!(b.begin_sleep(&mut || false));
        for i in 0..64u8 {
            a.am_send(1, 1, &[i], b"").unwrap();
            c.am_send(1, 1, &[i], b"").unwrap();
        }
        // Node collectives wake through the same bell.
        c.wake([1]);
        assert_eq!(
            bell(&a).wrapping_sub(before),
            1,
            "one ring for 128 messages"
        );
        b.end_sleep();
        let mut n = 0;
        while b.progress(|_| n += 1) > 0 {}
        assert_eq!(n, 128);
        // The next sleep is rung again.
        assert!(b.begin_sleep(&mut || false));
        a.am_send(1, 1, b"z", b"").unwrap();
        assert_eq!(bell(&a).wrapping_sub(before), 2);
        b.end_sleep();
    }

    /// No wake-up is lost while senders skip their fence (or make it, with
    /// `force_fences`): a receiver that sleeps with a long timeout between
    /// messages still gets every one of them quickly. A lost wake-up shows
    /// as a sleep of the whole timeout (10 s).
    #[test]
    fn no_wake_up_is_lost_with_or_without_fences() {
        for fenced in [false, true] {
            let seg = Arc::new(Segment::create(2, 1 << 16).unwrap());
            let mut a = ShmIface::new(seg.clone(), 0).unwrap();
            if fenced {
                a.force_fences();
            }
            let b = ShmIface::new(seg, 1).unwrap();
            const N: usize = 2000;
            let t0 = std::time::Instant::now();
            let sender = std::thread::spawn(move || {
                for i in 0..N {
                    // Spread the sends so that the receiver often sleeps in between.
                    if i % 3 == 0 {
                        std::thread::yield_now();
                    }
                    while a.am_send(1, 1, &(i as u32).to_le_bytes(), b"").is_err() {
                        std::thread::yield_now();
                    }
                }
                a
            });
            let mut got = 0;
            let mut slowest = Duration::ZERO;
            while got < N {
                if b.progress(|_| got += 1) == 0 {
                    let t = std::time::Instant::now();
                    b.wait_or(Duration::from_secs(10), &mut || false).unwrap();
                    slowest = slowest.max(t.elapsed());
                }
            }
            let _a = sender.join().unwrap();
            assert!(
                slowest < Duration::from_secs(5),
                "a sleep lasted {slowest:?} (fenced: {fenced}, total {:?})",
                t0.elapsed()
            );
        }
    }
}

#[cfg(test)]
mod pool_tests {
    use super::*;
    use crate::shm::wire::{RingCtl, MIN_RING_BYTES};
    use crate::shm::Segment;
    use proptest::prelude::*;

    /// Every message `progress` delivers to `it`, as (src, id, bytes).
    fn drain(it: &ShmIface) -> Vec<(usize, u8, Vec<u8>)> {
        let mut got = Vec::new();
        while it.progress(|ev| {
            if let Event::Am { src, id, data } = ev {
                got.push((src, id, data.to_vec()));
            }
        }) > 0
        {}
        got
    }

    /// (src, dst) of every ring handed out so far.
    fn pairs(seg: &Segment) -> Vec<(u32, u32)> {
        let l = seg.layout();
        (0..seg.rings_used())
            .map(|i| {
                // SAFETY: a handed-out pool ring inside the mapped segment.
                let c = unsafe { &*(seg.at(l.ring_ctl(i)) as *const RingCtl) };
                (c.src.load(Ordering::Acquire), c.dst.load(Ordering::Acquire))
            })
            .collect()
    }

    /// `n` ranks, one thread each, send `rounds` messages to each of
    /// `targets(me)` at once (so first sends race for the allocator and for
    /// the same inboxes); every message arrives once, from the right rank, in
    /// order, and the rings handed out are exactly one per pair that talked.
    fn all_send_at_once(n: usize, rounds: usize, targets: fn(usize, usize) -> Vec<usize>) {
        let seg = Arc::new(Segment::create(n, MIN_RING_BYTES).unwrap());
        let start = Arc::new(std::sync::Barrier::new(n));
        let received: Vec<Vec<(usize, u8, Vec<u8>)>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..n)
                .map(|me| {
                    let (seg, start) = (seg.clone(), start.clone());
                    s.spawn(move || {
                        let it = ShmIface::new(seg, me).unwrap();
                        let to = targets(me, n);
                        let expect: usize = (0..n).filter(|&p| targets(p, n).contains(&me)).count();
                        start.wait();
                        let mut got = Vec::new();
                        for k in 0..rounds {
                            for &p in &to {
                                let msg = [me as u8, (me >> 8) as u8, k as u8];
                                loop {
                                    match it.am_send(p, 1, &msg, &[]) {
                                        Ok(()) => break,
                                        Err(Error::Busy { .. }) => got.extend(drain(&it)),
                                        Err(e) => panic!("{e}"),
                                    }
                                }
                            }
                        }
                        let deadline = std::time::Instant::now() + Duration::from_secs(30);
                        while got.len() < expect * rounds {
                            got.extend(drain(&it));
                            assert!(std::time::Instant::now() < deadline, "rank {me} stalled");
                            std::thread::yield_now();
                        }
                        start.wait(); // Nobody drops its iface while others still poll.
                        got
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (me, got) in received.iter().enumerate() {
            for src in 0..n {
                let from: Vec<u8> = got
                    .iter()
                    .filter(|m| m.0 == src)
                    .map(|m| {
                        assert_eq!(
                            m.2[..2],
                            [src as u8, (src >> 8) as u8],
                            "record of another rank"
                        );
                        m.2[2]
                    })
                    .collect();
                let want: Vec<u8> = if targets(src, n).contains(&me) {
                    (0..rounds).map(|k| k as u8).collect()
                } else {
                    Vec::new()
                };
                assert_eq!(from, want, "rank {me} from rank {src}");
            }
        }
        let mut p = pairs(&seg);
        let talked: usize = (0..n).map(|s| targets(s, n).len()).sum();
        assert_eq!(p.len(), talked, "one ring per pair that talked");
        p.sort_unstable();
        p.dedup();
        assert_eq!(p.len(), talked, "no pair got two rings");
        // Disjoint by construction of the layout: distinct indices are
        // distinct, non-overlapping ranges.
        let l = seg.layout();
        for i in 1..seg.rings_used() {
            assert!(l.ring_data(i - 1) + l.ring_bytes <= l.ring_data(i));
            assert!(l.ring_ctl(i - 1) + std::mem::size_of::<RingCtl>() <= l.ring_ctl(i));
        }
    }

    fn everyone(_: usize, n: usize) -> Vec<usize> {
        (0..n).collect()
    }

    fn to_zero(_: usize, _: usize) -> Vec<usize> {
        vec![0]
    }

    #[test]
    fn concurrent_first_sends_get_disjoint_rings() {
        all_send_at_once(8, 40, everyone);
        all_send_at_once(16, 3, to_zero);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
        #[test]
        fn many_pairs_allocating_concurrently_get_disjoint_rings(n in 2usize..10, rounds in 1usize..300) {
            all_send_at_once(n, rounds, everyone);
        }
    }

    #[test]
    fn a_rank_attaches_once() {
        let seg = Arc::new(Segment::create(2, MIN_RING_BYTES).unwrap());
        let _a = ShmIface::new(seg.clone(), 0).unwrap();
        let e = ShmIface::new(seg, 0).unwrap_err();
        assert!(matches!(e, Error::BadSegment { .. }), "{e}");
    }

    #[test]
    fn an_exhausted_pool_is_a_typed_error_and_corrupts_nothing() {
        let seg = Arc::new(Segment::create_with_pool(3, MIN_RING_BYTES, 2).unwrap());
        let r: Vec<ShmIface> = (0..3)
            .map(|i| ShmIface::new(seg.clone(), i).unwrap())
            .collect();
        r[0].am_send(1, 1, b"a", b"").unwrap();
        r[2].am_send(1, 1, b"b", b"").unwrap();
        for _ in 0..3 {
            let e = r[1].am_send(0, 1, b"c", b"").unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::RingsExhausted {
                        peer: 0,
                        rings: 2,
                        ring_bytes: MIN_RING_BYTES
                    }
                ),
                "{e}"
            );
            assert!(
                e.to_string()
                    .contains("no shared-memory ring left for peer 0"),
                "{e}"
            );
        }
        assert_eq!(seg.rings_used(), 2);
        // The pairs that have rings go on working, in order, untouched.
        let mut got = Vec::new();
        for k in 0..500u32 {
            r[0].am_send(1, 2, &k.to_le_bytes(), b"").unwrap();
            if k % 7 == 0 {
                r[2].am_send(1, 3, &k.to_le_bytes(), b"").unwrap();
            }
            if k % 50 == 49 {
                got.extend(drain(&r[1]));
            }
        }
        assert!(drain(&r[0]).is_empty(), "nothing reached rank 0");
        got.extend(drain(&r[1]));
        let from = |src: usize, id: u8| -> Vec<Vec<u8>> {
            got.iter()
                .filter(|m| m.0 == src && m.1 == id)
                .map(|m| m.2.clone())
                .collect()
        };
        assert_eq!(from(0, 1), vec![b"a".to_vec()]);
        assert_eq!(from(2, 1), vec![b"b".to_vec()]);
        let seq = |it: &mut dyn Iterator<Item = u32>| -> Vec<Vec<u8>> {
            it.map(|k| k.to_le_bytes().to_vec()).collect()
        };
        assert_eq!(from(0, 2), seq(&mut (0..500)));
        assert_eq!(from(2, 3), seq(&mut (0..500).filter(|k| k % 7 == 0)));
        assert_eq!(got.len(), 2 + 500 + 72);
    }

    /// A ring that has carried a page is mapped whole at once (no page fault
    /// per page on its first lap, ep.rs `populate`); one that carried a
    /// message or two is not, so rings a job barely uses cost no memory.
    #[test]
    fn a_ring_in_use_is_populated_whole_and_a_quiet_one_is_not() {
        let ring = 128 << 10;
        let seg = Arc::new(Segment::create(2, ring).unwrap());
        let a = ShmIface::new(seg.clone(), 0).unwrap();
        let b = ShmIface::new(seg.clone(), 1).unwrap();
        let r0 = seg.resident_bytes().unwrap();
        for k in 0..4u8 {
            a.am_send(1, 1, &[k; 40], b"").unwrap();
        }
        assert_eq!(drain(&b).len(), 4);
        let quiet = seg.resident_bytes().unwrap() - r0;
        assert!(
            quiet < (ring / 4) as u64,
            "a quiet ring holds {quiet} bytes"
        );
        // 64-byte records: 100 of them are more than a page.
        for k in 0..100u8 {
            a.am_send(1, 1, &[k; 40], b"").unwrap();
            let got = drain(&b);
            assert_eq!(got, vec![(0, 1, vec![k; 40])]);
        }
        let used = seg.resident_bytes().unwrap() - r0;
        assert!(used >= ring as u64, "a ring in use holds {used} bytes");
    }

    /// A node of 1024 ranks (as endpoints driven by one thread): a ring and an
    /// all-to-one round work, with one ring per pair that talked, and the
    /// segment holds a few MiB, not 1024^2 rings (128 GiB).
    #[test]
    fn a_node_of_1024_ranks_uses_memory_for_the_pairs_that_talk() {
        let n = 1024;
        let ring = 128 << 10;
        let seg = Arc::new(Segment::create(n, ring).unwrap());
        assert!(
            seg.layout().total < (129 << 30),
            "virtual size: 1024^2 rings of 128 KiB and a little"
        );
        let r: Vec<ShmIface> = (0..n)
            .map(|i| ShmIface::new(seg.clone(), i).unwrap())
            .collect();
        for (i, it) in r.iter().enumerate() {
            it.am_send((i + 1) % n, 1, &(i as u32).to_le_bytes(), b"")
                .unwrap();
        }
        for (i, it) in r.iter().enumerate() {
            let got = drain(it);
            let prev = (i + n - 1) % n;
            assert_eq!(got, vec![(prev, 1, (prev as u32).to_le_bytes().to_vec())]);
        }
        for it in &r[1..] {
            it.am_send(0, 2, &[7; 100], b"").unwrap();
        }
        let got = drain(&r[0]);
        assert_eq!(got.len(), n - 1);
        let mut srcs: Vec<usize> = got.iter().map(|m| m.0).collect();
        srcs.sort_unstable();
        assert_eq!(srcs, (1..n).collect::<Vec<_>>());
        assert_eq!(seg.rings_used(), 2 * n - 2);
        let resident = seg.resident_bytes().unwrap();
        eprintln!(
            "1024 ranks: {} rings used, {resident} bytes resident",
            seg.rings_used()
        );
        assert!(resident < 32 << 20, "segment holds {resident} bytes");
    }
}
