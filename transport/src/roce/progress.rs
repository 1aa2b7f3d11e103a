//! Driving the soft-RoCE endpoint: the datagrams built and sent in trains
//! ([`TxBatch`]), the receive path, the timers, the driver thread that answers
//! peers while the owner computes, draining on leave, and [`crate::Progress`].

use super::iface::*;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use super::engine::{dest_qpn, Qp, WcOpcode, WcStatus};
use super::icrc::{ipv4_id_mask, GSO_MAX_SEGMENTS, ICRC_LEN, MAX_IPV4_PAYLOAD};
use crate::{Error, Event, Progress, Result};

/// Datagrams built for one transmission, back to back in one buffer that is
/// kept from one transmission to the next (no allocation per datagram).
#[derive(Default)]
pub(super) struct TxBatch {
    pub(super) bytes: Vec<u8>,
    pub(super) used: usize,
    pub(super) dgrams: Vec<(SocketAddr, std::ops::Range<usize>)>,
}

impl TxBatch {
    pub(super) fn clear(&mut self) {
        self.used = 0;
        self.dgrams.clear();
    }

    /// Room for a datagram of up to `max` bytes after the last one.
    pub(super) fn room(&mut self, max: usize) -> &mut [u8] {
        if self.bytes.len() < self.used + max {
            self.bytes.resize(self.used + max, 0);
        }
        &mut self.bytes[self.used..self.used + max]
    }

    /// Makes the first `len` bytes of the last [`TxBatch::room`] a datagram to `to`.
    pub(super) fn commit(&mut self, to: SocketAddr, len: usize) {
        self.dgrams.push((to, self.used..self.used + len));
        self.used += len;
    }

    /// Adds every datagram that `qp` has to send now.
    pub(super) fn fill<M: super::engine::Memory + ?Sized>(
        &mut self,
        qp: &mut Qp,
        now: Instant,
        mem: &M,
    ) {
        let (to, max) = (qp.config().remote, qp.max_datagram_len());
        while let Some(len) = qp.poll_transmit(now, self.room(max), mem) {
            self.commit(to, len);
        }
    }

    #[cfg(test)]
    pub(super) fn push(&mut self, to: SocketAddr, d: &[u8]) {
        self.room(d.len()).copy_from_slice(d);
        self.commit(to, d.len());
    }

    pub(super) fn get(&self, i: usize) -> &[u8] {
        &self.bytes[self.dgrams[i].1.clone()]
    }

    /// Splits the datagrams into trains that one UDP GSO send can carry:
    /// consecutive datagrams to one destination, all of the first one's length
    /// but the last, which may be shorter; at most [`GSO_MAX_SEGMENTS`] and
    /// 64 KiB.
    pub(super) fn trains(&self) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.dgrams.len() {
            let (to, len) = (self.dgrams[i].0, self.dgrams[i].1.len());
            let mut total = len;
            let mut j = i + 1;
            while j < self.dgrams.len() && j - i < GSO_MAX_SEGMENTS {
                let (t, r) = &self.dgrams[j];
                if *t != to || r.len() > len || total + r.len() > MAX_IPV4_PAYLOAD {
                    break;
                }
                total += r.len();
                j += 1;
                if r.len() < len {
                    break;
                }
            }
            out.push(i..j);
            i = j;
        }
        out
    }

    /// Turns the ICRC of the `k`-th datagram of each train between "for IPv4
    /// identification 0" and "for identification `k`", the one the kernel gives
    /// it when it splits the train (its own inverse).
    pub(super) fn set_train_ids(&mut self, trains: &[std::ops::Range<usize>]) {
        for r in trains {
            for (k, i) in r.clone().enumerate().skip(1) {
                let d = self.dgrams[i].1.clone();
                let body = d.len() - ICRC_LEN;
                let mask = ipv4_id_mask(body, k as u16).to_le_bytes();
                for (b, m) in self.bytes[d.start + body..d.end].iter_mut().zip(mask) {
                    *b ^= m;
                }
            }
        }
    }
}

impl Inner {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // Every step leaves the state consistent; a panic elsewhere does not matter here.
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Receives, drives every queue pair, transmits; stashes what the owner
    /// must deliver. Returns whether it stashed anything, and how many
    /// datagrams it handled. With `defer_acks`, a queue pair that delivered
    /// messages holds its ACK back ([`Qp::hold_ack`]: the owner is about to
    /// deliver them and, likely, to answer; the answer goes out first) until
    /// the owner sends to that peer, its next pump, or before it sleeps.
    pub(super) fn pump(&self, defer_acks: bool) -> (bool, usize) {
        let now = Instant::now();
        let mut ams = Vec::new();
        let mut puts = Vec::new();
        let mut tx = self.tx();
        tx.clear();
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut handled = 0;
        // 0. ACKs held back by the last pump go first.
        for pq in st.qps.iter_mut().flatten() {
            if pq.qp.ack_held() {
                pq.qp.hold_ack(false);
                tx.fill(&mut pq.qp, now, &st.mem);
            }
        }
        // 1. Datagrams in.
        {
            let mut rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
            for _ in 0..8 {
                let k = self.sock.recv_batch(&mut rx).unwrap_or(0);
                handled += k;
                for i in 0..k {
                    let piece = rx.get(i);
                    if piece.segment < piece.data.len() {
                        self.trains_in.fetch_add(1, Ordering::Relaxed);
                    }
                    for d in piece.segments() {
                        self.receive(st, now, piece.src, d);
                    }
                }
                if k < RX_BATCH {
                    break;
                }
            }
        }
        // 2. Timers, completions, transmissions.
        for p in 0..st.qps.len() {
            let Some(pq) = st.qps[p].as_mut() else {
                continue;
            };
            if pq.qp.poll_timeout().is_some_and(|t| t <= now) {
                pq.qp.handle_timeout(now);
            }
            let delivered = ams.len();
            while let Some(c) = pq.qp.poll_completion() {
                let Some(w) = st.wrs.remove(&c.wr_id) else {
                    continue;
                };
                match (w, c.opcode) {
                    (Wr::Recv { slot }, WcOpcode::Recv) if c.status == WcStatus::Success => {
                        ams.push((p, slot, c.byte_len as usize, c.imm.unwrap_or(0) as u8));
                    }
                    (Wr::Recv { .. }, _) => {}
                    (Wr::Am { slot }, _) => st.send_free.push(slot),
                    (Wr::Put { key, token }, _) => {
                        st.mem.deregister(key);
                        puts.push((p, token));
                    }
                    (Wr::Sync { key }, _) => {
                        st.mem.deregister(key);
                        st.sync_done.insert(c.wr_id, c.status);
                    }
                    (Wr::Atomic, _) => {
                        st.atomic_done
                            .insert(c.wr_id, (c.status, c.atomic_orig.unwrap_or(0)));
                    }
                }
                if c.status != WcStatus::Success
                    && c.status != WcStatus::Flushed
                    && !st.broken.contains(&p)
                {
                    st.broken.push_back(p);
                }
            }
            pq.qp.hold_ack(defer_acks && ams.len() > delivered);
            tx.fill(&mut pq.qp, now, &st.mem);
        }
        let news = !ams.is_empty() || !puts.is_empty() || !st.broken.is_empty();
        if news {
            // Still under the state lock: stashes keep the order of completions.
            let mut s = self.stashed.lock().unwrap_or_else(|e| e.into_inner());
            s.0.extend(ams);
            s.1.extend(puts);
        }
        drop(guard);
        self.transmit(&mut tx);
        (news, handled)
    }

    /// Hands datagram `d` from `src` to the queue pair it names, if it has one
    /// and `src` is that queue pair's peer (a RoCE NIC binds a connected queue
    /// pair to its remote address); counts it as foreign otherwise.
    pub(super) fn receive(&self, st: &mut State, now: Instant, src: SocketAddr, d: &[u8]) {
        // Our queue pair for peer p is number BASE + p.
        let peer = dest_qpn(d).map(|q| q.get().wrapping_sub(QPN_BASE) as usize);
        match peer.and_then(|p| st.qps.get_mut(p)) {
            Some(Some(pq)) if pq.qp.config().remote == src => {
                pq.qp.handle_datagram(now, d, &mut st.mem);
            }
            _ => {
                self.rx_foreign.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The transmit batch (taken before the state lock).
    pub(super) fn tx(&self) -> MutexGuard<'_, TxBatch> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the datagrams of `tx`: trains with UDP GSO where the kernel does
    /// it, one datagram at a time otherwise, many per system call; what the
    /// socket does not take in a moment counts as lost (the engine retransmits
    /// it).
    pub(super) fn transmit(&self, tx: &mut TxBatch) {
        if tx.dgrams.is_empty() {
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(5);
        let mut first = 0;
        if self.gso.load(Ordering::Relaxed) && tx.dgrams.len() > 1 {
            let trains = tx.trains();
            tx.set_train_ids(&trains);
            let segs: Vec<&[u8]> = (0..tx.dgrams.len()).map(|i| tx.get(i)).collect();
            let msgs: Vec<(SocketAddr, &[&[u8]])> = trains
                .iter()
                .map(|r| (tx.dgrams[r.start].0, &segs[r.clone()]))
                .collect();
            let mut sent = 0;
            let mut refused = false;
            while sent < msgs.len() && Instant::now() < deadline {
                match self.sock.send_segmented(&msgs[sent..]) {
                    Ok(k) => {
                        let t = msgs[sent..sent + k].iter().filter(|m| m.1.len() > 1);
                        self.trains_out
                            .fetch_add(t.count() as u64, Ordering::Relaxed);
                        sent += k;
                    }
                    Err(Error::Unsupported { .. }) => {
                        refused = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            if !refused {
                return;
            }
            // This kernel or path cannot: one datagram at a time from now on,
            // the rest with identification 0 again.
            self.gso.store(false, Ordering::Relaxed);
            drop(msgs);
            drop(segs);
            tx.set_train_ids(&trains[sent..]);
            first = trains.get(sent).map_or(tx.dgrams.len(), |r| r.start);
        }
        let msgs: Vec<(SocketAddr, &[u8])> = (first..tx.dgrams.len())
            .map(|i| (tx.dgrams[i].0, tx.get(i)))
            .collect();
        let mut sent = 0;
        while sent < msgs.len() && Instant::now() < deadline {
            match self.sock.send_batch(&msgs[sent..]) {
                Ok(k) => sent += k,
                Err(_) => break,
            }
        }
    }

    /// Sends what waits: the ACKs held back and the work requests posted
    /// without a doorbell. Returns how many held ACKs it let go.
    pub(super) fn flush_pending(&self) -> usize {
        let mut tx = self.tx();
        tx.clear();
        let mut released = 0;
        {
            let now = Instant::now();
            let mut guard = self.lock();
            let st = &mut *guard;
            for pq in st.qps.iter_mut().flatten() {
                released += usize::from(pq.qp.ack_held());
                pq.qp.hold_ack(false);
                tx.fill(&mut pq.qp, now, &st.mem);
            }
        }
        self.transmit(&mut tx);
        released
    }

    /// The earliest timer of any queue pair.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.lock()
            .qps
            .iter()
            .flatten()
            .filter_map(|pq| pq.qp.poll_timeout())
            .min()
    }

    /// The driver thread: while the owner has not driven the engines for a
    /// millisecond (it computes, or sleeps), it receives, acknowledges,
    /// retransmits and sends on its behalf, and wakes the owner when there is
    /// something to deliver. While the owner is active it only checks in.
    pub(super) fn drive(&self) {
        while !self.stop.load(Ordering::Acquire) {
            #[cfg(test)]
            if self.driver_paused.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            let idle = self
                .now_us()
                .saturating_sub(self.owner_seen.load(Ordering::Relaxed));
            if idle < 1000 {
                std::thread::sleep(Duration::from_micros(1000 - idle));
                continue;
            }
            // What the owner held back or left unsent before it went away.
            let released = self.flush_pending() as u64;
            self.driver_releases.fetch_add(released, Ordering::Relaxed);
            let timeout = match self.next_timer() {
                Some(t) => t
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
                None => Duration::from_millis(50),
            };
            poll_fd(self.sock.fd(), timeout);
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            if self.pump(false).0 {
                let one = 1u64.to_ne_bytes();
                // SAFETY: 8 bytes from a live buffer to our eventfd.
                unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
            }
        }
    }
}

/// Wakes a [`RoceIface`] blocked in `wait` ([`RoceIface::waker`]).
#[derive(Clone)]
pub struct RoceWaker(pub(super) Arc<Inner>);

impl std::fmt::Debug for RoceWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoceWaker").finish_non_exhaustive()
    }
}

impl RoceWaker {
    /// Makes the endpoint's current or next `wait` return.
    pub fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: 8 bytes from a live buffer to the endpoint's eventfd.
        unsafe { libc::write(self.0.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
    }
}

/// Waits until `fd` is readable or `timeout` passes.
pub(super) fn poll_fd(fd: RawFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

impl RoceIface {
    /// Leaves gracefully (what dropping the endpoint does): keeps receiving,
    /// acknowledging and retransmitting until every message sent has been
    /// acknowledged (a lost last message is sent again, instead of leaving its
    /// peer waiting for it forever), then for [`LINGER`] after the last datagram
    /// arrived (answering the retransmissions of peers whose ACKs were lost);
    /// bounded by the retry budget. A peer whose port answers "unreachable" has
    /// left: what is still unacknowledged to it is given up at once. Messages
    /// that arrive meanwhile are dropped. Returns whether everything sent was
    /// acknowledged (or given up to a peer that left).
    pub fn drain(&self) -> bool {
        let start = Instant::now();
        // A budget of centuries: a day is as good as forever here.
        let deadline = start
            .checked_add(self.retry_budget)
            .unwrap_or(start + Duration::from_secs(86_400));
        let errors = self.inner.sock.enable_errors();
        let mut last_rx = start;
        loop {
            self.inner
                .owner_seen
                .store(self.inner.now_us(), Ordering::Relaxed);
            let (_, handled) = self.inner.pump(false);
            if handled > 0 {
                last_rx = Instant::now();
            }
            // What arrives now has no taker: drop it, and give its receive
            // slot back (a peer that still sends must not run into RNR NAKs).
            let (ams, _) =
                std::mem::take(&mut *self.inner.stashed.lock().unwrap_or_else(|e| e.into_inner()));
            for (peer, slot, _, _) in ams {
                self.repost(peer, slot);
            }
            let refused = if errors {
                self.inner.sock.take_refused()
            } else {
                Vec::new()
            };
            let pending = {
                let mut st = self.lock();
                st.broken.clear();
                let mut pending = false;
                for pq in st.qps.iter_mut().flatten() {
                    if refused.contains(&pq.qp.config().remote) {
                        pq.qp.set_error();
                    }
                    pending |= pq.qp.state() == super::engine::QpState::Ready
                        && pq.qp.send_queue_len() > 0;
                }
                pending
            };
            let now = Instant::now();
            if now >= deadline {
                return !pending;
            }
            if !pending && now.saturating_duration_since(last_rx) >= LINGER {
                return true;
            }
            let _ = self.inner.flush_pending();
            self.wait_socket(Duration::from_millis(5));
        }
    }
}

impl Progress for RoceIface {
    fn progress<F: FnMut(Event<'_>)>(&self, mut f: F) -> usize {
        if self.busy.replace(true) {
            return 0;
        }
        self.inner
            .owner_seen
            .store(self.inner.now_us(), Ordering::Relaxed);
        // Datagrams handled count as work done even when they deliver no
        // event (one-sided operations served for a peer, ACKs): a waiter
        // that sees work keeps spinning instead of going to sleep while a
        // peer's puts and gets stream in.
        let (_, handled) = self.inner.pump(true);
        let (ams, puts) =
            std::mem::take(&mut *self.inner.stashed.lock().unwrap_or_else(|e| e.into_inner()));
        let mut count = 0;
        let mine: Vec<(u8, Vec<u8>)> = self.self_q.borrow_mut().drain(..).collect();
        for (id, data) in mine {
            f(Event::Am {
                src: self.me,
                id,
                data: &data,
            });
            count += 1;
        }
        for (peer, token) in puts {
            f(Event::SendDone { peer, token });
            count += 1;
        }
        for (peer, slot, len, id) in ams {
            let off = slot * self.max_am;
            let data = &self.recv_pool[off..off + len.min(self.max_am)];
            f(Event::Am {
                src: peer,
                id,
                data,
            });
            self.repost(peer, slot);
            count += 1;
        }
        let broken: Vec<usize> = self.lock().broken.drain(..).collect();
        for peer in broken {
            f(Event::Disconnected { peer });
            count += 1;
        }
        self.busy.set(false);
        count + handled
    }

    fn wait(&self, timeout: Duration) -> Result<()> {
        let stashed = {
            let s = self.inner.stashed.lock().unwrap_or_else(|e| e.into_inner());
            !s.0.is_empty() || !s.1.is_empty()
        };
        if stashed || !self.self_q.borrow().is_empty() {
            return Ok(());
        }
        // Held-back ACKs and unsent work requests go out before this rank sleeps.
        let _ = self.inner.flush_pending();
        self.wait_socket(timeout);
        Ok(())
    }
}
