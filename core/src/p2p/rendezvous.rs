//! The rendezvous protocol (messages above the eager limit): the sender
//! announces the message with an RTS; the matching receiver either fetches
//! the payload with one transport `get` (CMA on shared memory: a single
//! copy) and sends FIN, or asks for it in pipelined chunks (CTS, then DATA),
//! or, over a network that takes zero-copy puts, has it put straight into
//! its registered buffer (PUTCTS, then DONE).

use dos_transport::{Iface, RemoteKey, Rma, Sent};

use super::matching::{truncation, Body, Unexpected};
use super::wire::{
    self, Envelope, Rts, AM_CTS, AM_DATA, AM_DONE, AM_FIN, AM_PUTCTS, AM_RTS, FIN_FAILED, FIN_OK,
    RTS_MAX,
};
use super::Status;
use crate::config::RndvMode;
use crate::engine::dispatch::protocol_error;
use crate::engine::slots::loan_token;
use crate::engine::{Engine, Req, ReqId, Route, Slot};
use crate::{Error, Result};

/// A rendezvous payload being pushed: chunks through the rings or the
/// socket, or puts into the receiver's registered buffer (`rkey`).
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) peer: usize,
    pub(crate) sreq: ReqId,
    pub(crate) rreq: u32,
    pub(crate) buf: *const u8,
    pub(crate) len: usize,
    pub(crate) off: usize,
    pub(crate) rkey: Option<RemoteKey>,
}

impl Engine {
    #[cold]
    pub(crate) fn isend_rdv(
        &self,
        peer: usize,
        env: Envelope,
        buf: *const u8,
        len: usize,
    ) -> Result<ReqId> {
        // A key only for peers that can fetch the payload themselves (CMA on
        // shared memory); others get an empty key and the pipelined protocol.
        let rkey = match self.local_index(peer) {
            Some(_) if self.links.local.caps().rma && len > 0 => {
                self.links.local.mem_register(buf, len)?.rkey
            }
            _ => RemoteKey::from_bytes(&[])?,
        };
        let id = {
            let mut st = self.st.borrow_mut();
            let id = Self::alloc_req(&mut st);
            st.reqs[id as usize].slot = Slot::Sending { buf, len };
            id
        };
        let rts = Rts {
            env,
            len: len as u64,
            sreq: id,
            rkey,
        };
        let mut hdr = [0u8; RTS_MAX];
        let n = rts.encode(&mut hdr);
        self.send_ctrl(peer, AM_RTS, &hdr[..n]).inspect_err(|_| {
            let mut st = self.st.borrow_mut();
            st.reqs[id as usize].slot = Slot::Free;
            st.free.push(id);
        })?;
        Ok(id)
    }

    /// Starts receiving a matched rendezvous message into request `id`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rdv_start(
        &self,
        peer: usize,
        status: Status,
        sreq: u32,
        rkey: &RemoteKey,
        buf: *mut u8,
        cap: usize,
        id: ReqId,
    ) {
        // CMA reaches only peers on this node; everyone else streams.
        let mode = match self.local_index(peer) {
            Some(_) if self.links.local.caps().rma && !rkey.as_bytes().is_empty() => {
                self.rndv_mode(status.len)
            }
            _ => RndvMode::Pipeline,
        };
        match mode {
            RndvMode::Pipeline if self.put_capable(peer) && cap >= status.len && status.len > 0 => {
                // Over the network: the sender puts the payload straight into
                // the buffer (no copy on either side), then says DONE.
                let r = self
                    .links
                    .net
                    .as_ref()
                    .expect("put_capable")
                    .mem_register(buf, status.len);
                let region = match r {
                    Ok(region) => region,
                    Err(e) => return Self::complete(&mut self.st.borrow_mut(), id, Err(e.into())),
                };
                self.st.borrow_mut().reqs[id as usize].slot = Slot::Placing {
                    region,
                    cap,
                    status,
                };
                let mut b = [0u8; wire::PUTCTS_MAX];
                let n = wire::putcts_encode(sreq, id, &region.rkey, &mut b);
                if let Err(e) = self.send_ctrl(peer, AM_PUTCTS, &b[..n]) {
                    self.release_region(id);
                    Self::complete(&mut self.st.borrow_mut(), id, Err(e));
                }
            }
            RndvMode::Pipeline => {
                self.st.borrow_mut().reqs[id as usize].slot = Slot::Receiving {
                    buf,
                    cap,
                    got: 0,
                    status,
                };
                if let Err(e) = self.send_ctrl(peer, AM_CTS, &wire::cts_encode(sreq, id)) {
                    Self::complete(&mut self.st.borrow_mut(), id, Err(e));
                }
            }
            RndvMode::Cma | RndvMode::Auto => {
                let r = self
                    .rdv_fetch(peer, status.len, sreq, rkey, buf, cap)
                    .and_then(|()| truncation(status, cap));
                Self::complete(&mut self.st.borrow_mut(), id, r);
            }
        }
    }

    /// The protocol for a rendezvous from a peer on this node that offered
    /// its key, for `len` bytes: `DOS_RNDV`, or under `auto` a single copy
    /// by the receiver up to `DOS_RNDV_CMA_MAX` and while the node's CPUs are
    /// crowded, else the pipeline (see [`crate::engine::crowd`]).
    pub(crate) fn rndv_mode(&self, len: usize) -> RndvMode {
        self.crowding.now().rndv_for(len)
    }

    /// Ends the registration of a `Placing` request (so that nothing more is
    /// written into its buffer); a no-op for other states.
    pub(crate) fn release_region(&self, id: ReqId) {
        let region = match self.st.borrow().reqs.get(id as usize) {
            Some(Req {
                slot: Slot::Placing { region, .. },
                ..
            }) => *region,
            _ => return,
        };
        if let Some(net) = &self.links.net {
            if let Err(e) = net.mem_deregister(&region) {
                protocol_error(e.into());
            }
        }
    }

    /// Fetches a rendezvous payload with one `get` and sends FIN.
    pub(crate) fn rdv_fetch(
        &self,
        peer: usize,
        len: usize,
        sreq: u32,
        rkey: &RemoteKey,
        buf: *mut u8,
        cap: usize,
    ) -> Result<()> {
        // SAFETY: `buf` is valid for `cap` bytes and we copy at most that.
        let Some(local) = self.local_index(peer) else {
            return Err(Error::Unsupported(
                "single-copy fetch from a peer on another node",
            ));
        };
        // SAFETY: as above.
        let r = unsafe { self.links.local.get(local, buf, len.min(cap), rkey, 0) };
        let status = if r.is_ok() { FIN_OK } else { FIN_FAILED };
        self.send_ctrl(peer, AM_FIN, &wire::fin_encode(sreq, status))?;
        r.map_err(Error::from)
    }

    /// Pushes pipelined chunks into the rings until they are full.
    #[cold]
    pub(crate) fn pump_streams(&self) {
        let mut dones = Vec::new();
        self.pump_streams_into(&mut dones);
        // Every put of these payloads is handed to the transport: DONE follows them.
        for (peer, rreq) in dones {
            if let Err(e) = self.send_ctrl(peer, AM_DONE, &rreq.to_le_bytes()) {
                protocol_error(e);
            }
        }
    }

    pub(crate) fn pump_streams_into(&self, dones: &mut Vec<(usize, u32)>) {
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        let mut i = 0;
        // Once a peer's ring is full, its later streams need not try.
        let mut full_peer = usize::MAX;
        while i < st.streams.len() {
            let s = &mut st.streams[i];
            if s.peer == full_peer {
                i += 1;
                continue;
            }
            let mut finished = false;
            loop {
                let net = matches!(self.links.routes.get(s.peer), Some(Route::Net(_)));
                let chunk = if net { self.net_chunk } else { self.chunk };
                let n = (s.len - s.off).min(chunk);
                let hdr = wire::data_encode(s.rreq, s.off as u64);
                let token = loan_token(s.sreq, st.reqs[s.sreq as usize].gen);
                let sent = if let (Some(rkey), Some(Route::Net(i)), Some(nt)) =
                    (&s.rkey, self.links.routes.get(s.peer), &self.links.net)
                {
                    // SAFETY: as below; the put reads the buffer until its SendDone.
                    unsafe { nt.put_zc(*i as usize, s.buf.add(s.off), n, rkey, s.off, token) }
                } else if net {
                    // SAFETY: the send request owning `buf` is still active (it
                    // completes only after its last loan ends), so the buffer is
                    // borrowed, valid for `len` bytes and unchanged.
                    unsafe { self.am_send_zc(s.peer, AM_DATA, &hdr, s.buf.add(s.off), n, token) }
                } else {
                    // SAFETY: as above; this send copies before returning.
                    let bytes = unsafe { std::slice::from_raw_parts(s.buf.add(s.off), n) };
                    self.am_send(s.peer, AM_DATA, &hdr, bytes)
                        .map(|()| Sent::Done)
                };
                match sent {
                    Ok(how) => {
                        if how == Sent::Pending {
                            st.reqs[s.sreq as usize].lent += 1;
                        }
                        s.off += n;
                        if s.off == s.len {
                            finished = true;
                            break;
                        }
                    }
                    Err(dos_transport::Error::Busy { .. }) => {
                        full_peer = s.peer;
                        break;
                    }
                    Err(e) => {
                        let id = s.sreq;
                        st.reqs[id as usize].after = Some(Err(e.into()));
                        finished = true;
                        s.off = s.len;
                        break;
                    }
                }
            }
            if finished {
                let s = st.streams.remove(i).expect("index in range");
                if s.rkey.is_some() {
                    // Also after a failed put: the receiver must not wait forever.
                    dones.push((s.peer, s.rreq));
                }
                let req = &mut st.reqs[s.sreq as usize];
                if req.after.is_none() {
                    req.after = Some(Ok(Status::default()));
                }
                if req.lent == 0 {
                    let r = req.after.take().expect("set above");
                    Self::complete(st, s.sreq, r);
                }
            } else {
                i += 1;
            }
        }
    }

    pub(crate) fn on_rts(&self, peer: usize, data: &[u8]) -> Result<()> {
        let rts = Rts::decode(data, peer)?;
        let mut st = self.st.borrow_mut();
        match st.take_posted(&rts.env, 0) {
            Some(p) => {
                drop(st);
                let status = Status {
                    source: rts.env.src as usize,
                    tag: rts.env.tag,
                    len: rts.len as usize,
                };
                self.rdv_start(peer, status, rts.sreq, &rts.rkey, p.buf, p.cap, p.req);
            }
            None => st.unexpected.push_back(Unexpected {
                env: rts.env,
                peer,
                body: Body::Rts {
                    len: rts.len,
                    sreq: rts.sreq,
                    rkey: rts.rkey,
                },
            }),
        }
        Ok(())
    }

    pub(crate) fn on_fin(&self, peer: usize, data: &[u8]) -> Result<()> {
        let (sreq, status) = wire::fin_decode(data, peer)?;
        let mut st = self.st.borrow_mut();
        match st.reqs.get(sreq as usize) {
            Some(Req {
                slot: Slot::Sending { .. },
                ..
            }) => {
                let r = if status == FIN_OK {
                    Ok(Status::default())
                } else {
                    Err(Error::PeerFailed { rank: peer })
                };
                Self::complete(&mut st, sreq, r);
                Ok(())
            }
            _ => Err(Error::Protocol {
                src: peer,
                reason: "FIN for no active send",
            }),
        }
    }

    pub(crate) fn on_cts(&self, peer: usize, data: &[u8]) -> Result<()> {
        let (sreq, rreq) = wire::cts_decode(data, peer)?;
        let mut st = self.st.borrow_mut();
        match st.reqs.get(sreq as usize) {
            Some(Req {
                slot: Slot::Sending { buf, len },
                ..
            }) => {
                let (buf, len) = (*buf, *len);
                st.reqs[sreq as usize].slot = Slot::Active;
                st.streams.push_back(Stream {
                    peer,
                    sreq,
                    rreq,
                    buf,
                    len,
                    off: 0,
                    rkey: None,
                });
                Ok(())
            }
            _ => Err(Error::Protocol {
                src: peer,
                reason: "CTS for no rendezvous send",
            }),
        }
    }

    pub(crate) fn on_putcts(&self, peer: usize, data: &[u8]) -> Result<()> {
        let (sreq, rreq, rkey) = wire::putcts_decode(data, peer)?;
        let mut st = self.st.borrow_mut();
        match st.reqs.get(sreq as usize) {
            Some(Req {
                slot: Slot::Sending { buf, len },
                ..
            }) if self.put_capable(peer) => {
                let (buf, len) = (*buf, *len);
                st.reqs[sreq as usize].slot = Slot::Active;
                st.streams.push_back(Stream {
                    peer,
                    sreq,
                    rreq,
                    buf,
                    len,
                    off: 0,
                    rkey: Some(rkey),
                });
                Ok(())
            }
            _ => Err(Error::Protocol {
                src: peer,
                reason: "PUTCTS for no rendezvous send",
            }),
        }
    }

    pub(crate) fn on_done(&self, peer: usize, data: &[u8]) -> Result<()> {
        let rreq = wire::done_decode(data, peer)?;
        let (cap, status) = match self.st.borrow().reqs.get(rreq as usize) {
            Some(Req {
                slot: Slot::Placing { cap, status, .. },
                ..
            }) => (*cap, *status),
            _ => {
                return Err(Error::Protocol {
                    src: peer,
                    reason: "DONE for no rendezvous receive",
                })
            }
        };
        self.release_region(rreq);
        Self::complete(&mut self.st.borrow_mut(), rreq, truncation(status, cap));
        Ok(())
    }

    #[inline]
    pub(crate) fn on_data(&self, peer: usize, data: &[u8]) -> Result<()> {
        let (rreq, off, bytes) = wire::data_decode(data, peer)?;
        let mut st = self.st.borrow_mut();
        let Some(Req {
            slot:
                Slot::Receiving {
                    buf,
                    cap,
                    got,
                    status,
                },
            ..
        }) = st.reqs.get_mut(rreq as usize)
        else {
            return Err(Error::Protocol {
                src: peer,
                reason: "DATA for no rendezvous receive",
            });
        };
        let off = off as usize;
        if off.saturating_add(bytes.len()) > status.len {
            return Err(Error::Protocol {
                src: peer,
                reason: "DATA beyond the announced length",
            });
        }
        // Copy what fits; a message longer than the buffer completes as truncated.
        let n = bytes.len().min(cap.saturating_sub(off));
        if n > 0 {
            // SAFETY: `off + n <= cap` with `n > 0`, so `off < cap` and the
            // pointer stays inside the receive's buffer, which is valid for
            // `cap` bytes while the request is active (irecv's contract). A
            // piece wholly past a truncated buffer forms no pointer at all.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.add(off), n) };
        }
        *got += bytes.len();
        if *got >= status.len {
            let r = truncation(*status, *cap);
            Self::complete(&mut st, rreq, r);
        }
        Ok(())
    }
}
