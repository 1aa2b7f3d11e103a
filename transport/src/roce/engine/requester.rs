//! The requester half of a queue pair: its send queue, PSNs, acknowledgements,
//! go-back-N and timers (module docs of [`super`], "Requester").

use super::*;

/// Number of PSNs of a message of `len` bytes.
pub(super) fn npkts(len: u32, mtu: u32) -> u32 {
    len.div_ceil(mtu).max(1)
}

#[derive(Debug)]
pub(super) struct SendWqe {
    pub(super) wr: SendWr,
    pub(super) npkts: u32,
    /// First PSN, assigned at the first transmission.
    pub(super) first_psn: Option<Psn>,
    /// PSNs acknowledged (SEND, WRITE) or response packets received (READ, atomic).
    pub(super) acked: u32,
}

#[derive(Debug)]
pub(super) struct Requester {
    pub(super) sq: VecDeque<SendWqe>,
    /// The send point: work request `sq[send_idx]`, its packet `send_pkt` (for a READ:
    /// below `npkts` means the request must be sent for the part from `send_pkt`).
    pub(super) send_idx: usize,
    pub(super) send_pkt: u32,
    /// The next PSN to assign.
    pub(super) next_psn: Psn,
    /// One past the highest PSN transmitted.
    pub(super) sent_end: Psn,
    /// Highest PSN an ACK covered.
    pub(super) max_ack: Option<Psn>,
    /// READ/atomic work requests sent and not completed.
    pub(super) rd_atomic: usize,
    pub(super) since_ack_req: u32,
    /// Timeouts in a row without progress (the backoff exponent).
    pub(super) timeouts: u32,
    /// Since when nothing was acknowledged while something was outstanding
    /// (cleared by progress and by an RNR NAK, which shows the remote is alive).
    pub(super) stalled_since: Option<Instant>,
    /// Since when RNR NAKs came without progress.
    pub(super) rnr_since: Option<Instant>,
    pub(super) rto: Option<Instant>,
    pub(super) rnr_until: Option<Instant>,
    /// `una` of the last NAK- or loss-triggered go-back.
    pub(super) went_back_at: Option<Psn>,
}

impl Requester {
    /// Oldest PSN not acknowledged (or not yet assigned).
    pub(super) fn una(&self) -> Psn {
        match self.sq.front() {
            Some(SendWqe {
                first_psn: Some(f),
                acked,
                ..
            }) => f.wrapping_add(*acked),
            _ => self.next_psn,
        }
    }

    /// PSNs sent and not acknowledged.
    pub(super) fn in_flight(&self) -> i32 {
        self.sent_end.distance_from(self.una())
    }

    /// Moves the send point back to `una`.
    pub(super) fn rewind(&mut self) {
        if let Some(w) = self.sq.front() {
            if w.first_psn.is_some() {
                self.send_idx = 0;
                self.send_pkt = w.acked;
            }
        }
    }
}

impl Qp {
    /// The retransmission timer's next deadline, armed at `now`: the backed-off
    /// timeout, but not past the end of the retry budget (so that a dead path fails
    /// when the budget ends, not up to one backed-off timeout later).
    pub(super) fn rto_deadline(&mut self, now: Instant) -> Instant {
        let since = *self.req.stalled_since.get_or_insert(now);
        let b = backoff_timeout(self.cfg.timeout, self.cfg.max_timeout, self.req.timeouts);
        // Checked: a budget or timeout of centuries must not overflow the clock.
        let t = now
            .checked_add(b)
            .unwrap_or(now + Duration::from_secs(86_400));
        match since.checked_add(self.cfg.retry_budget) {
            Some(end) => t.min(end).max(now),
            None => t,
        }
    }

    /// `una` advanced: restore the retry budgets and the timeout, restart the timer,
    /// keep the send point at or after `una`.
    pub(super) fn on_progress(&mut self, now: Instant) {
        self.req.timeouts = 0;
        self.req.stalled_since = None;
        self.req.rnr_since = None;
        self.req.rto = None;
        if self.req.in_flight() > 0 && self.req.rnr_until.is_none() {
            self.req.rto = Some(self.rto_deadline(now));
        }
        let r = &mut self.req;
        r.went_back_at = None;
        // An ACK that `una` passed has done its work; forgetting it keeps it from
        // looking ahead again once PSNs wrap.
        let una = r.una();
        if r.max_ack.is_some_and(|m| m.distance_from(una) < 0) {
            r.max_ack = None;
        }
        if r.send_idx == 0 {
            if let Some(w) = r.sq.front() {
                r.send_pkt = r.send_pkt.max(w.acked);
            }
        }
    }

    /// Acknowledges every PSN up to and including `last` (SEND and WRITE work requests
    /// only: a READ or atomic in front stops it). Returns whether `una` advanced.
    pub(super) fn ack_through(&mut self, last: Psn) -> bool {
        let mut progress = false;
        while let Some(w) = self.req.sq.front_mut() {
            let Some(first) = w.first_psn else {
                break;
            };
            if w.wr.is_rd_atomic() {
                break;
            }
            let covered = last.distance_from(first) + 1;
            if covered <= w.acked as i32 {
                break;
            }
            let covered = (covered as u32).min(w.npkts);
            w.acked = covered;
            progress = true;
            if covered < w.npkts {
                break;
            }
            self.complete_front(WcStatus::Success, None);
        }
        progress
    }

    /// Goes back to `una` (see the module docs); `timer`: the retransmission timer
    /// expired (always goes back) rather than a NAK or a detected loss (once per `una`).
    /// The retry budget is the timer's business ([`Qp::handle_timeout`]): a NAK shows
    /// that the remote is there.
    pub(super) fn go_back(&mut self, timer: bool) {
        let una = self.req.una();
        if self.req.in_flight() <= 0 || (!timer && self.req.went_back_at == Some(una)) {
            return;
        }
        self.req.went_back_at = Some(una);
        self.req.rewind();
        self.req.rto = None;
        self.stats.go_backs += 1;
    }

    /// After an ACK: if it covers a READ or atomic whose response has not arrived,
    /// that response was lost.
    pub(super) fn check_lost_response(&mut self) {
        let (Some(max_ack), Some(w)) = (self.req.max_ack, self.req.sq.front()) else {
            return;
        };
        if let (true, Some(first)) = (w.wr.is_rd_atomic(), w.first_psn) {
            if max_ack.distance_from(first.wrapping_add(w.acked)) >= 0 {
                self.go_back(false);
            }
        }
    }

    pub(super) fn on_response<M: Memory + ?Sized>(
        &mut self,
        now: Instant,
        pkt: &Packet<'_>,
        mem: &mut M,
    ) {
        let p = pkt.bth.psn;
        let una = self.req.una();
        let d = p.distance_from(una);
        if d < 0 || d >= self.req.in_flight() {
            self.stats.rx_stale_responses += 1;
            return;
        }
        let before = p.wrapping_add(Psn::MAX); // p - 1
        let Some(aeth) = pkt.aeth else {
            // READ_RESPONSE_MIDDLE: the only response without an AETH.
            self.on_read_response(now, pkt, mem);
            return;
        };
        match (pkt.bth.opcode, aeth.syndrome) {
            (Opcode::Acknowledge, Syndrome::Ack { .. }) => {
                if self.req.max_ack.is_none_or(|m| p.distance_from(m) > 0) {
                    self.req.max_ack = Some(p);
                }
                if self.ack_through(p) {
                    self.after_progress(now);
                } else {
                    self.stats.rx_stale_responses += 1;
                }
                self.check_lost_response();
            }
            (Opcode::Acknowledge, Syndrome::RnrNak { timer }) => {
                self.stats.rnr_naks_received += 1;
                if self.ack_through(before) {
                    self.after_progress(now);
                }
                if self.state != QpState::Ready
                    || self.req.una() != p
                    || self.req.rnr_until.is_some()
                {
                    return;
                }
                // The remote answered: it is alive; the retry budget starts again.
                self.req.timeouts = 0;
                self.req.stalled_since = None;
                let since = *self.req.rnr_since.get_or_insert(now);
                if self
                    .cfg
                    .rnr_budget
                    .is_some_and(|b| now.saturating_duration_since(since) >= b)
                {
                    self.fail(WcStatus::RnrRetryExceeded);
                    return;
                }
                self.req.rnr_until = Some(now + rnr_timer_duration(timer));
                self.req.rto = None;
            }
            (Opcode::Acknowledge, Syndrome::Nak(NakCode::PsnSequenceError)) => {
                self.stats.seq_naks_received += 1;
                if self.ack_through(before) {
                    self.after_progress(now);
                }
                if self.state == QpState::Ready {
                    self.go_back(false);
                }
            }
            (Opcode::Acknowledge, Syndrome::Nak(code)) => {
                if self.ack_through(before) {
                    self.after_progress(now);
                }
                if self.state == QpState::Ready && self.req.una() == p {
                    self.fail(match code {
                        NakCode::RemoteAccessError => WcStatus::RemoteAccessError,
                        NakCode::InvalidRequest => WcStatus::RemoteInvalidRequest,
                        _ => WcStatus::RemoteOperationalError,
                    });
                }
            }
            (Opcode::AtomicAcknowledge, Syndrome::Ack { .. }) => {
                if self.ack_through(before) {
                    self.after_progress(now);
                }
                if self.state != QpState::Ready {
                    return;
                }
                let front_is_it = self.req.una() == p
                    && self.req.sq.front().is_some_and(|w| {
                        matches!(
                            w.wr.op,
                            SendOp::CompareSwap { .. } | SendOp::FetchAdd { .. }
                        )
                    });
                if !front_is_it {
                    // An earlier READ/atomic response is missing.
                    self.go_back(false);
                    return;
                }
                let orig = pkt.atomic_ack_eth.map(|a| a.orig);
                self.complete_front(WcStatus::Success, orig);
                self.after_progress(now);
            }
            (
                Opcode::RdmaReadResponseFirst
                | Opcode::RdmaReadResponseLast
                | Opcode::RdmaReadResponseOnly,
                Syndrome::Ack { .. },
            ) => self.on_read_response(now, pkt, mem),
            _ => {
                // A read response or atomic acknowledge with a NAK syndrome.
                self.stats.rx_malformed += 1;
            }
        }
    }

    /// Progress was made: restart timers and apply an ACK remembered beyond a READ or
    /// atomic that has now completed.
    pub(super) fn after_progress(&mut self, now: Instant) {
        if let Some(max_ack) = self.req.max_ack {
            self.ack_through(max_ack);
        }
        self.on_progress(now);
    }

    pub(super) fn on_read_response<M: Memory + ?Sized>(
        &mut self,
        now: Instant,
        pkt: &Packet<'_>,
        mem: &mut M,
    ) {
        let p = pkt.bth.psn;
        if self.ack_through(p.wrapping_add(Psn::MAX)) {
            self.after_progress(now);
        }
        if self.state != QpState::Ready {
            return;
        }
        let mtu = self.cfg.mtu.get();
        let una = self.req.una();
        let Some(w) = self.req.sq.front() else {
            return;
        };
        let (SendOp::Read { local, .. }, Some(first)) = (w.wr.op, w.first_psn) else {
            self.go_back(false);
            return;
        };
        if p != una {
            // A response of a later READ, or a later response of this one: lost responses.
            self.go_back(false);
            return;
        }
        let i = w.acked;
        let last = i + 1 == w.npkts;
        let off = i * mtu;
        let expect = (local.len - off).min(mtu);
        let op = pkt.bth.opcode;
        let op_ok = if last {
            matches!(
                op,
                Opcode::RdmaReadResponseLast | Opcode::RdmaReadResponseOnly
            )
        } else {
            matches!(
                op,
                Opcode::RdmaReadResponseFirst | Opcode::RdmaReadResponseMiddle
            )
        };
        debug_assert_eq!(first.wrapping_add(i), p);
        if !op_ok || pkt.payload.len() != expect as usize {
            self.fail(WcStatus::BadResponse);
            return;
        }
        if expect > 0 {
            let addr = local.addr.wrapping_add(u64::from(off));
            match check_access(mem, local.key, addr, u64::from(expect), Access::LOCAL_WRITE) {
                Ok(o) => mem.write(local.key, o, pkt.payload),
                Err(_) => {
                    self.fail(WcStatus::LocalProtectionError);
                    return;
                }
            }
        }
        if let Some(w) = self.req.sq.front_mut() {
            w.acked += 1;
        }
        if last {
            self.complete_front(WcStatus::Success, None);
        }
        self.after_progress(now);
    }

    pub(super) fn req_transmit<M: Memory + ?Sized>(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        mem: &M,
    ) -> Option<usize> {
        if self.req.rnr_until.is_some() {
            return None;
        }
        let mtu = self.cfg.mtu.get();
        let window = self.cfg.window as i32;
        let una = self.req.una();
        let idx = self.req.send_idx;
        let w = self.req.sq.get(idx)?;
        let first_psn = match w.first_psn {
            Some(f) => f,
            None => {
                if (w.wr.fence && self.req.rd_atomic > 0)
                    || (w.wr.is_rd_atomic() && self.req.rd_atomic >= self.cfg.max_rd_atomic)
                    || self.req.next_psn.distance_from(una) >= window
                {
                    return None;
                }
                let f = self.req.next_psn;
                let n = w.npkts;
                let rd_atomic = w.wr.is_rd_atomic();
                self.req.next_psn = f.wrapping_add(n);
                if rd_atomic {
                    self.req.rd_atomic += 1;
                }
                self.req.sq[idx].first_psn = Some(f);
                f
            }
        };
        let w = &self.req.sq[idx];
        let i = self.req.send_pkt;
        let psn = first_psn.wrapping_add(i);
        if psn.distance_from(una) >= window {
            return None;
        }
        let mut bth = Bth::new(Opcode::SendOnly, self.cfg.remote_qpn, psn);
        let mut p_reth = None;
        let mut p_atomic = None;
        let mut p_imm = None;
        let mut payload_len = 0usize;
        // PSNs this packet accounts for.
        let span;
        match w.wr.op {
            SendOp::Send { local, imm } | SendOp::Write { local, imm, .. } => {
                let write = matches!(w.wr.op, SendOp::Write { .. });
                let off = i * mtu;
                let n = (local.len - off).min(mtu);
                let (first, last) = (i == 0, i + 1 == w.npkts);
                if n > 0 {
                    let addr = local.addr.wrapping_add(u64::from(off));
                    match check_access(mem, local.key, addr, u64::from(n), Access::NONE) {
                        Ok(o) => mem.read(local.key, o, &mut self.scratch[..n as usize]),
                        Err(_) => {
                            self.fail(WcStatus::LocalProtectionError);
                            return None;
                        }
                    }
                }
                payload_len = n as usize;
                let with_imm = last && imm.is_some();
                bth.opcode = match (write, first, last, with_imm) {
                    (false, true, true, false) => Opcode::SendOnly,
                    (false, true, true, true) => Opcode::SendOnlyWithImmediate,
                    (false, true, false, _) => Opcode::SendFirst,
                    (false, false, false, _) => Opcode::SendMiddle,
                    (false, false, true, false) => Opcode::SendLast,
                    (false, false, true, true) => Opcode::SendLastWithImmediate,
                    (true, true, true, false) => Opcode::RdmaWriteOnly,
                    (true, true, true, true) => Opcode::RdmaWriteOnlyWithImmediate,
                    (true, true, false, _) => Opcode::RdmaWriteFirst,
                    (true, false, false, _) => Opcode::RdmaWriteMiddle,
                    (true, false, true, false) => Opcode::RdmaWriteLast,
                    (true, false, true, true) => Opcode::RdmaWriteLastWithImmediate,
                };
                if let (SendOp::Write { remote, .. }, true) = (w.wr.op, first) {
                    p_reth = Some(Reth {
                        va: remote.addr,
                        rkey: remote.rkey,
                        dma_len: local.len,
                    });
                }
                if with_imm {
                    p_imm = imm.map(ImmDt);
                }
                self.req.since_ack_req += 1;
                bth.ack_req = last
                    || self.req.since_ack_req >= self.cfg.ack_req_every
                    || psn.wrapping_add(1).distance_from(una) >= window;
                if bth.ack_req {
                    self.req.since_ack_req = 0;
                }
                span = 1;
                self.req.send_pkt += 1;
                if self.req.send_pkt == w.npkts {
                    self.req.send_idx += 1;
                    self.req.send_pkt = 0;
                }
            }
            SendOp::Read { local, remote } => {
                let off = i * mtu;
                bth.opcode = Opcode::RdmaReadRequest;
                p_reth = Some(Reth {
                    va: remote.addr.wrapping_add(u64::from(off)),
                    rkey: remote.rkey,
                    dma_len: local.len - off,
                });
                span = w.npkts - i;
                self.req.send_idx += 1;
                self.req.send_pkt = 0;
            }
            SendOp::CompareSwap {
                remote,
                compare,
                swap,
            } => {
                bth.opcode = Opcode::CompareSwap;
                p_atomic = Some(AtomicEth {
                    va: remote.addr,
                    rkey: remote.rkey,
                    swap_add: swap,
                    compare,
                });
                span = 1;
                self.req.send_idx += 1;
                self.req.send_pkt = 0;
            }
            SendOp::FetchAdd { remote, add } => {
                bth.opcode = Opcode::FetchAdd;
                p_atomic = Some(AtomicEth {
                    va: remote.addr,
                    rkey: remote.rkey,
                    swap_add: add,
                    compare: 0,
                });
                span = 1;
                self.req.send_idx += 1;
                self.req.send_pkt = 0;
            }
        }
        if psn.distance_from(self.req.sent_end) < 0 {
            self.stats.tx_retransmits += 1;
        }
        let end = psn.wrapping_add(span);
        if end.distance_from(self.req.sent_end) > 0 {
            self.req.sent_end = end;
        }
        if self.req.rto.is_none() {
            self.req.rto = Some(self.rto_deadline(now));
        }
        let mut p = Packet::new(bth);
        p.reth = p_reth;
        p.atomic_eth = p_atomic;
        p.imm = p_imm;
        p.payload = &self.scratch[..payload_len];
        Some(emit(&self.tx_hdrs, buf, &p))
    }
}
