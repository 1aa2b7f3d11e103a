//! `VerbsIface`: one endpoint's RC queue pairs to its peers.
//!
//! Buffers: one anonymous mapping, registered once for local access, holds
//! `send_slots` send buffers, one staging buffer for synchronous get/put of
//! unregistered memory, and per connection `recv_depth + reserve` receive
//! buffers, each `max_am` bytes (rounded up to 64).
//!
//! Flow control: a sender may have `recv_depth` active messages unconsumed
//! at a peer (its credits). The receiver reposts a buffer after delivering
//! its message and returns the credit in the immediate data of its next
//! message to that peer, or, once half of them are due, in a zero-length
//! credit-only message; those land in the `reserve` buffers, which the
//! credits do not cover. So a peer never meets a missing receive in normal
//! operation (an RNR retry, unbounded, remains the safety net).
//!
//! Work request ids: kind (4 bits) | peer (28 bits) | slot, buffer or entry (32 bits).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdma_mummy_sys as sys;

use super::connect::Remote;
use super::ffi::{
    empty_wc, Arena, Dev, Mr, Op, Qp, ACCESS_LOCAL, ACCESS_REMOTE, ACCESS_REMOTE_READ,
};
use super::progress::{Poller, Waker};
use super::wire::{Imm, VerbsKey};
use crate::{
    ActiveMessages, AmId, Caps, Error, Event, Iface, MemRegion, Progress, RemoteKey, Result, Rma,
    Sent,
};

/// Default largest active message (the size of a receive buffer).
pub const DEFAULT_MAX_AM: usize = 64 << 10;
/// Default time [`Progress::wait`] polls before blocking.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(10);
/// Default time dropping an endpoint may wait for its sends to complete.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(2);

/// Bytes of messages to itself queued before `am_send` says `Busy`.
const MAX_SELF_QUEUED: usize = 4 << 20;
/// Completions taken per poll.
const BATCH: usize = 32;
/// Batches of receive completions handled per `progress` (keeps a flood from starving sends).
const RECV_ROUNDS: usize = 8;
/// After this long, a synchronous get/put gives up on its peer (moves the
/// queue pair to the error state and waits for the flushed completion).
const SYNC_DEADLINE: Duration = Duration::from_secs(60);

/// The numbers of an endpoint, fixed at `prepare`.
#[derive(Debug, Clone)]
pub(super) struct Cfg {
    pub(super) index: usize,
    pub(super) npeers: usize,
    pub(super) max_am: usize,
    /// Distance between buffers (`max_am` rounded up to 64).
    pub(super) stride: usize,
    /// Receive buffers per connection that credits cover.
    pub(super) recv_depth: u32,
    /// Further receive buffers per connection, for credit-only messages: at
    /// most `2 * ceil(recv_depth / threshold) + 1` of those can be unconsumed
    /// (the peer sends one per `threshold` messages it consumed, and consumes
    /// at most two credit windows between two of its `progress` calls).
    pub(super) reserve: u32,
    /// Consumed messages after which a credit-only message goes out.
    pub(super) threshold: u32,
    /// Send work requests in flight per connection.
    pub(super) send_wr: u32,
    pub(super) send_slots: u32,
    /// Inline bytes every queue pair allows.
    pub(super) max_inline: u32,
    /// Largest single RDMA transfer of the port.
    pub(super) max_msg: usize,
    pub(super) spin: Duration,
    pub(super) linger: Duration,
}

/// What a work request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Inline data: nothing to release.
    Inline = 1,
    /// Sent from send slot `n`.
    Slot = 2,
    /// A credit-only message.
    Credit = 3,
    /// Zero-copy send or put: entry `n` of the loan table.
    Zc = 4,
    /// A synchronous get or put, sequence number `n`.
    Sync = 5,
    /// A receive into buffer `n`.
    Recv = 6,
}

fn wr_id(kind: Kind, peer: usize, n: u32) -> u64 {
    (kind as u64) << 60 | ((peer as u64) & 0x0FFF_FFFF) << 32 | u64::from(n)
}

fn wr_decode(id: u64) -> (Option<Kind>, usize, u32) {
    let kind = match id >> 60 {
        1 => Some(Kind::Inline),
        2 => Some(Kind::Slot),
        3 => Some(Kind::Credit),
        4 => Some(Kind::Zc),
        5 => Some(Kind::Sync),
        6 => Some(Kind::Recv),
        _ => None,
    };
    (kind, ((id >> 32) & 0x0FFF_FFFF) as usize, id as u32)
}

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    /// Failed: its queue pair is in the error state; waiting for its
    /// outstanding sends to be flushed before saying `Disconnected`.
    Failing,
    /// `Disconnected` was (or is about to be) delivered.
    Down,
}

/// One peer: its queue pair and counters.
struct Peer {
    qp: Option<Qp>,
    state: Cell<State>,
    /// Active messages we may still send before the peer returns credits.
    credits: Cell<u32>,
    /// The peer's receive depth: credits never exceed it.
    credit_max: u32,
    /// Messages of the peer we consumed and did not yet return credit for.
    unreported: Cell<u32>,
    /// In the `credit_due` list.
    credit_queued: Cell<bool>,
    /// A credit-only message is in flight.
    credit_inflight: Cell<bool>,
    /// Send work requests posted and not completed.
    outstanding: Cell<u32>,
    /// Index of the first of its receive buffers.
    rx_base: u32,
}

/// A user registration.
struct Region {
    len: usize,
    mr: Mr,
    /// Registered for writing (else read-only memory: peers may only read it).
    writable: bool,
    /// Zero-copy sends and puts reading from it, not yet completed.
    inflight: u32,
}

/// A zero-copy send or put in flight.
#[derive(Debug, Clone, Copy)]
struct Loan {
    peer: usize,
    token: u64,
    region: (usize, u32),
    slot: Option<u32>,
}

/// The registered buffers (the registration is dropped before the mapping).
struct Buffers {
    mr: Mr,
    arena: Arena,
}

/// An event waiting for the next `progress`.
#[derive(Debug, Clone, Copy)]
enum Deferred {
    SendDone { peer: usize, token: u64 },
    Disconnected { peer: usize },
}

/// One endpoint of a job over RDMA verbs: an RC queue pair to every peer
/// that had an address, and a local queue for messages to itself.
///
/// Made by [`super::VerbsBuilder`] → [`super::Prepared::connect`]. Not
/// `Sync`: one thread drives it; [`VerbsIface::waker`] wakes it from others.
/// Dropping it waits (up to the builder's `linger`) for its sends to
/// complete, then destroys its queue pairs; its peers notice when they next
/// send to it (their device gives up after its retries and they see
/// [`Event::Disconnected`]).
pub struct VerbsIface {
    cfg: Cfg,
    /// Indexed by peer; no queue pair for itself and peers not reached over verbs.
    /// (Declared first: queue pairs are destroyed before the buffers they use.)
    peers: Box<[Peer]>,
    bufs: Buffers,
    free_slots: RefCell<Vec<u32>>,
    regions: RefCell<BTreeMap<(usize, u32), Region>>,
    loans: RefCell<Vec<Option<Loan>>>,
    free_loans: RefCell<Vec<u32>>,
    deferred: RefCell<VecDeque<Deferred>>,
    /// Receive completions taken by `wait`, delivered by the next `progress`.
    stash: RefCell<VecDeque<sys::ibv_wc>>,
    self_q: RefCell<VecDeque<(AmId, Vec<u8>)>>,
    self_bytes: Cell<usize>,
    /// Peers that are owed a credit-only message.
    credit_due: RefCell<Vec<usize>>,
    /// Send work requests in flight on all queue pairs (bounded by the send CQ).
    sends: Cell<u32>,
    sync_seq: Cell<u32>,
    /// Status of the synchronous operation that completed last: (sequence, status).
    sync_done: Cell<Option<(u32, u32)>>,
    /// Set during `progress` (a re-entrant call does nothing).
    in_progress: Cell<bool>,
    poll_failed: Cell<bool>,
    poller: Poller,
    dev: Arc<Dev>,
}

impl std::fmt::Debug for VerbsIface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerbsIface")
            .field("device", &self.dev.ctx.name())
            .field("index", &self.cfg.index)
            .field("npeers", &self.cfg.npeers)
            .field("max_am", &self.cfg.max_am)
            .field(
                "connected",
                &self.peers.iter().filter(|p| p.qp.is_some()).count(),
            )
            .finish_non_exhaustive()
    }
}

/// Clears `in_progress` when `progress` returns (or unwinds).
struct ProgressGuard<'a>(&'a Cell<bool>);

impl Drop for ProgressGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl VerbsIface {
    /// The capabilities of an endpoint whose largest active message is
    /// `max_am` bytes and whose queue pairs take `max_inline` bytes inline
    /// (what `caps()` reports, without making one).
    pub fn caps_with(max_am: usize, max_inline: usize) -> Caps {
        Caps {
            am: true,
            max_am,
            max_inline: max_inline.min(max_am),
            rma: true,
            put_zc: true,
            atomics: false,
            inter_node: true,
        }
    }

    /// Builds the endpoint from queue pairs in INIT (`qps[p]` for peer `p`,
    /// present exactly where `remotes[p]` is) and posts every receive.
    pub(super) fn assemble(
        cfg: Cfg,
        dev: Arc<Dev>,
        qps: Vec<Option<Qp>>,
        remotes: &[Option<Remote>],
    ) -> Result<VerbsIface> {
        let per_peer = cfg.recv_depth + cfg.reserve;
        let mut next_rx = 0u32;
        let mut peers = Vec::with_capacity(qps.len());
        for (qp, r) in qps.into_iter().zip(remotes) {
            let rx_base = next_rx;
            if qp.is_some() {
                next_rx = next_rx.checked_add(per_peer).ok_or(Error::Unsupported {
                    backend: "verbs",
                    op: "this many receive buffers",
                })?;
            }
            let credit_max = r.as_ref().map_or(0, |r| r.recv_depth);
            peers.push(Peer {
                qp,
                state: Cell::new(State::Up),
                credits: Cell::new(credit_max),
                credit_max,
                unreported: Cell::new(0),
                credit_queued: Cell::new(false),
                credit_inflight: Cell::new(false),
                outstanding: Cell::new(0),
                rx_base,
            });
        }
        let nbufs = cfg.send_slots as usize + 1 + next_rx as usize;
        let bytes = nbufs.checked_mul(cfg.stride).ok_or(Error::Unsupported {
            backend: "verbs",
            op: "buffers this large",
        })?;
        let arena = Arena::new(bytes)?;
        // SAFETY: the mapping lives in `Buffers` next to the registration,
        // which is dropped first.
        let mr = unsafe { Mr::register(&dev, arena.ptr(), arena.len(), ACCESS_LOCAL)? };
        let poller = Poller::new(dev.channel.fd())?;
        let iface = VerbsIface {
            free_slots: RefCell::new((0..cfg.send_slots).rev().collect()),
            peers: peers.into(),
            bufs: Buffers { mr, arena },
            regions: RefCell::new(BTreeMap::new()),
            loans: RefCell::new(Vec::new()),
            free_loans: RefCell::new(Vec::new()),
            deferred: RefCell::new(VecDeque::new()),
            stash: RefCell::new(VecDeque::new()),
            self_q: RefCell::new(VecDeque::new()),
            self_bytes: Cell::new(0),
            credit_due: RefCell::new(Vec::new()),
            sends: Cell::new(0),
            sync_seq: Cell::new(0),
            sync_done: Cell::new(None),
            in_progress: Cell::new(false),
            poll_failed: Cell::new(false),
            poller,
            dev,
            cfg,
        };
        for (p, peer) in iface.peers.iter().enumerate() {
            if let Some(qp) = &peer.qp {
                for k in 0..per_peer {
                    iface.post_recv(p, qp, peer.rx_base + k)?;
                }
            }
        }
        Ok(iface)
    }

    /// The queue pair to `peer`, if connected.
    pub(super) fn qp(&self, peer: usize) -> Option<&Qp> {
        self.peers.get(peer).and_then(|p| p.qp.as_ref())
    }

    /// The RDMA device's name.
    pub fn device_name(&self) -> &str {
        self.dev.ctx.name()
    }

    /// True if messages to `peer` go over a live connection (or `peer` is this endpoint).
    pub fn reaches(&self, peer: usize) -> bool {
        peer == self.cfg.index
            || matches!(self.peers.get(peer), Some(p) if p.qp.is_some() && p.state.get() == State::Up)
    }

    /// A handle that makes a blocked [`Progress::wait`] return, usable from any thread.
    pub fn waker(&self) -> Waker {
        self.poller.waker()
    }

    /// A descriptor that polls readable when a blocked [`Progress::wait`]
    /// would wake: after a `wait` armed the completion queues, or a wake-up
    /// (for an event loop that waits on several sources). Messages to itself
    /// do not make it readable.
    pub fn poll_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the epoll descriptor stays open as long as `self`.
        unsafe { BorrowedFd::borrow_raw(self.poller.fd()) }
    }

    fn buf(&self, n: u32) -> *mut u8 {
        // SAFETY: callers pass indices below the number of buffers mapped
        // (slots, the staging buffer, receive buffers), so the offset stays
        // inside the mapping.
        unsafe { self.bufs.arena.ptr().add(n as usize * self.cfg.stride) }
    }

    fn slot_buf(&self, slot: u32) -> *mut u8 {
        self.buf(slot)
    }

    fn staging(&self) -> *mut u8 {
        self.buf(self.cfg.send_slots)
    }

    fn rx_buf(&self, n: u32) -> *mut u8 {
        self.buf(self.cfg.send_slots + 1 + n)
    }

    fn post_recv(&self, peer: usize, qp: &Qp, n: u32) -> Result<()> {
        // SAFETY: receive buffer `n` lies in the registered mapping (lkey of
        // `bufs.mr`) and is not touched until its completion is handled.
        unsafe {
            qp.post_recv(
                wr_id(Kind::Recv, peer, n),
                self.rx_buf(n),
                self.cfg.stride as u32,
                self.bufs.mr.lkey(),
            )
        }
    }

    #[cold]
    fn bad_peer(&self, peer: usize) -> Error {
        Error::NoSuchPeer {
            peer,
            npeers: self.cfg.npeers,
        }
    }

    /// The connection to `peer`, if it is up.
    fn up(&self, peer: usize) -> Result<(&Peer, &Qp)> {
        match self.peers.get(peer) {
            None => Err(self.bad_peer(peer)),
            Some(p) => match &p.qp {
                Some(qp) if p.state.get() == State::Up => Ok((p, qp)),
                _ => Err(Error::PeerUnreachable { peer }),
            },
        }
    }

    /// Room for one more send work request, keeping `keep` entries free on
    /// the queue pair and in the send CQ.
    fn room(&self, p: &Peer, keep: u32) -> bool {
        p.outstanding.get() + keep < self.cfg.send_wr
            && self.sends.get() + keep < self.dev.send_cq.size
    }

    /// Posts a send work request to `peer`; a failure breaks the connection.
    ///
    /// # Safety
    /// As [`Qp::post_send`].
    /// Posts the first `len` bytes of send slot `s` with `op`; on failure
    /// the slot goes back on the free list, on success its completion does
    /// that.
    ///
    /// # Safety
    /// Slot `s` was taken from the free list and holds the message.
    unsafe fn post_slot(
        &self,
        peer: usize,
        pq: (&Peer, &Qp),
        s: u32,
        len: usize,
        op: Op,
    ) -> Result<()> {
        let mut sges = [sys::ibv_sge {
            addr: self.slot_buf(s) as u64,
            length: len as u32,
            lkey: self.bufs.mr.lkey(),
        }];
        // SAFETY: the slot is registered and stays ours until the
        // completion puts it back on the free list.
        let r = unsafe { self.post(peer, pq, wr_id(Kind::Slot, peer, s), op, &mut sges, false) };
        if r.is_err() {
            self.free_slots.borrow_mut().push(s);
        }
        r
    }

    unsafe fn post(
        &self,
        peer: usize,
        (p, qp): (&Peer, &Qp),
        id: u64,
        op: Op,
        sges: &mut [sys::ibv_sge],
        inline: bool,
    ) -> Result<()> {
        // SAFETY: forwarded with the caller's guarantees.
        match unsafe { qp.post_send(id, op, sges, inline) } {
            Ok(()) => {
                p.outstanding.set(p.outstanding.get() + 1);
                self.sends.set(self.sends.get() + 1);
                Ok(())
            }
            Err(e) => {
                self.log(peer, &format!("posting a send failed ({})", chain(&e)));
                self.fail(peer, None);
                Err(Error::PeerUnreachable { peer })
            }
        }
    }

    /// Credits to piggyback on a message to `p` (all it is owed, up to 16 bits).
    fn take_unreported(&self, p: &Peer) -> u16 {
        let n = p.unreported.get().min(u32::from(u16::MAX));
        p.unreported.set(p.unreported.get() - n);
        n as u16
    }

    #[cold]
    fn log(&self, peer: usize, what: &str) {
        tracing::error!(
            "verbs endpoint {} ({}): peer {peer}: {what}",
            self.cfg.index,
            self.dev.ctx.name()
        );
    }

    /// Marks the connection to `peer` failed (once): its queue pair goes to
    /// the error state so that its work requests are flushed; `Disconnected`
    /// follows their completions.
    #[cold]
    fn fail(&self, peer: usize, status: Option<u32>) {
        let Some(p) = self.peers.get(peer) else {
            return;
        };
        if p.state.get() != State::Up {
            return;
        }
        p.state.set(State::Failing);
        if let Some(s) = status {
            if s != sys::ibv_wc_status::IBV_WC_WR_FLUSH_ERR {
                self.log(
                    peer,
                    &format!(
                        "connection failed: work completion status {}",
                        status_name(s)
                    ),
                );
            }
        }
        if let Some(qp) = &p.qp {
            // Already in the error state if the device put it there.
            let _ = qp.to_error();
        }
        self.check_down(peer, p);
    }

    fn check_down(&self, peer: usize, p: &Peer) {
        if p.state.get() == State::Failing && p.outstanding.get() == 0 {
            p.state.set(State::Down);
            self.deferred
                .borrow_mut()
                .push_back(Deferred::Disconnected { peer });
        }
    }

    /// Handles send completions; returns how many.
    fn reap_send(&self) -> usize {
        let mut wcs = [empty_wc(); BATCH];
        let k = match self.dev.send_cq.poll(&mut wcs) {
            Ok(k) => k,
            Err(e) => {
                self.poll_error(&e);
                0
            }
        };
        for wc in &wcs[..k] {
            self.on_send(wc);
        }
        k
    }

    #[cold]
    fn poll_error(&self, e: &Error) {
        if !self.poll_failed.replace(true) {
            tracing::error!(
                "verbs endpoint {}: polling a completion queue failed: {}",
                self.cfg.index,
                chain(e)
            );
        }
    }

    fn on_send(&self, wc: &sys::ibv_wc) {
        let (kind, peer, n) = wr_decode(wc.wr_id);
        let Some(p) = self.peers.get(peer) else {
            return;
        };
        p.outstanding.set(p.outstanding.get().saturating_sub(1));
        self.sends.set(self.sends.get().saturating_sub(1));
        match kind {
            Some(Kind::Slot) => self.free_slots.borrow_mut().push(n),
            Some(Kind::Credit) => p.credit_inflight.set(false),
            Some(Kind::Zc) => {
                let loan = self
                    .loans
                    .borrow_mut()
                    .get_mut(n as usize)
                    .and_then(Option::take);
                if let Some(l) = loan {
                    self.free_loans.borrow_mut().push(n);
                    if let Some(s) = l.slot {
                        self.free_slots.borrow_mut().push(s);
                    }
                    if let Some(r) = self.regions.borrow_mut().get_mut(&l.region) {
                        r.inflight = r.inflight.saturating_sub(1);
                    }
                    self.deferred.borrow_mut().push_back(Deferred::SendDone {
                        peer: l.peer,
                        token: l.token,
                    });
                }
            }
            Some(Kind::Sync) => self.sync_done.set(Some((n, wc.status))),
            Some(Kind::Inline) | Some(Kind::Recv) | None => {}
        }
        if wc.status != sys::ibv_wc_status::IBV_WC_SUCCESS {
            self.fail(peer, Some(wc.status));
        }
        self.check_down(peer, p);
    }

    /// Handles one receive completion, delivering its message to `f`.
    fn on_recv<F: FnMut(Event<'_>)>(&self, wc: &sys::ibv_wc, f: &mut F) -> usize {
        let (kind, peer, n) = wr_decode(wc.wr_id);
        let (Some(Kind::Recv), Some(p)) = (kind, self.peers.get(peer)) else {
            return 0;
        };
        let Some(qp) = &p.qp else {
            return 0;
        };
        if wc.status != sys::ibv_wc_status::IBV_WC_SUCCESS {
            // Flushed receives of a failed connection are not reposted.
            self.fail(peer, Some(wc.status));
            return 0;
        }
        if p.state.get() == State::Down {
            return 0;
        }
        let per_peer = self.cfg.recv_depth + self.cfg.reserve;
        if n < p.rx_base || n - p.rx_base >= per_peer {
            return self.protocol_error(peer, "a receive completion for a buffer it does not own");
        }
        let with_imm = wc.wc_flags & sys::ibv_wc_flags::IBV_WC_WITH_IMM.0 != 0;
        // SAFETY: both views of the union are u32.
        let raw = unsafe { wc.imm_data_invalidated_rkey_union.imm_data };
        let imm = match (
            wc.opcode == sys::ibv_wc_opcode::IBV_WC_RECV && with_imm,
            Imm::decode(u32::from_be(raw)),
        ) {
            (true, Ok(imm)) => imm,
            _ => return self.protocol_error(peer, "a message without valid immediate data"),
        };
        let credits = p.credits.get() + u32::from(imm.credits);
        if credits > p.credit_max {
            return self.protocol_error(peer, "more credits returned than lent");
        }
        p.credits.set(credits);
        let mut delivered = 0;
        if !imm.credit_only {
            let len = (wc.byte_len as usize).min(self.cfg.max_am);
            // SAFETY: the device wrote `byte_len` bytes (at most the buffer's
            // `stride`) into this receive buffer, which nothing else touches
            // until it is reposted below, after the callback.
            let data = unsafe { std::slice::from_raw_parts(self.rx_buf(n), len) };
            f(Event::Am {
                src: peer,
                id: imm.id,
                data,
            });
            delivered = 1;
            p.unreported.set(p.unreported.get() + 1);
            if p.unreported.get() >= self.cfg.threshold && !p.credit_queued.replace(true) {
                self.credit_due.borrow_mut().push(peer);
            }
        }
        if p.state.get() == State::Up {
            if let Err(e) = self.post_recv(peer, qp, n) {
                self.log(peer, &format!("reposting a receive failed ({})", chain(&e)));
                self.fail(peer, None);
            }
        }
        delivered
    }

    #[cold]
    fn protocol_error(&self, peer: usize, what: &str) -> usize {
        self.log(peer, &format!("closing the connection: {what}"));
        self.fail(peer, None);
        0
    }

    /// Sends the credit-only messages that are due and fit.
    fn flush_credits(&self) {
        if self.credit_due.borrow().is_empty() {
            return;
        }
        let due = std::mem::take(&mut *self.credit_due.borrow_mut());
        let mut keep = Vec::new();
        for peer in due {
            let Ok((p, qp)) = self.up(peer) else {
                if let Some(p) = self.peers.get(peer) {
                    p.credit_queued.set(false);
                }
                continue;
            };
            if p.unreported.get() < self.cfg.threshold {
                p.credit_queued.set(false);
                continue;
            }
            if p.credit_inflight.get() || !self.room(p, 0) {
                keep.push(peer);
                continue;
            }
            let imm = Imm {
                credit_only: true,
                id: 0,
                credits: self.take_unreported(p),
            };
            // SAFETY: no gather entries: nothing to read.
            let r = unsafe {
                self.post(
                    peer,
                    (p, qp),
                    wr_id(Kind::Credit, peer, 0),
                    Op::SendImm(imm.encode()),
                    &mut [],
                    true,
                )
            };
            if r.is_ok() {
                p.credit_inflight.set(true);
            }
            p.credit_queued.set(false);
        }
        self.credit_due.borrow_mut().extend(keep);
    }

    /// Takes what the completion queues have without delivering anything:
    /// receives into the stash, sends handled. True if there was anything.
    fn poll_some(&self) -> bool {
        let mut wcs = [empty_wc(); BATCH];
        let k = match self.dev.recv_cq.poll(&mut wcs) {
            Ok(k) => k,
            Err(e) => {
                self.poll_error(&e);
                0
            }
        };
        if k > 0 {
            self.stash.borrow_mut().extend(wcs[..k].iter().copied());
        }
        let s = self.reap_send();
        k > 0 || s > 0
    }

    fn has_news(&self) -> bool {
        !self.self_q.borrow().is_empty()
            || !self.stash.borrow().is_empty()
            || !self.deferred.borrow().is_empty()
    }

    #[cold]
    fn send_self(&self, id: AmId, hdr: &[u8], payload: &[u8]) -> Result<()> {
        let len = hdr.len() + payload.len();
        if !self.self_q.borrow().is_empty() && self.self_bytes.get() + len > MAX_SELF_QUEUED {
            return Err(Error::Busy {
                peer: self.cfg.index,
            });
        }
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(hdr);
        m.extend_from_slice(payload);
        self.self_q.borrow_mut().push_back((id, m));
        self.self_bytes.set(self.self_bytes.get() + len);
        Ok(())
    }

    fn deliver_self<F: FnMut(Event<'_>)>(&self, f: &mut F) -> usize {
        if self.self_q.borrow().is_empty() {
            return 0;
        }
        let batch = std::mem::take(&mut *self.self_q.borrow_mut());
        self.self_bytes.set(0);
        let count = batch.len();
        for (id, data) in &batch {
            f(Event::Am {
                src: self.cfg.index,
                id: *id,
                data,
            });
        }
        count
    }

    /// The live registration containing `len` bytes at `ptr` (one the
    /// device may write into, if `write`): its table key and lkey.
    fn registered(&self, ptr: usize, len: usize, write: bool) -> Option<((usize, u32), u32)> {
        let regions = self.regions.borrow();
        let (&key, r) = regions.range(..=(ptr, u32::MAX)).next_back()?;
        let end = ptr.checked_add(len)?;
        (end <= key.0 + r.len && (r.writable || !write)).then(|| (key, r.mr.lkey()))
    }

    /// The local address of `offset` in this endpoint's own region `k`, if
    /// `k` names a live registration that allows the access (to oneself).
    fn own(&self, k: &VerbsKey, offset: usize, len: usize, write: bool) -> Result<*mut u8> {
        if len == 0 {
            // Nothing is accessed: any aligned, non-null pointer does.
            return Ok(std::ptr::NonNull::dangling().as_ptr());
        }
        let live = self
            .regions
            .borrow()
            .get(&(k.addr as usize, k.rkey))
            .is_some_and(|r| r.len as u64 == k.len && (r.writable || !write));
        if !live {
            return Err(Error::RemoteAccess {
                offset,
                len,
                region_len: 0,
            });
        }
        Ok((k.addr as usize + offset) as *mut u8)
    }

    /// Lends `token`'s memory to a work request: a loan-table entry.
    fn lend(&self, loan: Loan) -> u32 {
        if let Some(r) = self.regions.borrow_mut().get_mut(&loan.region) {
            r.inflight += 1;
        }
        let mut loans = self.loans.borrow_mut();
        match self.free_loans.borrow_mut().pop() {
            Some(i) => {
                loans[i as usize] = Some(loan);
                i
            }
            None => {
                loans.push(Some(loan));
                (loans.len() - 1) as u32
            }
        }
    }

    /// Undoes `lend` for a work request that was not posted.
    fn unlend(&self, i: u32) {
        if let Some(l) = self
            .loans
            .borrow_mut()
            .get_mut(i as usize)
            .and_then(Option::take)
        {
            if let Some(r) = self.regions.borrow_mut().get_mut(&l.region) {
                r.inflight = r.inflight.saturating_sub(1);
            }
            if let Some(s) = l.slot {
                self.free_slots.borrow_mut().push(s);
            }
            self.free_loans.borrow_mut().push(i);
        }
    }

    /// Posts one synchronous RDMA operation and waits for its completion.
    fn run_sync(
        &self,
        peer: usize,
        op: Op,
        sge: sys::ibv_sge,
        what: (usize, usize, usize),
    ) -> Result<()> {
        let (p, qp) = self.up(peer)?;
        let start = Instant::now();
        while !self.room(p, 0) {
            if self.reap_send() == 0 {
                std::hint::spin_loop();
            }
            if p.state.get() != State::Up {
                return Err(Error::PeerUnreachable { peer });
            }
            if start.elapsed() > SYNC_DEADLINE {
                self.log(peer, "no room to post a get or put for 60 s");
                self.fail(peer, None);
                return Err(Error::PeerUnreachable { peer });
            }
        }
        let seq = self.sync_seq.get().wrapping_add(1);
        self.sync_seq.set(seq);
        let mut sges = [sge];
        // SAFETY: the caller's entry names registered memory that it keeps
        // valid until this function returns, which is after the completion.
        unsafe {
            self.post(
                peer,
                (p, qp),
                wr_id(Kind::Sync, peer, seq),
                op,
                &mut sges,
                false,
            )?
        };
        let mut given_up = false;
        loop {
            if let Some((s, status)) = self.sync_done.get() {
                if s == seq {
                    self.sync_done.set(None);
                    return match status {
                        sys::ibv_wc_status::IBV_WC_SUCCESS => Ok(()),
                        sys::ibv_wc_status::IBV_WC_REM_ACCESS_ERR => Err(Error::RemoteAccess {
                            offset: what.0,
                            len: what.1,
                            region_len: what.2,
                        }),
                        _ => Err(Error::PeerUnreachable { peer }),
                    };
                }
            }
            if self.reap_send() == 0 {
                std::hint::spin_loop();
            }
            if !given_up && start.elapsed() > SYNC_DEADLINE {
                // Flush it: its completion still comes, and only then may the
                // memory it names be reused.
                self.log(peer, "a get or put did not complete in 60 s");
                self.fail(peer, None);
                given_up = true;
            }
        }
    }

    /// A synchronous get (`read`) or put of `len` bytes at `local` and
    /// `offset` of the peer's region `k`.
    /// A blocking RDMA READ (`read`) into, or WRITE from, `local` of `len`
    /// bytes at `offset` of the region `rkey`; to itself a plain copy.
    ///
    /// # Safety
    /// `local` is valid for `len` bytes (writable for a read) during the call.
    unsafe fn sync_op(
        &self,
        peer: usize,
        local: *mut u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
        read: bool,
    ) -> Result<()> {
        let k = VerbsKey::unpack(rkey.as_bytes())?;
        crate::check_bounds(offset, len, k.len as usize)?;
        if peer >= self.cfg.npeers {
            return Err(self.bad_peer(peer));
        }
        if peer == self.cfg.index {
            let at = self.own(&k, offset, len, !read)?;
            let (from, to) = if read {
                (at as *const u8, local)
            } else {
                (local as *const u8, at)
            };
            // SAFETY: `own` vouches for the region, the caller for `local`.
            unsafe { std::ptr::copy(from, to, len) };
            return Ok(());
        }
        self.up(peer)?;
        if len == 0 {
            return Ok(());
        }
        self.sync_rdma(peer, read, local, len, &k, offset)
    }

    fn sync_rdma(
        &self,
        peer: usize,
        read: bool,
        local: *mut u8,
        len: usize,
        k: &VerbsKey,
        offset: usize,
    ) -> Result<()> {
        let what = (offset, len, k.len as usize);
        let raddr = k.addr + offset as u64;
        let op = |at: u64| {
            if read {
                Op::Read {
                    raddr: at,
                    rkey: k.rkey,
                }
            } else {
                Op::Write {
                    raddr: at,
                    rkey: k.rkey,
                }
            }
        };
        if let Some((_, lkey)) = self.registered(local as usize, len, read) {
            // Straight from or into registered memory.
            let mut done = 0;
            while done < len {
                let n = (len - done).min(self.cfg.max_msg);
                let sge = sys::ibv_sge {
                    addr: local as u64 + done as u64,
                    length: n as u32,
                    lkey,
                };
                self.run_sync(peer, op(raddr + done as u64), sge, what)?;
                done += n;
            }
            return Ok(());
        }
        // Through the staging buffer, one `stride` at a time.
        let stage = self.staging();
        let mut done = 0;
        while done < len {
            let n = (len - done).min(self.cfg.stride);
            if !read {
                // SAFETY: the caller's `local` is readable for `len` bytes; the
                // staging buffer holds `stride` bytes and is ours.
                unsafe { std::ptr::copy_nonoverlapping(local.add(done), stage, n) };
            }
            let sge = sys::ibv_sge {
                addr: stage as u64,
                length: n as u32,
                lkey: self.bufs.mr.lkey(),
            };
            self.run_sync(peer, op(raddr + done as u64), sge, what)?;
            if read {
                // SAFETY: the read completed into the staging buffer; the
                // caller's `local` is writable for `len` bytes.
                unsafe { std::ptr::copy_nonoverlapping(stage, local.add(done), n) };
            }
            done += n;
        }
        Ok(())
    }
}

impl Drop for VerbsIface {
    fn drop(&mut self) {
        if self.sends.get() == 0 {
            return;
        }
        // Let what was sent reach the peers (their devices acknowledge it).
        let deadline = Instant::now() + self.cfg.linger;
        while self.sends.get() > 0 && Instant::now() < deadline {
            if self.reap_send() == 0 {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }
}

/// `e` with its sources, on one line.
fn chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// The name of a work completion status (libibverbs' `ibv_wc_status_str`
/// without a call into the library).
fn status_name(s: u32) -> String {
    const NAMES: [&str; 23] = [
        "success",
        "local length error",
        "local QP operation error",
        "local EE context operation error",
        "local protection error",
        "work request flushed",
        "memory window bind error",
        "bad response",
        "local access error",
        "remote invalid request",
        "remote access error",
        "remote operation error",
        "transport retry counter exceeded",
        "RNR retry counter exceeded",
        "local RDD violation",
        "remote invalid RD request",
        "aborted",
        "invalid EE context number",
        "invalid EE context state",
        "fatal error",
        "response timeout",
        "general error",
        "TM error",
    ];
    match NAMES.get(s as usize) {
        Some(n) => format!("{n} ({s})"),
        None => format!("unknown ({s})"),
    }
}

impl Iface for VerbsIface {
    fn name(&self) -> &'static str {
        "verbs"
    }

    fn caps(&self) -> Caps {
        VerbsIface::caps_with(self.cfg.max_am, self.cfg.max_inline as usize)
    }

    fn index(&self) -> usize {
        self.cfg.index
    }

    fn npeers(&self) -> usize {
        self.cfg.npeers
    }
}

impl ActiveMessages for VerbsIface {
    fn am_send(&self, peer: usize, id: AmId, hdr: &[u8], payload: &[u8]) -> Result<()> {
        if peer >= self.cfg.npeers {
            return Err(self.bad_peer(peer));
        }
        let len = hdr.len() + payload.len();
        if len > self.cfg.max_am {
            return Err(Error::TooLarge {
                len,
                max: self.cfg.max_am,
            });
        }
        if peer == self.cfg.index {
            return self.send_self(id, hdr, payload);
        }
        let (p, qp) = self.up(peer)?;
        if p.credits.get() == 0 || !self.room(p, 1) {
            return Err(Error::Busy { peer });
        }
        let inline = len <= self.cfg.max_inline as usize;
        let slot = if inline {
            None
        } else {
            match self.free_slots.borrow_mut().pop() {
                Some(s) => Some(s),
                None => return Err(Error::Busy { peer }),
            }
        };
        let imm = Imm {
            credit_only: false,
            id,
            credits: self.take_unreported(p),
        };
        let op = Op::SendImm(imm.encode());
        let r = match slot {
            None => {
                let mut sges = Sges::new();
                for s in [hdr, payload].into_iter().filter(|s| !s.is_empty()) {
                    sges.push(sys::ibv_sge {
                        addr: s.as_ptr() as u64,
                        length: s.len() as u32,
                        lkey: 0,
                    });
                }
                // SAFETY: inline: both slices are readable during the call.
                unsafe {
                    self.post(
                        peer,
                        (p, qp),
                        wr_id(Kind::Inline, peer, 0),
                        op,
                        sges.as_mut(),
                        true,
                    )
                }
            }
            Some(s) => {
                let buf = self.slot_buf(s);
                // SAFETY: slot `s` is ours (taken from the free list) and
                // holds `stride >= max_am >= len` bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(hdr.as_ptr(), buf, hdr.len());
                    std::ptr::copy_nonoverlapping(
                        payload.as_ptr(),
                        buf.add(hdr.len()),
                        payload.len(),
                    );
                }
                // SAFETY: slot `s` is ours and holds the message.
                unsafe { self.post_slot(peer, (p, qp), s, len, op) }
            }
        };
        r?;
        p.credits.set(p.credits.get() - 1);
        Ok(())
    }

    unsafe fn am_send_zc(
        &self,
        peer: usize,
        id: AmId,
        hdr: &[u8],
        payload: *const u8,
        len: usize,
        token: u64,
    ) -> Result<Sent> {
        let total = hdr.len() + len;
        let lent = if peer != self.cfg.index
            && total > self.cfg.max_inline as usize
            && total <= self.cfg.max_am
        {
            self.registered(payload as usize, len, false)
        } else {
            None
        };
        let Some((region, lkey)) = lent else {
            // SAFETY: the caller guarantees `payload` for `len` bytes during the call.
            let body = unsafe { std::slice::from_raw_parts(payload, len) };
            return self.am_send(peer, id, hdr, body).map(|()| Sent::Done);
        };
        // The body is in registered memory: the device reads it from there.
        let (p, qp) = self.up(peer)?;
        if p.credits.get() == 0 || !self.room(p, 1) {
            return Err(Error::Busy { peer });
        }
        let slot = if hdr.is_empty() {
            None
        } else {
            match self.free_slots.borrow_mut().pop() {
                Some(s) => Some(s),
                None => return Err(Error::Busy { peer }),
            }
        };
        let mut sges = Sges::new();
        if let Some(s) = slot {
            let buf = self.slot_buf(s);
            // SAFETY: slot `s` is ours and holds `stride >= max_am > hdr.len()` bytes.
            unsafe { std::ptr::copy_nonoverlapping(hdr.as_ptr(), buf, hdr.len()) };
            sges.push(sys::ibv_sge {
                addr: buf as u64,
                length: hdr.len() as u32,
                lkey: self.bufs.mr.lkey(),
            });
        }
        sges.push(sys::ibv_sge {
            addr: payload as u64,
            length: len as u32,
            lkey,
        });
        let i = self.lend(Loan {
            peer,
            token,
            region,
            slot,
        });
        let imm = Imm {
            credit_only: false,
            id,
            credits: self.take_unreported(p),
        };
        // SAFETY: the header slot is ours until the completion; the body lies
        // in a live registration (kept until the completion: `mem_deregister`
        // waits for its loans) and the caller keeps it unchanged until SendDone.
        let r = unsafe {
            self.post(
                peer,
                (p, qp),
                wr_id(Kind::Zc, peer, i),
                Op::SendImm(imm.encode()),
                sges.as_mut(),
                false,
            )
        };
        if let Err(e) = r {
            self.unlend(i);
            return Err(e);
        }
        p.credits.set(p.credits.get() - 1);
        Ok(Sent::Pending)
    }
}

impl Progress for VerbsIface {
    fn progress<F: FnMut(Event<'_>)>(&self, mut f: F) -> usize {
        if self.in_progress.replace(true) {
            return 0;
        }
        let _guard = ProgressGuard(&self.in_progress);
        let mut count = self.deliver_self(&mut f);
        loop {
            let wc = self.stash.borrow_mut().pop_front();
            let Some(wc) = wc else { break };
            count += self.on_recv(&wc, &mut f);
        }
        let mut wcs = [empty_wc(); BATCH];
        for _ in 0..RECV_ROUNDS {
            let k = match self.dev.recv_cq.poll(&mut wcs) {
                Ok(k) => k,
                Err(e) => {
                    self.poll_error(&e);
                    0
                }
            };
            for wc in &wcs[..k] {
                count += self.on_recv(wc, &mut f);
            }
            if k < BATCH {
                break;
            }
        }
        while self.reap_send() == BATCH {}
        loop {
            let ev = self.deferred.borrow_mut().pop_front();
            match ev {
                None => break,
                Some(Deferred::SendDone { peer, token }) => f(Event::SendDone { peer, token }),
                Some(Deferred::Disconnected { peer }) => f(Event::Disconnected { peer }),
            }
            count += 1;
        }
        self.flush_credits();
        count
    }

    fn wait(&self, timeout: Duration) -> Result<()> {
        if self.has_news() {
            return Ok(());
        }
        let start = Instant::now();
        let spin = self.cfg.spin.min(timeout);
        loop {
            if self.poll_some() {
                return Ok(());
            }
            if start.elapsed() >= spin {
                break;
            }
            std::hint::spin_loop();
        }
        // Block: clear old events, arm both queues, look once more (a
        // completion that came before arming raises no event), then sleep.
        self.dev.channel.drain();
        self.dev.send_cq.arm()?;
        self.dev.recv_cq.arm()?;
        if self.poll_some() {
            return Ok(());
        }
        let left = timeout.saturating_sub(start.elapsed());
        if !left.is_zero() {
            self.poller.block(left);
        }
        self.dev.channel.drain();
        Ok(())
    }
}

impl Rma for VerbsIface {
    fn mem_register(&self, ptr: *const u8, len: usize) -> Result<MemRegion> {
        let key = if len == 0 {
            // Nothing to access: a key that allows only empty accesses.
            VerbsKey {
                addr: ptr as u64,
                len: 0,
                rkey: 0,
            }
        } else {
            // SAFETY: the contract of `mem_register`: the caller keeps the
            // memory valid until `mem_deregister` (which drops the region).
            let (mr, writable) =
                match unsafe { Mr::register(&self.dev, ptr as *mut u8, len, ACCESS_REMOTE) } {
                    Ok(mr) => (mr, true),
                    // Read-only memory (a constant, say) can still be a source.
                    // SAFETY: as above.
                    Err(e) => match unsafe {
                        Mr::register(&self.dev, ptr as *mut u8, len, ACCESS_REMOTE_READ)
                    } {
                        Ok(mr) => (mr, false),
                        Err(_) => return Err(e),
                    },
                };
            let rkey = mr.rkey();
            self.regions.borrow_mut().insert(
                (ptr as usize, rkey),
                Region {
                    len,
                    mr,
                    writable,
                    inflight: 0,
                },
            );
            VerbsKey {
                addr: ptr as u64,
                len: len as u64,
                rkey,
            }
        };
        Ok(MemRegion {
            addr: ptr as usize,
            len,
            rkey: RemoteKey::from_bytes(&key.pack())?,
        })
    }

    fn mem_deregister(&self, region: &MemRegion) -> Result<()> {
        let k = VerbsKey::unpack(region.rkey.as_bytes())?;
        if k.len == 0 {
            return Ok(());
        }
        let at = (k.addr as usize, k.rkey);
        // Zero-copy sends from it must complete first (their completions come:
        // as successes, or flushed with a failed connection).
        loop {
            let inflight = match self.regions.borrow().get(&at) {
                Some(r) => r.inflight,
                None => {
                    return Err(Error::Malformed {
                        what: "verbs remote key",
                        reason: "not a live registration of this endpoint",
                    })
                }
            };
            if inflight == 0 {
                break;
            }
            if self.reap_send() == 0 {
                std::hint::spin_loop();
            }
        }
        // Dropping the region deregisters it: later accesses with its key fail.
        drop(self.regions.borrow_mut().remove(&at));
        Ok(())
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
        let k = VerbsKey::unpack(rkey.as_bytes())?;
        crate::check_bounds(offset, len, k.len as usize)?;
        if peer >= self.cfg.npeers {
            return Err(self.bad_peer(peer));
        }
        if len > self.cfg.max_am {
            return Err(Error::TooLarge {
                len,
                max: self.cfg.max_am,
            });
        }
        if peer == self.cfg.index {
            let dst = self.own(&k, offset, len, true)?;
            // SAFETY: `own` vouches for a live registration covering the
            // checked bounds; the caller vouches for `src`.
            unsafe { std::ptr::copy(src, dst, len) };
            return Ok(Sent::Done);
        }
        let (p, qp) = self.up(peer)?;
        if len == 0 {
            return Ok(Sent::Done);
        }
        if !self.room(p, 1) {
            return Err(Error::Busy { peer });
        }
        let op = Op::Write {
            raddr: k.addr + offset as u64,
            rkey: k.rkey,
        };
        if let Some((region, lkey)) = self
            .registered(src as usize, len, false)
            .filter(|_| len > self.cfg.max_inline as usize)
        {
            // Zero copy: the device reads `src` until the completion.
            let i = self.lend(Loan {
                peer,
                token,
                region,
                slot: None,
            });
            let mut sges = [sys::ibv_sge {
                addr: src as u64,
                length: len as u32,
                lkey,
            }];
            // SAFETY: `src` lies in a live registration (kept until the
            // completion) and the caller keeps it unchanged until SendDone.
            let r = unsafe {
                self.post(
                    peer,
                    (p, qp),
                    wr_id(Kind::Zc, peer, i),
                    op,
                    &mut sges,
                    false,
                )
            };
            if let Err(e) = r {
                self.unlend(i);
                return Err(e);
            }
            return Ok(Sent::Pending);
        }
        if len <= self.cfg.max_inline as usize {
            let mut sges = [sys::ibv_sge {
                addr: src as u64,
                length: len as u32,
                lkey: 0,
            }];
            // SAFETY: inline: `src` is readable during the call.
            unsafe {
                self.post(
                    peer,
                    (p, qp),
                    wr_id(Kind::Inline, peer, 0),
                    op,
                    &mut sges,
                    true,
                )?
            };
            return Ok(Sent::Done);
        }
        let Some(s) = self.free_slots.borrow_mut().pop() else {
            return Err(Error::Busy { peer });
        };
        let buf = self.slot_buf(s);
        // SAFETY: slot `s` is ours and holds `stride >= max_am >= len` bytes;
        // the caller vouches for `src`.
        unsafe { std::ptr::copy_nonoverlapping(src, buf, len) };
        // SAFETY: slot `s` is ours and holds the message.
        unsafe { self.post_slot(peer, (p, qp), s, len, op) }.map(|()| Sent::Done)
    }

    unsafe fn get(
        &self,
        peer: usize,
        dst: *mut u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
    ) -> Result<()> {
        // SAFETY: forwarded with the caller's guarantee for `dst`.
        unsafe { self.sync_op(peer, dst, len, rkey, offset, true) }
    }

    unsafe fn put(
        &self,
        peer: usize,
        src: *const u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
    ) -> Result<()> {
        // SAFETY: forwarded with the caller's guarantee for `src` (only read).
        unsafe { self.sync_op(peer, src as *mut u8, len, rkey, offset, false) }
    }
}

/// Up to two gather entries (header and payload), without allocating.
struct Sges {
    e: [sys::ibv_sge; 2],
    n: usize,
}

impl Sges {
    fn new() -> Sges {
        const ZERO: sys::ibv_sge = sys::ibv_sge {
            addr: 0,
            length: 0,
            lkey: 0,
        };
        Sges { e: [ZERO; 2], n: 0 }
    }

    fn push(&mut self, e: sys::ibv_sge) {
        if let Some(x) = self.e.get_mut(self.n) {
            *x = e;
            self.n += 1;
        }
    }

    fn as_mut(&mut self) -> &mut [sys::ibv_sge] {
        &mut self.e[..self.n]
    }
}
