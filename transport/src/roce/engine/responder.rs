//! The responder half of a queue pair: executes requests in PSN order, answers
//! duplicates from its resources, and queues responses (module docs of [`super`],
//! "Responder").

use super::*;

#[derive(Debug)]
pub(super) enum InMsg {
    Send {
        wr: RecvWr,
        written: u32,
    },
    Write {
        rkey: u32,
        va: u64,
        len: u32,
        written: u32,
    },
}

#[derive(Debug)]
pub(super) enum RespOut {
    Read {
        /// First PSN of the READ request this stream answers (the resource).
        origin: Psn,
        rkey: u32,
        va: u64,
        remaining: u32,
        psn: Psn,
        first: bool,
    },
    AtomicAck {
        psn: Psn,
        orig: u64,
    },
    Nak {
        psn: Psn,
        syndrome: Syndrome,
    },
}

/// A READ or atomic this responder executed, kept for duplicates.
#[derive(Debug, Clone, Copy)]
pub(super) enum Resource {
    Read {
        first: Psn,
        npkts: u32,
        rkey: u32,
        va: u64,
        len: u32,
    },
    Atomic {
        psn: Psn,
        orig: u64,
    },
}

#[derive(Debug)]
pub(super) struct Responder {
    pub(super) epsn: Psn,
    pub(super) msn: Msn,
    pub(super) rq: VecDeque<RecvWr>,
    pub(super) msg: Option<InMsg>,
    /// A sequence or RNR NAK was sent for `epsn`: drop out-of-sequence packets silently.
    pub(super) nak_sent: bool,
    pub(super) ack_pending: bool,
    /// The plain ACK waits ([`Qp::hold_ack`]).
    pub(super) hold_ack: bool,
    pub(super) out: VecDeque<RespOut>,
    pub(super) resources: VecDeque<Resource>,
    /// The request this responder rejected fatally, and how.
    pub(super) fatal: Option<(Psn, NakCode)>,
    pub(super) repeat_fatal: bool,
}

/// What executing an in-sequence request did.
pub(super) enum Exec {
    /// Executed; `ePSN` advances by this many PSNs.
    Done(u32),
    /// No receive buffer: RNR NAK.
    Rnr,
    /// The response queue is full: dropped, the requester will retransmit.
    Busy,
    /// Rejected: fatal NAK.
    Fatal(NakCode),
}

impl Qp {
    pub(super) fn out_full(&self) -> bool {
        self.resp.out.len() > 2 * self.cfg.max_dest_rd_atomic
    }

    pub(super) fn remember(&mut self, r: Resource) {
        if self.resp.resources.len() >= self.cfg.max_dest_rd_atomic {
            self.resp.resources.pop_front();
        }
        self.resp.resources.push_back(r);
    }

    pub(super) fn on_request<M: Memory + ?Sized>(&mut self, pkt: &Packet<'_>, mem: &mut M) {
        let p = pkt.bth.psn;
        let d = p.distance_from(self.resp.epsn);
        if d < 0 {
            self.stats.rx_duplicates += 1;
            self.on_duplicate(pkt, mem);
            return;
        }
        if d > 0 {
            self.stats.rx_out_of_sequence += 1;
            // (With the response queue full, no NAK: the requester's timer recovers.)
            if !self.resp.nak_sent && !self.out_full() {
                self.resp.nak_sent = true;
                self.resp.out.push_back(RespOut::Nak {
                    psn: self.resp.epsn,
                    syndrome: Syndrome::Nak(NakCode::PsnSequenceError),
                });
                self.stats.seq_naks_sent += 1;
            }
            return;
        }
        self.resp.nak_sent = false;
        match self.execute(pkt, mem) {
            Exec::Done(n) => {
                self.resp.epsn = self.resp.epsn.wrapping_add(n);
                let rd_atomic = matches!(
                    pkt.bth.opcode,
                    Opcode::RdmaReadRequest | Opcode::CompareSwap | Opcode::FetchAdd
                );
                if pkt.bth.ack_req && !rd_atomic {
                    self.resp.ack_pending = true;
                }
            }
            Exec::Rnr if self.out_full() => self.stats.rx_busy_drops += 1,
            Exec::Rnr => {
                self.resp.nak_sent = true;
                self.resp.out.push_back(RespOut::Nak {
                    psn: p,
                    syndrome: Syndrome::RnrNak {
                        timer: self.cfg.min_rnr_timer,
                    },
                });
                self.stats.rnr_naks_sent += 1;
            }
            Exec::Busy => self.stats.rx_busy_drops += 1,
            Exec::Fatal(code) => self.resp_fatal(p, code),
        }
    }

    pub(super) fn on_duplicate<M: Memory + ?Sized>(&mut self, pkt: &Packet<'_>, mem: &M) {
        let p = pkt.bth.psn;
        match pkt.bth.opcode {
            Opcode::RdmaReadRequest => {
                let Some(reth) = pkt.reth else { return };
                let mtu = self.cfg.mtu.get();
                // It must ask for the rest of a READ we served, from one of its PSNs.
                let origin = self.resp.resources.iter().rev().find_map(|r| match *r {
                    Resource::Read {
                        first,
                        npkts,
                        rkey,
                        va,
                        len,
                    } => {
                        let k = p.distance_from(first);
                        let fits = k >= 0
                            && (k as u32) < npkts
                            && rkey == reth.rkey
                            && va.wrapping_add(u64::from(k as u32 * mtu)) == reth.va
                            && len - k as u32 * mtu == reth.dma_len;
                        fits.then_some(first)
                    }
                    Resource::Atomic { .. } => None,
                });
                let Some(origin) = origin else { return };
                if reth.dma_len > 0
                    && check_access(
                        mem,
                        reth.rkey,
                        reth.va,
                        u64::from(reth.dma_len),
                        Access::REMOTE_READ,
                    )
                    .is_err()
                {
                    return;
                }
                // A stream of this READ still queued: move it back to the PSN asked for
                // (never forward: it will get there by itself).
                for o in self.resp.out.iter_mut() {
                    if let RespOut::Read {
                        origin: o_origin,
                        va,
                        remaining,
                        psn,
                        first,
                        ..
                    } = o
                    {
                        if *o_origin == origin {
                            if p.distance_from(*psn) < 0 {
                                self.stats.read_replays += 1;
                                (*va, *remaining, *psn, *first) = (reth.va, reth.dma_len, p, true);
                            }
                            return;
                        }
                    }
                }
                if self.resp.out.len() >= self.cfg.max_dest_rd_atomic {
                    return;
                }
                self.stats.read_replays += 1;
                self.resp.out.push_back(RespOut::Read {
                    origin,
                    rkey: reth.rkey,
                    va: reth.va,
                    remaining: reth.dma_len,
                    psn: p,
                    first: true,
                });
            }
            Opcode::CompareSwap | Opcode::FetchAdd => {
                let orig = self.resp.resources.iter().find_map(|r| match *r {
                    Resource::Atomic { psn, orig } if psn == p => Some(orig),
                    _ => None,
                });
                if let Some(orig) = orig {
                    if self.resp.out.len() < self.cfg.max_dest_rd_atomic {
                        self.stats.atomic_replays += 1;
                        self.resp.out.push_back(RespOut::AtomicAck { psn: p, orig });
                    }
                }
            }
            _ => self.resp.ack_pending = true,
        }
    }

    pub(super) fn complete_recv_error(&mut self, wr: RecvWr, status: WcStatus) {
        self.push_recv_cqe(wr, status, WcOpcode::Recv, 0, None);
    }

    /// Executes the in-sequence request `pkt`.
    pub(super) fn execute<M: Memory + ?Sized>(&mut self, pkt: &Packet<'_>, mem: &mut M) -> Exec {
        use Opcode::*;
        let mtu = self.cfg.mtu.get();
        let op = pkt.bth.opcode;
        let payload = pkt.payload;
        if payload.len() > mtu as usize {
            return Exec::Fatal(NakCode::InvalidRequest);
        }
        let plen = payload.len() as u32;
        let invalid = Exec::Fatal(NakCode::InvalidRequest);
        match op {
            SendFirst
            | SendOnly
            | SendOnlyWithImmediate
            | SendMiddle
            | SendLast
            | SendLastWithImmediate => {
                let starts = matches!(op, SendFirst | SendOnly | SendOnlyWithImmediate);
                let ends = !matches!(op, SendFirst | SendMiddle);
                let (wr, written) = match (self.resp.msg.take(), starts) {
                    (None, true) => {
                        let Some(wr) = self.resp.rq.front().copied() else {
                            return Exec::Rnr;
                        };
                        (wr, 0)
                    }
                    (Some(InMsg::Send { wr, written }), false) => (wr, written),
                    (other, _) => {
                        self.resp.msg = other;
                        return invalid;
                    }
                };
                // Lengths: FIRST and MIDDLE carry a full MTU, LAST at least a byte.
                let len_ok = if ends {
                    starts || plen > 0
                } else {
                    plen == mtu
                };
                if !len_ok {
                    self.resp.msg = (!starts).then_some(InMsg::Send { wr, written });
                    return invalid;
                }
                if starts {
                    self.resp.rq.pop_front();
                }
                if u64::from(written) + u64::from(plen) > u64::from(wr.sge.len) {
                    self.complete_recv_error(wr, WcStatus::LocalLengthError);
                    return invalid;
                }
                let end = written + plen;
                if plen > 0 {
                    let addr = wr.sge.addr.wrapping_add(u64::from(written));
                    match check_access(mem, wr.sge.key, addr, u64::from(plen), Access::LOCAL_WRITE)
                    {
                        Ok(o) => mem.write(wr.sge.key, o, payload),
                        Err(_) => {
                            self.complete_recv_error(wr, WcStatus::LocalProtectionError);
                            return Exec::Fatal(NakCode::RemoteOperationalError);
                        }
                    }
                }
                if ends {
                    let imm = pkt.imm.map(|i| i.0);
                    self.push_recv_cqe(wr, WcStatus::Success, WcOpcode::Recv, end, imm);
                    self.resp.msn = self.resp.msn.wrapping_add(1);
                } else {
                    self.resp.msg = Some(InMsg::Send { wr, written: end });
                }
                Exec::Done(1)
            }
            RdmaWriteFirst
            | RdmaWriteOnly
            | RdmaWriteOnlyWithImmediate
            | RdmaWriteMiddle
            | RdmaWriteLast
            | RdmaWriteLastWithImmediate => {
                let starts = matches!(
                    op,
                    RdmaWriteFirst | RdmaWriteOnly | RdmaWriteOnlyWithImmediate
                );
                let ends = !matches!(op, RdmaWriteFirst | RdmaWriteMiddle);
                let with_imm =
                    matches!(op, RdmaWriteOnlyWithImmediate | RdmaWriteLastWithImmediate);
                let (rkey, va, len, written) = match (&self.resp.msg, starts) {
                    (None, true) => {
                        let Some(reth) = pkt.reth else { return invalid };
                        if u64::from(reth.dma_len) > self.cfg.max_msg_len() {
                            return invalid;
                        }
                        (reth.rkey, reth.va, reth.dma_len, 0)
                    }
                    (
                        Some(InMsg::Write {
                            rkey,
                            va,
                            len,
                            written,
                        }),
                        false,
                    ) => (*rkey, *va, *len, *written),
                    _ => return invalid,
                };
                let end = written + plen;
                let len_ok = match (starts, ends) {
                    (true, true) => plen == len,
                    (_, false) => plen == mtu && end < len,
                    (false, true) => plen > 0 && end == len,
                };
                if !len_ok {
                    return invalid;
                }
                if with_imm && self.resp.rq.is_empty() {
                    return Exec::Rnr;
                }
                if starts && len > 0 {
                    // The whole range, before anything is written.
                    if check_access(mem, rkey, va, u64::from(len), Access::REMOTE_WRITE).is_err() {
                        return Exec::Fatal(NakCode::RemoteAccessError);
                    }
                }
                if plen > 0 {
                    let addr = va.wrapping_add(u64::from(written));
                    match check_access(mem, rkey, addr, u64::from(plen), Access::REMOTE_WRITE) {
                        Ok(o) => mem.write(rkey, o, payload),
                        Err(_) => return Exec::Fatal(NakCode::RemoteAccessError),
                    }
                }
                if ends {
                    self.resp.msg = None;
                    self.resp.msn = self.resp.msn.wrapping_add(1);
                    if with_imm {
                        if let Some(wr) = self.resp.rq.pop_front() {
                            let imm = pkt.imm.map(|i| i.0);
                            self.push_recv_cqe(
                                wr,
                                WcStatus::Success,
                                WcOpcode::RecvRdmaWithImm,
                                len,
                                imm,
                            );
                        }
                    }
                } else {
                    self.resp.msg = Some(InMsg::Write {
                        rkey,
                        va,
                        len,
                        written: end,
                    });
                }
                Exec::Done(1)
            }
            RdmaReadRequest => {
                let Some(reth) = pkt.reth else { return invalid };
                if self.resp.msg.is_some() || u64::from(reth.dma_len) > self.cfg.max_msg_len() {
                    return invalid;
                }
                if reth.dma_len > 0
                    && check_access(
                        mem,
                        reth.rkey,
                        reth.va,
                        u64::from(reth.dma_len),
                        Access::REMOTE_READ,
                    )
                    .is_err()
                {
                    return Exec::Fatal(NakCode::RemoteAccessError);
                }
                if self.out_full() {
                    return Exec::Busy;
                }
                let n = npkts(reth.dma_len, mtu);
                self.remember(Resource::Read {
                    first: pkt.bth.psn,
                    npkts: n,
                    rkey: reth.rkey,
                    va: reth.va,
                    len: reth.dma_len,
                });
                self.resp.out.push_back(RespOut::Read {
                    origin: pkt.bth.psn,
                    rkey: reth.rkey,
                    va: reth.va,
                    remaining: reth.dma_len,
                    psn: pkt.bth.psn,
                    first: true,
                });
                self.resp.msn = self.resp.msn.wrapping_add(1);
                Exec::Done(n)
            }
            CompareSwap | FetchAdd => {
                let Some(a) = pkt.atomic_eth else {
                    return invalid;
                };
                if self.resp.msg.is_some() || a.va % 8 != 0 {
                    return invalid;
                }
                let off = match check_access(mem, a.rkey, a.va, 8, Access::REMOTE_ATOMIC) {
                    Ok(o) => o,
                    Err(_) => return Exec::Fatal(NakCode::RemoteAccessError),
                };
                if self.out_full() {
                    return Exec::Busy;
                }
                let aop = if op == CompareSwap {
                    AtomicOp::CompareSwap {
                        compare: a.compare,
                        swap: a.swap_add,
                    }
                } else {
                    AtomicOp::FetchAdd { add: a.swap_add }
                };
                let orig = mem.atomic(a.rkey, off, aop);
                let psn = pkt.bth.psn;
                self.remember(Resource::Atomic { psn, orig });
                self.resp.out.push_back(RespOut::AtomicAck { psn, orig });
                self.resp.msn = self.resp.msn.wrapping_add(1);
                Exec::Done(1)
            }
            _ => invalid,
        }
    }

    pub(super) fn resp_transmit<M: Memory + ?Sized>(
        &mut self,
        buf: &mut [u8],
        mem: &M,
    ) -> Option<usize> {
        let qpn = self.cfg.remote_qpn;
        let msn = self.resp.msn;
        let ack = |syndrome| Some(Aeth { syndrome, msn });
        let ok = Syndrome::Ack {
            credits: Syndrome::NO_CREDITS,
        };
        let Some(front) = self.resp.out.front_mut() else {
            if self.resp.hold_ack || !std::mem::take(&mut self.resp.ack_pending) {
                return None;
            }
            let psn = self.resp.epsn.wrapping_add(Psn::MAX);
            let mut p = Packet::new(Bth::new(Opcode::Acknowledge, qpn, psn));
            p.aeth = ack(ok);
            self.stats.tx_acks += 1;
            return Some(emit(&self.tx_hdrs, buf, &p));
        };
        match front {
            RespOut::Nak { psn, syndrome } => {
                let mut p = Packet::new(Bth::new(Opcode::Acknowledge, qpn, *psn));
                p.aeth = ack(*syndrome);
                self.resp.out.pop_front();
                Some(emit(&self.tx_hdrs, buf, &p))
            }
            RespOut::AtomicAck { psn, orig } => {
                let mut p = Packet::new(Bth::new(Opcode::AtomicAcknowledge, qpn, *psn));
                p.aeth = ack(ok);
                p.atomic_ack_eth = Some(AtomicAckEth { orig: *orig });
                self.resp.out.pop_front();
                Some(emit(&self.tx_hdrs, buf, &p))
            }
            RespOut::Read {
                rkey,
                va,
                remaining,
                psn,
                first,
                ..
            } => {
                let mtu = self.cfg.mtu.get();
                let n = (*remaining).min(mtu);
                let last = *remaining <= mtu;
                let opcode = match (*first, last) {
                    (true, true) => Opcode::RdmaReadResponseOnly,
                    (true, false) => Opcode::RdmaReadResponseFirst,
                    (false, true) => Opcode::RdmaReadResponseLast,
                    (false, false) => Opcode::RdmaReadResponseMiddle,
                };
                let this_psn = *psn;
                if n > 0 {
                    // Checked again: the region may have gone since the request.
                    match check_access(mem, *rkey, *va, u64::from(n), Access::REMOTE_READ) {
                        Ok(o) => mem.read(*rkey, o, &mut self.scratch[..n as usize]),
                        Err(_) => {
                            self.resp_fatal(this_psn, NakCode::RemoteAccessError);
                            return self.error_transmit(buf);
                        }
                    }
                }
                *va = va.wrapping_add(u64::from(n));
                *remaining -= n;
                *psn = psn.wrapping_add(1);
                *first = false;
                if last {
                    self.resp.out.pop_front();
                }
                let mut p = Packet::new(Bth::new(opcode, qpn, this_psn));
                if opcode != Opcode::RdmaReadResponseMiddle {
                    p.aeth = ack(ok);
                }
                p.payload = &self.scratch[..n as usize];
                Some(emit(&self.tx_hdrs, buf, &p))
            }
        }
    }
}
