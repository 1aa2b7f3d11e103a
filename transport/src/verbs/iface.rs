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
//!
//! This file holds the endpoint, its peers and buffers, and active messages;
//! `mem.rs` the user's registrations, loans and [`crate::Rma`]; `progress.rs`
//! the completion handling, [`crate::Progress`] and blocking; `connect.rs` the
//! bring-up.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdma_mummy_sys as sys;

use super::connect::Remote;
use super::ffi::{Arena, Dev, Mr, Op, Qp, ACCESS_LOCAL};
use super::mem::*;
use super::progress::{Poller, Waker};
use super::wire::Imm;
use crate::error::chain;
use crate::{ActiveMessages, AmId, Caps, Error, Iface, Result, Sent};

/// Default largest active message (the size of a receive buffer).
pub const DEFAULT_MAX_AM: usize = 64 << 10;
/// Default time [`Progress::wait`](crate::Progress::wait) polls before blocking.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(10);
/// Default time dropping an endpoint may wait for its sends to complete.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(2);

/// Bytes of messages to itself queued before `am_send` says `Busy`.
pub(super) const MAX_SELF_QUEUED: usize = 4 << 20;
/// Completions taken per poll.
pub(super) const BATCH: usize = 32;
/// Batches of receive completions handled per `progress` (keeps a flood from starving sends).
pub(super) const RECV_ROUNDS: usize = 8;
/// After this long, a synchronous get/put gives up on its peer (moves the
/// queue pair to the error state and waits for the flushed completion).
pub(super) const SYNC_DEADLINE: Duration = Duration::from_secs(60);

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
pub(super) enum Kind {
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

pub(super) fn wr_id(kind: Kind, peer: usize, n: u32) -> u64 {
    (kind as u64) << 60 | ((peer as u64) & 0x0FFF_FFFF) << 32 | u64::from(n)
}

pub(super) fn wr_decode(id: u64) -> (Option<Kind>, usize, u32) {
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
pub(super) enum State {
    Up,
    /// Failed: its queue pair is in the error state; waiting for its
    /// outstanding sends to be flushed before saying `Disconnected`.
    Failing,
    /// `Disconnected` was (or is about to be) delivered.
    Down,
}

/// One peer: its queue pair and counters.
pub(super) struct Peer {
    pub(super) qp: Option<Qp>,
    pub(super) state: Cell<State>,
    /// Active messages we may still send before the peer returns credits.
    pub(super) credits: Cell<u32>,
    /// The peer's receive depth: credits never exceed it.
    pub(super) credit_max: u32,
    /// Messages of the peer we consumed and did not yet return credit for.
    pub(super) unreported: Cell<u32>,
    /// In the `credit_due` list.
    pub(super) credit_queued: Cell<bool>,
    /// A credit-only message is in flight.
    pub(super) credit_inflight: Cell<bool>,
    /// Send work requests posted and not completed.
    pub(super) outstanding: Cell<u32>,
    /// Index of the first of its receive buffers.
    pub(super) rx_base: u32,
}

/// The registered buffers (the registration is dropped before the mapping).
pub(super) struct Buffers {
    pub(super) mr: Mr,
    pub(super) arena: Arena,
}

/// An event waiting for the next `progress`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Deferred {
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
/// [`Event::Disconnected`](crate::Event::Disconnected)).
pub struct VerbsIface {
    pub(super) cfg: Cfg,
    /// Indexed by peer; no queue pair for itself and peers not reached over verbs.
    /// (Declared first: queue pairs are destroyed before the buffers they use.)
    pub(super) peers: Box<[Peer]>,
    pub(super) bufs: Buffers,
    pub(super) free_slots: RefCell<Vec<u32>>,
    pub(super) regions: RefCell<BTreeMap<(usize, u32), Region>>,
    pub(super) loans: RefCell<Vec<Option<Loan>>>,
    pub(super) free_loans: RefCell<Vec<u32>>,
    pub(super) deferred: RefCell<VecDeque<Deferred>>,
    /// Receive completions taken by `wait`, delivered by the next `progress`.
    pub(super) stash: RefCell<VecDeque<sys::ibv_wc>>,
    pub(super) self_q: RefCell<VecDeque<(AmId, Vec<u8>)>>,
    pub(super) self_bytes: Cell<usize>,
    /// Peers that are owed a credit-only message.
    pub(super) credit_due: RefCell<Vec<usize>>,
    /// Send work requests in flight on all queue pairs (bounded by the send CQ).
    pub(super) sends: Cell<u32>,
    pub(super) sync_seq: Cell<u32>,
    /// Status of the synchronous operation that completed last: (sequence, status).
    pub(super) sync_done: Cell<Option<(u32, u32)>>,
    /// Set during `progress` (a re-entrant call does nothing).
    pub(super) in_progress: Cell<bool>,
    pub(super) poll_failed: Cell<bool>,
    pub(super) poller: Poller,
    pub(super) dev: Arc<Dev>,
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
        let poller = Poller::new(dev.channel.as_fd())?;
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

    /// A handle that makes a blocked [`Progress::wait`](crate::Progress::wait) return, usable from any thread.
    pub fn waker(&self) -> Waker {
        self.poller.waker()
    }

    /// A descriptor that polls readable when a blocked [`Progress::wait`](crate::Progress::wait)
    /// would wake: after a `wait` armed the completion queues, or a wake-up
    /// (for an event loop that waits on several sources). Messages to itself
    /// do not make it readable.
    pub fn poll_fd(&self) -> BorrowedFd<'_> {
        self.poller.fd()
    }

    pub(super) fn buf(&self, n: u32) -> *mut u8 {
        // SAFETY: callers pass indices below the number of buffers mapped
        // (slots, the staging buffer, receive buffers), so the offset stays
        // inside the mapping.
        unsafe { self.bufs.arena.ptr().add(n as usize * self.cfg.stride) }
    }

    pub(super) fn slot_buf(&self, slot: u32) -> *mut u8 {
        self.buf(slot)
    }

    pub(super) fn staging(&self) -> *mut u8 {
        self.buf(self.cfg.send_slots)
    }

    pub(super) fn rx_buf(&self, n: u32) -> *mut u8 {
        self.buf(self.cfg.send_slots + 1 + n)
    }

    pub(super) fn post_recv(&self, peer: usize, qp: &Qp, n: u32) -> Result<()> {
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
    pub(super) fn bad_peer(&self, peer: usize) -> Error {
        Error::NoSuchPeer {
            peer,
            npeers: self.cfg.npeers,
        }
    }

    /// The connection to `peer`, if it is up.
    pub(super) fn up(&self, peer: usize) -> Result<(&Peer, &Qp)> {
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
    pub(super) fn room(&self, p: &Peer, keep: u32) -> bool {
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
    pub(super) unsafe fn post_slot(
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

    pub(super) unsafe fn post(
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
    pub(super) fn take_unreported(&self, p: &Peer) -> u16 {
        let n = p.unreported.get().min(u32::from(u16::MAX));
        p.unreported.set(p.unreported.get() - n);
        n as u16
    }

    #[cold]
    pub(super) fn log(&self, peer: usize, what: &str) {
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
    pub(super) fn fail(&self, peer: usize, status: Option<u32>) {
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

    pub(super) fn check_down(&self, peer: usize, p: &Peer) {
        if p.state.get() == State::Failing && p.outstanding.get() == 0 {
            p.state.set(State::Down);
            self.deferred
                .borrow_mut()
                .push_back(Deferred::Disconnected { peer });
        }
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

/// The name of a work completion status (libibverbs' `ibv_wc_status_str`
/// without a call into the library).
pub(super) fn status_name(s: u32) -> String {
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
