//! The eager protocol: envelope and payload in one active message (at most
//! `DOS_EAGER_LIMIT` bytes); a matching posted receive gets the payload
//! copied straight out of the ring (or read from the socket straight into
//! it, see [`EagerPlacer`]), otherwise it is kept as unexpected.

use dos_transport::Sent;

use super::matching::{truncation, Body, Unexpected};
use super::wire::{Envelope, AM_EAGER, ENVELOPE_LEN, RTS_MAX};
use super::Status;
use crate::engine::pending::Pending;
use crate::engine::slots::loan_token;
use crate::engine::{Engine, ReqId, Route};
use crate::{Error, Result};

/// Eager messages to other nodes from this size on lend their buffer to the
/// socket (below it, copying what the socket does not take costs less than
/// the request that a loan needs).
pub(crate) const ZC_EAGER_MIN: usize = 8 * 1024;

/// An eager message whose payload the network transport writes in place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placed {
    pub(crate) req: ReqId,
    pub(crate) buf: *mut u8,
    pub(crate) len: usize,
    pub(crate) status: Status,
}

/// Lets the network transport read the payloads of large eager messages
/// from the socket straight into matching posted receives (one copy less
/// than reading them into its buffer and copying them out).
pub(crate) struct EagerPlacer<'a> {
    pub(crate) eng: &'a Engine,
    pub(crate) world: &'a [u32],
}

impl dos_transport::AmPlacer for EagerPlacer<'_> {
    fn claim(
        &self,
        peer: usize,
        id: dos_transport::AmId,
        head: &[u8],
        len: usize,
    ) -> Option<usize> {
        if id != AM_EAGER {
            return None;
        }
        let src = *self.world.get(peer)? as usize;
        let (env, _) = Envelope::decode(head)?;
        let payload = len.checked_sub(ENVELOPE_LEN)?;
        let mut st = self.eng.st.borrow_mut();
        // Claimed only when it fits (a truncated receive takes the usual path).
        let p = st.take_posted(&env, payload)?;
        st.placing.push((
            src,
            Placed {
                req: p.req,
                buf: p.buf,
                len: payload,
                status: Status {
                    source: env.src as usize,
                    tag: env.tag,
                    len: payload,
                },
            },
        ));
        Some(ENVELOPE_LEN)
    }

    fn dst(&self, peer: usize, offset: usize, n: usize) -> Option<*mut u8> {
        let src = *self.world.get(peer)? as usize;
        let st = self.eng.st.borrow();
        let (_, p) = st.placing.iter().find(|(s, _)| *s == src)?;
        // SAFETY: inside the posted buffer (its `cap >= len`), which the
        // request keeps valid until it completes or is abandoned (which
        // withdraws the claim first).
        (offset.checked_add(n)? <= p.len).then(|| unsafe { p.buf.add(offset) })
    }
}

impl Engine {
    /// Starts sending `len` bytes at `buf` to transport peer `peer`.
    ///
    /// Returns `None` if the send already completed, else the request to wait on.
    ///
    /// # Safety
    /// `buf` must stay valid for reads of `len` bytes, and unmodified, until the
    /// returned request completes (immediately if `None`).
    pub(crate) unsafe fn isend(
        &self,
        peer: usize,
        env: Envelope,
        buf: *const u8,
        len: usize,
    ) -> Result<Option<ReqId>> {
        let limit = match self.links.routes.get(peer) {
            Some(Route::Net(_)) => self.net_eager_limit,
            _ => self.eager_limit,
        };
        if len <= limit {
            let hdr = env.encode();
            let queued = !self.st.borrow().pending[peer].is_empty();
            if !queued && len >= ZC_EAGER_MIN && self.put_capable(peer) {
                // SAFETY: the caller guarantees `buf` until the request completes.
                if let Some(r) = unsafe { self.isend_eager_zc(peer, &hdr, buf, len) } {
                    return r;
                }
            } else if !queued {
                // SAFETY: the caller guarantees `buf` for `len` bytes.
                let payload = unsafe { std::slice::from_raw_parts(buf, len) };
                match self.am_send(peer, AM_EAGER, &hdr, payload) {
                    Ok(()) => return Ok(None),
                    Err(dos_transport::Error::Busy { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let mut st = self.st.borrow_mut();
            let id = Self::alloc_req(&mut st);
            let mut p = Pending {
                id: AM_EAGER,
                hdr: [0; RTS_MAX],
                hdr_len: ENVELOPE_LEN as u8,
                payload: buf,
                len,
                owned: Vec::new(),
                complete: Some(id),
            };
            p.hdr[..ENVELOPE_LEN].copy_from_slice(&hdr);
            st.pending[peer].push_back(p);
            st.npending += 1;
            Ok(Some(id))
        } else {
            self.isend_rdv(peer, env, buf, len).map(Some)
        }
    }

    /// An eager send over the network that lends `buf` to the socket instead
    /// of copying what the socket does not take at once. `None` if the
    /// transport is busy (the caller queues the message).
    ///
    /// # Safety
    /// As `isend`.
    pub(crate) unsafe fn isend_eager_zc(
        &self,
        peer: usize,
        hdr: &[u8],
        buf: *const u8,
        len: usize,
    ) -> Option<Result<Option<ReqId>>> {
        let (id, token) = {
            let mut st = self.st.borrow_mut();
            let id = Self::alloc_req(&mut st);
            (id, loan_token(id, st.reqs[id as usize].gen))
        };
        // SAFETY: the request owns `buf` until it completes, after its SendDone.
        let r = unsafe { self.am_send_zc(peer, AM_EAGER, hdr, buf, len, token) };
        let mut st = self.st.borrow_mut();
        match r {
            Ok(Sent::Pending) => {
                let req = &mut st.reqs[id as usize];
                req.lent = 1;
                req.after = Some(Ok(Status::default()));
                Some(Ok(Some(id)))
            }
            Ok(Sent::Done) => {
                Self::free_req(&mut st, id);
                Some(Ok(None))
            }
            Err(dos_transport::Error::Busy { .. }) => {
                Self::free_req(&mut st, id);
                None
            }
            Err(e) => {
                Self::free_req(&mut st, id);
                Some(Err(e.into()))
            }
        }
    }

    #[inline]
    pub(crate) fn on_eager(&self, peer: usize, data: &[u8]) -> Result<()> {
        let (env, payload) = Envelope::decode(data).ok_or(Error::Protocol {
            src: peer,
            reason: "short eager header",
        })?;
        let mut st = self.st.borrow_mut();
        if let Some(p) = st.take_posted(&env, 0) {
            let n = payload.len().min(p.cap);
            // SAFETY: the posted buffer is valid for `cap` bytes (irecv's contract).
            unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), p.buf, n) };
            let status = Status {
                source: env.src as usize,
                tag: env.tag,
                len: payload.len(),
            };
            Self::complete(&mut st, p.req, truncation(status, p.cap));
        } else {
            let mut v = st.spare.pop().unwrap_or_default();
            v.clear();
            v.extend_from_slice(payload);
            st.unexpected.push_back(Unexpected {
                env,
                peer,
                body: Body::Eager(v),
            });
        }
        Ok(())
    }

    /// The payload of a claimed eager message from `src` has landed.
    pub(crate) fn on_placed(&self, src: usize) {
        let mut st = self.st.borrow_mut();
        if let Some(i) = st.placing.iter().position(|(s, _)| *s == src) {
            let (_, p) = st.placing.remove(i);
            Self::complete(&mut st, p.req, Ok(p.status));
        }
    }
}
