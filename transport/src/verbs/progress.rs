//! Blocking: an epoll instance over the completion channel and an eventfd.
//!
//! The completion channel's descriptor polls readable once an armed completion
//! queue gets a completion (`ibv_req_notify_cq`); the eventfd lets another
//! thread interrupt a blocked [`crate::Progress::wait`] ([`Waker`]).

use std::cell::Cell;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdma_mummy_sys as sys;

use super::ffi::{empty_wc, Op};
use super::iface::*;
use super::wire::Imm;
use crate::error::chain;
use crate::poll::{Epoll, EventFd, EventFlags, NO_EVENT};
use crate::{AmId, Error, Event, Progress, Result};

/// Event token of the completion channel.
const CHANNEL_TOKEN: u64 = 0;
/// Event token of the wake-up eventfd.
const WAKE_TOKEN: u64 = 1;

/// Wakes an endpoint blocked in [`crate::Progress::wait`], from any thread.
///
/// Obtained from [`super::VerbsIface::waker`]; stays valid (and harmless)
/// after the endpoint is gone.
#[derive(Debug, Clone)]
pub struct Waker(Arc<EventFd>);

impl Waker {
    /// Makes the endpoint's current or next `wait` return.
    pub fn wake(&self) {
        self.0.ring();
    }
}

/// The owner's epoll instance.
#[derive(Debug)]
pub(super) struct Poller {
    ep: Epoll,
    wake: Arc<EventFd>,
}

impl Poller {
    /// Watches the completion channel descriptor `channel` and a fresh eventfd.
    pub(super) fn new(channel: BorrowedFd<'_>) -> Result<Poller> {
        let p = Poller {
            ep: Epoll::new()?,
            wake: Arc::new(EventFd::new()?),
        };
        p.ep.add(channel, EventFlags::IN, CHANNEL_TOKEN)?;
        p.ep.add(p.wake.as_fd(), EventFlags::IN, WAKE_TOKEN)?;
        Ok(p)
    }

    /// A handle that interrupts [`Poller::block`].
    pub(super) fn waker(&self) -> Waker {
        Waker(self.wake.clone())
    }

    /// The epoll descriptor.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.ep.fd()
    }

    /// Sleeps until the channel or the eventfd is readable, or `timeout`
    /// passes; clears the eventfd.
    pub(super) fn block(&self, timeout: Duration) {
        // Round up, so that a short timeout sleeps rather than spins.
        let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        let mut evs = [NO_EVENT; 2];
        let k = self.ep.wait(&mut evs, ms);
        if evs[..k].iter().any(|ev| ev.data.u64() == WAKE_TOKEN) {
            self.wake.clear();
        }
    }
}

impl VerbsIface {
    /// Handles send completions; returns how many.
    pub(super) fn reap_send(&self) -> usize {
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
    pub(super) fn poll_error(&self, e: &Error) {
        if !self.poll_failed.replace(true) {
            tracing::error!(
                "verbs endpoint {}: polling a completion queue failed: {}",
                self.cfg.index,
                chain(e)
            );
        }
    }

    pub(super) fn on_send(&self, wc: &sys::ibv_wc) {
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
    pub(super) fn on_recv<F: FnMut(Event<'_>)>(&self, wc: &sys::ibv_wc, f: &mut F) -> usize {
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
    pub(super) fn protocol_error(&self, peer: usize, what: &str) -> usize {
        self.log(peer, &format!("closing the connection: {what}"));
        self.fail(peer, None);
        0
    }

    /// Sends the credit-only messages that are due and fit.
    pub(super) fn flush_credits(&self) {
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
    pub(super) fn poll_some(&self) -> bool {
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

    pub(super) fn has_news(&self) -> bool {
        !self.self_q.borrow().is_empty()
            || !self.stash.borrow().is_empty()
            || !self.deferred.borrow().is_empty()
    }

    #[cold]
    pub(super) fn send_self(&self, id: AmId, hdr: &[u8], payload: &[u8]) -> Result<()> {
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

    pub(super) fn deliver_self<F: FnMut(Event<'_>)>(&self, f: &mut F) -> usize {
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

/// Clears `in_progress` when `progress` returns (or unwinds).
struct ProgressGuard<'a>(&'a Cell<bool>);

impl Drop for ProgressGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}
